//! `sid2 sweep`: sampling settings chosen after training. A grid over the weights (EMAs the run
//! keeps, `raw`, or any power-EMA width rebuilt from snapshots), the guidance scale and the
//! guidance interval. Every row's weights get the held-out loss at the fixed noise levels of
//! validation. For video runs, every cell samples the same clips with the same noise and is
//! scored against the real continuation and against repeating the last context frame. Image runs
//! given `--judge` sample `--count` images per class in every cell, with the same noise, and
//! are scored by the judge against the `--data` images (class accuracy, judge-FD, precision,
//! recall; the best cell has the lowest judge-FD); given `--inception` instead, by FID against as
//! many `--data` images spread over the set (the best cell has the lowest FID); with neither,
//! by the held-out loss alone, so their grid has one guidance setting. Each finished cell is
//! saved on its own, so a sweep that was stopped continues with the cells not yet done.
//!
//! ```text
//! OUT/ (default RUN/sweep/)
//!   cells/<cell>.json      one finished cell's settings and scores
//!   cells/<cell>.bin       its images, with --inception (FID reads shards)
//!   real.bin               the real images FID compares with (their Inception statistics are
//!                          cached beside it)
//!   weights/sigma-S.safetensors   power-EMA widths rebuilt for the sweep
//!   sweep.json             every cell, the baseline and the best cell
//!   sweep-psnr.png, sweep-moving-psnr.png, sweep-ssim.png   one heat map per score
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use model3d::GuidanceInterval;
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::eval::fidelity::{self, Metric};
use crate::eval::{compare, write_json};
use crate::globals::Globals;
use crate::judge::{self, Reference, Scores};
use crate::plot::{Heatmap, write_heatmaps};
use crate::run::checkpoint::load_module;
use crate::run::{RunDir, Weights};
use crate::sample::generate;
use crate::train::open_data;
use crate::train::validation::Validation;
use video_io::shard::Shard;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The trained run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Prepared held-out clips: the first --count condition every cell and are what it is
    /// scored against.
    #[arg(long)]
    pub data: PathBuf,
    /// Where the cells and results go (default: RUN/sweep).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Weights per row: `raw`, an EMA decay the run keeps (`0.999`), or a power-EMA width rebuilt
    /// from the run's snapshots (`sigma=0.07`); comma-separated (default: the kept decays).
    #[arg(long, value_delimiter = ',')]
    pub ema: Vec<String>,
    /// Guidance scales (default: the run's sample.guidance); class-conditional runs only.
    #[arg(long, value_delimiter = ',')]
    pub guidance: Vec<f64>,
    /// Guidance intervals: `off`, `run` (the run's sample.interval) or `MIN:MAX` in logSNR
    /// (default: `run`).
    #[arg(long, value_delimiter = ',')]
    pub interval: Vec<String>,
    /// Held-out clips per cell: the cost of the sweep is cells × clips × sample.steps passes
    /// (a cheap first pass: 2 clips and few steps).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub count: u32,
    /// Sampling steps per clip (default: the run's sample.steps).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub steps: Option<u32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Clips per network batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Image runs: score every cell with this judge (`sid2 judge train`) against --data.
    #[arg(long)]
    pub judge: Option<PathBuf>,
    /// Image runs without a judge: score every cell by FID with these Inception-v3 weights
    /// (pytorch-fid's pt_inception-2015-12-05-6726825d.pth) against --data.
    #[arg(long, conflicts_with = "judge")]
    pub inception: Option<PathBuf>,
}

/// The weights of a row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Row {
    Raw,
    Ema(f64),
    Sigma(f64),
}

impl Row {
    fn parse(s: &str, config: &RunConfig) -> Result<Self> {
        let s = s.trim();
        // `raw` and decays as `sample --ema` reads them.
        let row = match s.strip_prefix("sigma=") {
            Some(v) => Self::Sigma(v.parse().map_err(|_| anyhow::anyhow!("--ema {s}: expected sigma=<σ_rel>, e.g. sigma=0.07"))?),
            None => match s.parse::<Weights>().map_err(|e| anyhow::anyhow!("--ema {e}, or sigma=<σ_rel>"))? {
                Weights::Ema(d) => Self::Ema(d),
                Weights::Raw | Weights::Default => Self::Raw,
            },
        };
        if let Self::Ema(d) = row
            && !config.train.ema_decays.contains(&d)
        {
            bail!("--ema {d}: this run keeps EMA decays {:?} (other widths: sigma=<σ_rel> with train.ema snapshots)", config.train.ema_decays);
        }
        Ok(row)
    }

