//! The one error type of the state crate.

use std::path::PathBuf;

/// Why the state database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state directory could not be created.
    #[error("cannot create the state directory '{dir}': {source}")]
    Dir {
        /// The directory asked for.
        dir: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The database could not be opened, is not an SQLite database, failed its integrity
    /// check, or is read-only.
    #[error("cannot use the state database '{path}': {source} (move the file aside to start with an empty state)")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },

    /// The integrity check found damage.
    #[error("the state database is damaged: {0}")]
    Corrupt(String),

    /// A statement failed while the server was running.
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
}
