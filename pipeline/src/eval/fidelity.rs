//! FVD and FID: the Fréchet distance between Gaussian fits of feature-network activations on
//! generated and on real data (Unterthiner et al. 2018; Heusel et al. 2017).
//!
//! FVD feeds whole clips (context frames included, as the Kinetics-600 literature does) to
//! I3D; FID feeds every frame, as an image, to the FID Inception. The real side's Gaussian is
//! cached next to the real shard, keyed by the shard's checksum and the weights file's, so a
//! data set is featurised once per network.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use super::features::{FidInception, I3d, Pretrained, weights};
use nalgebra::{DMatrix, DVector};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::Serialize;
use video_io::shard::Shard;

use super::frechet::{Gaussian, frechet_distance};
use crate::tensor::clips_to_tensor;
use video_io::clips::Clips;

/// Which metric, hence which network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Metric {
    Fvd,
    Fid,
}

impl Metric {
    fn spec(self) -> &'static Pretrained {
        match self {
            Metric::Fvd => &Pretrained::I3D,
            Metric::Fid => &Pretrained::INCEPTION,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Metric::Fvd => "FVD",
            Metric::Fid => "FID",
        }
    }

    /// The preprocessing and features, recorded in caches and reports.
    pub fn protocol(self) -> &'static str {
        match self {
            Metric::Fvd => "I3D-400 logits averaged over time; frames resized to 224x224 by TF1 bilinear (half_pixel_centers=False), values 2x/255-1",
            Metric::Fid => "Inception-v3 2048-d pool features; images resized to 299x299 by bilinear (align_corners=False), values 2x-1",
        }
    }
}

/// A feature network with its weights loaded.
pub enum FeatureNet {
    I3d(I3d),
    Inception(FidInception),
}

/// The network for `metric`, with the weights in `path`, plus the weights file's CRC-32.
pub fn load(metric: Metric, path: &Path, device: &Device) -> Result<(FeatureNet, u32)> {
    let net = match metric {
        Metric::Fvd => FeatureNet::I3d(weights::load(I3d::new(device), path, metric.spec())?),
        Metric::Fid => FeatureNet::Inception(weights::load(FidInception::new(device), path, metric.spec())?),
    };
    let crc = crc32fast::hash(&std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?);
    Ok((net, crc))
}

impl FeatureNet {
    fn metric(&self) -> Metric {
        match self {
            FeatureNet::I3d(_) => Metric::Fvd,
            FeatureNet::Inception(_) => Metric::Fid,
        }
    }

    fn dim(&self) -> usize {
        match self {
            FeatureNet::I3d(_) => super::features::i3d::CLASSES,
            FeatureNet::Inception(_) => super::features::inception::FEATURES,
        }
    }

    /// Feature vectors per clip of `frames` frames: one per clip for I3D, one per frame for
    /// Inception.
    fn rows_per_clip(&self, frames: usize) -> usize {
        match self {
            FeatureNet::I3d(_) => 1,
            FeatureNet::Inception(_) => frames,
        }
    }

    /// Features of clips: one row per clip for I3D, one per frame for Inception.
    fn features(&self, clips: &Clips, device: &Device) -> Vec<f32> {
        let x = clips_to_tensor(clips, device); // [B, T, 3, S, S] in [−1, 1]
        let features = match self {
            FeatureNet::I3d(net) => net.features(x.add_scalar(1.0).mul_scalar(127.5)),
            FeatureNet::Inception(net) => {
                let [b, t, c, h, w] = x.dims();
                net.features(x.reshape([b * t, c, h, w]).add_scalar(1.0).mul_scalar(0.5))
            }
        };
        features.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 features")
    }
}

