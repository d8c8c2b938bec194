//! Integration tests of mainstay-clock: one binary, a module per clock.

mod manual;
mod real;
mod tokio_clock;
