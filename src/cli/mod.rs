//! The `fmseg` command line: one file per command; `main.rs` only parses and calls `run`.

pub mod bench;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "fmseg", version, about = "Fat-metaplasia segmentation on sacroiliac-joint MRI")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Time the network: ms per patch, patches/s, peak memory, time per layer.
    Bench(bench::BenchArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(a) => bench::run(a),
    }
}
