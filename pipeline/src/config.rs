//! The run configuration: one TOML file composed of one section per module, with `--set`
//! overrides. Every check fails with a [`ConfigError`] naming the key path and the rule.

use std::path::Path;

use anyhow::{Context, Result};
use model3d::{ConfigError, DiffusionConfig, Precision, SamplerConfig, UViTConfig};
use serde::{Deserialize, Serialize};
use video_io::prepare::PrepareConfig;

/// Everything a run is made of. Saved as `config.toml` in the run folder at start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// What the preset mirrors, in words.
    #[serde(default)]
    pub description: String,
    pub data: PrepareConfig,
    pub model: UViTConfig,
    pub diffusion: DiffusionConfig,
    pub train: TrainConfig,
    pub sample: SamplerConfig,
}

/// Training, counted in samples seen (clips or images), never epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub total_samples: u64,
    pub lr: f64,
    /// Linear learning-rate warm-up, in samples.
    #[serde(default)]
    pub warmup_samples: u64,
    #[serde(default = "beta1")]
    pub adam_beta1: f64,
    #[serde(default = "beta2")]
    pub adam_beta2: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Global gradient-norm clipping; 0 disables it.
    #[serde(default = "one")]
    pub grad_clip: f64,
    /// EMA decays kept alongside the weights (per step).
    #[serde(default)]
    pub ema_decays: Vec<f64>,
    /// Warm the EMAs up: the n-th update uses `min(decay, (1 + n) / (10 + n))`.
    #[serde(default = "yes")]
    pub ema_warmup: bool,
    /// Probability of replacing the class label by the null class (for guidance).
    #[serde(default)]
    pub label_dropout: f64,
    /// Random horizontal flips of whole clips.
    #[serde(default)]
    pub flip: bool,
    pub log_every: u64,
    pub checkpoint_every: u64,
    /// Validation interval in samples, when `train --val` gives held-out clips; 0 validates only
    /// at checkpoints.
    #[serde(default)]
    pub val_every: u64,
    /// Held-out clips in the fixed validation set (the first ones of `--val`).
    #[serde(default = "val_clips")]
    pub val_clips: usize,
    /// Noise levels of the validation grid: `t = (k + ½) / val_levels`.
    #[serde(default = "val_levels")]
    pub val_levels: usize,
    #[serde(default = "keep")]
    pub keep_checkpoints: usize,
    #[serde(default)]
    pub seed: u64,
    /// Stop after this many non-finite updates in a row.
    #[serde(default = "nonfinite")]
    pub max_nonfinite: u32,
    /// What the network computes in ("f32" or "bf16"); weights, AdamW and the loss stay f32.
    /// Sampling uses it too.
    #[serde(default)]
    pub precision: Precision,
}

fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.99
}
fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn keep() -> usize {
    3
}
fn nonfinite() -> u32 {
    10
}
fn val_clips() -> usize {
    16
}
fn val_levels() -> usize {
    8
}

impl RunConfig {
    /// Reads a TOML file, applies `key=value` overrides, and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text, overrides).with_context(|| format!("config {}", path.display()))
    }

    pub fn parse(text: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::key("(file)", format!("not valid TOML: {}", e.message())))?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        let config: RunConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::key(key, e.into_inner().message().to_owned())
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// Every rule the run relies on, each naming its key and the allowed values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.data.validate().map_err(|e| ConfigError::value(format!("data.{}", e.field), e.value, e.rule))?;
        self.model.validate().map_err(|e| e.within("model"))?;
        self.model.check_input(self.data.size)?;
        self.diffusion.build(self.data.frames, self.data.size).map_err(|e| e.within("diffusion"))?;
        self.sample.validate().map_err(|e| e.within("sample"))?;
        self.train.validate(self.model.num_classes).map_err(|e| e.within("train"))
    }
}

