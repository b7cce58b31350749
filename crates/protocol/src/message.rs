//! Typed native messages and their exact byte layouts (see `docs/PROTOCOL.md`).
//!
//! [`Message::encode`] appends one whole frame to a buffer; [`Message::decode`] parses one frame
//! from the front of a byte slice and returns `Ok(None)` when more bytes are needed, which is not
//! the same as corrupt input. `Data` and `PutChunk` borrow their bytes from the input so a
//! receiver can decode straight out of a reused buffer.
//!
//! The payloads of the upload messages live in [`crate::upload`], those of listings in
//! [`crate::list`]; this module holds the one `Message` enum and its one dispatch `match`.

use crate::checksum::{Algorithm, Digest, DigestSet};
use crate::error::{ProtocolError, Result};
use crate::error_code::ErrorCode;
use crate::frame::{tag, Header, HEADER_LEN};
use crate::list::{self, ListEntry};
use crate::priority::Priority;
use crate::upload::{PutBegin, PutChunk, PutReady, RejectReason};
use crate::wire::{self, Cursor};

/// Feature bits a peer announces in `Hello` / `Welcome`. A feature is used only when both
/// sides announce it, so new features never break old peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// Downloads with `Get` (every native server has it).
    pub const GET: u64 = 1 << 0;
    /// `Get` with a non-zero offset (resume).
    pub const RESUME: u64 = 1 << 1;
    /// Several requests, one after another, on one connection.
    pub const MULTI_REQUEST: u64 = 1 << 2;
    /// `Stat` requests.
    pub const STAT: u64 = 1 << 3;
    /// Uploads: `PutBegin` ... `PutCommit`, `PutAbort`, and `Mkdir`.
    pub const UPLOAD: u64 = 1 << 4;
    /// `List` requests, flat or recursive.
    pub const LIST: u64 = 1 << 5;
    /// `SetPriority`.
    pub const PRIORITY: u64 = 1 << 6;
    /// `Auth` with an access token. A server announcing it may require `Auth` before any
    /// request.
    pub const AUTH: u64 = 1 << 7;
    /// The BLAKE3 digest ([`crate::Algorithm::Blake3`]) may be asked for in `Get`.
    pub const BLAKE3: u64 = 1 << 8;
    /// Streamed uploads: `PutBegin` may defer the whole-file digests to `PutCommitDigests`
    /// (flag bit 2) and, with [`Capabilities::BLAKE3`] too, check chunks with BLAKE3 (flag
    /// bit 3).
    pub const STREAM_PUT: u64 = 1 << 9;
    /// With [`Capabilities::STREAM_PUT`]: chunks may be checked with their BLAKE3 tree values
    /// ([`crate::ChunkDigest::Blake3Tree`], `PutBegin` flag bits 3 and 4).
    pub const BLAKE3_TREE: u64 = 1 << 10;
    /// The XXH128 checksum ([`crate::Algorithm::Xxh128`]) may be asked for in `Get`, and
    /// appears in the digest lists of `FileInfo`, `PutDone` and `PutCommitDigests`.
    pub const XXH128: u64 = 1 << 11;

    /// True when every bit of `bits` is set.
    pub fn has(self, bits: u64) -> bool {
        self.0 & bits == bits
    }

    /// The features both sides have.
    pub fn common(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0)
    }
}

/// `GetRequest::length` meaning "up to the end of the file".
pub const TO_END: u64 = u64::MAX;

/// One version of a file as the client saw it: if the file no longer has this size and
/// modification time, a resume would splice two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVersion {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i64,
}

/// A request for one file, or a range of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRequest {
    /// Path relative to the served root, `/`-separated.
    pub path: String,
    /// First byte wanted (0 for a whole file; non-zero needs [`Capabilities::RESUME`]).
    pub offset: u64,
    /// How many bytes from `offset` ([`TO_END`] for the rest of the file).
    pub length: u64,
    /// Largest `Data` payload the client wants; the server clamps it to the protocol range.
    pub chunk_size: u32,
    /// Digests of the whole file the client wants in the trailer.
    pub digests: DigestSet,
    /// Serve the range only if the file is still this version; otherwise the server sends
    /// the whole file from offset 0 (its `FileHeader` says so), like HTTP's `If-Range`.
    pub if_match: Option<FileVersion>,
}

impl GetRequest {
    /// A request for the whole of `path`.
    pub fn whole(path: impl Into<String>, chunk_size: u32, digests: DigestSet) -> GetRequest {
        GetRequest {
            path: path.into(),
            offset: 0,
            length: TO_END,
            chunk_size,
            digests,
            if_match: None,
        }
    }
}

