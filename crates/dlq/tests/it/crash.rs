//! Crash safety: a child process (this test binary, re-executed) pushes entries and is killed
//! with SIGKILL at random points, many times; every acknowledged entry must be there after
//! reopen, none twice, torn tails truncated and the lock free again.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mainstay_dlq::{Dlq, DlqConfig, EntryId, FailureClass, Filter, NewEntry, QueueConfig};
use rand::Rng;

const CHILD_DIR: &str = "MAINSTAY_DLQ_CRASH_DIR";
const CHILD_ROUND: &str = "MAINSTAY_DLQ_CRASH_ROUND";

fn crash_config() -> DlqConfig {
    DlqConfig {
        total_capacity: 1_000_000,
        max_total_payload_bytes: 1 << 30,
        defaults: QueueConfig {
            capacity: 1_000_000,
            ttl: None,
            ..QueueConfig::default()
        },
        // Small, so that kills also land inside compactions.
        compact_after_bytes: 512 * 1024,
        redrive_rate_per_second: 0,
        ..DlqConfig::default()
    }
}

/// The child's side: does nothing unless re-executed by the parent test below.
#[test]
fn crash_child() {
    let (Ok(dir), Ok(round)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_ROUND)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dlq = Dlq::open(&dir, crash_config()).await.unwrap();
        let report = dlq.recovery().clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        tx.send(format!(
            "OPENED torn={} corrupt={} skipped={} stale={}",
            report.torn_tail, report.corrupt_tail, report.corrupt_records, report.stale_journal
        ))
        .unwrap();
        for worker in 0..8 {
            let dlq = dlq.clone();
            let tx = tx.clone();
            let round = round.clone();
            tokio::spawn(async move {
                for n in 0.. {
                    let key = format!("r{round}-w{worker}-n{n}");
                    // Sizes up to 64 KiB make a kill inside a write more likely.
                    let size = (n * 7919 + worker * 104_729) % 65_536;
                    let data = vec![u8::try_from(n % 251).unwrap(); size];
                    let new = NewEntry::inline("crash", &key, data, FailureClass::Transient, "x");
                    let id = dlq.push(new).await.unwrap();
                    // Printed only after the push was acknowledged.
                    if tx.send(format!("ACK {id} {key}")).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut out = std::io::stdout().lock();
        while let Some(line) = rx.recv().await {
            writeln!(out, "{line}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn sigkill_at_random_points_loses_no_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut acked: HashMap<String, EntryId> = HashMap::new();
    let mut torn_tails = 0;
    let started = Instant::now();
    let mut rounds = 0;
    // Bounded: at most 40 kills and about 4 seconds.
    while rounds < 40 && (rounds < 10 || started.elapsed() < Duration::from_secs(4)) {
        rounds += 1;
        let mut child = Command::new(&exe)
            .args([
                "crash::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, rounds.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after: usize = rng.random_range(0..80);
        let mut seen = 0;
        let mut opened = false;
        let mut clean = true;
        for line in lines.by_ref() {
            let line = line.unwrap();
            // libtest prints "test crash::crash_child ... " without a newline before it.
            if let Some(rest) = line.split_once("OPENED ").map(|(_, rest)| rest) {
                opened = true;
                clean &= !rest.contains("corrupt=true") && rest.contains("skipped=0");
                torn_tails += usize::from(rest.contains("torn=true"));
                if kill_after == 0 {
                    break;
                }
            } else if let Some(rest) = line.strip_prefix("ACK ") {
                let (id, key) = rest.split_once(' ').unwrap();
                assert!(acked.insert(key.to_owned(), id.parse().unwrap()).is_none());
                seen += 1;
                if seen >= kill_after {
                    break;
                }
            }
        }
        // SIGKILL while the pipe is still open, so the child dies writing, not on a closed pipe.
        child.kill().unwrap();
        child.wait().unwrap();
        drop(lines);
        assert!(
            opened,
            "round {rounds}: the child did not open the dlq (is the lock stale?)"
        );
        assert!(clean, "round {rounds}: a kill left a corrupt journal");
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // The lock died with the last child.
        let dlq = Dlq::open(dir.path(), crash_config()).await.unwrap();
        let mut keys = HashSet::new();
        let mut by_key = HashMap::new();
        let mut cursor = None;
        loop {
            let page = dlq.list(&Filter::queue("crash"), cursor.as_deref(), 1000).unwrap();
            for entry in &page.entries {
                assert!(keys.insert(entry.key().to_owned()), "{} twice", entry.key());
                by_key.insert(entry.key().to_owned(), entry.id());
                if let mainstay_dlq::Payload::Inline(inline) = entry.payload() {
                    assert!(inline.verify());
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        for (key, id) in &acked {
            assert_eq!(by_key.get(key), Some(id), "acknowledged {key} lost");
        }
        eprintln!(
            "crash test: {rounds} kills, {} acknowledged, {} present, {torn_tails} torn tails truncated",
            acked.len(),
            keys.len()
        );
        dlq.close().await.unwrap();
    });
}
