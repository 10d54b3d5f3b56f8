//! The JSON-lines metrics log (`metrics.jsonl`): one object per logging interval (`"kind":
//! "train"`, the status line's fields) and one per validation (`"kind": "val"`), so a user can
//! plot a run.

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

/// The loss on the fixed validation set (same clips, noise levels and noise every time).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValRecord {
    pub samples: u64,
    /// Which weights were scored (`ema-0.95`, or `raw`).
    pub weights: String,
    pub clips: usize,
    /// Means over the noise levels below.
    pub loss: f64,
    pub v_mse: f64,
    pub levels: Vec<ValLevel>,
}

/// The validation loss at one noise level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValLevel {
    pub t: f64,
    pub logsnr: f64,
    /// The training loss (weighted as in training).
    pub loss: f64,
    /// Unweighted mean squared error of v.
    pub v_mse: f64,
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Train(TrainRecord),
    Val(ValRecord),
}

impl Record {
    pub fn samples(&self) -> u64 {
        match self {
            Self::Train(r) => r.samples,
            Self::Val(r) => r.samples,
        }
    }
}

pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens the log for appending, first dropping records past `samples` (left by a run that was
    /// stopped after its last checkpoint) and any half-written line, so a resumed run's log reads
    /// as one run.
    pub fn open(path: &Path, samples: u64) -> Result<Self> {
        if path.exists() {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let kept: String = text
                .lines()
                .filter(|l| serde_json::from_str::<Record>(l).is_ok_and(|r| r.samples() <= samples))
                .map(|l| format!("{l}\n"))
                .collect();
            video_io::atomic::write_bytes(path, &[kept.as_bytes()])?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self { path: path.to_owned(), file })
    }

    pub fn write(&mut self, record: Record) -> Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(&record)?).with_context(|| format!("cannot write {}", self.path.display()))?;
        self.file.flush()?;
        Ok(())
    }
}

/// Every record of a log. A last line cut short (a run killed while writing it) is left out; a
/// bad line anywhere else is an error.
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(r) => records.push(r),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(e) => return Err(e).with_context(|| format!("{} line {}: not a metrics record", path.display(), i + 1)),
        }
    }
    Ok(records)
}

/// The training records of a log.
pub fn read_train(path: &Path) -> Result<Vec<TrainRecord>> {
    Ok(read(path)?.into_iter().filter_map(|r| if let Record::Train(t) = r { Some(t) } else { None }).collect())
}

/// The validation records of a log.
pub fn read_val(path: &Path) -> Result<Vec<ValRecord>> {
    Ok(read(path)?.into_iter().filter_map(|r| if let Record::Val(v) = r { Some(v) } else { None }).collect())
}

/// Peak resident memory of this process (VmHWM), in MiB; 0 where /proc is not available.
pub fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Resident memory of this process now (VmRSS), in MiB; 0 where /proc is not available.
pub fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// Resident memory of this process now, `[anonymous, file-backed]` (RssAnon, RssFile), in MiB:
/// what it allocated (heap, stacks) and the pages of its executable and libraries it has mapped
/// (clean, shared with the page cache). `sid2` never trims its heap, so the anonymous part at
/// the end of a run is close to its peak. 0 where /proc is not available.
pub fn rss_split_mib() -> [f64; 2] {
    ["RssAnon:", "RssFile:"].map(status_mib)
}

fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kib| kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(samples: u64) -> Record {
        Record::Val(ValRecord { samples, weights: "raw".into(), clips: 2, loss: 1.0, v_mse: 2.0, levels: Vec::new() })
    }

    #[test]
    fn a_resumed_log_drops_later_records_and_a_half_written_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&path, 0).unwrap();
        for s in [8, 16, 24] {
            log.write(val(s)).unwrap();
        }
        drop(log);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"kind\":\"val\",\"samp");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read(&path).unwrap().len(), 3, "the cut-off last line is left out");
        MetricsLog::open(&path, 16).unwrap();
        assert_eq!(read(&path).unwrap(), vec![val(8), val(16)]);
        std::fs::write(&path, "not json\n{}\n").unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("line 1"));
    }
}
