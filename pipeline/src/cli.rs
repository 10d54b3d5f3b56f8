//! The `sid2` command: parses the command line and hands each subcommand to its stage. The
//! workspace's root package builds it as the `sid2` binary.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

use crate::globals::{Autotune, Backend, Globals};
use crate::train::interrupt::Interrupted;
use crate::{bench, demo, ema, encode, eval, export, info, judge, prepare, report, sample, sweep, train};

#[derive(Parser)]
#[command(name = "sid2", version, about = "SiD2 pixel-space diffusion for video prediction and images")]
struct Cli {
    /// Where the network runs.
    #[arg(long, value_enum, default_value_t = Backend::Cpu, global = true)]
    device: Backend,
    /// How hard the GPU backends' autotuner searches on each new shape [default: minimal, or
    /// CUBECL_AUTOTUNE_LEVEL]; builds without autotuning (`cuda-untuned`, `wgpu-untuned`) ignore it.
    #[arg(long, value_enum, global = true)]
    autotune: Option<Autotune>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Log every event (RUST_LOG also works).
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode clips or images into checksummed shards.
    Prepare(prepare::Args),
    /// Train (or resume: the same command continues from the newest checkpoint).
    Train(train::Args),
    /// Generate: predict clips from their first frames, or images per class.
    Sample(sample::Args),
    /// Clips stored by `sample` (or any shard) to MP4, or PNG grids for images.
    Encode(encode::Args),
    /// PSNR and SSIM of predicted against real continuations; FVD and FID given the weights.
    Eval(eval::Args),
    /// One self-contained HTML page of a run: curves, samples, evaluation, config.
    Report(report::Args),
    /// A run's weights in the layout of the PyTorch reference (scripts/torch_reference.py).
    Export(export::Args),
    /// Weights of any EMA width, rebuilt after training from the run's power-EMA snapshots.
    Ema(ema::Args),
    /// A grid of EMA weights, guidance scales and intervals, each sampled and scored the same way.
    Sweep(sweep::Args),
    /// Train a classifier on labelled images, and score generated images with it.
    Judge(judge::Args),
    /// Resolved config, parameter count and GFLOPs per forward pass.
    Info(info::Args),
    /// Measure speeds and learning (results as JSON on stdout; record them in BENCHMARKS.md).
    Bench(bench::Args),
    /// The whole pipeline on bundled real clips, on the CPU, in minutes.
    Demo(demo::Args),
}

/// Parses the command line, runs the stage, and reports any error with its causes. Every failure,
/// a bad flag included, is one line on stderr and exit status 1.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) => e.exit(),
        Err(e) => {
            eprintln!("{} (see --help)", one_line(&e));
            return ExitCode::FAILURE;
        }
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| if cli.verbose { "info".into() } else { "warn".into() });
    // wgpu probes OpenGL beside Vulkan and logs its failure as an error even when Vulkan serves.
    let filter = format!("{filter},wgpu_hal::gles=off");
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour).init();
    let globals = Globals { backend: cli.device, progress: !cli.quiet, autotune: cli.autotune };
    match dispatch(cli.command, &globals) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Interrupted>() {
            Some(stop) => {
                eprintln!("{stop}");
                ExitCode::from(130)
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// A command-line error in one line: clap's first line, with the flags it lists below it (the
/// missing required ones) joined in.
fn one_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("error: invalid command line").to_owned();
    if e.kind() != ErrorKind::MissingRequiredArgument {
        return first;
    }
    let flags: Vec<&str> = lines.take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more")).collect();
    format!("{first} {}", flags.join(", "))
}

/// After a stage recorded its output in a run's events, the run's report shows it: the stages
/// record, the report reads, and neither calls the other.
fn refresh_report(run: Option<std::path::PathBuf>) {
    if let Some(run) = run.map(crate::run::RunDir::new).filter(|r| r.writable()) {
        report::refresh(&run);
    }
}

fn dispatch(command: Command, globals: &Globals) -> Result<()> {
    match command {
        Command::Prepare(args) => prepare::run(args, globals),
        Command::Train(args) => train::run(args, globals),
        Command::Sample(args) => {
            let run = args.run.clone();
            sample::run(args, globals).map(|()| refresh_report(Some(run)))
        }
        Command::Encode(args) => encode::run(args, globals),
        Command::Eval(args) => {
            let run = args.run.clone();
            eval::run(args, globals).map(|()| refresh_report(run))
        }
        Command::Report(args) => report::run(args, globals),
        Command::Export(args) => export::run(args, globals),
        Command::Ema(args) => ema::run(args, globals),
        Command::Sweep(args) => {
            let run = args.run.clone();
            sweep::run(args, globals).map(|()| refresh_report(Some(run)))
        }
        Command::Judge(args) => judge::run(args, globals),
        Command::Info(args) => info::run(args, globals),
        Command::Bench(args) => bench::run(args, globals),
        Command::Demo(args) => demo::run(args, globals),
    }
}
