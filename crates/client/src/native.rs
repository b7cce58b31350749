//! The native SFTS session: magic + `Hello` → `Welcome`, `Get` → `FileHeader`, `Data`... →
//! `Trailer`. Generic over the stream so the tests drive it from memory.

use crate::bulk_read::BulkRead;
use crate::error::{ClientError, Kept};
use crate::pagebuf::PageBuf;
use crate::transfer::{early_read_failed, Context, Stop, Stopped};
use sfts_protocol::frame::{Header, HEADER_LEN};
use sfts_protocol::io::{read_message, write_message};
use sfts_protocol::ProtocolError;
use sfts_protocol::{
    Algorithm, Capabilities, Digest, DigestSet, ErrorCode, FileHeader, FileInfo, GetRequest,
    Message, MAGIC, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, TO_END,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::time::Duration;

/// How this client introduces itself.
pub const AGENT: &str = concat!("sfts-client/", env!("CARGO_PKG_VERSION"));

/// What the client asks for, and the names used in messages.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `host:port`, for messages.
    pub server: &'a str,
    /// The remote path.
    pub remote: &'a str,
    /// Largest `Data` payload wanted.
    pub chunk_size: u32,
    /// The digest to verify with.
    pub algorithm: Algorithm,
    /// The socket timeout, for messages.
    pub timeout: Duration,
}

/// The server's `Welcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The version both sides speak.
    pub version: u16,
    /// The server's features.
    pub capabilities: Capabilities,
    /// The server's name and version.
    pub server: String,
}

/// How the handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// The server is busy or shutting down: worth another attempt later.
    Unavailable {
        /// Which of the two.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The connection closed before any answer (a server refusing under load, or not an SFTS
    /// server): worth another attempt.
    Closed,
    /// Anything else.
    Fatal(ClientError),
}

/// Bytes read from the socket at a time for small frames (headers, small files of a tree).
const READ_BUFFER: usize = 64 * 1024;

/// A native connection with its reused buffers.
pub struct NativeSession<S> {
    /// The connection, read through a buffer (written through `get_mut`): a tree's small
    /// files arrive many frames per read. Large payloads bypass it ([`read_payload`]).
    stream: BufReader<S>,
    /// Receive buffer, reused for every frame (it grows to the largest frame and stays).
    buf: Vec<u8>,
    /// Receive buffer of `Data` payloads, page-aligned: the kernel's copy into a buffer a few
    /// bytes past a page boundary (where a `Vec` starts) runs several times slower on some
    /// CPUs (see [`PageBuf`]).
    data: PageBuf,
    /// Send buffer.
    scratch: Vec<u8>,
    /// Requests queued by [`queue`](Self::queue), written together.
    queued: Vec<u8>,
}

