//! Mixed precision: the network computes in bf16 from f32 master weights.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use burn::tensor::DType;
use common::{Jitter, randn, small_config};
use model3d::{Precision, UViT};
use model3d::network::compute_copy;

#[test]
fn the_bf16_copy_keeps_norms_in_f32_and_everything_else_in_bf16() {
    let master = UViT::new(&small_config(10), &common::device());
    let copy = compute_copy(&master, Precision::Bf16);
    let tensors = copy.collect(None, None, false);
    assert!(!tensors.is_empty());
    for t in &tensors {
        let in_norm = t.name.split('.').any(|part| part.contains("norm"));
        let expected = if in_norm { DType::F32 } else { DType::BF16 };
        assert_eq!(t.dtype, expected, "{}", t.name);
    }
    assert!(tensors.iter().any(|t| t.dtype == DType::F32) && tensors.iter().any(|t| t.dtype == DType::BF16));
}

/// Every parameter's gradient under two gradient sets, flattened to f32.
struct PairedGrads<'a> {
    f32: &'a GradientsParams,
    bf16: &'a GradientsParams,
    pairs: Vec<(Vec<f32>, Vec<f32>)>,
    bf16_dtypes: Vec<DType>,
}

impl ModuleVisitor for PairedGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let (Some(a), Some(b)) = (self.f32.get::<D>(param.id), self.bf16.get::<D>(param.id)) else {
            panic!("a parameter without gradient");
        };
        self.bf16_dtypes.push(b.dtype());
        let flat = |t: Tensor<D>| t.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap();
        self.pairs.push((flat(a), flat(b)));
    }
}

#[test]
fn bf16_compute_gives_f32_master_gradients_close_to_the_f32_ones() {
    let device = common::device().autodiff();
    let master = UViT::new(&small_config(10), &device).map(&mut Jitter);
    let x = randn([2, 4, 3, 16, 16], 1).to_device(&device);
    let target = randn([2, 4, 3, 16, 16], 2).to_device(&device);
    let logsnr = Tensor::<2>::from_data(TensorData::new(vec![-8.0f32, -3.0, 0.0, 2.0, 4.0, 6.0, 9.0, 12.0], [2, 4]), &device);
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64, 10], [2]), &device);
    let grads = |precision: Precision| {
        let out = compute_copy(&master, precision).forward(x.clone(), logsnr.clone(), labels.clone());
        assert_eq!(out.dtype(), precision.dtype());
        let loss = (out.cast(DType::F32) - target.clone()).powi_scalar(2).mean();
        GradientsParams::from_grads(loss.backward(), &master)
    };
    let (g32, g16) = (grads(Precision::F32), grads(Precision::Bf16));
    let mut paired = PairedGrads { f32: &g32, bf16: &g16, pairs: Vec::new(), bf16_dtypes: Vec::new() };
    master.visit(&mut paired);
    assert_eq!(paired.pairs.len(), master.collect(None, None, false).len());
    // Gradients land on the f32 master weights in f32.
    assert!(paired.bf16_dtypes.iter().all(|&d| d == DType::F32), "{:?}", paired.bf16_dtypes);
    // bf16 keeps 8 bits of mantissa: the whole gradient points the same way to within a few %.
    let (a, b): (Vec<f32>, Vec<f32>) = paired.pairs.iter().flat_map(|(a, b)| a.iter().copied().zip(b.iter().copied())).unzip();
    let dot = a.iter().zip(&b).map(|(x, y)| (*x as f64) * (*y as f64)).sum::<f64>();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let cosine = dot / (norm(&a) * norm(&b));
    assert!(cosine > 0.99, "cosine similarity of bf16 and f32 gradients: {cosine}");
    assert!((norm(&b) / norm(&a) - 1.0).abs() < 0.05, "norms {} vs {}", norm(&b), norm(&a));
}
