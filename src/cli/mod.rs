//! The `fmseg` command line: one file per command; `main.rs` only parses and calls `run`.

pub mod batch;
pub mod bench;
pub mod bench_latency;
pub mod bench_study;
pub mod classify;
pub mod convert;
pub mod convert_weights;
pub mod evaluate;
pub mod forward;
pub mod init_weights;
pub mod phantom;
pub mod segment;
pub mod series;
pub mod serve;
pub mod train;
pub mod train_classifier;

use std::io::Write;

use clap::{Parser, Subcommand};

/// Exit statuses, as `--help` and the README list them.
pub mod exit {
    /// Success; also when stdout was closed early (`fmseg series DIR | head`).
    pub const OK: i32 = 0;
    /// The command failed: the message on stderr names the file and the problem.
    pub const FAILURE: i32 = 1;
    /// The command line could not be parsed (clap's usage error).
    pub const USAGE: i32 = 2;
    /// `batch`: some series failed, the others are done (`manifest.jsonl` has the reasons).
    pub const SOME_FAILED: i32 = 3;

    /// The exit status for a command's error.
    pub fn of(e: &anyhow::Error) -> i32 {
        if e.downcast_ref::<super::batch::SomeFailed>().is_some() {
            SOME_FAILED
        } else {
            FAILURE
        }
    }
}

const EXIT_CODES_HELP: &str = "Exit status: 0 success (a closed stdout, as in `fmseg series DIR | head`, is not \
an error), 1 failure (the message names the file and the problem), 2 usage error, 3 (batch) some series \
failed and the others are done.";

/// Standard output for the commands' results: like `print!`, except that a closed stdout ends
/// the process quietly with [`exit::OK`] (a reader that stopped reading is not a failure),
/// and any other write error ends it with [`exit::FAILURE`] and a message.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(exit::OK);
        }
        eprintln!("fmseg: error: writing to standard output: {e}");
        std::process::exit(exit::FAILURE);
    }
}

/// `println!` through [`write_stdout`].
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::write_stdout(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::write_stdout(format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!` through [`write_stdout`].
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::write_stdout(format_args!($($t)*)) };
}

#[derive(Parser, Debug)]
#[command(
    name = "fmseg",
    version,
    about = "Fat-metaplasia segmentation on sacroiliac-joint MRI",
    after_help = EXIT_CODES_HELP
)]
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
    /// Segment every matching series of a DICOM archive: masks, DICOM SEG, reports; resumable, shardable.
    Batch(batch::BatchArgs),
    /// A DICOM node: receive series by C-STORE, segment each complete one, send its DICOM SEG on.
    Serve(serve::ServeArgs),
    /// Train the network (k-fold, the reference's recipe), resumable, checkpoints PyTorch can load.
    Train(train::TrainArgs),
    /// axSpA or not from a T1 SIJ study and its FM (segmented unless --mask), with Grad-CAM.
    Classify(classify::ClassifyArgs),
    /// Train the axSpA classifier (image only or image + clinical), resumable.
    TrainClassifier(train_classifier::TrainClassifierArgs),
    /// Score masks against the truth (Dice, HD95, volumes) and classification probabilities against labels (AUC, DeLong): the paper's Tables 2 and 4 as Markdown and CSV, a ROC curve PNG.
    Evaluate(evaluate::EvaluateArgs),
}

impl Cli {
    /// The command line, parsed; every command's `--help` ends with the exit statuses. A
    /// usage error prints clap's message and exits with [`exit::USAGE`].
    pub fn parse_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let cmd = Cli::command().mut_subcommands(|s| s.after_help(EXIT_CODES_HELP));
        let matches = cmd.get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Batch(a) => batch::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Series(a) => series::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
        Command::ConvertWeights(a) => convert_weights::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Forward(a) => forward::run(a),
        Command::InitWeights(a) => init_weights::run(a),
        Command::Phantom(a) => phantom::run(a),
        Command::Segment(a) => segment::run(a),
        Command::Train(a) => train::run(a),
        Command::TrainClassifier(a) => train_classifier::run(a),
        Command::Classify(a) => classify::run(a),
    }
}
