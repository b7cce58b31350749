//! [`PageBuf`]: a byte buffer of a fixed capacity whose first byte is on a 4 KiB page boundary.
//!
//! Why: on some x86 machines (measured on AMD EPYC with glibc 2.36) the kernel's copy into a
//! user buffer that starts a few bytes past a page boundary runs several times slower than
//! into an aligned one, and glibc's `malloc` puts a 1 MiB `Vec` at page offset 16. A `read` of
//! a page-cached file into such a `Vec` cost a streamed `put` a third of the client's time.
//! See crates/protocol/benches/README.md.
//!
//! Safe code only: the buffer is a `Vec` one page longer than the capacity, never grown (so
//! its heap block never moves), and a window of it that starts at the first page boundary.

use std::ops::{Deref, DerefMut};

/// The alignment of every [`PageBuf`].
pub const PAGE: usize = 4096;

/// Up to `capacity` bytes starting on a page boundary; new bytes are zero.
#[derive(Debug)]
pub struct PageBuf {
    space: Vec<u8>,
    start: usize,
    len: usize,
    capacity: usize,
}

impl PageBuf {
    /// An empty buffer that can hold `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> PageBuf {
        let space = vec![0u8; capacity + PAGE];
        let start = space.as_ptr().align_offset(PAGE).min(PAGE);
        PageBuf {
            space,
            start,
            len: 0,
            capacity,
        }
    }

    /// Makes the buffer `len` bytes long (its content is whatever was there before, zero for
    /// bytes never written).
    ///
    /// # Panics
    /// When `len` is more than the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity,
            "a {len}-byte chunk does not fit a {}-byte buffer",
            self.capacity
        );
        self.len = len;
    }

    /// Makes the buffer `len` bytes long whatever its capacity: a buffer that is too small is
    /// replaced by a bigger one (its bytes are then lost). For receive buffers, whose old
    /// content does not matter.
    pub fn reset(&mut self, len: usize) {
        if len > self.capacity {
            *self = PageBuf::with_capacity(len);
        }
        self.set_len(len);
    }
}

impl Default for PageBuf {
    /// An empty buffer of no capacity (it allocates one page).
    fn default() -> PageBuf {
        PageBuf::with_capacity(0)
    }
}

impl Deref for PageBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.space[self.start..self.start + self.len]
    }
}

impl DerefMut for PageBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.space[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_page_boundary_and_keeps_it_when_moved() {
        for cap in [1, 100, 4096, 65_536, 1 << 20, (1 << 20) + 3] {
            let mut b = PageBuf::with_capacity(cap);
            b.set_len(cap);
            assert_eq!(b.len(), cap);
            assert_eq!(b.as_ptr() as usize % PAGE, 0, "capacity {cap}");
            assert!(b.iter().all(|&x| x == 0));
            b[cap - 1] = 7;
            let moved = std::thread::spawn(move || b).join().unwrap();
            assert_eq!(moved.as_ptr() as usize % PAGE, 0);
            assert_eq!(moved[cap - 1], 7);
        }
    }

    #[test]
    fn shorter_and_longer_again_keeps_the_bytes() {
        let mut b = PageBuf::with_capacity(10);
        b.set_len(10);
        b.copy_from_slice(b"0123456789");
        b.set_len(3);
        assert_eq!(&b[..], b"012");
        b.set_len(10);
        assert_eq!(&b[..], b"0123456789");
        b.set_len(0);
        assert!(b.is_empty());
    }

    #[test]
    fn reset_grows_and_stays_aligned() {
        let mut b = PageBuf::default();
        assert!(b.is_empty());
        b.reset(100_000);
        assert_eq!(b.len(), 100_000);
        assert_eq!(b.as_ptr() as usize % PAGE, 0);
        b.reset(10);
        assert_eq!(b.len(), 10);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn past_the_capacity_is_refused() {
        PageBuf::with_capacity(8).set_len(9);
    }
}