/// The server's answer to a `Get` for a file it will send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    /// Size of the whole file in bytes.
    pub size: u64,
    /// Where the data that follows starts: the request's offset, or 0 when the request's
    /// `if_match` no longer matched.
    pub offset: u64,
    /// How many data bytes follow (`offset + length <= size`).
    pub length: u64,
    /// Last modification time, nanoseconds since the Unix epoch (negative before 1970).
    pub mtime_ns: i64,
    /// Largest `Data` payload the server will send.
    pub chunk_size: u32,
}

/// What kind of file system object a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// Anything else (device, socket, ...).
    Other,
}

impl FileKind {
    fn code(self) -> u8 {
        match self {
            FileKind::File => 1,
            FileKind::Directory => 2,
            FileKind::Other => 3,
        }
    }

    fn from_code(code: u8) -> Result<FileKind> {
        match code {
            1 => Ok(FileKind::File),
            2 => Ok(FileKind::Directory),
            3 => Ok(FileKind::Other),
            _ => Err(ProtocolError::Malformed {
                message: "FileInfo",
                detail: "unknown file kind",
            }),
        }
    }
}

/// The server's description of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// File, directory or other.
    pub kind: FileKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i64,
    /// Whole-file digests the server already knows (may be empty).
    pub digests: Vec<Digest>,
}

/// One native protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// Client → server, first frame after the magic.
    Hello {
        /// Highest protocol version the client speaks.
        version: u16,
        /// Features the client supports.
        capabilities: Capabilities,
        /// Free-form client name and version, for the server's logs.
        agent: String,
    },
    /// Server → client, the answer to `Hello`.
    Welcome {
        /// Protocol version both sides will speak.
        version: u16,
        /// Features the server supports.
        capabilities: Capabilities,
        /// Free-form server name and version.
        server: String,
    },
    /// Client → server: send me this file (or range).
    Get(GetRequest),
    /// Client → server: describe this path.
    Stat {
        /// Path relative to the served root.
        path: String,
    },
    /// Server → client, the answer to `Stat`.
    FileInfo(FileInfo),
    /// Server → client: the file follows.
    FileHeader(FileHeader),
    /// A chunk of file data.
    Data(&'a [u8]),
    /// Server → client: all data sent; the digests of the whole file.
    Trailer {
        /// One digest for each algorithm asked for, in code order.
        digests: Vec<Digest>,
    },
    /// A refusal or failure.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// A sentence a user can act on.
        message: String,
    },
    /// Client → server: the priority of every later request on this connection (capability
    /// `PRIORITY`). Not a request: it has no reply.
    SetPriority(Priority),
    /// Client → server: list a directory (capability `LIST`). Answered by `ListEntries` *
    /// then `ListEnd`, or `Error`.
    List {
        /// Directory relative to the served root (`.` for the root itself).
        path: String,
        /// The whole tree below `path`, depth first, each directory before its contents.
        recursive: bool,
    },
    /// Server → client: some entries of a listing (as many as fit one frame; see
    /// [`crate::ListBatcher`]).
    ListEntries {
        /// The entries, in the server's order.
        entries: Vec<ListEntry>,
    },
    /// Server → client: the listing is complete.
    ListEnd {
        /// How many entries were sent in all, so the client can check it has them all.
        total: u64,
        /// The server stopped at its own limit; entries are missing.
        truncated: bool,
    },
    /// Client → server: open or resume an upload (capability `UPLOAD`). Answered by
    /// `PutReady` or `Error`.
    PutBegin(PutBegin),
    /// Server → client: the upload is open; which chunks to send.
    PutReady(PutReady),
    /// Client → server: one chunk. Answered by `ChunkAck`, `ChunkRejected` or `Error`.
    PutChunk(PutChunk<'a>),
    /// Server → client: the chunk was verified and stored (or was already held).
    ChunkAck {
        /// The upload's id.
        id: u32,
        /// The chunk's index.
        index: u64,
    },
    /// Server → client: the chunk was not stored.
    ChunkRejected {
        /// The upload's id.
        id: u32,
        /// The chunk's index.
        index: u64,
        /// Why; [`RejectReason::resend`] says whether to send it again.
        reason: RejectReason,
    },
    /// Client → server: all chunks are sent; verify the whole file and publish it.
    /// Answered by `PutDone` or `Error`.
    PutCommit {
        /// The upload's id.
        id: u32,
    },
    /// Client → server: the commit of a digest-at-commit upload, with the whole file's
    /// digests (SHA-256 required, MD5 optional; capability `STREAM_PUT`). Answered like
    /// `PutCommit`.
    PutCommitDigests {
        /// The upload's id.
        id: u32,
        /// Whole-file digests of what the client sent, in code order.
        digests: Vec<Digest>,
    },
    /// Server → client: the file is published under its name, complete and verified.
    PutDone {
        /// The upload's id.
        id: u32,
        /// Whole-file digests of the published file, in code order (at least SHA-256).
        digests: Vec<Digest>,
    },
    /// Client → server: give the upload up; the server deletes what it holds of it.
    /// Answered by `PutAborted`.
    PutAbort {
        /// The upload's id.
        id: u32,
    },
    /// Server → client: the upload is gone (also when there was nothing to delete).
    PutAborted {
        /// The upload's id.
        id: u32,
    },
    /// Client → server: create a directory and any missing parents (capability `UPLOAD`).
    /// Answered by `FileInfo` (the directory, also when it already existed) or `Error`.
    Mkdir {
        /// Directory relative to the served root.
        path: String,
    },
    /// Client → server: authenticate with an access token (capability `AUTH`). Answered by
    /// `AuthOk` or `Error{AuthRequired}` (a wrong token; the connection is then closed).
    Auth {
        /// The secret token, as the operator issued it.
        token: String,
    },
    /// Server → client: the token is valid.
    AuthOk {
        /// The name the token belongs to (for messages; the server logs it too).
        user: String,
    },
}

