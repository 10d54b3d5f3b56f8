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
    /// Power-function EMAs with snapshots, for choosing the EMA after training (`sid2 ema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<EmaConfig>,
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

/// Averages of the weights that can be recombined after training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EmaConfig {
    /// Power-function EMAs of these relative widths (edm2 tracks 0.05 and 0.10), each saved as a
    /// snapshot every `snapshot_every` samples (train/power_ema.rs, docs/method.md §7).
    Power { sigma_rels: Vec<f64>, snapshot_every: u64 },
}

impl TrainConfig {
    /// The σ_rel of the power-function EMAs kept (none without `train.ema`).
    pub fn power_sigma_rels(&self) -> &[f64] {
        match &self.ema {
            Some(EmaConfig::Power { sigma_rels, .. }) => sigma_rels,
            None => &[],
        }
    }

    /// Samples between snapshots of the power-function EMAs.
    pub fn snapshot_every(&self) -> Option<u64> {
        self.ema.as_ref().map(|EmaConfig::Power { snapshot_every, .. }| *snapshot_every)
    }
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
        crate::paths::existing_file("config", path)?;
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text, overrides).with_context(|| format!("config {}", path.display()))
    }

    pub fn parse(text: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|span| line_column(text, span.start)).map_or_else(String::new, |(l, c)| format!(" at line {l}, column {c}"));
            ConfigError::key("(file)", format!("not valid TOML{at}: {}", e.message().trim()))
        })?;
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

    /// What a resumed run must keep: every section but `[sample]` (sampling settings do not
    /// touch training) and the description, without `train.total_samples` (a resume may extend it).
    fn training_view(&self) -> toml::Value {
        let mut value = toml::Value::try_from(self).expect("config serialises");
        let table = value.as_table_mut().expect("a config is a table");
        table.remove("description");
        table.remove("sample");
        table.get_mut("train").and_then(toml::Value::as_table_mut).expect("a [train] section").remove("total_samples");
        value
    }

    /// The first training key (a dotted path, see [`training_view`](Self::training_view)) whose
    /// value differs between `self` and `other`, with both values as TOML; `None` when a run
    /// trained with one may resume with the other.
    pub fn first_difference(&self, other: &RunConfig) -> Option<(String, String, String)> {
        difference(String::new(), Some(&self.training_view()), Some(&other.training_view()))
    }

    /// A hash (CRC-32, hex) of the training keys, recorded in every checkpoint.
    pub fn resume_hash(&self) -> String {
        format!("{:08x}", crc32fast::hash(self.training_view().to_string().as_bytes()))
    }

    /// Every rule the run relies on, each naming its key and the allowed values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.data.validate().map_err(|e| ConfigError::value(format!("data.{}", e.field), e.value, e.rule))?;
        self.model.validate().map_err(|e| e.within("model"))?;
        let channels = self.data.layout().channels as usize;
        if self.model.in_channels != channels {
            return Err(ConfigError::value("model.in_channels", self.model.in_channels, format!("must be {channels}: prepared clips are RGB")));
        }
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
        if !(1..=1 << 16).contains(&t.batch_size) {
            return Err(ConfigError::value("batch_size", t.batch_size, "must be from 1 to 65536"));
        }
        if t.max_nonfinite == 0 {
            return Err(ConfigError::value("max_nonfinite", 0, "must be at least 1 (the non-finite updates in a row that stop training)"));
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
        if let Some(EmaConfig::Power { sigma_rels, snapshot_every }) = &t.ema {
            let max = crate::train::power_ema::MAX_SIGMA_REL;
            if sigma_rels.is_empty() {
                return Err(ConfigError::key("ema.sigma_rels", "needs at least one width (edm2 keeps [0.05, 0.10])"));
            }
            if let Some(s) = sigma_rels.iter().find(|s| !(**s > 0.0 && **s < max)) {
                return Err(ConfigError::value("ema.sigma_rels", s, format!("each must be in (0, {max:.4})")));
            }
            if *snapshot_every == 0 || !snapshot_every.is_multiple_of(t.batch_size as u64) {
                return Err(ConfigError::value("ema.snapshot_every", snapshot_every, format!("must be a positive multiple of train.batch_size ({})", t.batch_size)));
            }
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
        for (key, v, max) in [("val_clips", t.val_clips, 1 << 16), ("val_levels", t.val_levels, 1024), ("keep_checkpoints", t.keep_checkpoints, 1 << 20)] {
            if v == 0 {
                return Err(ConfigError::value(key, 0, "must be at least 1"));
            }
            if v > max {
                return Err(ConfigError::value(key, v, format!("must be at most {max}")));
            }
        }
        Ok(())
    }
}

/// 1-based line and column of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The first dotted key below `at` where `a` and `b` differ (a key missing on one side counts).
fn difference(at: String, a: Option<&toml::Value>, b: Option<&toml::Value>) -> Option<(String, String, String)> {
    let show = |v: Option<&toml::Value>| v.map_or_else(|| "(not set)".to_owned(), |v| v.to_string());
    match (a, b) {
        (Some(toml::Value::Table(ta)), Some(toml::Value::Table(tb))) => {
            let keys: std::collections::BTreeSet<&String> = ta.keys().chain(tb.keys()).collect();
            keys.into_iter().find_map(|k| difference(if at.is_empty() { k.clone() } else { format!("{at}.{k}") }, ta.get(k), tb.get(k)))
        }
        (a, b) if a == b => None,
        (a, b) => Some((at, show(a), show(b))),
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
        for name in ["tiny_video.toml", "small_video.toml", "tiny_image.toml", "cifar10.toml", "k600_64.toml", "imagenet64.toml", "imagenet128.toml", "imagenet256.toml", "imagenet512.toml"] {
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
        assert_eq!(err.to_string(), "sample.steps = 0: must be from 1 to 10000");
        let err = RunConfig::parse(&text, &["diffusion.schedule.d_ref=-2".into()]).unwrap_err();
        assert_eq!(err.key, "diffusion.schedule.d_ref");
        let err = RunConfig::parse(&text, &["data.size=0".into()]).unwrap_err();
        assert_eq!(err.key, "data.size");
    }

    #[test]
    fn toml_syntax_errors_give_line_and_column() {
        let err = RunConfig::parse("description = \"x\"\n[train]\nlr = = 1\n", &[]).unwrap_err().to_string();
        assert!(err.contains("line 3, column 6"), "{err}");
    }

    #[test]
    fn the_first_differing_key_is_named_with_both_values() {
        let a = RunConfig::parse(&preset("tiny_video.toml"), &[]).unwrap();
        let b = RunConfig::parse(&preset("tiny_video.toml"), &["train.lr=0.5".into(), "train.seed=3".into()]).unwrap();
        let (key, va, vb) = a.first_difference(&b).unwrap();
        assert_eq!((key.as_str(), vb.as_str()), ("train.lr", "0.5"), "{va}");
        assert_eq!(a.first_difference(&a.clone()), None);
        // The resume hash ignores only the sample budget.
        let longer = RunConfig::parse(&preset("tiny_video.toml"), &["train.total_samples=96000".into()]).unwrap();
        assert_eq!(a.resume_hash(), longer.resume_hash());
        assert_ne!(a.resume_hash(), b.resume_hash());
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
