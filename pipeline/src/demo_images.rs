//! `sid2 demo --images`: class-conditional CIFAR-10 images in seconds, from weights the project
//! trained itself (`scripts/learn-cifar10.sh`, examples/checkpoint/NOTICE.md): every class
//! sampled with the preset's interval guidance, written as a grid with one row per class.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use model3d::UViT;

use crate::config::RunConfig;
use crate::globals::Globals;
use crate::run::checkpoint::load_module;
use crate::sample::generate;

/// The preset the bundled weights were trained with.
const CONFIG: &str = include_str!("../../configs/cifar10.toml");

/// EMA weights of configs/cifar10.toml after its learning benchmark on CIFAR-10's training split.
const WEIGHTS: &[u8] = include_bytes!("../../examples/checkpoint/cifar10.safetensors");

/// CIFAR-10's classes in label order (its class folders, alphabetical).
const CLASSES: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Sampler steps: fewer than the preset's 64, so that the demo takes seconds.
const STEPS: usize = 32;

/// Samples `per_class` images of every class into `out/images/samples.png`.
pub fn run(out: &Path, per_class: usize, overrides: &[String], globals: &Globals) -> Result<()> {
    let overrides: Vec<String> = std::iter::once(format!("sample.steps={STEPS}")).chain(overrides.iter().cloned()).collect();
    let config = RunConfig::parse(CONFIG, &overrides).context("the image demo's config (configs/cifar10.toml)")?;
    let dir = out.join("images");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let weights = dir.join("cifar10.safetensors");
    video_io::atomic::write_bytes(&weights, &[WEIGHTS])?;
    let device = globals.device()?;
    let model = load_module(UViT::new(&config.model, &device), &weights)?;
    let labels: Vec<i64> = (0..CLASSES.len() as i64).flat_map(|c| std::iter::repeat_n(c, per_class)).collect();
    let started = Instant::now();
    let bar = globals.bar(labels.len() as u64, "images {bar:25} {pos}/{len}  ETA {eta}");
    let (images, stats) = generate(&model, &config, None, &labels, 0, 20, &device, &bar)?;
    bar.finish_and_clear();
    let classes: Vec<String> = CLASSES.iter().map(|c| c.to_string()).collect();
    let media = crate::encode::MediaArgs { fps: 4, upscale: 3 };
    let written = crate::encode::write_media(&dir, &images, None, 0, &media, &classes)?;
    images.write(&dir.join(crate::sample::PREDICTIONS))?;
    println!(
        "{} CIFAR-10 images ({per_class} per class, guidance {} inside its interval, {} steps, {} network passes each) in {:.1} s: {}",
        images.len(),
        config.sample.guidance,
        config.sample.steps,
        stats.evaluations,
        started.elapsed().as_secs_f64(),
        written.grid.map_or_else(|| dir.display().to_string(), |g| g.display().to_string())
    );
    Ok(())
}