impl Message<'_> {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::Welcome { .. } => "Welcome",
            Message::Get(_) => "Get",
            Message::Stat { .. } => "Stat",
            Message::FileInfo(_) => "FileInfo",
            Message::FileHeader(_) => "FileHeader",
            Message::Data(_) => "Data",
            Message::Trailer { .. } => "Trailer",
            Message::Error { .. } => "Error",
            Message::SetPriority(_) => "SetPriority",
            Message::List { .. } => "List",
            Message::ListEntries { .. } => "ListEntries",
            Message::ListEnd { .. } => "ListEnd",
            Message::PutBegin(_) => "PutBegin",
            Message::PutReady(_) => "PutReady",
            Message::PutChunk(_) => "PutChunk",
            Message::ChunkAck { .. } => "ChunkAck",
            Message::ChunkRejected { .. } => "ChunkRejected",
            Message::PutCommit { .. } => "PutCommit",
            Message::PutCommitDigests { .. } => "PutCommitDigests",
            Message::PutDone { .. } => "PutDone",
            Message::PutAbort { .. } => "PutAbort",
            Message::PutAborted { .. } => "PutAborted",
            Message::Mkdir { .. } => "Mkdir",
            Message::Auth { .. } => "Auth",
            Message::AuthOk { .. } => "AuthOk",
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Message::Hello { .. } => tag::HELLO,
            Message::Welcome { .. } => tag::WELCOME,
            Message::Get(_) => tag::GET,
            Message::Stat { .. } => tag::STAT,
            Message::FileInfo(_) => tag::FILE_INFO,
            Message::FileHeader(_) => tag::FILE_HEADER,
            Message::Data(_) => tag::DATA,
            Message::Trailer { .. } => tag::TRAILER,
            Message::Error { .. } => tag::ERROR,
            Message::SetPriority(_) => tag::SET_PRIORITY,
            Message::List { .. } => tag::LIST,
            Message::ListEntries { .. } => tag::LIST_ENTRIES,
            Message::ListEnd { .. } => tag::LIST_END,
            Message::PutBegin(_) => tag::PUT_BEGIN,
            Message::PutReady(_) => tag::PUT_READY,
            Message::PutChunk(_) => tag::PUT_CHUNK,
            Message::ChunkAck { .. } => tag::CHUNK_ACK,
            Message::ChunkRejected { .. } => tag::CHUNK_REJECTED,
            Message::PutCommit { .. } => tag::PUT_COMMIT,
            Message::PutCommitDigests { .. } => tag::PUT_COMMIT_DIGESTS,
            Message::PutDone { .. } => tag::PUT_DONE,
            Message::PutAbort { .. } => tag::PUT_ABORT,
            Message::PutAborted { .. } => tag::PUT_ABORTED,
            Message::Mkdir { .. } => tag::MKDIR,
            Message::Auth { .. } => tag::AUTH,
            Message::AuthOk { .. } => tag::AUTH_OK,
        }
    }

    /// Appends this message as one frame to `out`. The length is written as a placeholder and
    /// back-filled once the payload is in.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        out[start + 4] = self.tag();
        match self {
            Message::Hello {
                version,
                capabilities,
                agent,
            } => {
                wire::put_u16(out, *version);
                wire::put_u64(out, capabilities.0);
                wire::put_string(out, agent);
            }
            Message::Welcome {
                version,
                capabilities,
                server,
            } => {
                wire::put_u16(out, *version);
                wire::put_u64(out, capabilities.0);
                wire::put_string(out, server);
            }
            Message::Get(r) => {
                wire::put_string(out, &r.path);
                wire::put_u64(out, r.offset);
                wire::put_u64(out, r.length);
                wire::put_u32(out, r.chunk_size);
                wire::put_u8(out, r.digests.bits());
                match r.if_match {
                    None => wire::put_u8(out, 0),
                    Some(v) => {
                        wire::put_u8(out, 1);
                        wire::put_u64(out, v.size);
                        wire::put_i64(out, v.mtime_ns);
                    }
                }
            }
            Message::Stat { path } => wire::put_string(out, path),
            Message::FileInfo(i) => {
                wire::put_u8(out, i.kind.code());
                wire::put_u64(out, i.size);
                wire::put_i64(out, i.mtime_ns);
                put_digests(out, &i.digests);
            }
            Message::FileHeader(h) => {
                wire::put_u64(out, h.size);
                wire::put_u64(out, h.offset);
                wire::put_u64(out, h.length);
                wire::put_i64(out, h.mtime_ns);
                wire::put_u32(out, h.chunk_size);
            }
            Message::Data(bytes) => out.extend_from_slice(bytes),
            Message::Trailer { digests } => put_digests(out, digests),
            Message::Error { code, message } => {
                wire::put_u16(out, code.to_u16());
                wire::put_string(out, message);
            }
            Message::SetPriority(p) => wire::put_u8(out, p.code()),
            Message::List { path, recursive } => {
                wire::put_string(out, path);
                wire::put_u8(out, u8::from(*recursive));
            }
            Message::ListEntries { entries } => list::encode_entries(out, entries),
            Message::ListEnd { total, truncated } => {
                wire::put_u64(out, *total);
                wire::put_u8(out, u8::from(*truncated));
            }
            Message::PutBegin(b) => b.encode(out),
            Message::PutReady(r) => r.encode(out),
            Message::PutChunk(c) => c.encode(out),
            Message::ChunkAck { id, index } => {
                wire::put_u32(out, *id);
                wire::put_u64(out, *index);
            }
            Message::ChunkRejected { id, index, reason } => {
                wire::put_u32(out, *id);
                wire::put_u64(out, *index);
                wire::put_u8(out, reason.code());
            }
            Message::PutCommit { id } | Message::PutAbort { id } | Message::PutAborted { id } => {
                wire::put_u32(out, *id)
            }
            Message::PutDone { id, digests } | Message::PutCommitDigests { id, digests } => {
                wire::put_u32(out, *id);
                put_digests(out, digests);
            }
            Message::Mkdir { path } => wire::put_string(out, path),
            Message::Auth { token } => wire::put_string(out, token),
            Message::AuthOk { user } => wire::put_string(out, user),
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

fn put_digests(out: &mut Vec<u8>, digests: &[Digest]) {
    wire::put_u8(out, digests.len() as u8);
    for d in digests {
        wire::put_u8(out, d.algorithm.code());
        wire::put_u8(out, d.bytes.len() as u8);
        out.extend_from_slice(&d.bytes);
    }
}

fn take_digests(c: &mut Cursor<'_>) -> Result<Vec<Digest>> {
    let count = c.u8("digest count")?;
    let mut digests = Vec::with_capacity(count.min(8) as usize);
    for _ in 0..count {
        let algorithm = Algorithm::from_code(c.u8("algorithm")?)?;
        let len = c.u8("digest length")? as usize;
        let bytes = c.take(len, "digest")?.to_vec();
        digests.push(Digest::new(algorithm, bytes)?);
    }
    Ok(digests)
}

/// Reads the payload of one message type with `read`; every byte must be used.
fn fields<'a>(
    payload: &'a [u8],
    message: &'static str,
    read: impl FnOnce(&mut Cursor<'a>) -> Result<Message<'a>>,
) -> Result<Message<'a>> {
    let mut c = Cursor::new(payload, message);
    let msg = read(&mut c)?;
    c.finish()?;
    Ok(msg)
}

