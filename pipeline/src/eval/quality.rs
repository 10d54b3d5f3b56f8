//! Weight-free frame metrics: PSNR and SSIM (Wang et al. 2004, eq. 13) on 8-bit RGB.

/// PSNR in dB of two equal-size 8-bit images; `f64::INFINITY` when identical.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "images must have the same size");
    let mse = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>() / a.len() as f64;
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0 * 255.0 / mse).log10() }
}

const WINDOW: usize = 11;
const SIGMA: f64 = 1.5;
const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);

/// Mean SSIM of two packed RGB images (`side × side × 3`) with the standard 11×11 Gaussian window
/// (σ = 1.5, K1 = 0.01, K2 = 0.03), over every fully covered window position and the three
/// channels (as `tf.image.ssim`). Images smaller than the window use one window of their size.
pub fn ssim(a: &[u8], b: &[u8], width: usize, height: usize) -> f64 {
    assert_eq!(a.len(), width * height * 3);
    assert_eq!(b.len(), a.len());
    let win = WINDOW.min(width).min(height);
    let g: Vec<f64> = {
        let c = (win as f64 - 1.0) / 2.0;
        let w: Vec<f64> = (0..win).map(|i| (-((i as f64 - c).powi(2)) / (2.0 * SIGMA * SIGMA)).exp()).collect();
        let s: f64 = w.iter().sum();
        w.into_iter().map(|v| v / s).collect()
    };
    let mut total = 0.0;
    let mut count = 0.0;
    for ch in 0..3 {
        let px = |img: &[u8], x: usize, y: usize| img[(y * width + x) * 3 + ch] as f64;
        for y0 in 0..=height - win {
            for x0 in 0..=width - win {
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
                total += ((2.0 * ma * mb + C1) * (2.0 * cov + C2)) / ((ma * ma + mb * mb + C1) * (var_a + var_b + C2));
                count += 1.0;
            }
        }
    }
    total / count
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
    fn ssim_is_one_for_equal_images_and_drops_with_noise() {
        let a: Vec<u8> = (0..32 * 32 * 3).map(|i| ((i * 37) % 251) as u8).collect();
        assert!((ssim(&a, &a, 32, 32) - 1.0).abs() < 1e-12);
        let noisy: Vec<u8> = a.iter().enumerate().map(|(i, &v)| v.saturating_add((i % 7) as u8 * 9)).collect();
        let s = ssim(&a, &noisy, 32, 32);
        assert!(s < 0.99 && s > 0.0, "{s}");
        assert!((s - ssim(&noisy, &a, 32, 32)).abs() < 1e-12, "symmetric");
    }
}