impl<S: Read + Write> NativeSession<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Self {
        NativeSession {
            stream: BufReader::with_capacity(READ_BUFFER, stream),
            buf: Vec::new(),
            data: PageBuf::default(),
            scratch: Vec::new(),
            queued: Vec::new(),
        }
    }

    /// The underlying stream.
    pub fn into_inner(self) -> S {
        self.stream.into_inner()
    }

    /// Sends the magic and `Hello` and reads the answer.
    pub fn handshake(&mut self, req: &Request<'_>) -> Result<Welcome, HandshakeError> {
        let fatal = |detail: String| {
            HandshakeError::Fatal(ClientError::Handshake {
                server: req.server.to_string(),
                detail,
            })
        };
        // Magic and Hello in one write. A server that refuses at once (busy) may already have
        // closed; its Error frame can still be waiting to be read, so a failed write is only
        // reported when no answer can be read either.
        self.scratch.clear();
        self.scratch.extend_from_slice(&MAGIC);
        Message::Hello {
            version: PROTOCOL_VERSION,
            capabilities: Capabilities(
                Capabilities::GET
                    | Capabilities::RESUME
                    | Capabilities::MULTI_REQUEST
                    | Capabilities::STAT
                    | Capabilities::UPLOAD
                    | Capabilities::LIST
                    | Capabilities::PRIORITY
                    | Capabilities::AUTH
                    | Capabilities::BLAKE3
                    | Capabilities::STREAM_PUT
                    | Capabilities::BLAKE3_TREE
                    | Capabilities::XXH128,
            ),
            agent: AGENT.into(),
        }
        .encode(&mut self.scratch);
        let sent = self.stream.get_mut().write_all(&self.scratch);
        let answer = read_message(&mut self.stream, &mut self.buf);
        match (answer, sent) {
            (
                Ok(Some(Message::Welcome {
                    version,
                    capabilities,
                    server,
                })),
                _,
            ) => {
                if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
                    return Err(fatal(format!(
                        "it chose protocol version {version}, this client speaks \
                         {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
                    )));
                }
                Ok(Welcome {
                    version,
                    capabilities,
                    server,
                })
            }
            (Ok(Some(Message::Error { code, message })), _) if code.is_transient() => {
                Err(HandshakeError::Unavailable { code, message })
            }
            (Ok(Some(Message::Error { message, .. })), _) => {
                Err(HandshakeError::Fatal(ClientError::Refused {
                    remote: req.remote.to_string(),
                    message,
                }))
            }
            (Ok(Some(other)), _) => Err(fatal(format!(
                "it answered Hello with {} instead of Welcome",
                other.name()
            ))),
            (_, Err(e)) => Err(fatal(format!("cannot send the greeting: {e}"))),
            // A server under a flood may close without a word; retried like a busy answer.
            (Ok(None), Ok(())) => Err(HandshakeError::Closed),
            (Err(e), Ok(())) if e.is_timeout() => Err(fatal(format!(
                "no answer within {}",
                crate::connect::seconds(req.timeout)
            ))),
            (Err(e), Ok(())) => Err(fatal(e.to_string())),
        }
    }

    /// Sends `Get` for the whole file and reads the `FileHeader`.
    pub fn request(
        &mut self,
        req: &Request<'_>,
        welcome: &Welcome,
    ) -> Result<FileHeader, ClientError> {
        let get = GetRequest::whole(req.remote, req.chunk_size, DigestSet::of(&[req.algorithm]));
        let h = self.request_range(req, welcome, get)?;
        if h.offset == 0 && h.length == h.size {
            Ok(h)
        } else {
            Err(ClientError::Protocol {
                detail: format!(
                    "asked for the whole file, it announced {} bytes from byte {} of {}",
                    h.length, h.offset, h.size
                ),
                kept: Kept::Nothing,
            })
        }
    }

    /// Sends `get` (a whole file or a range) and reads the `FileHeader`, checking that what it
    /// announces is consistent: the range fits the file, and it is the range asked for unless
    /// the server fell back to the whole file because `if_match` no longer matched.
    pub fn request_range(
        &mut self,
        req: &Request<'_>,
        welcome: &Welcome,
        get: GetRequest,
    ) -> Result<FileHeader, ClientError> {
        if !welcome.capabilities.has(Capabilities::GET) {
            return Err(ClientError::Refused {
                remote: req.remote.to_string(),
                message: format!("the server '{}' does not offer downloads", welcome.server),
            });
        }
        let (offset, length) = (get.offset, get.length);
        let sent = write_message(self.stream.get_mut(), &Message::Get(get), &mut self.scratch);
        self.read_header(req, offset, length, sent)
    }

    /// Reads the `FileHeader` answering a `Get` for `length` bytes from `offset` (sent
    /// earlier, possibly pipelined behind others; `sent` is how sending it went).
    pub fn read_header(
        &mut self,
        req: &Request<'_>,
        offset: u64,
        length: u64,
        sent: std::io::Result<()>,
    ) -> Result<FileHeader, ClientError> {
        const STAGE: &str = "waiting for the file header";
        let h = match read_message(&mut self.stream, &mut self.buf) {
            Ok(Some(Message::FileHeader(h))) => h,
            Ok(Some(Message::Error { message, .. })) => {
                return Err(ClientError::Refused {
                    remote: req.remote.to_string(),
                    message,
                })
            }
            Ok(Some(other)) => {
                return Err(ClientError::Protocol {
                    detail: format!("expected a FileHeader, got {}", other.name()),
                    kept: Kept::Nothing,
                })
            }
            Ok(None) => {
                return Err(ClientError::Disconnected {
                    stage: STAGE,
                    reason: match sent {
                        Err(e) => format!("cannot send the request: {e}"),
                        Ok(()) => "the server closed the connection".into(),
                    },
                })
            }
            Err(e) => return Err(early_read_failed(STAGE, e, req.timeout)),
        };
        let fits = h
            .offset
            .checked_add(h.length)
            .is_some_and(|end| end <= h.size);
        let whole = h.offset == 0 && h.length == h.size;
        let asked = h.offset == offset
            && (h.length == length || (length == TO_END && h.length == h.size - h.offset));
        if !fits || !(asked || whole) {
            return Err(ClientError::Protocol {
                detail: format!(
                    "asked for {} bytes from byte {offset}, it announced {} bytes from byte {} \
                     of {}",
                    if length == TO_END {
                        "all".to_string()
                    } else {
                        length.to_string()
                    },
                    h.length,
                    h.offset,
                    h.size
                ),
                kept: Kept::Nothing,
            });
        }
        Ok(h)
    }

    /// Sends one control message.
    pub fn send(&mut self, msg: &Message<'_>) -> std::io::Result<()> {
        write_message(self.stream.get_mut(), msg, &mut self.scratch)
    }

    /// Queues a request to be sent with others by [`send_queued`](Self::send_queued): one
    /// system call for a batch of pipelined `Get`s instead of one each.
    pub fn queue(&mut self, msg: &Message<'_>) {
        msg.encode(&mut self.queued);
    }

    /// Sends the queued requests in one write.
    pub fn send_queued(&mut self) -> std::io::Result<()> {
        let sent = self.stream.get_mut().write_all(&self.queued);
        self.queued.clear();
        sent
    }

    /// Sends one upload chunk straight from `data`.
    pub fn send_chunk(
        &mut self,
        id: u32,
        index: u64,
        digest: &[u8; 32],
        data: &[u8],
    ) -> std::io::Result<()> {
        sfts_protocol::io::write_put_chunk(self.stream.get_mut(), id, index, digest, data)
    }

    /// Reads the next message that is not an empty `Data` keep-alive. A closed or broken
    /// connection is [`ClientError::Disconnected`] (worth a reconnection); `stage` names what
    /// was awaited.
    pub fn recv(
        &mut self,
        stage: &'static str,
        timeout: Duration,
    ) -> Result<Message<'_>, ClientError> {
        use sfts_protocol::frame::tag;
        let broken = |e: std::io::Error| early_read_failed(stage, e.into(), timeout);
        let protocol = |e: sfts_protocol::ProtocolError| ClientError::Protocol {
            detail: format!("{e} (while {stage})"),
            kept: Kept::Nothing,
        };
        loop {
            let mut head = [0u8; HEADER_LEN];
            self.stream.read_exact(&mut head).map_err(broken)?;
            let header = Header::parse(&head).map_err(protocol)?;
            let n = header.payload_len;
            if self.buf.len() < n {
                self.buf.resize(n, 0);
            }
            self.stream.read_exact(&mut self.buf[..n]).map_err(broken)?;
            if header.tag == tag::DATA && n == 0 {
                continue;
            }
            return Message::decode_payload(header.tag, &self.buf[..n]).map_err(protocol);
        }
    }

    /// Asks the server to describe `path` (the server must offer [`Capabilities::STAT`]).
    pub fn stat(&mut self, req: &Request<'_>) -> Result<FileInfo, ClientError> {
        const STAGE: &str = "waiting for the file's description";
        let stat = Message::Stat {
            path: req.remote.to_string(),
        };
        let sent = write_message(self.stream.get_mut(), &stat, &mut self.scratch);
        match read_message(&mut self.stream, &mut self.buf) {
            Ok(Some(Message::FileInfo(info))) => Ok(info),
            Ok(Some(Message::Error { message, .. })) => Err(ClientError::Refused {
                remote: req.remote.to_string(),
                message,
            }),
            Ok(Some(other)) => Err(ClientError::Protocol {
                detail: format!("expected FileInfo, got {}", other.name()),
                kept: Kept::Nothing,
            }),
            Ok(None) => Err(ClientError::Disconnected {
                stage: STAGE,
                reason: match sent {
                    Err(e) => format!("cannot send the request: {e}"),
                    Ok(()) => "the server closed the connection".into(),
                },
            }),
            Err(e) => Err(early_read_failed(STAGE, e, req.timeout)),
        }
    }
}

