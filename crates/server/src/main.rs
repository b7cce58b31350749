//! `sfts-server`: parse the arguments, set up logging, bind, print the listening line, serve
//! until Ctrl-C or SIGTERM. Everything else lives in the library.
//!
//! Exit codes: 0 after a clean shutdown, 1 for a startup error, 2 for a usage error (clap).

use clap::Parser;
use sfts_server::{Args, Server, ServerError};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sfts-server: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), ServerError> {
    // Kept alive until the end of `run` so the last log lines reach the file.
    let _log = sfts_logging::init(&args.log_config())?;
    let server = Server::bind(args.config()?)?;
    let handle = server.shutdown_handle();
    // Installed before the listening line: whoever reads that line may signal at once.
    ctrlc::set_handler(move || handle.shutdown())?;
    let mut out = std::io::stdout().lock();
    // Tests and scripts read the port from this line; a closed stdout is no reason to stop.
    let _ = writeln!(out, "sfts-server listening on {}", server.local_addr());
    let _ = out.flush();
    drop(out);
    server.run()
}
