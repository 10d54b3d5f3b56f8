//! The CPU kernels of the 3×3 convolution (stride 1, padding 1), one image at a time, in f32:
//! im2col by taps, then one matrix product per image (Chellapilla et al. 2006). With the columns
//! `cols[(c, t), p] = x_pad[c, i + dy, j + dx]` for each tap `t = 3·dy + dx` and pixel `p = (i, j)`:
//! - forward: `y = W · cols + b`, `[O, 9C]×[9C, HW]`: `W` `[O, C, 3, 3]` is already `[O, 9C]`
//!   in the columns' order, and `y` comes out `[O, H, W]`, the layout of the output;
//! - input gradient: `d cols = Wᵀ · dy`, `[9C, O]×[O, HW]`, folded back onto the pixels it was
//!   copied from (col2im);
//! - weight gradient: `dW = Σ_n dy_n · cols_nᵀ`, `[O, HW]×[HW, 9C]`, the columns recomputed.
//!
//! A tap's row of `cols` is the input plane shifted by `(dy − 1, dx − 1)`: whole rows of pixels
//! copied (or added, for col2im) at an offset, with zeros where the shift leaves the plane.

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

/// For tap `t` and output row `i`: the input row it reads (`None` in the padding) and the
/// horizontal shift `dx − 1`.
#[inline(always)]
fn tap_source(t: usize, i: usize, h: usize) -> (Option<usize>, isize) {
    let (dy, dx) = (t / 3, t % 3);
    let row = (i + dy).checked_sub(1).filter(|&r| r < h);
    (row, dx as isize - 1)
}

/// `cols` `[9C, HW]` from `x` `[C, H, W]`.
#[inline(always)]
fn im2col_body(x: &[f32], im: Image, cols: &mut [f32]) {
    let (hw, w) = (im.pixels(), im.w);
    for (row_index, row) in cols.chunks_exact_mut(hw).take(9 * im.c).enumerate() {
        let (c, t) = (row_index / 9, row_index % 9);
        let plane = &x[c * hw..(c + 1) * hw];
        for (i, out) in row.chunks_exact_mut(w).enumerate() {
            match tap_source(t, i, im.h) {
                (None, _) => out.fill(0.0),
                (Some(r), shift) => {
                    let src = &plane[r * w..(r + 1) * w];
                    match shift {
                        -1 => {
                            out[0] = 0.0;
                            out[1..].copy_from_slice(&src[..w - 1]);
                        }
                        0 => out.copy_from_slice(src),
                        _ => {
                            out[..w - 1].copy_from_slice(&src[1..]);
                            out[w - 1] = 0.0;
                        }
                    }
                }
            }
        }
    }
}

/// `dx` `[C, H, W]` = the sum over taps of `d cols` `[9C, HW]` moved back to the pixels each
/// entry was copied from (the adjoint of [`im2col`]).
#[inline(always)]
fn col2im_body(dcols: &[f32], im: Image, dx: &mut [f32]) {
    let (hw, w) = (im.pixels(), im.w);
    dx.fill(0.0);
    for (row_index, row) in dcols.chunks_exact(hw).take(9 * im.c).enumerate() {
        let (c, t) = (row_index / 9, row_index % 9);
        let plane = &mut dx[c * hw..(c + 1) * hw];
        for (i, src) in row.chunks_exact(w).enumerate() {
            let (Some(r), shift) = tap_source(t, i, im.h) else { continue };
            let dst = &mut plane[r * w..(r + 1) * w];
            let (dst, src) = match shift {
                -1 => (&mut dst[..w - 1], &src[1..]),
                0 => (dst, src),
                _ => (&mut dst[1..], &src[..w - 1]),
            };
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
        }
    }
}

wide!(
    /// Fills one image's columns `[9C, HW]` from its pixels `[C, H, W]`.
    pub fn im2col = im2col_body(x: &[f32], im: Image, cols: &mut [f32])
);
wide!(
    /// One image's input gradient `[C, H, W]` from the gradient of its columns `[9C, HW]`.
    pub fn col2im = col2im_body(dcols: &[f32], im: Image, dx: &mut [f32])
);

