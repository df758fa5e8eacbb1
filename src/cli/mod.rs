//! The `fmseg` command line: one file per command; `main.rs` only parses and calls `run`.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "fmseg", version, about = "Fat-metaplasia segmentation on sacroiliac-joint MRI")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {}
}