    fn name(&self) -> String {
        match self {
            Self::Raw => "raw".into(),
            Self::Ema(d) => format!("ema-{d}"),
            Self::Sigma(s) => format!("sigma-{s}"),
        }
    }
}

/// One cell's settings and scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub weights: Row,
    pub guidance: f64,
    /// `None`: guidance at every step.
    pub interval: Option<(f64, f64)>,
    /// The weighted loss on the held-out clips at validation's fixed noise levels and noise.
    pub heldout_loss: f64,
    /// Video runs: the predicted frames against the real continuation.
    pub psnr_db: Option<f64>,
    pub ssim: Option<f64>,
    /// On the moving pixels (docs/evaluation.md); `None` where nothing moves.
    pub moving_psnr_db: Option<f64>,
    /// Image runs with a judge: its scores of the cell's images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged: Option<Scores>,
    /// Image runs with `--inception`: FID of the cell's images against the real ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fid: Option<f64>,
    /// Network passes per sample, and the unconditional ones the guidance interval saved.
    #[serde(default)]
    pub network_passes: usize,
    #[serde(default)]
    pub skipped_unconditional: usize,
}

impl Cell {
    fn id(weights: &Row, guidance: f64, interval: Option<(f64, f64)>) -> String {
        let interval = interval.map_or_else(|| "off".to_owned(), |(a, b)| format!("{a}_{b}"));
        format!("{}-g{guidance}-i{interval}", weights.name())
    }
}

/// `sweep.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sweep {
    pub clips: usize,
    pub steps: usize,
    pub seed: u64,
    pub cells: Vec<Cell>,
    /// Index into `cells` of the best PSNR (video), or for images of the lowest judge-FD, FID or
    /// else held-out loss.
    pub best: usize,
    /// Repeating the last context frame, the same for every cell (video runs).
    pub last_frame_psnr_db: Option<f64>,
    pub last_frame_ssim: Option<f64>,
    pub last_frame_moving_psnr_db: Option<f64>,
}

