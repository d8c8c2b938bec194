//! Health checks for the dependencies whose clients this binary owns.

pub mod redis;
