//! The SFTS client library behind the `sfts-client` binary.
//!
//! [`run`] is the whole program after argument parsing: it sets up logging and the Ctrl-C
//! handler, runs [`download::get`], prints the result and returns the exit code. Tests and
//! other programs can call [`download::get`] with a [`cli::GetOptions`] directly.
//!
//! Modules: [`cli`] (arguments, checked options), [`address`] (`HOST:PORT`), [`connect`]
//! (backoff and retries), [`native`] and [`legacy`] (the two protocols' receive paths over any
//! `Read`/`Write`), [`transfer`] (what they share), [`output`] (temporary file and atomic
//! publish), [`progress`], [`interrupt`], [`size`] and [`error`] (errors and exit codes).
//!
//! What it does not do: framing, hashing or parsing of the original protocol's bytes; those
//! come from `sfts-protocol`.

pub mod address;
pub mod bulk_read;
pub mod chunk_check;
pub mod cli;
pub mod connect;
pub mod dir_handle;
pub mod download;
pub mod error;
pub mod fetch;
pub mod handoff;
pub mod inspect;
pub mod interrupt;
pub mod journal;
pub mod legacy;
pub mod listing;
pub mod native;
pub mod output;
pub mod pagebuf;
pub mod part_lock;
pub mod prefix_check;
pub mod progress;
pub mod resume;
pub mod seal;
pub mod sinks;
pub mod size;
pub mod summary;
pub mod tls;
pub mod transfer;
pub mod tree;
pub mod tree_writer;
pub mod unnamed;
pub mod upload;
pub mod upload_stream;

pub use cli::{Cli, Command, GetOptions};
pub use download::{get, Outcome};
pub use error::ClientError;

use cli::GlobalArgs;
use interrupt::Interrupt;
use sfts_logging::{LogConfig, LogGuard};
use std::io::Write;
use std::process::ExitCode;
use tracing::level_filters::LevelFilter;

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Get(args) => run_get(args, &cli.global),
        Command::Put(args) => run_put(&args, &cli.global),
        Command::List(args) => {
            let json = args.json;
            let (server, dir) = match cli::list_target(&args, &cli.global) {
                Ok(t) => t,
                Err(e) => return report(&e),
            };
            let _log = init_logging(&cli.global);
            let opts = GetOptions::for_path(server, dir, &cli.global);
            let interrupt = Interrupt::new();
            let listed = fetch::Fetcher::connect(&opts, &interrupt)
                .and_then(|mut f| listing::list(&mut f, &opts.remote, args.recursive));
            match listed {
                Ok(l) if json => {
                    println!("{}", listing::listing_json(&l));
                    ExitCode::SUCCESS
                }
                Ok(l) => {
                    print!("{}", listing::listing_text(&l));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, json),
            }
        }
        Command::Stat(args) => {
            let json = args.json;
            let _log = init_logging(&cli.global);
            match inspect::stat(args, &cli.global) {
                Ok(v) if json => {
                    println!("{v}");
                    ExitCode::SUCCESS
                }
                Ok(v) => {
                    print!("{}", inspect::info_text(&v));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, json),
            }
        }
        Command::Verify(args) => {
            let (json, local) = (args.json, args.local.clone());
            let _log = init_logging(&cli.global);
            match inspect::verify(args, &cli.global) {
                Ok(v) => {
                    if json {
                        println!("{}", inspect::verdict_json(&local, &v));
                    } else {
                        println!("{}", inspect::verdict_text(&local, &v));
                    }
                    if v.mismatch.is_none() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(error::exit::INTEGRITY)
                    }
                }
                Err(e) => fail(&e, json),
            }
        }
    }
}

/// Reports a failed command (as JSON too with `--json`) and returns its exit code.
fn fail(e: &ClientError, json: bool) -> ExitCode {
    tracing::info!("command failed (exit code {}): {e}", e.exit_code());
    if json {
        let v = serde_json::json!({"status": "error", "exit_code": e.exit_code(), "error": e.to_string()});
        println!("{v}");
    }
    report(e)
}