impl<S: BulkRead + Write + Send> NativeSession<S> {
    /// Receives the `Data` frames of `header` into `sink` (which hashes them), then the
    /// `Trailer`. Returns the server's digest for `algorithm`; comparing it is the caller's
    /// business.
    pub fn receive<W: Write>(
        &mut self,
        header: &FileHeader,
        algorithm: Algorithm,
        sink: &mut W,
        ctx: &Context<'_>,
    ) -> Result<Digest, Stopped> {
        let digests = self.receive_all(header, sink, ctx, Threads::Auto)?;
        match digests.into_iter().find(|d| d.algorithm == algorithm) {
            Some(d) => Ok(d),
            None => Err(ctx.stop(
                header.length,
                Stop::Protocol(format!("its trailer carries no {algorithm} digest")),
            )),
        }
    }

    /// Receives the `Data` frames of `header` into `sink`, then the `Trailer`, whose digests
    /// it returns. Empty `Data` frames (the server's keep-alive while it hashes) are ignored.
    pub fn receive_all<W: Write>(
        &mut self,
        header: &FileHeader,
        sink: &mut W,
        ctx: &Context<'_>,
        threads: Threads,
    ) -> Result<Vec<Digest>, Stopped> {
        if threads.two_for(header.length) {
            return self.receive_pipelined(header, sink, ctx, threads.piece());
        }
        let size = header.length;
        let mut received = 0u64;
        loop {
            let frame = read_head(&mut self.stream).and_then(|head| match head {
                None => Ok(None),
                Some(h) => {
                    let payload: &mut [u8] = if h.tag == sfts_protocol::frame::tag::DATA {
                        self.data.reset(h.payload_len);
                        &mut self.data
                    } else {
                        if self.buf.len() < h.payload_len {
                            self.buf.resize(h.payload_len, 0);
                        }
                        &mut self.buf[..h.payload_len]
                    };
                    read_payload(&mut self.stream, payload)?;
                    Message::decode_payload(h.tag, payload).map(Some)
                }
            });
            let msg = match frame {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    let reason = "the server closed the connection".to_string();
                    return Err(ctx.stop(received, Stop::Lost(reason)));
                }
                Err(e) => return Err(ctx.read_failed(received, e)),
            };
            match msg {
                Message::Data(chunk) if chunk.len() as u64 > size - received => {
                    let detail = format!(
                        "it sent more than the {size} bytes it announced ({} after {received})",
                        chunk.len()
                    );
                    return Err(ctx.stop(received, Stop::Protocol(detail)));
                }
                Message::Data(chunk) => ctx.deliver(sink, chunk, &mut received)?,
                Message::Trailer { digests } if received == size => return Ok(digests),
                Message::Error { code, message } => {
                    let text = format!("{message} ({})", code.name());
                    return Err(ctx.stop(received, Stop::Aborted(text)));
                }
                other => {
                    let detail =
                        format!("it sent {} after {received} of {size} bytes", other.name());
                    return Err(ctx.stop(received, Stop::Protocol(detail)));
                }
            }
        }
    }

    /// [`receive_all`](Self::receive_all) on two threads: one reads frames from the socket
    /// straight into reused buffers, this one writes and hashes them, so reading the network
    /// and hashing overlap on two cores.
    fn receive_pipelined<W: Write>(
        &mut self,
        header: &FileHeader,
        sink: &mut W,
        ctx: &Context<'_>,
        piece: usize,
    ) -> Result<Vec<Digest>, Stopped> {
        let size = header.length;
        let stream = &mut self.stream;
        std::thread::scope(|scope| {
            let (tx, rx) = sync_channel::<Frame>(PIPELINE_DEPTH);
            let (give_back, spare) = channel::<PageBuf>();
            scope.spawn(move || read_frames(stream, size, piece, &tx, &spare));
            let mut received = 0u64;
            for frame in &rx {
                match frame {
                    Frame::Data(buf) => {
                        ctx.deliver(sink, &buf, &mut received)?;
                        let _ = give_back.send(buf);
                    }
                    Frame::Trailer(digests) => return Ok(digests),
                    Frame::Stop(cause) => return Err(ctx.stop(received, cause)),
                    Frame::Failed(e) => return Err(ctx.read_failed(received, e)),
                }
            }
            let reason = "the connection ended".to_string();
            Err(ctx.stop(received, Stop::Lost(reason)))
        })
    }
}

