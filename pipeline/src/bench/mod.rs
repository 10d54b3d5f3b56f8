//! `sid2 bench`: measurements, never asserted. Training steps on synthetic batches (warm-up
//! apart from steady state, achieved FLOP/s from the analytic count), sampling, decoding against
//! the FFmpeg command line, the FVD/FID feature networks, a matmul peak for MFU fractions, and
//! [`learn`]: learning on held-out videos, and [`learn_images`]: on held-out images.

pub mod learn;
pub mod learn_images;
pub mod probe;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::DType;
use model3d::network::cost;
use model3d::{Precision, UViT};
use ndarray::Array1;
use serde::Serialize;
use video_io::clips::Clips;
use video_io::decode::{FrameSize, TimeRange, decode};

use crate::config::RunConfig;
use crate::eval::features::{FidInception, I3d};
use crate::eval::frechet::{Gaussian, frechet_distance};
use crate::globals::Globals;
use crate::run::metrics::{peak_rss_mib, rss_mib, rss_split_mib};
use crate::sample::generate;
use crate::train::loader::Batch;
use crate::train::trainer::Trainer;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Train on some videos, predict others: validation curve, PSNR/SSIM per predicted frame
    /// against repeating the last context frame, charts and strips. Image presets: train on
    /// images, judge each checkpoint's samples per class against test images, grids.
    Learn(learn::LearnArgs),
    /// Training steps of a config on synthetic clips: warm-up, then steady state.
    Train {
        #[arg(long)]
        config: PathBuf,
        /// Steps timed as warm-up (JIT, autotune, first allocations).
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Steps timed as the steady state.
        #[arg(long, default_value_t = 5, value_parser = crate::globals::at_least_one)]
        steps: usize,
        /// Override a config key, e.g. `--set train.precision=bf16`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Sampling time of a config's `[sample]` settings (steps, guidance interval) per clip.
    Sample {
        #[arg(long)]
        config: PathBuf,
        /// Clips sampled together.
        #[arg(long, default_value_t = 4, value_parser = crate::globals::at_least_one)]
        batch: usize,
        /// Override a config key, e.g. `--set sample.steps=128`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Attention forward + backward: the project's operation against burn's decomposed path.
    Attention {
        #[arg(long, default_value_t = 4, value_parser = crate::globals::at_least_one)]
        batch: usize,
        #[arg(long, default_value_t = 4, value_parser = crate::globals::at_least_one)]
        heads: usize,
        #[arg(long, default_value_t = 16, value_parser = crate::globals::at_least_one)]
        head_dim: usize,
        /// Token counts to time (repeat the flag).
        #[arg(long = "tokens", default_values_t = [256, 1024, 4096], value_parser = crate::globals::size_up_to_65536)]
        tokens: Vec<usize>,
        /// Timed repetitions after one warm-up.
        #[arg(long, default_value_t = 3, value_parser = crate::globals::at_least_one)]
        reps: usize,
    },
    /// The 3×3 convolution (stride 1, padding 1) forward, and forward + backward, at one shape:
    /// the project's operation on the CPU, burn's `conv2d` elsewhere.
    Conv {
        #[arg(long, default_value_t = 32, value_parser = crate::globals::at_least_one)]
        batch: usize,
        /// Input channels.
        #[arg(long, default_value_t = 64, value_parser = crate::globals::at_least_one)]
        c_in: usize,
        /// Output channels.
        #[arg(long, default_value_t = 64, value_parser = crate::globals::at_least_one)]
        c_out: usize,
        /// Side of the square planes.
        #[arg(long, default_value_t = 16, value_parser = crate::globals::size_up_to_65536)]
        size: usize,
        /// Timed repetitions after one warm-up.
        #[arg(long, default_value_t = 10, value_parser = crate::globals::at_least_one)]
        reps: usize,
    },
    /// One kernel family on the device against an f32 CPU reference: correctness and time.
    Probe {
        #[arg(long, value_enum)]
        case: probe::Case,
        /// Element type: f32 or bf16.
        #[arg(long, default_value = "bf16")]
        dtype: Precision,
        /// Divide the sizes by this (dry runs on the CPU).
        #[arg(long, default_value_t = 1, value_parser = crate::globals::at_least_one)]
        shrink: usize,
    },
    /// Square matmul throughput on the device (the peak for MFU).
    Matmul {
        /// Matrix side.
        #[arg(long, default_value_t = 2048, value_parser = crate::globals::size_up_to_65536)]
        n: usize,
        /// Timed repetitions after one warm-up.
        #[arg(long, default_value_t = 5, value_parser = crate::globals::at_least_one)]
        reps: usize,
        /// Element type: f32 or bf16.
        #[arg(long, default_value = "f32")]
        dtype: Precision,
    },
    /// I3D and FID-Inception throughput at the evaluation shapes, and Fréchet distance time.
    Features {
        /// Clips (or images) per batch.
        #[arg(long, default_value_t = 4, value_parser = crate::globals::at_least_one)]
        batch: usize,
    },
    /// Decode + crop + area resize of every video in a folder, against the ffmpeg command line.
    Decode {
        #[arg(long)]
        videos: PathBuf,
        /// Side of the square frames.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
        size: u16,
        /// Passes over the folder; the mean is reported.
        #[arg(long, default_value_t = 3, value_parser = crate::globals::at_least_one)]
        rounds: usize,
    },
}

pub fn run(args: Args, globals: &Globals) -> Result<()> {
    let json = match args.what {
        What::Learn(args) if args.train_images.is_some() => serde_json::to_string_pretty(&learn_images::run(args, globals)?)?,
        What::Learn(args) => serde_json::to_string_pretty(&learn::run(args, globals)?)?,
        What::Train { config, warmup, steps, overrides } => {
            let config = RunConfig::load(&config, &overrides)?;
            serde_json::to_string_pretty(&train(&config, &globals.device_for(config.train.precision)?, warmup, steps)?)?
        }
        What::Sample { config, batch, overrides } => {
            let config = RunConfig::load(&config, &overrides)?;
            serde_json::to_string_pretty(&sample(&config, &globals.device_for(config.train.precision)?, batch)?)?
        }
        What::Attention { batch, heads, head_dim, tokens, reps } => {
            let device = globals.device()?;
            let rows: Vec<AttentionBench> = tokens.iter().flat_map(|&n| [true, false].map(|flash| attention(&device, [batch, heads, n, head_dim], flash, reps))).collect();
            serde_json::to_string_pretty(&rows)?
        }
        What::Conv { batch, c_in, c_out, size, reps } => serde_json::to_string_pretty(&conv(&globals.device()?, [batch, c_in, size, size], c_out, reps))?,
        What::Probe { case, dtype, shrink } => serde_json::to_string(&probe::run(case, dtype, &globals.device()?, shrink)?)?,
        What::Matmul { n, reps, dtype } => serde_json::to_string_pretty(&matmul(&globals.device()?, n, reps, dtype.dtype()))?,
        What::Features { batch } => serde_json::to_string_pretty(&features(&globals.device()?, batch)?)?,
        What::Decode { videos, size, rounds } => serde_json::to_string_pretty(&decode_speed(&videos, size as usize, rounds)?)?,
    };
    println!("{json}");
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct TrainBench {
    pub precision: Precision,
    pub batch: usize,
    pub warmup_steps: usize,
    pub warmup_s: f64,
    pub steps: usize,
    pub step_s: f64,
    pub samples_per_s: f64,
    pub train_gflop_per_sample: f64,
    pub achieved_tflops: f64,
    pub attention_share_of_flops: f64,
    pub peak_rss_mib: f64,
    /// Resident memory at the end, anonymous and file-backed ([`rss_split_mib`]).
    pub rss_anon_mib: f64,
    pub rss_file_mib: f64,
}

/// Times `warmup` then `steps` training steps of `config` on random clips.
pub fn train(config: &RunConfig, device: &Device, warmup: usize, steps: usize) -> Result<TrainBench> {
    let mut trainer = Trainer::new(config, device)?;
    let (b, t, s) = (config.train.batch_size, config.data.frames, config.data.size);
    let batch = |i: u64| Batch {
        pixels: Array1::from(model3d::noise::gaussian(i, b * t * 3 * s * s)).mapv(|v| (v * 0.5).clamp(-1.0, 1.0)).into_shape_with_order((b, t, 3, s, s)).expect("sizes match"),
        labels: vec![0; b],
    };
    let start = Instant::now();
    for i in 0..warmup {
        trainer.step(batch(i as u64), (i * b) as u64, true);
    }
    let warmup_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for i in warmup..warmup + steps {
        // The step's loss is read back, so the clock sees finished work (training itself reads
        // only on log steps).
        let step = trainer.step(batch(i as u64), (i * b) as u64, false);
        let _ = step.loss.into_scalar::<f32>();
    }
    let step_s = start.elapsed().as_secs_f64() / steps.max(1) as f64;
    let c = cost(&config.model, [t, s, s]);
    let [rss_anon_mib, rss_file_mib] = rss_split_mib();
    Ok(TrainBench {
        precision: config.train.precision,
        batch: b,
        warmup_steps: warmup,
        warmup_s,
        steps,
        step_s,
        samples_per_s: b as f64 / step_s,
        train_gflop_per_sample: c.train_flops() / 1e9,
        achieved_tflops: c.train_flops() * b as f64 / step_s / 1e12,
        attention_share_of_flops: c.attention_flops / c.forward_flops,
        peak_rss_mib: peak_rss_mib(),
        rss_anon_mib,
        rss_file_mib,
    })
}

#[derive(Debug, Serialize)]
pub struct SampleBench {
    pub precision: Precision,
    pub batch: usize,
    pub steps: usize,
    /// Network passes per clip over all steps: two per step inside the guidance interval, one
    /// outside it.
    pub network_passes: usize,
    /// A 2-step sampling of one batch: JIT and autotune.
    pub warmup_s: f64,
    pub s_per_batch: f64,
    pub s_per_sample: f64,
    /// Resident memory at the end, anonymous and file-backed ([`rss_split_mib`]).
    pub rss_anon_mib: f64,
    pub rss_file_mib: f64,
}

/// Samples one batch of `config` with its `[sample]` settings from an initial network (speed does
/// not depend on the weights), after a 2-step warm-up; video configs condition on random
/// context frames.
pub fn sample(config: &RunConfig, device: &Device, batch: usize) -> Result<SampleBench> {
    let model = UViT::new(&config.model, device);
    let (t, s) = (config.data.frames, config.data.size);
    let noise = Array1::from(model3d::noise::gaussian(0, batch * t * s * s * 3)).mapv(|v| (128.0 + 40.0 * v).clamp(0.0, 255.0) as u8);
    let real = Clips::new(noise.into_shape_with_order((batch, t, s, s, 3)).expect("sizes match"), vec![0; batch]);
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % config.model.num_classes.max(1) as i64).collect();
    let mut warm = config.clone();
    warm.sample.steps = 2;
    let hidden = indicatif::ProgressBar::hidden();
    let start = Instant::now();
    generate(&model, &warm, Some(&real), &labels, 0, batch, device, &hidden)?;
    let warmup_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let (_, stats) = generate(&model, config, Some(&real), &labels, 0, batch, device, &hidden)?;
    let s_per_batch = start.elapsed().as_secs_f64();
    let [rss_anon_mib, rss_file_mib] = rss_split_mib();
    Ok(SampleBench {
        precision: config.train.precision,
        batch,
        steps: config.sample.steps,
        network_passes: stats.evaluations,
        warmup_s,
        s_per_batch,
        s_per_sample: s_per_batch / batch as f64,
        rss_anon_mib,
        rss_file_mib,
    })
}

#[derive(Debug, Serialize)]
pub struct AttentionBench {
    pub path: &'static str,
    /// `[B, H, N, D]`.
    pub shape: [usize; 4],
    pub forward_backward_s: f64,
    /// Growth of the process's peak resident memory over the warm-up and timed passes.
    pub peak_extra_mib: f64,
}

/// Forward + backward of attention at `shape` on `device` (with autodiff), through the project's
/// operation (`flash`) or burn's decomposed path.
pub fn attention(device: &Device, shape: [usize; 4], flash: bool, reps: usize) -> AttentionBench {
    let ad = device.clone().autodiff();
    let random = || Tensor::<4>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &ad).require_grad();
    let (q, k, v) = (random(), random(), random());
    let pass = || {
        let scale = (shape[3] as f32).powf(-0.5);
        let out = if flash { model3d::attention::flash(q.clone(), k.clone(), v.clone(), scale) } else { model3d::attention::decomposed(q.clone(), k.clone(), v.clone()) };
        let grads = out.sum().backward();
        // Reading a gradient waits for the work.
        q.grad(&grads).map(|g| g.sum().into_scalar::<f32>())
    };
    reset_peak_rss();
    let base = rss_mib();
    pass();
    let start = Instant::now();
    for _ in 0..reps {
        pass();
    }
    let forward_backward_s = start.elapsed().as_secs_f64() / reps as f64;
    AttentionBench { path: if flash { "flash (project)" } else { "decomposed (burn)" }, shape, forward_backward_s, peak_extra_mib: peak_rss_mib() - base }
}

