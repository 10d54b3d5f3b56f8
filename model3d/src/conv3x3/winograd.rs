//! The 3×3 convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray 2016, "Fast
//! Algorithms for Convolutional Neural Networks", §4): each 2×2 block of output pixels is
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` for the 4×4 block `d` of the zero-padded input under it and
//! the 3×3 kernel `g`, 16 multiplications where the direct sum takes 36, with
//!
//! ```text
//!      ⎡1  0 −1  0⎤        ⎡1   0  0⎤
//! Bᵀ = ⎢0  1  1  0⎥    G = ⎢½   ½  ½⎥    Aᵀ = ⎡1  1  1  0⎤
//!      ⎢0 −1  1  0⎥        ⎢½  −½  ½⎥         ⎣0  1 −1 −1⎦
//!      ⎣0  1  0 −1⎦        ⎣0   0  1⎦
//! ```
//!
//! Summed over input channels, the 16 products of each tile become 16 matrix products, one per
//! position `ξ = 4a + s` of the 4×4 transform: `M_ξ[o, t] = Σ_c U_ξ[o, c] · V_ξ[c, t]` with
//! `U = G g Gᵀ` per `(o, c)` and `V = Bᵀ d B` per `(c, t)`, then `y = Aᵀ M A + b` per `(o, t)`.
//! The products run in the register tile of [`super::direct`] (6 output channels × 16 tiles),
//! so the multiply-adds per output pixel fall from `9C` to `4C`; the transforms are a few adds per
//! value, vectorised along the tiles of a row. The input gradient is the same forward pass with
//! the flipped weight; the weight gradient is the adjoint in the same domain,
//! `dU_ξ = V_ξ · dM_ξᵀ` with `dM = A dY Aᵀ`, then `dW = Gᵀ dU G`.
//!
//! Planes with an even height, a width that is a multiple of 8 and a tile count `(H/2)·(W/2)`
//! that is a multiple of 8 (16×16, 8×8, 32×32, ...), on CPUs with AVX2 and FMA, take it; the op
//! also leaves calls of few pixels to the direct kernels (`WINOGRAD_MIN_PIXELS` in
//! [`super`]), and the rest take [`super::direct`] or the columns of [`super::kernel`]. At
//! cifar10's and small_video's shapes the op ran 1.3-1.5x faster than with the direct kernels
//! (BENCHMARKS.md, "Winograd's F(2×2, 3×3) for the 3×3 convolutions").

use super::direct::{pad, padded_len};
use super::kernel::Image;
use crate::cpu::{has_avx2_fma, transpose};

/// Output channels per register tile.
const TILE_O: usize = 6;

/// Positions of the 4×4 transform.
const XI: usize = 16;

/// Whether this CPU and this plane take the Winograd kernel: AVX2 and FMA, `H` even, `W` a
/// multiple of 8 and `(H/2)·(W/2)` a multiple of 8 (the transforms take 8 tiles at a time, in
/// runs of 4 along a row).
pub fn available(im: Image) -> bool {
    im.h > 0 && im.w > 0 && im.h % 2 == 0 && im.w % 8 == 0 && tiles(im) % 8 == 0 && has_avx2_fma()
}

/// Elements from one ξ plane of a scratch matrix of `len` elements to the next: one cache line
/// more than `len`, so that the 16 planes a transform reads or writes at one position do not all
/// fall into the same L1 set (at these shapes `len` is a multiple of 4 KiB).
fn plane_stride(len: usize) -> usize {
    len + 16
}

/// 2×2 output tiles of one plane.
fn tiles(im: Image) -> usize {
    (im.h / 2) * (im.w / 2)
}

/// A weight `[O, C, 3, 3]` transformed, `U_ξ = G g Gᵀ`, in the order the products read it:
/// `[16, ⌈O/6⌉, C, 6]`, the output channels of a register tile innermost, zeros past `O`.
#[derive(Clone, Debug)]
pub struct Transformed {
    values: Vec<f32>,
    o: usize,
    c: usize,
}

