//! `sid2 judge`: a classifier the project trains itself on a prepared, labelled image folder, and
//! the scores it gives generated images without any outside weights:
//! - **class accuracy**: the fraction of samples it classifies as the class they were generated
//!   for (chance is 1 / classes);
//! - **judge-FD**: the Fréchet distance between Gaussians fitted to its penultimate features of
//!   the samples and of the real test images, the FID formula in this judge's features (never
//!   comparable with FID, which uses Inception-v3's);
//! - **precision and recall** in the same features ([`manifold`]).
//!
//! Beside them, the same scores of an equal count of real training images: the ceiling a
//! generator that reproduced the training distribution would reach.

pub mod classify;
pub mod fit;
pub mod manifold;
pub mod network;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use ndarray::{Array2, ArrayView4, Axis};
use serde::{Deserialize, Serialize};
use video_io::clips::Clips;
use video_io::prepare::{ShardDataset, spread};
use video_io::shard::{RecordLayout, Shard};

use crate::eval::frechet::{Gaussian, frechet_distance};
use crate::eval::write_json;
use crate::globals::Globals;
use crate::paths::{check_output_file, existing_file, existing_folder};
use crate::run::checkpoint::load_module;
use classify::{Seen, agreement, see};
use fit::{EpochRecord, Images, Recipe};
use network::{Judge, JudgeShape};

/// The metadata key of a judge's card in its weights file.
const CARD: &str = "sid2_judge";

/// Images per forward pass when scoring.
const BATCH: usize = 256;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Train a judge on a prepared, labelled image folder (`sid2 prepare --images`).
    Train(TrainArgs),
    /// Score generated images (a `predictions.bin` of `sid2 sample`) with a trained judge.
    Score(ScoreArgs),
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Prepared training images with their labels.
    #[arg(long)]
    pub data: PathBuf,
    /// Prepared test images of the same classes: accuracy after every epoch.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// The judge's weights file to write (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub epochs: u32,
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub batch: u32,
    /// Peak AdamW learning rate.
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Stage widths (each must be a multiple of 8).
    #[arg(long, value_delimiter = ',', default_values_t = [32, 64, 128])]
    pub widths: Vec<usize>,
    /// Residual blocks per stage.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub blocks: u32,
    /// Train on at most this many images (spread evenly over the data set), for quick runs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write even where the output would replace an input.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// The judge (from `sid2 judge train`).
    #[arg(long)]
    pub judge: PathBuf,
    /// Generated images with the labels they were conditioned on (`predictions.bin`).
    #[arg(long)]
    pub samples: PathBuf,
    /// Prepared real test images: the features judge-FD, precision and recall compare against.
    #[arg(long)]
    pub real: PathBuf,
    /// Prepared real training images: the same scores of as many of them as there are samples
    /// (the ceiling).
    #[arg(long)]
    pub ceiling: Option<PathBuf>,
    /// Also write the scores here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write even where the output would replace an input.
    #[arg(long)]
    pub overwrite: bool,
}

/// What a judge file says about itself (its safetensors metadata).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Card {
    pub shape: JudgeShape,
    pub params: u64,
    /// Accuracy on the test split after the last epoch, when one was given.
    pub test_accuracy: Option<f64>,
    pub train_images: usize,
    pub history: Vec<EpochRecord>,
}

/// A judge ready to score.
pub struct Loaded {
    pub net: Judge,
    pub card: Card,
    pub path: PathBuf,
}

/// The judge's scores of one set of images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub images: usize,
    /// Fraction classified as their label (conditioning class for samples, true class for real).
    pub class_accuracy: f64,
    /// Fréchet distance in the judge's features to the real test images ("judge-FD", not FID).
    pub judge_fd: f64,
    pub precision: f64,
    pub recall: f64,
}

/// Samples' scores and, when real training images were given, the ceiling.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub judge: PathBuf,
    pub judge_test_accuracy: Option<f64>,
    pub chance: f64,
    pub samples: Scores,
    pub ceiling: Option<Scores>,
}

