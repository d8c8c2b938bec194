//! A dead-letter queue with a redrive handler: email sends that failed are pushed to the DLQ,
//! then redriven through a handler that delivers some and fails the others. Delivered entries
//! leave the DLQ; failed ones stay with their attempts, error class and message updated, and are
//! still there after the DLQ is closed and reopened.
//!
//! Run with `cargo run -p mainstay-dlq --example redrive` (the DLQ lives in a temporary directory
//! that is deleted at the end).

use std::sync::Arc;

use async_trait::async_trait;
use mainstay_dlq::{
    Dlq, DlqConfig, Entry, FailureClass, Filter, HandlerError, NewEntry, Payload, RedriveHandler,
};

/// Sends an email again. Mailboxes on `full.example` are still full: those sends fail for good.
struct Mailer;

#[async_trait]
impl RedriveHandler for Mailer {
    async fn redrive(&self, entry: &Entry) -> Result<(), HandlerError> {
        let Payload::Inline(payload) = entry.payload() else {
            return Err(
                HandlerError::new("not an inline payload").with_class(FailureClass::Poisoned)
            );
        };
        let recipient = String::from_utf8_lossy(payload.data());
        if recipient.ends_with("@full.example") {
            println!("  {}: to {recipient}: mailbox still full", entry.key());
            return Err(
                HandlerError::new("smtp 552: mailbox full").with_class(FailureClass::Permanent)
            );
        }
        println!("  {}: to {recipient}: delivered", entry.key());
        Ok(())
    }
}

/// Prints every entry of the `emails` queue and returns their keys.
fn show(dlq: &Dlq) -> Result<Vec<String>, mainstay_dlq::ListError> {
    let page = dlq.list(&Filter::queue("emails"), None, 100)?;
    for entry in &page.entries {
        println!(
            "  {}: attempts {}, {}: {}",
            entry.key(),
            entry.attempts(),
            entry.error_class().as_str(),
            entry.message()
        );
    }
    Ok(page
        .entries
        .iter()
        .map(|entry| entry.key().to_owned())
        .collect())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let dlq = Dlq::open(dir.path(), DlqConfig::default()).await?;

    // The email sender gave up on these; each push is durable once it returns.
    let failed_sends = [
        ("msg-1", "ada@mail.example"),
        ("msg-2", "bob@full.example"),
        ("msg-3", "cy@mail.example"),
        ("msg-4", "dee@full.example"),
        ("msg-5", "eve@mail.example"),
    ];
    for (key, recipient) in failed_sends {
        let entry = NewEntry::inline(
            "emails",
            key,
            recipient.as_bytes().to_vec(),
            FailureClass::Exhausted,
            "smtp 451: try again later",
        );
        dlq.push(entry).await?;
    }
    println!("dead letters after the outage:");
    show(&dlq)?;

    // The owner of the queue registers its handler; a redrive sends every entry through it.
    dlq.register_handler("emails", Arc::new(Mailer));
    println!("redrive:");
    let report = dlq.redrive(&Filter::queue("emails")).await?;
    println!(
        "  matched {}, succeeded {}, failed {}, skipped {}",
        report.matched, report.succeeded, report.failed, report.skipped
    );
    assert_eq!((report.matched, report.succeeded, report.failed), (5, 3, 2));

    // Close and reopen: what failed again is still there, updated.
    dlq.close().await?;
    let dlq = Dlq::open(dir.path(), DlqConfig::default()).await?;
    println!("dead letters after a reopen:");
    let left = show(&dlq)?;
    assert_eq!(left, ["msg-2", "msg-4"]);
    let bounced = dlq.peek("emails").ok_or("the emails queue is empty")?;
    assert_eq!(
        (bounced.attempts(), bounced.error_class()),
        (2, FailureClass::Permanent)
    );
    dlq.close().await?;
    Ok(())
}