/// How many threads receive a transfer: two (one reads, one writes and hashes) from a size
/// on, one below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// Two from [`PIPELINE_MIN`].
    Auto,
    /// Like [`Threads::Auto`], and the reading thread hands frames over in pieces of
    /// [`PIECE`] bytes: the sink's hash is faster than the memory it would otherwise read
    /// the bytes back from.
    Hot,
    /// Two only from [`CHEAP_PIPELINE_MIN`]: the sink's work is about as cheap as handing
    /// frames over.
    LargeOnly,
    /// Always one: the sink's work costs less than handing frames over (XXH128 to standard
    /// output: a 1 GiB download, 6 alternated pairs, 2.51–3.56 GB/s on two threads against
    /// 2.88–3.80 on one, with less CPU).
    One,
}

impl Threads {
    /// True when a transfer of `length` bytes is received on two threads.
    fn two_for(self, length: u64) -> bool {
        length
            >= match self {
                Threads::Auto | Threads::Hot => PIPELINE_MIN,
                Threads::LargeOnly => CHEAP_PIPELINE_MIN,
                Threads::One => u64::MAX,
            }
    }

    /// The most bytes the reading thread hands over at a time: [`PIECE`] for
    /// [`Threads::Hot`], else whole frames (fewer hand-overs).
    fn piece(self) -> usize {
        match self {
            Threads::Hot => PIECE,
            Threads::Auto | Threads::LargeOnly | Threads::One => usize::MAX,
        }
    }
}

/// Transfers at least this long are received on two threads.
const PIPELINE_MIN: u64 = 4 << 20;

/// Transfers at least this long are received on two threads even when writing and hashing
/// costs little more than the hand-over (BLAKE3 to standard output). The second thread then
/// costs about a seventh more CPU, and wins a fifth of the time of a 1 GiB download when the
/// other core has room; below this size a download is more likely one of many running at
/// once, with no core to spare: 64 concurrent 16 MiB downloads lost a fifth of their
/// aggregate rate on two threads each (docs/PERFORMANCE.md).
const CHEAP_PIPELINE_MIN: u64 = 64 << 20;

/// Pieces read ahead of the writing and hashing thread.
const PIPELINE_DEPTH: usize = 4;

/// With [`Threads::Hot`], the reading thread hands a `Data` payload over in pieces of at most
/// this many bytes, so that the hashing thread reads each piece while the cache still holds
/// it. SHA-256 (SHA-NI) hashes about 1.8 GB/s from cache and 1.1 GB/s from memory on the
/// Xeon of docs/PERFORMANCE.md; with whole 1 MiB frames four of them waited ahead of the
/// hashing thread and had left the cache. A 1 GiB sha256 download to /dev/null, alternated
/// runs: 0.89–0.98 s with whole frames, 0.70–0.89 s in 128 KiB pieces (5 pairs); 0.91–0.97
/// against 0.79–0.88 (6 pairs). MD5 (0.65 GB/s) lost 3 % to the extra hand-overs (1.80–1.89
/// against 1.89–2.00 s, 5 pairs), so only SHA-256 asks for pieces.
const PIECE: usize = 128 << 10;

