//! The one error type of the server crate.
//!
//! Startup problems (bad root, port in use, log directory, state database) end the process with exit code 1;
//! the per-connection variants only ever end one worker, which logs them.

use sfts_protocol::ProtocolError;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong in the server, at startup or inside one connection.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration makes no sense (a zero connection limit, a zero timeout, ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// The served root exists but is a file (or something else that is not a directory).
    #[error("served root '{}' exists but is not a directory", path.display())]
    RootNotADirectory {
        /// The root as given on the command line.
        path: PathBuf,
    },

    /// The served root did not exist and could not be created.
    #[error("cannot create served root '{}': {source}", path.display())]
    RootCreate {
        /// The root as given on the command line.
        path: PathBuf,
        /// Why creating it failed.
        source: io::Error,
    },

    /// The served root exists but could not be inspected or canonicalised.
    #[error("cannot access served root '{}': {source}", path.display())]
    RootAccess {
        /// The root as given on the command line.
        path: PathBuf,
        /// Why looking at it failed.
        source: io::Error,
    },

    /// The listening socket could not be created, bound or put into listening mode.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address we tried to listen on.
        addr: SocketAddr,
        /// Why it failed (most often: address already in use).
        source: io::Error,
    },

    /// No `--state-dir` was given and neither `XDG_STATE_HOME` nor `HOME` says where the
    /// default one is.
    #[error(
        "no folder for the server's state (digest cache, history): XDG_STATE_HOME and HOME are \
         both unset; pass --state-dir DIR"
    )]
    NoStateDir,

    /// The state directory would be inside the served root, where clients could download (and
    /// a careless sync could overwrite) the database.
    #[error(
        "the state directory '{}' is inside the served root '{}', where clients could download \
         it; choose a --state-dir outside the root",
        dir.display(), root.display()
    )]
    StateInsideRoot {
        /// The state directory as given.
        dir: PathBuf,
        /// The canonical served root.
        root: PathBuf,
    },

    /// The state directory could not be inspected.
    #[error("cannot use the state directory '{}': {source}", dir.display())]
    StateDir {
        /// The state directory as given.
        dir: PathBuf,
        /// Why looking at it failed.
        source: io::Error,
    },

    /// The staging directory of uploads (`<root>/.sfts-upload`) could not be created.
    #[error(
        "cannot create the upload staging directory '{}': {source} (is the served root \
         writable? uploads need it)",
        dir.display()
    )]
    StagingDir {
        /// The staging directory.
        dir: PathBuf,
        /// Why creating it failed.
        source: io::Error,
    },

    /// The access file (`--auth-file`) could not be read, is not valid, or could not be
    /// written by `token add`.
    #[error("access file '{}': {detail}", path.display())]
    AuthFile {
        /// The access file.
        path: PathBuf,
        /// What is wrong, in words.
        detail: String,
    },

    /// The TLS certificate or key (`--tls-cert`, `--tls-key`) could not be read or do not
    /// belong together.
    #[error("TLS: '{}': {detail}", path.display())]
    Tls {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong, in words.
        detail: String,
    },

    /// The state database could not be opened: unwritable, corrupt, or from a newer server.
    #[error(transparent)]
    State(#[from] sfts_state::StateError),

    /// Logging could not be set up (typically: the log directory is not writable).
    #[error(transparent)]
    Logging(#[from] sfts_logging::LogError),

    /// The Ctrl-C / SIGTERM handler could not be installed.
    #[error("cannot install the Ctrl-C / SIGTERM handler: {0}")]
    Signal(#[from] ctrlc::Error),

    /// A client sent bytes that are not a valid request at this point, or its stream failed
    /// while a message was being read.
    #[error("{0}")]
    Protocol(#[from] ProtocolError),

    /// A client sent a request that is not valid at this point of the conversation; it was
    /// told so and the connection was closed.
    #[error("bad request from the client: {0}")]
    BadRequest(String),

    /// A client sent nothing for longer than the configured timeout.
    #[error("client sent nothing for {0} s; connection dropped")]
    Idle(u64),

    /// Reading from or writing to a client failed (it went away, stalled past the timeout, or
    /// the connection was closed by the shutdown).
    #[error("connection to the client failed: {0}")]
    Peer(#[source] io::Error),

    /// A file being served could not be read part-way through.
    #[error("cannot read '{name}': {source}")]
    FileRead {
        /// The path as the client asked for it.
        name: String,
        /// The underlying error.
        source: io::Error,
    },

    /// A file became shorter than the size already announced to the client, or its size,
    /// modification or change time moved while it was being sent.
    #[error("file '{name}' changed while it was being sent; try again")]
    FileChanged {
        /// The path as the client asked for it.
        name: String,
    },

    /// The server began shutting down while this connection was being served.
    #[error("server is shutting down")]
    ShuttingDown,

    /// Any other I/O error (for example while starting a thread).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl ServerError {
    /// Wraps an I/O error on the client's socket. A socket timeout surfaces as `WouldBlock`
    /// ("resource temporarily unavailable") on Unix, which says nothing useful in a log, so
    /// timeouts are reworded.
    pub fn peer(e: io::Error) -> ServerError {
        // Our own clocks (crate::link) say which one ran out.
        if crate::link::stall_of(&e).is_some() {
            return ServerError::Peer(e);
        }
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            return ServerError::Peer(io::Error::new(
                io::ErrorKind::TimedOut,
                "timed out: the client stopped reading or sending",
            ));
        }
        ServerError::Peer(e)
    }
}
