//! Command-line arguments and the checked [`Config`] built from them once at startup.

use crate::error::ServerError;
use clap::builder::TypedValueParser;
use clap::Parser;
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

/// Serves the files under a folder to SFTS clients and to clients of the original protocol,
/// on the same port, one thread per client.
#[derive(Debug, Parser)]
#[command(name = "sfts-server", version, about, long_about = None)]
pub struct Args {
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

impl Args {
    /// The server configuration these arguments describe.
    pub fn config(&self) -> Config {
        Config {
            port: self.port,
            root: self.root.clone(),
            bind: self.bind,
            max_connections: self.max_connections,
            timeout: Duration::from_secs(self.timeout),
        }
    }

    /// The logging configuration these arguments describe (the console shows INFO and above).
    pub fn log_config(&self) -> sfts_logging::LogConfig {
        sfts_logging::LogConfig {
            dir: Some(self.log_dir.clone()),
            prefix: "server",
            file_level: self.log_level,
            console_level: LevelFilter::INFO,
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
        }
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
        let a = Args::try_parse_from(["sfts-server"]).unwrap();
        let c = a.config();
        assert_eq!(c.port, 9000);
        assert_eq!(c.root, PathBuf::from("./share"));
        assert_eq!(c.bind, None);
        assert_eq!(c.max_connections, 64);
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(a.log_dir, PathBuf::from("logs"));
        assert_eq!(a.log_level, LevelFilter::INFO);
        c.validate().unwrap();
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
