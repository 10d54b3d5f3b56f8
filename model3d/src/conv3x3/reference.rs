//! What the kernels' tests compare against: the convolution and its weight gradient summed as
//! written, in f64, and deterministic test values.

use super::kernel::Image;

/// `y[o, i, j] = b[o] + Σ_{c, dy, dx} x[c, i + dy − 1, j + dx − 1] · W[o, c, dy, dx]`, zero
/// outside the plane: `x` `[C, H, W]`, `weight` `[O, C, 3, 3]`, `bias` `[O]`; returns `[O, H, W]`.
pub fn direct_sum(x: &[f32], weight: &[f32], bias: &[f32], im: Image) -> Vec<f64> {
    let (o, hw) = (bias.len(), im.pixels());
    let mut y = vec![0f64; o * hw];
    for (p, v) in y.iter_mut().enumerate() {
        let (oi, i, j) = (p / hw, p % hw / im.w, p % im.w);
        *v = bias[oi] as f64;
        for c in 0..im.c {
            for t in 0..9 {
                if let Some(q) = tap(im, i, j, t) {
                    *v += x[c * hw + q] as f64 * weight[(oi * im.c + c) * 9 + t] as f64;
                }
            }
        }
    }
    y
}

/// `dW[o, c, t] = Σ_n Σ_p x_n[c, p + shift(t)] · dy_n[o, p]` over the images `xs` `[k, C, H, W]`
/// and their output gradients `dys` `[k, O, H, W]`.
pub fn weight_grad(xs: &[f32], dys: &[f32], im: Image, o: usize, [c, t, oi]: [usize; 3]) -> f64 {
    let hw = im.pixels();
    let mut sum = 0f64;
    for (x, dy) in xs.chunks_exact(im.c * hw).zip(dys.chunks_exact(o * hw)) {
        for p in 0..hw {
            if let Some(q) = tap(im, p / im.w, p % im.w, t) {
                sum += x[c * hw + q] as f64 * dy[oi * hw + p] as f64;
            }
        }
    }
    sum
}

/// The pixel tap `t = 3·dy + dx` reads for output pixel `(i, j)`, if inside the plane.
fn tap(im: Image, i: usize, j: usize, t: usize) -> Option<usize> {
    let (ii, jj) = ((i + t / 3) as isize - 1, (j + t % 3) as isize - 1);
    ((0..im.h as isize).contains(&ii) && (0..im.w as isize).contains(&jj)).then(|| ii as usize * im.w + jj as usize)
}

/// `n` values spread over [−1, 1), different for each seed.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64).map(|i| (((i + 1) * 2_654_435_761 + seed * 97) % 1000) as f32 / 500.0 - 1.0).collect()
}
