//! `sfts-client`: fetches a file from an SFTS server (or a server of the original design),
//! verifies it and prints its digest. Everything but argument parsing is in the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    sfts_client::run(sfts_client::Cli::parse())
}
