//! The feature networks behind FVD and FID, reproduced in burn so their published numbers can
//! be compared with ours:
//!
//! - [`i3d`]: Inception-v1 I3D trained on Kinetics-400 (Carreira & Zisserman 2017), as in
//!   pytorch-i3d, whose 400 logits are the FVD features (Unterthiner et al. 2018).
//! - [`inception`]: the 2015-12-05 TensorFlow Inception-v3 graph as pytorch-fid rebuilds it,
//!   whose 2048-d pool features are the FID features (Heusel et al. 2017).
//!
//! Weights come from the PyTorch `state_dict` files users already have ([`weights`]); both
//! networks run on any burn device, without autodiff.

pub mod i3d;
pub mod inception;
pub mod resize;
pub mod weights;

use burn::nn::Initializer;

/// Fresh convolution weights: He initialisation (He et al. 2015, std √(2/fan_in)), which keeps
/// activations at their scale through a ReLU stack. burn's default shrinks them layer by layer
/// into subnormal floats, which CPUs compute very slowly.
const HE: Initializer = Initializer::KaimingNormal { gain: std::f64::consts::SQRT_2, fan_out_only: false };

pub use i3d::I3d;
pub use inception::FidInception;
pub use weights::{Pretrained, WeightsError};
