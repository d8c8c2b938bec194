//! Backups of a DLQ: a snapshot with copies of the pinned payloads, restored into a new
//! directory that a DLQ opens with exactly the backed-up entries.

use mainstay_dlq::{BackupError, Dlq, FailureClass, NewEntry, Payload, PinnedFile, restore_backup};

use crate::config;

#[tokio::test]
async fn a_backup_restores_every_entry_and_its_pinned_payload_and_damage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pinned = dir.path().join("pinned.bin");
    std::fs::write(&pinned, b"pinned payload").unwrap();
    let dlq = Dlq::open(dir.path().join("live"), config()).await.unwrap();
    dlq.push(NewEntry::inline(
        "a",
        "k1",
        &b"one"[..],
        FailureClass::Transient,
        "boom",
    ))
    .await
    .unwrap();
    let file_id = dlq
        .push(NewEntry::pinned_file(
            "a",
            "k2",
            PinnedFile {
                path: pinned.clone(),
                size: 14,
                crc32c: crc32c::crc32c(b"pinned payload"),
            },
            FailureClass::Permanent,
            "boom",
        ))
        .await
        .unwrap();
    dlq.push(NewEntry::inline(
        "skipped",
        "k3",
        &b"three"[..],
        FailureClass::Transient,
        "boom",
    ))
    .await
    .unwrap();
    let backup = dir.path().join("backup");
    let written = dlq.write_backup(&backup, &["skipped"]).unwrap();
    assert_eq!(written.entries, 2);
    assert_eq!(written.files.len(), 2, "{:?}", written.files);
    dlq.close().await.unwrap();
    // The live payload goes; the backup's copy is what the restore uses.
    std::fs::remove_file(&pinned).unwrap();

    let restored_dir = dir.path().join("restored");
    assert_eq!(restore_backup(&backup, &restored_dir).unwrap(), 2);
    let restored = Dlq::open(&restored_dir, config()).await.unwrap();
    assert_eq!(restored.len(), 2);
    let entry = restored.get(file_id).expect("the pinned entry is back");
    let Payload::File(file) = entry.payload() else {
        panic!("a pinned payload: {entry:?}");
    };
    assert!(file.path.starts_with(&restored_dir));
    assert_eq!(std::fs::read(&file.path).unwrap(), b"pinned payload");
    restored.close().await.unwrap();

    let payload = backup.join(&written.files[1]);
    let mut bytes = std::fs::read(&payload).unwrap();
    bytes[3] ^= 1;
    std::fs::write(&payload, bytes).unwrap();
    let refused = restore_backup(&backup, &dir.path().join("again"));
    assert!(
        matches!(&refused, Err(BackupError::Damaged { path, .. }) if *path == payload),
        "{refused:?}"
    );
}
