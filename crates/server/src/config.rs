//! Command-line arguments and the checked [`Config`] built from them once at startup.

use crate::auth::AccessList;
use crate::error::ServerError;
use crate::tls::TlsConfig;
use crate::units::{parse_duration, parse_size};
use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand};
use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use tracing::level_filters::LevelFilter;

/// Port served when none is given.
pub const DEFAULT_PORT: u16 = 9000;
/// Concurrent connections served when no limit is given.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Seconds of read/write idleness before a client is dropped.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Days of transfer history kept when no other number is given.
pub const DEFAULT_HISTORY_DAYS: u32 = 30;
/// The state directory's name under `$XDG_STATE_HOME` (or `~/.local/state`).
pub const STATE_DIR_NAME: &str = "sfts-server";
/// How long an unfinished upload is kept for its client to resume it.
pub const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most entries one `List` answer carries before it says `truncated`.
pub const DEFAULT_MAX_LIST_ENTRIES: u64 = 1_000_000;
/// Concurrent connections from one address (an IPv6 /64) when no other limit is given.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 16;
/// Requests per second one address may make (bursts of twice as many).
pub const DEFAULT_RATE_LIMIT: u32 = 1000;
/// Seconds a client has for its opening (TLS handshake, magic, `Hello`, `Auth`).
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// Bytes per second a transfer must at least move, averaged over `--timeout` of waiting.
pub const DEFAULT_MIN_RATE: u64 = 1024;