pub fn run(args: Args, globals: &Globals) -> Result<()> {
    let run = RunDir::new(&args.run);
    let base = run.load_config()?;
    let video = base.diffusion.context_frames > 0;
    // The grid, every value checked before anything is loaded or written.
    let rows: Vec<Row> = if args.ema.is_empty() { default_rows(&base) } else { args.ema.iter().map(|s| Row::parse(s, &base)).collect::<Result<_>>()? };
    let guidance = if args.guidance.is_empty() { vec![base.sample.guidance] } else { args.guidance.clone() };
    if base.model.num_classes == 0 && guidance.iter().any(|&g| g != base.sample.guidance) {
        bail!("--guidance: this run is unconditional (model.num_classes = 0), so guidance does not apply");
    }
    let run_interval = base.sample.interval.map(|i| i.logsnr_range());
    let intervals: Vec<Option<(f64, f64)>> = if args.interval.is_empty() { vec![run_interval] } else { args.interval.iter().map(|s| parse_interval(s, run_interval)).collect::<Result<_>>()? };
    if !video && args.judge.is_none() && args.inception.is_none() && guidance.len() * intervals.len() > 1 {
        bail!("--guidance/--interval: without --judge or --inception an image run is scored by its held-out loss, which guidance does not change; give one setting, a judge (`sid2 judge train`) or Inception weights");
    }
    for (flag, given) in [("--judge", args.judge.is_some()), ("--inception", args.inception.is_some())] {
        if video && given {
            bail!("{flag}: scores images; this run predicts video (diffusion.context_frames > 0)");
        }
    }
    let out = args.out.clone().unwrap_or_else(|| run.path().join("sweep"));
    let mut config = base.clone();
    if let Some(steps) = args.steps {
        config.sample.steps = steps as usize;
    }
    let data = open_data(&args.data, &config).context("--data")?;
    let device = globals.device_for(config.train.precision)?;
    let validation = Validation::new(&data, &config, &device)?;
    let judged = match &args.judge {
        Some(path) => {
            let judge = judge::load(path, &device)?;
            judge.check(&args.data, data.layout())?;
            let all = data.clips(0..data.len());
            let reference = Reference::new(&judge, judge::frames(&all), &device)?;
            Some((judge, reference))
        }
        None => None,
    };
    let inception = match &args.inception {
        Some(path) => Some(fidelity::load(Metric::Fid, path, &device)?),
        None => None,
    };
    let per_class = |classes: usize| (0..classes.max(1) as i64).flat_map(|c| std::iter::repeat_n(c, args.count as usize)).collect::<Vec<i64>>();
    let (real, labels) = match (&judged, &inception) {
        // `--count` images of each class the run and the judge know.
        (Some((judge, _)), _) => (data.clips(0..0), per_class(config.model.num_classes.min(judge.card.shape.classes.len()))),
        // As many real images as each cell makes, spread over --data.
        (None, Some(_)) => {
            let labels = per_class(config.model.num_classes);
            (data.spread(labels.len()), labels)
        }
        (None, None) => {
            let real = data.clips(0..(args.count as usize).min(data.len()));
            let labels = real.labels.iter().map(|&l| if config.model.num_classes == 0 { 0 } else { l as i64 }).collect();
            (real, labels)
        }
    };
    let mut cells: Vec<(Row, f64, Option<(f64, f64)>)> = Vec::new();
    for row in &rows {
        for &g in &guidance {
            cells.extend(intervals.iter().map(|&i| (row.clone(), g, i)));
        }
    }
    std::fs::create_dir_all(out.join("cells")).with_context(|| format!("cannot create {}", out.display()))?;
    let real_images = out.join("real.bin");
    let fid = match inception {
        Some((net, crc)) => {
            real.write(&real_images)?;
            Some((net, crc, Shard::open(&real_images)?))
        }
        None => None,
    };
    let done = |c: &(Row, f64, Option<(f64, f64)>)| out.join("cells").join(format!("{}.json", Cell::id(&c.0, c.1, c.2)));
    let todo = cells.iter().filter(|c| !done(c).exists()).count();
    if todo < cells.len() {
        println!("{} of {} cells already done in {}; sampling the other {todo}", cells.len() - todo, cells.len(), out.display());
    }
    let bar = globals.bar((todo * labels.len()) as u64, "sweep {bar:25} {pos}/{len} samples  ETA {eta}  {msg}");
    let mut loaded: Option<(Row, model3d::UViT, f64)> = None;
    for cell in cells.iter().filter(|c| !done(c).exists()) {
        let (row, g, interval) = cell;
        if loaded.as_ref().is_none_or(|(r, ..)| r != row) {
            let model = weights(&run, &config, row, &out, &device)?;
            let loss = validation.score(&model, row.name(), 0).loss;
            loaded = Some((row.clone(), model, loss));
        }
        let (_, model, heldout_loss) = loaded.as_ref().expect("loaded above");
        let mut c = config.clone();
        c.sample.guidance = *g;
        c.sample.interval = interval.map(|(min, max)| GuidanceInterval::Logsnr { min, max });
        bar.set_message(Cell::id(row, *g, *interval));
        let mut scored = Cell { weights: row.clone(), guidance: *g, interval: *interval, heldout_loss: *heldout_loss, psnr_db: None, ssim: None, moving_psnr_db: None, judged: None, fid: None, network_passes: 0, skipped_unconditional: 0 };
        if video || judged.is_some() || fid.is_some() {
            let clip_bar = indicatif::ProgressBar::hidden();
            let conditioning = video.then_some(&real);
            let (generated, stats) = generate(model, &c, conditioning, &labels, args.seed, args.batch as usize, &device, &clip_bar)?;
            (scored.network_passes, scored.skipped_unconditional) = (stats.evaluations, stats.skipped_unconditional);
            if let Some((judge, reference)) = &judged {
                let ids: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
                scored.judged = Some(judge::scores(judge, judge::frames(&generated), &ids, reference, &device)?);
            } else if let Some((net, crc, real)) = &fid {
                let images = done(cell).with_extension("bin");
                generated.write(&images)?;
                scored.fid = Some(fidelity::score_with(net, *crc, &Shard::open(&images)?, real, args.batch as usize, &device, false)?.value);
            } else {
                let report = compare(&generated, &real, c.diffusion.context_frames);
                (scored.psnr_db, scored.ssim, scored.moving_psnr_db) = (Some(report.mean_psnr_db), Some(report.mean_ssim), report.moving.as_ref().and_then(|m| m.psnr_db));
            }
        }
        bar.inc(labels.len() as u64);
        write_json(&done(cell), &scored)?;
    }
    bar.finish_and_clear();
    let scored: Vec<Cell> = cells.iter().map(|c| Ok(serde_json::from_str(&std::fs::read_to_string(done(c))?)?)).collect::<Result<_>>()?;
    let baseline = video.then(|| compare(&real, &real, config.diffusion.context_frames));
    // Best: the highest PSNR for video, the lowest judge-FD, FID or else held-out loss for images.
    let key = |c: &Cell| c.psnr_db.or(c.judged.as_ref().map(|j| -j.judge_fd)).or(c.fid.map(|f| -f)).unwrap_or(-c.heldout_loss);
    let best = (0..scored.len()).max_by(|&a, &b| key(&scored[a]).total_cmp(&key(&scored[b]))).expect("a grid has cells");
    let sweep = Sweep {
        clips: labels.len(),
        steps: config.sample.steps,
        seed: args.seed,
        best,
        last_frame_psnr_db: baseline.as_ref().map(|b| b.last_frame_psnr_db),
        last_frame_ssim: baseline.as_ref().map(|b| b.last_frame_ssim),
        last_frame_moving_psnr_db: baseline.as_ref().and_then(|b| b.moving.as_ref()?.last_frame_psnr_db),
        cells: scored,
    };
    write_json(&out.join("sweep.json"), &sweep)?;
    print!("{}", table(&sweep));
    let columns: Vec<String> = guidance.iter().flat_map(|g| intervals.iter().map(|i| format!("g {g}, {}", interval_words(*i))).collect::<Vec<_>>()).collect();
    let rows_names: Vec<String> = rows.iter().map(Row::name).collect();
    let metric = |name: &str, f: fn(&Cell) -> f64| Heatmap {
        title: format!("{name} ({} held-out clips, {} steps)", sweep.clips, sweep.steps),
        rows: rows_names.clone(),
        columns: columns.clone(),
        values: sweep.cells.iter().map(f).collect(),
        best: sweep.best,
    };
    let mut maps = vec![("sweep-heldout-loss.png", metric("held-out loss", |c| c.heldout_loss))];
    if judged.is_some() {
        maps.extend([
            ("sweep-class-accuracy.png", metric("judge class accuracy", |c| judged_score(c, |s| s.class_accuracy))),
            ("sweep-judge-fd.png", metric("judge-FD (not FID)", |c| judged_score(c, |s| s.judge_fd))),
            ("sweep-precision.png", metric("judge precision", |c| judged_score(c, |s| s.precision))),
            ("sweep-recall.png", metric("judge recall", |c| judged_score(c, |s| s.recall))),
        ]);
    }
    if fid.is_some() {
        maps.push(("sweep-fid.png", metric("FID", |c| c.fid.unwrap_or(f64::NAN))));
    }
    if video {
        maps.extend([
            ("sweep-psnr.png", metric("PSNR (dB)", |c| c.psnr_db.unwrap_or(f64::NAN))),
            ("sweep-ssim.png", metric("SSIM", |c| c.ssim.unwrap_or(f64::NAN))),
            ("sweep-moving-psnr.png", metric("moving-pixel PSNR (dB)", |c| c.moving_psnr_db.unwrap_or(f64::NAN))),
        ]);
    }
    for (file, map) in maps {
        write_heatmaps(&out.join(file), &map)?;
    }
    println!("sweep.json and heat maps in {}", out.display());
    if run.writable() {
        let path = std::path::absolute(out.join("sweep.json")).unwrap_or_else(|_| out.join("sweep.json"));
        run.record(&crate::run::events::Event::Sweep { unix_s: crate::run::events::now(), path })?;
    }
    Ok(())
}