/// What the reading thread hands over.
enum Frame {
    /// A `Data` payload (page-aligned, like [`NativeSession`]'s own).
    Data(PageBuf),
    /// The trailer, after exactly the announced bytes.
    Trailer(Vec<Digest>),
    /// The transfer stopped (server error, protocol violation, connection closed).
    Stop(Stop),
    /// Reading failed.
    Failed(sfts_protocol::ProtocolError),
}

/// The reading thread: frames of a transfer of `size` bytes, until the trailer or a stop,
/// `Data` payloads in pieces of at most `piece` bytes. Ends early when the receiving side
/// hangs up.
fn read_frames<S: BulkRead>(
    stream: &mut BufReader<S>,
    size: u64,
    piece: usize,
    tx: &SyncSender<Frame>,
    spare: &Receiver<PageBuf>,
) {
    use sfts_protocol::frame::tag;
    let mut read = 0u64;
    loop {
        let frame = match read_head(stream) {
            Ok(None) => Frame::Stop(Stop::Lost("the server closed the connection".into())),
            Err(e) => Frame::Failed(e),
            Ok(Some(h)) if h.tag == tag::DATA => {
                let n = h.payload_len;
                if n as u64 > size - read {
                    Frame::Stop(Stop::Protocol(format!(
                        "it sent more than the {size} bytes it announced ({n} after {read})"
                    )))
                } else if n == 0 {
                    continue; // keep-alive
                } else {
                    match read_pieces(stream, n, piece, tx, spare) {
                        Ok(true) => {
                            read += n as u64;
                            continue;
                        }
                        Ok(false) => return, // the receiving side hung up
                        Err(e) => Frame::Failed(e),
                    }
                }
            }
            Ok(Some(h)) => {
                let mut payload = vec![0u8; h.payload_len];
                match read_payload(stream, &mut payload) {
                    Err(e) => Frame::Failed(e),
                    Ok(()) => match Message::decode_payload(h.tag, &payload) {
                        Err(e) => Frame::Failed(e),
                        Ok(Message::Trailer { digests }) if read == size => Frame::Trailer(digests),
                        Ok(Message::Error { code, message }) => {
                            Frame::Stop(Stop::Aborted(format!("{message} ({})", code.name())))
                        }
                        Ok(other) => Frame::Stop(Stop::Protocol(format!(
                            "it sent {} after {read} of {size} bytes",
                            other.name()
                        ))),
                    },
                }
            }
        };
        // The trailer or a stop: the last frame either way. `Data` went in pieces above.
        let _ = tx.send(frame);
        return;
    }
}

/// Reads a `Data` payload of `n` bytes and hands it over in pieces of at most `piece` bytes,
/// each as soon as it is read. `Ok(false)` when the receiving side hung up.
fn read_pieces<S: BulkRead>(
    stream: &mut BufReader<S>,
    n: usize,
    piece: usize,
    tx: &SyncSender<Frame>,
    spare: &Receiver<PageBuf>,
) -> Result<bool, ProtocolError> {
    let mut left = n;
    while left > 0 {
        let len = left.min(piece);
        let mut buf = spare.try_recv().unwrap_or_default();
        buf.reset(len);
        read_payload(stream, &mut buf)?;
        left -= len;
        if tx.send(Frame::Data(buf)).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reads the next frame header; `Ok(None)` when the stream ended cleanly before it. From the
/// read buffer while it holds bytes; once it is empty, straight from the socket, so that
/// during a large transfer the buffer is not refilled with the next payload's first 64 KiB
/// (which would then be copied twice).
fn read_head<S: Read>(stream: &mut BufReader<S>) -> Result<Option<Header>, ProtocolError> {
    let mut head = [0u8; HEADER_LEN];
    let whole = if stream.buffer().is_empty() {
        read_exact_or_eof(stream.get_mut(), &mut head)?
    } else {
        read_exact_or_eof(stream, &mut head)?
    };
    if whole {
        Header::parse(&head).map(Some)
    } else {
        Ok(None)
    }
}

/// Reads a payload into `dst`: what the read buffer holds first, then the rest straight from
/// the socket when it is at least a buffer long (no copy through the buffer, and with a
/// receive low-water mark: [`BulkRead`]), else through it.
fn read_payload<S: BulkRead>(
    stream: &mut BufReader<S>,
    dst: &mut [u8],
) -> Result<(), ProtocolError> {
    let held = stream.buffer().len().min(dst.len());
    let (first, rest) = dst.split_at_mut(held);
    first.copy_from_slice(&stream.buffer()[..held]);
    stream.consume(held);
    let read = if rest.len() >= stream.capacity() {
        stream.get_mut().read_bulk(rest)
    } else {
        stream.read_exact(rest)
    };
    read.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ProtocolError::ConnectionClosed,
        _ => e.into(),
    })
}

