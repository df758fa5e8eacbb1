//! The `fmseg` command line: one file per command; `main.rs` only parses and calls `run`.

use clap::{Parser, Subcommand};

pub mod series;

#[derive(Parser, Debug)]
#[command(name = "fmseg", version, about = "Fat-metaplasia segmentation on sacroiliac-joint MRI")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the DICOM series under a path and show which one would be chosen.
    Series(series::SeriesArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Series(a) => series::run(a),
    }
}
