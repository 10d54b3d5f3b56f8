//! Turning listed inputs into shards, in parallel, resumably, with a manifest of everything done
//! and everything skipped.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array5, s};
use serde::{Deserialize, Serialize};

use crate::clips::Clips;
use crate::datasets::{Input, InputKind, Listing};
use crate::decode::{Damage, FrameSize, decode};
use crate::error::{Error, Result};
use crate::resize::{area_resize, centre_square};
use crate::sampling::{FrameSampling, windows};
use crate::shard::{Record, RecordLayout, Shard, write_shard};

pub const MANIFEST: &str = "manifest.json";

/// What a prepared data set is made of; stored in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareConfig {
    /// Frames per clip (`T`); 1 for images.
    pub frames: usize,
    /// Side of the square frames.
    pub size: usize,
    #[serde(default)]
    pub sampling: FrameSampling,
    /// Non-overlapping clips taken from each video, from its start.
    #[serde(default = "one")]
    pub clips_per_video: usize,
    /// Inputs per shard: the unit of work that a resumed run skips when done.
    #[serde(default = "inputs_per_shard")]
    pub inputs_per_shard: usize,
}

fn one() -> usize {
    1
}
fn inputs_per_shard() -> usize {
    64
}

/// A `[data]` setting that breaks a rule: `field` is relative to the section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSetting {
    pub field: String,
    pub value: String,
    pub rule: String,
}

impl std::fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "data.{} = {}: {}", self.field, self.value, self.rule)
    }
}

impl PrepareConfig {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        // The upper bounds are far past any real clip; larger values are typos that would overflow
        // the record size.
        for (field, v, max) in [("frames", self.frames, 1024), ("size", self.size, 8192), ("clips_per_video", self.clips_per_video, 1 << 20), ("inputs_per_shard", self.inputs_per_shard, 1 << 20)] {
            if v == 0 {
                return Err(InvalidSetting { field: field.into(), value: "0".into(), rule: "must be at least 1".into() });
            }
            if v > max {
                return Err(InvalidSetting { field: field.into(), value: v.to_string(), rule: format!("must be at most {max}") });
            }
        }
        self.sampling.validate().map_err(|(field, value, rule)| InvalidSetting { field: format!("sampling.{field}"), value, rule })
    }

    pub fn layout(&self) -> RecordLayout {
        RecordLayout { frames: self.frames as u32, height: self.size as u32, width: self.size as u32, channels: 3 }
    }
}

/// The record of a prepared data set (`manifest.json` beside the shards).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub config: PrepareConfig,
    pub layout: RecordLayout,
    pub classes: Vec<String>,
    /// Inputs listed when preparation started (resuming requires the same listing).
    pub inputs: usize,
    pub shards: Vec<ShardEntry>,
    pub skipped: Vec<Skipped>,
    /// Inputs damaged part-way: the clips before the damage are in the shards.
    #[serde(default)]
    pub damaged: Vec<Damaged>,
    pub missing: Vec<PathBuf>,
    /// Whether every shard of the listing was written; a data set whose preparation stopped
    /// part-way is refused until `prepare` has continued it to the end.
    #[serde(default = "finished")]
    pub complete: bool,
}

/// Manifests written before `complete` was recorded were only written whole.
fn finished() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub chunk: usize,
    pub file: String,
    pub records: usize,
    pub crc32: u32,
    /// Record `source` field indexes this list.
    pub sources: Vec<Source>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub path: PathBuf,
    /// Which clip of the video (0 for the first window).
    pub clip: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Damaged {
    pub path: PathBuf,
    /// Where decoding failed and why.
    pub damage: Damage,
    /// Whole clips taken from the frames before the damage.
    pub clips_kept: usize,
}

impl Manifest {
    pub fn records(&self) -> usize {
        self.shards.iter().map(|s| s.records).sum()
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::corrupt(&path, e))
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::input(&path, format!("cannot record the inputs: {e}")))?;
        crate::atomic::write_bytes(&path, &[text.as_bytes()])
    }
}

/// Summary of one `prepare` call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrepareReport {
    pub chunks_done: usize,
    pub chunks_resumed: usize,
    pub records: usize,
    /// Records in the whole data set, resumed shards included.
    pub total_records: usize,
    pub skipped: usize,
    /// Inputs damaged part-way whose clean clips were kept.
    pub damaged: usize,
    pub missing: usize,
}

