//! Weight-free frame metrics: PSNR and SSIM (Wang et al. 2004, eq. 13) on 8-bit RGB.

/// PSNR in dB of two equal-size 8-bit images; `f64::INFINITY` when identical.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "images must have the same size");
    psnr_of_mse(a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>() / a.len() as f64)
}

const WINDOW: usize = 11;
const SIGMA: f64 = 1.5;
const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);

/// Mean SSIM of two packed RGB images (`side × side × 3`) with the standard 11×11 Gaussian window
/// (σ = 1.5, K1 = 0.01, K2 = 0.03), over every fully covered window position and the three
/// channels (as `tf.image.ssim`). Images smaller than the window use one window of their size.
pub fn ssim(a: &[u8], b: &[u8], width: usize, height: usize) -> f64 {
    ssim_map(a, b, width, height).mean()
}

/// SSIM at each window position, averaged over the channels.
pub struct SsimMap {
    /// Row-major, `(height − win + 1) × (width − win + 1)`.
    pub values: Vec<f64>,
    /// Positions per row.
    pub width: usize,
    /// The window's side: the value at position `(x, y)` belongs to pixel `(x + win/2, y + win/2)`.
    pub win: usize,
    /// The images' width in pixels.
    pub image_width: usize,
}

impl SsimMap {
    /// The whole images' SSIM ([`ssim`]).
    pub fn mean(&self) -> f64 {
        self.values.iter().sum::<f64>() / self.values.len() as f64
    }

    /// The SSIM summed over the window positions whose centre pixel is in `mask` (one flag per
    /// pixel), and the count of those positions.
    pub fn masked_sum(&self, mask: &[bool]) -> (f64, usize) {
        let c = self.win / 2;
        let centre = |i: usize| (i / self.width + c) * self.image_width + i % self.width + c;
        self.values.iter().enumerate().filter(|(i, _)| mask[centre(*i)]).fold((0.0, 0), |(s, n), (_, v)| (s + v, n + 1))
    }
}

/// The SSIM of [`ssim`] at every window position.
pub fn ssim_map(a: &[u8], b: &[u8], width: usize, height: usize) -> SsimMap {
    assert_eq!(a.len(), width * height * 3);
    assert_eq!(b.len(), a.len());
    let win = WINDOW.min(width).min(height);
    let g: Vec<f64> = {
        let c = (win as f64 - 1.0) / 2.0;
        let w: Vec<f64> = (0..win).map(|i| (-((i as f64 - c).powi(2)) / (2.0 * SIGMA * SIGMA)).exp()).collect();
        let s: f64 = w.iter().sum();
        w.into_iter().map(|v| v / s).collect()
    };
    let (mw, mh) = (width - win + 1, height - win + 1);
    let mut values = vec![0.0; mw * mh];
    for ch in 0..3 {
        let px = |img: &[u8], x: usize, y: usize| img[(y * width + x) * 3 + ch] as f64;
        for y0 in 0..mh {
            for x0 in 0..mw {
                let (mut ma, mut mb, mut aa, mut bb, mut ab) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for j in 0..win {
                    for i in 0..win {
                        let w = g[i] * g[j];
                        let (va, vb) = (px(a, x0 + i, y0 + j), px(b, x0 + i, y0 + j));
                        ma += w * va;
                        mb += w * vb;
                        aa += w * va * va;
                        bb += w * vb * vb;
                        ab += w * va * vb;
                    }
                }
                let (var_a, var_b, cov) = (aa - ma * ma, bb - mb * mb, ab - ma * mb);
                values[y0 * mw + x0] += ((2.0 * ma * mb + C1) * (2.0 * cov + C2)) / ((ma * ma + mb * mb + C1) * (var_a + var_b + C2)) / 3.0;
            }
        }
    }
    SsimMap { values, width: mw, win, image_width: width }
}

/// The moving pixels of a frame (docs/evaluation.md): where any channel of the real frame differs
/// from the last context frame by more than `threshold` (of 255). One flag per pixel.
pub fn moving(real: &[u8], last_context: &[u8], threshold: u8) -> Vec<bool> {
    real.chunks_exact(3).zip(last_context.chunks_exact(3)).map(|(r, l)| r.iter().zip(l).any(|(&x, &y)| x.abs_diff(y) > threshold)).collect()
}

