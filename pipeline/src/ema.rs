//! `sid2 ema`: the weights of any power-function EMA width (σ_rel), ending at any snapshot, rebuilt
//! after training from the run's snapshots (`train.ema`) as the least-squares combination of the
//! snapshots whose profiles best match it (train/power_ema.rs). The result is a `.safetensors`
//! of the run's network, which `sample --weights` and `export --weights` take.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use safetensors::{Dtype, SafeTensors};

use crate::export::{Raw, write};
use crate::globals::Globals;
use crate::paths::check_output_file;
use crate::run::checkpoint::power_name;
use crate::run::{RunDir, snapshots};
use crate::train::power_ema::{MAX_SIGMA_REL, Profile, exponent, solve};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run folder (trained with `train.ema = { kind = "power", ... }`).
    #[arg(long)]
    pub run: PathBuf,
    /// The relative EMA width to rebuild, e.g. 0.07.
    #[arg(long)]
    pub sigma_rel: f64,
    /// End the average at this many samples (a snapshot's), not at the last snapshot.
    #[arg(long)]
    pub samples: Option<u64>,
    /// The .safetensors file to write.
    #[arg(long)]
    pub to: PathBuf,
    /// Write --to even inside the run's checkpoints.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(args: Args, _globals: &Globals) -> Result<()> {
    let run = RunDir::new(&args.run);
    if args.to.extension().is_none_or(|e| e != "safetensors") {
        bail!("--to {}: give a .safetensors file name", args.to.display());
    }
    check_output_file("--to", &args.to, &[&run.config_path()], args.overwrite)?;
    let built = rebuild(&run, args.sigma_rel, args.samples, &args.to)?;
    println!(
        "σ_rel {} ending at {} samples, from {} snapshot weights: profile matched to a relative residual of {:.2e}; weights in {}",
        args.sigma_rel,
        built.samples,
        built.files,
        built.residual,
        args.to.display()
    );
    if built.residual > 1e-2 {
        println!("the snapshots match this profile poorly: widths near the tracked ones {:?} and ends at later snapshots match best", built.tracked);
    }
    Ok(())
}

/// What [`rebuild`] made.
pub struct Rebuilt {
    /// Where the average ends, in samples.
    pub samples: u64,
    /// Snapshot weight files combined.
    pub files: usize,
    /// `‖p_target − Σ xᵢ pᵢ‖² / ‖p_target‖²`.
    pub residual: f64,
    /// The σ_rel the run tracks.
    pub tracked: Vec<f64>,
}

/// Writes to `to` the weights of the power-function EMA of `sigma_rel` ending at `samples` (the
/// last snapshot by default), rebuilt from `run`'s snapshots.
pub fn rebuild(run: &RunDir, sigma_rel: f64, samples: Option<u64>, to: &std::path::Path) -> Result<Rebuilt> {
    let config = run.load_config()?;
    let tracked = config.train.power_sigma_rels().to_vec();
    if tracked.is_empty() {
        bail!(
            "run {} keeps no EMA snapshots: train it with train.ema = {{ kind = \"power\", sigma_rels = [0.05, 0.10], snapshot_every = N }}",
            run.path().display()
        );
    }
    if !(sigma_rel > 0.0 && sigma_rel < MAX_SIGMA_REL) {
        bail!("--sigma-rel {sigma_rel}: power-function EMAs have σ_rel in (0, {MAX_SIGMA_REL:.4}); this run tracks {tracked:?}");
    }
    let all = snapshots::list(&run.snapshots_dir())?;
    let (Some(first), Some(last)) = (all.first(), all.last()) else {
        bail!("{}: no snapshot yet (one comes every train.ema.snapshot_every samples)", run.snapshots_dir().display());
    };
    let (first, last) = (first.1.samples_seen, last.1.samples_seen);
    let end = samples.unwrap_or(last);
    if !(first..=last).contains(&end) {
        bail!("--samples {end}: the snapshots cover {first} to {last} samples");
    }
    let hash = config.resume_hash();
    let mut profiles = Vec::new();
    let mut files = Vec::new();
    for (snapshot, state) in all.iter().filter(|(_, s)| s.samples_seen <= end) {
        if state.config_hash.as_deref().is_some_and(|h| h != hash) {
            bail!("{}: a snapshot of another model or training config than the run's {}", snapshot.path().display(), run.config_path().display());
        }
        for &s in &tracked {
            profiles.push(Profile { t: state.samples_seen as f64, gamma: exponent(s) });
            files.push(snapshot.weights_file(&power_name(s)));
        }
    }
    let (weights, residual) = solve(&profiles, Profile { t: end as f64, gamma: exponent(sigma_rel) });
    let tensors = combine(&files, &weights)?;
    let metadata = HashMap::from([
        ("sigma_rel".to_owned(), sigma_rel.to_string()),
        ("samples".to_owned(), end.to_string()),
        ("profile_residual".to_owned(), format!("{residual:.3e}")),
        ("source".to_owned(), run.snapshots_dir().display().to_string()),
    ]);
    write(to, &tensors, metadata)?;
    Ok(Rebuilt { samples: end, files: files.len(), residual, tracked })
}

/// `Σᵢ wᵢ · (file i)`, tensor by tensor; every file must hold the same f32 tensors.
fn combine(files: &[PathBuf], weights: &[f64]) -> Result<Vec<Raw>> {
    let mut sums: BTreeMap<String, (Vec<usize>, Vec<f64>)> = BTreeMap::new();
    for (i, (file, &w)) in files.iter().zip(weights).enumerate() {
        let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let tensors = SafeTensors::deserialize(&bytes).with_context(|| format!("{}: not a safetensors file", file.display()))?;
        if i > 0 && tensors.len() != sums.len() {
            bail!("{}: holds {} tensors, the first snapshot {}", file.display(), tensors.len(), sums.len());
        }
        for (name, view) in tensors.tensors() {
            if view.dtype() != Dtype::F32 {
                bail!("{}: tensor {name} is {:?}, snapshots hold f32 weights", file.display(), view.dtype());
            }
            let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64);
            let (shape, sum) = sums.entry(name.clone()).or_insert_with(|| (view.shape().to_vec(), vec![0.0; view.data().len() / 4]));
            if *shape != view.shape() {
                bail!("{}: tensor {name} has shape {:?}, the first snapshot {shape:?}", file.display(), view.shape());
            }
            for (s, v) in sum.iter_mut().zip(values) {
                *s += w * v;
            }
        }
    }
    Ok(sums.into_iter().map(|(name, (shape, sum))| Raw { name, dtype: Dtype::F32, shape, bytes: sum.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect() }).collect())
}
