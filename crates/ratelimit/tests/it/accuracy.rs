//! Accuracy across processes: 4 OS processes (the `load` example, a binary of its own) share one
//! limit on one private Redis for 10 s of traffic. The expected count comes from Redis `TIME` at
//! the first and last request: burst + (last - first) / emission interval, within max(1%, 2).
//!
//! This is the crate's only long test.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::support::RedisServer;

const PROCESSES: usize = 4;
const SECONDS: u64 = 10;
/// 200 per second (one per 5 ms), with a burst of 10.
const REQUESTS_PER_SECOND: u32 = 200;
const BURST: u32 = 10;

/// The `load` example, which `cargo test` and `cargo nextest` build beside the test binaries
/// (`target/<profile>/examples/load`, the test binary being `target/<profile>/deps/it-<hash>`).
pub(crate) fn load_binary() -> PathBuf {
    let test_binary = std::env::current_exe().unwrap();
    let profile_dir = test_binary.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = profile_dir.join("examples").join("load");
    assert!(
        binary.is_file(),
        "{} is missing: build the examples (`cargo test` does)",
        binary.display()
    );
    binary
}

#[test]
fn four_processes_sharing_one_limit_get_the_exact_count() {
    let redis = RedisServer::start();
    let binary = load_binary();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&binary)
                .args([
                    redis.url(),
                    REQUESTS_PER_SECOND.to_string(),
                    "1000".into(),
                    BURST.to_string(),
                    SECONDS.to_string(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut allowed, mut denied) = (0u64, 0u64);
    let (mut first, mut last) = (u64::MAX, 0u64);
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|line| line.strip_prefix("LOAD "))
            .unwrap_or_else(|| panic!("a child reported no result: {stdout}"));
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(|field| field.parse().unwrap())
            .collect();
        let [child_allowed, child_denied, other, child_first, child_last] = fields[..] else {
            panic!("malformed child report: {line}");
        };
        assert_eq!(other, 0, "a child decided without Redis");
        assert!(child_allowed + child_denied > 0);
        allowed += child_allowed;
        denied += child_denied;
        first = first.min(child_first);
        last = last.max(child_last);
    }
    let emission_us = 1_000_000 / u64::from(REQUESTS_PER_SECOND);
    let expected = u64::from(BURST) + (last - first) / emission_us;
    let tolerance = (expected / 100).max(2);
    assert!(
        allowed.abs_diff(expected) <= tolerance,
        "allowed {allowed}, expected {expected} ± {tolerance} over {} ms ({denied} denied)",
        (last - first) / 1_000
    );
    // The traffic really exceeded the limit, or the test proves nothing.
    assert!(denied > allowed, "{denied} denied, {allowed} allowed");
}