/// The kept EMA decays, or the raw weights when there are none.
fn default_rows(config: &RunConfig) -> Vec<Row> {
    match config.train.ema_decays.as_slice() {
        [] => vec![Row::Raw],
        decays => decays.iter().map(|&d| Row::Ema(d)).collect(),
    }
}

fn parse_interval(s: &str, run: Option<(f64, f64)>) -> Result<Option<(f64, f64)>> {
    match s.trim() {
        "off" => Ok(None),
        "run" => Ok(run),
        other => {
            let bounds = other.split_once(':').and_then(|(a, b)| Some((a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?)));
            match bounds {
                Some((min, max)) if min < max => Ok(Some((min, max))),
                _ => bail!("--interval {other}: expected off, run, or MIN:MAX in logSNR with MIN < MAX"),
            }
        }
    }
}

fn interval_words(i: Option<(f64, f64)>) -> String {
    i.map_or_else(|| "every step".to_owned(), |(a, b)| format!("λ in [{a:.2}, {b:.2})"))
}

/// The weights of a row: from the newest checkpoint, or rebuilt from snapshots into `out/weights`.
fn weights(run: &RunDir, config: &RunConfig, row: &Row, out: &Path, device: &Device) -> Result<model3d::UViT> {
    match row {
        Row::Raw => Ok(run.load_model(config, Weights::Raw, device)?.0),
        Row::Ema(d) => Ok(run.load_model(config, Weights::Ema(*d), device)?.0),
        Row::Sigma(s) => {
            let file = out.join("weights").join(format!("sigma-{s}.safetensors"));
            if !file.exists() {
                std::fs::create_dir_all(file.parent().expect("a folder")).with_context(|| format!("cannot create {}", out.display()))?;
                crate::ema::rebuild(run, *s, None, &file)?;
            }
            load_module(model3d::UViT::new(&config.model, device), &file)
        }
    }
}

