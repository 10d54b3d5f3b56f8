//! The 3×3 convolution computed directly from the zero-padded input, with AVX2 and FMA: no
//! im2col columns, no packing of them, one pass over the output. Each output pixel is
//! `y[o, i, j] = b[o] + Σ_c Σ_{dy, dx} W[o, c, dy, dx] · x_pad[c, i + dy, j + dx]`, where
//! `x_pad` `[C, H + 2, W + 2]` is the input with a one-pixel border of zeros. The register tile
//! is 6 output channels × 16 pixels (12 accumulators of 8 lanes; the shape of the usual AVX2
//! matrix-product microkernel, Goto & van de Geijn 2008, with the pixels read straight from the
//! padded plane at each tap's offset instead of from packed columns). Per channel and tap it
//! loads two vectors of 8 pixels and broadcasts 6 weights for 12 fused multiply-adds.
//!
//! The weight gradient, `dWᵀ[(c, t), o] = Σ_n Σ_p x_pad,n[c, p + shift(t)] · dy_n[o, p]`, is the
//! same product the other way round: a tile of 6 rows `(c, t)` × 16 output channels, over every
//! pixel one load of 16 values of `dyᵀ` `[HW, O]` and 6 broadcasts from the padded plane.
//!
//! Pixels go in segments of 8 consecutive output pixels: a part of one row when `W` is a multiple
//! of 8, two whole rows when `W = 4` (two 4-lane halves from two padded rows). Planes that
//! [`super::winograd`] takes go there instead; other widths, and CPUs without AVX2 and FMA, take
//! the columns and matrix products of [`super::kernel`].
//! At `small_video`'s shapes on one Zen 3 core it ran 1.15-1.8x faster than im2col and gemm
//! 0.19 and faster than PyTorch's oneDNN convolution (BENCHMARKS.md, "The 3×3 convolutions
//! straight from the padded plane").

use super::kernel::Image;
use crate::cpu::{has_avx2_fma, transpose};

/// Output channels per register tile.
const TILE_O: usize = 6;

/// Whether this CPU and this plane take the direct kernel: AVX2 and FMA, and `W` a multiple of
/// 8 or `W = 4` with an even `H`.
pub fn available(im: Image) -> bool {
    let width = im.w % 8 == 0 || (im.w == 4 && im.h % 2 == 0);
    width && im.h > 0 && im.w > 0 && has_avx2_fma()
}

/// A weight `[O, C, 3, 3]` in the order the kernel reads it: `[⌈O/6⌉, C, 9, 6]`, the output
/// channels of a tile innermost, zeros past `O`.
#[derive(Clone, Debug)]
pub struct Packed {
    values: Vec<f32>,
    o: usize,
    c: usize,
}

impl Packed {
    /// Packs `weight`, `[O, C, 3, 3]` stored contiguously (`[O, 9C]`).
    pub fn new(weight: &[f32], o: usize, c: usize) -> Self {
        assert_eq!(weight.len(), o * c * 9, "a weight of {o}x{c}x3x3");
        let mut values = vec![0f32; o.div_ceil(TILE_O) * c * 9 * TILE_O];
        for (oc, taps) in weight.chunks_exact(9).enumerate() {
            let (oi, ci) = (oc / c, oc % c);
            for (t, &v) in taps.iter().enumerate() {
                values[((oi / TILE_O * c + ci) * 9 + t) * TILE_O + oi % TILE_O] = v;
            }
        }
        Self { values, o, c }
    }
}

/// Elements of the padded input scratch for one image, `[C, H + 2, W + 2]`.
pub fn padded_len(im: Image) -> usize {
    im.c * (im.h + 2) * (im.w + 2)
}

