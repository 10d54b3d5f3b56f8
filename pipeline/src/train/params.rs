//! Whole-model parameter operations for the training loop: stable parameter ids, EMA with
//! warm-up, non-finite gradients zeroed and global gradient-norm clipping on the device, and the
//! finiteness check before a checkpoint.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// Gives every parameter an id derived from its path (`encoder.0.blocks.res.0.conv1.weight`), so
/// optimizer state saved by one process finds its parameters in the next.
pub fn stable_ids<M: Module>(module: M) -> M {
    module.map(&mut StableIds::default())
}

#[derive(Default)]
struct StableIds {
    path: Vec<String>,
}

impl ModuleMapper for StableIds {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        // FNV-1a over the dotted path.
        let path = self.path.join(".");
        let id = path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
        let (_, value, mapper) = param.consume();
        Param::from_mapped_value(ParamId::from(id), value, mapper)
    }
}

/// Parameter values without autodiff, flattened, by id.
#[derive(Default)]
struct Values(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let v = param.val();
        let v = if v.is_autodiff() { v.inner() } else { v };
        let n = v.shape().num_elements();
        self.0.insert(param.id, v.reshape([n]));
    }
}

/// The decay of the `n`-th EMA update with warm-up: `min(decay, (1 + n) / (10 + n))`, the schedule
/// of TensorFlow's `ExponentialMovingAverage(num_updates)`. Without it an EMA of decay 0.999
/// still holds 30 % of the initial weights after 1,200 updates; with it, the average starts
/// short and lengthens to `decay`.
pub fn ema_warmup(decay: f64, n: u64) -> f64 {
    decay.min((1.0 + n as f64) / (10.0 + n as f64))
}

/// `ema ← decay·ema + (1 − decay)·model`, parameter by parameter (ids must match).
pub fn ema_update<E: Module, M: Module>(ema: E, model: &M, decay: f64) -> E {
    let mut values = Values::default();
    model.visit(&mut values);
    ema.map(&mut EmaMapper { values: values.0, decay })
}

struct EmaMapper {
    values: HashMap<ParamId, Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for EmaMapper {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, ema, mapper) = param.consume();
        let current = self.values.remove(&id).expect("EMA and model have the same parameters").reshape(ema.shape());
        let next = ema.mul_scalar(self.decay) + current.mul_scalar(1.0 - self.decay);
        Param::from_mapped_value(id, next, mapper)
    }
}

/// Whether every parameter is finite (checked before any checkpoint is written).
pub fn all_finite<M: Module>(model: &M) -> bool {
    let mut values = Values::default();
    model.visit(&mut values);
    values.0.into_values().all(|v| v.is_finite().all().into_scalar::<bool>())
}

/// What [`finite_and_clipped`] found, as one-element device tensors (read only when logged).
pub struct GradStats {
    /// Global L2 norm of the gradients after non-finite entries were zeroed, before clipping.
    pub norm: Tensor<1>,
    /// 1 when any gradient entry was not finite, else 0.
    pub nonfinite: Tensor<1>,
}

/// Makes the gradients safe to apply without reading anything back to the host: every
/// non-finite entry becomes zero (edm2's `force_finite`, Karras et al. 2024), then, when
/// `max_norm > 0`, all gradients are scaled by `min(1, max_norm / norm)` (global clipping, not
/// burn's per-parameter clipping), the factor computed on the device.
pub fn finite_and_clipped<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> GradStats {
    let mut ids = Ids::default();
    model.visit(&mut ids);
    // Each gradient is read once, made finite, and put back once (scaled when clipping).
    let mut finite = Vec::new(); // (id, rank, gradient with non-finite entries zeroed)
    let mut counts = Vec::new(); // non-finite entries per parameter
    for &(id, rank) in &ids.0 {
        let Some(g) = grad_flat(grads, id, rank) else { continue };
        let nonfinite = g.clone().is_finite().bool_not();
        counts.push(nonfinite.clone().float().sum());
        finite.push((id, rank, g.mask_fill(nonfinite, 0.0)));
    }
    let sum = |values: Vec<Tensor<1>>| values.into_iter().reduce(|acc, v| acc + v).expect("a model with gradients");
    let bad = sum(counts);
    let norm = sum(finite.iter().map(|(_, _, g)| g.clone().square().sum()).collect()).sqrt();
    // min(1, max_norm / norm); a zero norm gives +inf, clamped to 1.
    let factor = (max_norm > 0.0).then(|| norm.clone().recip().mul_scalar(max_norm).clamp_max(1.0));
    for (id, rank, g) in finite {
        let g = match &factor {
            Some(f) => g * f.clone(),
            None => g,
        };
        replace_grad(grads, id, rank, g);
    }
    GradStats { norm, nonfinite: bad.clamp_max(1.0) }
}