/// A judge score of a cell; NaN (an empty heat-map cell) where it has none.
fn judged_score(c: &Cell, f: fn(&Scores) -> f64) -> f64 {
    c.judged.as_ref().map_or(f64::NAN, f)
}

/// The cells as a table, the best marked.
pub fn table(sweep: &Sweep) -> String {
    let show = |v: Option<f64>, digits: usize| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"));
    if sweep.cells.iter().any(|c| c.judged.is_some()) {
        let mut text = format!("{:<16} {:>8} {:<22} {:>13} {:>9} {:>9} {:>9} {:>7} {:>7}\n", "weights", "guidance", "interval", "held-out loss", "class acc", "judge-FD", "precision", "recall", "passes");
        for (i, c) in sweep.cells.iter().enumerate() {
            let mark = if i == sweep.best { "  <- best" } else { "" };
            let j = c.judged.as_ref();
            text += &format!(
                "{:<16} {:>8} {:<22} {:>13.5} {:>8}% {:>9} {:>9} {:>7} {:>7}{mark}\n",
                c.weights.name(),
                c.guidance,
                interval_words(c.interval),
                c.heldout_loss,
                show(j.map(|j| 100.0 * j.class_accuracy), 1),
                show(j.map(|j| j.judge_fd), 2),
                show(j.map(|j| j.precision), 3),
                show(j.map(|j| j.recall), 3),
                c.network_passes
            );
        }
        return text + "judge-FD: the Fréchet distance in the judge's features, not FID\n";
    }
    if sweep.cells.iter().any(|c| c.fid.is_some()) {
        let mut text = format!("{:<16} {:>8} {:<22} {:>13} {:>9} {:>7}\n", "weights", "guidance", "interval", "held-out loss", "FID", "passes");
        for (i, c) in sweep.cells.iter().enumerate() {
            let mark = if i == sweep.best { "  <- best" } else { "" };
            text += &format!("{:<16} {:>8} {:<22} {:>13.5} {:>9} {:>7}{mark}\n", c.weights.name(), c.guidance, interval_words(c.interval), c.heldout_loss, show(c.fid, 2), c.network_passes);
        }
        return text + &format!("FID of {} images per cell against as many real ones\n", sweep.clips);
    }
    let mut text = format!("{:<16} {:>8} {:<22} {:>13} {:>9} {:>7} {:>12}\n", "weights", "guidance", "interval", "held-out loss", "PSNR", "SSIM", "moving PSNR");
    for (i, c) in sweep.cells.iter().enumerate() {
        let mark = if i == sweep.best { "  <- best" } else { "" };
        text += &format!(
            "{:<16} {:>8} {:<22} {:>13.5} {:>9} {:>7} {:>12}{mark}\n",
            c.weights.name(),
            c.guidance,
            interval_words(c.interval),
            c.heldout_loss,
            show(c.psnr_db, 2),
            show(c.ssim, 4),
            show(c.moving_psnr_db, 2)
        );
    }
    if sweep.last_frame_psnr_db.is_some() {
        text += &format!(
            "{:<16} {:>8} {:<22} {:>13} {:>9} {:>7} {:>12}\n",
            "last frame",
            "",
            "(repeated)",
            "",
            show(sweep.last_frame_psnr_db, 2),
            show(sweep.last_frame_ssim, 4),
            show(sweep.last_frame_moving_psnr_db, 2)
        );
    }
    text
}