impl TrainConfig {
    /// Errors name keys relative to the `[train]` section.
    fn validate(&self, num_classes: usize) -> Result<(), ConfigError> {
        let t = self;
        if t.batch_size == 0 {
            return Err(ConfigError::value("batch_size", 0, "must be at least 1"));
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(ConfigError::value("lr", t.lr, "must be a positive number"));
        }
        for (key, v) in [("adam_beta1", t.adam_beta1), ("adam_beta2", t.adam_beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(ConfigError::value(key, v, "must be in [0, 1)"));
            }
        }
        for (key, v) in [("weight_decay", t.weight_decay), ("grad_clip", t.grad_clip)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(ConfigError::value(key, v, "must be a finite number ≥ 0"));
            }
        }
        if let Some(e) = t.ema_decays.iter().find(|e| !(0.0..1.0).contains(*e)) {
            return Err(ConfigError::value("ema_decays", e, "each decay must be in [0, 1)"));
        }
        if !(0.0..1.0).contains(&t.label_dropout) {
            return Err(ConfigError::value("label_dropout", t.label_dropout, "must be in [0, 1)"));
        }
        if t.label_dropout > 0.0 && num_classes == 0 {
            return Err(ConfigError::value("label_dropout", t.label_dropout, "needs a class-conditional model (model.num_classes > 0)"));
        }
        let b = t.batch_size as u64;
        for (key, v) in [("total_samples", t.total_samples), ("log_every", t.log_every), ("checkpoint_every", t.checkpoint_every)] {
            if v == 0 || v % b != 0 {
                return Err(ConfigError::value(key, v, format!("must be a positive multiple of train.batch_size ({b})")));
            }
        }
        if !t.val_every.is_multiple_of(b) {
            return Err(ConfigError::value("val_every", t.val_every, format!("must be 0 or a multiple of train.batch_size ({b})")));
        }
        for (key, v) in [("val_clips", t.val_clips), ("val_levels", t.val_levels), ("keep_checkpoints", t.keep_checkpoints)] {
            if v == 0 {
                return Err(ConfigError::value(key, 0, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// `a.b.c=value`: the value is parsed as TOML (number, bool, array, inline table) or else taken
/// as a string.
fn apply_override(root: &mut toml::Value, assignment: &str) -> Result<(), ConfigError> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| ConfigError::key(format!("--set {assignment}"), "expected key=value"))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let mut node = root;
    let parts: Vec<&str> = key.trim().split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let table = node.as_table_mut().ok_or_else(|| ConfigError::key(parts[..i].join("."), format!("is not a table, cannot set {key}")))?;
        if i + 1 == parts.len() {
            table.insert((*part).to_owned(), value);
            return Ok(());
        }
        node = table.entry((*part).to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    unreachable!("split yields at least one part")
}

#[cfg(test)]
mod tests {
    use super::*;
    use model3d::LossWeighting;

    fn preset(name: &str) -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs").join(name)).unwrap()
    }

    #[test]
    fn every_preset_loads() {
        for name in ["tiny_video.toml", "tiny_image.toml", "k600_64.toml", "imagenet64.toml", "imagenet128.toml", "imagenet256.toml", "imagenet512.toml"] {
            RunConfig::parse(&preset(name), &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let text = preset("tiny_video.toml");
        let err = RunConfig::parse(&text, &["train.learning_rate=0.1".into()]).unwrap_err();
        assert!(err.key == "train.learning_rate" && err.rule.contains("unknown field"), "{err}");
        let err = RunConfig::parse(&text, &["train.lr=-1e-4".into()]).unwrap_err();
        assert_eq!(err.to_string(), "train.lr = -0.0001: must be a positive number");
        let err = RunConfig::parse(&text, &["train.log_every=3".into()]).unwrap_err();
        assert!(err.key == "train.log_every" && err.rule.contains("multiple"), "{err}");
        let err = RunConfig::parse(&text, &["model.kinds=[\"res\"]".into()]).unwrap_err();
        assert_eq!(err.key, "model.kinds");
        let err = RunConfig::parse(&text, &["sample.steps=0".into()]).unwrap_err();
        assert_eq!(err.to_string(), "sample.steps = 0: must be at least 1");
        let err = RunConfig::parse(&text, &["diffusion.schedule.d_ref=-2".into()]).unwrap_err();
        assert_eq!(err.key, "diffusion.schedule.d_ref");
        let err = RunConfig::parse(&text, &["data.size=0".into()]).unwrap_err();
        assert_eq!(err.key, "data.size");
    }

    #[test]
    fn overrides_reach_nested_keys() {
        let c = RunConfig::parse(&preset("tiny_video.toml"), &["train.lr=0.5".into(), "sample.steps=7".into(), "diffusion.weighting.bias=-1.5".into()]).unwrap();
        assert_eq!((c.train.lr, c.sample.steps), (0.5, 7));
        assert_eq!(c.diffusion.weighting, LossWeighting::Sigmoid { bias: -1.5, jacobian: true });
        // The resolved config survives a round trip through its own TOML.
        assert_eq!(RunConfig::parse(&c.to_toml(), &[]).unwrap(), c);
    }
}
