//! The `sid2` command: prepare → train → sample → encode → eval, plus `info` and a
//! self-contained `demo`. The workspace's root package builds it as the `sid2` binary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::{Parser, Subcommand, ValueEnum};
use crate::config::RunConfig;
use crate::fidelity::{self, Metric};
use crate::sample::{generate, load_model, save_clips, write_media};
use crate::train::{RunDir, resolve_config, train};
use crate::{bench, demo, eval, info};
use video_io::datasets::{Input, InputKind, image_folder, kinetics, read_class_list, read_kinetics_csv, video_folder};
use video_io::decode::TimeRange;
use video_io::prepare::{ShardDataset, clips_of, prepare};
use video_io::shard::Shard;

#[derive(Parser)]
#[command(name = "sid2", version, about = "SiD2 pixel-space diffusion for video prediction and images")]
struct Cli {
    /// Where the network runs.
    #[arg(long, value_enum, default_value_t = Backend::Cpu, global = true)]
    device: Backend,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Log every event (RUST_LOG also works).
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Cpu,
    Cuda,
}

#[derive(Subcommand)]
enum Command {
    /// Decode clips or images into checksummed shards.
    Prepare {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// A folder of videos (one subfolder per class, or videos directly inside).
        #[arg(long, group = "source")]
        videos: Option<PathBuf>,
        /// An ImageNet-style folder (one subfolder of images per class).
        #[arg(long, group = "source")]
        images: Option<PathBuf>,
        /// Kinetics annotations (label,youtube_id,time_start,time_end,split); needs --kinetics-root and --classes.
        #[arg(long, group = "source", requires_all = ["kinetics_root", "classes"])]
        kinetics_csv: Option<PathBuf>,
        #[arg(long)]
        kinetics_root: Option<PathBuf>,
        /// Class list, one name per line (e.g. label_map_k600.txt).
        #[arg(long)]
        classes: Option<PathBuf>,
        #[arg(long, default_value_t = std::thread::available_parallelism().map_or(2, |n| n.get()))]
        workers: usize,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Train (or resume: the same command continues from the newest checkpoint).
    Train {
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        data: PathBuf,
        /// Needed to start a run; a resumed run uses the config saved in its folder.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Print the resolved config and stop.
        #[arg(long)]
        dry_run: bool,
    },
    /// Generate: predict clips from their first frames, or images per class.
    Sample {
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Condition on prepared clips (first --count records).
        #[arg(long, group = "source")]
        data: Option<PathBuf>,
        /// Condition on a video file's first clips.
        #[arg(long, group = "source")]
        video: Option<PathBuf>,
        /// Clips to predict, or images per class.
        #[arg(long, default_value_t = 4)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// EMA decay whose weights to use, or "raw".
        #[arg(long)]
        ema: Option<String>,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 8)]
        fps: u32,
        #[arg(long, default_value_t = 4)]
        upscale: usize,
        /// Sampler overrides, e.g. sample.steps=128 or sample.guidance=1.5.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Clips stored by `sample` (or any shard) to MP4, or PNG grids for images.
    Encode {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Real clips paired with --input, for context | truth | prediction videos.
        #[arg(long)]
        real: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        context: usize,
        #[arg(long, default_value_t = 8)]
        fps: u32,
        #[arg(long, default_value_t = 4)]
        upscale: usize,
    },
    /// PSNR and SSIM of predicted against real continuations; FVD and FID given the weights.
    Eval {
        #[arg(long)]
        pred: PathBuf,
        #[arg(long)]
        real: PathBuf,
        #[arg(long)]
        context: usize,
        /// Also write the report here as JSON.
        #[arg(long)]
        out: Option<PathBuf>,
        /// FVD with these I3D weights (pytorch-i3d's rgb_imagenet.pt).
        #[arg(long)]
        i3d: Option<PathBuf>,
        /// FID with these Inception-v3 weights (pytorch-fid's pt_inception-2015-12-05-6726825d.pth).
        #[arg(long)]
        inception: Option<PathBuf>,
        /// Clips per feature-network batch.
        #[arg(long, default_value_t = 8)]
        batch: usize,
    },
    /// Resolved config, parameter count and GFLOPs per forward pass.
    Info {
        #[arg(long, group = "what")]
        config: Option<PathBuf>,
        #[arg(long, group = "what")]
        run: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Measure speeds (results as JSON on stdout; record them in BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Prepare the bundled clips, train a tiny model on the CPU, predict 11 frames from 5.
    Demo {
        #[arg(long, default_value = "demo-out")]
        out: PathBuf,
        #[arg(long, default_value = "examples/clips")]
        clips: PathBuf,
        /// Clips to predict.
        #[arg(long, default_value_t = 4)]
        count: usize,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Training steps of a config on synthetic clips: warm-up, then steady state.
    Train {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Sampling time of a config's `[sample]` settings (steps, guidance interval) per clip.
    Sample {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 4)]
        batch: usize,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Square matmul throughput on the device (the peak for MFU).
    Matmul {
        #[arg(long, default_value_t = 2048)]
        n: usize,
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Element type: f32 or bf16.
        #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
        dtype: String,
    },
    /// I3D and FID-Inception throughput at the evaluation shapes, and Fréchet distance time.
    Features {
        #[arg(long, default_value_t = 4)]
        batch: usize,
    },
    /// Decode + crop + area resize of every video in a folder, against the ffmpeg command line.
    Decode {
        #[arg(long)]
        videos: PathBuf,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

/// Parses the command line, runs the command, and reports any error with its causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| if cli.verbose { "info".into() } else { "warn".into() });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn device(backend: Backend) -> Result<Device> {
    match backend {
        Backend::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        Backend::Cuda => {
            // burn-cuda loads the driver lazily and panics on another thread without one: ask first.
            // SAFETY: loading the NVIDIA driver library runs only its initialisers.
            if let Err(e) = unsafe { libloading::Library::new("libcuda.so.1") } {
                bail!("--device cuda: no NVIDIA driver on this machine ({e})");
            }
            Ok(Device::cuda(0))
        }
        #[cfg(not(feature = "cuda"))]
        Backend::Cuda => bail!("this sid2 was built without CUDA: rebuild with `--features cuda`"),
    }
}

fn run(cli: Cli) -> Result<()> {
    let progress = !cli.quiet;
    match cli.command {
        Command::Prepare { config, out, videos, images, kinetics_csv, kinetics_root, classes, workers, overrides } => {
            let config = RunConfig::load(&config, &overrides)?;
            if images.is_none() && !video_io::FFMPEG {
                bail!(video_io::NO_FFMPEG);
            }
            let listing = match (videos, images, kinetics_csv) {
                (Some(dir), _, _) => video_folder(&dir)?,
                (_, Some(dir), _) => image_folder(&dir)?,
                (_, _, Some(csv)) => {
                    let rows = read_kinetics_csv(&csv)?;
                    let classes = read_class_list(classes.as_deref().expect("clap requires --classes"))?;
                    kinetics(kinetics_root.as_deref().expect("clap requires --kinetics-root"), &rows, classes)?
                }
                _ => bail!("give one of --videos, --images or --kinetics-csv"),
            };
            let report = prepare(&listing, &config.data, &out, workers, progress)?;
            println!(
                "{} records in {} new shards ({} resumed); {} inputs skipped, {} missing; manifest: {}",
                report.records,
                report.chunks_done,
                report.chunks_resumed,
                report.skipped + listing.unreadable.len(),
                report.missing,
                out.join(video_io::prepare::MANIFEST).display()
            );
        }
        Command::Train { run, data, config, overrides, dry_run } => {
            let run = RunDir(run);
            let given = config.map(|c| RunConfig::load(&c, &overrides)).transpose()?;
            if dry_run {
                let resolved = match given {
                    Some(c) => c,
                    None => run.load_config()?,
                };
                print!("{}", info::describe(&resolved));
                return Ok(());
            }
            let config = resolve_config(&run, given)?;
            let summary = train(&run, &data, &config, &device(cli.device)?, progress)?;
            println!(
                "trained to {} samples{}; last loss {:.4}; checkpoint {}",
                summary.samples_seen,
                summary.resumed_from.map(|s| format!(" (resumed at {s})")).unwrap_or_default(),
                summary.last_loss,
                summary.checkpoint.map(|p| p.display().to_string()).unwrap_or_else(|| "unchanged".into())
            );
        }
        Command::Sample { run, out, data, video, count, seed, ema, batch, fps, upscale, overrides } => {
            let run = RunDir(run);
            if let Some(bad) = overrides.iter().find(|o| !o.trim_start().starts_with("sample.")) {
                bail!("--set {bad}: only sample.* keys can change at sampling time");
            }
            let config = RunConfig::parse(&run.load_config()?.to_toml(), &overrides)?;
            let device = device(cli.device)?;
            let ema = match ema.as_deref() {
                None => None,
                Some("raw") => Some(None),
                Some(d) => Some(Some(d.parse::<f64>().with_context(|| format!("--ema {d}: expected a decay like 0.9999 or \"raw\""))?)),
            };
            let (model, weights) = load_model(&run, &config, ema, &device)?;
            let (frames, side, k) = (config.data.frames, config.data.size, config.diffusion.context_frames);
            let (real, labels): (Option<Vec<Vec<u8>>>, Vec<i64>) = match (data, video) {
                (Some(dir), _) => {
                    let d = ShardDataset::open(&dir)?;
                    let n = count.min(d.len());
                    let recs: Vec<_> = (0..n).map(|i| d.get(i).0).collect();
                    (Some(recs.iter().map(|r| r.pixels.to_vec()).collect()), recs.iter().map(|r| r.label as i64).collect())
                }
                (_, Some(path)) => {
                    let input = Input { path: path.clone(), label: 0, kind: InputKind::Video { range: TimeRange::default() } };
                    let data_cfg = video_io::prepare::PrepareConfig { clips_per_video: count, ..config.data.clone() };
                    let clips = clips_of(&input, &data_cfg)?;
                    let n = clips.len();
                    (Some(clips), vec![0; n])
                }
                (None, None) if k == 0 => {
                    let classes = config.model.num_classes.max(1);
                    (None, (0..classes as i64).flat_map(|c| std::iter::repeat_n(c, count)).collect())
                }
                (None, None) => bail!("this run predicts from {k} context frames: give --data or --video"),
            };
            let (generated, stats) = generate(&model, &config, real.as_deref(), &labels, seed, batch, &device, progress)?;
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            save_clips(&out.join("predictions.bin"), frames, side, &generated, &labels)?;
            if let Some(real) = &real {
                save_clips(&out.join("real.bin"), frames, side, real, &labels)?;
            }
            let media = match video_io::FFMPEG || frames == 1 {
                true => write_media(&out, frames, side, k, &generated, real.as_deref(), fps, upscale)?,
                false => {
                    eprintln!("no MP4s from a build without FFmpeg: run `sid2 encode --input predictions.bin` where FFmpeg is");
                    Default::default()
                }
            };
            println!(
                "{} samples from {} ({} network passes each, {} unconditional passes skipped outside the guidance interval) in {}",
                generated.len(),
                weights.display(),
                stats.evaluations,
                stats.skipped_unconditional,
                out.display()
            );
            for p in media.comparisons.iter().chain(&media.videos).chain(&media.grid) {
                println!("  {}", p.display());
            }
        }
        Command::Encode { input, out, real, context, fps, upscale } => {
            let shard = Shard::open(&input)?;
            let l = shard.layout;
            let clips: Vec<Vec<u8>> = (0..shard.len).map(|i| shard.get(i).pixels.to_vec()).collect();
            let real_clips = real.map(|r| -> Result<Vec<Vec<u8>>> {
                let s = Shard::open(&r)?;
                if s.layout != l || s.len != shard.len {
                    bail!("{} does not pair with {}", r.display(), input.display());
                }
                Ok((0..s.len).map(|i| s.get(i).pixels.to_vec()).collect())
            });
            let real_clips = real_clips.transpose()?;
            let media = write_media(&out, l.frames as usize, l.width as usize, context, &clips, real_clips.as_deref(), fps, upscale)?;
            for p in media.comparisons.iter().chain(&media.videos).chain(&media.grid) {
                println!("{}", p.display());
            }
        }
        Command::Eval { pred, real, context, out, i3d, inception, batch } => {
            let (pred, real) = (Shard::open(&pred)?, Shard::open(&real)?);
            let mut report = eval::evaluate(&pred, &real, context)?;
            let networks = [(Metric::Fvd, i3d), (Metric::Fid, inception)];
            for (metric, weights) in networks.into_iter().filter_map(|(m, w)| Some((m, w?))) {
                report.frechet.push(fidelity::score(metric, &weights, &pred, &real, batch, &device(cli.device)?, progress)?);
            }
            for q in &report.per_frame {
                println!(
                    "frame {:2}  PSNR {:6.2} dB  SSIM {:.4}   (last context frame repeated: {:6.2} dB, {:.4})",
                    q.frame, q.psnr_db, q.ssim, q.last_frame_psnr_db, q.last_frame_ssim
                );
            }
            println!(
                "mean over {} clips: PSNR {:.2} dB, SSIM {:.4} (last context frame repeated: {:.2} dB, {:.4})",
                report.clips, report.mean_psnr_db, report.mean_ssim, report.last_frame_psnr_db, report.last_frame_ssim
            );
            for f in &report.frechet {
                let source = if f.real_stats_cached { "cached" } else { "computed, now cached" };
                println!(
                    "{:?} {:.2}  ({} generated vs {} real feature vectors; real statistics {source} in {})",
                    f.metric,
                    f.value,
                    f.generated_samples,
                    f.real_samples,
                    f.real_stats.display()
                );
            }
            if let Some(path) = out {
                write_json(&path, &report)?;
            }
        }
        Command::Info { config, run, overrides } => {
            let config = match (config, run) {
                (Some(c), _) => RunConfig::load(&c, &overrides)?,
                (_, Some(r)) => RunConfig::parse(&RunDir(r).load_config()?.to_toml(), &overrides)?,
                _ => bail!("give --config or --run"),
            };
            print!("{}", info::describe(&config));
        }
        Command::Bench { what } => {
            let report = match what {
                BenchWhat::Train { config, warmup, steps, overrides } => {
                    serde_json::to_string_pretty(&bench::train(&RunConfig::load(&config, &overrides)?, &device(cli.device)?, warmup, steps)?)?
                }
                BenchWhat::Matmul { n, reps, dtype } => {
                    let dtype = if dtype == "bf16" { burn::tensor::DType::BF16 } else { burn::tensor::DType::F32 };
                    serde_json::to_string_pretty(&bench::matmul(&device(cli.device)?, n, reps, dtype))?
                }
                BenchWhat::Sample { config, batch, overrides } => {
                    serde_json::to_string_pretty(&bench::sample(&RunConfig::load(&config, &overrides)?, &device(cli.device)?, batch)?)?
                }
                BenchWhat::Features { batch } => serde_json::to_string_pretty(&bench::features(&device(cli.device)?, batch)?)?,
                BenchWhat::Decode { videos, size, rounds } => serde_json::to_string_pretty(&bench::decode_speed(&videos, size, rounds)?)?,
            };
            println!("{report}");
        }
        Command::Demo { out, clips, count, overrides } => {
            if !video_io::FFMPEG {
                bail!(video_io::NO_FFMPEG);
            }
            let report = demo::run(&clips, &out, &overrides, count, &device(cli.device)?, progress)?;
            for line in &report.lines {
                println!("{line}");
            }
            println!("comparison videos (context | real | predicted):");
            for p in &report.comparisons {
                println!("  {}", p.display());
            }
        }
    }
    Ok(())
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?).with_context(|| format!("cannot write {}", path.display()))
}
