//! `sid2 sweep`: sampling settings chosen after training. A grid over the weights (EMAs the run
//! keeps, `raw`, or any power-EMA width rebuilt from snapshots), the guidance scale and the
//! guidance interval. Every cell samples the same clips with the same noise and is scored
//! against the real continuation and against repeating the last context frame. Each finished
//! cell is saved on its own, so a sweep that was stopped continues with the cells not yet done.
//!
//! ```text
//! OUT/ (default RUN/sweep/)
//!   cells/<cell>.json      one finished cell's settings and scores
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
use crate::eval::{compare, write_json};
use crate::globals::Globals;
use crate::plot::{Heatmap, write_heatmaps};
use crate::run::checkpoint::load_module;
use crate::run::{RunDir, Weights};
use crate::sample::generate;
use crate::train::open_data;

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
        let row = match (s, s.strip_prefix("sigma=")) {
            ("raw", _) => Self::Raw,
            (_, Some(v)) => Self::Sigma(v.parse().map_err(|_| anyhow::anyhow!("--ema {s}: expected sigma=<σ_rel>, e.g. sigma=0.07"))?),
            _ => Self::Ema(s.parse().map_err(|_| anyhow::anyhow!("--ema {s}: expected raw, an EMA decay like 0.999, or sigma=<σ_rel>"))?),
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
    pub psnr_db: f64,
    pub ssim: f64,
    /// On the moving pixels (docs/evaluation.md); `None` where nothing moves.
    pub moving_psnr_db: Option<f64>,
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
    /// Index into `cells` of the best PSNR.
    pub best: usize,
    /// Repeating the last context frame, the same for every cell.
    pub last_frame_psnr_db: f64,
    pub last_frame_ssim: f64,
    pub last_frame_moving_psnr_db: Option<f64>,
}

