//! The fallback share follows the live instance count: four processes (the `load` example) share
//! one anonymous limit on a private Redis with `instance_count` left at 1; each announces itself in
//! Redis, so when Redis is killed each one's fallback admits a quarter of the limit, and together
//! they admit the limit over the next window (within 10%), not four times it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::accuracy::load_binary;
use crate::support::RedisServer;

const PROCESSES: usize = 4;
/// 100 requests per 2 s, burst 4: divided by four, 25 per 2 s with a burst of 1 each.
const REQUESTS: u64 = 100;
const PERIOD_MS: u64 = 2_000;
const BURST: u64 = 4;

#[test]
fn four_processes_admit_one_limit_together_after_redis_is_killed() {
    let mut redis = RedisServer::start();
    let binary = load_binary();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&binary)
                .args([
                    redis.url(),
                    REQUESTS.to_string(),
                    PERIOD_MS.to_string(),
                    BURST.to_string(),
                    // At most: each child stops one window after its fallback began.
                    "30".into(),
                    "anonymous".into(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Every child has announced itself (they heartbeat every 100 ms)...
    let started = Instant::now();
    while redis.command("ZCARD rl:{instances}").as_deref() != Some(":4\r\n") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the children never all announced themselves"
        );
        // Polling for the processes to come up, not waiting for a rule.
        std::thread::sleep(Duration::from_millis(10));
    }
    // ... and has read the count of four at its next heartbeat (with slack for a loaded machine).
    std::thread::sleep(Duration::from_millis(500));
    redis.kill();
    let mut admitted = 0u64;
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report = |prefix: &str| -> Vec<u64> {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no {prefix}line: {stdout}"))
                .split_whitespace()
                .map(|field| field.parse().unwrap())
                .collect()
        };
        let load = report("LOAD ");
        // The child really ran on Redis before the kill.
        assert!(load[0] + load[1] > 0, "{stdout}");
        admitted += report("FALLBACK ")[0];
    }
    let tolerance = REQUESTS / 10;
    assert!(
        admitted.abs_diff(REQUESTS) <= tolerance,
        "the fallbacks admitted {admitted} together in the window after the kill, the limit is \
         {REQUESTS} ± {tolerance}"
    );
}