/// One image's output `y` `[O, HW]` from its pixels `x` `[C, H, W]`, the weight `[O, 9C]` and the
/// bias `[O]`; `cols` is scratch of [`Image::cols_len`].
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], im: Image, cols: &mut [f32], y: &mut [f32]) {
    let (o, hw) = (bias.len(), im.pixels());
    im2col(x, im, cols);
    for (row, b) in y.chunks_exact_mut(hw).zip(bias) {
        row.fill(*b);
    }
    matmul(y, weight, false, cols, false, [o, hw, 9 * im.c], 1.0, true);
}

/// What one image's backward pass adds: its input gradient `dx` `[C, H, W]` (when asked), and
/// `dy·colsᵀ` and the row sums of `dy` onto `dw` `[O, 9C]` and `db` `[O]` (when asked).
pub struct Grads<'a> {
    pub dx: Option<&'a mut [f32]>,
    pub dw: Option<&'a mut [f32]>,
    pub db: Option<&'a mut [f32]>,
}

/// One image's backward pass from its output gradient `dy` `[O, HW]`; `cols` is scratch of
/// [`Image::cols_len`].
pub fn backward(x: &[f32], weight: &[f32], dy: &[f32], im: Image, cols: &mut [f32], grads: Grads) {
    let (hw, k) = (im.pixels(), 9 * im.c);
    let o = dy.len() / hw;
    if let Some(dw) = grads.dw {
        im2col(x, im, cols);
        matmul(dw, dy, false, cols, true, [o, k, hw], 1.0, true); // dW += dy · colsᵀ
    }
    if let Some(db) = grads.db {
        for (b, row) in db.iter_mut().zip(dy.chunks_exact(hw)) {
            *b += row.iter().sum::<f32>();
        }
    }
    if let Some(dx) = grads.dx {
        matmul(cols, weight, true, dy, false, [k, hw, o], 1.0, false); // d cols = Wᵀ · dy
        col2im(cols, im, dx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `y[o, i, j] = b[o] + Σ_{c, dy, dx} x[c, i + dy − 1, j + dx − 1] · W[o, c, dy, dx]` in f64.
    fn direct(x: &[f32], weight: &[f32], bias: &[f32], im: Image) -> Vec<f64> {
        let o = bias.len();
        let mut y = vec![0f64; o * im.pixels()];
        for (oc, &b) in bias.iter().enumerate() {
            for i in 0..im.h {
                for j in 0..im.w {
                    let mut acc = b as f64;
                    for c in 0..im.c {
                        for t in 0..9 {
                            let (ii, jj) = ((i + t / 3) as isize - 1, (j + t % 3) as isize - 1);
                            if (0..im.h as isize).contains(&ii) && (0..im.w as isize).contains(&jj) {
                                acc += x[(c * im.h + ii as usize) * im.w + jj as usize] as f64 * weight[(oc * im.c + c) * 9 + t] as f64;
                            }
                        }
                    }
                    y[(oc * im.h + i) * im.w + j] = acc;
                }
            }
        }
        y
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n as u64).map(|i| (((i + 1) * 2_654_435_761 + seed * 97) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    #[test]
    fn forward_matches_the_direct_sum_at_every_border() {
        // Non-square planes, a one-pixel-wide one and a single pixel, so every tap meets an edge.
        for (c, h, w, o) in [(3, 5, 7, 4), (2, 1, 6, 3), (4, 4, 1, 2), (1, 1, 1, 5)] {
            let im = Image { c, h, w };
            let (x, weight, bias) = (values(c * h * w, 1), values(o * c * 9, 2), values(o, 3));
            let (mut cols, mut y) = (vec![f32::NAN; im.cols_len()], vec![f32::NAN; o * h * w]);
            forward(&x, &weight, &bias, im, &mut cols, &mut y);
            for (got, want) in y.iter().zip(direct(&x, &weight, &bias, im)) {
                assert!((*got as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "{c}x{h}x{w}: {got} against {want}");
            }
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // ⟨im2col(x), g⟩ = ⟨x, col2im(g)⟩ for any x and g: the input gradient of the columns.
        for (c, h, w) in [(2, 5, 7), (3, 1, 4), (1, 6, 1), (2, 3, 3)] {
            let im = Image { c, h, w };
            let (x, g) = (values(c * h * w, 4), values(im.cols_len(), 5));
            let (mut cols, mut dx) = (vec![f32::NAN; im.cols_len()], vec![f32::NAN; c * h * w]);
            im2col(&x, im, &mut cols);
            col2im(&g, im, &mut dx);
            let lhs: f64 = cols.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()), "{c}x{h}x{w}: {lhs} against {rhs}");
        }
    }
}