/// Features of every record of `shard`, in batches of `batch` clips.
pub fn shard_features(net: &FeatureNet, shard: &Shard, batch: usize, device: &Device, progress: bool) -> Result<Vec<f32>> {
    let l = shard.layout;
    let (frames, batch) = (l.frames as usize, batch.max(1));
    if l.height != l.width || l.channels != 3 {
        bail!("{}: records of {l}; feature networks take square RGB frames", shard.path.display());
    }
    if matches!(net, FeatureNet::I3d(_)) && frames < 9 {
        bail!("{}: I3D needs clips of at least 9 frames (FVD uses 16); these have {frames}", shard.path.display());
    }
    let bar = if progress { ProgressBar::new(shard.len as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("features {bar:25} {pos}/{len} clips  ETA {eta}").expect("valid template"));
    let mut out = Vec::with_capacity(shard.len * net.rows_per_clip(frames) * net.dim());
    for start in (0..shard.len).step_by(batch) {
        let end = (start + batch).min(shard.len);
        let clips = Clips::from_records(l, (start..end).map(|i| shard.get(i)));
        out.extend(net.features(&clips, device));
        bar.inc((end - start) as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Where the real statistics of `real` for `metric` are cached.
pub fn cache_path(real: &Path, metric: Metric) -> PathBuf {
    let mut name = real.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}-stats.safetensors", metric.name().to_lowercase()));
    real.with_file_name(name)
}

/// What a cache must match to be used, as it is stored: the safetensors metadata.
fn cache_key(metric: Metric, weights_crc: u32, real: &Shard) -> HashMap<String, String> {
    [
        ("metric", metric.name().to_string()),
        ("protocol", metric.protocol().to_string()),
        ("weights_crc32", format!("{weights_crc:08x}")),
        ("data_crc32", format!("{:08x}", real.crc)),
        ("records", real.len.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes `g` with `key` as safetensors metadata (`mean` `[d]`, `cov` `[d, d]`, f64), atomically.
fn write_cache(path: &Path, g: &Gaussian, key: &HashMap<String, String>) -> Result<()> {
    let d = g.mean.len();
    let (mean, cov) = (f64_bytes(g.mean.as_slice()), f64_bytes(g.cov.as_slice()));
    let tensors = [
        ("mean", TensorView::new(Dtype::F64, vec![d], &mean)?),
        ("cov", TensorView::new(Dtype::F64, vec![d, d], &cov)?),
    ];
    let bytes = safetensors::serialize(tensors, Some(key.clone()))?;
    video_io::atomic::write_bytes(path, &[&bytes])?;
    Ok(())
}

/// The cached Gaussian if `path` holds one for exactly `key`.
fn read_cache(path: &Path, key: &HashMap<String, String>) -> Result<Option<Gaussian>> {
    let Ok(bytes) = std::fs::read(path) else { return Ok(None) };
    let context = || format!("{}: not a feature-statistics file (delete it to recompute)", path.display());
    let (_, meta) = SafeTensors::read_metadata(&bytes).with_context(context)?;
    if meta.metadata().as_ref() != Some(key) {
        return Ok(None);
    }
    let st = SafeTensors::deserialize(&bytes).with_context(context)?;
    let f64s = |name: &str| -> Result<Vec<f64>> {
        let t = st.tensor(name).with_context(context)?;
        Ok(t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect())
    };
    let (mean, cov) = (f64s("mean")?, f64s("cov")?);
    let d = mean.len();
    if cov.len() != d * d {
        bail!("{}", context());
    }
    Ok(Some(Gaussian { mean: DVector::from_vec(mean), cov: DMatrix::from_column_slice(d, d, &cov) }))
}

/// One Fréchet score.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct FrechetScore {
    pub metric: Metric,
    pub value: f64,
    /// Feature vectors behind each side (clips for FVD, frames for FID).
    pub generated_samples: usize,
    pub real_samples: usize,
    pub protocol: String,
    pub real_stats: PathBuf,
    pub real_stats_cached: bool,
}

/// FVD or FID between the clips of `generated` and of `real`, with the network's weights read
/// from `weights_path`.
pub fn score(metric: Metric, weights_path: &Path, generated: &Shard, real: &Shard, batch: usize, device: &Device, globals: &crate::globals::Globals) -> Result<FrechetScore> {
    let (net, weights_crc) = load(metric, weights_path, device)?;
    score_with(&net, weights_crc, generated, real, batch, device, globals.progress)
}

/// [`score`] with a loaded network; `weights_crc` identifies its weights in the real-statistics
/// cache at [`cache_path`], which is read when it matches and written when it does not.
pub fn score_with(net: &FeatureNet, weights_crc: u32, generated: &Shard, real: &Shard, batch: usize, device: &Device, progress: bool) -> Result<FrechetScore> {
    let (metric, dim) = (net.metric(), net.dim());
    let key = cache_key(metric, weights_crc, real);
    let cache = cache_path(&real.path, metric);
    let (real_stats, cached) = match read_cache(&cache, &key)? {
        Some(g) => (g, true),
        None => {
            let g = Gaussian::fit(&shard_features(net, real, batch, device, progress)?, dim)?;
            write_cache(&cache, &g, &key)?;
            (g, false)
        }
    };
    let features = shard_features(net, generated, batch, device, progress)?;
    let generated_stats = Gaussian::fit(&features, dim)?;
    Ok(FrechetScore {
        metric,
        value: frechet_distance(&generated_stats, &real_stats)?,
        generated_samples: features.len() / dim,
        real_samples: real.len * net.rows_per_clip(real.layout.frames as usize),
        protocol: metric.protocol().to_owned(),
        real_stats: cache,
        real_stats_cached: cached,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_round_trips_and_is_ignored_when_its_key_differs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("real.bin.fvd-stats.safetensors");
        let g = Gaussian { mean: DVector::from_vec(vec![1.0, -2.0]), cov: DMatrix::from_row_slice(2, 2, &[2.0, 0.5, 0.5, 3.0]) };
        let pairs = [("metric", "FVD"), ("protocol", Metric::Fvd.protocol()), ("weights_crc32", "0000abcd"), ("data_crc32", "12345678"), ("records", "7")];
        let key: HashMap<String, String> = pairs.map(|(k, v)| (k.to_string(), v.to_string())).into();
        let mut other_data = key.clone();
        other_data.insert("data_crc32".into(), "87654321".into());
        assert!(read_cache(&path, &key).unwrap().is_none());
        write_cache(&path, &g, &key).unwrap();
        assert_eq!(read_cache(&path, &key).unwrap(), Some(g));
        assert!(read_cache(&path, &other_data).unwrap().is_none());
        std::fs::write(&path, b"not safetensors").unwrap();
        let err = read_cache(&path, &key).unwrap_err().to_string();
        assert!(err.contains("real.bin.fvd-stats.safetensors"), "{err}");
    }

    #[test]
    fn caches_sit_next_to_the_real_shard() {
        assert_eq!(cache_path(Path::new("/d/real.bin"), Metric::Fid), Path::new("/d/real.bin.fid-stats.safetensors"));
    }
}
