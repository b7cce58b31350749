//! The command line (clap derive: the `///` comments are the help text) and the step from raw
//! arguments to a checked [`GetOptions`].

use crate::address::Address;
use crate::error::{ClientError, EXIT_CODES_HELP};
use crate::output::OutputSpec;
use crate::size::parse_chunk_size;
use crate::tls::TlsChoice;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sfts_protocol::{Algorithm, Priority};
use std::path::PathBuf;
use std::time::Duration;

/// SFTS client: fetches files from an SFTS server, or from a server of the original design,
/// and verifies them.
#[derive(Debug, Parser)]
#[command(name = "sfts-client", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Options for every command.
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Options accepted before or after the command.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Show no progress bar and no summary (the digest line is still printed)
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Log every step on the console (INFO), not only warnings
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Directory for the log file client_YYYYMMDD_HHMMSS.log
    #[arg(long, global = true, value_name = "DIR", default_value = "logs")]
    pub log_dir: PathBuf,

    /// Speak TLS to the server (native protocol), checking its certificate and name
    #[arg(long, global = true, env = "SFTS_TLS")]
    pub tls: bool,

    /// With --tls: trust the CA certificate(s) in this PEM file [default: the system's roots]
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// With --tls: do NOT check the server's certificate (encrypted, but anyone on the path
    /// can pose as the server). For tests only
    #[arg(long, global = true)]
    pub insecure: bool,

    /// Access token for servers that require authentication
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "SFTS_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Server to use when the command names none: HOST:PORT
    #[arg(long, global = true, value_name = "HOST:PORT", env = "SFTS_SERVER")]
    pub server: Option<Address>,

    /// Connection retries after the first attempt, waiting 1, 2, 4, ... s (at most 32 s)
    #[arg(long, global = true, value_name = "N", default_value_t = 5)]
    pub retries: u32,

    /// Reconnections in a row, without a byte of progress, after the connection dropped or
    /// stalled mid-transfer (the first at once, then after 1, 2, 4, ... s)
    #[arg(
        long,
        global = true,
        value_name = "N",
        default_value_t = 10,
        env = "SFTS_MAX_RETRIES"
    )]
    pub max_retries: u32,

    /// Seconds allowed for each connection attempt and for each read or write of the transfer
    #[arg(long, global = true, value_name = "SECS", default_value = "10",
          value_parser = parse_timeout, env = "SFTS_TIMEOUT")]
    pub timeout: Duration,

    /// Data chunk size to ask for, in bytes or with a K, M, KiB or MiB suffix (4K to 16M)
    #[arg(long, global = true, value_name = "BYTES", default_value = "1MiB",
          value_parser = parse_chunk_size, env = "SFTS_CHUNK_SIZE")]
    pub chunk_size: u32,
}

impl GlobalArgs {
    /// The TLS settings, checked: `--ca` and `--insecure` only make sense with `--tls`.
    pub fn tls_choice(&self) -> Result<TlsChoice, ClientError> {
        if !self.tls && (self.ca.is_some() || self.insecure) {
            return Err(ClientError::Usage(
                "--ca and --insecure apply to TLS connections; add --tls".into(),
            ));
        }
        if self.insecure && self.ca.is_some() {
            return Err(ClientError::Usage(
                "--insecure checks no certificate, so --ca would be ignored; choose one".into(),
            ));
        }
        Ok(TlsChoice {
            enabled: self.tls,
            ca: self.ca.clone(),
            insecure: self.insecure,
        })
    }