pub fn run(args: Args, globals: &Globals) -> Result<()> {
    let run = RunDir::new(&args.run);
    let base = run.load_config()?;
    if base.diffusion.context_frames == 0 {
        bail!("{}: sid2 sweep scores video prediction against the real continuation; an image run needs the image judge or FID, which it does not use yet", run.path().display());
    }
    // The grid, every value checked before anything is loaded or written.
    let rows: Vec<Row> = if args.ema.is_empty() { default_rows(&base) } else { args.ema.iter().map(|s| Row::parse(s, &base)).collect::<Result<_>>()? };
    let guidance = if args.guidance.is_empty() { vec![base.sample.guidance] } else { args.guidance.clone() };
    if base.model.num_classes == 0 && guidance.iter().any(|&g| g != base.sample.guidance) {
        bail!("--guidance: this run is unconditional (model.num_classes = 0), so guidance does not apply");
    }
    let run_interval = base.sample.interval.map(|i| i.logsnr_range());
    let intervals: Vec<Option<(f64, f64)>> = if args.interval.is_empty() { vec![run_interval] } else { args.interval.iter().map(|s| parse_interval(s, run_interval)).collect::<Result<_>>()? };
    let out = args.out.clone().unwrap_or_else(|| run.path().join("sweep"));
    let mut config = base.clone();
    if let Some(steps) = args.steps {
        config.sample.steps = steps as usize;
    }
    let data = open_data(&args.data, &config).context("--data")?;
    let real = data.clips(0..(args.count as usize).min(data.len()));
    let labels: Vec<i64> = real.labels.iter().map(|&l| if config.model.num_classes == 0 { 0 } else { l as i64 }).collect();
    let device = globals.device()?;
    let mut cells: Vec<(Row, f64, Option<(f64, f64)>)> = Vec::new();
    for row in &rows {
        for &g in &guidance {
            cells.extend(intervals.iter().map(|&i| (row.clone(), g, i)));
        }
    }
    std::fs::create_dir_all(out.join("cells")).with_context(|| format!("cannot create {}", out.display()))?;
    let done = |c: &(Row, f64, Option<(f64, f64)>)| out.join("cells").join(format!("{}.json", Cell::id(&c.0, c.1, c.2)));
    let todo = cells.iter().filter(|c| !done(c).exists()).count();
    if todo < cells.len() {
        println!("{} of {} cells already done in {}; sampling the other {todo}", cells.len() - todo, cells.len(), out.display());
    }
    let bar = globals.bar((todo * real.len()) as u64, "sweep {bar:25} {pos}/{len} clips  ETA {eta}  {msg}");
    let mut loaded: Option<(Row, model3d::UViT)> = None;
    for cell in cells.iter().filter(|c| !done(c).exists()) {
        let (row, g, interval) = cell;
        if loaded.as_ref().is_none_or(|(r, _)| r != row) {
            loaded = Some((row.clone(), weights(&run, &config, row, &out, &device)?));
        }
        let model = &loaded.as_ref().expect("loaded above").1;
        let mut c = config.clone();
        c.sample.guidance = *g;
        c.sample.interval = interval.map(|(min, max)| GuidanceInterval::Logsnr { min, max });
        bar.set_message(Cell::id(row, *g, *interval));
        let clip_bar = indicatif::ProgressBar::hidden();
        let (generated, _) = generate(model, &c, Some(&real), &labels, args.seed, args.batch as usize, &device, &clip_bar)?;
        bar.inc(real.len() as u64);
        let report = compare(&generated, &real, c.diffusion.context_frames);
        let scored = Cell { weights: row.clone(), guidance: *g, interval: *interval, psnr_db: report.mean_psnr_db, ssim: report.mean_ssim, moving_psnr_db: report.moving.as_ref().and_then(|m| m.psnr_db) };
        write_json(&done(cell), &scored)?;
    }
    bar.finish_and_clear();
    let scored: Vec<Cell> = cells.iter().map(|c| Ok(serde_json::from_str(&std::fs::read_to_string(done(c))?)?)).collect::<Result<_>>()?;
    let baseline = compare(&real, &real, config.diffusion.context_frames);
    let best = (0..scored.len()).max_by(|&a, &b| scored[a].psnr_db.total_cmp(&scored[b].psnr_db)).expect("a grid has cells");
    let sweep = Sweep {
        clips: real.len(),
        steps: config.sample.steps,
        seed: args.seed,
        best,
        last_frame_psnr_db: baseline.last_frame_psnr_db,
        last_frame_ssim: baseline.last_frame_ssim,
        last_frame_moving_psnr_db: baseline.moving.as_ref().and_then(|m| m.last_frame_psnr_db),
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
    for (file, map) in [
        ("sweep-psnr.png", metric("PSNR (dB)", |c| c.psnr_db)),
        ("sweep-ssim.png", metric("SSIM", |c| c.ssim)),
        ("sweep-moving-psnr.png", metric("moving-pixel PSNR (dB)", |c| c.moving_psnr_db.unwrap_or(f64::NAN))),
    ] {
        write_heatmaps(&out.join(file), &map)?;
    }
    println!("sweep.json and heat maps in {}", out.display());
    if run.writable() {
        let path = std::path::absolute(out.join("sweep.json")).unwrap_or_else(|_| out.join("sweep.json"));
        run.record(&crate::run::events::Event::Sweep { unix_s: crate::run::events::now(), path })?;
        crate::report::refresh(&run);
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
    i.map_or_else(|| "every step".to_owned(), |(a, b)| format!("λ in [{a}, {b})"))
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

/// The cells as a table, the best marked.
pub fn table(sweep: &Sweep) -> String {
    let mut text = format!("{:<16} {:>8} {:<22} {:>9} {:>7} {:>12}\n", "weights", "guidance", "interval", "PSNR", "SSIM", "moving PSNR");
    for (i, c) in sweep.cells.iter().enumerate() {
        let moving = c.moving_psnr_db.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        let mark = if i == sweep.best { "  <- best" } else { "" };
        text += &format!("{:<16} {:>8} {:<22} {:>9.2} {:>7.4} {:>12}{mark}\n", c.weights.name(), c.guidance, interval_words(c.interval), c.psnr_db, c.ssim, moving);
    }
    let moving = sweep.last_frame_moving_psnr_db.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    text += &format!("{:<16} {:>8} {:<22} {:>9.2} {:>7.4} {:>12}\n", "last frame", "", "(repeated)", sweep.last_frame_psnr_db, sweep.last_frame_ssim, moving);
    text
}
