//! Helpers of the unit tests.

use burn::prelude::*;

/// A `shape` tensor of [`crate::noise::gaussian`] values on the CPU.
pub fn randn<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<D> {
    Tensor::from_data(TensorData::new(crate::noise::gaussian(seed, shape.iter().product()), shape), &Device::flex())
}

/// `max |ours − reference| / max |reference|`.
pub fn relative_error<const D: usize>(ours: Tensor<D>, reference: Tensor<D>) -> f32 {
    (ours - reference.clone()).abs().max().into_scalar::<f32>() / reference.abs().max().into_scalar::<f32>()
}