    /// Splits `[HOST:PORT] REST...` positionals: with `max` values the first is the server,
    /// with fewer the server comes from `--server` / `SFTS_SERVER`.
    pub fn split_server(
        &self,
        mut positionals: Vec<String>,
        max: usize,
    ) -> Result<(Address, Vec<String>), ClientError> {
        if positionals.len() == max {
            let first = positionals.remove(0);
            let server = first.parse::<Address>().map_err(|e| {
                ClientError::Usage(format!("invalid server address '{first}': {e}"))
            })?;
            return Ok((server, positionals));
        }
        match &self.server {
            Some(server) => Ok((server.clone(), positionals)),
            None => Err(ClientError::Usage(
                "no server given: name it first (HOST:PORT), or with --server or SFTS_SERVER"
                    .into(),
            )),
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download a file, verify its digest, and print `<digest>  <output>`
    #[command(after_help = EXIT_CODES_HELP)]
    Get(GetArgs),

    /// Upload a file (or a tree with -r), resumable, every chunk verified by the server
    #[command(after_help = PUT_HELP)]
    Put(PutArgs),

    /// List a remote directory: type, size, modification time, name
    #[command(after_help = EXIT_CODES_HELP)]
    List(ListArgs),

    /// Show a remote file's type, size, modification time, SHA-256 and MD5
    #[command(after_help = EXIT_CODES_HELP)]
    Stat(StatArgs),

    /// Check a local file against a digest, or against a remote file without transferring it
    #[command(after_help = VERIFY_HELP)]
    Verify(VerifyArgs),
}

/// Extra help of `put`.
pub const PUT_HELP: &str = "\
Arguments: [HOST:PORT] LOCAL [REMOTE]. With two arguments and --server / SFTS_SERVER set, they
are LOCAL REMOTE when the first one exists locally, else HOST:PORT LOCAL. REMOTE defaults to
LOCAL's base name in the served root.

An interrupted upload resumes when the same command is run again: the server keeps the chunks
it received and only the missing ones are sent (--no-resume starts over).

Exit codes: 0 uploaded and verified, 1 local error, 2 usage error, 3 cannot connect, 4 refused
(read-only server, exists without --force, too large, unsafe name, ...), 5 the server's digest
differs, 6 transfer failed, 130 interrupted (rerun to resume).";

/// A transfer priority on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PriorityArg {
    High,
    Normal,
    Low,
}

impl From<PriorityArg> for Priority {
    fn from(p: PriorityArg) -> Priority {
        match p {
            PriorityArg::High => Priority::High,
            PriorityArg::Normal => Priority::Normal,
            PriorityArg::Low => Priority::Low,
        }
    }
}

/// Arguments of `put`.
#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    /// [HOST:PORT] LOCAL [REMOTE] (see below)
    #[arg(value_name = "[HOST:PORT] LOCAL [REMOTE]", num_args = 1..=3, required = true)]
    pub args: Vec<String>,

    /// Upload the directory LOCAL and everything below it
    #[arg(short, long)]
    pub recursive: bool,

    /// Replace an existing remote file (where the server allows it)
    #[arg(long)]
    pub force: bool,

    /// Discard what the server holds of an earlier attempt and send everything again
    #[arg(long)]
    pub no_resume: bool,

    /// Transfer priority, recorded by the server (high, normal, low)
    #[arg(long, value_enum, value_name = "PRIORITY")]
    pub priority: Option<PriorityArg>,

    /// Print one JSON object at the end instead of the digest line
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// [HOST:PORT] [DIR]: the server (or --server / SFTS_SERVER) and the directory [default:
    /// the served root]. A lone argument is the server unless --server / SFTS_SERVER is set
    /// and it has no ':'.
    #[arg(value_name = "[HOST:PORT] [DIR]", num_args = 0..=2)]
    pub args: Vec<String>,

    /// Everything below DIR, as relative paths
    #[arg(short, long)]
    pub recursive: bool,

    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// Extra help of `verify`.
pub const VERIFY_HELP: &str = "\
Examples:
  sfts-client verify big.iso --checksum 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  sfts-client verify big.iso server:9000 isos/big.iso

Exit codes: 0 the digests match, 5 they differ; others as for get.";

/// Arguments of `stat`.
#[derive(Debug, Clone, Args)]
pub struct StatArgs {
    /// [HOST:PORT] PATH: the server (or --server / SFTS_SERVER) and the path on it
    #[arg(value_name = "[HOST:PORT] PATH", num_args = 1..=2, required = true)]
    pub args: Vec<String>,

    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The local file
    #[arg(value_name = "LOCAL")]
    pub local: PathBuf,

    /// [HOST:PORT] REMOTE: the remote file to compare with (not with --checksum)
    #[arg(value_name = "[HOST:PORT] REMOTE", num_args = 0..=2)]
    pub remote: Vec<String>,

