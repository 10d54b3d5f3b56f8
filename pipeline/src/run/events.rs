//! `events.jsonl`: what was done with a run besides training steps (where a training call ran,
//! where samples and evaluations were written), so the report can find them. One JSON object a
//! line, appended; a line cut short by a killed process is skipped when read.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A `train` call started (or resumed) at `samples`.
    Train { unix_s: u64, samples: u64, backend: String, hardware: String, commit: String },
    /// `sample` wrote clips into `path`.
    Samples { unix_s: u64, path: PathBuf, clips: usize, weights: PathBuf, steps: usize },
    /// `eval` wrote its report to `path`.
    Eval { unix_s: u64, path: PathBuf },
    /// `sweep` wrote its results to `path` (sweep.json).
    Sweep { unix_s: u64, path: PathBuf },
    /// `bench learn` judged the checkpoints' samples of an image run into `path` (learn.json).
    Judge { unix_s: u64, path: PathBuf },
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The commit this binary was built from (`git describe` at build time), or "unknown".
pub fn commit() -> String {
    option_env!("SID2_COMMIT").unwrap_or("unknown").to_owned()
}

/// The CPU this process runs on, from /proc/cpuinfo.
pub fn hardware() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info.lines().find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1))).map_or("unknown CPU", str::trim);
    format!("{model}, {} cores", std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Appends one line in one write, so lines of processes appending at once (training and
/// sampling from the same run) never interleave.
pub fn append(path: &Path, event: &Event) -> Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let line = format!("{}\n", serde_json::to_string(event)?);
    file.write_all(line.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// Every readable event, oldest first; none when the file does not exist.
pub fn read(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}
