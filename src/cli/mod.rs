//! The `fmseg` command line: one file per command; `main.rs` only parses and calls `run`.

use clap::{Parser, Subcommand};

pub mod phantom;

#[derive(Parser, Debug)]
#[command(name = "fmseg", version, about = "Fat-metaplasia segmentation on sacroiliac-joint MRI")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write synthetic SIJ studies (DICOM series, ground-truth mask, manifest).
    Phantom(phantom::PhantomArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Phantom(a) => phantom::run(a),
    }
}