/// Squared error summed over the pixels of `mask` (all channels), and the count of values summed.
pub fn masked_squared_error(a: &[u8], b: &[u8], mask: &[bool]) -> (f64, usize) {
    a.chunks_exact(3).zip(b.chunks_exact(3)).zip(mask).filter(|(_, m)| **m).fold((0.0, 0), |(sum, n), ((pa, pb), _)| {
        (sum + pa.iter().zip(pb).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>(), n + 3)
    })
}

/// PSNR in dB of a mean squared error of 8-bit values.
pub fn psnr_of_mse(mse: f64) -> f64 {
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0 * 255.0 / mse).log10() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_by_hand() {
        // One channel value off by 10 in a 2×1 RGB image: MSE = 100/6.
        let a = [0u8, 0, 0, 0, 0, 0];
        let mut b = a;
        b[0] = 10;
        assert!((psnr(&a, &b) - 10.0 * (255.0f64.powi(2) * 6.0 / 100.0).log10()).abs() < 1e-12);
        assert_eq!(psnr(&a, &a), f64::INFINITY);
    }

    #[test]
    fn ssim_of_constant_images_is_the_luminance_term() {
        // Constant images: σ = 0, so SSIM = (2μaμb + C1)/(μa² + μb² + C1) exactly.
        let (a, b) = (vec![100u8; 16 * 16 * 3], vec![140u8; 16 * 16 * 3]);
        let expected = (2.0 * 100.0 * 140.0 + C1) / (100.0f64 * 100.0 + 140.0 * 140.0 + C1);
        assert!((ssim(&a, &b, 16, 16) - expected).abs() < 1e-9);
    }

    #[test]
    fn masked_scores_see_only_the_masked_pixels() {
        // 32x16: the left half differs by 20 in the red channel, the right half is equal.
        let (w, h) = (32, 16);
        let a = vec![100u8; w * h * 3];
        let b: Vec<u8> = (0..w * h * 3).map(|i| if (i / 3) % w < 16 && i % 3 == 0 { 120 } else { 100 }).collect();
        let left: Vec<bool> = (0..w * h).map(|p| p % w < 16).collect();
        assert_eq!(moving(&b, &a, 19), left);
        assert!(moving(&b, &a, 20).iter().all(|m| !m), "a difference of exactly the threshold is not motion");
        let (sum, n) = masked_squared_error(&a, &b, &left);
        assert_eq!((sum, n), (400.0 * 256.0, 3 * 256));
        assert!((psnr_of_mse(sum / n as f64) - 10.0 * (255.0f64.powi(2) * 3.0 / 400.0).log10()).abs() < 1e-12);
        let right: Vec<bool> = left.iter().map(|m| !m).collect();
        assert_eq!(masked_squared_error(&a, &b, &right).0, 0.0);
        // The map's mean is the whole-image SSIM; windows centred at x >= 21 see only the
        // unchanged half, so their SSIM is 1, and those centred on the left see the change.
        let map = ssim_map(&a, &b, w, h);
        assert!((map.values.iter().sum::<f64>() / map.values.len() as f64 - ssim(&a, &b, w, h)).abs() < 1e-12);
        let far_right: Vec<bool> = (0..w * h).map(|p| p % w >= 21).collect();
        let (s, n) = ssim_map(&a, &b, w, h).masked_sum(&far_right);
        assert!(n > 0 && (s / n as f64 - 1.0).abs() < 1e-12, "{s} / {n}");
        let (s, n) = ssim_map(&a, &b, w, h).masked_sum(&left);
        assert!(n > 0 && s / (n as f64) < 1.0 - 1e-6, "{s} / {n}");
        assert_eq!(ssim_map(&a, &b, w, h).masked_sum(&vec![false; w * h]), (0.0, 0));
    }

    #[test]
    fn ssim_is_one_for_equal_images_and_drops_with_noise() {
        let a: Vec<u8> = (0..32 * 32 * 3).map(|i| ((i * 37) % 251) as u8).collect();
        assert!((ssim(&a, &a, 32, 32) - 1.0).abs() < 1e-12);
        let noisy: Vec<u8> = a.iter().enumerate().map(|(i, &v)| v.saturating_add((i % 7) as u8 * 9)).collect();
        let s = ssim(&a, &noisy, 32, 32);
        assert!(s < 0.99 && s > 0.0, "{s}");
        assert!((s - ssim(&noisy, &a, 32, 32)).abs() < 1e-12, "symmetric");
    }
}