impl Report {
    pub fn summary(&self) -> String {
        let row = |name: &str, s: &Scores| format!("{name:<22} {:>6} {:>9.1}% {:>9.2} {:>9.3} {:>7.3}\n", s.images, 100.0 * s.class_accuracy, s.judge_fd, s.precision, s.recall);
        let mut out = format!("{:<22} {:>6} {:>10} {:>9} {:>9} {:>7}\n", "", "images", "class acc", "judge-FD", "precision", "recall");
        out += &row("samples", &self.samples);
        if let Some(c) = &self.ceiling {
            out += &row("real train (ceiling)", c);
        }
        out += &format!("chance {:.1}%; judge-FD is the Fréchet distance in this judge's features, not FID\n", 100.0 * self.chance);
        out
    }
}

pub fn run(args: Args, globals: &Globals) -> Result<()> {
    match args.command {
        Command::Train(a) => train(a, globals),
        Command::Score(a) => {
            let report = score(&a, globals)?;
            print!("{}", report.summary());
            if let Some(path) = &a.json {
                write_json(path, &report)?;
            }
            Ok(())
        }
    }
}

/// A labelled image data set; the error names the folder and what it lacks.
pub fn labelled_images(dir: &Path, flag: &str) -> Result<(ShardDataset, Vec<String>)> {
    existing_folder(flag, dir)?;
    let data = ShardDataset::open(dir).with_context(|| format!("{flag} {}", dir.display()))?;
    let classes = data.manifest.classes.clone();
    if classes.len() < 2 {
        bail!("{flag} {}: the images have no labels (prepared from a folder without class subfolders); a judge needs at least 2 classes", dir.display());
    }
    if data.layout().frames != 1 {
        bail!("{flag} {}: records of {} frames; a judge scores images (1 frame)", dir.display(), data.layout().frames);
    }
    Ok((data, classes))
}

/// The judge a `judge train` call builds, and how it trains it.
#[derive(Clone, Debug)]
pub struct Plan {
    pub widths: Vec<usize>,
    pub blocks: usize,
    pub recipe: Recipe,
    /// At most this many training images, spread evenly over the data set.
    pub limit: Option<usize>,
}

impl Plan {
    /// The command line's defaults (`sid2 judge train --help`) with `epochs`.
    pub fn default_with(epochs: usize) -> Self {
        Self { widths: vec![32, 64, 128], blocks: 1, recipe: Recipe { epochs, batch: 128, lr: 3e-3, weight_decay: 5e-4 / 3e-3, seed: 0 }, limit: None }
    }
}

fn train(args: TrainArgs, globals: &Globals) -> Result<()> {
    if args.out.extension().is_none_or(|e| e != "safetensors") {
        bail!("--out {}: give a .safetensors file name", args.out.display());
    }
    if let Some(bad) = args.widths.iter().find(|w| **w == 0 || **w % 8 != 0 || **w > 4096) {
        bail!("--widths: {bad} must be a multiple of 8 from 8 to 4096");
    }
    let inputs: Vec<&Path> = [Some(args.data.as_path()), args.test.as_deref()].into_iter().flatten().collect();
    let recipe = Recipe { epochs: args.epochs as usize, batch: args.batch as usize, lr: args.lr, weight_decay: 5e-4 / args.lr, seed: args.seed };
    let plan = Plan { widths: args.widths.clone(), blocks: args.blocks as usize, recipe, limit: args.limit.map(|l| l as usize) };
    let (data, test) = (labelled_images(&args.data, "--data")?, args.test.as_ref().map(|t| labelled_images(t, "--test")).transpose()?);
    check_output_file("--out", &args.out, &inputs, args.overwrite)?;
    let card = train_and_save(&data, test.as_ref(), &args.out, &plan, globals)?;
    match card.test_accuracy {
        Some(a) => println!("judge written to {}: test accuracy {:.2}% (chance {:.1}%)", args.out.display(), 100.0 * a, 100.0 / card.shape.classes.len() as f64),
        None => println!("judge written to {} (no --test: accuracy unmeasured)", args.out.display()),
    }
    Ok(())
}