/// Serves the files under a folder to SFTS clients and to clients of the original protocol,
/// on the same port, one thread per client.
#[derive(Debug, Parser)]
#[command(name = "sfts-server", version, about, long_about = None,
          args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Without a command: serve.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TCP port to listen on (0 picks any free port; the chosen one is printed).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Folder whose files are served; created if missing. Nothing outside it is ever served.
    #[arg(long, default_value = "./share")]
    pub root: PathBuf,

    /// Address to listen on [default: all interfaces, IPv4 and IPv6].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,

    /// Most clients served at once; more are told the server is busy.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub max_connections: usize,

    /// Seconds a client may stay idle (or stall a transfer) before it is dropped.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,

    /// Folder for the log file (server_YYYYMMDD_HHMMSS.log).
    #[arg(long, value_name = "DIR", default_value = "logs")]
    pub log_dir: PathBuf,

    /// Most detailed level written to the log file: error, warning, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_level)]
    pub log_level: LevelFilter,

    /// Folder for the server's database (digest cache, transfer history); must not be inside
    /// the served root [default: $XDG_STATE_HOME/sfts-server, else
    /// ~/.local/state/sfts-server].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Days of transfer history to keep (0 keeps it forever); older rows are deleted at start-up
    /// and every hour.
    #[arg(long, value_name = "DAYS", default_value_t = DEFAULT_HISTORY_DAYS,
          value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub history_days: u32,

    /// Accept uploads (put, put -r) and new directories. Without it the server is read-only
    /// and refuses every upload with a clear error.
    #[arg(long)]
    pub allow_upload: bool,

    /// With --allow-upload: never replace an existing file, even when the client asks with
    /// --force (by default --force replaces files).
    #[arg(long)]
    pub no_overwrite: bool,

    /// Largest file one upload may be, e.g. 500M, 4G, 2TiB or plain bytes; larger uploads are
    /// refused before any data is stored [default: no limit besides the free disk space].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_upload_size: Option<u64>,

    /// How long an unfinished upload is kept for its client to resume it: seconds, or a
    /// number with s, m, h or d. Older ones are deleted at start-up and while running.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub upload_ttl: Duration,

    /// Most entries one listing returns; a longer one is cut and marked as truncated.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_LIST_ENTRIES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_list_entries: u64,

    /// TLS certificate chain (PEM), with --tls-key. The main port then serves native clients
    /// over TLS only (plain clients are told to use --tls).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The TLS certificate's private key (PEM), with --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// With TLS: also listen on this port in plain TCP, for native and original-protocol
    /// clients on a trusted network (0 picks a free port). Same root, limits and tokens.
    #[arg(long, value_name = "PORT", requires = "tls_cert")]
    pub plain_port: Option<u16>,

    /// Access file (TOML) of hashed tokens and their read/write path prefixes: every native
    /// client must then present a token (sfts-client --token); the original protocol is
    /// refused. Make entries with `sfts-server token add`.
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,

    /// Most connections from one client address (IPv6: one /64) at once; more are told so.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_IP,
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub max_connections_per_ip: usize,

    /// Requests per second one client address may make, in bursts of twice as many; requests
    /// over it wait for their turn (up to a second, then they are refused as busy). A `List`
    /// of N entries lets the same connection make its next N `Get`s without counting them, so
    /// fetching a listed tree (get -r) is not slowed; each upload published lets it begin the
    /// next without counting it, so neither is sending a tree (put -r). 0: no limit.
    #[arg(long, value_name = "REQ_PER_SEC", default_value_t = DEFAULT_RATE_LIMIT)]
    pub rate_limit: u32,

    /// Seconds a new client has to complete TLS, the magic and Hello (and Auth when tokens are
    /// required), however it spaces its bytes; never more than --timeout.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_HANDSHAKE_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub handshake_timeout: u64,

    /// Slowest transfer kept, in bytes per second (e.g. 1KiB), averaged over --timeout of
    /// waiting on the client; a client reading or sending slower is dropped. 0 drops only
    /// clients that move nothing for --timeout.
    #[arg(long, value_name = "BYTES_PER_SEC", default_value = "1KiB", value_parser = parse_size)]
    pub min_rate: u64,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `sfts-server token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Makes a new token for NAME, stores its SHA-256 (never the token) in the access file,
    /// and prints the token once on standard output.
    Add {
        /// Who the token is for (shown in the server's logs and messages).
        name: String,
        /// A path prefix NAME may read (get, stat, list); repeat for several; "" or "."
        /// for everything.
        #[arg(long = "read", value_name = "PREFIX")]
        read: Vec<String>,
        /// A path prefix NAME may write (put, mkdir); repeat for several.
        #[arg(long = "write", value_name = "PREFIX")]
        write: Vec<String>,
        /// The access file (created with mode 0600 if missing).
        #[arg(long, value_name = "FILE")]
        auth_file: PathBuf,
    },
}

/// Parses a log level, accepting the original design's `warning` as well as `warn`.
pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    match s.to_ascii_lowercase().as_str() {
        "off" => Ok(LevelFilter::OFF),
        "error" => Ok(LevelFilter::ERROR),
        "warn" | "warning" => Ok(LevelFilter::WARN),
        "info" => Ok(LevelFilter::INFO),
        "debug" => Ok(LevelFilter::DEBUG),
        "trace" => Ok(LevelFilter::TRACE),
        _ => Err(format!(
            "unknown log level '{s}' (expected error, warning, info, debug or trace)"
        )),
    }
}

/// Where the state lives when `--state-dir` is not given: `$XDG_STATE_HOME/sfts-server`, else
/// `$HOME/.local/state/sfts-server`. The XDG base directory rules ignore empty and relative
/// values. `None` when neither variable helps.
pub fn default_state_dir(xdg_state_home: Option<&OsStr>, home: Option<&OsStr>) -> Option<PathBuf> {
    let usable = |v: Option<&OsStr>| {
        v.map(PathBuf::from)
            .filter(|p| !p.as_os_str().is_empty() && p.is_absolute())
    };
    if let Some(xdg) = usable(xdg_state_home) {
        return Some(xdg.join(STATE_DIR_NAME));
    }
    usable(home).map(|h| h.join(".local/state").join(STATE_DIR_NAME))
}

impl Args {
    /// The server configuration these arguments describe. Fails only when no state directory
    /// was given and none can be derived from the environment.
    pub fn config(&self) -> Result<Config, ServerError> {
        let state_dir = match &self.state_dir {
            Some(dir) => dir.clone(),
            None => default_state_dir(
                std::env::var_os("XDG_STATE_HOME").as_deref(),
                std::env::var_os("HOME").as_deref(),
            )
            .ok_or(ServerError::NoStateDir)?,
        };
        Ok(Config {
            port: self.port,
            root: self.root.clone(),
            bind: self.bind,
            max_connections: self.max_connections,
            timeout: Duration::from_secs(self.timeout),
            state_dir: Some(state_dir),
            history: match self.history_days {
                0 => None,
                days => Some(Duration::from_secs(u64::from(days) * 86_400)),
            },
            uploads: UploadPolicy {
                allow: self.allow_upload,
                overwrite: !self.no_overwrite,
                max_size: self.max_upload_size,
                ttl: self.upload_ttl,
            },
            max_list_entries: self.max_list_entries,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsConfig::load(cert, key)?),
                _ => None,
            },
            plain_port: self.plain_port,
            access: self
                .auth_file
                .as_deref()
                .map(AccessList::load)
                .transpose()?,
            max_connections_per_ip: self.max_connections_per_ip,
            rate_limit: self.rate_limit,
            handshake_timeout: Duration::from_secs(self.handshake_timeout),
            min_rate: self.min_rate,
        })
    }

    /// The logging configuration these arguments describe (the console shows INFO and above).
    pub fn log_config(&self) -> sfts_logging::LogConfig {
        sfts_logging::LogConfig {
            dir: Some(self.log_dir.clone()),
            prefix: "server",
            file_level: self.log_level,
            console_level: LevelFilter::INFO,
            // A long-lived process with bursts (a line per file of a tree): the default queue.
            buffered_lines: None,
            console_in_background: true,
        }
    }
}

/// Everything [`crate::Server::bind`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP port; 0 picks any free port.
    pub port: u16,
    /// The served folder (created if missing, canonicalised at bind time).
    pub root: PathBuf,
    /// The address to listen on; `None` for all interfaces, IPv6 and IPv4 (dual-stack).
    pub bind: Option<IpAddr>,
    /// Most connections served at once (at least 1).
    pub max_connections: usize,
    /// Read and write timeout of every client socket (non-zero).
    pub timeout: Duration,
    /// Folder of the state database (created if missing; refused inside the root). `None`
    /// keeps the state in memory: nothing survives the process (library use and tests).
    pub state_dir: Option<PathBuf>,
    /// How long transfer history is kept; `None` keeps it forever.
    pub history: Option<Duration>,
    /// Whether and how uploads are accepted.
    pub uploads: UploadPolicy,
    /// Most entries one listing returns (at least 1).
    pub max_list_entries: u64,
    /// TLS on the main port (`--tls-cert`, `--tls-key`).
    pub tls: Option<TlsConfig>,
    /// A second, plain-TCP port (`--plain-port`; only with TLS).
    pub plain_port: Option<u16>,
    /// The access list (`--auth-file`): tokens required when set.
    pub access: Option<AccessList>,
    /// Most connections from one address.
    pub max_connections_per_ip: usize,
    /// Requests per second per address (0: no limit).
    pub rate_limit: u32,
    /// Time for a client's opening (never more than `timeout`).
    pub handshake_timeout: Duration,
    /// Slowest transfer kept, bytes per second over `timeout` of waiting.
    pub min_rate: u64,
}

/// What the server accepts from uploading clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPolicy {
    /// Uploads and `Mkdir` are accepted at all (`--allow-upload`).
    pub allow: bool,
    /// An upload with `force` may replace an existing file (not `--no-overwrite`).
    pub overwrite: bool,
    /// Largest upload accepted, in bytes; `None` for no limit.
    pub max_size: Option<u64>,
    /// How long an unfinished upload is kept after its last chunk (non-zero).
    pub ttl: Duration,
}

impl Default for UploadPolicy {
    /// Read-only; the other values are those `--allow-upload` alone would give.
    fn default() -> Self {
        UploadPolicy {
            allow: false,
            overwrite: true,
            max_size: None,
            ttl: DEFAULT_UPLOAD_TTL,
        }
    }
}

impl Config {
    /// The defaults, serving `root`.
    pub fn new(root: impl Into<PathBuf>) -> Config {
        Config {
            port: DEFAULT_PORT,
            root: root.into(),
            bind: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            state_dir: None,
            history: Some(Duration::from_secs(
                u64::from(DEFAULT_HISTORY_DAYS) * 86_400,
            )),
            uploads: UploadPolicy::default(),
            max_list_entries: DEFAULT_MAX_LIST_ENTRIES,
            tls: None,
            plain_port: None,
            access: None,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            rate_limit: DEFAULT_RATE_LIMIT,
            handshake_timeout: Duration::from_secs(DEFAULT_HANDSHAKE_TIMEOUT_SECS),
            min_rate: DEFAULT_MIN_RATE,
        }
    }

    /// How long a client has for its opening: `--handshake-timeout`, never more than the
    /// idle timeout.
    pub fn opening_time(&self) -> Duration {
        self.handshake_timeout.min(self.timeout)
    }

    /// Checks the values a library caller could get wrong (the command line already
    /// range-checks them).
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.max_connections == 0 {
            return Err(ServerError::InvalidConfig(
                "the connection limit must be at least 1".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(ServerError::InvalidConfig(
                "the timeout must be longer than zero".into(),
            ));
        }
        if self.uploads.ttl.is_zero() {
            return Err(ServerError::InvalidConfig(
                "the upload time-to-live must be longer than zero".into(),
            ));
        }
        if self.max_connections_per_ip == 0 {
            return Err(ServerError::InvalidConfig(
                "the per-address connection limit must be at least 1".into(),
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(ServerError::InvalidConfig(
                "the handshake timeout must be longer than zero".into(),
            ));
        }
        if self.plain_port.is_some() && self.tls.is_none() {
            return Err(ServerError::InvalidConfig(
                "--plain-port is for servers with TLS (--tls-cert, --tls-key); without TLS the \
                 main port is plain already"
                    .into(),
            ));
        }
        if self.plain_port.is_some_and(|p| p != 0 && p == self.port) {
            return Err(ServerError::InvalidConfig(format!(
                "--plain-port {} is the main port; choose another one",
                self.port
            )));
        }
        if self.max_list_entries == 0 {
            return Err(ServerError::InvalidConfig(
                "the listing limit must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new("./share")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let a = Args::try_parse_from(["sfts-server", "--state-dir", "st"]).unwrap();
        let c = a.config().unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.root, PathBuf::from("./share"));
        assert_eq!(c.bind, None);
        assert_eq!(c.max_connections, 64);
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(a.log_dir, PathBuf::from("logs"));
        assert_eq!(a.log_level, LevelFilter::INFO);
        assert_eq!(c.state_dir, Some(PathBuf::from("st")));
        assert_eq!(c.history, Some(Duration::from_secs(30 * 86_400)));
        c.validate().unwrap();
        let forever = Args::try_parse_from(["sfts-server", "--history-days", "0"]).unwrap();
        assert_eq!(forever.history_days, 0);
        assert!(Args::try_parse_from(["sfts-server", "--history-days", "-1"]).is_err());
        // Read-only by default; uploads kept a day.
        assert_eq!(c.uploads, UploadPolicy::default());
        assert!(!c.uploads.allow);
        assert_eq!(c.uploads.ttl, Duration::from_secs(86_400));
        assert_eq!(c.uploads.max_size, None);
        assert_eq!(c.max_list_entries, DEFAULT_MAX_LIST_ENTRIES);
        // Limits.
        assert_eq!(c.max_connections_per_ip, 16);
        assert_eq!(c.rate_limit, 1000);
        assert_eq!(c.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.min_rate, 1024);
        assert!(c.tls.is_none() && c.access.is_none() && c.plain_port.is_none());
        assert!(a.command.is_none());
    }

    #[test]
    fn security_options_and_the_token_command() {
        let a = Args::try_parse_from([
            "sfts-server",
            "--max-connections-per-ip",
            "3",
            "--rate-limit",
            "0",
            "--handshake-timeout",
            "60",
            "--timeout",
            "5",
            "--min-rate",
            "8K",
        ])
        .unwrap();
        let c = a.config().unwrap();
        assert_eq!(c.max_connections_per_ip, 3);
        assert_eq!(c.rate_limit, 0);
        assert_eq!(c.min_rate, 8 * 1024);
        assert_eq!(
            c.opening_time(),
            Duration::from_secs(5),
            "never past --timeout"
        );
        for bad in [
            &["--tls-cert", "c.pem"][..],
            &["--tls-key", "k.pem"],
            &["--plain-port", "9001"],
            &["--max-connections-per-ip", "0"],
            &["--handshake-timeout", "0"],
            &["--port", "1", "token", "add", "x", "--auth-file", "f"],
            &["token", "add", "x"],
        ] {
            let argv = std::iter::once("sfts-server").chain(bad.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?} accepted");
        }
        let t = Args::try_parse_from([
            "sfts-server",
            "token",
            "add",
            "alice",
            "--read",
            "pub",
            "--read",
            "team/a",
            "--write",
            "in/alice",
            "--auth-file",
            "access.toml",
        ])
        .unwrap();
        match t.command {
            Some(Command::Token(TokenCommand::Add {
                name,
                read,
                write,
                auth_file,
            })) => {
                assert_eq!(name, "alice");
                assert_eq!(read, ["pub", "team/a"]);
                assert_eq!(write, ["in/alice"]);
                assert_eq!(auth_file, PathBuf::from("access.toml"));
            }
            other => panic!("{other:?}"),
        }
        // Unreadable TLS and access files are start-up errors that name the file.
        let a = Args::try_parse_from([
            "sfts-server",
            "--state-dir",
            "st",
            "--tls-cert",
            "/no/cert.pem",
            "--tls-key",
            "/no/key.pem",
        ])
        .unwrap();
        let e = a.config().unwrap_err().to_string();
        assert!(e.contains("/no/cert.pem"), "{e}");
        let a = Args::try_parse_from(["sfts-server", "--state-dir", "st", "--auth-file", "/no/a"])
            .unwrap();
        let e = a.config().unwrap_err().to_string();
        assert!(e.contains("/no/a"), "{e}");
    }

    #[test]
    fn upload_options() {
        let a = Args::try_parse_from([
            "sfts-server",
            "--state-dir",
            "st",
            "--allow-upload",
            "--no-overwrite",
            "--max-upload-size",
            "1MiB",
            "--upload-ttl",
            "90m",
            "--max-list-entries",
            "10",
        ])
        .unwrap();
        let c = a.config().unwrap();
        assert_eq!(
            c.uploads,
            UploadPolicy {
                allow: true,
                overwrite: false,
                max_size: Some(1 << 20),
                ttl: Duration::from_secs(5400),
            }
        );
        assert_eq!(c.max_list_entries, 10);
        let secs = Args::try_parse_from(["sfts-server", "--upload-ttl", "3600"]).unwrap();
        assert_eq!(secs.upload_ttl, Duration::from_secs(3600));
        for bad in [
            &["--max-upload-size", "lots"][..],
            &["--upload-ttl", "0"],
            &["--upload-ttl", "1w"],
            &["--max-list-entries", "0"],
        ] {
            let argv = std::iter::once("sfts-server").chain(bad.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?} accepted");
        }
        let mut c = Config::new("x");
        c.uploads.ttl = Duration::ZERO;
        assert!(c.validate().is_err());
    }

    #[test]
    fn state_dir_defaults_follow_xdg() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(
            default_state_dir(os("/x/state"), os("/home/u")),
            Some(PathBuf::from("/x/state/sfts-server"))
        );
        for ignored in [None, os(""), os("relative/state")] {
            assert_eq!(
                default_state_dir(ignored, os("/home/u")),
                Some(PathBuf::from("/home/u/.local/state/sfts-server"))
            );
        }
        assert_eq!(default_state_dir(None, None), None);
        assert_eq!(default_state_dir(os(""), os("")), None);
    }

    #[test]
    fn explicit_values_and_bad_ones() {
        let a = Args::try_parse_from([
            "sfts-server",
            "--port",
            "0",
            "--bind",
            "::1",
            "--max-connections",
            "2",
            "--timeout",
            "5",
            "--log-level",
            "WARNING",
        ])
        .unwrap();
        assert_eq!(a.bind, Some("::1".parse().unwrap()));
        assert_eq!(a.max_connections, 2);
        assert_eq!(a.log_level, LevelFilter::WARN);
        for bad in [
            &["--max-connections", "0"][..],
            &["--timeout", "0"],
            &["--bind", "nowhere"],
            &["--log-level", "loud"],
            &["--port", "70000"],
        ] {
            let argv = std::iter::once("sfts-server").chain(bad.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?} accepted");
        }
        let mut c = Config::new("x");
        c.max_connections = 0;
        assert!(c.validate().is_err());
    }
}
