//! JSON logs, OpenTelemetry traces and Prometheus metrics for Rust HTTP services
