//! Append and reopen: entries written to a journal are durable once acknowledged, the directory
//! is held by one open journal at a time, and a reopen replays every acknowledged entry with the
//! LSNs going on from the last one.
//!
//! Run with `cargo run -p mainstay-journal --example append_reopen` (the journal lives in a
//! temporary directory that is deleted at the end).

use mainstay_journal::{Journal, JournalConfig, Lsn, OpenError};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;

    // `open` blocks while it replays the directory: a server calls it before it starts serving
    // (or inside `spawn_blocking`); this program has nothing else to run meanwhile.
    let (journal, replay) = Journal::open(dir.path(), JournalConfig::default())?;
    println!("first open: {} entries to replay", replay.entries.len());
    assert!(replay.entries.is_empty());

    // One entry, durable when `write` returns.
    let first = journal.write(b"order 41 paid").await?;
    println!("wrote {first}");

    // Several entries, made durable together by one commit (one fdatasync for the group).
    let appended = [
        journal.append(b"order 42 paid")?,
        journal.append(b"order 42 shipped")?,
    ];
    journal.commit(appended[1]).await?;
    println!(
        "appended {} and {}, committed both with one sync",
        appended[0], appended[1]
    );
    assert_eq!(journal.durable_lsn(), Lsn::new(3));

    // While the journal is open, the directory is locked.
    match Journal::open(dir.path(), JournalConfig::default()) {
        Err(OpenError::Locked { .. }) => {
            println!("a second open is refused: the directory is locked")
        }
        Err(other) => return Err(other.into()),
        Ok(_) => return Err("a second open of a locked directory succeeded".into()),
    }

    // Closing releases the lock; the reopen replays what was acknowledged.
    journal.close();
    let (journal, replay) = Journal::open(dir.path(), JournalConfig::default())?;
    println!(
        "reopened: {} entries replayed ({:?})",
        replay.entries.len(),
        replay.report.outcome()
    );
    for entry in &replay.entries {
        println!(
            "  {}: {}",
            entry.lsn,
            String::from_utf8_lossy(&entry.payload)
        );
    }
    let payloads: Vec<&[u8]> = replay
        .entries
        .iter()
        .map(|entry| entry.payload.as_slice())
        .collect();
    assert_eq!(
        payloads,
        [&b"order 41 paid"[..], b"order 42 paid", b"order 42 shipped"]
    );

    // LSNs go on from the last replayed entry.
    let next = journal.write(b"order 43 paid").await?;
    println!("wrote {next} after the reopen");
    assert_eq!(next, Lsn::new(4));
    journal.close();
    Ok(())
}
