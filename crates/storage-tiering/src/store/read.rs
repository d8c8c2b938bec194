//! The read path: point reads, listings and segment reads from memory, local files and the object store.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;

use crate::collection::{Collection, Residency, Segment, lookup_memory, lookup_resident};
use crate::config::TieringPolicy;
use crate::error::{MaintenanceError, ReadError, SegmentError};
use crate::names::{decode_cursor, encode_cursor, valid_collection_name, valid_record_id};
use crate::remote::{self};
use crate::segment::{self, Entry, FOOTER_LEN};

use super::*;

impl Store {
    /// The value of `id`, `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// [`ReadError::Unavailable`] when only the object store has the answer and it failed;
    /// [`ReadError::Corrupt`] when stored bytes fail their checksum.
    pub async fn get(&self, collection: &str, id: &str) -> Result<Option<Bytes>, ReadError> {
        if !valid_collection_name(collection) {
            return Err(ReadError::InvalidCollection(collection.to_owned()));
        }
        if !valid_record_id(id) {
            return Err(ReadError::InvalidId);
        }
        let coll = self
            .shared
            .collection(collection)
            .ok_or_else(|| ReadError::UnknownCollection(collection.to_owned()))?;
        let segments = {
            let data = coll.data.read();
            if let Some(entry) = lookup_memory(&data, id) {
                return Ok(entry.value);
            }
            data.segments.clone()
        };
        for segment in segments.iter().rev() {
            if let Some(entry) = self.shared.segment_lookup(&coll, segment, id).await? {
                return Ok(entry.value);
            }
        }
        Ok(None)
    }