/// One image's output `y` `[O, H, W]` from its pixels `x` `[C, H, W]`, the packed weight and the
/// bias `[O]`; `padded` is scratch of at least [`padded_len`], every element of which is written
/// before it is read. Needs [`available`]`(im)`.
pub fn forward(x: &[f32], weight: &Packed, bias: &[f32], im: Image, padded: &mut [f32], y: &mut [f32]) {
    assert!(available(im), "the direct kernel does not take {im:?} on this CPU");
    assert_eq!((weight.c, weight.o), (im.c, bias.len()), "weight against input and bias");
    assert!(x.len() >= im.c * im.pixels() && y.len() >= weight.o * im.pixels() && padded.len() >= padded_len(im), "buffer sizes");
    pad(x, im, padded);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available` checked AVX2 and FMA and the plane's width; the sizes are asserted above.
    unsafe {
        if im.w == 4 { avx2::forward::<true>(padded, weight, bias, im, y) } else { avx2::forward::<false>(padded, weight, bias, im, y) }
    }
}

/// Whether this CPU takes the direct weight gradient for `o` output channels: AVX2 and FMA, and
/// `O` a multiple of 8 (one or two vectors of output channels per tile). Any plane.
pub fn weight_grads_available(o: usize) -> bool {
    o % 8 == 0 && o > 0 && has_avx2_fma()
}

/// Adds a group of images' weight gradients onto `dwt` `[9C, O]` (row `(c, t)`): `xs` holds the
/// images `[k, C, H, W]`, `dys` their output gradients `[k, O, H, W]`; `padded`
/// (`k·`[`padded_len`]) and `dy_t` (`k·O·H·W`) are scratch, written before they are read. All
/// `k` images go through each register tile at once, so that small planes (64 or 16 pixels) do
/// not reload the accumulators per image. Needs [`weight_grads_available`]`(O)`.
pub fn weight_grads(xs: &[f32], dys: &[f32], im: Image, padded: &mut [f32], dy_t: &mut [f32], dwt: &mut [f32]) {
    let (image, hw) = (im.c * im.pixels(), im.pixels());
    let (o, k) = (dwt.len() / (9 * im.c), xs.len() / image);
    assert!(weight_grads_available(o), "the direct weight gradient does not take {o} channels on this CPU");
    assert!(dwt.len() == 9 * im.c * o && dys.len() == k * o * hw && padded.len() >= k * padded_len(im) && dy_t.len() >= k * o * hw, "buffer sizes");
    pad(xs, im, padded);
    for (dy, dst) in dys.chunks_exact(o * hw).zip(dy_t.chunks_exact_mut(o * hw)) {
        transpose(dy, [o, hw], dst);
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `weight_grads_available` checked AVX2, FMA and `O`; the sizes are asserted above.
    unsafe {
        avx2::weight_grads(padded, dy_t, im, k, dwt)
    };
}

/// The planes of `x` (`[.., H, W]`, one image or several) into `padded` `[.., H + 2, W + 2]` with
/// a border of zeros.
pub(super) fn pad(x: &[f32], im: Image, padded: &mut [f32]) {
    let (pw, plane) = (im.w + 2, (im.w + 2) * (im.h + 2));
    for (dst, src) in padded.chunks_exact_mut(plane).zip(x.chunks_exact(im.pixels())) {
        dst[..pw].fill(0.0);
        dst[plane - pw..].fill(0.0);
        for (row, pixels) in dst[pw..plane - pw].chunks_exact_mut(pw).zip(src.chunks_exact(im.w)) {
            row[0] = 0.0;
            row[1..=im.w].copy_from_slice(pixels);
            row[pw - 1] = 0.0;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Image, Packed, TILE_O};

    /// Where segment `s` (output pixels `8s..8s + 8`) reads tap `(0, 0)` in a padded plane: row
    /// `i`, column `j` of the padded plane is output pixel `(i, j)`'s top-left neighbour.
    #[inline(always)]
    fn origin<const NARROW: bool>(s: usize, im: Image) -> usize {
        let p = 8 * s;
        if NARROW { (p / 4) * (im.w + 2) } else { (p / im.w) * (im.w + 2) + p % im.w }
    }

    /// 8 padded pixels of a segment at `at`: one load, or with `NARROW` the 4 at `at` and the 4
    /// of the next padded row.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load<const NARROW: bool>(at: *const f32, pw: usize) -> __m256 {
        // SAFETY: the caller keeps `at..at + 8` (or `at + pw + 4` when narrow) inside the plane.
        unsafe { if NARROW { _mm256_loadu2_m128(at.add(pw), at) } else { _mm256_loadu_ps(at) } }
    }

    /// The whole output: for each tile of 6 output channels (its packed weights, `C·9·6` values,
    /// stay in L1), every pair of segments.
    ///
    /// # Safety
    /// AVX2 and FMA; `padded` holds `[C, H + 2, W + 2]`, `y` at least `O·H·W` values, `H·W` is a
    /// multiple of 8 and `W` a multiple of 8 or, with `NARROW`, 4.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn forward<const NARROW: bool>(padded: &[f32], weight: &Packed, bias: &[f32], im: Image, y: &mut [f32]) {
        let (c, o, hw, pw) = (weight.c, weight.o, im.pixels(), im.w + 2);
        let plane = pw * (im.h + 2);
        let segments = hw / 8;
        let (x, out) = (padded.as_ptr(), y.as_mut_ptr());
        for tile in 0..o.div_ceil(TILE_O) {
            let w = weight.values[tile * c * 9 * TILE_O..].as_ptr();
            let rows = (o - tile * TILE_O).min(TILE_O);
            for s in (0..segments).step_by(2) {
                // A lone last segment is computed twice over, into the same place.
                let (s0, s1) = (s, (s + 1).min(segments - 1));
                let (a0, a1) = (origin::<NARROW>(s0, im), origin::<NARROW>(s1, im));
                let mut acc = [[_mm256_setzero_ps(); 2]; TILE_O];
                for (r, pair) in acc.iter_mut().enumerate().take(rows) {
                    *pair = [_mm256_set1_ps(bias[tile * TILE_O + r]); 2];
                }
                for ci in 0..c {
                    // SAFETY: segment origins plus tap offsets (at most 2·pw + 2) plus 8 stay
                    // inside channel `ci`'s plane (module docs), the weight inside the tile.
                    unsafe {
                        let (p0, p1) = (x.add(ci * plane + a0), x.add(ci * plane + a1));
                        let wc = w.add(ci * 9 * TILE_O);
                        for t in 0..9 {
                            let offset = (t / 3) * pw + t % 3;
                            let (v0, v1) = (load::<NARROW>(p0.add(offset), pw), load::<NARROW>(p1.add(offset), pw));
                            let wt = wc.add(t * TILE_O);
                            for (r, pair) in acc.iter_mut().enumerate() {
                                let b = _mm256_broadcast_ss(&*wt.add(r));
                                pair[0] = _mm256_fmadd_ps(b, v0, pair[0]);
                                pair[1] = _mm256_fmadd_ps(b, v1, pair[1]);
                            }
                        }
                    }
                }
                for (r, pair) in acc.iter().enumerate().take(rows) {
                    let row = (tile * TILE_O + r) * hw;
                    // SAFETY: channel `tile·6 + r < O`, pixels `8·s1 + 8 ≤ H·W`.
                    unsafe {
                        _mm256_storeu_ps(out.add(row + 8 * s0), pair[0]);
                        _mm256_storeu_ps(out.add(row + 8 * s1), pair[1]);
                    }
                }
            }
        }
    }

    /// `dwt` `[9C, O]` += the products of `images` images, from `padded` `[k, C, H + 2, W + 2]`
    /// and `dy_t` `[k, HW, O]`: for every tile of 16 output channels (or a last one of 8), every
    /// tile of 6 rows `(c, t)`, over all pixels of all images. A last tile of fewer rows repeats
    /// row 0 and drops it.
    ///
    /// # Safety
    /// AVX2 and FMA; `padded` and `dy_t` as above, `O` a multiple of 8, `dwt` `9C·O` values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weight_grads(padded: &[f32], dy_t: &[f32], im: Image, images: usize, dwt: &mut [f32]) {
        let (pw, plane) = (im.w + 2, (im.w + 2) * (im.h + 2));
        let (hw, image) = (im.pixels(), im.c * plane);
        let rows = 9 * im.c;
        let o = dwt.len() / rows;
        let (x, dy, out) = (padded.as_ptr(), dy_t.as_ptr(), dwt.as_mut_ptr());
        for block in (0..o).step_by(16) {
            let two = block + 16 <= o;
            for first in (0..rows).step_by(TILE_O) {
                let count = (rows - first).min(TILE_O);
                // Where row `(c, t)` reads pixel `(0, 0)`: its plane and the tap's shift.
                let base: [usize; TILE_O] = std::array::from_fn(|r| {
                    let row = if r < count { first + r } else { first };
                    let (c, t) = (row / 9, row % 9);
                    c * plane + (t / 3) * pw + t % 3
                });
                let mut acc = [[_mm256_setzero_ps(); 2]; TILE_O];
                // SAFETY: rows `first..first + count` of `dwt`, channels `block..block + 8` (or
                // `+ 16` when `two`) of each, lie inside `dwt` (`O` a multiple of 8).
                unsafe {
                    for (r, pair) in acc.iter_mut().enumerate().take(count) {
                        let at = out.add((first + r) * o + block);
                        pair[0] = _mm256_loadu_ps(at);
                        if two {
                            pair[1] = _mm256_loadu_ps(at.add(8));
                        }
                    }
                }
                for n in 0..images {
                    for i in 0..im.h {
                        for j in 0..im.w {
                            let (q, p) = (n * image + i * pw + j, (n * hw + i * im.w + j) * o);
                            // SAFETY: `q + base[r] ≤ n·C·plane + (H − 1 + 2)·pw + W − 1 + 2` is
                            // inside image `n`'s planes, `p + block + 16 ≤ k·HW·O` (or `+ 8`
                            // when not `two`) inside `dy_t`.
                            unsafe {
                                let d = dy.add(p + block);
                                let d0 = _mm256_loadu_ps(d);
                                let d1 = if two { _mm256_loadu_ps(d.add(8)) } else { d0 };
                                for (pair, &b) in acc.iter_mut().zip(&base) {
                                    let v = _mm256_broadcast_ss(&*x.add(b + q));
                                    pair[0] = _mm256_fmadd_ps(v, d0, pair[0]);
                                    pair[1] = _mm256_fmadd_ps(v, d1, pair[1]);
                                }
                            }
                        }
                    }
                }
                // SAFETY: as for the loads above.
                unsafe {
                    for (r, pair) in acc.iter().enumerate().take(count) {
                        let at = out.add((first + r) * o + block);
                        _mm256_storeu_ps(at, pair[0]);
                        if two {
                            _mm256_storeu_ps(at.add(8), pair[1]);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::reference::{direct_sum, values, weight_grad};
    use super::*;

    #[test]
    fn matches_the_direct_sum_for_every_tile_and_segment_shape() {
        if !has_avx2_fma() {
            return; // the columns path of `kernel` is the one this CPU runs, tested there
        }
        // (C, H, W, O): O not a multiple of the 6-channel tile, an odd number of segments, one
        // segment, W = 4 (two rows per segment), wide planes, a single channel.
        for (c, h, w, o) in [(3, 4, 8, 7), (2, 3, 8, 5), (4, 1, 8, 2), (5, 6, 4, 6), (3, 2, 4, 13), (1, 5, 16, 12), (2, 4, 24, 1)] {
            let im = Image { c, h, w };
            assert!(available(im), "{im:?}");
            let (x, weight, bias) = (values(c * h * w, 1), values(o * c * 9, 2), values(o, 3));
            let (mut padded, mut y) = (vec![f32::NAN; padded_len(im)], vec![f32::NAN; o * h * w]);
            forward(&x, &Packed::new(&weight, o, c), &bias, im, &mut padded, &mut y);
            for (p, (got, want)) in y.iter().zip(direct_sum(&x, &weight, &bias, im)).enumerate() {
                assert!((*got as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "{c}x{h}x{w}→{o}, element {p}: {got} against {want}");
            }
        }
    }

    #[test]
    fn weight_grads_add_the_sum_over_images_and_pixels() {
        if !has_avx2_fma() {
            return;
        }
        // (C, H, W, O): 9C not a multiple of the 6-row tile, odd planes, a single pixel, two
        // vectors of channels and one (O = 24 = 16 + 8), W = 4.
        for (c, h, w, o) in [(3, 5, 7, 8), (2, 4, 8, 16), (1, 1, 1, 24), (4, 3, 4, 8), (2, 6, 5, 40)] {
            let (im, k, hw) = (Image { c, h, w }, 2, h * w);
            let (xs, dys, start) = (values(k * c * hw, 4), values(k * o * hw, 5), values(9 * c * o, 6));
            let (mut padded, mut dy_t, mut dwt) = (vec![f32::NAN; k * padded_len(im)], vec![f32::NAN; k * o * hw], start.clone());
            weight_grads(&xs, &dys, im, &mut padded, &mut dy_t, &mut dwt);
            for (idx, got) in dwt.iter().enumerate() {
                let ((ci, t), oi) = ((idx / o / 9, idx / o % 9), idx % o);
                let want = start[idx] as f64 + weight_grad(&xs, &dys, im, o, [ci, t, oi]);
                assert!((*got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "{c}x{h}x{w}→{o}, dWᵀ[{idx}]: {got} against {want}");
            }
        }
        assert!(!weight_grads_available(12) && !weight_grads_available(0));
    }

    #[test]
    fn other_widths_are_left_to_the_columns_path() {
        for (h, w) in [(4, 7), (3, 4), (8, 12), (1, 1), (2, 2)] {
            assert!(!available(Image { c: 2, h, w }), "{h}x{w}");
        }
    }
}
