//! The write-ahead log: length + CRC-32C framed records in size-rotated segment files, made
//! durable by leader/follower group commit on tokio's blocking pool.
//!
//! Frame: `u32 payload length | u32 crc32c(payload) | payload`, payload: `u64 lsn | u64
//! incarnation | u8 name length | name | u32 entry count | entries`, entry: `u16 id length | id |
//! u8 kind (0 delete, 1 put) | [u32 value length | value]`. One frame holds one `put`, `delete` or
//! whole batch, so a batch is all-or-nothing on recovery.
//!
//! Files are zero-filled ahead of the frames in 1 MiB stretches, so that a group's fdatasync
//! usually flushes data blocks only; recovery reads frames until the zero-filled rest.
//!
//! A writer appends its frame to an in-memory buffer under a short lock and gets its LSN. Whoever
//! then finds no sync in flight becomes the leader: on the blocking pool it takes the whole
//! buffer, writes it, `fdatasync`s once and wakes everyone whose LSN it covered, and repeats
//! while writers appended during that sync. A writer waits for its own LSN, never for the
//! leader's later rounds. Before the next round the leader lets the group refill: it waits until
//! as many records are pending as the last round carried plus those appended while it ran (the
//! writers it just woke coming back, beside those already waiting), at most half the last sync's
//! duration and never more than [`MAX_GROUP_WAIT`]; without that,
//! rounds alternate between the few writers that came back at once and everyone else, and carry
//! half as much each (decision 0064). A failed write or sync
//! poisons the log (a failed fsync cannot be retried safely): every later write fails until the
//! store is reopened, which recovers from what reached the disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::config::WalRecoveryMode;
use crate::error::WalError;
use crate::metrics::Instruments;

pub(crate) const HEADER: usize = 8;
/// WAL files are zero-filled this far ahead of the frames, so that most fdatasyncs overwrite
/// allocated blocks and flush data only, not the file's size (decision 0064).
const PREALLOCATE: u64 = 1024 * 1024;
/// The longest the leader waits for a group to refill before its next round.
const MAX_GROUP_WAIT: Duration = Duration::from_micros(500);
/// Largest payload accepted on recovery (a larger length is a torn or corrupt frame).
pub(crate) const MAX_FRAME: usize = 512 * 1024 * 1024;

/// One operation as logged: a set of puts and deletes in one collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalRecord {
    pub(crate) lsn: u64,
    pub(crate) collection: String,
    pub(crate) incarnation: u64,
    pub(crate) entries: Vec<(String, Option<Bytes>)>,
}