/// Decodes every input of `listing` into shards under `out`, `workers` inputs at a time. A run
/// that stopped part-way continues with the first chunk not in the manifest.
pub fn prepare(listing: &Listing, config: &PrepareConfig, out: &Path, workers: usize, progress: bool) -> Result<PrepareReport> {
    config.validate().map_err(|e| Error::input(out, e))?;
    if config.frames != 1 && listing.inputs.iter().any(|i| i.kind == InputKind::Image) {
        return Err(Error::input(out, format!("data.frames = {}: image inputs make clips of 1 frame", config.frames)));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let (mut manifest, resumed) = open_manifest(listing, config, out)?;
    let mut report = PrepareReport { missing: listing.missing.len(), chunks_resumed: resumed, ..PrepareReport::default() };
    manifest.save(out)?;

    let chunks: Vec<usize> = (0..listing.inputs.len().div_ceil(config.inputs_per_shard))
        .filter(|c| !manifest.shards.iter().any(|s| s.chunk == *c))
        .collect();
    let todo: usize = chunks.iter().map(|&c| listing.inputs[c * config.inputs_per_shard..].len().min(config.inputs_per_shard)).sum();
    let bar = if progress { ProgressBar::new(todo as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("prepare {bar:30} {pos}/{len} inputs  {per_sec}  ETA {eta}").expect("valid template"));
    let runtime = decode_runtime(workers)?;
    for chunk in chunks {
        let start = chunk * config.inputs_per_shard;
        let inputs = &listing.inputs[start..(start + config.inputs_per_shard).min(listing.inputs.len())];
        let results = runtime.block_on(decode_all(inputs, config, &bar));
        let entry = write_chunk(out, chunk, config, inputs, results, &mut manifest, &mut report)?;
        tracing::info!(chunk, records = entry.records, "shard written");
        manifest.shards.push(entry);
        manifest.shards.sort_by_key(|s| s.chunk);
        manifest.save(out)?;
    }
    bar.finish_and_clear();
    manifest.complete = true;
    manifest.save(out)?;
    report.total_records = manifest.records();
    Ok(report)
}

/// The manifest to continue: a fresh one, or the one in `out` (which must have been made with
/// the same settings and inputs) without the shards that are no longer whole. Also returns how
/// many shards are kept.
fn open_manifest(listing: &Listing, config: &PrepareConfig, out: &Path) -> Result<(Manifest, usize)> {
    let fresh = Manifest {
        format_version: crate::shard::VERSION,
        config: config.clone(),
        layout: config.layout(),
        classes: listing.classes.clone(),
        inputs: listing.inputs.len(),
        shards: Vec::new(),
        skipped: listing.unreadable.iter().map(|(path, reason)| Skipped { path: path.clone(), reason: reason.clone() }).collect(),
        damaged: Vec::new(),
        missing: listing.missing.clone(),
        complete: false,
    };
    if !out.join(MANIFEST).exists() {
        return Ok((fresh, 0));
    }
    let mut kept = Manifest::load(out)?;
    let same = kept.config == fresh.config && kept.classes == fresh.classes && kept.inputs == fresh.inputs && kept.format_version == fresh.format_version;
    if !same {
        return Err(Error::input(out.join(MANIFEST), "was made with other settings or inputs; choose another output folder or delete this one"));
    }
    kept.shards.retain(|s| Shard::open(&out.join(&s.file)).is_ok_and(|sh| sh.crc == s.crc32));
    // What was recorded for chunks being redone is recorded again when they are redone.
    let kept_chunks: HashSet<usize> = kept.shards.iter().map(|s| s.chunk).collect();
    let chunk_of: HashMap<&Path, usize> = listing.inputs.iter().enumerate().map(|(i, input)| (input.path.as_path(), i / config.inputs_per_shard)).collect();
    let still_kept = |path: &Path| chunk_of.get(path).is_none_or(|c| kept_chunks.contains(c));
    kept.skipped.retain(|s| still_kept(&s.path));
    kept.damaged.retain(|d| still_kept(&d.path));
    let resumed = kept.shards.len();
    kept.complete = false;
    Ok((kept, resumed))
}

/// Writes one chunk's clips as a shard, recording skipped and damaged inputs.
fn write_chunk(
    out: &Path,
    chunk: usize,
    config: &PrepareConfig,
    inputs: &[Input],
    results: Vec<Result<InputClips>>,
    manifest: &mut Manifest,
    report: &mut PrepareReport,
) -> Result<ShardEntry> {
    let (mut sources, mut records) = (Vec::new(), Vec::new());
    for (input, result) in inputs.iter().zip(results) {
        let clips = match result {
            Ok(clips) => clips,
            Err(e) => {
                tracing::warn!(path = %input.path.display(), reason = %reason(&e), "skipped input");
                manifest.skipped.push(Skipped { path: input.path.clone(), reason: reason(&e) });
                report.skipped += 1;
                continue;
            }
        };
        if let Some(damage) = clips.damage {
            tracing::warn!(path = %input.path.display(), frame = damage.frame, reason = %damage.reason, kept = clips.clips.len(), "damaged input: clean clips kept");
            manifest.damaged.push(Damaged { path: input.path.clone(), damage, clips_kept: clips.clips.len() });
            report.damaged += 1;
        }
        for i in 0..clips.clips.len() {
            sources.push(Source { path: input.path.clone(), clip: i });
        }
        records.push(clips.clips);
    }
    let file = format!("shard-{chunk:05}.bin");
    let per_clip = config.layout().pixel_bytes();
    let records: Vec<Record<'_>> = records
        .iter()
        .flat_map(|c| c.pixels.as_slice().expect("clips are built in standard layout").chunks_exact(per_clip).zip(&c.labels))
        .enumerate()
        .map(|(i, (pixels, &label))| Record { label, source: i as u32, pixels })
        .collect();
    let crc = write_shard(&out.join(&file), config.layout(), records.iter().copied())?;
    report.records += records.len();
    report.chunks_done += 1;
    Ok(ShardEntry { chunk, file, records: records.len(), crc32: crc, sources })
}

fn reason(e: &Error) -> String {
    match e {
        Error::Input { reason, .. } | Error::Corrupt { reason, .. } => reason.clone(),
        Error::Io { error, .. } => error.to_string(),
    }
}

/// The runtime that decodes: at most `workers` blocking decodes at a time (decoding is CPU-bound
/// FFmpeg work, so it runs on tokio's blocking pool, sized to the workers).
fn decode_runtime(workers: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(workers.max(1))
        .thread_name("decode")
        .build()
        .map_err(|e| Error::io(Path::new("(tokio runtime)"), e))
}

/// Decodes `inputs` concurrently on the runtime's blocking pool; results come back in input order.
async fn decode_all(inputs: &[Input], config: &PrepareConfig, bar: &ProgressBar) -> Vec<Result<InputClips>> {
    let config = Arc::new(config.clone());
    let tasks: Vec<_> = inputs
        .iter()
        .map(|input| {
            let (input, config, bar) = (input.clone(), config.clone(), bar.clone());
            tokio::task::spawn_blocking(move || {
                let result = clips_of(&input, &config);
                bar.inc(1);
                result
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for (task, input) in tasks.into_iter().zip(inputs) {
        results.push(task.await.unwrap_or_else(|e| Err(Error::input(&input.path, format!("decoder crashed: {e}")))));
    }
    results
}

/// The clips taken from one input, and any damage that ended its decoding early.
#[derive(Clone, Debug)]
pub struct InputClips {
    pub clips: Clips,
    pub damage: Option<Damage>,
}

/// The clips of one input, each `[T, H, W, 3]`, labelled with the input's label.
pub fn clips_of(input: &Input, config: &PrepareConfig) -> Result<InputClips> {
    match input.kind {
        InputKind::Video { range } => {
            let decoded = decode(&input.path, range, FrameSize::Square(config.size))?;
            let sampled = config.sampling.indices(&decoded.frames);
            let windows = windows(&sampled, config.frames, config.clips_per_video);
            if windows.is_empty() {
                let damage = decoded.damage.as_ref().map(|d| format!(" (damaged at frame {}: {})", d.frame, d.reason)).unwrap_or_default();
                let why = format!("too short: {} frames after sampling, a clip needs {}{damage}", sampled.len(), config.frames);
                return Err(Error::input(&input.path, why));
            }
            let (s, n) = (config.size, windows.len());
            let mut pixels = Array5::<u8>::zeros((n, config.frames, s, s, 3));
            for (i, window) in windows.iter().enumerate() {
                for (f, &frame) in window.iter().enumerate() {
                    let rgb = ndarray::ArrayView3::from_shape((s, s, 3), &decoded.frames[frame].rgb).expect("decoded at the config's size");
                    pixels.slice_mut(s![i, f, .., .., ..]).assign(&rgb);
                }
            }
            Ok(InputClips { clips: Clips::new(pixels, vec![input.label; n]), damage: decoded.damage })
        }
        InputKind::Image => {
            let bytes = std::fs::read(&input.path).map_err(|e| Error::io(&input.path, e))?;
            if let Some(why) = truncated_jpeg(&bytes) {
                return Err(Error::input(&input.path, why));
            }
            let img = image::load_from_memory(&bytes).map_err(|e| Error::input(&input.path, format!("not a readable image: {e}")))?.to_rgb8();
            let (w, h) = (img.width() as usize, img.height() as usize);
            let (x0, y0, side) = centre_square(w, h);
            let bytes = area_resize(img.as_raw(), w * 3, (x0, y0, side, side), config.size, config.size);
            let pixels = Array5::from_shape_vec((1, 1, config.size, config.size, 3), bytes).expect("resized to the config's size");
            Ok(InputClips { clips: Clips::new(pixels, vec![input.label]), damage: None })
        }
    }
}

/// Why a JPEG file (SOI marker `FF D8` first) is cut short: it must end with the end-of-image
/// marker `FF D9`, padding after it aside. JPEG decoders conceal a missing tail by filling it
/// with grey, which is not training data.
fn truncated_jpeg(bytes: &[u8]) -> Option<String> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let end = bytes.iter().rposition(|&b| b != 0x00 && !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    (!bytes[..end].ends_with(&[0xFF, 0xD9])).then(|| format!("truncated JPEG: no end-of-image marker after {} bytes", bytes.len()))
}

/// Reads a prepared data set: every shard verified, records addressed by one global index.
/// `n` indices (at most `len`) spread evenly over `0..len`: `⌊i · len / n⌋`.
pub fn spread(n: usize, len: usize) -> Vec<usize> {
    let n = n.min(len);
    (0..n).map(|i| i * len / n).collect()
}

pub struct ShardDataset {
    pub manifest: Manifest,
    shards: Vec<Shard>,
    /// Global index of each shard's first record.
    starts: Vec<usize>,
}

impl ShardDataset {
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "no prepared data set here (run `sid2 prepare` first)")));
        }
        let manifest = Manifest::load(dir)?;
        if !manifest.complete {
            let why = format!("preparation did not finish ({} shards written): run the same `sid2 prepare` command again to continue it", manifest.shards.len());
            return Err(Error::input(dir.join(MANIFEST), why));
        }
        let mut shards = Vec::new();
        let mut starts = Vec::new();
        let mut total = 0;
        for entry in &manifest.shards {
            let path = dir.join(&entry.file);
            let shard = Shard::open(&path)?;
            if shard.crc != entry.crc32 || shard.len != entry.records || shard.layout != manifest.layout {
                return Err(Error::corrupt(&path, "does not match the manifest (records, layout or checksum)"));
            }
            starts.push(total);
            total += shard.len;
            shards.push(shard);
        }
        Ok(Self { manifest, shards, starts })
    }

    pub fn len(&self) -> usize {
        self.manifest.records()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn layout(&self) -> RecordLayout {
        self.manifest.layout
    }

    /// Record `i` and where it came from.
    pub fn get(&self, i: usize) -> (Record<'_>, &Source) {
        let s = self.starts.partition_point(|&start| start <= i) - 1;
        let record = self.shards[s].get(i - self.starts[s]);
        (record, &self.manifest.shards[s].sources[record.source as usize])
    }

    /// Records `range` as host clips.
    pub fn clips(&self, range: std::ops::Range<usize>) -> Clips {
        Clips::from_records(self.layout(), range.map(|i| self.get(i).0))
    }

    /// `n` records (at most all of them) spread evenly over the data set, as host clips: a
    /// data set prepared class by class gives every class its share.
    pub fn spread(&self, n: usize) -> Clips {
        Clips::from_records(self.layout(), spread(n, self.len()).into_iter().map(|i| self.get(i).0))
    }
}
