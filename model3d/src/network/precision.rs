//! Mixed precision: the network computes in bf16 from f32 master weights.
//!
//! [`compute_copy`] casts every weight inside the autodiff graph, so a backward pass through the
//! copy lands its gradients, cast back to f32, on the master parameters. Normalisation layers
//! keep f32 parameters and run in f32 (the fused norm ops inside, the QK norms through
//! `blocks::in_f32`), and the λ embedding computes its
//! Fourier features in f32 (`embedding`), as mixed-precision autocast would.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::DType;
use serde::{Deserialize, Serialize};

use super::UViT;

/// The type the network computes in. Master weights, optimizer state, schedule and loss stay
/// f32 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            _ => Err(format!("`{s}`: expected f32 or bf16")),
        }
    }
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }
}

/// Casts float parameters to `dtype`, except inside normalisation layers.
struct CastWeights {
    dtype: DType,
    /// Container types entered and not yet left.
    stack: Vec<String>,
}

impl ModuleMapper for CastWeights {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        self.stack.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let in_norm = self.stack.last().is_some_and(|c| c == "Struct:GroupNorm" || c == "Struct:RmsNorm");
        if in_norm {
            return param;
        }
        let dtype = self.dtype;
        param.map(|t| t.cast(dtype))
    }
}

/// The network with its weights cast to `precision` (norms excepted), still tied to `model`'s
/// parameters in the autodiff graph. For f32 it is a plain clone.
pub fn compute_copy(model: &UViT, precision: Precision) -> UViT {
    match precision {
        Precision::F32 => model.clone(),
        Precision::Bf16 => model.clone().map(&mut CastWeights { dtype: precision.dtype(), stack: Vec::new() }),
    }
}