/// Encodes everything of a record but its LSN (which the log assigns).
pub(crate) fn encode_body(
    collection: &str,
    incarnation: u64,
    entries: &[(String, Option<Bytes>)],
) -> Vec<u8> {
    let size: usize = entries
        .iter()
        .map(|(id, value)| 7 + id.len() + value.as_ref().map_or(0, Bytes::len))
        .sum::<usize>()
        + 13
        + collection.len();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&incarnation.to_le_bytes());
    // Collection names are at most 64 bytes and ids at most 512 (validated before this point).
    out.push(u8::try_from(collection.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(collection.as_bytes());
    out.extend_from_slice(
        &u32::try_from(entries.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for (id, value) in entries {
        out.extend_from_slice(&u16::try_from(id.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
        match value {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                out.extend_from_slice(
                    &u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes(),
                );
                out.extend_from_slice(value);
            }
        }
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|b| b.first().copied())
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self, n: usize) -> Option<String> {
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

pub(crate) fn decode_payload(payload: &[u8]) -> Option<WalRecord> {
    let mut reader = Reader { bytes: payload };
    let lsn = reader.u64()?;
    let incarnation = reader.u64()?;
    let name_len = usize::from(reader.u8()?);
    let collection = reader.string(name_len)?;
    let count = reader.u32()?;
    let mut entries = Vec::new();
    for _ in 0..count {
        let id_len = usize::from(reader.u16()?);
        let id = reader.string(id_len)?;
        let value = match reader.u8()? {
            0 => None,
            1 => {
                let len = usize::try_from(reader.u32()?).ok()?;
                Some(Bytes::copy_from_slice(reader.take(len)?))
            }
            _ => return None,
        };
        entries.push((id, value));
    }
    reader.bytes.is_empty().then_some(WalRecord {
        lsn,
        collection,
        incarnation,
        entries,
    })
}

/// The frame at `offset` of a file's bytes and its payload length, if it is whole and valid.
fn decode_frame(data: &[u8], offset: usize) -> Option<(WalRecord, usize)> {
    let header = data.get(offset..offset + HEADER)?;
    let len = usize::try_from(u32::from_le_bytes(header.get(..4)?.try_into().ok()?)).ok()?;
    let crc = u32::from_le_bytes(header.get(4..8)?.try_into().ok()?);
    if len > MAX_FRAME {
        return None;
    }
    let payload = data.get(offset + HEADER..offset + HEADER + len)?;
    (crc32c::crc32c(payload) == crc).then_some(())?;
    Some((decode_payload(payload)?, len))
}

/// Whether `data[offset..]` is all zeros: the preallocated space after the last frame.
fn zeros_from(data: &[u8], offset: usize) -> bool {
    data.get(offset..)
        .is_none_or(|rest| rest.iter().all(|b| *b == 0))
}

/// The offset of the first valid frame at or after `from` whose LSN is above `after` (LSNs only
/// grow in the log, which keeps a scan through damaged bytes from taking their noise for a
/// frame), if there is one.
fn resync(data: &[u8], from: usize, after: u64) -> Option<usize> {
    let last = data.len().checked_sub(HEADER + 8)?;
    (from..=last).find(|&offset| {
        let Some(header) = data.get(offset..offset + HEADER + 8) else {
            return false;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&header[HEADER..HEADER + 8]);
        let lsn = u64::from_le_bytes(lsn);
        (8..=MAX_FRAME).contains(&len)
            && offset + HEADER + len <= data.len()
            && lsn > after
            && lsn - after <= u64::from(u32::MAX)
            && decode_frame(data, offset).is_some()
    })
}

/// How many valid frames follow each other from `offset`.
fn count_frames(data: &[u8], mut offset: usize) -> u64 {
    let mut count = 0;
    while let Some((_, len)) = decode_frame(data, offset) {
        count += 1;
        offset += HEADER + len;
    }
    count
}

/// What recovery found in the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalRecovery {
    /// Records replayed.
    pub records: u64,
    /// WAL files read.
    pub files: usize,
    /// Bytes of a torn or corrupt tail cut from the last file.
    pub truncated_bytes: u64,
    /// Records skipped because a failed write or fsync had poisoned the log when they were
    /// appended: their writers were told the write failed, so they never come back.
    pub poisoned_records: u64,
    /// Damage in the middle of WAL files skipped under `wal_recovery = "skip_corrupt"` (always
    /// empty under `refuse`, which fails the open instead).
    pub damage: Vec<WalDamage>,
}

/// A damaged stretch of a WAL file that recovery skipped: the records in it are lost.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WalDamage {
    /// The WAL file (rewritten without the damage).
    pub file: PathBuf,
    /// The copy of the file as it was found, under `data_dir/corrupt/`.
    pub copy: PathBuf,
    /// Where the damage starts in the file.
    pub offset: u64,
    /// Bytes skipped (up to the next valid frame, or to the end of the file's frames).
    pub bytes: u64,
    /// The LSN of the last valid record before the damage (0 when none): the lost records had
    /// LSNs above it.
    pub lsn_before: u64,
    /// The LSN of the first valid record after it, if any: the lost records had LSNs below it.
    pub lsn_after: Option<u64>,
}

#[derive(Debug, Clone)]
struct WalFile {
    seq: u64,
    path: PathBuf,
    last_lsn: u64,
    /// Bytes of frames.
    bytes: u64,
    /// Bytes zero-filled (frames included); only the active file grows it.
    allocated: u64,
}

#[derive(Debug)]
struct State {
    buffer: Vec<u8>,
    /// The previous buffer, kept for its capacity.
    spare: Vec<u8>,
    next_lsn: u64,
    appended_lsn: u64,
    synced_lsn: u64,
    syncing: bool,
    /// While the leader waits for a group to refill: the pending records that end the wait
    /// (0 otherwise).
    group_target: u64,
    failed: Option<String>,
    file: Option<File>,
    files: Vec<WalFile>,
}

/// What one group sync saw.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// The records it carried plus those appended while it ran: about how many writers are
    /// active, as each waits for its record before appending the next.
    writers: u64,
    took: Duration,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Signalled when the pending records reach `State::group_target`.
    refilled: Condvar,
    synced: watch::Sender<u64>,
    instruments: Instruments,
    /// Tests make the next syncs fail after the frames were written, as a failed fdatasync
    /// does (the bytes may still reach the disk).
    #[cfg(test)]
    fail_syncs: std::sync::atomic::AtomicBool,
}

/// The write-ahead log. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Wal {
    inner: Arc<Inner>,
}

fn file_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates a WAL file with its first zero-filled, synced stretch.
fn create_file(path: &Path, dir: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(path)?;
    file.write_all_at(&vec![0u8; PREALLOCATE as usize], 0)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
}

/// The file that lists the LSN ranges of writes that failed (`first last` per line).
const POISONED_FILE: &str = "poisoned";

fn read_poisoned(dir: &Path) -> Result<Vec<std::ops::RangeInclusive<u64>>, WalError> {
    let path = dir.join(POISONED_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(&path, error)),
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (first, last) = line.split_once(' ')?;
            Some(first.trim().parse::<u64>().ok()?..=last.trim().parse::<u64>().ok()?)
        })
        .collect::<Option<Vec<_>>>()
        .ok_or(WalError::Unreadable { path })
}

