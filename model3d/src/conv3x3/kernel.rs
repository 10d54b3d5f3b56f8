//! The CPU kernels of the 3×3 convolution (stride 1, padding 1), in f32: im2col by taps, then
//! matrix products (Chellapilla et al. 2006). With the columns
//! `cols[(c, t), p] = x_pad[c, i + dy, j + dx]` for each tap `t = 3·dy + dx` and pixel `p = (i, j)`:
//! - forward, per image: `y = W · cols + b`, `[O, 9C]×[9C, HW]`. `W` `[O, C, 3, 3]` is already
//!   `[O, 9C]` in the columns' order, and `y` comes out `[O, H, W]`, the layout of the output.
//! - input gradient, per image: the same convolution of `dy` with the weight flipped in space and
//!   transposed in channels, `W'[c, o, t] = W[o, c, 8 − t]` (tap `8 − t` is the opposite shift),
//!   so that it is again one `[C, 9O]×[9O, HW]` product rather than a `k = O` product and a
//!   scatter back onto the pixels.
//! - weight gradient: `dWᵀ = Σ_n cols_n · dy_nᵀ`, `[9C, HW]×[HW, O]` per image, computed for a
//!   group of images at once with their pixels side by side, `k = images·HW`.
//!
//! A tap's row of `cols` is the input plane shifted by `(dy − 1, dx − 1)`: the whole plane copied
//! at one offset, with zeros where the shift leaves it ([`im2col`]).

use crate::cpu::{matmul, wide};

/// One image's geometry: channels, height, width.
#[derive(Clone, Copy, Debug)]
pub struct Image {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Image {
    pub fn pixels(&self) -> usize {
        self.h * self.w
    }

    /// Elements of one image's columns, `[9C, HW]`.
    pub fn cols_len(&self) -> usize {
        9 * self.c * self.pixels()
    }
}

/// One image's columns from `x` `[C, H, W]`: row `r` of `[9C, HW]` at `cols[r·ld..]`. Tap
/// `(dy, dx)` reads pixel `p + (dy − 1)·W + (dx − 1)` for output pixel `p`: one copy of the whole
/// plane at that offset, then zeros where the shift leaves the plane (the rows above or below
/// it, and the column that wrapped around from the neighbouring row).
#[inline(always)]
fn im2col_body(x: &[f32], im: Image, cols: &mut [f32], ld: usize) {
    let (hw, w) = (im.pixels(), im.w);
    for row_index in 0..9 * im.c {
        let (c, t) = (row_index / 9, row_index % 9);
        let plane = &x[c * hw..(c + 1) * hw];
        let row = &mut cols[row_index * ld..row_index * ld + hw];
        let offset = (t / 3) as isize * w as isize + (t % 3) as isize - 1 - w as isize;
        let skip = offset.unsigned_abs().min(hw);
        if offset >= 0 {
            row[..hw - skip].copy_from_slice(&plane[skip..]);
            row[hw - skip..].fill(0.0);
        } else {
            row[skip..].copy_from_slice(&plane[..hw - skip]);
            row[..skip].fill(0.0);
        }
        let wrapped = match t % 3 {
            0 => Some(0),
            2 => Some(w - 1),
            _ => None,
        };
        if let Some(column) = wrapped {
            row.iter_mut().skip(column).step_by(w).for_each(|v| *v = 0.0);
        }
    }
}

wide!(
    /// Fills one image's columns `[9C, HW]`, row `r` at `cols[r·ld..]`, from its pixels `[C, H, W]`.
    pub fn im2col = im2col_body(x: &[f32], im: Image, cols: &mut [f32], ld: usize)
);

/// One image's output `y` `[O, HW]` from its pixels `x` `[C, H, W]`, the weight `[O, 9C]` and the
/// bias `[O]`; `cols` is scratch of [`Image::cols_len`].
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], im: Image, cols: &mut [f32], y: &mut [f32]) {
    let (o, hw) = (bias.len(), im.pixels());
    im2col(x, im, cols, hw);
    for (row, b) in y.chunks_exact_mut(hw).zip(bias) {
        row.fill(*b);
    }
    matmul(y, weight, false, cols, false, [o, hw, 9 * im.c], 1.0, true);
}

/// The weight of the input gradient: `W'[c, o, t] = W[o, c, 8 − t]`, `[C, 9O]`, from `W` `[O, 9C]`.
pub fn flipped(weight: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; weight.len()];
    for (oc, taps) in weight.chunks_exact(9).enumerate() {
        let (o_i, c_i) = (oc / c, oc % c);
        for (t, &v) in taps.iter().enumerate() {
            out[(c_i * o + o_i) * 9 + 8 - t] = v;
        }
    }
    out
}

