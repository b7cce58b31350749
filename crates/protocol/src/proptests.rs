//! Property tests over every message type: decoding arbitrary bytes never panics, every valid
//! message survives encode → decode unchanged (and any strict prefix of it asks for more
//! bytes), and declared lengths above a type's maximum are refused from the header alone.

use crate::checksum::{Algorithm, Digest, DigestSet};
use crate::chunks::{ChunkRange, ChunkRanges};
use crate::error::ProtocolError;
use crate::error_code::ErrorCode;
use crate::frame::{self, tag, Header, HEADER_LEN};
use crate::io::read_message;
use crate::list::{EntryKind, ListEntry};
use crate::message::{
    Capabilities, FileHeader, FileInfo, FileKind, FileVersion, GetRequest, Message,
};
use crate::priority::Priority;
use crate::upload::{ChunkDigest, PutBegin, PutChunk, PutReady, RejectReason};
use crate::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use proptest::collection::vec;
use proptest::prelude::*;

/// Every tag this version knows.
const TAGS: [u8; 26] = tag::ALL;

/// A message with owned data, so a strategy can produce it; [`Gen::message`] borrows it.
#[derive(Debug, Clone)]
enum Gen {
    Plain(Message<'static>),
    Data(Vec<u8>),
    Chunk {
        id: u32,
        index: u64,
        digest: [u8; 32],
        data: Vec<u8>,
    },
}

impl Gen {
    fn message(&self) -> Message<'_> {
        match self {
            Gen::Plain(m) => m.clone(),
            Gen::Data(d) => Message::Data(d),
            Gen::Chunk {
                id,
                index,
                digest,
                data,
            } => Message::PutChunk(PutChunk {
                id: *id,
                index: *index,
                digest: *digest,
                data,
            }),
        }
    }
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn path() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_./é -]{0,40}"
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_./é -]{1,40}"
}

fn digest() -> impl Strategy<Value = Digest> {
    prop_oneof![
        vec(any::<u8>(), 16).prop_map(|b| Digest::new(Algorithm::Md5, b).unwrap()),
        vec(any::<u8>(), 32).prop_map(|b| Digest::new(Algorithm::Sha256, b).unwrap()),
        vec(any::<u8>(), 32).prop_map(|b| Digest::new(Algorithm::Blake3, b).unwrap()),
        vec(any::<u8>(), 16).prop_map(|b| Digest::new(Algorithm::Xxh128, b).unwrap()),
    ]
}

fn digests() -> impl Strategy<Value = Vec<Digest>> {
    vec(digest(), 0..3)
}

fn kind() -> impl Strategy<Value = FileKind> {
    prop_oneof![
        Just(FileKind::File),
        Just(FileKind::Directory),
        Just(FileKind::Other),
    ]
}

fn entry_kind() -> impl Strategy<Value = EntryKind> {
    prop_oneof![
        Just(EntryKind::File),
        Just(EntryKind::Directory),
        Just(EntryKind::Other),
        Just(EntryKind::Symlink),
    ]
}

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Low),
        Just(Priority::Normal),
        Just(Priority::High)
    ]
}

fn ranges() -> impl Strategy<Value = ChunkRanges> {
    vec((0u64..1000, 1u64..1000), 0..40).prop_map(|runs| {
        let mut next = 0;
        let ranges = runs
            .into_iter()
            .map(|(gap, count)| {
                let r = ChunkRange {
                    first: next + gap,
                    count,
                };
                next = r.end();
                r
            })
            .collect();
        ChunkRanges::from_ranges(ranges).unwrap()
    })
}

fn file_header() -> impl Strategy<Value = FileHeader> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<i64>(),
        any::<u32>(),
    )
        .prop_map(|(size, a, b, mtime_ns, chunk_size)| {
            let offset = a % size.saturating_add(1);
            let length = b % (size - offset).saturating_add(1);
            FileHeader {
                size,
                offset,
                length,
                mtime_ns,
                chunk_size,
            }
        })
}

