//! The run configuration: one TOML file composed of one section per module, with `--set`
//! overrides, key-path error messages, and validation of every combination.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use model3d::diffusion::{Diffusion, LossWeighting, Prediction, TimeSampling};
use model3d::{Precision, SamplerConfig, ScheduleConfig, UViTConfig};
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffusionConfig {
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub prediction: Prediction,
    pub weighting: LossWeighting,
    #[serde(default)]
    pub time_sampling: TimeSampling,
    /// Leading frames of each clip given clean and excluded from the loss (5 for Kinetics-600).
    #[serde(default)]
    pub context_frames: usize,
    /// Draw an independent t for every target frame instead of one per clip.
    #[serde(default)]
    pub per_frame_noise: bool,
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
    /// Probability of replacing the class label by the null class (for guidance).
    #[serde(default)]
    pub label_dropout: f64,
    /// Random horizontal flips of whole clips.
    #[serde(default)]
    pub flip: bool,
    pub log_every: u64,
    pub checkpoint_every: u64,
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
fn keep() -> usize {
    3
}
fn nonfinite() -> u32 {
    10
}

impl DiffusionConfig {
    pub fn build(&self, image_side: usize) -> Result<Diffusion> {
        Ok(Diffusion {
            schedule: self.schedule.build(image_side).map_err(|e| anyhow!("diffusion.{e}"))?,
            prediction: self.prediction,
            weighting: self.weighting.clone(),
        })
    }
}

impl RunConfig {
    /// Reads a TOML file, applies `key=value` overrides, and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text, overrides).with_context(|| format!("config {}", path.display()))
    }

    pub fn parse(text: &str, overrides: &[String]) -> Result<Self> {
        let mut value: toml::Value = toml::from_str(text)?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        let config: RunConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            anyhow!("at `{path}`: {}", e.into_inner().message())
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// Every rule the run relies on, each naming its key and the allowed values.
    pub fn validate(&self) -> Result<()> {
        self.data.validate().map_err(|e| anyhow!(e))?;
        self.model.validate().map_err(|e| anyhow!(e))?;
        self.model.check_input(self.data.size, self.data.size).map_err(|e| anyhow!("data.size: {e}"))?;
        self.diffusion.weighting.validate().map_err(|e| anyhow!(e))?;
        self.diffusion.build(self.data.size)?;
        self.sample.validate().map_err(|e| anyhow!(e))?;
        let (d, t) = (&self.diffusion, &self.train);
        if d.context_frames >= self.data.frames {
            bail!("diffusion.context_frames = {}: must be below data.frames ({})", d.context_frames, self.data.frames);
        }
        if t.batch_size == 0 {
            bail!("train.batch_size: must be at least 1");
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            bail!("train.lr = {}: must be a positive number", t.lr);
        }
        for (key, b) in [("adam_beta1", t.adam_beta1), ("adam_beta2", t.adam_beta2)] {
            if !(0.0..1.0).contains(&b) {
                bail!("train.{key} = {b}: must be in [0, 1)");
            }
        }
        if !(t.weight_decay >= 0.0 && t.grad_clip >= 0.0) {
            bail!("train.weight_decay and train.grad_clip must be ≥ 0 (got {} and {})", t.weight_decay, t.grad_clip);
        }
        if let Some(e) = t.ema_decays.iter().find(|e| !(0.0..1.0).contains(*e)) {
            bail!("train.ema_decays: {e} is outside [0, 1)");
        }
        if !(0.0..1.0).contains(&t.label_dropout) {
            bail!("train.label_dropout = {}: must be in [0, 1)", t.label_dropout);
        }
        if t.label_dropout > 0.0 && self.model.num_classes == 0 {
            bail!("train.label_dropout = {}: needs a class-conditional model (model.num_classes > 0)", t.label_dropout);
        }
        let b = t.batch_size as u64;
        for (key, v) in [("total_samples", t.total_samples), ("log_every", t.log_every), ("checkpoint_every", t.checkpoint_every)] {
            if v == 0 || v % b != 0 {
                bail!("train.{key} = {v}: must be a positive multiple of train.batch_size ({b})");
            }
        }
        if t.keep_checkpoints == 0 {
            bail!("train.keep_checkpoints: must be at least 1");
        }
        Ok(())
    }
}

/// `a.b.c=value`: the value is parsed as TOML (number, bool, array, inline table) or else taken
/// as a string.
fn apply_override(root: &mut toml::Value, assignment: &str) -> Result<()> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| anyhow!("--set {assignment}: expected key=value"))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let mut node = root;
    let parts: Vec<&str> = key.trim().split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let table = node.as_table_mut().ok_or_else(|| anyhow!("--set {key}: `{}` is not a table", parts[..i].join(".")))?;
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
        let err = format!("{:#}", RunConfig::parse(&text, &["train.learning_rate=0.1".into()]).unwrap_err());
        assert!(err.contains("train.learning_rate") && err.contains("unknown field"), "{err}");
        let err = format!("{:#}", RunConfig::parse(&text, &["train.lr=-1e-4".into()]).unwrap_err());
        assert!(err.contains("train.lr = -0.0001"), "{err}");
        let err = format!("{:#}", RunConfig::parse(&text, &["train.log_every=3".into()]).unwrap_err());
        assert!(err.contains("train.log_every = 3") && err.contains("multiple"), "{err}");
        let err = format!("{:#}", RunConfig::parse(&text, &["model.kinds=[\"res\"]".into()]).unwrap_err());
        assert!(err.contains("model.kinds"), "{err}");
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
