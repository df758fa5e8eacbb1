//! The `fmseg` command line: one file per command; `main.rs` only parses and calls `run`.

use clap::{Parser, Subcommand};

pub mod convert_weights;

#[derive(Parser, Debug)]
#[command(name = "fmseg", version, about = "Fat-metaplasia segmentation on sacroiliac-joint MRI")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Convert network weights between .pth, safetensors and the frozen format, checking them.
    ConvertWeights(convert_weights::Args),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::ConvertWeights(a) => convert_weights::run(a),
    }
}