    /// The expected digest in hex (64 digits: SHA-256; 32: MD5 or XXH128, whichever matches)
    #[arg(long, value_name = "HEX")]
    pub checksum: Option<String>,

    /// The algorithm [default: from the length of --checksum, else sha256]
    #[arg(long, value_enum, value_name = "ALGORITHM")]
    pub algo: Option<Checksum>,

    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// The protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// The SFTS protocol (versioned, typed errors, SHA-256 or MD5)
    Native,
    /// The protocol of the original design (MD5 only), for servers of that design
    Legacy,
}

/// A digest algorithm on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Checksum {
    // No doc comments here: they would turn the help's "[possible values: sha256, md5]" into
    // a long list.
    Sha256,
    Md5,
    Blake3,
    #[value(alias = "xxh3", alias = "xxh3-128")]
    Xxh128,
}

impl From<Checksum> for Algorithm {
    fn from(c: Checksum) -> Algorithm {
        match c {
            Checksum::Sha256 => Algorithm::Sha256,
            Checksum::Md5 => Algorithm::Md5,
            Checksum::Blake3 => Algorithm::Blake3,
            Checksum::Xxh128 => Algorithm::Xxh128,
        }
    }
}

/// Arguments of `get`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// [HOST:PORT] REMOTE: the server (HOST:PORT, 1.2.3.4:PORT or [::1]:PORT, port 9000 when
    /// omitted; or --server / SFTS_SERVER) and the file's path relative to its served root
    #[arg(value_name = "[HOST:PORT] REMOTE", num_args = 1..=2, required = true)]
    pub args: Vec<String>,

    /// Save as PATH (into PATH if it is a directory; '-' writes the data to standard output)
    /// [default: the remote file's base name in the current directory]
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Digest to verify with [default: sha256; md5 with --protocol legacy]. blake3 is
    /// cryptographic and several times faster than sha256; xxh128 (alias xxh3) is the fastest
    /// and catches any accidental corruption, not a deliberate forgery; both on servers that
    /// offer them
    #[arg(long, value_enum, value_name = "ALGORITHM")]
    pub checksum: Option<Checksum>,

    /// Protocol to speak
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,

    /// Download the directory REMOTE and everything below it (into -o DIR, default: its base
    /// name)
    #[arg(short, long)]
    pub recursive: bool,

    /// Transfer priority, recorded by the server (high, normal, low)
    #[arg(long, value_enum, value_name = "PRIORITY")]
    pub priority: Option<PriorityArg>,

    /// Overwrite the output file if it exists
    #[arg(long)]
    pub force: bool,

    /// Discard any partial download of this file and start from the first byte
    /// [default: an interrupted download is resumed]
    #[arg(long)]
    pub no_resume: bool,

    /// Print one JSON object on standard output at the end (the summary, or the error)
    /// instead of the digest line
    #[arg(long)]
    pub json: bool,
}

/// Parses `--timeout`: positive seconds, fractions allowed.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "timeout must be above 0 and at most 86400 s, not {text}"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A checked `get` request.
#[derive(Debug, Clone)]
pub struct GetOptions {
    /// Where the server is.
    pub server: Address,
    /// The file on the server.
    pub remote: String,
    /// Where the bytes go.
    pub output: OutputSpec,
    /// The digest to verify with.
    pub algorithm: Algorithm,
    /// The protocol to speak.
    pub protocol: Protocol,
    /// Retries after the first connection attempt.
    pub retries: u32,
    /// Connect timeout and socket read/write timeout.
    pub timeout: Duration,
    /// Data chunk size.
    pub chunk_size: u32,
    /// Overwrite an existing target.
    pub force: bool,
    /// No progress bar, no summary.
    pub quiet: bool,
    /// Start over even if a partial download exists.
    pub no_resume: bool,
    /// Reconnections in a row after a mid-transfer drop.
    pub max_retries: u32,
    /// Machine-readable summary.
    pub json: bool,
    /// Transfer priority.
    pub priority: Option<Priority>,
    /// A whole directory.
    pub recursive: bool,
    /// TLS settings.
    pub tls: TlsChoice,
    /// Access token.
    pub token: Option<String>,
}