/// `sfts-client put`.
fn run_put(args: &cli::PutArgs, global: &GlobalArgs) -> ExitCode {
    let opts = match cli::put_options(args, global) {
        Ok(opts) => opts,
        Err(e) => return report(&e),
    };
    let _log = init_logging(global);
    let interrupt = Interrupt::new();
    if let Err(e) = interrupt.install() {
        tracing::warn!("Ctrl-C will not stop the upload cleanly: {e}");
    }
    tracing::info!(
        "{} put '{}' to {} '{}'",
        native::AGENT,
        opts.local.display(),
        opts.conn.server,
        opts.conn.remote
    );
    if opts.conn.recursive {
        return tree_result(
            after_interrupt(tree::put_tree(&opts, &interrupt), &interrupt),
            "put",
            &opts.conn.remote,
            "sent",
            &opts.conn,
        );
    }
    match after_interrupt(upload::put(&opts, &interrupt), &interrupt) {
        Ok(o) => {
            if opts.conn.json {
                println!("{}", summary::put_json(&o));
            } else {
                let _ = writeln!(std::io::stdout(), "{}  {}", o.sha256, o.remote);
            }
            if !opts.conn.quiet {
                eprintln!("{}", summary::put_human(&o));
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e, opts.conn.json),
    }
}

/// Prints a tree transfer's outcome and returns the exit code.
/// Ctrl-C shuts the connection down to stop a blocked read: a lost connection after it is
/// the interruption (exit 130), not a lost server (exit 6).
fn after_interrupt<T>(
    result: Result<T, ClientError>,
    interrupt: &Interrupt,
) -> Result<T, ClientError> {
    result.map_err(|e| match e {
        ClientError::Disconnected { .. } if interrupt.is_set() => ClientError::Interrupted {
            kept: error::Kept::Nothing,
        },
        ClientError::ConnectionLost { kept, .. } if interrupt.is_set() => {
            ClientError::Interrupted { kept }
        }
        e => e,
    })
}

fn tree_result(
    result: Result<tree::TreeOutcome, ClientError>,
    direction: &str,
    root: &str,
    verb: &str,
    opts: &GetOptions,
) -> ExitCode {
    match result {
        Ok(out) => {
            if opts.json {
                println!("{}", out.to_json(direction, root));
            }
            if !opts.quiet {
                eprintln!("{}", out.summary(verb));
            }
            for (path, why) in &out.failed {
                eprintln!("sfts-client: failed: {path}: {why}");
            }
            match out.result() {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => report(&e),
            }
        }
        Err(e) => fail(&e, opts.json),
    }
}

/// `sfts-client get`.
fn run_get(args: cli::GetArgs, global: &GlobalArgs) -> ExitCode {
    let opts = match GetOptions::from_args(args, global) {
        Ok(opts) => opts,
        Err(e) => return report(&e),
    };
    let _log = init_logging(global);
    let interrupt = Interrupt::new();
    if let Err(e) = interrupt.install() {
        tracing::warn!("Ctrl-C will not stop the download cleanly: {e}");
    }
    tracing::info!(
        "{} get {} '{}' ({} protocol, {})",
        native::AGENT,
        opts.server,
        opts.remote,
        match opts.protocol {
            cli::Protocol::Native => "native",
            cli::Protocol::Legacy => "original",
        },
        opts.algorithm
    );
    if opts.recursive {
        return tree_result(
            after_interrupt(tree::get_tree(&opts, &interrupt), &interrupt),
            "get",
            &opts.remote,
            "received",
            &opts,
        );
    }
    match after_interrupt(get(&opts, &interrupt), &interrupt) {
        Ok(outcome) => {
            print_outcome(&opts, &outcome);
            ExitCode::SUCCESS
        }
        Err(e) => {
            // INFO, not ERROR: the console shows the error once, below, in its own format.
            tracing::info!("download failed (exit code {}): {e}", e.exit_code());
            if opts.json && !e.is_silent() {
                summary::print_json(&opts, &summary::error_json(&opts, &e));
            }
            report(&e)
        }
    }
}

/// Prints `<hex>  <output>` (to stdout, or to stderr when the data went to stdout), or the
/// JSON summary with `--json`, and, unless quiet, the human summary on stderr.
fn print_outcome(opts: &GetOptions, outcome: &Outcome) {
    if opts.json {
        summary::print_json(opts, &summary::outcome_json(opts, outcome));
    } else {
        let line = format!("{}  {}", outcome.digest, outcome.output);
        if outcome.output == "-" {
            eprintln!("{line}");
        } else {
            // A closed stdout is not worth a failure after a verified download.
            let _ = writeln!(std::io::stdout(), "{line}");
        }
    }
    if !opts.quiet {
        eprintln!("{}", summary::human(opts, outcome));
    }
}

/// Prints the error once and returns its exit code.
fn report(e: &ClientError) -> ExitCode {
    if !e.is_silent() {
        eprintln!("sfts-client: error: {e}");
    }
    ExitCode::from(e.exit_code())
}

/// Logs to the console (WARNING, or INFO with `--verbose`) and to a file in the log directory
/// (INFO). A log directory that cannot be used costs a warning, never the download.
fn init_logging(global: &GlobalArgs) -> Option<LogGuard> {
    let console_level = if global.verbose {
        LevelFilter::INFO
    } else {
        LevelFilter::WARN
    };
    let config = LogConfig {
        dir: Some(global.log_dir.clone()),
        prefix: "client",
        file_level: LevelFilter::INFO,
        console_level,
        // Started once per command (64 at once in the benchmark): a queue of the default
        // 128,000 lines cost every start 4 ms of page faults.
        buffered_lines: Some(sfts_logging::SMALL_QUEUE),
        console_in_background: false,
    };
    match sfts_logging::init(&config) {
        Ok(guard) => Some(guard),
        Err(e @ sfts_logging::LogError::Dir { .. }) => {
            eprintln!("sfts-client: warning: {e}; logging to the console only");
            let console_only = LogConfig {
                dir: None,
                ..config
            };
            sfts_logging::init(&console_only).ok()
        }
        Err(e) => {
            eprintln!("sfts-client: warning: {e}");
            None
        }
    }
}
