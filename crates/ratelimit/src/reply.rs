//! What the Redis rate-limit script answers, as the limiter reads it. Its arithmetic
//! (`ScriptReply::from_tats`) lives with the Redis backend; the type is here so that the limiter's
//! Redis paths compile without the `redis` feature too (they are never taken then).

/// The script's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScriptReply {
    pub(crate) allowed: bool,
    /// 0-based index of the limit that speaks for the request.
    pub(crate) index: usize,
    pub(crate) remaining: u32,
    pub(crate) reset_us: u64,
    pub(crate) retry_us: u64,
    /// Redis time of the decision, microseconds since the epoch.
    pub(crate) now_us: u64,
    /// Requests each limit (in key order, the first three) lets through after this decision.
    pub(crate) remaining_each: [u32; 3],
}
