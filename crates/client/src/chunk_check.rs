//! How a resume journal's chunk digests are computed.
//!
//! They prove that a chunk of the partial file still holds the bytes the client received and
//! hashed into the whole-file digest (what the server's digest is compared with at the end),
//! and that a chunk fetched again to repair one damaged on disk is the same as before (the
//! saved whole-file hash state covers it already). Either way they catch accidents: a torn
//! write after a crash, a disk error, another program writing to the file, a transmission
//! error. They are not a defence against an adversary: whoever can write the partial can
//! rewrite the journal too, and bytes from the network are protected against tampering by
//! TLS (without it, whoever can change the bytes can change the server's digests with them),
//! not by any digest. New journals use
//! XXH3-128 (the `twox-hash` crate: about 12 GB/s on one core here, BLAKE3 about 3): a
//! resume reads back and checks everything it already has, and that check is most of what
//! a resume after 90 % costs. Older journals name BLAKE3 (version 2) or SHA-256 (version 1)
//! and are still resumed with them.

use sfts_protocol::{Algorithm, DigestSet, MultiHasher};
use twox_hash::XxHash3_128;

/// A journal's chunk digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkCheck {
    /// SHA-256 (version 1 journals).
    Sha256,
    /// BLAKE3 (version 2 journals of earlier releases).
    Blake3,
    /// XXH3-128 (what new journals use).
    Xxh3,
}

/// What new journals use.
pub const NEW: ChunkCheck = ChunkCheck::Xxh3;

impl ChunkCheck {
    /// The name on the journal's `chunk_digest` line.
    pub fn name(self) -> &'static str {
        match self {
            ChunkCheck::Sha256 => "sha256",
            ChunkCheck::Blake3 => "blake3",
            ChunkCheck::Xxh3 => "xxh3-128",
        }
    }

    /// The check of a `chunk_digest` line; `None` for a name this version does not know.
    pub fn from_name(name: &str) -> Option<ChunkCheck> {
        [ChunkCheck::Sha256, ChunkCheck::Blake3, ChunkCheck::Xxh3]
            .into_iter()
            .find(|c| c.name() == name)
    }

    /// Bytes of one digest (written in hex; [`ChunkCheck::of`] pads it to 32 with zeros).
    pub fn digest_len(self) -> usize {
        match self {
            ChunkCheck::Sha256 | ChunkCheck::Blake3 => 32,
            ChunkCheck::Xxh3 => 16,
        }
    }

    /// The digest of `data`.
    pub fn of(self, data: &[u8]) -> [u8; 32] {
        match self {
            ChunkCheck::Xxh3 => padded(XxHash3_128::oneshot(data)),
            _ => {
                let mut h = self.hasher();
                h.update(data);
                h.finish()
            }
        }
    }

    /// A hasher for data that comes in pieces.
    pub fn hasher(self) -> ChunkHasher {
        let algorithm = match self {
            ChunkCheck::Sha256 => Algorithm::Sha256,
            ChunkCheck::Blake3 => Algorithm::Blake3,
            ChunkCheck::Xxh3 => return ChunkHasher::Xxh3(Box::new(XxHash3_128::new())),
        };
        ChunkHasher::Multi(MultiHasher::new(DigestSet::of(&[algorithm])))
    }
}

/// [`ChunkCheck::of`] over data fed in pieces.
pub enum ChunkHasher {
    /// SHA-256 or BLAKE3.
    Multi(MultiHasher),
    /// XXH3-128.
    Xxh3(Box<XxHash3_128>),
}

impl ChunkHasher {
    /// Feeds the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            ChunkHasher::Multi(h) => h.update(data),
            ChunkHasher::Xxh3(h) => h.write(data),
        }
    }

    /// The digest of everything fed.
    pub fn finish(self) -> [u8; 32] {
        match self {
            ChunkHasher::Multi(h) => {
                let bytes = h.finish().remove(0).bytes;
                bytes.as_slice().try_into().expect("32 bytes")
            }
            ChunkHasher::Xxh3(h) => padded(h.finish_128()),
        }
    }
}

/// A 128-bit value, big-endian, followed by 16 zeros.
fn padded(value: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&value.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfts_protocol::{checksum, ChunkDigest};

    #[test]
    fn known_answers() {
        // XXH3-128 of "" and "abc" (the reference implementation's xxhsum -H2).
        assert_eq!(
            checksum::to_hex(&ChunkCheck::Xxh3.of(b"")[..16]),
            "99aa06d3014798d86001c324468d497f"
        );
        assert_eq!(
            checksum::to_hex(&ChunkCheck::Xxh3.of(b"abc")[..16]),
            "06b05ab6733a618578af5f94892f3950"
        );
        assert_eq!(ChunkCheck::Xxh3.of(b"abc")[16..], [0u8; 16]);
        assert_eq!(
            ChunkCheck::Blake3.of(b"abc"),
            ChunkDigest::Blake3.of(b"abc")
        );
        assert_eq!(
            ChunkCheck::Sha256.of(b"abc"),
            ChunkDigest::Sha256.of(b"abc")
        );
    }

    #[test]
    fn pieces_give_the_one_shot_digest() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        for check in [ChunkCheck::Sha256, ChunkCheck::Blake3, ChunkCheck::Xxh3] {
            let mut h = check.hasher();
            for piece in data.chunks(65_537) {
                h.update(piece);
            }
            assert_eq!(h.finish(), check.of(&data), "{}", check.name());
            assert_eq!(ChunkCheck::from_name(check.name()), Some(check));
        }
        assert_eq!(ChunkCheck::from_name("crc32"), None);
    }
}