/// Reads a whole frame header; `Ok(false)` when the stream ended before its first byte.
fn read_exact_or_eof<S: Read>(stream: &mut S, buf: &mut [u8]) -> Result<bool, ProtocolError> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(ProtocolError::ConnectionClosed),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupt::Interrupt;
    use crate::progress::Progress;
    use sfts_protocol::checksum::HashingWriter;
    use sfts_protocol::MultiHasher;
    use std::io::{self, Cursor};

    /// A stream that reads a prepared server script and records what the client writes.
    struct Fake {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl crate::bulk_read::BulkRead for Fake {}

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn script(messages: &[Message<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            m.encode(&mut out);
        }
        out
    }

    fn welcome() -> Message<'static> {
        Message::Welcome {
            version: 1,
            capabilities: Capabilities(Capabilities::GET),
            server: "test".into(),
        }
    }

    fn header(size: u64) -> Message<'static> {
        Message::FileHeader(FileHeader {
            size,
            offset: 0,
            length: size,
            mtime_ns: 0,
            chunk_size: 4,
        })
    }

    fn digest(alg: Algorithm, data: &[u8]) -> Digest {
        let mut h = MultiHasher::new(DigestSet::of(&[alg]));
        h.update(data);
        h.finish().remove(0)
    }

    fn request() -> Request<'static> {
        Request {
            server: "h:9000",
            remote: "dir/f.bin",
            chunk_size: 4096,
            algorithm: Algorithm::Sha256,
            timeout: Duration::from_secs(10),
        }
    }

    /// Runs a whole session against `server`; returns what the sink got and the outcome.
    fn session(server: Vec<u8>) -> (Vec<u8>, Result<(Digest, Digest), ClientError>) {
        let req = request();
        let mut s = NativeSession::new(Fake {
            input: Cursor::new(server),
            output: Vec::new(),
        });
        let welcome = match s.handshake(&req) {
            Ok(w) => w,
            Err(HandshakeError::Fatal(e)) => return (Vec::new(), Err(e)),
            Err(HandshakeError::Unavailable { message, .. }) => {
                return (Vec::new(), Err(ClientError::Usage(message)))
            }
            Err(HandshakeError::Closed) => {
                return (
                    Vec::new(),
                    Err(ClientError::Disconnected {
                        stage: "greeting",
                        reason: "closed".into(),
                    }),
                )
            }
        };
        let h = match s.request(&req, &welcome) {
            Ok(h) => h,
            Err(e) => return (Vec::new(), Err(e)),
        };
        let interrupt = Interrupt::new();
        let progress = Progress::hidden();
        let ctx = Context {
            interrupt: &interrupt,
            progress: &progress,
            timeout: req.timeout,
        };
        let mut sink = HashingWriter::new(Vec::new(), DigestSet::of(&[req.algorithm]));
        let r = s.receive(&h, req.algorithm, &mut sink, &ctx);
        let (bytes, mut ours) = sink.finish();
        let r = r
            .map(|theirs| (theirs, ours.remove(0)))
            .map_err(|st| crate::transfer::into_error(st, h.size, Kept::File("p".into())));
        (bytes, r)
    }

    #[test]
    fn good_file_in_several_chunks() {
        let data = b"hello, world!";
        let mut msgs = vec![welcome(), header(data.len() as u64)];
        msgs.extend(data.chunks(4).map(Message::Data));
        msgs.push(Message::Trailer {
            digests: vec![digest(Algorithm::Sha256, data)],
        });
        let (bytes, r) = session(script(&msgs));
        assert_eq!(bytes, data);
        let (theirs, ours) = r.unwrap();
        assert_eq!(theirs, ours);
    }

    #[test]
    fn client_opens_with_magic_hello_then_get() {
        let mut s = NativeSession::new(Fake {
            input: Cursor::new(script(&[welcome(), header(0)])),
            output: Vec::new(),
        });
        let w = s.handshake(&request()).unwrap();
        assert_eq!(w.server, "test");
        s.request(&request(), &w).unwrap();
        let out = s.into_inner().output;
        assert_eq!(out[..4], MAGIC);
        let (hello, used) = Message::decode(&out[4..]).unwrap().unwrap();
        assert!(matches!(hello, Message::Hello { version: 1, ref agent, .. } if agent == AGENT));
        let (get, _) = Message::decode(&out[4 + used..]).unwrap().unwrap();
        let Message::Get(get) = get else {
            panic!("expected Get")
        };
        assert_eq!(get.path, "dir/f.bin");
        assert_eq!(get.offset, 0);
        assert_eq!(get.length, sfts_protocol::TO_END);
        assert_eq!(get.digests, DigestSet::of(&[Algorithm::Sha256]));
    }

    #[test]
    fn empty_file() {
        let msgs = [
            welcome(),
            header(0),
            Message::Trailer {
                digests: vec![digest(Algorithm::Sha256, b"")],
            },
        ];
        let (bytes, r) = session(script(&msgs));
        assert!(bytes.is_empty());
        let (theirs, ours) = r.unwrap();
        assert_eq!(theirs, ours);
    }

    #[test]
    fn digest_mismatch_is_reported_to_the_caller() {
        let msgs = [
            welcome(),
            header(3),
            Message::Data(b"abc"),
            Message::Trailer {
                digests: vec![digest(Algorithm::Sha256, b"abd")],
            },
        ];
        let (bytes, r) = session(script(&msgs));
        assert_eq!(bytes, b"abc");
        let (theirs, ours) = r.unwrap();
        assert_ne!(theirs, ours);
        let e = crate::transfer::verify("f", &theirs, &ours, Kept::Nothing).unwrap_err();
        assert_eq!(e.exit_code(), 5);
    }

    #[test]
    fn early_eof_keeps_the_count() {
        let msgs = [welcome(), header(10), Message::Data(b"abcd")];
        let (bytes, r) = session(script(&msgs));
        assert_eq!(bytes, b"abcd");
        let e = r.unwrap_err();
        assert_eq!(e.exit_code(), 6);
        assert!(
            e.to_string()
                .starts_with("connection lost after 4 of 10 bytes"),
            "{e}"
        );
        // Cut inside a frame too.
        let mut cut = script(&[welcome(), header(10), Message::Data(b"abcdefgh")]);
        cut.truncate(cut.len() - 3);
        assert_eq!(session(cut).1.unwrap_err().exit_code(), 6);
    }

    #[test]
    fn error_frame_mid_transfer_aborts() {
        let msgs = [
            welcome(),
            header(10),
            Message::Data(b"ab"),
            Message::Error {
                code: ErrorCode::ShuttingDown,
                message: "server shutting down".into(),
            },
        ];
        let e = session(script(&msgs)).1.unwrap_err();
        assert_eq!(e.exit_code(), 6);
        assert!(e.to_string().contains("server shutting down"), "{e}");
        assert!(e.to_string().contains("after 2 of 10 bytes"), "{e}");
    }

    #[test]
    fn refusals() {
        let not_found = Message::Error {
            code: ErrorCode::NotFound,
            message: "file 'dir/f.bin' not found under the served root".into(),
        };
        let e = session(script(&[welcome(), not_found])).1.unwrap_err();
        assert_eq!(e.exit_code(), 4);
        assert_eq!(
            e.to_string(),
            "server refused 'dir/f.bin': file 'dir/f.bin' not found under the served root"
        );
        let busy = Message::Error {
            code: ErrorCode::Busy,
            message: "too many".into(),
        };
        let mut s = NativeSession::new(Fake {
            input: Cursor::new(script(&[busy])),
            output: Vec::new(),
        });
        assert!(matches!(
            s.handshake(&request()),
            Err(HandshakeError::Unavailable {
                code: ErrorCode::Busy,
                ..
            })
        ));
    }

    #[test]
    fn protocol_violations() {
        // More data than announced.
        let msgs = [welcome(), header(2), Message::Data(b"abc")];
        let e = session(script(&msgs)).1.unwrap_err();
        assert!(matches!(e, ClientError::Protocol { .. }), "{e}");
        // Trailer early.
        let msgs = [welcome(), header(2), Message::Trailer { digests: vec![] }];
        assert_eq!(session(script(&msgs)).1.unwrap_err().exit_code(), 6);
        // Trailer without our digest.
        let msgs = [welcome(), header(0), Message::Trailer { digests: vec![] }];
        let e = session(script(&msgs)).1.unwrap_err();
        assert!(e.to_string().contains("no sha256 digest"), "{e}");
        // Not a native server at all.
        let e = session(b"OK".to_vec()).1.unwrap_err();
        assert!(matches!(e, ClientError::Handshake { .. }), "{e}");
        assert!(e.to_string().contains("--protocol legacy"));
    }

    #[test]
    fn cheap_sinks_get_a_second_thread_only_for_very_large_transfers() {
        const MIB: u64 = 1 << 20;
        assert!(!Threads::Auto.two_for(MIB) && Threads::Auto.two_for(4 * MIB));
        assert!(!Threads::Hot.two_for(MIB) && Threads::Hot.two_for(4 * MIB));
        // 64 clients fetching 16 MiB each: one thread per client.
        assert!(!Threads::LargeOnly.two_for(16 * MIB));
        assert!(Threads::LargeOnly.two_for(64 * MIB) && Threads::LargeOnly.two_for(1 << 30));
        assert!(!Threads::One.two_for(1 << 40));
    }

    #[test]
    fn large_transfers_are_received_on_two_threads_with_the_same_results() {
        let data: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 251) as u8).collect();
        let mut msgs = vec![header(data.len() as u64)];
        for (i, c) in data.chunks(1 << 20).enumerate() {
            if i == 2 {
                msgs.push(Message::Data(&[])); // a keep-alive in the middle
            }
            msgs.push(Message::Data(c));
        }
        msgs.push(Message::Trailer {
            digests: vec![digest(Algorithm::Sha256, &data)],
        });
        let Message::FileHeader(h) = msgs[0].clone() else {
            unreachable!()
        };
        let run = |script_bytes: Vec<u8>| {
            let mut s = NativeSession::new(Fake {
                input: Cursor::new(script_bytes),
                output: Vec::new(),
            });
            let interrupt = Interrupt::new();
            let progress = Progress::hidden();
            let ctx = Context {
                interrupt: &interrupt,
                progress: &progress,
                timeout: Duration::from_secs(10),
            };
            let mut sink = HashingWriter::new(Vec::new(), DigestSet::of(&[Algorithm::Sha256]));
            let r = s.receive(&h, Algorithm::Sha256, &mut sink, &ctx);
            (r, sink.finish())
        };
        let (r, (bytes, ours)) = run(script(&msgs[1..]));
        assert_eq!(r.unwrap(), ours[0]);
        assert!(bytes == data);

        // The connection ends after 2 MiB: the count is kept.
        let cut = script(&msgs[1..3]);
        let (r, (bytes, _)) = run(cut);
        let stopped = r.unwrap_err();
        assert_eq!(stopped.received, 2 << 20);
        assert_eq!(bytes.len(), 2 << 20);
        assert!(matches!(stopped.cause, Stop::Lost(_)));

        // An error frame mid-way aborts.
        let mut aborted = script(&msgs[1..2]);
        aborted.extend(script(&[Message::Error {
            code: ErrorCode::ShuttingDown,
            message: "bye".into(),
        }]));
        let (r, _) = run(aborted);
        assert!(matches!(r.unwrap_err().cause, Stop::Aborted(m) if m.contains("bye")));
    }

    /// Records the size of every write.
    #[derive(Default)]
    struct Writes(Vec<usize>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn whole(size: usize) -> FileHeader {
        FileHeader {
            size: size as u64,
            offset: 0,
            length: size as u64,
            mtime_ns: 0,
            chunk_size: 1 << 20,
        }
    }

    /// Receives `server` (frames after the header `h`) into `sink` with `threads`.
    fn receive_into<W: Write>(
        server: Vec<u8>,
        h: &FileHeader,
        sink: &mut W,
        threads: Threads,
    ) -> Result<Vec<Digest>, Stopped> {
        let mut s = NativeSession::new(Fake {
            input: Cursor::new(server),
            output: Vec::new(),
        });
        let (interrupt, progress) = (Interrupt::new(), Progress::hidden());
        let ctx = Context {
            interrupt: &interrupt,
            progress: &progress,
            timeout: Duration::from_secs(10),
        };
        s.receive_all(h, sink, &ctx, threads)
    }

    #[test]
    fn the_reading_thread_hands_frames_over_in_pieces_only_for_hot_sinks() {
        let data = vec![7u8; (5 << 20) + 3];
        let mut msgs: Vec<Message<'_>> = data.chunks(1 << 20).map(Message::Data).collect();
        msgs.push(Message::Trailer { digests: vec![] });
        let h = whole(data.len());
        let run = |threads: Threads| {
            let mut sink = Writes::default();
            receive_into(script(&msgs), &h, &mut sink, threads).unwrap();
            sink.0
        };
        let pieces = run(Threads::Hot);
        assert_eq!(pieces.iter().sum::<usize>(), data.len());
        assert_eq!(pieces.len(), 5 * ((1 << 20) / PIECE) + 1, "{pieces:?}");
        assert!(pieces.iter().all(|&n| n <= PIECE));
        for threads in [Threads::Auto, Threads::LargeOnly] {
            let frames = run(threads);
            assert_eq!(frames, [1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 3]);
        }
    }

    #[test]
    fn pieces_of_a_cut_frame_are_counted_and_a_failing_sink_stops_the_reader() {
        let data: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 251) as u8).collect();
        let frames: Vec<Message<'_>> = data.chunks(1 << 20).map(Message::Data).collect();
        let h = whole(data.len());

        // The connection ends 512 KiB into the third frame: four pieces of it arrived.
        let mut cut = script(&frames);
        cut.truncate(2 * (HEADER_LEN + (1 << 20)) + HEADER_LEN + (512 << 10) + 100);
        let mut sink = Vec::new();
        let stopped = receive_into(cut, &h, &mut sink, Threads::Hot).unwrap_err();
        assert!(matches!(stopped.cause, Stop::Lost(_)), "{}", stopped.cause);
        assert_eq!(stopped.received, (2 << 20) + (512 << 10));
        assert_eq!(sink, data[..sink.len()]);
        assert_eq!(sink.len() as u64, stopped.received);

        /// Fails every write from `room` bytes on.
        struct Full {
            room: usize,
        }
        impl Write for Full {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if buf.len() > self.room {
                    return Err(io::Error::other("no space left"));
                }
                self.room -= buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        // The sink fails in the middle of the second frame; the reading thread, which may be
        // waiting to hand over a piece, stops too (the test would hang otherwise).
        let mut full = Full {
            room: (1 << 20) + (300 << 10),
        };
        let stopped = receive_into(script(&frames), &h, &mut full, Threads::Hot).unwrap_err();
        assert!(matches!(stopped.cause, Stop::Write(_)), "{}", stopped.cause);
        assert_eq!(stopped.received, (1 << 20) + (256 << 10));
    }
}