#[derive(Debug, Serialize)]
pub struct ConvBench {
    /// Input `[N, C, H, W]`.
    pub shape: [usize; 4],
    pub c_out: usize,
    pub forward_s: f64,
    /// The forward pass and the gradients of the input, the weight and the bias.
    pub forward_backward_s: f64,
    /// From `2·N·O·C·9·H·W` FLOPs a pass (the input and weight gradients are one pass each).
    pub forward_gflops: f64,
    pub forward_backward_gflops: f64,
}

/// The 3×3 convolution of `shape` `[N, C, H, W]` into `o` channels on `device`, forward alone
/// and forward + backward (with autodiff), each the mean of `reps` after one warm-up.
pub fn conv(device: &Device, shape: [usize; 4], o: usize, reps: usize) -> ConvBench {
    let ad = device.clone().autodiff();
    let normal = burn::tensor::Distribution::Normal(0.0, 1.0);
    let (x, weight, bias) = (Tensor::<4>::random(shape, normal, &ad).require_grad(), Tensor::<4>::random([o, shape[1], 3, 3], normal, &ad).require_grad(), Tensor::<1>::random([o], normal, &ad).require_grad());
    let forward = || model3d::conv3x3::conv3x3(x.clone(), weight.clone(), Some(bias.clone()));
    let inference = || model3d::conv3x3::conv3x3(x.clone().inner(), weight.clone().inner(), Some(bias.clone().inner()));
    // Reading a value waits for the work.
    let timed = |pass: &dyn Fn() -> f32| {
        pass();
        let start = Instant::now();
        for _ in 0..reps {
            pass();
        }
        start.elapsed().as_secs_f64() / reps as f64
    };
    let forward_s = timed(&|| inference().sum().into_scalar::<f32>());
    let forward_backward_s = timed(&|| {
        let grads = forward().sum().backward();
        weight.grad(&grads).map_or(0.0, |g| g.sum().into_scalar::<f32>()) + x.grad(&grads).map_or(0.0, |g| g.sum().into_scalar::<f32>())
    });
    let [n, c, h, w] = shape;
    let flop = 2.0 * (n * o * c * 9 * h * w) as f64;
    ConvBench { shape, c_out: o, forward_s, forward_backward_s, forward_gflops: flop / forward_s / 1e9, forward_backward_gflops: 3.0 * flop / forward_backward_s / 1e9 }
}

