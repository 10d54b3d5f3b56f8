//! What the project's own CPU (burn-flex) kernels share: an `exp` loops can vectorise, a way to
//! compile a loop a second time for AVX2 and FMA, one-thread matrix products, and a tensor's
//! values as f32 and back, in its logical order or in the order a permuted view stores them.

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

/// Lanes of the kernels' reductions: independent partial sums the compiler keeps in one vector.
/// (A float sum into one accumulator is a chain of dependent adds, which never vectorises.)
pub const LANES: usize = 8;

/// `K` sums of `term(a_i, b_i)` over two slices of one length, each in [`LANES`] lanes that are
/// added in a fixed order at the end, so that the result depends on the length alone.
#[inline(always)]
pub fn lane_sums<const K: usize>(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> [f32; K]) -> [f32; K] {
    assert_eq!(a.len(), b.len(), "paired slices");
    let (chunks_a, chunks_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let mut out = [0f32; K];
    for (&x, &y) in chunks_a.remainder().iter().zip(chunks_b.remainder()) {
        out.iter_mut().zip(term(x, y)).for_each(|(o, t)| *o += t);
    }
    let mut acc = [[0f32; LANES]; K];
    for (xs, ys) in chunks_a.zip(chunks_b) {
        for lane in 0..LANES {
            let t = term(xs[lane], ys[lane]);
            for (sums, t) in acc.iter_mut().zip(t) {
                sums[lane] += t;
            }
        }
    }
    for (o, sums) in out.iter_mut().zip(acc) {
        *o += sums.iter().sum::<f32>();
    }
    out
}

/// Whether this CPU has AVX2 and FMA, which the kernels' wide versions are compiled for.
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst` `[cols, rows]` = `src` `[rows, cols]` transposed, in 8 × 8 blocks so that reads and
/// writes each stay within a few cache lines.
pub fn transpose(src: &[f32], [rows, cols]: [usize; 2], dst: &mut [f32]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols, "a [{rows}, {cols}] matrix");
    for r0 in (0..rows).step_by(8) {
        for c0 in (0..cols).step_by(8) {
            for r in r0..(r0 + 8).min(rows) {
                for c in c0..(c0 + 8).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
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
                if $crate::cpu::has_avx2_fma() {
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

/// `t` itself when it is contiguous or its elements fill its storage exactly once in some order
/// of its dimensions, as `swap_dims` and `permute` leave a contiguous tensor. Else a contiguous
/// copy. A kernel that reads such a tensor through its [`strides`] (and writes its
/// output in the same order, [`with_strides`]) spares the copy a permuted view would cost.
pub fn dense(t: &FlexTensor) -> FlexTensor {
    let layout = t.layout();
    let shape = layout.shape();
    let mut dims: Vec<(usize, isize)> = (0..shape.num_dims()).map(|i| (shape[i], layout.strides()[i])).filter(|&(n, _)| n > 1).collect();
    dims.sort_by_key(|&(_, stride)| std::cmp::Reverse(stride));
    let mut expected = 1isize;
    let packed = dims.iter().rev().all(|&(n, stride)| {
        let next = stride == expected;
        expected *= n as isize;
        next
    });
    let fills_storage = layout.start_offset() == 0 && t.bytes().len() == layout.num_elements() * t.dtype().size();
    if t.is_contiguous() || (packed && fills_storage) { t.clone() } else { t.to_contiguous() }
}

/// The strides of a tensor from [`dense`], in elements.
pub fn strides<const D: usize>(t: &FlexTensor) -> [usize; D] {
    let strides = t.layout().strides();
    assert!(strides.len() == D && strides.iter().all(|&s| s >= 0), "a tensor of {D} dimensions from cpu::dense, not strides {strides:?}");
    std::array::from_fn(|i| strides[i] as usize)
}

/// Strides `[.., N·D, D, 1]` of a contiguous tensor of `dims`.
pub fn contiguous_strides<const D: usize>(dims: [usize; D]) -> [usize; D] {
    let mut strides = [1; D];
    for i in (0..D.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1];
    }
    strides
}

/// The values of a float tensor as f32, in the order it stores them: a contiguous tensor's in
/// its logical order, a permuted one's from [`dense`] as [`strides`] places them. Borrowed when
/// they are f32, else converted.
pub fn f32_values(t: &FlexTensor) -> Cow<'_, [f32]> {
    // A permuted tensor's storage holds exactly its values (`dense`).
    fn whole<'a, E>(storage: &'a [E], t: &FlexTensor) -> &'a [E] {
        assert_eq!(storage.len(), t.layout().num_elements(), "a contiguous tensor or one from cpu::dense");
        storage
    }
    match t.dtype() {
        DType::F32 => Cow::Borrowed(t.as_slice::<f32>().unwrap_or_else(|| whole(t.storage::<f32>(), t))),
        DType::BF16 => Cow::Owned(t.as_slice::<bf16>().unwrap_or_else(|| whole(t.storage::<bf16>(), t)).iter().map(|x| x.to_f32()).collect()),
        DType::F16 => Cow::Owned(t.as_slice::<f16>().unwrap_or_else(|| whole(t.storage::<f16>(), t)).iter().map(|x| x.to_f32()).collect()),
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

/// `t`'s values (stored contiguously) read as a tensor of `dims` whose elements lie at `strides`:
/// how a kernel returns its output in the order of an input from [`dense`].
pub fn with_strides<const D: usize>(t: FlexTensor, dims: [usize; D], strides: [usize; D]) -> FlexTensor {
    t.with_layout(Layout::new(Shape::new(dims), strides.map(|s| s as isize).to_vec(), 0))
}

/// Rows of one output that parallel tasks write, each its own rows, when the rows of a task do
/// not form one slice (heads of a tensor stored token-major).
pub struct SharedRows<'a> {
    ptr: *mut f32,
    len: usize,
    _values: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: `SharedRows` hands out writes only through `write`, whose caller guarantees that no two
// tasks write the same element; the borrow it was made from keeps the values alive.
unsafe impl Send for SharedRows<'_> {}
unsafe impl Sync for SharedRows<'_> {}

impl<'a> SharedRows<'a> {
    pub fn new(values: &'a mut [f32]) -> Self {
        Self { ptr: values.as_mut_ptr(), len: values.len(), _values: std::marker::PhantomData }
    }

    /// Copies `row` to `offset`.
    ///
    /// # Safety
    /// No other task reads or writes `offset..offset + row.len()` while the rows are shared.
    pub unsafe fn write(&self, offset: usize, row: &[f32]) {
        assert!(offset + row.len() <= self.len, "row {offset}..{} out of {}", offset + row.len(), self.len);
        // SAFETY: in bounds (asserted); the caller guarantees the range is this task's alone.
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), self.ptr.add(offset), row.len()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_the_plain_sum_in_every_orientation() {
        // [m, n, kk]: a temporal head's scores and its output, odd sizes, and larger blocks.
        for [m, n, kk] in [[16, 16, 8], [16, 8, 16], [5, 3, 7], [40, 33, 32]] {
            let values = |len: usize, seed: usize| -> Vec<f32> { (0..len).map(|i| ((i * 7 + seed * 13) % 23) as f32 / 11.0 - 1.0).collect() };
            let (a, b, c0) = (values(m * kk, 1), values(kk * n, 2), values(m * n, 3));
            for (a_t, b_t, accumulate) in [(false, false, true), (false, true, false), (true, false, true), (true, true, false)] {
                let at = |i: usize, p: usize| if a_t { a[p * m + i] } else { a[i * kk + p] } as f64;
                let bt = |p: usize, j: usize| if b_t { b[j * kk + p] } else { b[p * n + j] } as f64;
                let mut c = c0.clone();
                matmul(&mut c, &a, a_t, &b, b_t, [m, n, kk], 0.5, accumulate);
                for i in 0..m {
                    for j in 0..n {
                        let want = if accumulate { c0[i * n + j] as f64 } else { 0.0 } + 0.5 * (0..kk).map(|p| at(i, p) * bt(p, j)).sum::<f64>();
                        assert!((c[i * n + j] as f64 - want).abs() < 1e-5, "[{m}, {n}, {kk}] a_t {a_t} b_t {b_t}: {} against {want}", c[i * n + j]);
                    }
                }
            }
        }
    }

    #[test]
    fn lane_sums_add_every_term_once() {
        // Lengths below, at and past one chunk of lanes, with a remainder.
        for n in [0, 3, 8, 21, 64] {
            let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 / 4.0).collect();
            let [s, p] = lane_sums(&a, &b, |x, y| [x, x * y]);
            let (want_s, want_p) = (a.iter().sum::<f32>(), a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>());
            assert!((s - want_s).abs() <= 1e-4 * (1.0 + want_s.abs()) && (p - want_p).abs() <= 1e-4 * (1.0 + want_p.abs()), "{n}: {s} {p}");
        }
    }

    #[test]
    fn dense_keeps_permuted_views_in_place_and_copies_the_rest() {
        let values: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let t = FlexTensor::from_data(burn::tensor::TensorData::new(values.clone(), [2, 3, 4]));
        let same = |a: &FlexTensor, b: &FlexTensor| std::sync::Arc::ptr_eq(&a.data_arc(), &b.data_arc());
        // A permutation: read in place, its values in storage order, placed by its strides.
        let view = t.permute(&[2, 0, 1]);
        let kept = dense(&view);
        assert!(same(&kept, &t));
        assert_eq!(strides::<3>(&kept), [1, 12, 4]);
        assert_eq!(f32_values(&kept)[..], values[..]);
        // A narrowed view leaves part of its storage out; a broadcast one reads its first half
        // twice (as many elements as the storage holds).
        let broadcast = t.clone().with_layout(Layout::new(Shape::new([2, 3, 4]), vec![0, 4, 1], 0));
        for copied in [t.narrow(2, 1, 2), broadcast] {
            let out = dense(&copied);
            assert!(!same(&out, &t) && out.is_contiguous());
        }
        assert_eq!(contiguous_strides([2, 3, 4]), [12, 4, 1]);
    }

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