/// Adds `range` to the durable list of failed LSNs (temp file + fsync + rename + fsync(dir)).
fn record_poisoned(dir: &Path, range: std::ops::RangeInclusive<u64>) -> Result<(), WalError> {
    if range.is_empty() {
        return Ok(());
    }
    let mut ranges = read_poisoned(dir)?;
    ranges.push(range);
    let text: String = ranges
        .iter()
        .map(|r| format!("{} {}\n", r.start(), r.end()))
        .collect();
    let path = dir.join(POISONED_FILE);
    crate::store::write_atomic(&path, text.as_bytes()).map_err(|e| io_error(&path, e))
}

/// Keeps a copy of a damaged WAL file as found under `quarantine` (`wal-<file name>-<ms>`).
fn quarantine_copy(quarantine: &Path, path: &Path, data: &[u8]) -> Result<PathBuf, WalError> {
    fs::create_dir_all(quarantine).map_err(|e| io_error(quarantine, e))?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let name = path.file_name().map_or_else(
        || "wal".to_owned(),
        |name| name.to_string_lossy().into_owned(),
    );
    let copy = quarantine.join(format!("wal-{name}-{millis}"));
    crate::store::write_atomic(&copy, data).map_err(|e| io_error(&copy, e))?;
    Ok(copy)
}