#[derive(Default)]
struct Ids(Vec<(ParamId, usize)>);

impl ModuleVisitor for Ids {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push((param.id, D));
    }
}


fn grad_flat(grads: &GradientsParams, id: ParamId, rank: usize) -> Option<Tensor<1>> {
    fn flat<const D: usize>(grads: &GradientsParams, id: ParamId) -> Option<Tensor<1>> {
        grads.get::<D>(id).map(|g| {
            let n = g.shape().num_elements();
            g.reshape([n])
        })
    }
    match rank {
        1 => flat::<1>(grads, id),
        2 => flat::<2>(grads, id),
        3 => flat::<3>(grads, id),
        4 => flat::<4>(grads, id),
        r => panic!("parameters of rank {r} are not used by this model"),
    }
}

/// Puts the flattened gradient `g` back under `id` in its parameter's shape.
fn replace_grad(grads: &mut GradientsParams, id: ParamId, rank: usize, g: Tensor<1>) {
    fn replace<const D: usize>(grads: &mut GradientsParams, id: ParamId, g: Tensor<1>) {
        if let Some(old) = grads.remove::<D>(id) {
            grads.register::<D>(id, g.reshape(old.shape()));
        }
    }
    match rank {
        1 => replace::<1>(grads, id, g),
        2 => replace::<2>(grads, id, g),
        3 => replace::<3>(grads, id, g),
        4 => replace::<4>(grads, id, g),
        r => panic!("parameters of rank {r} are not used by this model"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_warmup_starts_short_and_reaches_the_decay() {
        assert_eq!(ema_warmup(0.999, 1), 2.0 / 11.0);
        assert_eq!(ema_warmup(0.999, 90), 0.91);
        assert_eq!(ema_warmup(0.999, 100_000), 0.999);
        // The initial weights' share after 1,200 updates: 0.999^1200 = 30 % without warm-up.
        let share: f64 = (1..=1200).map(|n| ema_warmup(0.999, n)).product();
        assert!(share < 1e-3 && 0.999f64.powi(1200) > 0.3, "{share}");
    }

    #[test]
    fn gradients_are_made_finite_then_clipped_on_the_device() {
        use burn::module::Param;
        #[derive(burn::module::Module, Debug)]
        struct Two {
            a: Param<Tensor<1>>,
            b: Param<Tensor<2>>,
        }
        let device = Device::flex().autodiff();
        let model = Two { a: Param::from_tensor(Tensor::from_floats([1.0, 2.0], &device)), b: Param::from_tensor(Tensor::from_floats([[3.0], [4.0]], &device)) };
        // d/da Σ a·(3, 4) = (3, 4); d/db Σ b·(0, inf) = (0, inf).
        let loss = (model.a.val() * Tensor::from_floats([3.0, 4.0], &device)).sum() + (model.b.val().reshape([2]) * Tensor::from_floats([0.0, f32::INFINITY], &device)).sum();
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let stats = finite_and_clipped(&model, &mut grads, 1.0);
        assert_eq!(stats.norm.into_scalar::<f32>(), 5.0, "the inf entry is zeroed before the norm");
        assert_eq!(stats.nonfinite.into_scalar::<f32>(), 1.0);
        let a = grads.get::<1>(model.a.id).unwrap().into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        assert_eq!(a, vec![0.6, 0.8], "scaled by 1/5");
        assert_eq!(grads.get::<2>(model.b.id).unwrap().into_data().convert::<f32>().try_into_vec::<f32>().unwrap(), vec![0.0, 0.0]);
    }
}
