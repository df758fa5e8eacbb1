//! The `fmseg` command line: one file per command; `main.rs` only parses and calls `run`.

pub mod bench;
pub mod bench_study;
pub mod convert;
pub mod convert_weights;
pub mod forward;
pub mod init_weights;
pub mod phantom;
pub mod segment;
pub mod series;
pub mod train;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "fmseg", version, about = "Fat-metaplasia segmentation on sacroiliac-joint MRI")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Segment fat metaplasia in a T1 MRI (NIfTI or DICOM): mask, report and overlay into a directory.
    Segment(segment::SegmentArgs),
    /// Write synthetic SIJ studies (DICOM series, ground-truth mask, manifest).
    Phantom(phantom::PhantomArgs),
    /// A DICOM series or NIfTI image to NIfTI, every voxel at its world position.
    Convert(convert::ConvertArgs),
    /// List the DICOM series under a path and show which one would be chosen.
    Series(series::SeriesArgs),
    /// Time the network: ms per patch, patches/s, peak memory, time per layer.
    Bench(bench::BenchArgs),
    /// One network pass on a tensor file (.npy / .safetensors): logits and attention maps out.
    Forward(forward::ForwardArgs),
    /// Write freshly initialised (untrained) network weights, the start of a training run.
    InitWeights(init_weights::InitWeightsArgs),
    /// Convert network weights between .pth, safetensors and the frozen format, checking them.
    ConvertWeights(convert_weights::Args),
    /// Train the network (k-fold, the reference's recipe), resumable, checkpoints PyTorch can load.
    Train(train::TrainArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Convert(a) => convert::run(a),
        Command::Series(a) => series::run(a),
        Command::Bench(a) => bench::run(a),
        Command::ConvertWeights(a) => convert_weights::run(a),
        Command::Forward(a) => forward::run(a),
        Command::InitWeights(a) => init_weights::run(a),
        Command::Phantom(a) => phantom::run(a),
        Command::Segment(a) => segment::run(a),
        Command::Train(a) => train::run(a),
    }
}
