//! `sid2 export`: a run's weights for PyTorch. `--layout torch` writes the layout of the
//! project's PyTorch reference of the network (scripts/torch_reference.py), which uses PyTorch's
//! own layers: Linear weights transposed to `[out, in]` (burn keeps `[in, out]`), norm scales and
//! shifts named `weight` and `bias` (burn's `gamma` and `beta`). The run config goes into the
//! safetensors metadata (`config`, JSON). `--check` also writes inputs and the network's
//! prediction on them, so the reference can be checked against this implementation.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use model3d::UViT;
use safetensors::tensor::{Dtype, TensorView};

use crate::globals::Globals;
use crate::paths::check_output_file;
use crate::run::{RunDir, Weights};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// scripts/torch_reference.py's module tree with PyTorch's layer layouts.
    Torch,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The trained run folder (its newest checkpoint is exported).
    #[arg(long)]
    pub run: PathBuf,
    /// The .safetensors file to write.
    #[arg(long)]
    pub to: PathBuf,
    #[arg(long, value_enum, default_value_t = Layout::Torch)]
    pub layout: Layout,
    /// Weights to export: an EMA decay the run keeps (default: its first), or `raw`.
    #[arg(long)]
    pub ema: Option<Weights>,
    /// Export these weights instead (e.g. from `sid2 ema`), of the run's network.
    #[arg(long, conflicts_with = "ema")]
    pub weights: Option<PathBuf>,
    /// Also write `<to>.check.safetensors`: random inputs (z, logsnr, labels) and this network's
    /// prediction on them, for `scripts/torch_reference.py check`.
    #[arg(long)]
    pub check: bool,
    /// Write --to even inside the run's checkpoints or over the weights it reads.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(args: Args, globals: &Globals) -> Result<()> {
    if args.to.extension().is_none_or(|e| e != "safetensors") {
        bail!("--to {}: give a .safetensors file name", args.to.display());
    }
    let run = RunDir::new(&args.run);
    let config = run.load_config()?;
    let device = globals.device()?;
    let (model, source) = run.load_weights(&config, args.weights.as_deref(), args.ema.unwrap_or_default(), &device)?;
    let inputs = [source.as_path(), &run.config_path()];
    check_output_file("--to", &args.to, &inputs, args.overwrite)?;
    if args.check {
        check_output_file("--to", &check_path(&args.to), &inputs, args.overwrite)?;
    }
    let metadata = HashMap::from([
        ("config".to_string(), serde_json::to_string(&config)?),
        ("layout".to_string(), "torch (scripts/torch_reference.py)".to_string()),
        ("source".to_string(), source.display().to_string()),
    ]);
    let tensors = torch_layout(&model)?;
    write(&args.to, &tensors, metadata)?;
    println!("{} tensors from {} in {}", tensors.len(), source.display(), args.to.display());
    if args.check {
        let path = check_path(&args.to);
        write(&path, &check_inputs(&model, config.data.frames, config.data.size, &device), HashMap::new())?;
        println!("inputs and prediction for the check in {}", path.display());
    }
    Ok(())
}

/// `<to>.check.safetensors` beside the exported file.
pub fn check_path(to: &Path) -> PathBuf {
    to.with_extension("check.safetensors")
}