fn io_error(path: &Path, source: io::Error) -> WalError {
    WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Wal {
    /// Opens the log in `dir` (blocking): replays every file, truncates a torn tail of the last
    /// one, and starts a fresh file for new records. New LSNs start above both the log's records
    /// and `lsn_floor` (the highest LSN held by a segment), so they keep growing even after every
    /// WAL file was trimmed.
    pub(crate) fn open(
        dir: &Path,
        segment_bytes: u64,
        lsn_floor: u64,
        (mode, quarantine): (WalRecoveryMode, &Path),
        instruments: Instruments,
    ) -> Result<(Self, Vec<WalRecord>, WalRecovery), WalError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let mut seqs = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
            let entry = entry.map_err(|e| io_error(dir, e))?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".wal"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            seqs.push(seq);
        }
        seqs.sort_unstable();
        let poisoned = read_poisoned(dir)?;
        let mut records = Vec::new();
        let mut recovery = WalRecovery {
            files: seqs.len(),
            ..WalRecovery::default()
        };
        let mut files = Vec::new();
        let mut max_lsn = 0;
        let last_index = seqs.len().saturating_sub(1);
        for (index, seq) in seqs.iter().copied().enumerate() {
            let path = file_path(dir, seq);
            let mut data = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(|e| io_error(&path, e))?;
            let later_files = last_index - index;
            let mut offset = 0usize;
            let mut file_last = 0;
            // Under `skip_corrupt`, once damage is found: the frames kept, to rewrite the file.
            let mut kept: Option<(Vec<u8>, PathBuf)> = None;
            let mut truncated = false;
            while offset < data.len() {
                // Zeros to the end of the file are the preallocated space after the last frame.
                if data
                    .get(offset..offset + HEADER)
                    .is_none_or(|h| h.iter().all(|b| *b == 0))
                    && zeros_from(&data, offset)
                {
                    break;
                }
                if let Some((record, len)) = decode_frame(&data, offset) {
                    if let Some((frames, _)) = kept.as_mut() {
                        frames.extend_from_slice(&data[offset..offset + HEADER + len]);
                        if let Some(last) = recovery.damage.last_mut()
                            && last.lsn_after.is_none()
                            && last.file == path
                        {
                            last.lsn_after = Some(record.lsn);
                        }
                    }
                    offset += HEADER + len;
                    file_last = record.lsn;
                    max_lsn = max_lsn.max(record.lsn);
                    if poisoned.iter().any(|range| range.contains(&record.lsn)) {
                        recovery.poisoned_records += 1;
                    } else {
                        records.push(record);
                    }
                    continue;
                }
                // A bad frame. With nothing valid after it, in this file or a later one, it is
                // a write torn by a crash: it was never acknowledged, cut it off quietly. With
                // valid frames after it, acknowledged records sit behind the damage.
                let next = resync(&data, offset + 1, max_lsn);
                if next.is_none() && later_files == 0 {
                    let cut = (data.len() - offset) as u64;
                    tracing::warn!(path = %path.display(), offset, bytes = cut, "truncating the torn tail of the wal");
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| io_error(&path, e))?;
                    file.set_len(offset as u64)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| io_error(&path, e))?;
                    recovery.truncated_bytes = cut;
                    truncated = true;
                    break;
                }
                let valid_after = next.map_or(0, |next| count_frames(&data, next));
                if mode == WalRecoveryMode::Refuse {
                    tracing::error!(path = %path.display(), offset, valid_after, later_files, "the wal is damaged in the middle; refusing to open (storage.wal_recovery = \"refuse\")");
                    return Err(WalError::Corrupt {
                        path,
                        offset: offset as u64,
                        valid_after,
                        later_files,
                    });
                }
                let copy = match &kept {
                    Some((_, copy)) => copy.clone(),
                    None => {
                        let copy = quarantine_copy(quarantine, &path, &data)?;
                        kept = Some((data[..offset].to_vec(), copy.clone()));
                        copy
                    }
                };
                let end = next.unwrap_or(data.len());
                tracing::error!(path = %path.display(), offset, bytes = end - offset, valid_after, copy = %copy.display(), "skipping damaged wal bytes; the records in them are lost (storage.wal_recovery = \"skip_corrupt\")");
                recovery.damage.push(WalDamage {
                    file: path.clone(),
                    copy,
                    offset: offset as u64,
                    bytes: (end - offset) as u64,
                    lsn_before: max_lsn,
                    lsn_after: None,
                });
                offset = end;
            }
            if let Some((frames, _)) = kept {
                // The file without its damage, so that the next open does not find it again.
                crate::store::write_atomic(&path, &frames).map_err(|e| io_error(&path, e))?;
                offset = frames.len();
                data = frames;
            }
            // A closed file keeps its zero-filled rest on disk; a truncated tail is gone.
            let on_disk = if truncated { offset } else { data.len() };
            files.push(WalFile {
                seq,
                path,
                last_lsn: file_last,
                bytes: offset as u64,
                allocated: on_disk as u64,
            });
        }
        recovery.records = records.len() as u64;
        // New LSNs start above every poisoned one, so that none of them is ever skipped.
        let poisoned_end = poisoned.iter().map(|r| *r.end()).max().unwrap_or(0);
        let max_lsn = max_lsn.max(lsn_floor).max(poisoned_end);
        if recovery.poisoned_records > 0 {
            tracing::warn!(
                records = recovery.poisoned_records,
                "skipped wal records whose write had failed before the restart"
            );
        }
        let seq = seqs.last().map_or(1, |last| last + 1);
        let path = file_path(dir, seq);
        let file = create_file(&path, dir).map_err(|e| io_error(&path, e))?;
        files.push(WalFile {
            seq,
            path,
            last_lsn: max_lsn,
            bytes: 0,
            allocated: PREALLOCATE,
        });
        let (synced, _) = watch::channel(max_lsn);
        let wal = Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                segment_bytes,
                state: Mutex::new(State {
                    buffer: Vec::new(),
                    spare: Vec::new(),
                    next_lsn: max_lsn + 1,
                    appended_lsn: max_lsn,
                    synced_lsn: max_lsn,
                    syncing: false,
                    group_target: 0,
                    failed: None,
                    file: Some(file),
                    files,
                }),
                refilled: Condvar::new(),
                synced,
                instruments,
                #[cfg(test)]
                fail_syncs: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        wal.inner.update_gauges(&wal.inner.state.lock());
        Ok((wal, records, recovery))
    }

    /// Appends a record (not yet durable) and returns its LSN; `apply` runs under the log's lock
    /// with that LSN, so that records reach the memtable in LSN order.
    pub(crate) fn append<T>(
        &self,
        body: &[u8],
        apply: impl FnOnce(u64) -> T,
    ) -> Result<(u64, T), WalError> {
        let mut state = self.inner.state.lock();
        if let Some(message) = &state.failed {
            return Err(WalError::Failed(message.clone()));
        }
        let lsn = state.next_lsn;
        state.next_lsn += 1;
        let lsn_bytes = lsn.to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&lsn_bytes), body);
        let len = u32::try_from(body.len() + 8).map_err(|_| WalError::TooLarge(body.len()))?;
        state.buffer.extend_from_slice(&len.to_le_bytes());
        state.buffer.extend_from_slice(&crc.to_le_bytes());
        state.buffer.extend_from_slice(&lsn_bytes);
        state.buffer.extend_from_slice(body);
        state.appended_lsn = lsn;
        if state.group_target != 0 && lsn - state.synced_lsn >= state.group_target {
            self.inner.refilled.notify_one();
        }
        let applied = apply(lsn);
        Ok((lsn, applied))
    }

    /// Waits until `lsn` is durable, leading a group sync when none is in flight.
    pub(crate) async fn commit(&self, lsn: u64) -> Result<(), WalError> {
        let mut synced = self.inner.synced.subscribe();
        loop {
            let lead = {
                let state = self.inner.state.lock();
                if state.synced_lsn >= lsn {
                    return Ok(());
                }
                if let Some(message) = &state.failed {
                    return Err(WalError::Failed(message.clone()));
                }
                !state.syncing
            };
            if lead {
                let inner = Arc::clone(&self.inner);
                // The sync runs to completion on the blocking pool even if this future is dropped,
                // and keeps leading rounds after this writer's own LSN is durable: stop waiting
                // for it then.
                let mut leader = tokio::task::spawn_blocking(move || inner.sync_step());
                tokio::select! {
                    joined = &mut leader => {
                        joined.map_err(|e| {
                            WalError::Failed(format!("the wal sync task failed: {e}"))
                        })?;
                    }
                    changed = synced.changed() => {
                        if changed.is_err() {
                            return Err(WalError::Failed("the wal was closed".to_owned()));
                        }
                    }
                }
            } else if synced.changed().await.is_err() {
                return Err(WalError::Failed("the wal was closed".to_owned()));
            }
        }
    }

    /// Every durable record with an LSN in `range` still in the log's files (blocking), in LSN
    /// order; records of failed writes are left out.
    pub(crate) fn read_range(
        &self,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<WalRecord>, WalError> {
        let (files, synced) = {
            let state = self.inner.state.lock();
            let files: Vec<(PathBuf, u64)> = state
                .files
                .iter()
                .map(|f| (f.path.clone(), f.bytes))
                .collect();
            (files, state.synced_lsn)
        };
        let poisoned = read_poisoned(&self.inner.dir)?;
        let mut out = Vec::new();
        for (path, bytes) in files {
            let mut data = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(|e| io_error(&path, e))?;
            data.truncate(usize::try_from(bytes).unwrap_or(usize::MAX));
            let mut offset = 0;
            while let Some((record, len)) = decode_frame(&data, offset) {
                offset += HEADER + len;
                if range.contains(&record.lsn)
                    && record.lsn <= synced
                    && !poisoned.iter().any(|p| p.contains(&record.lsn))
                {
                    out.push(record);
                }
            }
        }
        out.sort_by_key(|r| r.lsn);
        Ok(out)
    }

    /// The last LSN known durable.
    pub(crate) fn synced_lsn(&self) -> u64 {
        self.inner.state.lock().synced_lsn
    }

    /// The last LSN handed out.
    pub(crate) fn last_lsn(&self) -> u64 {
        self.inner.state.lock().appended_lsn
    }

    /// Deletes every closed WAL file whose records all have an LSN at most `covered` (blocking).
    pub(crate) fn trim(&self, covered: u64) -> Result<usize, WalError> {
        let doomed: Vec<WalFile> = {
            let mut state = self.inner.state.lock();
            let closed = state.files.len().saturating_sub(1);
            let count = state
                .files
                .iter()
                .take(closed)
                .take_while(|file| file.last_lsn <= covered)
                .count();
            state.files.drain(..count).collect()
        };
        if !doomed.is_empty() {
            self.inner.update_gauges(&self.inner.state.lock());
        }
        for file in &doomed {
            fs::remove_file(&file.path).map_err(|e| io_error(&file.path, e))?;
            tracing::debug!(seq = file.seq, "deleted a covered wal file");
        }
        if !doomed.is_empty() {
            sync_dir(&self.inner.dir).map_err(|e| io_error(&self.inner.dir, e))?;
        }
        Ok(doomed.len())
    }

    /// Why the log refuses writes, once a write or sync failed.
    pub(crate) fn failure(&self) -> Option<String> {
        self.inner.state.lock().failed.clone()
    }

    /// Makes every later sync fail after writing its frames (tests only).
    #[cfg(test)]
    pub(crate) fn fail_syncs(&self) {
        self.inner
            .fail_syncs
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Bytes of WAL files on disk (zero-filled space included).
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.inner
            .state
            .lock()
            .files
            .iter()
            .map(|f| f.allocated)
            .sum()
    }

    /// WAL files on disk now.
    pub(crate) fn file_count(&self) -> usize {
        self.inner.state.lock().files.len()
    }
}

