//! BLAKE3 as a tree of chunks: the digest of one chunk of a file as a subtree at its offset
//! (its *chaining value*), and the whole file's BLAKE3 assembled from those of its chunks.
//!
//! BLAKE3 hashes 1 KiB pieces and combines them in a binary tree whose shape depends only on
//! the file's length; a chunk of a power-of-two size (at least 1 KiB) that starts at a
//! multiple of that size is a complete subtree of it. A streamed upload with BLAKE3 tree chunk
//! digests (capability `BLAKE3_TREE`) sends each chunk's chaining value: the server checks
//! each chunk with one BLAKE3 pass, as with plain BLAKE3 chunk digests, and gets the whole
//! file's BLAKE3 from the chaining values at almost no cost, instead of hashing every byte a
//! second time. The `blake3` crate's `hazmat` module does the tree arithmetic.

use blake3::hazmat::{self, HasherExt, Mode};

/// BLAKE3's own piece size: tree chunks must be a power-of-two multiple of it.
const PIECE: u64 = 1024;

/// True when files cut in chunks of `chunk_size` bytes can use tree chunk digests: a power of
/// two of at least 1 KiB.
pub fn usable_chunk_size(chunk_size: u32) -> bool {
    chunk_size.is_power_of_two() && u64::from(chunk_size) >= PIECE
}

/// The tree chunk digest of `data`, the chunk at byte `offset` of a file of `file_size` bytes:
/// its chaining value, or the file's BLAKE3 when it is the whole file.
pub fn chunk_value(offset: u64, file_size: u64, data: &[u8]) -> [u8; 32] {
    if offset == 0 && data.len() as u64 == file_size {
        return *blake3::hash(data).as_bytes();
    }
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(data);
    h.finalize_non_root()
}

/// The BLAKE3 of a file of `size` bytes from the tree chunk digests of its chunks of
/// `chunk_size` bytes, in order; `None` when the chunk size is not usable or the count of
/// digests is not the file's count of chunks.
pub fn file_digest(chunk_size: u32, size: u64, chunks: &[[u8; 32]]) -> Option<[u8; 32]> {
    if !usable_chunk_size(chunk_size) || crate::chunk_count(size, chunk_size) != chunks.len() as u64
    {
        return None;
    }
    match chunks {
        [] => Some(*blake3::hash(b"").as_bytes()),
        [one] => Some(*one),
        _ => {
            let (left, right) = halves(u64::from(chunk_size), size, chunks);
            let hash = hazmat::merge_subtrees_root(&left, &right, Mode::Hash);
            Some(*hash.as_bytes())
        }
    }
}

/// The chaining values of the two children of the subtree of `len` bytes whose chunks'
/// values are `chunks` (at least two).
fn halves(chunk: u64, len: u64, chunks: &[[u8; 32]]) -> ([u8; 32], [u8; 32]) {
    let left_len = hazmat::left_subtree_len(len);
    // A power of two of at least one chunk, so the split falls between chunks.
    let split = (left_len / chunk) as usize;
    (
        subtree(chunk, left_len, &chunks[..split]),
        subtree(chunk, len - left_len, &chunks[split..]),
    )
}

/// The chaining value of a non-root subtree of `len` bytes.
fn subtree(chunk: u64, len: u64, chunks: &[[u8; 32]]) -> [u8; 32] {
    match chunks {
        [one] => *one,
        _ => {
            let (left, right) = halves(chunk, len, chunks);
            hazmat::merge_subtrees_non_root(&left, &right, Mode::Hash)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_span;

    fn data(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i ^ (i >> 7) ^ (i >> 13)) as u8)
            .collect()
    }

    fn values(chunk_size: u32, bytes: &[u8]) -> Vec<[u8; 32]> {
        let size = bytes.len() as u64;
        (0..crate::chunk_count(size, chunk_size))
            .map(|i| {
                let (start, len) = chunk_span(size, chunk_size, i).unwrap();
                let piece = &bytes[start as usize..start as usize + len as usize];
                chunk_value(start, size, piece)
            })
            .collect()
    }

    #[test]
    fn the_file_digest_is_blake3_of_the_file_for_every_shape() {
        for chunk_size in [1024u32, 4096, 65_536] {
            let c = chunk_size as usize;
            for len in [
                0,
                1,
                c - 1,
                c,
                c + 1,
                2 * c,
                3 * c,
                3 * c + 5,
                4 * c,
                5 * c - 1,
                7 * c + c / 2,
                8 * c,
                13 * c + 17,
                64 * c + 1,
            ] {
                let bytes = data(len);
                let want = *blake3::hash(&bytes).as_bytes();
                let got = file_digest(chunk_size, len as u64, &values(chunk_size, &bytes));
                assert_eq!(got, Some(want), "chunk {chunk_size}, {len} bytes");
            }
        }
    }

    #[test]
    fn known_answers_from_the_blake3_test_vectors() {
        // The official test vectors' input (bytes 0, 1, ..., 250, 0, 1, ...) and the first 32
        // bytes of their "hash" outputs, assembled from 1 KiB chunks.
        for (len, want) in [
            (
                3073,
                "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3",
            ),
            (
                7169,
                "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817",
            ),
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let got = file_digest(1024, len as u64, &values(1024, &bytes)).unwrap();
            assert_eq!(crate::checksum::to_hex(&got), want, "{len} bytes");
        }
    }

    #[test]
    fn a_chunk_value_depends_on_its_place() {
        let bytes = data(4096);
        let first = chunk_value(0, 8192, &bytes);
        let second = chunk_value(4096, 8192, &bytes);
        let alone = chunk_value(0, 4096, &bytes);
        assert_ne!(first, second);
        assert_ne!(first, alone);
        assert_eq!(alone, *blake3::hash(&bytes).as_bytes());
    }

    #[test]
    fn wrong_counts_and_sizes_give_none() {
        let bytes = data(10_000);
        let v = values(4096, &bytes);
        assert_eq!(file_digest(4096, 10_000, &v[..2]), None);
        assert_eq!(file_digest(4096, 20_000, &v), None);
        assert_eq!(file_digest(3000, 10_000, &v), None);
        assert!(!usable_chunk_size(512));
        assert!(!usable_chunk_size(1_000_000));
        assert!(usable_chunk_size(1 << 20));
    }
}