impl Transformed {
    /// Transforms `weight`, `[O, C, 3, 3]` stored contiguously.
    pub fn new(weight: &[f32], o: usize, c: usize) -> Self {
        assert_eq!(weight.len(), o * c * 9, "a weight of {o}x{c}x3x3");
        let o_tiles = o.div_ceil(TILE_O);
        let mut values = vec![0f32; XI * o_tiles * c * TILE_O];
        let plane = o_tiles * c * TILE_O;
        for (oi, kernels) in weight.chunks_exact(9 * c).enumerate() {
            for (ci, g) in kernels.chunks_exact(9).enumerate() {
                let at = (oi / TILE_O * c + ci) * TILE_O + oi % TILE_O;
                // G g: the 3 columns of g combined down its rows; then G along each row.
                let g: [f32; 9] = g.try_into().expect("9 taps");
                for a in 0..4 {
                    let row = [g_row(a, [g[0], g[3], g[6]]), g_row(a, [g[1], g[4], g[7]]), g_row(a, [g[2], g[5], g[8]])];
                    for s in 0..4 {
                        values[(4 * a + s) * plane + at] = g_row(s, row);
                    }
                }
            }
        }
        Self { values, o, c }
    }
}

/// Row `a` of `G` applied to a 3-vector: `g0`, `(g0 + g1 + g2)/2`, `(g0 − g1 + g2)/2`, `g2`.
fn g_row(a: usize, [g0, g1, g2]: [f32; 3]) -> f32 {
    match a {
        0 => g0,
        1 => 0.5 * (g0 + g1 + g2),
        2 => 0.5 * (g0 - g1 + g2),
        _ => g2,
    }
}

/// Row `u` of `Gᵀ` applied to a 4-vector: `x0 + (x1 + x2)/2`, `(x1 − x2)/2`, `(x1 + x2)/2 + x3`.
fn gt_row(u: usize, [x0, x1, x2, x3]: [f32; 4]) -> f32 {
    match u {
        0 => x0 + 0.5 * (x1 + x2),
        1 => 0.5 * (x1 - x2),
        _ => 0.5 * (x1 + x2) + x3,
    }
}

/// Tiles the forward pass transforms, multiplies and transforms back at a time: two of the
/// products' 16-tile register-tile widths, so that each `U_ξ` row block is loaded into L1 once per
/// block and used twice, while `V` and `M`, the forward pass's working memory besides the padded
/// plane, hold 32 tiles instead of the image's (a 16×16 plane has 64).
const FORWARD_TILES: usize = 32;

/// Tiles per forward block of plane `im`: [`FORWARD_TILES`], or the image's if fewer (a multiple
/// of 8, as every block then is).
fn forward_block(im: Image) -> usize {
    FORWARD_TILES.min(tiles(im))
}

/// Scratch elements one image needs for `o` output channels: `V` `[16, C, B]`, `M`
/// `[16, O, B]` for blocks of `B` tiles (planes a cache line more than their size apart) and the
/// padded input `[C, H + 2, W + 2]`.
pub fn scratch_len(im: Image, o: usize) -> usize {
    let b = forward_block(im);
    XI * (plane_stride(im.c * b) + plane_stride(o * b)) + padded_len(im)
}

