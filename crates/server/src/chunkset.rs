//! The set of chunks an upload holds, as sorted runs of consecutive indexes.
//!
//! Chunks mostly arrive in order, so the set is usually one run and an insertion appends to
//! it; memory grows with the number of holes, never with the file's size (a bitmap of a
//! terabyte file in 4 KiB chunks would take 32 MiB). Unlike the protocol's `ChunkRanges`,
//! which is capped at what one `PutReady` can carry, this set is complete.

use sfts_protocol::ChunkRanges;

/// Chunk indexes, as runs `(first, count)` in ascending order, not overlapping or touching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkSet {
    runs: Vec<(u64, u64)>,
    held: u64,
}

impl ChunkSet {
    /// No chunk.
    pub fn new() -> ChunkSet {
        ChunkSet::default()
    }

    /// The set described by `runs` (as stored: sorted, not overlapping), keeping only indexes
    /// below `total`. Unsorted or overlapping runs give an empty set (nothing held is always
    /// a safe answer: the client sends those chunks again).
    pub fn from_runs(runs: &[(u64, u64)], total: u64) -> ChunkSet {
        let mut set = ChunkSet::new();
        for &(first, count) in runs {
            let end = first.saturating_add(count).min(total);
            if end <= first {
                continue;
            }
            match set.runs.last_mut() {
                Some(last) if first < last.0 + last.1 => return ChunkSet::new(),
                Some(last) if first == last.0 + last.1 => last.1 += end - first,
                _ => set.runs.push((first, end - first)),
            }
            set.held += end - first;
        }
        set
    }

    /// Adds `index`; `false` when it was already there.
    pub fn insert(&mut self, index: u64) -> bool {
        // The first run starting after `index`.
        let after = self.runs.partition_point(|&(first, _)| first <= index);
        if after > 0 {
            let (first, count) = self.runs[after - 1];
            if index < first + count {
                return false;
            }
            if index == first + count {
                self.runs[after - 1].1 += 1;
                // Now touching the next run? Merge.
                if after < self.runs.len() && self.runs[after].0 == index + 1 {
                    let (_, next) = self.runs.remove(after);
                    self.runs[after - 1].1 += next;
                }
                self.held += 1;
                return true;
            }
        }
        if after < self.runs.len() && self.runs[after].0 == index + 1 {
            self.runs[after] = (index, self.runs[after].1 + 1);
        } else {
            self.runs.insert(after, (index, 1));
        }
        self.held += 1;
        true
    }

    /// True when `index` is held.
    pub fn contains(&self, index: u64) -> bool {
        let after = self.runs.partition_point(|&(first, _)| first <= index);
        after > 0 && {
            let (first, count) = self.runs[after - 1];
            index < first + count
        }
    }

    /// How many chunks are held.
    pub fn len(&self) -> u64 {
        self.held
    }

    /// The runs, for storing.
    pub fn runs(&self) -> &[(u64, u64)] {
        &self.runs
    }

    /// The first index below `total` that is not held.
    pub fn first_missing(&self, total: u64) -> Option<u64> {
        let next = match self.runs.first() {
            Some(&(0, count)) => count,
            _ => 0,
        };
        (next < total).then_some(next)
    }

    /// The set as a `PutReady` lists it (the first runs, up to what one frame carries).
    pub fn to_ranges(&self) -> ChunkRanges {
        let mut r = ChunkRanges::new();
        'runs: for &(first, count) in &self.runs {
            for i in first..first + count {
                if !r.push(i) {
                    break 'runs;
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_merge_runs_in_any_order() {
        let mut s = ChunkSet::new();
        for i in [5, 0, 2, 1, 7, 6, 3] {
            assert!(s.insert(i), "{i}");
        }
        assert!(!s.insert(2));
        assert_eq!(s.runs(), [(0, 4), (5, 3)]);
        assert_eq!(s.len(), 7);
        assert!(s.insert(4));
        assert_eq!(s.runs(), [(0, 8)]);
        for i in 0..8 {
            assert!(s.contains(i));
        }
        assert!(!s.contains(8) && !s.contains(u64::MAX));
        assert_eq!(s.first_missing(8), None);
        assert_eq!(s.first_missing(9), Some(8));
        assert_eq!(ChunkSet::new().first_missing(1), Some(0));
        assert_eq!(ChunkSet::new().first_missing(0), None);
    }

    #[test]
    fn stored_runs_are_cut_at_the_chunk_count_and_listed_as_ranges() {
        let s = ChunkSet::from_runs(&[(0, 2), (4, 10)], 6);
        assert_eq!(s.runs(), [(0, 2), (4, 2)]);
        assert_eq!(s.len(), 4);
        assert_eq!(ChunkSet::from_runs(&[(0, 2), (2, 1)], 9).runs(), [(0, 3)]);
        assert_eq!(ChunkSet::from_runs(&[(3, 2), (0, 1)], 9), ChunkSet::new());
        let r = s.to_ranges();
        assert_eq!(r.held(), 4);
        assert!(r.contains(5) && !r.contains(2));
        // Scattered beyond what one frame lists: only the first runs.
        let mut wide = ChunkSet::new();
        for i in 0..10_000 {
            wide.insert(i * 2);
        }
        assert_eq!(
            wide.to_ranges().ranges().len(),
            sfts_protocol::MAX_HAVE_RANGES
        );
    }
}
