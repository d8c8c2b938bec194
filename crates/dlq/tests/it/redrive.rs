//! Redrive: through the queue's handler, removal only on success, updates on failure, the
//! missing-handler error, the rate limit and cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use mainstay_clock::{Clock, ManualClock};
use mainstay_dlq::{
    CancellationToken, DlqConfig, Entry, FailureClass, Filter, HandlerError, RedriveError,
    RedriveHandler,
};
use parking_lot::Mutex;

use crate::{config, entry, metric, open_with};

/// Fails every second call.
#[derive(Default)]
struct HalfFailing {
    calls: AtomicUsize,
    succeeded: Mutex<Vec<String>>,
}

#[async_trait]
impl RedriveHandler for HalfFailing {
    async fn redrive(&self, entry: &Entry) -> Result<(), HandlerError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
            return Err(HandlerError::new(format!(
                "downstream still failing for {}",
                entry.key()
            )));
        }
        self.succeeded.lock().push(entry.key().to_owned());
        Ok(())
    }
}

#[tokio::test]
async fn entries_leave_only_when_their_handler_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    for n in 0..10 {
        h.dlq
            .push(entry("orders", &format!("k{n}")).attempts(3))
            .await
            .unwrap();
    }
    h.dlq.push(entry("other", "untouched")).await.unwrap();
    let handler = Arc::new(HalfFailing::default());
    h.dlq.register_handler("orders", handler.clone());
    clock.advance(Duration::from_secs(60));
    let report = h.dlq.redrive(&Filter::queue("orders")).await.unwrap();
    assert_eq!(
        (report.matched, report.succeeded, report.failed),
        (10, 5, 5)
    );
    assert!(!report.cancelled);
    for key in handler.succeeded.lock().iter() {
        let found = h.dlq.list(&Filter::queue("orders"), None, 100).unwrap();
        assert!(
            found.entries.iter().all(|e| e.key() != key),
            "{key} still there"
        );
    }
    let left = h
        .dlq
        .list(&Filter::queue("orders"), None, 100)
        .unwrap()
        .entries;
    assert_eq!(left.len(), 5);
    for e in &left {
        assert_eq!(e.attempts(), 4);
        assert_eq!(e.redrive_count(), 1);
        assert_eq!(e.last_failure(), clock.system_time());
        assert!(e.message().starts_with("downstream still failing"));
    }
    assert_eq!(
        metric(
            &h.registry,
            "dlq_redriven_total{queue=\"orders\",outcome=\"succeeded\"}"
        ),
        5.0
    );
    assert_eq!(
        metric(
            &h.registry,
            "dlq_redriven_total{queue=\"orders\",outcome=\"failed\"}"
        ),
        5.0
    );
    assert_eq!(h.dlq.len(), 6);

    // The updates are durable.
    drop(h);
    let h = open_with(dir.path(), config(), &clock).await;
    let again = h
        .dlq
        .list(&Filter::queue("orders"), None, 100)
        .unwrap()
        .entries;
    assert_eq!(again, left);
}

#[tokio::test]
async fn a_queue_without_a_handler_is_a_typed_error_and_nothing_moves() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    h.dlq.push(entry("orders", "a")).await.unwrap();
    h.dlq.push(entry("emails", "b")).await.unwrap();
    h.dlq
        .register_handler("orders", Arc::new(HalfFailing::default()));
    let err = h.dlq.redrive(&Filter::default()).await.unwrap_err();
    assert_eq!(
        err,
        RedriveError::NoHandler {
            queue: "emails".into()
        }
    );
    assert!(err.to_string().contains("no registered redrive handler"));
    assert_eq!(h.dlq.len(), 2);
    // Also for an empty queue named by the filter.
    let err = h.dlq.redrive(&Filter::queue("nothing")).await.unwrap_err();
    assert_eq!(
        err,
        RedriveError::NoHandler {
            queue: "nothing".into()
        }
    );
}

#[tokio::test]
async fn the_filter_selects_by_class_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    let poisoned = mainstay_dlq::NewEntry::inline(
        "orders",
        "poisoned",
        &b"x"[..],
        FailureClass::Poisoned,
        "bad input",
    );
    h.dlq.push(poisoned).await.unwrap();
    h.dlq.push(entry("orders", "old")).await.unwrap();
    clock.advance(Duration::from_secs(7200));
    h.dlq.push(entry("orders", "new")).await.unwrap();
    let handler = Arc::new(HalfFailing::default());
    h.dlq.register_handler("orders", handler.clone());
    let transient_and_old = Filter {
        error_class: Some(FailureClass::Transient),
        older_than: Some(Duration::from_secs(3600)),
        ..Filter::queue("orders")
    };
    let report = h.dlq.redrive(&transient_and_old).await.unwrap();
    assert_eq!((report.matched, report.succeeded), (1, 1));
    assert_eq!(*handler.succeeded.lock(), ["old"]);
    let filter: Filter =
        serde_json::from_str(r#"{"queue":"orders","error_class":"poisoned"}"#).unwrap();
    assert_eq!(h.dlq.list(&filter, None, 10).unwrap().entries.len(), 1);
}

/// Records the clock time of every call.
struct Timed {
    clock: ManualClock,
    at: Mutex<Vec<SystemTime>>,
}

#[async_trait]
impl RedriveHandler for Timed {
    async fn redrive(&self, _: &Entry) -> Result<(), HandlerError> {
        self.at.lock().push(self.clock.system_time());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_is_rate_limited_on_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let config = DlqConfig {
        redrive_rate_per_second: 10,
        ..config()
    };
    let h = open_with(dir.path(), config, &clock).await;
    for n in 0..5 {
        h.dlq.push(entry("orders", &format!("k{n}"))).await.unwrap();
    }
    let handler = Arc::new(Timed {
        clock: clock.clone(),
        at: Mutex::new(Vec::new()),
    });
    h.dlq.register_handler("orders", handler.clone());
    let dlq = h.dlq.clone();
    let mut run = tokio::spawn(async move { dlq.redrive(&Filter::queue("orders")).await });
    // Time moves only while the redrive waits on the clock.
    let report = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::select! {
                done = &mut run => break done.unwrap().unwrap(),
                () = tokio::task::yield_now() => {
                    if clock.pending_sleeps() > 0 {
                        clock.advance(Duration::from_millis(10));
                    }
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(report.succeeded, 5);
    let at = handler.at.lock();
    for pair in at.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap();
        assert!(
            gap >= Duration::from_millis(100),
            "{gap:?} between redrives at 10/s"
        );
    }
}

/// Cancels the token on its second call.
struct CancelOnSecond {
    token: CancellationToken,
    calls: AtomicUsize,
}

#[async_trait]
impl RedriveHandler for CancelOnSecond {
    async fn redrive(&self, _: &Entry) -> Result<(), HandlerError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 1 {
            self.token.cancel();
        }
        Ok(())
    }
}

#[tokio::test]
async fn redrive_stops_between_entries_when_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    for n in 0..6 {
        h.dlq.push(entry("orders", &format!("k{n}"))).await.unwrap();
    }
    let token = CancellationToken::new();
    h.dlq.register_handler(
        "orders",
        Arc::new(CancelOnSecond {
            token: token.clone(),
            calls: AtomicUsize::new(0),
        }),
    );
    let report = h
        .dlq
        .redrive_with(&Filter::queue("orders"), &token)
        .await
        .unwrap();
    assert!(report.cancelled);
    assert_eq!((report.matched, report.succeeded), (6, 2));
    assert_eq!(h.dlq.len(), 4);
}
