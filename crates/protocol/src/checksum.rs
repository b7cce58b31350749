//! Checksum helpers: the algorithms SFTS verifies with, lowercase hex, and hashing adapters
//! that update digests as bytes pass so that each byte is touched once.

use crate::error::{ProtocolError, Result};
use md5::{Digest as _, Md5};
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::Sha256;
use std::fmt;
use std::io::{self, Read, Write};
use twox_hash::XxHash3_128;

/// A digest algorithm SFTS can verify with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// MD5: what the original protocol carries. Detects accidents, not attackers.
    Md5,
    /// SHA-256: the default.
    Sha256,
    /// BLAKE3: a cryptographic hash several times faster than SHA-256 (SIMD), for links faster
    /// than one core's SHA-256 (capability `BLAKE3`).
    Blake3,
    /// XXH128 (XXH3, 128 bits): a non-cryptographic checksum, about four times faster than
    /// BLAKE3, that catches accidental corruption (what rsync checks transfers with by default)
    /// but not a deliberate forgery; capability `XXH128`. Printed in the canonical (big-endian)
    /// form of `xxh128sum`.
    Xxh128,
}

impl Algorithm {
    /// Every algorithm, in wire-code order.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Md5,
        Algorithm::Sha256,
        Algorithm::Blake3,
        Algorithm::Xxh128,
    ];

    /// The algorithm's code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Algorithm::Md5 => 1,
            Algorithm::Sha256 => 2,
            Algorithm::Blake3 => 3,
            Algorithm::Xxh128 => 4,
        }
    }

    /// The algorithm for a wire code.
    pub fn from_code(code: u8) -> Result<Algorithm> {
        match code {
            1 => Ok(Algorithm::Md5),
            2 => Ok(Algorithm::Sha256),
            3 => Ok(Algorithm::Blake3),
            4 => Ok(Algorithm::Xxh128),
            other => Err(ProtocolError::UnknownAlgorithm(format!("code {other}"))),
        }
    }

    /// Lowercase name as used on the command line and in output (`md5`, `sha256`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha256 => "sha256",
            Algorithm::Blake3 => "blake3",
            Algorithm::Xxh128 => "xxh128",
        }
    }

    /// Name as written in messages to people (`MD5`, `SHA-256`, `BLAKE3`).
    pub fn label(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Blake3 => "BLAKE3",
            Algorithm::Xxh128 => "XXH128",
        }
    }

    /// The algorithm for a name (`md5`, `sha256`, `sha-256`, `blake3`, `xxh128`, `xxh3`; any
    /// case).
    pub fn from_name(name: &str) -> Result<Algorithm> {
        match name.to_ascii_lowercase().as_str() {
            "md5" => Ok(Algorithm::Md5),
            "sha256" | "sha-256" => Ok(Algorithm::Sha256),
            "blake3" => Ok(Algorithm::Blake3),
            "xxh128" | "xxh3" | "xxh3-128" => Ok(Algorithm::Xxh128),
            _ => Err(ProtocolError::UnknownAlgorithm(format!("'{name}'"))),
        }
    }

    /// The capability ([`crate::Capabilities`] bit) both peers must have announced before
    /// this digest may be asked for or shown; `None` for MD5 and SHA-256, which every peer
    /// knows.
    pub fn capability(self) -> Option<u64> {
        match self {
            Algorithm::Md5 | Algorithm::Sha256 => None,
            Algorithm::Blake3 => Some(crate::Capabilities::BLAKE3),
            Algorithm::Xxh128 => Some(crate::Capabilities::XXH128),
        }
    }

    /// Length of the digest in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Algorithm::Md5 | Algorithm::Xxh128 => 16,
            Algorithm::Sha256 | Algorithm::Blake3 => 32,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of algorithms, carried on the wire as a bit mask (bit `code - 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DigestSet(u8);

impl DigestSet {
    /// The empty set.
    pub const EMPTY: DigestSet = DigestSet(0);

    /// A set holding the given algorithms.
    pub fn of(algorithms: &[Algorithm]) -> DigestSet {
        let mut set = DigestSet::EMPTY;
        for a in algorithms {
            set.insert(*a);
        }
        set
    }

    /// Adds an algorithm.
    pub fn insert(&mut self, a: Algorithm) {
        self.0 |= 1 << (a.code() - 1);
    }

    /// True when the set holds `a`.
    pub fn contains(self, a: Algorithm) -> bool {
        self.0 & (1 << (a.code() - 1)) != 0
    }

    /// The algorithms in the set, in code order.
    pub fn iter(self) -> impl Iterator<Item = Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(move |a| self.contains(*a))
    }

    /// The wire form.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Reads the wire form; bits of algorithms this version does not know are an error, since
    /// the peer expects digests we cannot compute.
    pub fn from_bits(bits: u8) -> Result<DigestSet> {
        let known = DigestSet::of(&Algorithm::ALL).0;
        if bits & !known != 0 {
            return Err(ProtocolError::UnknownAlgorithm(format!(
                "bits {:#04x}",
                bits & !known
            )));
        }
        Ok(DigestSet(bits))
    }
}

/// A finished digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Which algorithm produced it.
    pub algorithm: Algorithm,
    /// The raw digest bytes (`algorithm.output_len()` of them).
    pub bytes: Vec<u8>,
}

impl Digest {
    /// Builds a digest, checking the length against the algorithm.
    pub fn new(algorithm: Algorithm, bytes: Vec<u8>) -> Result<Digest> {
        if bytes.len() != algorithm.output_len() {
            return Err(ProtocolError::BadDigest {
                algorithm: algorithm.name(),
                detail: "wrong length",
            });
        }
        Ok(Digest { algorithm, bytes })
    }

    /// Parses lowercase or uppercase hex.
    pub fn from_hex(algorithm: Algorithm, hex: &str) -> Result<Digest> {
        Digest::new(algorithm, from_hex(hex, algorithm.name())?)
    }

    /// Lowercase hex, as `sha256sum` / `md5sum` print it.
    pub fn to_hex(&self) -> String {
        to_hex(&self.bytes)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The SHA-256 of `bytes`, as the fixed-size array the upload messages carry.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The BLAKE3 of `bytes`, as the fixed-size array a streamed upload's chunks carry.
pub fn blake3(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

impl Digest {
    /// The raw SHA-256 bytes, if this is a SHA-256 digest.
    pub fn sha256_bytes(&self) -> Option<[u8; 32]> {
        match self.algorithm {
            Algorithm::Sha256 => self.bytes.as_slice().try_into().ok(),
            Algorithm::Md5 | Algorithm::Blake3 | Algorithm::Xxh128 => None,
        }
    }

    /// The raw MD5 bytes, if this is an MD5 digest.
    pub fn md5_bytes(&self) -> Option<[u8; 16]> {
        match self.algorithm {
            Algorithm::Md5 => self.bytes.as_slice().try_into().ok(),
            Algorithm::Sha256 | Algorithm::Blake3 | Algorithm::Xxh128 => None,
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    s
}

/// Parses hex (either case). `algorithm` only names the digest in the error.
pub fn from_hex(hex: &str, algorithm: &'static str) -> Result<Vec<u8>> {
    let bad = |detail| ProtocolError::BadDigest { algorithm, detail };
    if hex.len() % 2 != 0 {
        return Err(bad("odd number of hex digits"));
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(bad("not a hex digit")),
    };
    hex.as_bytes()
        .chunks_exact(2)
        .map(|p| Ok(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

enum State {
    /// `md-5`: its state can be saved and restored.
    Md5(Md5),
    /// `fast-md5`'s assembly cores (1.26 times `md-5` on the AMD benchmark machine); no way to
    /// save its state.
    Md5Fast(fast_md5::Md5),
    Sha256(Sha256),
    Blake3(Box<blake3::Hasher>),
    Xxh128(Box<XxHash3_128>),
}

/// Computes several digests over the same bytes in one pass.
pub struct MultiHasher {
    states: Vec<State>,
}

impl MultiHasher {
    /// A hasher for every algorithm in `set` (possibly none), each the fastest we have. Its
    /// MD5 state cannot be saved: use [`MultiHasher::resumable`] where [`MultiHasher::save`]
    /// is to be called.
    pub fn new(set: DigestSet) -> MultiHasher {
        MultiHasher::with(set, || State::Md5Fast(fast_md5::Md5::new()))
    }

    /// Like [`MultiHasher::new`], but a lone MD5 or SHA-256 can be saved (for MD5 at about
    /// 0.8 times the speed).
    pub fn resumable(set: DigestSet) -> MultiHasher {
        MultiHasher::with(set, || State::Md5(Md5::new()))
    }

    fn with(set: DigestSet, md5: impl Fn() -> State) -> MultiHasher {
        let states = set
            .iter()
            .map(|a| match a {
                Algorithm::Md5 => md5(),
                Algorithm::Sha256 => State::Sha256(Sha256::new()),
                Algorithm::Blake3 => State::Blake3(Box::default()),
                Algorithm::Xxh128 => State::Xxh128(Box::new(XxHash3_128::new())),
            })
            .collect();
        MultiHasher { states }
    }

    /// Feeds bytes to every digest.
    pub fn update(&mut self, bytes: &[u8]) {
        for s in &mut self.states {
            match s {
                State::Md5(h) => h.update(bytes),
                State::Md5Fast(h) => h.update(bytes),
                State::Sha256(h) => h.update(bytes),
                State::Blake3(h) => {
                    h.update(bytes);
                }
                State::Xxh128(h) => h.write(bytes),
            }
        }
    }

    /// True when no digest is being computed.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The hashing state so far, to continue later with [`MultiHasher::restore`] (a download's
    /// resume journal keeps it so a resume need not hash the bytes it already has again): the
    /// algorithm's code, then the `md-5` or `sha2` crate's serialized state. `None` unless the
    /// hasher computes exactly one MD5 or one SHA-256 (an MD5 only if made by
    /// [`MultiHasher::resumable`]): the BLAKE3, XXH128 and `fast-md5` crates do not expose
    /// their state.
    pub fn save(&self) -> Option<Vec<u8>> {
        let with_code = |algorithm: Algorithm, state: &[u8]| {
            let mut out = Vec::with_capacity(1 + state.len());
            out.push(algorithm.code());
            out.extend_from_slice(state);
            out
        };
        match self.states.as_slice() {
            [State::Sha256(h)] => Some(with_code(Algorithm::Sha256, &h.serialize())),
            [State::Md5(h)] => Some(with_code(Algorithm::Md5, &h.serialize())),
            _ => None,
        }
    }

    /// A hasher continuing from a state [`MultiHasher::save`] returned; `None` when `saved` is
    /// not such a state (truncated, corrupted, of an algorithm that cannot be saved).
    pub fn restore(saved: &[u8]) -> Option<MultiHasher> {
        let (&code, rest) = saved.split_first()?;
        let state = match Algorithm::from_code(code).ok()? {
            Algorithm::Sha256 => {
                let serialized = SerializedState::<Sha256>::try_from(rest).ok()?;
                State::Sha256(Sha256::deserialize(&serialized).ok()?)
            }
            Algorithm::Md5 => {
                let serialized = SerializedState::<Md5>::try_from(rest).ok()?;
                State::Md5(Md5::deserialize(&serialized).ok()?)
            }
            Algorithm::Blake3 | Algorithm::Xxh128 => return None,
        };
        Some(MultiHasher {
            states: vec![state],
        })
    }

    /// Finishes every digest, in algorithm code order.
    pub fn finish(self) -> Vec<Digest> {
        self.states
            .into_iter()
            .map(|s| match s {
                State::Md5(h) => Digest {
                    algorithm: Algorithm::Md5,
                    bytes: h.finalize().to_vec(),
                },
                State::Md5Fast(h) => Digest {
                    algorithm: Algorithm::Md5,
                    bytes: h.finalize().to_vec(),
                },
                State::Sha256(h) => Digest {
                    algorithm: Algorithm::Sha256,
                    bytes: h.finalize().to_vec(),
                },
                State::Blake3(h) => Digest {
                    algorithm: Algorithm::Blake3,
                    bytes: h.finalize().as_bytes().to_vec(),
                },
                State::Xxh128(h) => Digest {
                    algorithm: Algorithm::Xxh128,
                    bytes: h.finish_128().to_be_bytes().to_vec(),
                },
            })
            .collect()
    }
}

/// Digests everything `reader` yields, with one reused buffer. Returns the byte count too.
pub fn digest_reader<R: Read>(
    mut reader: R,
    set: DigestSet,
    buf: &mut [u8],
) -> io::Result<(u64, Vec<Digest>)> {
    let mut hasher = MultiHasher::new(set);
    let mut total = 0u64;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hasher.finish()))
}

/// A `Write` adapter that hashes every byte it passes on.
pub struct HashingWriter<W> {
    inner: W,
    hasher: MultiHasher,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`, hashing with every algorithm in `set`.
    pub fn new(inner: W, set: DigestSet) -> Self {
        HashingWriter {
            inner,
            hasher: MultiHasher::new(set),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The wrapped writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Returns the writer and the digests of everything written.
    pub fn finish(self) -> (W, Vec<Digest>) {
        (self.inner, self.hasher.finish())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_saved_sha256_state_continues_where_it_stopped() {
        let mut whole = MultiHasher::new(DigestSet::of(&[Algorithm::Sha256]));
        whole.update(b"hello, ");
        let saved = whole.save().expect("SHA-256 alone can be saved");
        assert_eq!(saved[0], Algorithm::Sha256.code());
        let mut restored = MultiHasher::restore(&saved).expect("a state save() returned");
        restored.update(b"world");
        assert_eq!(
            restored.finish()[0].to_hex(),
            "09ca7e4eaa6e8ae9c7d261167129184883644d07dfba7cbfbc4c8a2e08360d5b"
        );
        // The original is untouched by saving.
        whole.update(b"world");
        assert_eq!(
            whole.finish()[0].to_hex(),
            "09ca7e4eaa6e8ae9c7d261167129184883644d07dfba7cbfbc4c8a2e08360d5b"
        );
    }

    #[test]
    fn a_saved_md5_state_continues_where_it_stopped() {
        let mut whole = MultiHasher::resumable(DigestSet::of(&[Algorithm::Md5]));
        // Across a 64-byte block boundary, with bytes left in the block buffer.
        whole.update(&[b'a'; 70]);
        let saved = whole.save().expect("MD5 alone can be saved");
        assert_eq!(saved[0], Algorithm::Md5.code());
        let mut restored = MultiHasher::restore(&saved).expect("a state save() returned");
        restored.update(&[b'a'; 30]);
        // MD5 of 100 times 'a'.
        assert_eq!(
            restored.finish()[0].to_hex(),
            "36a92cc94a9e0fa21f625f8bfb007adf"
        );
    }

    /// RFC 1321's test suite, through both MD5 implementations.
    #[test]
    fn md5_known_answers_fast_and_resumable() {
        let cases = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        let set = DigestSet::of(&[Algorithm::Md5]);
        for (input, want) in cases {
            for mut h in [MultiHasher::new(set), MultiHasher::resumable(set)] {
                h.update(input.as_bytes());
                assert_eq!(h.finish()[0].to_hex(), want, "{input:?}");
            }
        }
    }

    proptest::proptest! {
        /// The assembly MD5 and `md-5` agree on any bytes fed in any pieces, across the
        /// 64-byte block and padding boundaries.
        #[test]
        fn both_md5_implementations_agree(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            cuts in proptest::collection::vec(0usize..600, 0..6),
        ) {
            let set = DigestSet::of(&[Algorithm::Md5]);
            let (mut fast, mut resumable) = (MultiHasher::new(set), MultiHasher::resumable(set));
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut at = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                fast.update(&data[at..cut]);
                resumable.update(&data[at..cut]);
                at = cut;
            }
            proptest::prop_assert_eq!(fast.finish(), resumable.finish());
        }
    }

    #[test]
    fn only_a_lone_md5_or_sha256_state_is_saved_and_garbage_is_not_restored() {
        for set in [
            DigestSet::of(&[Algorithm::Blake3]),
            DigestSet::of(&[Algorithm::Xxh128]),
            DigestSet::of(&[Algorithm::Md5, Algorithm::Sha256]),
            DigestSet::default(),
        ] {
            assert!(MultiHasher::new(set).save().is_none());
            assert!(MultiHasher::resumable(set).save().is_none());
        }
        // The fast MD5 cannot be saved; SHA-256 can, however it was made.
        assert!(MultiHasher::new(DigestSet::of(&[Algorithm::Md5]))
            .save()
            .is_none());
        assert!(MultiHasher::new(DigestSet::of(&[Algorithm::Sha256]))
            .save()
            .is_some());
        let saved = MultiHasher::new(DigestSet::of(&[Algorithm::Sha256]))
            .save()
            .unwrap();
        assert!(MultiHasher::restore(&saved[..saved.len() - 1]).is_none());
        assert!(MultiHasher::restore(&[]).is_none());
        // A SHA-256 state labelled MD5 (another length), or BLAKE3, or an unknown code.
        for code in [Algorithm::Md5.code(), Algorithm::Blake3.code(), 0xee] {
            let mut other = saved.clone();
            other[0] = code;
            assert!(MultiHasher::restore(&other).is_none(), "code {code}");
        }
    }

    #[test]
    fn blake3_known_answer() {
        // BLAKE3 of the empty input and of "abc" (the reference implementation's vectors).
        let mut h = MultiHasher::new(DigestSet::of(&[Algorithm::Blake3]));
        h.update(b"");
        assert_eq!(
            h.finish()[0].to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        let mut h = MultiHasher::new(DigestSet::of(&[Algorithm::Blake3]));
        h.update(b"abc");
        assert_eq!(
            h.finish()[0].to_hex(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(Algorithm::from_name("BLAKE3").unwrap(), Algorithm::Blake3);
        assert_eq!(
            Algorithm::ALL.map(Algorithm::label),
            ["MD5", "SHA-256", "BLAKE3", "XXH128"]
        );
        assert_eq!(Algorithm::from_code(3).unwrap(), Algorithm::Blake3);
        assert!(DigestSet::from_bits(0b100)
            .unwrap()
            .contains(Algorithm::Blake3));
    }
    use super::*;

    fn hex_of(set: DigestSet, data: &[u8]) -> Vec<String> {
        let mut h = MultiHasher::new(set);
        h.update(data);
        h.finish().iter().map(Digest::to_hex).collect()
    }

    #[test]
    fn known_answers() {
        let both = DigestSet::of(&[Algorithm::Sha256, Algorithm::Md5]);
        assert_eq!(
            hex_of(both, b""),
            [
                "d41d8cd98f00b204e9800998ecf8427e",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ]
        );
        assert_eq!(
            hex_of(both, b"abc"),
            [
                "900150983cd24fb0d6963f7d28e17f72",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            ]
        );
    }

    #[test]
    fn xxh128_known_answers_in_the_canonical_form_of_xxh128sum() {
        // `printf '' | xxh128sum`, `printf abc | xxh128sum`, and 100,000 zero bytes (the long-
        // input path, fed in uneven pieces that cross its 64-byte stripes and 1 KiB blocks).
        let set = DigestSet::of(&[Algorithm::Xxh128]);
        assert_eq!(hex_of(set, b""), ["99aa06d3014798d86001c324468d497f"]);
        assert_eq!(hex_of(set, b"abc"), ["06b05ab6733a618578af5f94892f3950"]);
        let zeros = vec![0u8; 100_000];
        let mut h = MultiHasher::new(set);
        for part in zeros.chunks(333) {
            h.update(part);
        }
        let d = h.finish().remove(0);
        assert_eq!(d.to_hex(), "e1f876364c6fec62315c72a64b7df4d2");
        assert_eq!(d.bytes.len(), Algorithm::Xxh128.output_len());
        assert_eq!(Algorithm::from_code(4).unwrap(), Algorithm::Xxh128);
        assert_eq!(DigestSet::of(&[Algorithm::Xxh128]).bits(), 0b1000);
        for name in ["xxh128", "XXH3", "xxh3-128"] {
            assert_eq!(
                Algorithm::from_name(name).unwrap(),
                Algorithm::Xxh128,
                "{name}"
            );
        }
        assert_eq!(Algorithm::Xxh128.name(), "xxh128");
        assert_eq!(
            Algorithm::Xxh128.capability(),
            Some(crate::Capabilities::XXH128)
        );
        assert_eq!(Algorithm::Sha256.capability(), None);
    }

    #[test]
    fn fixed_size_helpers() {
        assert_eq!(
            to_hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let both = {
            let mut h = MultiHasher::new(DigestSet::of(&Algorithm::ALL));
            h.update(b"abc");
            h.finish()
        };
        assert_eq!(both[1].sha256_bytes(), Some(sha256(b"abc")));
        assert_eq!(both[0].sha256_bytes(), None);
        assert_eq!(
            to_hex(&both[0].md5_bytes().unwrap()),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(both[1].md5_bytes(), None);
    }

    #[test]
    fn split_updates_equal_one_update() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let set = DigestSet::of(&[Algorithm::Sha256]);
        let mut h = MultiHasher::new(set);
        for part in data.chunks(333) {
            h.update(part);
        }
        assert_eq!(h.finish()[0].to_hex(), hex_of(set, &data)[0]);
    }

    #[test]
    fn hex_round_trip_and_errors() {
        assert_eq!(to_hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(from_hex("00ABff", "t").unwrap(), [0x00, 0xab, 0xff]);
        assert!(from_hex("abc", "t").is_err());
        assert!(from_hex("zz", "t").is_err());
        assert!(Digest::from_hex(Algorithm::Md5, "00").is_err());
    }

    #[test]
    fn digest_set_bits() {
        let s = DigestSet::of(&[Algorithm::Sha256]);
        assert_eq!(s.bits(), 0b10);
        assert!(s.contains(Algorithm::Sha256) && !s.contains(Algorithm::Md5));
        assert_eq!(DigestSet::from_bits(0b11).unwrap().iter().count(), 2);
        assert!(DigestSet::from_bits(0x80).is_err());
        assert!(DigestSet::from_bits(0x10).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(Algorithm::from_name("SHA256").unwrap(), Algorithm::Sha256);
        assert_eq!(Algorithm::from_name("md5").unwrap(), Algorithm::Md5);
        assert!(Algorithm::from_name("crc32").is_err());
    }

    #[test]
    fn hashing_writer_and_reader_agree() {
        let data = vec![42u8; 100_000];
        let set = DigestSet::of(&[Algorithm::Md5]);
        let mut w = HashingWriter::new(Vec::new(), set);
        w.write_all(&data).unwrap();
        assert_eq!(w.written(), 100_000);
        let (out, d1) = w.finish();
        assert_eq!(out, data);
        let (n, d2) = digest_reader(&data[..], set, &mut [0u8; 4096]).unwrap();
        assert_eq!(n, 100_000);
        assert_eq!(d1, d2);
    }
}
