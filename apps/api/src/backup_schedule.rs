//! `mainstay-api backup schedule`: the backup timetable as a long-lived process, for a deployment
//! without a scheduler of its own (the compose file; Kubernetes uses two CronJobs instead,
//! decision 0115). A backup at start and then every `every`; a verification at start and then
//! every `verify_every`, after the backup when both are due. A failed run is logged and the
//! timetable goes on: the alerts (`BackupTooOld`, `BackupVerificationFailed`) say when failures
//! last.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

/// One run's outcome: `Ok` with a one-line summary, or `Err` with the reason.
pub type RunOutcome = Result<String, String>;

/// Runs `backup` every `every` and `verify` every `verify_every`, both at once at the start,
/// until the future is dropped.
pub async fn run<B, BF, V, VF>(
    every: Duration,
    verify_every: Duration,
    mut backup: B,
    mut verify: V,
) where
    B: FnMut() -> BF,
    BF: Future<Output = RunOutcome>,
    V: FnMut() -> VF,
    VF: Future<Output = RunOutcome>,
{
    let start = Instant::now();
    let mut backups = tokio::time::interval_at(start, every);
    backups.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut verifications = tokio::time::interval_at(start, verify_every);
    verifications.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // `biased`: when both are due, the backup runs first, so the verification checks it.
        tokio::select! {
            biased;
            _ = backups.tick() => match backup().await {
                Ok(summary) => tracing::info!(summary = %summary, "backup schedule: backup taken"),
                Err(reason) => tracing::error!(reason = %reason, "backup schedule: backup failed"),
            },
            _ = verifications.tick() => match verify().await {
                Ok(summary) => tracing::info!(summary = %summary, "backup schedule: backup verified"),
                Err(reason) => tracing::error!(reason = %reason, "backup schedule: verification failed"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backups_and_verifications_follow_their_own_periods_and_a_failure_does_not_stop_them() {
        let log = Arc::new(Mutex::new(Vec::<(&str, u64)>::new()));
        let start = Instant::now();
        let (backup_log, verify_log) = (Arc::clone(&log), Arc::clone(&log));
        let schedule = run(
            Duration::from_secs(3600),
            Duration::from_secs(2 * 3600),
            move || {
                let log = Arc::clone(&backup_log);
                async move {
                    let at = start.elapsed().as_secs();
                    log.lock().unwrap().push(("backup", at));
                    // Every other backup fails: the timetable goes on.
                    if (at / 3600) % 2 == 1 {
                        Err("object store unavailable".to_owned())
                    } else {
                        Ok("backup 01J".to_owned())
                    }
                }
            },
            move || {
                let log = Arc::clone(&verify_log);
                async move {
                    log.lock()
                        .unwrap()
                        .push(("verify", start.elapsed().as_secs()));
                    // A verification takes a while; it must not shift the backups.
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    Ok("ok".to_owned())
                }
            },
        );
        let _ = tokio::time::timeout(Duration::from_secs(3 * 3600 + 60), schedule).await;
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log,
            vec![
                ("backup", 0),
                ("verify", 0),
                ("backup", 3600),
                ("backup", 7200),
                ("verify", 7200),
                ("backup", 10800),
            ]
        );
    }
}
