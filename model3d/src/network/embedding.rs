//! Conditioning vector per frame from λ and the class label.

use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::DType;

use crate::activation::silu;

/// Scale applied to λ before the Fourier features (EDM's `c_noise = ln σ / 4 = −λ/8`; DFoT's 0.125).
const LOGSNR_SCALE: f64 = 0.125;
/// Highest angular frequency of the Fourier features, per unit of `0.125·λ`.
const MAX_FREQUENCY: f64 = 1000.0;

#[derive(Module, Debug)]
pub struct ConditionEmbedding {
    pub fourier_mlp_in: Linear,
    pub fourier_mlp_out: Linear,
    pub class: Option<Embedding>,
    pub fourier_features: usize,
}

impl ConditionEmbedding {
    pub fn new(fourier_features: usize, emb: usize, num_classes: usize, device: &Device) -> Self {
        Self {
            fourier_mlp_in: LinearConfig::new(fourier_features, emb).init(device),
            fourier_mlp_out: LinearConfig::new(emb, emb).init(device),
            class: (num_classes > 0).then(|| EmbeddingConfig::new(num_classes + 1, emb).init(device)),
            fourier_features,
        }
    }

    /// Frequencies log-spaced in `[1, MAX_FREQUENCY]`.
    fn frequencies(&self, device: &Device) -> Tensor<1> {
        let half = self.fourier_features / 2;
        let f: Vec<f32> = (0..half)
            .map(|k| (MAX_FREQUENCY.ln() * k as f64 / (half.max(2) - 1) as f64).exp() as f32)
            .collect();
        Tensor::from_data(TensorData::new(f, [half]), device)
    }

    /// The Fourier features are computed in f32 whatever the weights' type: angles reach
    /// thousands of radians, which bf16's 8-bit mantissa cannot place on the circle.
    ///
    /// # Shapes
    /// - `logsnr`: `[B, T]`, `labels`: `[B]` (index `num_classes` is the null class)
    /// - returns `[B, T, E]` in the weights' type, already passed through SiLU for the FiLM
    ///   projections
    pub fn forward(&self, logsnr: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<3> {
        let [b, t] = logsnr.dims();
        let half = self.fourier_features / 2;
        let freqs = self.frequencies(&logsnr.device()).reshape([1, 1, half]);
        let angles = logsnr.cast(DType::F32).mul_scalar(LOGSNR_SCALE).reshape([b, t, 1]) * freqs; // [B, T, F/2]
        let features = Tensor::cat(vec![angles.clone().sin(), angles.cos()], 2); // [B, T, F]
        let features = features.cast(self.fourier_mlp_in.weight.val().dtype());
        let mut emb = self.fourier_mlp_out.forward(silu(self.fourier_mlp_in.forward(features)));
        if let Some(class) = &self.class {
            emb = emb + class.forward(labels.reshape([b, 1])); // [B, 1, E] broadcasts over frames
        }
        silu(emb)
    }
}
