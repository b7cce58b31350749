//! Logging set-up shared by `sfts-server` and `sfts-client`.
//!
//! Every line, on the console and in the file, has the format of the original design:
//!
//! ```text
//! YYYY-MM-DD HH:MM:SS - ThreadName - LEVEL - Message
//! ```
//!
//! with local time, the thread's name (`main`, `client-17`, ...) and the level spelt `DEBUG`,
//! `INFO`, `WARNING` or `ERROR`. The file is `<dir>/<prefix>_YYYYMMDD_HHMMSS.log`, written by a
//! background thread so logging never blocks a transfer; keep the returned [`LogGuard`] alive
//! until exit so the last lines are flushed. The console is standard error, so standard output
//! stays free for data and machine-readable output.

mod format;

pub use format::SftsFormat;

use std::io;
use std::path::{Path, PathBuf};
use tracing::level_filters::LevelFilter;
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
    /// Lines the background file writer may hold; `None`: the `tracing-appender` default
    /// (128,000, lines beyond it dropped). The queue's memory is written when it is made,
    /// 32 bytes a line: 4 MiB, about 4 ms of page faults, for the default. `Some(n)`: `n`
    /// lines, and a full queue makes the logging thread wait instead of dropping lines.
    pub buffered_lines: Option<usize>,
}

/// A bounded queue for short-lived programs such as the client, which log a few lines:
/// [`LogConfig::buffered_lines`].
pub const SMALL_QUEUE: usize = 4096;

/// Keeps the background log writer alive; dropping it flushes the file.
pub struct LogGuard {
    _file: Option<tracing_appender::non_blocking::WorkerGuard>,
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
pub fn init(config: &LogConfig) -> Result<LogGuard, LogError> {
    let console = fmt::layer()
        .event_format(SftsFormat)
        .with_writer(io::stderr)
        .with_filter(config.console_level);

    let (file_layer, guard, path) = match &config.dir {
        Some(dir) => {
            let err = |source| LogError::Dir {
                dir: dir.clone(),
                source,
            };
            std::fs::create_dir_all(dir).map_err(err)?;
            let name = file_name(config.prefix);
            let path = dir.join(&name);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(err)?;
            let (writer, guard) = match config.buffered_lines {
                None => tracing_appender::non_blocking(file),
                Some(lines) => tracing_appender::non_blocking::NonBlockingBuilder::default()
                    .buffered_lines_limit(lines)
                    .lossy(false)
                    .finish(file),
            };
            let layer = fmt::layer()
                .event_format(SftsFormat)
                .with_writer(writer)
                .with_ansi(false)
                .with_filter(config.file_level);
            (Some(layer), Some(guard), Some(path))
        }
        None => (None, None, None),
    };

    tracing_subscriber::registry()
        .with(console)
        .with(file_layer)
        .try_init()
        .map_err(|_| LogError::AlreadyInitialised)?;
    Ok(LogGuard { _file: guard, path })
}
