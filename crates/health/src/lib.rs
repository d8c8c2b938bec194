//! Dependency health checks and Kubernetes liveness, readiness and startup reports
