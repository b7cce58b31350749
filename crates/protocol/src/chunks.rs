//! Which chunks a file has and which of them a peer holds.
//!
//! A file of `size` bytes cut with `chunk_size` has `ceil(size / chunk_size)` chunks; chunk
//! `i` covers bytes `i * chunk_size ..` up to `chunk_size` bytes (the last one may be short;
//! an empty file has no chunk). Both sides of an upload compute this with [`chunk_count`] and
//! [`chunk_span`]; the server says what it already holds as [`ChunkRanges`].

use crate::error::{ProtocolError, Result};

/// Most ranges one `PutReady` carries: `4 + 4 + 2 + 4,000 × 16` bytes stay below the 64 KiB
/// control-frame limit. A server holding a more scattered set lists the first ranges only;
/// the client then re-sends chunks the server already has, which it acknowledges without
/// storing them again (correct, only slower, and only for pathological hole patterns).
pub const MAX_HAVE_RANGES: usize = 4000;

/// How many chunks a file of `size` bytes has when cut into `chunk_size`-byte chunks
/// (0 for an empty file). `chunk_size` 0 is treated as 1 to stay total; peers never use it.
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size.max(1)))
}

/// Where chunk `index` starts and how long it is, or `None` past the last chunk.
pub fn chunk_span(size: u64, chunk_size: u32, index: u64) -> Option<(u64, u32)> {
    let cs = u64::from(chunk_size.max(1));
    if index >= chunk_count(size, chunk_size) {
        return None;
    }
    let offset = index * cs;
    Some((offset, (size - offset).min(cs) as u32))
}

/// A run of consecutive chunk indexes: `first`, `first + 1`, ..., `first + count - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    /// The first index of the run.
    pub first: u64,
    /// How many indexes (at least 1).
    pub count: u64,
}

impl ChunkRange {
    /// One past the last index.
    pub fn end(self) -> u64 {
        self.first + self.count
    }
}

/// The chunks a server already holds for an upload, as sorted, non-overlapping runs (at most
/// [`MAX_HAVE_RANGES`] of them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChunkRanges(pub(crate) Vec<ChunkRange>);

impl ChunkRanges {
    /// No chunk held.
    pub fn new() -> ChunkRanges {
        ChunkRanges(Vec::new())
    }

    /// Chunks `0 .. count` (a contiguous prefix, the common case after an interruption).
    pub fn prefix(count: u64) -> ChunkRanges {
        let mut r = ChunkRanges::new();
        if count > 0 {
            r.0.push(ChunkRange { first: 0, count });
        }
        r
    }

    /// Checks runs received from a peer: each non-empty, sorted, not overlapping the previous
    /// one, not overflowing, and no more than [`MAX_HAVE_RANGES`].
    pub fn from_ranges(ranges: Vec<ChunkRange>) -> Result<ChunkRanges> {
        if ranges.len() > MAX_HAVE_RANGES {
            return Err(ProtocolError::malformed(
                "PutReady",
                "too many chunk ranges",
            ));
        }
        let mut next_free = 0u64;
        for (i, r) in ranges.iter().enumerate() {
            if r.count == 0 {
                return Err(ProtocolError::malformed("PutReady", "empty chunk range"));
            }
            if i > 0 && r.first < next_free {
                return Err(ProtocolError::malformed(
                    "PutReady",
                    "chunk ranges out of order or overlapping",
                ));
            }
            next_free = r
                .first
                .checked_add(r.count)
                .ok_or(ProtocolError::malformed(
                    "PutReady",
                    "chunk range overflows",
                ))?;
        }
        Ok(ChunkRanges(ranges))
    }

    /// Builds the list from chunk indexes in ascending order, merging neighbours. Stops at
    /// [`MAX_HAVE_RANGES`] runs (the chunks left out are simply sent again).
    pub fn from_sorted<I: IntoIterator<Item = u64>>(indexes: I) -> ChunkRanges {
        let mut r = ChunkRanges::new();
        for i in indexes {
            if !r.push(i) {
                break;
            }
        }
        r
    }

    /// Records chunk `index`, which must be above every index recorded so far (an index
    /// already covered or lower is ignored). Returns `false` when a new run would exceed
    /// [`MAX_HAVE_RANGES`], or for index `u64::MAX`, which no file has (a run's end must fit a
    /// `u64`); the index is then not recorded.
    pub fn push(&mut self, index: u64) -> bool {
        if index == u64::MAX {
            return false;
        }
        let runs = self.0.len();
        match self.0.last_mut() {
            Some(last) if index < last.end() => true,
            Some(last) if index == last.end() => {
                last.count += 1;
                true
            }
            _ if runs >= MAX_HAVE_RANGES => false,
            _ => {
                self.0.push(ChunkRange {
                    first: index,
                    count: 1,
                });
                true
            }
        }
    }

    /// The runs, in ascending order.
    pub fn ranges(&self) -> &[ChunkRange] {
        &self.0
    }

    /// True when no chunk is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when chunk `index` is held.
    pub fn contains(&self, index: u64) -> bool {
        let after = self.0.partition_point(|r| r.first <= index);
        after > 0 && index < self.0[after - 1].end()
    }

    /// How many chunks are held.
    pub fn held(&self) -> u64 {
        self.0.iter().map(|r| r.count).sum()
    }