impl Inner {
    /// Sets the gauges of the files on disk.
    fn update_gauges(&self, state: &State) {
        let bytes: u64 = state.files.iter().map(|f| f.allocated).sum();
        self.instruments
            .wal_disk_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.instruments
            .wal_files
            .set(i64::try_from(state.files.len()).unwrap_or(i64::MAX));
    }

    /// Leads group syncs until nothing is left to sync: records appended during one fsync are
    /// carried by the next without handing the leader role over.
    fn sync_step(&self) {
        {
            // The leader role lasts through the rounds and the waits between them.
            let mut state = self.state.lock();
            if state.syncing {
                return;
            }
            state.syncing = true;
        }
        while let Some(round) = self.sync_once() {
            self.await_group(round);
        }
    }

    /// Waits until a record is pending for each writer `last` saw, at most half its sync time
    /// (capped at [`MAX_GROUP_WAIT`]).
    fn await_group(&self, last: Round) {
        if last.writers < 2 {
            return;
        }
        let deadline = Instant::now() + (last.took / 2).min(MAX_GROUP_WAIT);
        let mut state = self.state.lock();
        state.group_target = last.writers;
        while state.failed.is_none() && state.appended_lsn - state.synced_lsn < last.writers {
            if self.refilled.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        state.group_target = 0;
    }

    /// One write + fdatasync of everything appended, by the leader. `None` when there was
    /// nothing to do or the sync failed: the leader role ends then, in the same critical section
    /// that saw nothing pending, so a writer appending later finds no leader and becomes one.
    fn sync_once(&self) -> Option<Round> {
        let started = Instant::now();
        let (mut buffer, mut file, target, offset, allocated, records) = {
            let mut state = self.state.lock();
            let file = if state.failed.is_some() || state.synced_lsn >= state.appended_lsn {
                None
            } else {
                state.file.take()
            };
            let Some(file) = file else {
                state.syncing = false;
                return None;
            };
            let spare = std::mem::take(&mut state.spare);
            let (offset, allocated) = state
                .files
                .last()
                .map_or((0, 0), |f| (f.bytes, f.allocated));
            (
                std::mem::replace(&mut state.buffer, spare),
                file,
                state.appended_lsn,
                offset,
                allocated,
                state.appended_lsn - state.synced_lsn,
            )
        };
        let end = offset + buffer.len() as u64;
        let mut grown = allocated;
        let written = (|| {
            // Grow the zero-filled area in whole stretches: only the syncs that grow it pay for
            // the file's metadata.
            while grown < end {
                file.write_all_at(&vec![0u8; PREALLOCATE as usize], grown)?;
                grown += PREALLOCATE;
            }
            file.write_all_at(&buffer, offset)?;
            #[cfg(test)]
            if self.fail_syncs.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(io::Error::other("injected fdatasync failure"));
            }
            file.sync_data()
        })();
        self.instruments.wal_fsyncs.inc();
        self.instruments.wal_bytes.inc_by(buffer.len() as u64);
        let mut state = self.state.lock();
        if let Err(error) = written {
            state.syncing = false;
            tracing::error!(%error, "wal write or fsync failed; the wal refuses writes until reopened");
            state.failed = Some(format!("wal write or fsync failed: {error}"));
            self.instruments.wal_failed.set(1);
            // Every record not yet durable failed for its writer. The page cache may still
            // carry some of them to the disk: record their LSNs durably so that replay skips
            // them. No record is appended once `failed` is set, so the range is complete.
            let range = state.synced_lsn + 1..=state.appended_lsn;
            drop(state);
            if let Err(error) = record_poisoned(&self.dir, range.clone()) {
                tracing::error!(%error, first = range.start(), last = range.end(), "could not record the lsns of failed wal writes; if the disk kept them they would reappear after a restart");
            }
            self.synced.send_replace(0);
            return None;
        }
        state.synced_lsn = target;
        let rotate = match state.files.last_mut() {
            Some(active) => {
                active.last_lsn = target;
                active.bytes = end;
                active.allocated = grown;
                active.bytes >= self.segment_bytes
            }
            None => false,
        };
        if rotate {
            let seq = state.files.last().map_or(1, |f| f.seq + 1);
            let path = file_path(&self.dir, seq);
            let opened = create_file(&path, &self.dir);
            match opened {
                Ok(new) => {
                    file = new;
                    state.files.push(WalFile {
                        seq,
                        path,
                        last_lsn: target,
                        bytes: 0,
                        allocated: PREALLOCATE,
                    });
                }
                Err(error) => {
                    // The old file keeps growing; rotation is retried after the next sync.
                    tracing::warn!(%error, "could not rotate the wal");
                }
            }
        }
        state.file = Some(file);
        self.update_gauges(&state);
        buffer.clear();
        state.spare = buffer;
        let writers = records + (state.appended_lsn - target);
        drop(state);
        self.synced.send_replace(target);
        Some(Round {
            writers,
            took: started.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<(String, Option<Bytes>)> {
        (0..n)
            .map(|i| {
                (
                    format!("id-{i}"),
                    (i % 2 == 0).then(|| Bytes::from(vec![7u8; i])),
                )
            })
            .collect()
    }

    #[test]
    fn records_round_trip() {
        let body = encode_body("orders", 3, &entries(5));
        let mut payload = 9u64.to_le_bytes().to_vec();
        payload.extend_from_slice(&body);
        let record = decode_payload(&payload).expect("decodes");
        assert_eq!(record.lsn, 9);
        assert_eq!(record.incarnation, 3);
        assert_eq!(record.collection, "orders");
        assert_eq!(record.entries, entries(5));
        payload.push(0);
        assert_eq!(
            decode_payload(&payload),
            None,
            "trailing bytes are corruption"
        );
    }

    fn open_in(
        dir: &Path,
        mode: WalRecoveryMode,
    ) -> Result<(Wal, Vec<WalRecord>, WalRecovery), WalError> {
        Wal::open(
            &dir.join("wal"),
            1 << 20,
            0,
            (mode, &dir.join("corrupt")),
            crate::metrics::StorageMetrics::unregistered().instruments("t"),
        )
    }

    /// Acknowledges `n` one-record writes (LSNs 1..=n) into a fresh log in `dir`; returns the
    /// file that holds them and the offsets of their frames.
    async fn acknowledged(dir: &Path, n: u64) -> (PathBuf, Vec<usize>) {
        let (wal, _, _) = open_in(dir, WalRecoveryMode::Refuse).expect("opens");
        for i in 1..=n {
            let body = encode_body(
                "c",
                1,
                &[(format!("k{i}"), Some(Bytes::from(vec![42u8; 100])))],
            );
            let (lsn, ()) = wal.append(&body, |_| ()).expect("appends");
            wal.commit(lsn).await.expect("commits");
        }
        drop(wal);
        let path = file_path(&dir.join("wal"), 1);
        let data = fs::read(&path).expect("reads");
        let mut offsets = Vec::new();
        let mut offset = 0;
        while let Some((_, len)) = decode_frame(&data, offset) {
            offsets.push(offset);
            offset += HEADER + len;
        }
        assert_eq!(offsets.len() as u64, n, "every record has its frame");
        (path, offsets)
    }

    fn flip(path: &Path, at: usize) {
        let mut data = fs::read(path).expect("reads");
        data[at] ^= 0x10;
        fs::write(path, data).expect("writes");
    }

    fn lsns(records: &[WalRecord]) -> Vec<u64> {
        records.iter().map(|r| r.lsn).collect()
    }

    #[tokio::test]
    async fn one_flipped_bit_in_the_middle_refuses_to_open_and_names_what_follows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, offsets) = acknowledged(dir.path(), 20).await;
        // A bit of the 10th record's value.
        flip(&path, offsets[9] + HEADER + 40);
        match open_in(dir.path(), WalRecoveryMode::Refuse) {
            Err(WalError::Corrupt {
                path: named,
                offset,
                valid_after,
                later_files,
            }) => {
                assert_eq!(named, path);
                assert_eq!(offset, offsets[9] as u64);
                assert_eq!((valid_after, later_files), (10, 0));
            }
            other => panic!("expected the open to refuse, got {:?}", other.map(|o| o.2)),
        }
        // Refusing changed nothing: the same answer again.
        assert!(matches!(
            open_in(dir.path(), WalRecoveryMode::Refuse),
            Err(WalError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn a_damaged_length_field_is_corruption_not_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, offsets) = acknowledged(dir.path(), 20).await;
        flip(&path, offsets[9] + 2);
        assert!(matches!(
            open_in(dir.path(), WalRecoveryMode::Refuse),
            Err(WalError::Corrupt {
                valid_after: 10,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn skip_corrupt_recovers_every_valid_frame_keeps_a_copy_and_reports_the_loss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, offsets) = acknowledged(dir.path(), 20).await;
        let original = {
            flip(&path, offsets[9] + HEADER + 40);
            fs::read(&path).expect("reads")
        };
        let (_, records, recovery) =
            open_in(dir.path(), WalRecoveryMode::SkipCorrupt).expect("opens");
        let mut expected: Vec<u64> = (1..=20).collect();
        expected.retain(|lsn| *lsn != 10);
        assert_eq!(lsns(&records), expected);
        assert_eq!(recovery.damage.len(), 1, "{recovery:?}");
        let damage = &recovery.damage[0];
        assert_eq!(damage.file, path);
        assert_eq!(damage.offset, offsets[9] as u64);
        assert_eq!(damage.bytes, (offsets[10] - offsets[9]) as u64);
        assert_eq!((damage.lsn_before, damage.lsn_after), (9, Some(11)));
        assert!(damage.copy.starts_with(dir.path().join("corrupt")));
        assert_eq!(fs::read(&damage.copy).expect("copy"), original);
        // The file was rewritten without the damage: the next open finds none, under either
        // mode, and the same records.
        let (_, again, recovery) = open_in(dir.path(), WalRecoveryMode::Refuse).expect("opens");
        assert_eq!(lsns(&again), expected);
        assert!(recovery.damage.is_empty());
    }

    #[tokio::test]
    async fn a_torn_last_frame_is_cut_quietly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, offsets) = acknowledged(dir.path(), 20).await;
        // The last frame half written, the rest of the file as preallocated.
        let mut data = fs::read(&path).expect("reads");
        let torn = offsets[19] + HEADER + 30;
        data[torn..].fill(0);
        fs::write(&path, data).expect("writes");
        let (_, records, recovery) = open_in(dir.path(), WalRecoveryMode::Refuse).expect("opens");
        assert_eq!(lsns(&records), (1..=19).collect::<Vec<_>>());
        assert!(recovery.truncated_bytes > 0);
        assert!(recovery.damage.is_empty());
    }

    /// The records of the fixture `tests/it/fixtures/wal-before-journal`, LSNs 1 to 12;
    /// `tests/it/fixtures/README.md` says how it was made.
    fn before_journal_records() -> Vec<WalRecord> {
        (1..=12u64)
            .map(|lsn| {
                let collection = if lsn % 3 == 0 { "invoices" } else { "orders" };
                let entries = (0..=lsn % 4)
                    .map(|j| {
                        let value = format!("value {lsn}/{j} ").repeat(3);
                        (
                            format!("rec-{lsn}-{j}"),
                            (j != 2).then(|| Bytes::from(value)),
                        )
                    })
                    .collect();
                WalRecord {
                    lsn,
                    collection: collection.to_owned(),
                    incarnation: 1 + lsn % 2,
                    entries,
                }
            })
            .collect()
    }

    #[tokio::test]
    async fn wal_files_written_before_the_journal_move_open_with_every_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/wal-before-journal");
        fs::create_dir_all(dir.path().join("wal")).expect("creates");
        for name in [
            "00000000000000000001.wal",
            "00000000000000000002.wal",
            "poisoned",
        ] {
            fs::copy(fixture.join(name), dir.path().join("wal").join(name)).expect("copies");
        }
        let (wal, records, recovery) = open_in(dir.path(), WalRecoveryMode::Refuse).expect("opens");
        assert_eq!(records, before_journal_records());
        // LSN 13 reached the disk, but its sync failed and its writer was told so.
        assert_eq!(recovery.poisoned_records, 1, "{recovery:?}");
        assert!(recovery.damage.is_empty());
        let (lsn, ()) = wal.append(b"next", |_| ()).expect("appends");
        assert_eq!(lsn, 14, "new LSNs start above the failed one");
    }
}
