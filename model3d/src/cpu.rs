//! What the project's own CPU (burn-flex) kernels share: an `exp` loops can vectorise, a way to
//! compile a loop a second time for AVX2 and FMA, one-thread matrix products, and a tensor's
//! values as f32 and back.

use std::borrow::Cow;

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::{Bytes, DType, Shape, bf16, f16};

/// `e^x` in f32 without a library call, so that loops over it vectorise: Cephes' `expf`
/// (Moshier 1984). With `x = n·ln 2 + r`, `|r| ≤ ln 2 / 2`, `e^x = 2^n · e^r`; `n` is rounded by
/// adding 1.5·2²³ (it then sits in the low mantissa bits), `ln 2` is split in two so `r` is exact,
/// `e^r ≈ 1 + r + r²·p(r)` with Cephes' degree-5 minimax `p`, and `2^n` is built from its exponent
/// bits. Relative error below 2·10⁻⁷ (test); `x < −87.3` gives 0 (as `e^x` does in f32 to within
/// 1.2·10⁻³⁸), `x > 88.3` is clamped, NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // the first 11 bits of ln 2, so n·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³
    const LO: f32 = -87.3;
    const HI: f32 = 88.3;
    let clamped = x.clamp(LO, HI); // NaN stays NaN
    let t = clamped * LOG2E + ROUND;
    let n = t - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 0.5; // Cephes' last term, 5.0000001201e-1, is 0.5 in f32
    let e_r = p * r * r + r + 1.0;
    // t's bits are those of 1.5·2²³ plus n; shifted by 23 only n's bits stay, in the exponent.
    let two_n = f32::from_bits(t.to_bits().wrapping_shl(23).wrapping_add(127 << 23));
    if x < LO { 0.0 } else { e_r * two_n }
}

/// Defines `$vis fn $name`, which calls `$body` compiled for AVX2 and FMA when this CPU has them
/// (loops then vectorise 8 lanes wide) and as built otherwise. `$body` should be
/// `#[inline(always)]`, so that it is compiled into each version.
macro_rules! wide {
    ($(#[$doc:meta])* $vis:vis fn $name:ident = $body:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn wide($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `wide` is compiled for.
                    return unsafe { wide($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use wide;

/// `c[m×n] = (c if accumulate, else 0) + alpha · op(a) · op(b)`, with `op(x) = xᵀ` when asked:
/// `a` holds `[m, kk]` (or `[kk, m]` when transposed), `b` `[kk, n]` (or `[n, kk]`).
#[allow(clippy::too_many_arguments)]
pub fn matmul(c: &mut [f32], a: &[f32], a_t: bool, b: &[f32], b_t: bool, [m, n, kk]: [usize; 3], alpha: f32, accumulate: bool) {
    assert!(c.len() >= m * n && a.len() >= m * kk && b.len() >= kk * n, "block sizes");
    let (a_rs, a_cs) = if a_t { (1, m) } else { (kk, 1) };
    let (b_rs, b_cs) = if b_t { (1, kk) } else { (n, 1) };
    // SAFETY: the assertion above keeps every access inside the three slices, `c` is borrowed
    // mutably and distinct from `a` and `b`; gemm computes dst := 1·dst + alpha·lhs·rhs.
    unsafe {
        gemm::gemm(
            m, n, kk,
            c.as_mut_ptr(), 1, n as isize, accumulate,
            a.as_ptr(), a_cs as isize, a_rs as isize,
            b.as_ptr(), b_cs as isize, b_rs as isize,
            1.0, alpha, false, false, false, gemm::Parallelism::None,
        );
    }
}

/// A tensor's `D` dimensions.
pub fn dims<const D: usize>(t: &FlexTensor) -> [usize; D] {
    t.layout().shape().dims()
}

/// The values of a contiguous float tensor as f32: borrowed when they are f32, else converted.
pub fn f32_values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.dtype() {
        DType::F32 => Cow::Borrowed(t.as_slice::<f32>().expect("a contiguous tensor")),
        DType::BF16 => Cow::Owned(t.as_slice::<bf16>().expect("a contiguous tensor").iter().map(|x| x.to_f32()).collect()),
        DType::F16 => Cow::Owned(t.as_slice::<f16>().expect("a contiguous tensor").iter().map(|x| x.to_f32()).collect()),
        other => panic!("the project's CPU kernels take f32, bf16 or f16 tensors, not {other:?}"),
    }
}

/// A contiguous tensor of `shape` holding `values` in `dtype` (bf16 and f16 rounded, else f32).
pub fn from_f32(values: Vec<f32>, shape: Shape, dtype: DType) -> FlexTensor {
    let layout = Layout::contiguous(shape);
    match dtype {
        DType::BF16 => FlexTensor::new(Bytes::from_elems(values.into_iter().map(bf16::from_f32).collect::<Vec<_>>()), layout, dtype),
        DType::F16 => FlexTensor::new(Bytes::from_elems(values.into_iter().map(f16::from_f32).collect::<Vec<_>>()), layout, dtype),
        _ => FlexTensor::new(Bytes::from_elems(values), layout, DType::F32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value_over_the_f32_range() {
        let mut worst = 0f64;
        for i in 0..=400_000 {
            let x = -87.0 + 175.0 * i as f32 / 400_000.0;
            let exact = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - exact) / exact).abs());
        }
        assert!(worst < 2.4e-7, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(100.0).is_finite() && exp(100.0) > 1e38);
    }
}