/// Resets the kernel's peak-RSS mark (`/proc/self/clear_refs`, Linux); a no-op elsewhere.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[derive(Debug, Serialize)]
pub struct MatmulBench {
    pub n: usize,
    pub dtype: String,
    pub tflops: f64,
}

/// Square matmul throughput on `device` in `dtype` (f32 or bf16): the peak that MFU figures are
/// quoted against.
pub fn matmul(device: &Device, n: usize, reps: usize, dtype: DType) -> MatmulBench {
    let random = || Tensor::<2>::random([n, n], burn::tensor::Distribution::Normal(0.0, 1.0), device).cast(dtype);
    let (a, b) = (random(), random());
    let _ = a.clone().matmul(b.clone()).sum().cast(DType::F32).into_scalar::<f32>();
    let start = Instant::now();
    let mut acc = Tensor::<1>::zeros([1], device);
    for _ in 0..reps {
        acc = acc + a.clone().matmul(b.clone()).sum().cast(DType::F32).reshape([1]);
    }
    let _ = acc.into_scalar::<f32>();
    let s = start.elapsed().as_secs_f64() / reps as f64;
    MatmulBench { n, dtype: format!("{dtype:?}"), tflops: 2.0 * (n as f64).powi(3) / s / 1e12 }
}

#[derive(Debug, Serialize)]
pub struct FeatureBench {
    pub batch: usize,
    /// I3D on 16-frame 64x64 clips (resize to 224 included).
    pub i3d_s_per_clip: f64,
    /// The FID Inception on 64x64 images (resize to 299 included).
    pub inception_s_per_image: f64,
    /// One Fréchet distance between full-rank Gaussians of the FVD and FID feature widths.
    pub frechet_400_s: f64,
    pub frechet_2048_s: f64,
}