impl GetOptions {
    /// Checks what clap cannot: option combinations and the remote path.
    pub fn from_args(args: GetArgs, global: &GlobalArgs) -> Result<GetOptions, ClientError> {
        let algorithm = match (args.protocol, args.checksum) {
            (Protocol::Legacy, Some(Checksum::Sha256 | Checksum::Blake3 | Checksum::Xxh128)) => {
                return Err(ClientError::Usage(
                    "the original protocol only carries MD5; use --checksum md5".into(),
                ))
            }
            (Protocol::Legacy, _) if global.tls || global.token.is_some() => {
                return Err(ClientError::Usage(
                    "the original protocol has no TLS and no authentication; drop --tls and \
                     --token, or use the native protocol"
                        .into(),
                ))
            }
            (Protocol::Legacy, _) if args.recursive => {
                return Err(ClientError::Usage(
                    "the original protocol cannot list directories; get -r needs the native \
                     protocol"
                        .into(),
                ))
            }
            (Protocol::Legacy, _) => Algorithm::Md5,
            (Protocol::Native, c) => c.map_or(Algorithm::Sha256, Algorithm::from),
        };
        let (server, rest) = global.split_server(args.args, 2)?;
        let remote = rest.into_iter().next().unwrap_or_default();
        if remote.is_empty() {
            return Err(ClientError::Usage("the remote path is empty".into()));
        }
        let output = match args.output {
            None => OutputSpec::Default,
            Some(p) if p.as_os_str() == "-" => OutputSpec::Stdout,
            Some(p) => OutputSpec::Path(p),
        };
        Ok(GetOptions {
            server,
            remote,
            output,
            algorithm,
            protocol: args.protocol,
            retries: global.retries,
            timeout: global.timeout,
            chunk_size: global.chunk_size,
            force: args.force,
            quiet: global.quiet,
            no_resume: args.no_resume,
            max_retries: global.max_retries,
            json: args.json,
            priority: args.priority.map(Priority::from),
            recursive: args.recursive,
            tls: global.tls_choice()?,
            token: global.token.clone(),
        })
    }

    /// Options to reach `path` on `server` for a command that transfers no file (stat,
    /// verify): the same connection settings, nothing written.
    pub fn for_path(server: Address, path: String, global: &GlobalArgs) -> GetOptions {
        GetOptions {
            server,
            remote: path,
            output: OutputSpec::Stdout,
            algorithm: Algorithm::Sha256,
            protocol: Protocol::Native,
            retries: global.retries,
            timeout: global.timeout,
            chunk_size: global.chunk_size,
            force: false,
            quiet: true,
            no_resume: true,
            max_retries: global.max_retries,
            json: false,
            priority: None,
            recursive: false,
            tls: global.tls_choice().unwrap_or_default(),
            token: global.token.clone(),
        }
    }
}

/// A checked `put` request: (connection settings with the remote path, local path, args).
pub fn put_options(
    args: &PutArgs,
    global: &GlobalArgs,
) -> Result<crate::upload::PutOptions, ClientError> {
    let mut positionals = args.args.clone();
    // Two values with a default server: LOCAL REMOTE if the first exists here.
    let first_is_local = positionals
        .first()
        .is_some_and(|p| std::path::Path::new(p).exists());
    let (server, rest) = if positionals.len() == 3
        || (positionals.len() == 2 && (global.server.is_none() || !first_is_local))
    {
        let first = positionals.remove(0);
        let server = first
            .parse::<Address>()
            .map_err(|e| ClientError::Usage(format!("invalid server address '{first}': {e}")))?;
        (server, positionals)
    } else {
        global.split_server(positionals, usize::MAX)?
    };
    let mut rest = rest.into_iter();
    let local = PathBuf::from(rest.next().unwrap_or_default());
    if local.as_os_str().is_empty() {
        return Err(ClientError::Usage("the local path is empty".into()));
    }
    let remote = match rest.next() {
        Some(r) if r.is_empty() => {
            return Err(ClientError::Usage("the remote path is empty".into()))
        }
        Some(r) => r,
        None => local
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .or_else(|| local.file_name().map(|n| n.to_string_lossy().into_owned()))
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "cannot derive a remote name from '{}'; name it",
                    local.display()
                ))
            })?,
    };
    let mut conn = GetOptions::for_path(server, remote, global);
    conn.quiet = global.quiet;
    conn.json = args.json;
    conn.priority = args.priority.map(Priority::from);
    conn.recursive = args.recursive;
    Ok(crate::upload::PutOptions {
        conn,
        local,
        force: args.force,
        restart: args.no_resume,
    })
}