/// One image's output `y` `[O, H, W]` from its pixels `x` `[C, H, W]`, the transformed weight
/// and the bias `[O]`, a block of tiles at a time; `scratch` holds at least [`scratch_len`]
/// elements, each written before it is read. Needs [`available`]`(im)`.
pub fn forward(x: &[f32], weight: &Transformed, bias: &[f32], im: Image, scratch: &mut [f32], y: &mut [f32]) {
    assert!(available(im), "the Winograd kernel does not take {im:?} on this CPU");
    assert_eq!((weight.c, weight.o), (im.c, bias.len()), "weight against input and bias");
    let (o, t, b) = (weight.o, tiles(im), forward_block(im));
    assert!(x.len() >= im.c * im.pixels() && y.len() >= o * im.pixels() && scratch.len() >= scratch_len(im, o), "buffer sizes");
    let (sv, sm) = (plane_stride(im.c * b), plane_stride(o * b));
    let (v, rest) = scratch.split_at_mut(XI * sv);
    let (m, padded) = rest.split_at_mut(XI * sm);
    pad(x, im, padded);
    for begin in (0..t).step_by(b) {
        let (block, len) = ([begin, (begin + b).min(t)], b.min(t - begin));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available` checked AVX2 and FMA and the plane's shape; the sizes are asserted
        // above; a block's tiles start at a multiple of 8 and number `len ≤ b`, a multiple of 8.
        unsafe {
            avx2::transform_input(padded, im, block, v, [len, sv]);
            avx2::products(&weight.values, v, m, im.c, o, len, [sv, sm]);
            avx2::transform_output(m, bias, im, block, y, sm);
        }
    }
}

/// Whether this CPU takes the Winograd weight gradient for planes `im` and `o` output channels:
/// [`available`]`(im)` and `O` a multiple of 8 (one or two vectors of output channels per
/// register tile).
pub fn weight_grads_available(im: Image, o: usize) -> bool {
    available(im) && o % 8 == 0 && o > 0
}

/// Scratch elements a group of `k` images needs for the weight gradient: the padded inputs and
/// `V` `[16, C, k·T]`, then `dyᵀ` `[k, HW, O]` and `dMᵀ` `[16, k·T, O]` (planes
/// a cache line more than their size apart).
pub fn weight_scratch_lens(im: Image, o: usize, k: usize) -> [usize; 2] {
    let k = k.min(group(im));
    let l = k * tiles(im);
    [k * padded_len(im) + XI * plane_stride(im.c * l), k * im.pixels() * o + XI * plane_stride(l * o)]
}

/// Tiles that go through the weight gradient's products at once (or one image's, if more): enough
/// that each register tile's 12 accumulators are loaded and stored once per 128 tiles, few
/// enough that `V` and `dMᵀ` stay small however many images a task has.
const GROUP_TILES: usize = 128;

/// Images per pass of the weight gradient.
pub fn group(im: Image) -> usize {
    (GROUP_TILES / tiles(im)).max(1)
}

/// Adds a group of images' weight gradients in the transformed domain onto `dut` `[16, C, O]`:
/// `dUᵀ_ξ[c, o] += Σ_t V_ξ[c, t] · dM_ξ[o, t]`, with `V = Bᵀ d B` of the inputs `xs`
/// `[k, C, H, W]` and `dM = A dY Aᵀ` (the adjoint of `Y = Aᵀ M A`) of their output gradients
/// `dys` `[k, O, H, W]`, 128 tiles (or one image) at a time. [`weight_grads_finish`]
/// turns the sum into the weight's gradient, transposed. `scratch` are two buffers of at least
/// [`weight_scratch_lens`], written before they are read. Needs
/// [`weight_grads_available`]`(im, O)`.
pub fn weight_grads(xs: &[f32], dys: &[f32], im: Image, [inputs, grads]: [&mut [f32]; 2], dut: &mut [f32]) {
    let (image, hw, t) = (im.c * im.pixels(), im.pixels(), tiles(im));
    let (o, k) = (dut.len() / (XI * im.c), xs.len() / image);
    assert!(weight_grads_available(im, o), "the Winograd weight gradient does not take {im:?} into {o} channels on this CPU");
    let [inputs_len, grads_len] = weight_scratch_lens(im, o, k);
    assert!(dut.len() == XI * im.c * o && dys.len() == k * o * hw && inputs.len() >= inputs_len && grads.len() >= grads_len, "buffer sizes");
    for (xs, dys) in xs.chunks(group(im) * image).zip(dys.chunks(group(im) * o * hw)) {
        let k = xs.len() / image;
        let (padded, v) = inputs.split_at_mut(k * padded_len(im));
        let (dy_t, dm_t) = grads.split_at_mut(k * hw * o);
        pad(xs, im, padded);
        for (dy, dst) in dys.chunks_exact(o * hw).zip(dy_t.chunks_exact_mut(o * hw)) {
            transpose(dy, [o, hw], dst);
        }
        let l = k * t;
        let (sv, sd) = (plane_stride(im.c * l), plane_stride(l * o));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `weight_grads_available` checked AVX2, FMA, the plane and `O`; the sizes are
        // asserted above (for at most `group(im)` images), and image `n` writes columns
        // `n·T..(n + 1)·T` of the `k·T` in `V` and `dMᵀ`.
        unsafe {
            for n in 0..k {
                avx2::transform_input(&padded[n * padded_len(im)..], im, [0, t], &mut v[n * t..], [l, sv]);
                avx2::transform_grad(&dy_t[n * hw * o..(n + 1) * hw * o], im, o, &mut dm_t[n * t * o..], sd);
            }
            avx2::weight_products([v, dm_t], im.c, o, l, [sv, sd], dut);
        }
    }
}

/// The weight's gradient transposed, `dWᵀ` `[9C, O]` (row `(c, t)`, as the direct kernels sum
/// it), from the summed `dUᵀ` `[16, C, O]`: `dg = Gᵀ dU G` per `(o, c)`, the adjoint of
/// `U = G g Gᵀ`, along the output channels (contiguous on both sides).
pub fn weight_grads_finish(dut: &[f32], o: usize, c: usize) -> Vec<f32> {
    assert_eq!(dut.len(), XI * c * o, "a transformed gradient of {c}x{o}");
    let mut dwt = vec![0f32; 9 * c * o];
    untransform(dut, c, o, &mut dwt);
    dwt
}

/// `dwt[(c, 3u + v), o] = (Gᵀ dU G)[u, v]` for every `(c, o)` of `dut` `[16, C, O]`.
fn untransform(dut: &[f32], c: usize, o: usize, dwt: &mut [f32]) {
    crate::cpu::wide!(fn run = untransform_body(dut: &[f32], c: usize, o: usize, dwt: &mut [f32]));
    run(dut, c, o, dwt)
}

#[inline(always)]
fn untransform_body(dut: &[f32], c: usize, o: usize, dwt: &mut [f32]) {
    for (ci, out) in dwt.chunks_exact_mut(9 * o).enumerate() {
        let du: [&[f32]; XI] = std::array::from_fn(|xi| &dut[(xi * c + ci) * o..(xi * c + ci + 1) * o]);
        let mut rows = out.chunks_exact_mut(o);
        let rows: [&mut [f32]; 9] = std::array::from_fn(|_| rows.next().expect("9 rows"));
        for oi in 0..o {
            // Gᵀ down each column s of dU, then along each of the 3 rows it gives.
            let mut down = [[0f32; 4]; 3];
            for s in 0..4 {
                let column = [du[s][oi], du[4 + s][oi], du[8 + s][oi], du[12 + s][oi]];
                for (u, row) in down.iter_mut().enumerate() {
                    row[s] = gt_row(u, column);
                }
            }
            for (u, row) in down.into_iter().enumerate() {
                for v in 0..3 {
                    rows[3 * u + v][oi] = gt_row(v, row);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Image, TILE_O, XI, tiles};

    /// Where the run of 4 tiles from tile `t` starts: its tile row and column.
    #[inline(always)]
    fn tile_at(t: usize, tw: usize) -> (usize, usize) {
        (t / tw, t % tw)
    }

    /// `v` `[16, C, ld]` (its first `end − begin` columns, planes `sv` apart) = `Bᵀ d B` for every
    /// channel and the tiles `begin..end`, from `padded` `[C, H + 2, W + 2]`, 8 tiles (two runs of
    /// 4 along a row) per vector. A run starting at tile column `tj` reads
    /// padded columns `2tj..2tj + 10` of each of its 4 rows: the even ones of the first 8 are
    /// each tile's `d0`, the odd ones `d1`, and those of the 8 from `2tj + 2` its `d2` and `d3`.
    ///
    /// # Safety
    /// AVX2; [`super::available`]`(im)`, `begin` and `end` multiples of 8 with `end ≤ T`, the
    /// slices hold those shapes, `ld ≥ end − begin`, `sv ≥ C·ld`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn transform_input(padded: &[f32], im: Image, [begin, end]: [usize; 2], v: &mut [f32], [ld, sv]: [usize; 2]) {
        let (pw, tw) = (im.w + 2, im.w / 2);
        let plane = pw * (im.h + 2);
        for c in 0..im.c {
            for t0 in (begin..end).step_by(8) {
                let ((ia, ja), (ib, jb)) = (tile_at(t0, tw), tile_at(t0 + 4, tw));
                // SAFETY: rows `2i..2i + 4 ≤ H + 2` and columns `2j..2j + 10 ≤ W + 2` of channel
                // `c`'s plane (`j + 4 ≤ W/2`); `V_ξ[c, t0 − begin..t0 − begin + 8]` inside `v`
                // (`t0 + 8 ≤ end`, `end − begin ≤ ld`).
                unsafe {
                    let x = padded.as_ptr().add(c * plane);
                    let (a, b) = (x.add(2 * ia * pw + 2 * ja), x.add(2 * ib * pw + 2 * jb));
                    // d0..d3 of the 8 tiles in padded row `2i + r`, combined along the row.
                    let mut h = [[_mm256_setzero_ps(); 4]; 4];
                    for (r, h) in h.iter_mut().enumerate() {
                        let (a, b) = (a.add(r * pw), b.add(r * pw));
                        let (p_lo, p_hi) = (_mm256_loadu2_m128(b, a), _mm256_loadu2_m128(b.add(4), a.add(4)));
                        let (q_lo, q_hi) = (_mm256_loadu2_m128(b.add(2), a.add(2)), _mm256_loadu2_m128(b.add(6), a.add(6)));
                        let (d0, d1) = (_mm256_shuffle_ps::<0b10_00_10_00>(p_lo, p_hi), _mm256_shuffle_ps::<0b11_01_11_01>(p_lo, p_hi));
                        let (d2, d3) = (_mm256_shuffle_ps::<0b10_00_10_00>(q_lo, q_hi), _mm256_shuffle_ps::<0b11_01_11_01>(q_lo, q_hi));
                        *h = [_mm256_sub_ps(d0, d2), _mm256_add_ps(d1, d2), _mm256_sub_ps(d2, d1), _mm256_sub_ps(d1, d3)];
                    }
                    for s in 0..4 {
                        let rows = [
                            _mm256_sub_ps(h[0][s], h[2][s]),
                            _mm256_add_ps(h[1][s], h[2][s]),
                            _mm256_sub_ps(h[2][s], h[1][s]),
                            _mm256_sub_ps(h[1][s], h[3][s]),
                        ];
                        for (a, row) in rows.into_iter().enumerate() {
                            _mm256_storeu_ps(v.as_mut_ptr().add((4 * a + s) * sv + c * ld + t0 - begin), row);
                        }
                    }
                }
            }
        }
    }

    /// The tiles `begin..end` of `y[o]` `[H, W]` = `Aᵀ M A + b[o]` for every output channel, from
    /// `m` `[16, O, end − begin]` (planes `sm` apart), 8 tiles per vector: each run of 4 tiles
    /// gives 8 consecutive pixels of two output rows, its two columns interleaved.
    ///
    /// # Safety
    /// AVX2; [`super::available`]`(im)`, `begin` and `end` multiples of 8 with `end ≤ T`, `m`
    /// holds 16 planes of `O·(end − begin)` values `sm` apart and `y` `O·H·W` values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn transform_output(m: &[f32], bias: &[f32], im: Image, [begin, end]: [usize; 2], y: &mut [f32], sm: usize) {
        let (len, tw, w) = (end - begin, im.w / 2, im.w);
        for (oi, &b) in bias.iter().enumerate() {
            let b = _mm256_set1_ps(b);
            for t0 in (begin..end).step_by(8) {
                // SAFETY: `M_ξ[oi, t0 − begin..t0 − begin + 8]` inside `m`; the two runs' pixels
                // (rows `2i`, `2i + 1`, columns `2j..2j + 8 ≤ W`) inside channel `oi` of `y`.
                unsafe {
                    let mut mm = [_mm256_setzero_ps(); XI];
                    for (xi, v) in mm.iter_mut().enumerate() {
                        *v = _mm256_loadu_ps(m.as_ptr().add(xi * sm + oi * len + t0 - begin));
                    }
                    // Aᵀ down the columns (a) for each s, then along the rows: the left and
                    // right pixel of each tile's top and bottom row, interleaved into two runs.
                    let (mut top, mut bottom) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
                    for s in 0..4 {
                        top[s] = _mm256_add_ps(_mm256_add_ps(mm[s], mm[4 + s]), mm[8 + s]);
                        bottom[s] = _mm256_sub_ps(_mm256_sub_ps(mm[4 + s], mm[8 + s]), mm[12 + s]);
                    }
                    let out = y.as_mut_ptr().add(oi * im.pixels());
                    let runs = [tile_at(t0, tw), tile_at(t0 + 4, tw)];
                    for (row, r) in [top, bottom].into_iter().enumerate() {
                        let left = _mm256_add_ps(_mm256_add_ps(r[0], r[1]), _mm256_add_ps(r[2], b));
                        let right = _mm256_sub_ps(_mm256_sub_ps(r[1], r[2]), _mm256_sub_ps(r[3], b));
                        let (lo, hi) = (_mm256_unpacklo_ps(left, right), _mm256_unpackhi_ps(left, right));
                        let ((ia, ja), (ib, jb)) = (runs[0], runs[1]);
                        _mm256_storeu_ps(out.add((2 * ia + row) * w + 2 * ja), _mm256_permute2f128_ps::<0x20>(lo, hi));
                        _mm256_storeu_ps(out.add((2 * ib + row) * w + 2 * jb), _mm256_permute2f128_ps::<0x31>(lo, hi));
                    }
                }
            }
        }
    }

    /// `dm_t` `[16, ·, O]` (rows `..T`, planes `sd` apart) = `A dY Aᵀ` for every tile of one
    /// image, from its output gradient transposed, `dy_t` `[HW, O]`, 8 output channels per
    /// vector: with the tile's pixels `p_ij`, rows `a` are `p_0j`, `p_0j + p_1j`, `p_0j − p_1j`,
    /// `−p_1j`, and the same along each row for `s`.
    ///
    /// # Safety
    /// AVX2; [`super::available`]`(im)`, `O` a multiple of 8, the slices hold those shapes,
    /// `sd ≥ T·O`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn transform_grad(dy_t: &[f32], im: Image, o: usize, dm_t: &mut [f32], sd: usize) {
        let (t, tw, w) = (tiles(im), im.w / 2, im.w);
        let combine = |p0: __m256, p1: __m256| [p0, _mm256_add_ps(p0, p1), _mm256_sub_ps(p0, p1), _mm256_sub_ps(_mm256_setzero_ps(), p1)];
        for tile in 0..t {
            let (i, j) = tile_at(tile, tw);
            let pixel = |r: usize, q: usize| ((2 * i + r) * w + 2 * j + q) * o;
            for ob in (0..o).step_by(8) {
                // SAFETY: the tile's 4 pixels' channels `ob..ob + 8 ≤ O` inside `dy_t`; row
                // `tile < T` of each `dMᵀ_ξ` inside `dm_t`.
                unsafe {
                    let load = |r, q| _mm256_loadu_ps(dy_t.as_ptr().add(pixel(r, q) + ob));
                    let (left, right) = (combine(load(0, 0), load(1, 0)), combine(load(0, 1), load(1, 1)));
                    for a in 0..4 {
                        for (s, value) in combine(left[a], right[a]).into_iter().enumerate() {
                            _mm256_storeu_ps(dm_t.as_mut_ptr().add((4 * a + s) * sd + tile * o + ob), value);
                        }
                    }
                }
            }
        }
    }

    /// `dut` `[16, C, O]` += `V_ξ · dMᵀ_ξ` for each ξ, from `v` `[16, C, L]` and `dm_t`
    /// `[16, L, O]` (planes `sv` and `sd` apart): tiles of `R ≤ 6` rows `c` × 16 output channels
    /// (or a last 8), over all `L` columns.
    ///
    /// # Safety
    /// AVX2 and FMA; the slices hold those shapes and `O` is a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weight_products([v, dm_t]: [&[f32]; 2], c: usize, o: usize, l: usize, [sv, sd]: [usize; 2], dut: &mut [f32]) {
        for xi in 0..XI {
            for block in (0..o).step_by(16) {
                for first in (0..c).step_by(TILE_O) {
                    // SAFETY: rows `first..first + R ≤ C` of `V_ξ` and `dUᵀ_ξ`, columns
                    // `block..block + 16` (or 8) of `dMᵀ_ξ` and `dUᵀ_ξ` (`O` a multiple of 8).
                    unsafe {
                        let a = v.as_ptr().add(xi * sv + first * l);
                        let b = dm_t.as_ptr().add(xi * sd + block);
                        let out = dut.as_mut_ptr().add((xi * c + first) * o + block);
                        let two = block + 16 <= o;
                        match (c - first).min(TILE_O) {
                            6 => grad_block::<6>(a, b, l, o, two, out),
                            5 => grad_block::<5>(a, b, l, o, two, out),
                            4 => grad_block::<4>(a, b, l, o, two, out),
                            3 => grad_block::<3>(a, b, l, o, two, out),
                            2 => grad_block::<2>(a, b, l, o, two, out),
                            _ => grad_block::<1>(a, b, l, o, two, out),
                        }
                    }
                }
            }
        }
    }

    /// `out[r, ..16]` += `Σ_t a[r, t] · b[t, ..16]` for `R` rows (`a` rows of `L`, `b` rows of
    /// `O`, `out` rows of `O`); only the first 8 columns unless `two`.
    ///
    /// # Safety
    /// AVX2 and FMA; the pointers hold those rows and columns.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn grad_block<const R: usize>(a: *const f32, b: *const f32, l: usize, o: usize, two: bool, out: *mut f32) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        // SAFETY: as the caller promises.
        unsafe {
            for (r, pair) in acc.iter_mut().enumerate() {
                pair[0] = _mm256_loadu_ps(out.add(r * o));
                if two {
                    pair[1] = _mm256_loadu_ps(out.add(r * o + 8));
                }
            }
            for t in 0..l {
                let d0 = _mm256_loadu_ps(b.add(t * o));
                let d1 = if two { _mm256_loadu_ps(b.add(t * o + 8)) } else { d0 };
                for (r, pair) in acc.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*a.add(r * l + t));
                    pair[0] = _mm256_fmadd_ps(x, d0, pair[0]);
                    pair[1] = _mm256_fmadd_ps(x, d1, pair[1]);
                }
            }
            for (r, pair) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.add(r * o), pair[0]);
                if two {
                    _mm256_storeu_ps(out.add(r * o + 8), pair[1]);
                }
            }
        }
    }

    /// `m` `[16, O, T]` = the 16 products `U_ξ · V_ξ`, from `u` `[16, ⌈O/6⌉, C, 6]` and `v`
    /// `[16, C, T]` (planes of `v` `sv` apart, of `m` `sm`).
    ///
    /// # Safety
    /// AVX2 and FMA; the slices hold those shapes and `T` is a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn products(u: &[f32], v: &[f32], m: &mut [f32], c: usize, o: usize, t: usize, [sv, sm]: [usize; 2]) {
        let o_tiles = o.div_ceil(TILE_O);
        for xi in 0..XI {
            for tile in 0..o_tiles {
                let rows = (o - tile * TILE_O).min(TILE_O);
                // SAFETY: tile `tile` of `U_ξ`, `V_ξ` and rows `6·tile..6·tile + rows` of `M_ξ`
                // lie inside the slices (shapes above).
                unsafe {
                    let (a, b) = (u.as_ptr().add((xi * o_tiles + tile) * c * TILE_O), v.as_ptr().add(xi * sv));
                    let out = m.as_mut_ptr().add(xi * sm + tile * TILE_O * t);
                    match rows {
                        6 => block::<6>(a, b, c, t, out),
                        5 => block::<5>(a, b, c, t, out),
                        4 => block::<4>(a, b, c, t, out),
                        3 => block::<3>(a, b, c, t, out),
                        2 => block::<2>(a, b, c, t, out),
                        _ => block::<1>(a, b, c, t, out),
                    }
                }
            }
        }
    }

    /// `R` rows of one product: `out[r, ..T]` = `Σ_c a[c, r] · b[c, ..T]`, 16 columns (two
    /// segments of 8) at a time; a lone last segment is computed twice over, into the same place.
    ///
    /// # Safety
    /// AVX2 and FMA; `a` holds `C·6` values, `b` `C·T`, `out` `R` rows of `T`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block<const R: usize>(a: *const f32, b: *const f32, c: usize, t: usize, out: *mut f32) {
        let segments = t / 8;
        for s in (0..segments).step_by(2) {
            let (s0, s1) = (8 * s, 8 * (s + 1).min(segments - 1));
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for ci in 0..c {
                // SAFETY: row `ci` of `b` at columns `s1 + 8 ≤ T`, `a` at `6·ci + R ≤ 6C`.
                unsafe {
                    let (v0, v1) = (_mm256_loadu_ps(b.add(ci * t + s0)), _mm256_loadu_ps(b.add(ci * t + s1)));
                    let w = a.add(ci * TILE_O);
                    for (r, pair) in acc.iter_mut().enumerate() {
                        let x = _mm256_broadcast_ss(&*w.add(r));
                        pair[0] = _mm256_fmadd_ps(x, v0, pair[0]);
                        pair[1] = _mm256_fmadd_ps(x, v1, pair[1]);
                    }
                }
            }
            for (r, pair) in acc.iter().enumerate() {
                // SAFETY: row `r < R` of `out`, columns `s1 + 8 ≤ T`.
                unsafe {
                    _mm256_storeu_ps(out.add(r * t + s0), pair[0]);
                    _mm256_storeu_ps(out.add(r * t + s1), pair[1]);
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
    fn matches_the_direct_sum_for_every_tile_shape() {
        if !has_avx2_fma() {
            return; // the columns path of `kernel` is the one this CPU runs, tested there
        }
        // (C, H, W, O): every count of rows in the last register tile (O = 1..6 and 13); 2, 3, 4
        // and 8 segments of 8 tiles, runs of 4 tiles that start a row or end it (W = 8) and runs
        // that share one (W ≥ 16); a single channel; forward blocks of 32 tiles: two whole ones
        // (16×16), and a whole one and one of 8 (10×16).
        for (c, h, w, o) in [(3, 8, 8, 7), (2, 4, 16, 5), (4, 8, 16, 2), (5, 12, 8, 6), (3, 8, 8, 13), (1, 16, 16, 4), (2, 2, 32, 1), (4, 6, 16, 3), (2, 10, 16, 3)] {
            let im = Image { c, h, w };
            assert!(available(im), "{im:?}");
            let (x, weight, bias) = (values(c * h * w, 1), values(o * c * 9, 2), values(o, 3));
            let (mut scratch, mut y) = (vec![f32::NAN; scratch_len(im, o)], vec![f32::NAN; o * h * w]);
            forward(&x, &Transformed::new(&weight, o, c), &bias, im, &mut scratch, &mut y);
            for (p, (got, want)) in y.iter().zip(direct_sum(&x, &weight, &bias, im)).enumerate() {
                assert!((*got as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "{c}x{h}x{w}→{o}, element {p}: {got} against {want}");
            }
        }
    }

    #[test]
    fn weight_grads_are_the_sum_over_images_and_pixels() {
        if !has_avx2_fma() {
            return;
        }
        // (C, H, W, O): C not a multiple of the 6-row tile (1, 5, 7, 13), two vectors of output
        // channels and one (O = 24 = 16 + 8), runs of 4 tiles that start a row (W = 8), and
        // 32×16 planes (128 tiles), whose two images in one call go through the products apart.
        for (c, h, w, o) in [(3, 8, 8, 8), (7, 4, 16, 16), (1, 8, 8, 24), (13, 12, 8, 8), (5, 2, 32, 40), (6, 8, 8, 16), (2, 32, 16, 8)] {
            let (im, k, hw) = (Image { c, h, w }, 3, h * w);
            let (xs, dys) = (values(k * c * hw, 4), values(k * o * hw, 5));
            let [a, b] = weight_scratch_lens(im, o, k);
            let (mut inputs, mut grads, mut dut) = (vec![f32::NAN; a], vec![f32::NAN; b], vec![0f32; XI * c * o]);
            // Two calls add onto the same sum: the images split 2 + 1.
            weight_grads(&xs[..2 * c * hw], &dys[..2 * o * hw], im, [&mut inputs, &mut grads], &mut dut);
            weight_grads(&xs[2 * c * hw..], &dys[2 * o * hw..], im, [&mut inputs, &mut grads], &mut dut);
            let dwt = weight_grads_finish(&dut, o, c);
            for (idx, got) in dwt.iter().enumerate() {
                let ((ci, tap), oi) = ((idx / o / 9, idx / o % 9), idx % o);
                let want = weight_grad(&xs, &dys, im, o, [ci, tap, oi]);
                assert!((*got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "{c}x{h}x{w}→{o}, dWᵀ[{idx}]: {got} against {want}");
            }
        }
        assert!(!weight_grads_available(Image { c: 2, h: 8, w: 8 }, 12) && !weight_grads_available(Image { c: 2, h: 4, w: 4 }, 16));
    }

    #[test]
    fn other_planes_are_left_to_the_other_kernels() {
        for (h, w) in [(4, 4), (3, 16), (8, 7), (2, 2), (4, 12), (6, 8), (8, 4), (1, 1)] {
            assert!(!available(Image { c: 2, h, w }), "{h}x{w}");
        }
    }
}