/// Adds the bias gradient of a group of images onto `db` `[O]`: `db[o] += Σ_n Σ_p dy_n[o, p]`,
/// from their output gradients `dys` `[k, O, H, W]` with `hw = H·W`.
pub fn bias_grads(dys: &[f32], hw: usize, db: &mut [f32]) {
    for dy in dys.chunks_exact(db.len() * hw) {
        for (b, row) in db.iter_mut().zip(dy.chunks_exact(hw)) {
            *b += row.iter().sum::<f32>();
        }
    }
}

/// Adds a group of images' weight gradients onto `dwt` `[9C, O]`:
/// `dWᵀ += [cols_1 … cols_k] · [dy_1 … dy_k]ᵀ`, one product over all their pixels.
/// (`dW · …` would make gemm pack the transposed `9C × k·HW` columns, the larger operand, with
/// a strided gather: 5 % of a step, perf.) `xs` holds the images `[k, C, H, W]`, `dys` their
/// output gradients `[k, O, H, W]`; `cols` (`k·`[`Image::cols_len`]) and `dy_wide` (`k·O·HW`)
/// are scratch.
pub fn weight_grads(xs: &[f32], dys: &[f32], im: Image, cols: &mut [f32], dy_wide: &mut [f32], dwt: &mut [f32]) {
    let hw = im.pixels();
    let (k, out) = (xs.len() / (im.c * hw), dys.len() / (xs.len() / (im.c * hw)));
    let (o, ld) = (out / hw, k * hw);
    for (j, (x, dy)) in xs.chunks_exact(im.c * hw).zip(dys.chunks_exact(out)).enumerate() {
        im2col(x, im, &mut cols[j * hw..], ld);
        for (r, row) in dy.chunks_exact(hw).enumerate() {
            dy_wide[r * ld + j * hw..][..hw].copy_from_slice(row);
        }
    }
    matmul(dwt, cols, false, dy_wide, true, [9 * im.c, o, ld], 1.0, true);
}

#[cfg(test)]
mod tests {
    use super::super::reference::{direct_sum, values};
    use super::*;

    #[test]
    fn forward_matches_the_direct_sum_at_every_border() {
        // Non-square planes, a one-pixel-wide one and a single pixel, so every tap meets an edge.
        for (c, h, w, o) in [(3, 5, 7, 4), (2, 1, 6, 3), (4, 4, 1, 2), (1, 1, 1, 5)] {
            let im = Image { c, h, w };
            let (x, weight, bias) = (values(c * h * w, 1), values(o * c * 9, 2), values(o, 3));
            let (mut cols, mut y) = (vec![f32::NAN; im.cols_len()], vec![f32::NAN; o * h * w]);
            forward(&x, &weight, &bias, im, &mut cols, &mut y);
            for (got, want) in y.iter().zip(direct_sum(&x, &weight, &bias, im)) {
                assert!((*got as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "{c}x{h}x{w}: {got} against {want}");
            }
        }
    }

    #[test]
    fn the_flipped_weight_gives_the_adjoint_and_grouped_products_the_sum() {
        // ⟨conv(x; W), g⟩ = ⟨x, conv(g; W')⟩ for any x and g: W' gives the input gradient.
        // And the weight gradient of a group equals Σ_n cols_n · g_nᵀ, one image at a time.
        for (c, h, w, o) in [(2, 5, 7, 3), (3, 1, 4, 2), (1, 6, 1, 4), (2, 3, 3, 2)] {
            let (im, out_im) = (Image { c, h, w }, Image { c: o, h, w });
            let (x, weight, g) = (values(3 * c * h * w, 4), values(o * c * 9, 5), values(3 * o * h * w, 6));
            let mut cols = vec![f32::NAN; 3 * im.cols_len().max(out_im.cols_len())];
            let (mut y, mut dx) = (vec![0f32; o * h * w], vec![0f32; c * h * w]);
            forward(&x[..c * h * w], &weight, &vec![0.0; o], im, &mut cols, &mut y);
            forward(&g[..o * h * w], &flipped(&weight, o, c), &vec![0.0; c], out_im, &mut cols, &mut dx);
            let lhs: f64 = y.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()), "{c}x{h}x{w}: {lhs} against {rhs}");

            let (mut grouped, mut single) = (vec![0f32; o * c * 9], vec![0f64; o * c * 9]);
            let mut dy_wide = vec![f32::NAN; 3 * o * h * w];
            weight_grads(&x, &g, im, &mut cols, &mut dy_wide, &mut grouped);
            for n in 0..3 {
                let mut one = vec![f32::NAN; im.cols_len()];
                im2col(&x[n * c * h * w..][..c * h * w], im, &mut one, h * w);
                for (idx, s) in single.iter_mut().enumerate() {
                    let (k, oi) = (idx / o, idx % o); // dWᵀ, [9C, O]
                    *s += (0..h * w).map(|p| g[(n * o + oi) * h * w + p] as f64 * one[k * h * w + p] as f64).sum::<f64>();
                }
            }
            for (a, b) in grouped.iter().zip(&single) {
                assert!((*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()), "{c}x{h}x{w}: dW {a} against {b}");
            }
        }
    }
}
