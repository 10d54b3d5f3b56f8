//! The JSON-lines metrics log (`metrics.jsonl`), one object per logging interval, with the same
//! fields as the status line, so a user can plot a run.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    pub samples: u64,
    pub elapsed_s: f64,
    pub samples_per_s: f64,
    pub eta_s: f64,
    pub loss: f64,
    pub v_mse: f64,
    pub eps_mse: f64,
    pub x_mse: f64,
    pub grad_norm: f64,
    pub lr: f64,
    /// Fraction of step time spent waiting for the data stages.
    pub data_wait: f64,
    pub skipped_nonfinite: u64,
    pub peak_rss_mib: f64,
}

pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens the log for appending, first dropping records past `samples` (left by a run that was
    /// stopped after its last checkpoint), so a resumed run's log reads as one run.
    pub fn open(path: &Path, samples: u64) -> Result<Self> {
        if path.exists() {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| serde_json::from_str::<TrainRecord>(l).is_ok_and(|r| r.samples <= samples))
                .collect();
            let text: String = kept.iter().map(|l| format!("{l}\n")).collect();
            video_io::atomic::write_bytes(path, &[text.as_bytes()])?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self { path: path.to_owned(), file })
    }

    pub fn write(&mut self, record: &TrainRecord) -> Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(record)?).with_context(|| format!("cannot write {}", self.path.display()))?;
        self.file.flush()?;
        Ok(())
    }
}

pub fn read(path: &Path) -> Result<Vec<TrainRecord>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("{}: bad line {l}", path.display()))).collect()
}

/// Peak resident memory of this process (VmHWM), in MiB; 0 where /proc is not available.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kib| kib / 1024.0)
}