    /// The indexes below `total` that are not held, in ascending order: what the client
    /// still has to send.
    pub fn missing(&self, total: u64) -> impl Iterator<Item = u64> + '_ {
        let mut ranges = self.0.iter().peekable();
        let mut i = 0u64;
        std::iter::from_fn(move || {
            while i < total {
                match ranges.peek() {
                    Some(r) if i >= r.end() => {
                        ranges.next();
                    }
                    Some(r) if i >= r.first => i = r.end(),
                    _ => {
                        i += 1;
                        return Some(i - 1);
                    }
                }
            }
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_arithmetic() {
        assert_eq!(chunk_count(0, 4096), 0);
        assert_eq!(chunk_count(1, 4096), 1);
        assert_eq!(chunk_count(4096, 4096), 1);
        assert_eq!(chunk_count(4097, 4096), 2);
        assert_eq!(
            chunk_count(u64::MAX, crate::MIN_CHUNK_SIZE),
            u64::MAX / 4096 + 1
        );
        assert_eq!(chunk_span(4097, 4096, 0), Some((0, 4096)));
        assert_eq!(chunk_span(4097, 4096, 1), Some((4096, 1)));
        assert_eq!(chunk_span(4097, 4096, 2), None);
        assert_eq!(chunk_span(0, 4096, 0), None);
        assert_eq!(chunk_count(10, 0), 10);
    }

    /// Found by the `chunk_ranges` fuzz target (`fuzz/regressions/chunk_ranges/`): pushing
    /// index `u64::MAX` made a run whose end overflows, and the next query on it panicked
    /// ("attempt to add with overflow") in builds with overflow checks.
    #[test]
    fn the_last_u64_is_never_a_chunk_index() {
        for (indexes, held) in [
            (vec![u64::MAX], 0),
            (vec![u64::MAX, u64::MAX], 0),
            (vec![u64::MAX - 1, u64::MAX], 1),
            (vec![3, u64::MAX - 2, u64::MAX - 1, u64::MAX, u64::MAX], 3),
        ] {
            let r = ChunkRanges::from_sorted(indexes);
            assert!(!r.contains(u64::MAX));
            assert_eq!(r.held(), held);
            // What was built passes the checks a peer's runs get.
            assert_eq!(ChunkRanges::from_ranges(r.ranges().to_vec()).unwrap(), r);
        }
        let mut r = ChunkRanges::prefix(2);
        assert!(!r.push(u64::MAX));
        assert!(r.push(u64::MAX - 1));
        assert!(r.contains(u64::MAX - 1) && !r.contains(u64::MAX));
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// Numbers that reach both ends of `u64`.
        fn number() -> impl Strategy<Value = u64> {
            prop_oneof![
                0u64..64,
                any::<u64>(),
                (0u64..64).prop_map(|d| u64::MAX - d)
            ]
        }

        proptest! {
            /// A peer's runs are accepted exactly when they are valid, and what is accepted
            /// answers `contains` and `held` consistently.
            #[test]
            fn from_ranges_accepts_exactly_the_valid_runs(
                runs in vec((number(), number()), 0..12),
            ) {
                let runs: Vec<ChunkRange> =
                    runs.into_iter().map(|(first, count)| ChunkRange { first, count }).collect();
                let mut next_free = 0u64;
                let mut valid = true;
                for (i, r) in runs.iter().enumerate() {
                    match r.first.checked_add(r.count) {
                        Some(end) if r.count > 0 && (i == 0 || r.first >= next_free) => {
                            next_free = end
                        }
                        _ => valid = false,
                    }
                }
                match ChunkRanges::from_ranges(runs.clone()) {
                    Ok(have) => {
                        prop_assert!(valid);
                        let sum = runs.iter().try_fold(0u64, |s, r| s.checked_add(r.count));
                        prop_assert_eq!(Some(have.held()), sum);
                        for r in &runs {
                            prop_assert!(have.contains(r.first) && have.contains(r.end() - 1));
                        }
                    }
                    Err(_) => prop_assert!(!valid),
                }
            }

            /// Whatever indexes a server records, the runs it builds are valid ones (a peer
            /// accepts them) and hold every index it recorded.
            #[test]
            fn from_sorted_builds_valid_runs(mut indexes in vec(number(), 0..40)) {
                indexes.sort_unstable();
                let built = ChunkRanges::from_sorted(indexes.iter().copied());
                prop_assert_eq!(&ChunkRanges::from_ranges(built.ranges().to_vec()).unwrap(), &built);
                for i in indexes.iter().filter(|i| **i != u64::MAX) {
                    prop_assert!(built.contains(*i), "{} not recorded", i);
                }
                prop_assert!(!built.contains(u64::MAX));
            }
        }
    }

    #[test]
    fn chunk_ranges() {
        let r = ChunkRanges::from_sorted([0, 1, 2, 5, 9, 10, 10]);
        assert_eq!(
            r.ranges(),
            [
                ChunkRange { first: 0, count: 3 },
                ChunkRange { first: 5, count: 1 },
                ChunkRange { first: 9, count: 2 }
            ]
        );
        assert_eq!(r.held(), 6);
        for i in [0, 1, 2, 5, 9, 10] {
            assert!(r.contains(i), "{i}");
        }
        for i in [3, 4, 6, 8, 11, u64::MAX] {
            assert!(!r.contains(i), "{i}");
        }
        assert_eq!(r.missing(13).collect::<Vec<_>>(), [3, 4, 6, 7, 8, 11, 12]);
        assert_eq!(r.missing(2).count(), 0);
        assert_eq!(ChunkRanges::new().missing(3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(
            ChunkRanges::prefix(4).missing(6).collect::<Vec<_>>(),
            [4, 5]
        );
        assert!(ChunkRanges::prefix(0).is_empty());

        // Capped: every other chunk held gives one run per chunk.
        let scattered = ChunkRanges::from_sorted((0..10_000).map(|i| i * 2));
        assert_eq!(scattered.ranges().len(), MAX_HAVE_RANGES);
        let mut full = scattered.clone();
        assert!(!full.push(1_000_000));
        assert!(full.push(2 * (MAX_HAVE_RANGES as u64 - 1) + 1)); // extends the last run
    }
}