/// Trains a judge of `plan` on `data` (with its class names), scoring `test` after each epoch,
/// and writes it to `out`. Checks the two data sets agree before any training.
pub fn train_and_save(data: &(ShardDataset, Vec<String>), test: Option<&(ShardDataset, Vec<String>)>, out: &Path, plan: &Plan, globals: &Globals) -> Result<Card> {
    let (data, classes) = data;
    let size = data.layout().height as usize;
    if let Some((t, test_classes)) = test {
        let (tl, dl) = (t.layout(), data.layout());
        if (tl.height, tl.width) != (dl.height, dl.width) {
            bail!("--test: images of {}x{}, --data has {}x{}", tl.width, tl.height, dl.width, dl.height);
        }
        if test_classes != classes {
            bail!("--test: classes {:?} differ from --data's {:?}", test_classes, classes);
        }
    }
    let shape = JudgeShape { widths: plan.widths.clone(), blocks: plan.blocks, classes: classes.clone(), size };
    if data.layout().width as usize != size || size % shape.size_multiple() != 0 {
        bail!("--data: images of {}x{}; a judge of {} stages needs square images whose side is a multiple of {}", data.layout().width, size, shape.widths.len(), shape.size_multiple());
    }
    let mut images = Images::load(data);
    if let Some(limit) = plan.limit.filter(|&l| l < images.len()) {
        let picks = spread(limit, images.len());
        images = Images { pixels: images.pixels.select(Axis(0), &picks), labels: picks.iter().map(|&i| images.labels[i]).collect() };
    }
    let test_images = test.map(|(t, _)| Images::load(t));
    let device = globals.device()?;
    let recipe = &plan.recipe;
    println!("judge: {} parameters, {:.1} MFLOP per image, {} training images, {} epochs", shape.params(), shape.forward_flops() / 1e6, images.len(), recipe.epochs);
    let bar = globals.bar(recipe.epochs as u64, "judge {bar:25} epoch {pos}/{len}  ETA {eta}  {msg}");
    let (judge, history) = fit::fit(&shape, recipe, &images, test_images.as_ref(), &device, |r| {
        let test = r.test_accuracy.map_or(String::new(), |a| format!(", test accuracy {:.1}%", 100.0 * a));
        bar.set_message(format!("train accuracy {:.1}%{test}", 100.0 * r.train_accuracy));
        bar.inc(1);
        tracing::info!(epoch = r.epoch, loss = r.train_loss, train_accuracy = r.train_accuracy, test_accuracy = ?r.test_accuracy, seconds = r.seconds, "judge epoch");
    })?;
    bar.finish_and_clear();
    let card = Card { params: shape.params(), test_accuracy: history.last().and_then(|r| r.test_accuracy), train_images: images.len(), history, shape };
    save(out, &judge, &card)?;
    Ok(card)
}

/// Writes the judge with its card as metadata, atomically.
pub fn save(path: &Path, judge: &Judge, card: &Card) -> Result<()> {
    let card = serde_json::to_string(card)?;
    video_io::atomic::write_with(path, |tmp| {
        let mut store = SafetensorsStore::from_file(tmp).metadata(CARD, card).overwrite(true);
        judge.save_into(&mut store).map_err(|e| video_io::Error::io(tmp, std::io::Error::other(e.to_string())))
    })?;
    Ok(())
}

/// Reads a judge file: its card first (naming the file when it is not a judge), then weights of
/// exactly the network the card describes.
pub fn load(path: &Path, device: &Device) -> Result<Loaded> {
    existing_file("--judge", path)?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| anyhow!("{}: not a safetensors file ({e})", path.display()))?;
    let card = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CARD))
        .ok_or_else(|| anyhow!("{}: not a judge (no {CARD} metadata; make one with `sid2 judge train`)", path.display()))?;
    let card: Card = serde_json::from_str(card).with_context(|| format!("{}: unreadable judge card", path.display()))?;
    let net = load_module(Judge::new(&card.shape, device), path)?;
    Ok(Loaded { net, card, path: path.to_owned() })
}

impl Loaded {
    /// Images of another side or channel count than the judge's are refused, naming `source`.
    pub fn check(&self, source: &Path, layout: RecordLayout) -> Result<()> {
        let s = self.card.shape.size as u32;
        if (layout.height, layout.width, layout.channels, layout.frames) != (s, s, 3, 1) {
            bail!(
                "{}: {}x{} images of {} channels and {} frames; the judge {} was trained on {s}x{s} RGB images",
                source.display(),
                layout.width,
                layout.height,
                layout.channels,
                layout.frames,
                self.path.display()
            );
        }
        Ok(())
    }

    /// Labels outside the judge's classes are refused, naming `source`.
    pub fn check_labels(&self, source: &Path, labels: &[i32]) -> Result<Vec<usize>> {
        let classes = self.card.shape.classes.len();
        if let Some(bad) = labels.iter().find(|&&l| l < 0 || l as usize >= classes) {
            bail!("{}: label {bad}, the judge {} knows {classes} classes", source.display(), self.path.display());
        }
        Ok(labels.iter().map(|&l| l as usize).collect())
    }
}

