//! Whole-model parameter operations for the training loop: stable parameter ids, EMA, global
//! gradient-norm clipping, and finiteness checks.

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

/// The global L2 norm of the gradients; when `max_norm > 0` and it is larger, every gradient is
/// scaled by `max_norm / norm` (global clipping, not burn's per-parameter clipping).
pub fn clip_grad_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let mut ids = Ids::default();
    model.visit(&mut ids);
    let mut squares: Option<Tensor<1>> = None;
    for &(id, rank) in &ids.0 {
        if let Some(g) = grad_flat(grads, id, rank) {
            let s = g.clone().square().sum();
            squares = Some(match squares {
                Some(acc) => acc + s,
                None => s,
            });
        }
    }
    let norm = squares.map_or(0.0, |s| s.into_scalar::<f64>().sqrt());
    if max_norm > 0.0 && norm > max_norm && norm.is_finite() {
        let scale = max_norm / norm;
        for &(id, rank) in &ids.0 {
            scale_grad(grads, id, rank, scale);
        }
    }
    norm
}

#[derive(Default)]
struct Ids(Vec<(ParamId, usize)>);

impl ModuleVisitor for Ids {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push((param.id, D));
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

fn scale_grad(grads: &mut GradientsParams, id: ParamId, rank: usize, scale: f64) {
    fn scale_d<const D: usize>(grads: &mut GradientsParams, id: ParamId, scale: f64) {
        if let Some(g) = grads.remove::<D>(id) {
            grads.register::<D>(id, g.mul_scalar(scale));
        }
    }
    match rank {
        1 => scale_d::<1>(grads, id, scale),
        2 => scale_d::<2>(grads, id, scale),
        3 => scale_d::<3>(grads, id, scale),
        4 => scale_d::<4>(grads, id, scale),
        r => panic!("parameters of rank {r} are not used by this model"),
    }
}