/// A tensor as safetensors wants it: little-endian bytes with a dtype and a shape.
pub struct Raw {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// The model's weights renamed and laid out as in the PyTorch reference.
pub fn torch_layout(model: &UViT) -> Result<Vec<Raw>> {
    let mut linear = LinearWeights::default();
    model.visit(&mut linear);
    let mut out = Vec::new();
    for tensor in model.collect(None, None, false) {
        let shape = tensor.shape.to_vec();
        if tensor.dtype != burn::tensor::DType::F32 {
            bail!("{}: weights of type {:?}; export expects f32 master weights", tensor.name, tensor.dtype);
        }
        let bytes = tensor.to_bytes().map_err(|e| anyhow::anyhow!("reading {}: {e:?}", tensor.name))?;
        let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let (name, shape, values) = match (tensor.name.as_str(), linear.0.contains(&tensor.name)) {
            (n, true) => (n.to_owned(), vec![shape[1], shape[0]], transpose(&values, shape[0], shape[1])),
            (n, false) if n.ends_with(".gamma") => (n.replace(".gamma", ".weight"), shape, values),
            (n, false) if n.ends_with(".beta") => (n.replace(".beta", ".bias"), shape, values),
            (n, false) => (n.to_owned(), shape, values),
        };
        out.push(Raw { name, dtype: Dtype::F32, shape, bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect() });
    }
    Ok(out)
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| values[r * cols + c])).collect()
}

/// Paths of the weights of every `Linear` (the only layer whose layout differs).
#[derive(Default)]
struct LinearWeights(BTreeSet<String>, Vec<(String, String)>);

impl ModuleVisitor for LinearWeights {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.1.push((name.to_owned(), container_type.to_owned()));
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.1.pop();
    }
    fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<D>>) {
        // Each entry is (field, type of the module holding it).
        if let Some((field, container)) = self.1.last()
            && container == "Struct:Linear"
            && field == "weight"
        {
            self.0.insert(self.1.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join("."));
        }
    }
}

/// Seeded inputs of one clip and the network's prediction on them.
fn check_inputs(model: &UViT, frames: usize, side: usize, device: &Device) -> Vec<Raw> {
    let n = frames * 3 * side * side;
    let z = Tensor::<1>::from_data(TensorData::new(model3d::noise::gaussian(11, n), [n]), device).reshape([1, frames, 3, side, side]);
    let logsnr: Vec<f32> = (0..frames).map(|f| 12.0 - 24.0 * f as f32 / frames.max(2) as f32).collect();
    let logsnr = Tensor::<2>::from_data(TensorData::new(logsnr, [1, frames]), device);
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64], [1]), device);
    let prediction = model.forward(z.clone(), logsnr.clone(), labels);
    let f32_raw = |name: &str, t: TensorData| Raw {
        name: name.to_owned(),
        dtype: Dtype::F32,
        shape: t.shape().to_vec(),
        bytes: t.convert::<f32>().try_to_vec::<f32>().expect("f32").iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    vec![
        f32_raw("z", z.into_data()),
        f32_raw("logsnr", logsnr.into_data()),
        Raw { name: "labels".into(), dtype: Dtype::I64, shape: vec![1], bytes: 0i64.to_le_bytes().to_vec() },
        f32_raw("prediction", prediction.into_data()),
    ]
}

/// Writes `tensors` as one safetensors file with `metadata`, atomically.
pub fn write(path: &Path, tensors: &[Raw], metadata: HashMap<String, String>) -> Result<()> {
    let views: Vec<(String, TensorView<'_>)> = tensors.iter().map(|t| Ok((t.name.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.bytes)?))).collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(metadata))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    video_io::atomic::write_bytes(path, &[&bytes]).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_weights_are_transposed_and_norms_renamed() {
        let preset = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/tiny_video.toml")).unwrap();
        let config = crate::config::RunConfig::parse(&preset, &[]).unwrap();
        let tensors = torch_layout(&UViT::new(&config.model, &Device::flex())).unwrap();
        let find = |name: &str| tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{name} missing"));
        // qkv of the first temporal block: burn [32, 96] → torch [96, 32]; convolutions unchanged.
        assert_eq!(find("encoder.0.blocks.temporal.0.qkv.weight").shape, vec![96, 32]);
        assert_eq!(find("encoder.0.blocks.res.0.norm1.weight").shape, vec![32]);
        assert_eq!(find("encoder.0.blocks.res.0.conv1.weight").shape, vec![32, 32, 3, 3]);
        assert!(tensors.iter().all(|t| !t.name.ends_with("gamma") && !t.name.ends_with("beta")));
        assert_eq!(transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