/// The server and directory of a `list` command.
pub fn list_target(args: &ListArgs, global: &GlobalArgs) -> Result<(Address, String), ClientError> {
    let mut positionals = args.args.clone();
    if positionals.len() == 1 && (global.server.is_none() || positionals[0].contains(':')) {
        positionals.push(".".into());
    }
    let (server, rest) = global.split_server(positionals, 2)?;
    let dir = rest.into_iter().next().unwrap_or_else(|| ".".into());
    Ok((server, if dir.is_empty() { ".".into() } else { dir }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<GetOptions, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        let Command::Get(get) = cli.command else {
            return Err("not get".into());
        };
        GetOptions::from_args(get, &cli.global).map_err(|e| e.to_string())
    }

    #[test]
    fn server_from_the_option_when_only_the_path_is_given() {
        let o = parse(&["c", "get", "--server", "h:7", "dir/f"]).unwrap();
        assert_eq!((o.server.host.as_str(), o.server.port), ("h", 7));
        assert_eq!(o.remote, "dir/f");
        let o = parse(&["c", "--server", "h:7", "get", "other:8", "f"]).unwrap();
        assert_eq!(o.server.port, 8, "an explicit HOST:PORT wins");
        if std::env::var_os("SFTS_SERVER").is_none() {
            let e = parse(&["c", "get", "f"]).unwrap_err();
            assert!(e.contains("no server given"), "{e}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let o = parse(&["c", "get", "localhost", "sub/f.bin"]).unwrap();
        assert_eq!(o.server.port, 9000);
        assert_eq!(o.algorithm, Algorithm::Sha256);
        assert_eq!(o.protocol, Protocol::Native);
        assert_eq!(o.retries, 5);
        assert_eq!(o.timeout, Duration::from_secs(10));
        assert_eq!(o.chunk_size, sfts_protocol::DEFAULT_CHUNK_SIZE);
        assert_eq!(o.output, OutputSpec::Default);
        assert!(!o.force && !o.quiet);
    }

    #[test]
    fn options() {
        let o = parse(&[
            "c",
            "--log-dir",
            "/tmp/l",
            "get",
            "[::1]:1",
            "f",
            "-o",
            "-",
            "--checksum",
            "md5",
            "--retries",
            "0",
            "--timeout",
            "0.5",
            "--chunk-size",
            "64K",
            "--force",
            "-q",
        ])
        .unwrap();
        assert_eq!(o.server.host, "::1");
        assert_eq!(o.output, OutputSpec::Stdout);
        assert_eq!(o.algorithm, Algorithm::Md5);
        assert_eq!(o.timeout, Duration::from_millis(500));
        assert_eq!(o.chunk_size, 65536);
        assert!(o.force && o.quiet);
    }

    #[test]
    fn legacy_defaults_to_md5_and_refuses_sha256() {
        let o = parse(&["c", "get", "--protocol", "legacy", "h:1", "f"]).unwrap();
        assert_eq!(o.algorithm, Algorithm::Md5);
        let e = parse(&[
            "c",
            "get",
            "--protocol",
            "legacy",
            "--checksum",
            "sha256",
            "h:1",
            "f",
        ]);
        assert!(e.unwrap_err().contains("only carries MD5"));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["c", "get", "h:1", "f", "--timeout", "0"][..],
            &["c", "get", "h:1", "f", "--chunk-size", "1"],
            &["c", "get", "h:1", "f", "--checksum", "crc"],
            &["c", "get", "h:1", "f", "g"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
        assert!(parse(&["c", "get", "h:1", ""]).is_err());
        assert!(parse(&["c", "get", "h:x", "f"]).is_err());
    }
}
