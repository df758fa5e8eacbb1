//! `fmseg`: parse, run, print the whole error chain once, exit non-zero on failure.

fn main() {
    let cli = fmseg::cli::Cli::parse_args();
    if let Err(e) = fmseg::cli::run(cli) {
        eprintln!("fmseg: error: {e:#}");
        std::process::exit(fmseg::cli::exit::of(&e));
    }
}