/// A `u8` that is 0 (false) or 1 (true); anything else is malformed.
fn take_flag(c: &mut Cursor<'_>, message: &'static str, what: &'static str) -> Result<bool> {
    match c.u8(what)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(ProtocolError::Malformed {
            message,
            detail: "a flag byte is neither 0 nor 1",
        }),
    }
}

pub(crate) fn take_path(c: &mut Cursor<'_>) -> Result<String> {
    let path = c.string("path")?;
    if path.len() > crate::MAX_PATH_LEN {
        return Err(ProtocolError::PathTooLong {
            len: path.len(),
            max: crate::MAX_PATH_LEN,
        });
    }
    Ok(path)
}

impl<'a> Message<'a> {
    /// Parses one frame from the front of `buf`. `Ok(None)`: not all of the frame is there yet.
    /// On success also returns how many bytes the frame took.
    pub fn decode(buf: &'a [u8]) -> Result<Option<(Message<'a>, usize)>> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::parse(head)?;
        let total = HEADER_LEN + header.payload_len;
        if buf.len() < total {
            return Ok(None);
        }
        let msg = Message::decode_payload(header.tag, &buf[HEADER_LEN..total])?;
        Ok(Some((msg, total)))
    }

    /// Parses the payload of a frame whose header has already been read and checked.
    pub fn decode_payload(frame_tag: u8, payload: &'a [u8]) -> Result<Message<'a>> {
        match frame_tag {
            tag::HELLO => fields(payload, "Hello", |c| {
                Ok(Message::Hello {
                    version: c.u16("version")?,
                    capabilities: Capabilities(c.u64("capabilities")?),
                    agent: c.string("agent")?,
                })
            }),
            tag::WELCOME => fields(payload, "Welcome", |c| {
                Ok(Message::Welcome {
                    version: c.u16("version")?,
                    capabilities: Capabilities(c.u64("capabilities")?),
                    server: c.string("server")?,
                })
            }),
            tag::GET => fields(payload, "Get", |c| {
                let path = take_path(c)?;
                let offset = c.u64("offset")?;
                let length = c.u64("length")?;
                let chunk_size = c.u32("chunk size")?;
                let digests = DigestSet::from_bits(c.u8("digest set")?)?;
                let if_match = match c.u8("if-match flag")? {
                    0 => None,
                    1 => Some(FileVersion {
                        size: c.u64("if-match size")?,
                        mtime_ns: c.i64("if-match mtime")?,
                    }),
                    _ => {
                        return Err(ProtocolError::malformed(
                            "Get",
                            "if-match flag is neither 0 nor 1",
                        ))
                    }
                };
                Ok(Message::Get(GetRequest {
                    path,
                    offset,
                    length,
                    chunk_size,
                    digests,
                    if_match,
                }))
            }),
            tag::STAT => fields(payload, "Stat", |c| {
                Ok(Message::Stat {
                    path: take_path(c)?,
                })
            }),
            tag::FILE_INFO => fields(payload, "FileInfo", |c| {
                Ok(Message::FileInfo(FileInfo {
                    kind: FileKind::from_code(c.u8("kind")?)?,
                    size: c.u64("size")?,
                    mtime_ns: c.i64("mtime")?,
                    digests: take_digests(c)?,
                }))
            }),
            tag::FILE_HEADER => fields(payload, "FileHeader", |c| {
                let h = FileHeader {
                    size: c.u64("size")?,
                    offset: c.u64("offset")?,
                    length: c.u64("length")?,
                    mtime_ns: c.i64("mtime")?,
                    chunk_size: c.u32("chunk size")?,
                };
                if h.offset
                    .checked_add(h.length)
                    .is_none_or(|end| end > h.size)
                {
                    return Err(ProtocolError::malformed(
                        "FileHeader",
                        "range beyond the end of the file",
                    ));
                }
                Ok(Message::FileHeader(h))
            }),
            tag::DATA => Ok(Message::Data(payload)),
            tag::TRAILER => fields(payload, "Trailer", |c| {
                Ok(Message::Trailer {
                    digests: take_digests(c)?,
                })
            }),
            tag::ERROR => fields(payload, "Error", |c| {
                Ok(Message::Error {
                    code: ErrorCode::from_u16(c.u16("code")?),
                    message: c.string("message")?,
                })
            }),
            tag::SET_PRIORITY => fields(payload, "SetPriority", |c| {
                Ok(Message::SetPriority(Priority::from_code(
                    c.u8("priority")?,
                )?))
            }),
            tag::LIST => fields(payload, "List", |c| {
                Ok(Message::List {
                    path: take_path(c)?,
                    recursive: take_flag(c, "List", "flags")?,
                })
            }),
            tag::LIST_ENTRIES => fields(payload, "ListEntries", |c| {
                Ok(Message::ListEntries {
                    entries: list::decode_entries(c)?,
                })
            }),
            tag::LIST_END => fields(payload, "ListEnd", |c| {
                Ok(Message::ListEnd {
                    total: c.u64("total")?,
                    truncated: take_flag(c, "ListEnd", "flags")?,
                })
            }),
            tag::PUT_BEGIN => fields(payload, "PutBegin", |c| {
                Ok(Message::PutBegin(PutBegin::decode(c)?))
            }),
            tag::PUT_READY => fields(payload, "PutReady", |c| {
                Ok(Message::PutReady(PutReady::decode(c)?))
            }),
            tag::PUT_CHUNK => fields(payload, "PutChunk", |c| {
                Ok(Message::PutChunk(PutChunk::decode(c)?))
            }),
            tag::CHUNK_ACK => fields(payload, "ChunkAck", |c| {
                Ok(Message::ChunkAck {
                    id: c.u32("upload id")?,
                    index: c.u64("chunk index")?,
                })
            }),
            tag::CHUNK_REJECTED => fields(payload, "ChunkRejected", |c| {
                Ok(Message::ChunkRejected {
                    id: c.u32("upload id")?,
                    index: c.u64("chunk index")?,
                    reason: RejectReason::from_code(c.u8("reason")?),
                })
            }),
            tag::PUT_COMMIT => fields(payload, "PutCommit", |c| {
                Ok(Message::PutCommit {
                    id: c.u32("upload id")?,
                })
            }),
            tag::PUT_COMMIT_DIGESTS => fields(payload, "PutCommitDigests", |c| {
                Ok(Message::PutCommitDigests {
                    id: c.u32("upload id")?,
                    digests: take_digests(c)?,
                })
            }),
            tag::PUT_DONE => fields(payload, "PutDone", |c| {
                Ok(Message::PutDone {
                    id: c.u32("upload id")?,
                    digests: take_digests(c)?,
                })
            }),
            tag::PUT_ABORT => fields(payload, "PutAbort", |c| {
                Ok(Message::PutAbort {
                    id: c.u32("upload id")?,
                })
            }),
            tag::PUT_ABORTED => fields(payload, "PutAborted", |c| {
                Ok(Message::PutAborted {
                    id: c.u32("upload id")?,
                })
            }),
            tag::MKDIR => fields(payload, "Mkdir", |c| {
                Ok(Message::Mkdir {
                    path: take_path(c)?,
                })
            }),
            tag::AUTH => fields(payload, "Auth", |c| {
                Ok(Message::Auth {
                    token: c.string("token")?,
                })
            }),
            tag::AUTH_OK => fields(payload, "AuthOk", |c| {
                Ok(Message::AuthOk {
                    user: c.string("user")?,
                })
            }),
            other => Err(ProtocolError::UnknownTag(other)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn auth_known_answer() {
        // len 6 = tag + u16 length 3 + "abc"
        let auth = Message::Auth {
            token: "abc".into(),
        };
        assert_eq!(encoded(&auth), [0, 0, 0, 6, 0x2a, 0, 3, b'a', b'b', b'c']);
        let ok = Message::AuthOk { user: "al".into() };
        assert_eq!(encoded(&ok), [0, 0, 0, 5, 0x2b, 0, 2, b'a', b'l']);
        assert_eq!(Message::decode(&encoded(&auth)).unwrap().unwrap().0, auth);
    }

    pub(crate) fn encoded(m: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode(&mut out);
        out
    }

    /// One or more samples of every message type, the new ones included.
    pub(crate) fn samples() -> Vec<Message<'static>> {
        let mut all = original_samples();
        all.extend(Priority::ALL.map(Message::SetPriority));
        all.extend(crate::upload::tests::samples());
        all.extend(crate::list::tests::samples());
        all.push(Message::Auth {
            token: "s3cr3t-token".into(),
        });
        all.push(Message::AuthOk {
            user: "alice".into(),
        });
        all
    }

    fn original_samples() -> Vec<Message<'static>> {
        vec![
            Message::Hello {
                version: 1,
                capabilities: Capabilities(Capabilities::GET | Capabilities::RESUME),
                agent: "sfts-client/0.1".into(),
            },
            Message::Welcome {
                version: 1,
                capabilities: Capabilities(Capabilities::GET),
                server: "sfts-server/0.1".into(),
            },
            Message::Get(GetRequest {
                path: "sub/dir/file.bin".into(),
                offset: 12,
                length: 1000,
                chunk_size: 1 << 20,
                digests: DigestSet::of(&[Algorithm::Sha256, Algorithm::Md5]),
                if_match: Some(FileVersion {
                    size: 5000,
                    mtime_ns: 1_700_000_000_000_000_000,
                }),
            }),
            Message::Get(GetRequest::whole("x", 0, DigestSet::EMPTY)),
            Message::Stat { path: "a/b".into() },
            Message::FileInfo(FileInfo {
                kind: FileKind::File,
                size: 3,
                mtime_ns: 7,
                digests: vec![
                    Digest::from_hex(Algorithm::Md5, "900150983cd24fb0d6963f7d28e17f72").unwrap(),
                ],
            }),
            Message::FileInfo(FileInfo {
                kind: FileKind::Directory,
                size: 0,
                mtime_ns: -1,
                digests: vec![],
            }),
            Message::FileHeader(FileHeader {
                size: 1 << 40,
                offset: 12,
                length: (1 << 40) - 12,
                mtime_ns: -5,
                chunk_size: 65536,
            }),
            Message::Data(b"hello world"),
            Message::Data(b""),
            Message::Trailer {
                digests: vec![
                    Digest::from_hex(Algorithm::Md5, "900150983cd24fb0d6963f7d28e17f72").unwrap(),
                ],
            },
            Message::Trailer { digests: vec![] },
            Message::Error {
                code: ErrorCode::NotFound,
                message: "file 'x' not found under the served root".into(),
            },
        ]
    }

    #[test]
    fn exact_layouts() {
        assert_eq!(
            encoded(&Message::Hello {
                version: 1,
                capabilities: Capabilities(3),
                agent: "a".into()
            }),
            [0, 0, 0, 14, 0x01, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, b'a']
        );
        assert_eq!(
            encoded(&Message::Get(GetRequest {
                path: "f".into(),
                offset: 2,
                length: TO_END,
                chunk_size: 4096,
                digests: DigestSet::of(&[Algorithm::Sha256]),
                if_match: None,
            })),
            [
                0, 0, 0, 26, 0x10, 0, 1, b'f', 0, 0, 0, 0, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff, 0xff, 0xff, 0, 0, 0x10, 0, 2, 0
            ]
        );
        assert_eq!(
            encoded(&Message::Get(GetRequest {
                if_match: Some(FileVersion {
                    size: 3,
                    mtime_ns: -1
                }),
                ..GetRequest::whole("f", 4096, DigestSet::EMPTY)
            }))[29..],
            [1, 0, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            encoded(&Message::Stat { path: "d".into() }),
            [0, 0, 0, 4, 0x14, 0, 1, b'd']
        );
        assert_eq!(
            encoded(&Message::FileInfo(FileInfo {
                kind: FileKind::Directory,
                size: 0,
                mtime_ns: 1,
                digests: vec![]
            })),
            [0, 0, 0, 19, 0x15, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
        );
        assert_eq!(
            encoded(&Message::Data(b"xy")),
            [0, 0, 0, 3, 0x12, b'x', b'y']
        );
        assert_eq!(
            encoded(&Message::Error {
                code: ErrorCode::Busy,
                message: "b".into()
            }),
            [0, 0, 0, 6, 0x7f, 0, 5, 0, 1, b'b']
        );
        assert_eq!(
            encoded(&Message::FileHeader(FileHeader {
                size: 1,
                offset: 0,
                length: 1,
                mtime_ns: 0,
                chunk_size: 1
            })),
            [
                0, 0, 0, 37, 0x11, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1
            ]
        );
    }

    #[test]
    fn keep_alive_and_empty_trailer_layouts() {
        // A zero-length Data frame (keep-alive) is valid and decodes to an empty chunk.
        assert_eq!(encoded(&Message::Data(b"")), [0, 0, 0, 1, 0x12]);
        assert_eq!(
            Message::decode(&[0, 0, 0, 1, 0x12]).unwrap(),
            Some((Message::Data(b""), 5))
        );
        // Several keep-alives back to back, then a real chunk.
        let wire = [0, 0, 0, 1, 0x12, 0, 0, 0, 1, 0x12, 0, 0, 0, 2, 0x12, b'z'];
        let (a, n1) = Message::decode(&wire).unwrap().unwrap();
        let (b, n2) = Message::decode(&wire[n1..]).unwrap().unwrap();
        let (c, _) = Message::decode(&wire[n1 + n2..]).unwrap().unwrap();
        assert_eq!(
            [a, b, c],
            [Message::Data(b""), Message::Data(b""), Message::Data(b"z")]
        );
        // The Trailer of a Get that asked for no digest.
        assert_eq!(
            encoded(&Message::Trailer { digests: vec![] }),
            [0, 0, 0, 2, 0x13, 0]
        );
        assert_eq!(
            Message::decode(&[0, 0, 0, 2, 0x13, 0]).unwrap(),
            Some((Message::Trailer { digests: vec![] }, 6))
        );
    }

    #[test]
    fn new_capability_bits() {
        assert_eq!(Capabilities::UPLOAD, 0x10);
        assert_eq!(Capabilities::LIST, 0x20);
        assert_eq!(Capabilities::PRIORITY, 0x40);
        assert_eq!(Capabilities::BLAKE3, 0x100);
        assert_eq!(Capabilities::STREAM_PUT, 0x200);
        assert_eq!(Capabilities::BLAKE3_TREE, 0x400);
    }

    #[test]
    fn round_trips() {
        for m in samples() {
            let bytes = encoded(&m);
            let (back, used) = Message::decode(&bytes).unwrap().unwrap();
            assert_eq!(back, m);
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn truncated_input_needs_more() {
        for m in samples() {
            let bytes = encoded(&m);
            for cut in 0..bytes.len() {
                assert!(
                    Message::decode(&bytes[..cut]).unwrap().is_none(),
                    "{} cut at {cut}",
                    m.name()
                );
            }
        }
    }

    #[test]
    fn two_frames_back_to_back() {
        let mut bytes = encoded(&Message::Data(b"a"));
        Message::Data(b"bc").encode(&mut bytes);
        let (first, used) = Message::decode(&bytes).unwrap().unwrap();
        assert_eq!(first, Message::Data(b"a"));
        let (second, _) = Message::decode(&bytes[used..]).unwrap().unwrap();
        assert_eq!(second, Message::Data(b"bc"));
    }

    #[test]
    fn trailing_bytes_inside_a_frame_rejected() {
        let mut bytes = encoded(&Message::Error {
            code: ErrorCode::Busy,
            message: "b".into(),
        });
        bytes[3] += 1;
        bytes.push(0);
        assert!(matches!(
            Message::decode(&bytes),
            Err(ProtocolError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Message::decode(&[0, 0, 0, 2, 0x42, 0]).is_err());
        assert!(Message::decode(&[0, 0, 0, 1, tag::GET]).is_err());
        assert!(Message::decode(&[0, 0, 0, 3, tag::TRAILER, 1, 9]).is_err());
        assert!(Message::decode(&[0, 0, 0, 4, tag::TRAILER, 1, 1, 3]).is_err());
        // Get with an unknown digest bit (the byte before the if-match flag).
        let mut get = encoded(&Message::Get(GetRequest::whole("f", 0, DigestSet::EMPTY)));
        let at = get.len() - 2;
        get[at] = 0x80;
        assert!(matches!(
            Message::decode(&get),
            Err(ProtocolError::UnknownAlgorithm(_))
        ));
        // An if-match flag that is neither 0 nor 1.
        let mut get = encoded(&Message::Get(GetRequest::whole("f", 0, DigestSet::EMPTY)));
        *get.last_mut().unwrap() = 2;
        assert!(Message::decode(&get).is_err());
        // Invalid UTF-8 in a path.
        let mut get = encoded(&Message::Get(GetRequest::whole("f", 0, DigestSet::EMPTY)));
        get[7] = 0xff;
        assert!(matches!(
            Message::decode(&get),
            Err(ProtocolError::InvalidUtf8(_))
        ));
        // Unknown file kind.
        assert!(Message::decode(&[
            0,
            0,
            0,
            19,
            tag::FILE_INFO,
            9,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0
        ])
        .is_err());
    }

    #[test]
    fn oversized_path_rejected() {
        let mut bytes = Vec::new();
        Message::Get(GetRequest::whole(
            "a".repeat(crate::MAX_PATH_LEN + 1),
            0,
            DigestSet::EMPTY,
        ))
        .encode(&mut bytes);
        assert!(matches!(
            Message::decode(&bytes),
            Err(ProtocolError::PathTooLong { .. })
        ));
        let mut bytes = Vec::new();
        Message::Stat {
            path: "a".repeat(crate::MAX_PATH_LEN + 1),
        }
        .encode(&mut bytes);
        assert!(matches!(
            Message::decode(&bytes),
            Err(ProtocolError::PathTooLong { .. })
        ));
    }

    #[test]
    fn file_header_offset_beyond_size_rejected() {
        for (offset, length) in [(2, 0), (0, 2), (1, u64::MAX)] {
            let bytes = encoded(&Message::FileHeader(FileHeader {
                size: 1,
                offset,
                length,
                mtime_ns: 0,
                chunk_size: 1,
            }));
            assert!(Message::decode(&bytes).is_err(), "{offset} {length}");
        }
    }

    #[test]
    fn capabilities() {
        let c = Capabilities(Capabilities::GET | Capabilities::RESUME);
        assert!(c.has(Capabilities::GET));
        assert!(!c.has(Capabilities::MULTI_REQUEST));
        assert_eq!(
            c.common(Capabilities(Capabilities::GET)).0,
            Capabilities::GET
        );
    }
}
