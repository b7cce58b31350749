//! Logging set-up shared by `sfts-server` and `sfts-client`.
//!
//! Every line, on the console and in the file, has the format of the original design:
//!
//! ```text
//! YYYY-MM-DD HH:MM:SS - ThreadName - LEVEL - Message
//! ```
//!
//! with local time, the thread's name (`main`, `client-17`, ...) and the level spelt `DEBUG`,
//! `INFO`, `WARNING` or `ERROR`. A line is formatted once for both outputs. The file is
//! `<dir>/<prefix>_YYYYMMDD_HHMMSS.log`, written by a background thread in batches so logging
//! never blocks a transfer; keep the returned [`LogGuard`] alive until exit so the last lines
//! are flushed. The console is standard error, so standard output
//! stays free for data and machine-readable output.

mod background;
mod format;

pub use background::{Background, BackgroundGuard, FLUSH_WAIT, GATHER};
pub use format::SftsFormat;

use std::io;
use std::path::{Path, PathBuf};
use tracing::level_filters::LevelFilter;
use tracing::Metadata;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt, OptionalWriter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, Layer};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log directory could not be created or the file not opened.
    #[error("cannot write logs to '{dir}': {source}")]
    Dir {
        /// The directory asked for.
        dir: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The background writer's thread could not be started.
    #[error("cannot start the log writer thread: {source}")]
    Thread {
        /// The underlying error.
        source: io::Error,
    },
    /// A global logger was already installed in this process.
    #[error("logging was already initialised in this process")]
    AlreadyInitialised,
}

/// What to log where.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Directory for the log file; `None` logs to the console only.
    pub dir: Option<PathBuf>,
    /// File name prefix: `server` or `client`.
    pub prefix: &'static str,
    /// Most detailed level written to the file.
    pub file_level: LevelFilter,
    /// Most detailed level written to standard error (`OFF` for none).
    pub console_level: LevelFilter,
    /// Lines the background file writer may hold; `None`: 128,000, lines beyond it dropped
    /// (the queue holds about the last 50 ms of lines while the output keeps up: a burst is
    /// written at once). The queue's memory is written when it is made,
    /// 32 bytes a line: 4 MiB, about 4 ms of page faults, for the default. `Some(n)`: `n`
    /// lines, and a full queue makes the logging thread wait instead of dropping lines.
    pub buffered_lines: Option<usize>,
    /// Write the console's lines from a background thread, a burst at a time, as the file's
    /// are (so they show up about 50 ms late, later only if the console is slower than the
    /// lines come):
    /// a burst of lines (one per file of a tree) then costs the logging thread no `write`
    /// to standard error, and a console that does not keep up never holds up the work (its
    /// lines wait in the queue; past a full default queue they are dropped from the console
    /// only). For long-lived servers; a client drawing a progress bar on the same terminal
    /// keeps its console lines in step with the bar by writing them itself.
    pub console_in_background: bool,
}

/// A bounded queue for short-lived programs such as the client, which log a few lines:
/// [`LogConfig::buffered_lines`].
pub const SMALL_QUEUE: usize = 4096;

/// Keeps the background log writers alive; dropping it flushes them.
pub struct LogGuard {
    _workers: Vec<BackgroundGuard>,
    path: Option<PathBuf>,
}

impl LogGuard {
    /// The log file being written, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// The log file name for `prefix` at the current local time.
pub fn file_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}.log",
        chrono::Local::now().format("%Y%m%d_%H%M%S")
    )
}

/// Installs the global logger described by `config`.
///
/// Each event is formatted once and the line handed to the file and the console writers that
/// take its level. The file's writer runs on a background thread and writes lines in batches
/// ([`BATCH_BYTES`]); so does the console's with [`LogConfig::console_in_background`].
pub fn init(config: &LogConfig) -> Result<LogGuard, LogError> {
    let mut workers = Vec::new();
    let console = if config.console_in_background {
        let (writer, guard) = background::background(io::stderr(), config.buffered_lines)
            .map_err(|source| LogError::Thread { source })?;
        workers.push(guard);
        BoxMakeWriter::new(writer)
    } else {
        BoxMakeWriter::new(io::stderr)
    };
    let console = UpTo {
        inner: console,
        max: config.console_level,
    };

    let (writer, level, path) = match &config.dir {
        Some(dir) => {
            let err = |source| LogError::Dir {
                dir: dir.clone(),
                source,
            };
            let name = file_name(config.prefix);
            let path = dir.join(&name);
            // Created (with its directory) and appended to; one file, never rotated.
            let file = tracing_appender::rolling::RollingFileAppender::builder()
                .rotation(tracing_appender::rolling::Rotation::NEVER)
                .filename_prefix(name.trim_end_matches(".log"))
                .filename_suffix("log")
                .build(dir)
                .map_err(|e| err(io::Error::other(e.to_string())))?;
            let (writer, guard) = background::background(file, config.buffered_lines)
                .map_err(|source| LogError::Thread { source })?;
            workers.push(guard);
            let file = UpTo {
                inner: writer,
                max: config.file_level,
            };
            let level = config.file_level.max(config.console_level);
            (BoxMakeWriter::new(file.and(console)), level, Some(path))
        }
        None => (BoxMakeWriter::new(console), config.console_level, None),
    };

    let layer = fmt::layer()
        .event_format(SftsFormat)
        .with_writer(writer)
        .with_ansi(false)
        .with_filter(level);
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .map_err(|_| LogError::AlreadyInitialised)?;
    Ok(LogGuard {
        _workers: workers,
        path,
    })
}

/// A writer that takes the events of `max` and less detailed levels only.
struct UpTo<M> {
    inner: M,
    max: LevelFilter,
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for UpTo<M> {
    type Writer = OptionalWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OptionalWriter::some(self.inner.make_writer())
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        if *meta.level() <= self.max {
            OptionalWriter::some(self.inner.make_writer_for(meta))
        } else {
            OptionalWriter::none()
        }
    }
}
