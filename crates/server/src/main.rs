//! `sfts-server`: parse the arguments, set up logging, bind, print the listening line, serve
//! until Ctrl-C or SIGTERM; or `sfts-server token add ...`. Everything else lives in the
//! library.
//!
//! Exit codes: 0 after a clean shutdown, 1 for a startup error, 2 for a usage error (clap).

use clap::Parser;
use sfts_server::{Args, Command, Server, ServerError, TokenCommand};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.command {
        Some(Command::Token(command)) => token(command),
        None => run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sfts-server: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `token add`: only the token goes to standard output (scripts read it), the note to
/// standard error.
fn token(command: &TokenCommand) -> Result<(), ServerError> {
    let TokenCommand::Add {
        name,
        read,
        write,
        auth_file,
    } = command;
    let token = sfts_server::add_token(auth_file, name, read, write)?;
    println!("{token}");
    eprintln!(
        "sfts-server: stored the SHA-256 of the token for '{name}' in {}; give the token to \
         {name}, it is not shown again",
        auth_file.display()
    );
    if read.is_empty() && write.is_empty() {
        eprintln!(
            "sfts-server: note: '{name}' may neither read nor write anything yet (add --read \
             PREFIX or --write PREFIX entries to the file)"
        );
    }
    Ok(())
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