    /// One page of records in id order, optionally under a prefix. When the object store fails,
    /// the page holds what memory and the cache have, with `degraded` set.
    ///
    /// # Errors
    ///
    /// [`ReadError`] for invalid input or corrupt data.
    pub async fn list(&self, collection: &str, query: &ListQuery) -> Result<Page, ReadError> {
        if !valid_collection_name(collection) {
            return Err(ReadError::InvalidCollection(collection.to_owned()));
        }
        let limits = &self.shared.config.limits;
        let limit = query.limit.unwrap_or(limits.default_page_size);
        if limit == 0 || limit > limits.max_page_size {
            return Err(ReadError::PageTooLarge {
                asked: limit,
                limit: limits.max_page_size,
            });
        }
        let prefix = query.prefix.clone().unwrap_or_default();
        if prefix.len() > crate::names::MAX_ID_BYTES
            || !(prefix.is_empty()
                || prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')))
        {
            return Err(ReadError::InvalidPrefix);
        }
        let after = match &query.cursor {
            Some(cursor) => Some(decode_cursor(cursor).ok_or(ReadError::InvalidCursor)?),
            None => None,
        };
        let coll = self
            .shared
            .collection(collection)
            .ok_or_else(|| ReadError::UnknownCollection(collection.to_owned()))?;
        let take = limit + 1;
        let in_range =
            |id: &str| id.starts_with(prefix.as_str()) && after.as_deref().is_none_or(|a| id > a);
        let start = match &after {
            Some(a) if a.as_str() >= prefix.as_str() => a.clone(),
            _ => prefix.clone(),
        };
        // Each source gives up to `take` entries in range, and whether it had more.
        let mut sources: Vec<(Vec<(String, Entry)>, bool)> = Vec::new();
        let segments = {
            let data = coll.data.read();
            let mut maps: Vec<&BTreeMap<String, Entry>> = vec![&data.memtable];
            maps.extend(data.frozen.iter().map(|f| &f.entries));
            for map in maps {
                let mut out = Vec::new();
                let mut more = false;
                for (id, entry) in map.range(start.clone()..) {
                    if !id.starts_with(prefix.as_str()) {
                        break;
                    }
                    if !in_range(id) {
                        continue;
                    }
                    if out.len() == take {
                        more = true;
                        break;
                    }
                    out.push((id.clone(), entry.clone()));
                }
                sources.push((out, more));
            }
            data.segments.clone()
        };
        let mut degraded = false;
        // A segment that could not be read may hold a newer version of any key that an older
        // source has: entries older than it are left out (the page is partial), never shown stale.
        let mut shadowed_below = 0u64;
        let range = ListRange {
            start: &start,
            prefix: &prefix,
            after: after.as_deref(),
            take,
        };
        for segment in &segments {
            match self
                .shared
                .segment_range(&coll, segment, &range, &mut degraded)
                .await
            {
                Ok(source) => sources.push(source),
                Err(ReadError::Unavailable(reason)) => {
                    tracing::debug!(%reason, "listing without an object-store segment");
                    degraded = true;
                    shadowed_below = shadowed_below.max(segment.meta.max_lsn);
                }
                Err(other) => return Err(other),
            }
        }
        // Keys up to the smallest last key of a truncated source are complete in every source.
        let boundary: Option<String> = sources
            .iter()
            .filter(|(_, more)| *more)
            .filter_map(|(entries, _)| entries.last().map(|(id, _)| id.clone()))
            .min();
        let mut merged: BTreeMap<String, Entry> = BTreeMap::new();
        for (entries, _) in sources {
            for (id, entry) in entries {
                if boundary.as_ref().is_some_and(|b| id > *b) || entry.lsn < shadowed_below {
                    continue;
                }
                match merged.get(&id) {
                    Some(existing) if existing.lsn >= entry.lsn => {}
                    _ => {
                        merged.insert(id, entry);
                    }
                }
            }
        }
        let mut records = Vec::new();
        let mut next_cursor = None;
        for (id, entry) in merged {
            let Some(value) = entry.value else { continue };
            if records.len() == limit {
                next_cursor = records.last().map(|r: &Record| encode_cursor(&r.id));
                break;
            }
            records.push(Record { id, value });
        }
        if next_cursor.is_none()
            && let Some(boundary) = boundary
        {
            next_cursor = Some(encode_cursor(
                records
                    .last()
                    .map_or(boundary.as_str(), |r| r.id.as_str())
                    .max(boundary.as_str()),
            ));
        }
        Ok(Page {
            records,
            next_cursor,
            degraded,
            unavailable_sources: if degraded {
                vec!["object_store".to_owned()]
            } else {
                Vec::new()
            },
        })
    }
}

impl Shared {
    /// Reads `range` (or all) of a segment from the object store, unless the upload breaker says
    /// the store is down: then reads answer from memory and the cache only, without waiting on a
    /// failing store. Once the breaker's open duration has passed, this read is its half-open
    /// trial (bounded by `upload.attempt_timeout`) and its outcome closes or reopens the breaker:
    /// a store with nothing to upload finds its way back too.
    pub(super) async fn remote_read(
        &self,
        collection: &Collection,
        segment: &Segment,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Bytes, ReadError> {
        use mainstay_resilience::BreakerState;
        let remote = self
            .remote
            .as_ref()
            .ok_or_else(|| ReadError::Unavailable("no object store is configured".to_owned()))?;
        let open = || ReadError::Unavailable("the object-store circuit breaker is open".to_owned());
        let trial = match self.breaker.state() {
            BreakerState::ForcedOpen => return Err(open()),
            BreakerState::Open => Some(self.breaker.try_acquire().map_err(|_| open())?),
            _ => None,
        };
        let path = remote.segment_path(&collection.name, &segment.meta.id);
        let read = async {
            match range {
                Some(range) => remote.get_range(&path, range).await,
                None => remote.get(&path).await,
            }
        };
        let Some(trial) = trial else {
            return read
                .await
                .map_err(|e| ReadError::Unavailable(e.to_string()));
        };
        let limit = self.config.upload.attempt_timeout;
        match tokio::time::timeout(limit, read).await {
            Ok(Ok(bytes)) => {
                trial.success();
                Ok(bytes)
            }
            Ok(Err(error)) => {
                if error.kind == remote::ErrorKind::Transient {
                    trial.failure();
                } else {
                    // The store answered (a refusal is not an outage).
                    trial.success();
                }
                Err(ReadError::Unavailable(error.to_string()))
            }
            Err(_) => {
                trial.failure();
                Err(ReadError::Unavailable(format!(
                    "the object store did not answer within {limit:?}"
                )))
            }
        }
    }

    /// The residency of a segment, downloading a `memory_s3` segment whole on first use.
    pub(super) async fn resident_or_index(
        &self,
        collection: &Collection,
        segment: &Segment,
    ) -> Result<Residency, ReadError> {
        let residency = segment.state.lock().residency.clone();
        match residency {
            Residency::Resident(_) | Residency::Remote(Some(_)) | Residency::LocalFile(_) => {
                Ok(residency)
            }
            Residency::Remote(None) => {
                let corrupt = |source: SegmentError| undecodable(&collection.name, source);
                let residency = if collection.policy == TieringPolicy::S3Only {
                    let size = segment.meta.size;
                    let tail = self
                        .remote_read(
                            collection,
                            segment,
                            Some(size.saturating_sub(FOOTER_LEN as u64)..size),
                        )
                        .await?;
                    let footer = segment::decode_footer(&tail).map_err(corrupt)?;
                    let index = self
                        .remote_read(
                            collection,
                            segment,
                            Some(
                                footer.index_offset
                                    ..footer.index_offset + u64::from(footer.index_len),
                            ),
                        )
                        .await?;
                    Residency::Remote(Some(Arc::new(
                        segment::decode_index(&index, &footer).map_err(corrupt)?,
                    )))
                } else {
                    let bytes = self.remote_read(collection, segment, None).await?;
                    if crc32c::crc32c(&bytes) != segment.meta.crc32c {
                        return Err(corrupt(SegmentError::Corrupt("object")));
                    }
                    let (entries, _, _) = segment::decode_all(&bytes).map_err(corrupt)?;
                    Residency::Resident(Arc::new(entries))
                };
                segment.state.lock().residency = residency.clone();
                Ok(residency)
            }
        }
    }

    /// One block of a remote segment, through the cache.
    pub(super) async fn block(
        &self,
        collection: &Collection,
        segment: &Segment,
        index: &[segment::BlockRef],
        number: usize,
    ) -> Result<Arc<Vec<(String, Entry)>>, ReadError> {
        if let Some(block) = self.cache.lock().get(&segment.meta.id, number) {
            self.instruments.cache_hits.inc();
            return Ok(block);
        }
        self.instruments.cache_misses.inc();
        let block = index.get(number).ok_or(ReadError::Corrupt {
            collection: collection.name.clone(),
            source: SegmentError::Corrupt("index"),
        })?;
        let bytes = match self.local_block(segment, block).await {
            Some(bytes) => bytes,
            None => {
                self.remote_read(
                    collection,
                    segment,
                    Some(block.offset..block.offset + u64::from(block.len)),
                )
                .await?
            }
        };
        let entries = Arc::new(
            segment::decode_block(&bytes, block)
                .map_err(|source| undecodable(&collection.name, source))?,
        );
        // The cache holds decoded records: count what they occupy, not the stored size.
        let size = entries.iter().map(|(id, entry)| entry.size(id)).sum();
        self.cache
            .lock()
            .insert(&segment.meta.id, number, Arc::clone(&entries), size);
        Ok(entries)
    }

    /// A block read from the segment's local file while it has one (blocking pool); `None` when
    /// it has none or the read failed (the commit may have just deleted it: the object store has
    /// the same bytes then).
    pub(super) async fn local_block(
        &self,
        segment: &Segment,
        block: &segment::BlockRef,
    ) -> Option<Bytes> {
        if !segment.state.lock().has_local_file {
            return None;
        }
        let path = segment.local_path.clone();
        let (offset, len) = (block.offset, block.len as usize);
        blocking(move || {
            use std::os::unix::fs::FileExt as _;
            let file = File::open(path).ok()?;
            let mut buffer = vec![0u8; len];
            file.read_exact_at(&mut buffer, offset).ok()?;
            Some(Bytes::from(buffer))
        })
        .await
    }

    pub(crate) async fn segment_lookup(
        &self,
        collection: &Collection,
        segment: &Segment,
        id: &str,
    ) -> Result<Option<Entry>, ReadError> {
        match self.resident_or_index(collection, segment).await? {
            Residency::Resident(entries) => Ok(lookup_resident(&entries, id)),
            Residency::Remote(None) => Ok(None),
            Residency::Remote(Some(index)) | Residency::LocalFile(index) => {
                let Some(number) = index
                    .iter()
                    .position(|b| b.first.as_str() <= id && id <= b.last.as_str())
                else {
                    return Ok(None);
                };
                let block = self.block(collection, segment, &index, number).await?;
                Ok(lookup_resident(&block, id))
            }
        }
    }

    /// Up to `take` entries of a segment in the listing's range, and whether it had more.
    pub(super) async fn segment_range(
        &self,
        collection: &Collection,
        segment: &Segment,
        range: &ListRange<'_>,
        cut_short: &mut bool,
    ) -> Result<(Vec<(String, Entry)>, bool), ReadError> {
        let ListRange {
            start,
            prefix,
            after,
            take,
        } = *range;
        let mut out = Vec::new();
        let push = |id: &String, entry: &Entry, out: &mut Vec<(String, Entry)>| -> Option<bool> {
            if !id.starts_with(prefix) && id.as_str() > prefix {
                return Some(false);
            }
            if !id.starts_with(prefix) || after.is_some_and(|a| id.as_str() <= a) {
                return None;
            }
            if out.len() == take {
                return Some(true);
            }
            out.push((id.clone(), entry.clone()));
            None
        };
        match self.resident_or_index(collection, segment).await? {
            Residency::Resident(entries) => {
                let from = entries.partition_point(|(id, _)| id.as_str() < start);
                for (id, entry) in entries.iter().skip(from) {
                    if let Some(more) = push(id, entry, &mut out) {
                        return Ok((out, more));
                    }
                }
                Ok((out, false))
            }
            Residency::Remote(None) => Ok((out, false)),
            Residency::Remote(Some(index)) | Residency::LocalFile(index) => {
                let from = index.partition_point(|b| b.last.as_str() < start);
                for number in from..index.len() {
                    let block = match self.block(collection, segment, &index, number).await {
                        Ok(block) => block,
                        // What the cache gave so far is served, marked as cut short here, so
                        // the page stops at it; the listing reports itself degraded.
                        Err(ReadError::Unavailable(reason)) if !out.is_empty() => {
                            tracing::debug!(%reason, "listing a segment partly from the cache");
                            *cut_short = true;
                            return Ok((out, true));
                        }
                        Err(error) => return Err(error),
                    };
                    for (id, entry) in block.iter() {
                        if id.as_str() < start {
                            continue;
                        }
                        if let Some(more) = push(id, entry, &mut out) {
                            return Ok((out, more));
                        }
                    }
                }
                Ok((out, false))
            }
        }
    }

    /// All entries of a segment (for compaction).
    pub(crate) async fn segment_entries(
        &self,
        collection: &Collection,
        segment: &Segment,
    ) -> Result<Arc<Vec<(String, Entry)>>, MaintenanceError> {
        let to_error = |error: ReadError| match error {
            ReadError::Corrupt { source, .. } => MaintenanceError::Corrupt(source),
            ReadError::MissingFeature { source, .. } => MaintenanceError::MissingFeature(source),
            other => MaintenanceError::ObjectStore(other.to_string()),
        };
        match self
            .resident_or_index(collection, segment)
            .await
            .map_err(to_error)?
        {
            Residency::Resident(entries) => Ok(entries),
            Residency::Remote(None) => Ok(Arc::new(Vec::new())),
            Residency::Remote(Some(index)) | Residency::LocalFile(index) => {
                let mut all = Vec::new();
                for number in 0..index.len() {
                    all.extend(
                        self.block(collection, segment, &index, number)
                            .await
                            .map_err(to_error)?
                            .iter()
                            .cloned(),
                    );
                }
                Ok(Arc::new(all))
            }
        }
    }
}

/// The read error for a segment of `collection` that did not decode: blocks under a codec this
/// build leaves out are intact, so they are reported apart from corruption.
fn undecodable(collection: &str, source: SegmentError) -> ReadError {
    match source {
        SegmentError::MissingFeature(source) => ReadError::MissingFeature {
            collection: collection.to_owned(),
            source,
        },
        source @ SegmentError::Corrupt(_) => ReadError::Corrupt {
            collection: collection.to_owned(),
            source,
        },
    }
}