/// Feature-network throughput at the evaluation protocol's shapes, after one warm-up batch
/// (speed does not depend on the weights, so the networks keep their initial ones), and the
/// Fréchet distance at both feature widths.
pub fn features(device: &Device, batch: usize) -> Result<FeatureBench> {
    let timed = |run: &dyn Fn() -> Vec<f32>| {
        run(); // warm-up
        let start = Instant::now();
        run();
        start.elapsed().as_secs_f64() / batch as f64
    };
    let uniform = |shape: [usize; 5]| Tensor::<5>::random(shape, burn::tensor::Distribution::Uniform(0.0, 1.0), device);
    let i3d = I3d::new(device);
    let i3d_s_per_clip = timed(&|| i3d.features(uniform([batch, 16, 3, 64, 64]).mul_scalar(255.0)).into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
    let inception = FidInception::new(device);
    let images = || uniform([batch, 1, 3, 64, 64]).reshape([batch, 3, 64, 64]);
    let inception_s_per_image = timed(&|| inception.features(images()).into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
    let frechet = |d: usize| -> Result<f64> {
        let n = 2 * d;
        let fit = |seed| Gaussian::fit(&model3d::noise::gaussian(seed, n * d), d);
        let (a, b) = (fit(1)?, fit(2)?);
        let start = Instant::now();
        frechet_distance(&a, &b)?;
        Ok(start.elapsed().as_secs_f64())
    };
    Ok(FeatureBench { batch, i3d_s_per_clip, inception_s_per_image, frechet_400_s: frechet(400)?, frechet_2048_s: frechet(2048)? })
}

#[derive(Debug, Serialize)]
pub struct DecodeBench {
    pub videos: usize,
    pub frames: usize,
    pub size: usize,
    /// Decode + centre crop + area resize, one thread.
    pub ours_frames_per_s: f64,
    pub ours_videos_per_s: f64,
    /// `ffmpeg -threads 1` with the same crop and area scale to raw RGB.
    pub ffmpeg_frames_per_s: f64,
    pub ffmpeg_videos_per_s: f64,
}

/// Decodes every video in `dir` to `size × size` with this crate and with the FFmpeg CLI, one
/// thread each, `rounds` times.
pub fn decode_speed(dir: &Path, size: usize, rounds: usize) -> Result<DecodeBench> {
    let listing = video_io::datasets::video_folder(dir)?;
    if listing.inputs.is_empty() {
        bail!("{}: no videos", dir.display());
    }
    let mut frames = 0;
    let start = Instant::now();
    for _ in 0..rounds {
        frames = 0;
        for input in &listing.inputs {
            frames += decode(&input.path, TimeRange::default(), FrameSize::Square(size))?.frames.len();
        }
    }
    let ours = start.elapsed().as_secs_f64() / rounds as f64;
    let filter = format!("format=rgb24,crop=min(iw\\,ih):min(iw\\,ih),scale={size}:{size}:flags=area");
    let start = Instant::now();
    for _ in 0..rounds {
        for input in &listing.inputs {
            let status = Command::new("ffmpeg")
                .args(["-v", "error", "-threads", "1", "-filter_threads", "1", "-i"])
                .arg(&input.path)
                .args(["-fps_mode", "passthrough", "-an", "-vf", &filter, "-f", "rawvideo", "-pix_fmt", "rgb24", "-y", "/dev/null"])
                .status()
                .context("running the ffmpeg command line")?;
            if !status.success() {
                bail!("ffmpeg failed on {}", input.path.display());
            }
        }
    }
    let cli = start.elapsed().as_secs_f64() / rounds as f64;
    let n = listing.inputs.len();
    Ok(DecodeBench {
        videos: n,
        frames,
        size,
        ours_frames_per_s: frames as f64 / ours,
        ours_videos_per_s: n as f64 / ours,
        ffmpeg_frames_per_s: frames as f64 / cli,
        ffmpeg_videos_per_s: n as f64 / cli,
    })
}
