//! A bounded LRU cache of decoded object-store blocks, for `s3_only` reads.

use std::collections::HashMap;
use std::sync::Arc;

use crate::segment::Entry;

type Block = Arc<Vec<(String, Entry)>>;

/// Blocks by (segment id, block number), evicting the least recently used past a byte bound.
#[derive(Debug)]
pub(crate) struct BlockCache {
    capacity: u64,
    bytes: u64,
    tick: u64,
    blocks: HashMap<(String, usize), (Block, u64, u64)>,
}

impl BlockCache {
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            capacity,
            bytes: 0,
            tick: 0,
            blocks: HashMap::new(),
        }
    }

    pub(crate) fn get(&mut self, segment: &str, block: usize) -> Option<Block> {
        self.tick += 1;
        let tick = self.tick;
        let found = self.blocks.get_mut(&(segment.to_owned(), block))?;
        found.2 = tick;
        Some(Arc::clone(&found.0))
    }

    pub(crate) fn insert(&mut self, segment: &str, block: usize, entries: Block, size: u64) {
        if size > self.capacity {
            return;
        }
        self.tick += 1;
        if let Some((_, old, _)) = self
            .blocks
            .insert((segment.to_owned(), block), (entries, size, self.tick))
        {
            self.bytes -= old;
        }
        self.bytes += size;
        while self.bytes > self.capacity {
            let Some(oldest) = self
                .blocks
                .iter()
                .min_by_key(|(_, (_, _, tick))| *tick)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some((_, size, _)) = self.blocks.remove(&oldest) {
                self.bytes -= size;
            }
        }
    }

    /// Drops every block of a segment (after compaction replaced it).
    pub(crate) fn forget(&mut self, segment: &str) {
        let bytes = &mut self.bytes;
        self.blocks.retain(|(id, _), (_, size, _)| {
            let keep = id != segment;
            if !keep {
                *bytes -= *size;
            }
            keep
        });
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_past_the_bound() {
        let mut cache = BlockCache::new(100);
        cache.insert("a", 0, Arc::new(Vec::new()), 40);
        cache.insert("a", 1, Arc::new(Vec::new()), 40);
        assert!(cache.get("a", 0).is_some());
        cache.insert("b", 0, Arc::new(Vec::new()), 40);
        assert!(
            cache.get("a", 1).is_none(),
            "the least recently used block goes first"
        );
        assert!(cache.get("a", 0).is_some());
        assert!(cache.bytes() <= 100);
        cache.forget("a");
        assert!(cache.get("a", 0).is_none());
        assert_eq!(cache.bytes(), 40);
    }
}
