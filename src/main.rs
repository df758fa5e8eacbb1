//! `fmseg`: parse, run, print the whole error chain once, exit non-zero on failure.

use clap::Parser;

fn main() {
    let cli = fmseg::cli::Cli::parse();
    if let Err(e) = fmseg::cli::run(cli) {
        eprintln!("fmseg: error: {e:#}");
        std::process::exit(1);
    }
}
