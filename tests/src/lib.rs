//! End-to-end tests for mainstay-api.
