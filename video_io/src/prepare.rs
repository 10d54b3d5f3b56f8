//! Turning listed inputs into shards, in parallel, resumably, with a manifest of everything done
//! and everything skipped.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::clips::{FrameSampling, windows};
use crate::datasets::{Input, InputKind, Listing};
use crate::decode::{FrameSize, decode};
use crate::error::{Error, Result};
use crate::resize::{area_resize, centre_square};
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

impl PrepareConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [("frames", self.frames), ("size", self.size), ("clips_per_video", self.clips_per_video), ("inputs_per_shard", self.inputs_per_shard)] {
            if v == 0 {
                return Err(format!("data.{key}: must be at least 1"));
            }
        }
        self.sampling.validate().map_err(|e| format!("data.{e}"))
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
    pub missing: Vec<PathBuf>,
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
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        crate::atomic::write_bytes(&dir.join(MANIFEST), &[text.as_bytes()])
    }
}

/// Summary of one `prepare` call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrepareReport {
    pub chunks_done: usize,
    pub chunks_resumed: usize,
    pub records: usize,
    pub skipped: usize,
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
    let fresh = Manifest {
        format_version: crate::shard::VERSION,
        config: config.clone(),
        layout: config.layout(),
        classes: listing.classes.clone(),
        inputs: listing.inputs.len(),
        shards: Vec::new(),
        skipped: listing.unreadable.iter().map(|(path, reason)| Skipped { path: path.clone(), reason: reason.clone() }).collect(),
        missing: listing.missing.clone(),
    };
    let mut report = PrepareReport { missing: listing.missing.len(), ..PrepareReport::default() };
    let mut manifest = if out.join(MANIFEST).exists() {
        let old = Manifest::load(out)?;
        let same = old.config == fresh.config && old.classes == fresh.classes && old.inputs == fresh.inputs && old.format_version == fresh.format_version;
        if !same {
            return Err(Error::input(
                out.join(MANIFEST),
                "was made with other settings or inputs; choose another output folder or delete this one",
            ));
        }
        // Keep only shards that are still whole; the others are redone.
        let mut kept = old.clone();
        kept.shards.retain(|s| Shard::open(&out.join(&s.file)).is_ok_and(|sh| sh.crc == s.crc32));
        // Skips recorded for chunks being redone are recorded again when they are redone.
        let kept_chunks: HashSet<usize> = kept.shards.iter().map(|s| s.chunk).collect();
        let chunk_of: HashMap<&Path, usize> =
            listing.inputs.iter().enumerate().map(|(i, input)| (input.path.as_path(), i / config.inputs_per_shard)).collect();
        kept.skipped.retain(|s| chunk_of.get(s.path.as_path()).is_none_or(|c| kept_chunks.contains(c)));
        report.chunks_resumed = kept.shards.len();
        kept
    } else {
        fresh
    };
    manifest.save(out)?;

    let chunks: Vec<usize> = (0..listing.inputs.len().div_ceil(config.inputs_per_shard))
        .filter(|c| !manifest.shards.iter().any(|s| s.chunk == *c))
        .collect();
    let todo: usize = chunks.iter().map(|&c| listing.inputs[c * config.inputs_per_shard..].len().min(config.inputs_per_shard)).sum();
    let bar = if progress { ProgressBar::new(todo as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("prepare {bar:30} {pos}/{len} inputs  {per_sec}  ETA {eta}").expect("valid template"));
    for chunk in chunks {
        let start = chunk * config.inputs_per_shard;
        let inputs = &listing.inputs[start..(start + config.inputs_per_shard).min(listing.inputs.len())];
        let results = decode_parallel(inputs, config, workers, &bar);
        let mut sources = Vec::new();
        let mut records: Vec<(i32, Vec<u8>)> = Vec::new();
        for (input, result) in inputs.iter().zip(results) {
            match result {
                Ok(clips) => {
                    for (clip, pixels) in clips.into_iter().enumerate() {
                        sources.push(Source { path: input.path.clone(), clip });
                        records.push((input.label, pixels));
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %input.path.display(), reason = %reason(&e), "skipped input");
                    manifest.skipped.push(Skipped { path: input.path.clone(), reason: reason(&e) });
                    report.skipped += 1;
                }
            }
        }
        let file = format!("shard-{chunk:05}.bin");
        let crc = write_shard(
            &out.join(&file),
            config.layout(),
            records.iter().enumerate().map(|(i, (label, pixels))| Record { label: *label, source: i as u32, pixels }),
        )?;
        report.records += records.len();
        report.chunks_done += 1;
        manifest.shards.push(ShardEntry { chunk, file, records: records.len(), crc32: crc, sources });
        manifest.shards.sort_by_key(|s| s.chunk);
        manifest.save(out)?;
        tracing::info!(chunk, records = records.len(), "shard written");
    }
    bar.finish_and_clear();
    Ok(report)
}

fn reason(e: &Error) -> String {
    match e {
        Error::Input { reason, .. } | Error::Corrupt { reason, .. } => reason.clone(),
        Error::Io { error, .. } => error.to_string(),
    }
}

/// Decodes `inputs` on `workers` threads; results come back in input order.
fn decode_parallel(inputs: &[Input], config: &PrepareConfig, workers: usize, bar: &ProgressBar) -> Vec<Result<Vec<Vec<u8>>>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Vec<Vec<u8>>>>>> = Mutex::new((0..inputs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, inputs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(input) = inputs.get(i) else { break };
                    let r = clips_of(input, config);
                    results.lock().expect("no worker panics while holding the lock")[i] = Some(r);
                    bar.inc(1);
                }
            });
        }
    });
    results.into_inner().expect("workers finished").into_iter().map(|r| r.expect("every input decoded")).collect()
}

/// The clips of one input, each `[T, H, W, 3]` bytes.
pub fn clips_of(input: &Input, config: &PrepareConfig) -> Result<Vec<Vec<u8>>> {
    match input.kind {
        InputKind::Video { range } => {
            let decoded = decode(&input.path, range, FrameSize::Square(config.size))?;
            let sampled = config.sampling.indices(&decoded.frames);
            let clips = windows(&sampled, config.frames, config.clips_per_video);
            if clips.is_empty() {
                return Err(Error::input(
                    &input.path,
                    format!("too short: {} frames after sampling, a clip needs {}", sampled.len(), config.frames),
                ));
            }
            Ok(clips.into_iter().map(|w| w.iter().flat_map(|&f| decoded.frames[f].rgb.iter().copied()).collect()).collect())
        }
        InputKind::Image => {
            let img = image::open(&input.path).map_err(|e| Error::input(&input.path, format!("not a readable image: {e}")))?.to_rgb8();
            let (w, h) = (img.width() as usize, img.height() as usize);
            let (x0, y0, s) = centre_square(w, h);
            Ok(vec![area_resize(img.as_raw(), w * 3, (x0, y0, s, s), config.size, config.size)])
        }
    }
}

/// Reads a prepared data set: every shard verified, records addressed by one global index.
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
}