/// The real test images as the judge sees them: what every score compares against.
pub struct Reference {
    seen: Seen,
    gaussian: Gaussian,
}

impl Reference {
    pub fn new(judge: &Loaded, images: ArrayView4<'_, u8>, device: &Device) -> Result<Self> {
        let seen = see(&judge.net, images, BATCH, device);
        let gaussian = Gaussian::fit(&seen.features, seen.dim)?;
        Ok(Self { seen, gaussian })
    }

    /// `n` of the reference's feature rows, spread evenly over it.
    fn rows(&self, n: usize) -> Array2<f32> {
        let total = self.seen.classes.len();
        let all = Array2::from_shape_vec((total, self.seen.dim), self.seen.features.clone()).expect("rows of dim features");
        all.select(Axis(0), &spread(n, total))
    }
}

/// The judge's scores of `images` `[N, H, W, 3]` labelled `labels`. Precision and recall compare
/// against as many reference images as there are images (k-NN radii depend on the set size).
pub fn scores(judge: &Loaded, images: ArrayView4<'_, u8>, labels: &[usize], reference: &Reference, device: &Device) -> Result<Scores> {
    let n = labels.len();
    if n <= manifold::K {
        bail!("{n} images: precision and recall need more than {} of them", manifold::K);
    }
    let seen = see(&judge.net, images, BATCH, device);
    let features = Array2::from_shape_vec((n, seen.dim), seen.features.clone()).expect("rows of dim features");
    let (precision, recall) = manifold::precision_recall(reference.rows(n).view(), features.view(), manifold::K);
    Ok(Scores {
        images: n,
        class_accuracy: agreement(&seen.classes, labels),
        judge_fd: frechet_distance(&Gaussian::fit(&seen.features, seen.dim)?, &reference.gaussian)?,
        precision,
        recall,
    })
}

/// One-frame clips `[N, 1, H, W, 3]` as images `[N, H, W, 3]`.
pub fn frames(clips: &Clips) -> ArrayView4<'_, u8> {
    clips.pixels.index_axis(Axis(1), 0)
}

fn score(args: &ScoreArgs, globals: &Globals) -> Result<Report> {
    let device = globals.device()?;
    let judge = load(&args.judge, &device)?;
    existing_file("--samples", &args.samples)?;
    let samples = Clips::read(&Shard::open(&args.samples)?);
    judge.check(&args.samples, samples.layout())?;
    let labels = judge.check_labels(&args.samples, &samples.labels)?;
    let (real, classes) = labelled_images(&args.real, "--real")?;
    judge.check(&args.real, real.layout())?;
    if classes != judge.card.shape.classes {
        bail!("--real {}: classes {:?}, the judge {} knows {:?}", args.real.display(), classes, args.judge.display(), judge.card.shape.classes);
    }
    let ceiling = args.ceiling.as_ref().map(|c| labelled_images(c, "--ceiling")).transpose()?;
    if let Some((c, _)) = &ceiling {
        judge.check(args.ceiling.as_deref().expect("given"), c.layout())?;
    }
    if let Some(json) = &args.json {
        let inputs = [args.judge.as_path(), args.samples.as_path(), args.real.as_path()];
        check_output_file("--json", json, &inputs, args.overwrite)?;
    }
    let real = real.clips(0..real.len());
    let reference = Reference::new(&judge, frames(&real), &device)?;
    let sample_scores = scores(&judge, frames(&samples), &labels, &reference, &device)?;
    let ceiling = match ceiling {
        Some((c, _)) => Some(ceiling_scores(&judge, &c, samples.len(), &reference, &device)?),
        None => None,
    };
    Ok(Report { judge: args.judge.clone(), judge_test_accuracy: judge.card.test_accuracy, chance: 1.0 / judge.card.shape.classes.len() as f64, samples: sample_scores, ceiling })
}

/// The scores of `n` real images of `data` spread evenly over it, with their true labels.
pub fn ceiling_scores(judge: &Loaded, data: &ShardDataset, n: usize, reference: &Reference, device: &Device) -> Result<Scores> {
    let clips = data.spread(n);
    let labels: Vec<usize> = clips.labels.iter().map(|&l| l as usize).collect();
    scores(judge, frames(&clips), &labels, reference, device)
}