fn get() -> impl Strategy<Value = GetRequest> {
    (
        path(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        0u8..16,
        proptest::option::of((any::<u64>(), any::<i64>())),
    )
        .prop_map(|(path, offset, length, chunk_size, bits, m)| GetRequest {
            path,
            offset,
            length,
            chunk_size,
            digests: DigestSet::from_bits(bits).unwrap(),
            if_match: m.map(|(size, mtime_ns)| FileVersion { size, mtime_ns }),
        })
}

fn put_begin() -> impl Strategy<Value = PutBegin> {
    (
        (
            any::<u32>(),
            path(),
            any::<u64>(),
            any::<i64>(),
            any::<u32>(),
        ),
        (any::<bool>(), any::<bool>(), any::<[u8; 32]>()),
        proptest::option::of(any::<[u8; 16]>()),
        (any::<bool>(), 0u8..3),
    )
        .prop_map(
            |(
                (id, path, size, mtime_ns, chunk_size),
                (force, restart, sha256),
                md5,
                (at_commit, blake3),
            )| {
                let chunk_digest = match blake3 {
                    0 => ChunkDigest::Sha256,
                    1 => ChunkDigest::Blake3,
                    _ => ChunkDigest::Blake3Tree,
                };
                // A digest-at-commit upload announces no digest: the fields are zero.
                let (sha256, md5) = if at_commit {
                    ([0; 32], None)
                } else {
                    (sha256, md5)
                };
                PutBegin {
                    id,
                    path,
                    size,
                    mtime_ns,
                    chunk_size,
                    force,
                    restart,
                    digest_at_commit: at_commit,
                    chunk_digest,
                    sha256,
                    md5,
                }
            },
        )
}

fn entry() -> impl Strategy<Value = ListEntry> {
    (name(), entry_kind(), any::<u64>(), any::<i64>()).prop_map(|(name, kind, size, mtime_ns)| {
        ListEntry {
            name,
            kind,
            size,
            mtime_ns,
        }
    })
}

/// Any valid message of any type.
fn any_message() -> impl Strategy<Value = Gen> {
    let session = prop_oneof![
        (any::<u16>(), any::<u64>(), text()).prop_map(|(version, caps, agent)| {
            Message::Hello {
                version,
                capabilities: Capabilities(caps),
                agent,
            }
        }),
        (any::<u16>(), any::<u64>(), text()).prop_map(|(version, caps, server)| {
            Message::Welcome {
                version,
                capabilities: Capabilities(caps),
                server,
            }
        }),
        (any::<u16>(), text()).prop_map(|(code, message)| Message::Error {
            code: ErrorCode::from_u16(code),
            message,
        }),
        priority().prop_map(Message::SetPriority),
    ];
    let download = prop_oneof![
        get().prop_map(Message::Get),
        path().prop_map(|path| Message::Stat { path }),
        (kind(), any::<u64>(), any::<i64>(), digests()).prop_map(
            |(kind, size, mtime_ns, digests)| Message::FileInfo(FileInfo {
                kind,
                size,
                mtime_ns,
                digests,
            })
        ),
        file_header().prop_map(Message::FileHeader),
        digests().prop_map(|digests| Message::Trailer { digests }),
    ];
    let listing = prop_oneof![
        (path(), any::<bool>()).prop_map(|(path, recursive)| Message::List { path, recursive }),
        vec(entry(), 0..20).prop_map(|entries| Message::ListEntries { entries }),
        (any::<u64>(), any::<bool>())
            .prop_map(|(total, truncated)| Message::ListEnd { total, truncated }),
    ];
    let upload = prop_oneof![
        put_begin().prop_map(Message::PutBegin),
        (any::<u32>(), MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE, ranges()).prop_map(
            |(id, chunk_size, have)| Message::PutReady(PutReady {
                id,
                chunk_size,
                have,
            })
        ),
        (any::<u32>(), any::<u64>()).prop_map(|(id, index)| Message::ChunkAck { id, index }),
        (any::<u32>(), any::<u64>(), any::<u8>()).prop_map(|(id, index, r)| {
            Message::ChunkRejected {
                id,
                index,
                reason: RejectReason::from_code(r),
            }
        }),
        any::<u32>().prop_map(|id| Message::PutCommit { id }),
        (any::<u32>(), digests()).prop_map(|(id, digests)| Message::PutDone { id, digests }),
        (any::<u32>(), digests())
            .prop_map(|(id, digests)| Message::PutCommitDigests { id, digests }),
        any::<u32>().prop_map(|id| Message::PutAbort { id }),
        any::<u32>().prop_map(|id| Message::PutAborted { id }),
        path().prop_map(|path| Message::Mkdir { path }),
        path().prop_map(|token| Message::Auth { token }),
        path().prop_map(|user| Message::AuthOk { user }),
    ];
    prop_oneof![
        session.prop_map(Gen::Plain),
        download.prop_map(Gen::Plain),
        listing.prop_map(Gen::Plain),
        upload.prop_map(Gen::Plain),
        vec(any::<u8>(), 0..300).prop_map(Gen::Data),
        (
            any::<u32>(),
            any::<u64>(),
            any::<[u8; 32]>(),
            vec(any::<u8>(), 1..300)
        )
            .prop_map(|(id, index, digest, data)| Gen::Chunk {
                id,
                index,
                digest,
                data,
            }),
    ]
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..300)) {
        let _ = Message::decode(&bytes);
        let mut buf = Vec::new();
        let _ = read_message(&mut &bytes[..], &mut buf);
    }

    /// Arbitrary payloads behind a well-formed header of every known tag: this reaches every
    /// field decoder, which random bytes alone rarely do.
    #[test]
    fn decoding_arbitrary_payloads_never_panics(
        t in proptest::sample::select(&TAGS[..]),
        payload in vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = Header::encode(t, payload.len()).to_vec();
        bytes.extend_from_slice(&payload);
        if let Ok(Some((_, used))) = Message::decode(&bytes) {
            prop_assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn every_message_round_trips(g in any_message(), junk in vec(any::<u8>(), 0..8)) {
        let m = g.message();
        let mut bytes = Vec::new();
        m.encode(&mut bytes);
        let declared = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        prop_assert!(declared <= frame::max_len(bytes[4]).unwrap());
        let len = bytes.len();
        // Bytes of a following frame do not disturb this one.
        bytes.extend_from_slice(&junk);
        let (back, used) = Message::decode(&bytes).unwrap().unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(used, len);
        // Through the blocking reader too.
        let mut buf = Vec::new();
        prop_assert_eq!(read_message(&mut &bytes[..len], &mut buf).unwrap(), Some(m.clone()));
    }

    #[test]
    fn every_strict_prefix_needs_more(g in any_message()) {
        let m = g.message();
        let mut bytes = Vec::new();
        m.encode(&mut bytes);
        for cut in 0..bytes.len() {
            prop_assert!(Message::decode(&bytes[..cut]).unwrap().is_none());
        }
    }

    /// Every message but the two that end in raw data has an exact layout: bytes added
    /// inside the frame are an error, never silently ignored.
    #[test]
    fn bytes_after_the_last_field_are_refused(
        g in any_message(),
        junk in vec(any::<u8>(), 1..8),
    ) {
        let m = g.message();
        prop_assume!(!matches!(m, Message::Data(_) | Message::PutChunk(_)));
        let mut bytes = Vec::new();
        m.encode(&mut bytes);
        let declared = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        bytes[..4].copy_from_slice(&(declared + junk.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&junk);
        let result = Message::decode(&bytes);
        let refused = matches!(result, Err(ProtocolError::TrailingBytes { .. }));
        prop_assert!(refused, "{} with trailing bytes gave {:?}", m.name(), result);
    }

    /// A declared length above the tag's maximum is refused from the five header bytes
    /// alone: nothing is waited for and nothing is allocated.
    #[test]
    fn oversized_declared_lengths_are_refused(
        t in proptest::sample::select(&TAGS[..]),
        excess in 1u32..,
    ) {
        let max = frame::max_len(t).unwrap();
        let len = max.saturating_add(excess);
        prop_assume!(len > max);
        let mut head = [0u8; HEADER_LEN];
        head[..4].copy_from_slice(&len.to_be_bytes());
        head[4] = t;
        let too_large = |r: &Result<(), ProtocolError>| {
            matches!(r, Err(ProtocolError::FrameTooLarge { .. }))
        };
        prop_assert!(too_large(&Header::parse(&head).map(|_| ())));
        prop_assert!(too_large(&Message::decode(&head).map(|_| ())));
        let mut buf = Vec::new();
        prop_assert!(too_large(&read_message(&mut &head[..], &mut buf).map(|_| ())));
        prop_assert_eq!(buf.capacity(), 0);
    }

    #[test]
    fn unknown_tags_are_an_error(t in any::<u8>(), len in 1u32..100) {
        prop_assume!(!TAGS.contains(&t));
        let mut head = [0u8; HEADER_LEN];
        head[..4].copy_from_slice(&len.to_be_bytes());
        head[4] = t;
        prop_assert!(matches!(Message::decode(&head), Err(ProtocolError::UnknownTag(x)) if x == t));
    }

    #[test]
    fn missing_lists_exactly_the_chunks_not_held(have in ranges(), total in 0u64..50_000) {
        let missing: Vec<u64> = have.missing(total).collect();
        let mut expected = Vec::new();
        for i in 0..total {
            if !have.contains(i) {
                expected.push(i);
            }
        }
        prop_assert_eq!(missing, expected);
        // Rebuilding from the held indexes gives the same runs back (merged neighbours).
        let rebuilt = ChunkRanges::from_sorted(have.ranges().iter().flat_map(|r| r.first..r.end()));
        prop_assert_eq!(rebuilt.held(), have.held());
        prop_assert!(rebuilt.ranges().len() <= have.ranges().len());
    }
}

#[test]
fn every_known_tag_is_generated() {
    // Keeps the strategy in step with the frame module when tags are added.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..5000 {
        let g = any_message().new_tree(&mut runner).unwrap().current();
        let mut bytes = Vec::new();
        g.message().encode(&mut bytes);
        seen.insert(bytes[4]);
    }
    for t in TAGS {
        assert!(seen.contains(&t), "tag {t:#04x} never generated");
    }
}
