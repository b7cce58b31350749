//! The command line (clap derive: the `///` comments are the help text) and the step from raw
//! arguments to a checked [`GetOptions`].

use crate::address::Address;
use crate::error::{ClientError, EXIT_CODES_HELP};
use crate::output::OutputSpec;
use crate::size::parse_chunk_size;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sfts_protocol::Algorithm;
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
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download a file, verify its digest, and print `<digest>  <output>`
    #[command(after_help = EXIT_CODES_HELP)]
    Get(GetArgs),
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
}

impl From<Checksum> for Algorithm {
    fn from(c: Checksum) -> Algorithm {
        match c {
            Checksum::Sha256 => Algorithm::Sha256,
            Checksum::Md5 => Algorithm::Md5,
        }
    }
}

/// Arguments of `get`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Server address: HOST:PORT, 1.2.3.4:PORT or [::1]:PORT (port 9000 when omitted)
    #[arg(value_name = "HOST:PORT")]
    pub server: Address,

    /// Path of the file on the server, relative to its served root
    #[arg(value_name = "REMOTE")]
    pub remote: String,

    /// Save as PATH (into PATH if it is a directory; '-' writes the data to standard output)
    /// [default: the remote file's base name in the current directory]
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Digest to verify with [default: sha256; md5 with --protocol legacy]
    #[arg(long, value_enum, value_name = "ALGORITHM")]
    pub checksum: Option<Checksum>,

    /// Protocol to speak
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,

    /// Connection retries after the first attempt, waiting 1, 2, 4, ... s (at most 32 s)
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,

    /// Seconds allowed for each connection attempt and for each read or write of the transfer
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Data chunk size to ask for, in bytes or with a K, M, KiB or MiB suffix (4K to 16M)
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_chunk_size)]
    pub chunk_size: u32,

    /// Overwrite the output file if it exists
    #[arg(long)]
    pub force: bool,

    /// Discard any partial download of this file and start from the first byte
    /// [default: an interrupted download is resumed]
    #[arg(long)]
    pub no_resume: bool,

    /// Reconnections in a row, without a byte of progress, after the connection dropped or
    /// stalled mid-transfer (the first at once, then after 1, 2, 4, ... s)
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_retries: u32,

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
}

impl GetOptions {
    /// Checks what clap cannot: option combinations and the remote path.
    pub fn from_args(args: GetArgs, global: &GlobalArgs) -> Result<GetOptions, ClientError> {
        let algorithm = match (args.protocol, args.checksum) {
            (Protocol::Legacy, Some(Checksum::Sha256)) => {
                return Err(ClientError::Usage(
                    "the original protocol only carries MD5; use --checksum md5".into(),
                ))
            }
            (Protocol::Legacy, _) => Algorithm::Md5,
            (Protocol::Native, c) => c.map_or(Algorithm::Sha256, Algorithm::from),
        };
        if args.remote.is_empty() {
            return Err(ClientError::Usage("the remote path is empty".into()));
        }
        let output = match args.output {
            None => OutputSpec::Default,
            Some(p) if p.as_os_str() == "-" => OutputSpec::Stdout,
            Some(p) => OutputSpec::Path(p),
        };
        Ok(GetOptions {
            server: args.server,
            remote: args.remote,
            output,
            algorithm,
            protocol: args.protocol,
            retries: args.retries,
            timeout: args.timeout,
            chunk_size: args.chunk_size,
            force: args.force,
            quiet: global.quiet,
            no_resume: args.no_resume,
            max_retries: args.max_retries,
            json: args.json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<GetOptions, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        let Command::Get(get) = cli.command;
        GetOptions::from_args(get, &cli.global).map_err(|e| e.to_string())
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
            &["c", "get", "h:99999", "f"][..],
            &["c", "get", "h:1", "f", "--timeout", "0"],
            &["c", "get", "h:1", "f", "--chunk-size", "1"],
            &["c", "get", "h:1", "f", "--checksum", "crc"],
            &["c", "get", "h:1"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
        assert!(parse(&["c", "get", "h:1", ""]).is_err());
    }
}
