//! Square centre crop and area (box-filter) resampling of packed RGB frames.

/// The centred square of side `min(w, h)`, at `((w − s)/2, (h − s)/2)` like FFmpeg's `crop` filter.
pub fn centre_square(width: usize, height: usize) -> (usize, usize, usize) {
    let side = width.min(height);
    ((width - side) / 2, (height - side) / 2, side)
}

/// Area resampling: each output pixel is the mean of the source region it covers, with partial
/// source pixels weighted by the covered fraction (the "area" filter of swscale and OpenCV).
/// The taps depend only on the sizes, so one resampler serves every frame of a video.
pub struct AreaResize {
    /// Source region `(x0, y0, w, h)` inside a frame.
    region: (usize, usize, usize, usize),
    out: (usize, usize),
    xs: Vec<Vec<(usize, f32)>>,
    ys: Vec<Vec<(usize, f32)>>,
}

impl AreaResize {
    /// Resamples the region `(x0, y0, w, h)` of each frame to `out_w × out_h`.
    pub fn new(region: (usize, usize, usize, usize), out_w: usize, out_h: usize) -> Self {
        Self { region, out: (out_w, out_h), xs: weights(region.2, out_w), ys: weights(region.3, out_h) }
    }

    /// `src` is packed RGB rows of `stride` bytes; returns packed RGB `out_w × out_h`.
    pub fn apply(&self, src: &[u8], stride: usize) -> Vec<u8> {
        let ((x0, y0, w, _), (out_w, out_h)) = (self.region, self.out);
        let mut out = vec![0u8; out_w * out_h * 3];
        let mut row = vec![0f32; w * 3];
        for (oy, ytaps) in self.ys.iter().enumerate() {
            row.iter_mut().for_each(|v| *v = 0.0);
            for &(sy, wy) in ytaps {
                let line = &src[(y0 + sy) * stride + x0 * 3..][..w * 3];
                for (acc, &v) in row.iter_mut().zip(line) {
                    *acc += wy * v as f32;
                }
            }
            for (ox, xtaps) in self.xs.iter().enumerate() {
                for c in 0..3 {
                    let v: f32 = xtaps.iter().map(|&(sx, wx)| wx * row[sx * 3 + c]).sum();
                    out[(oy * out_w + ox) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        out
    }
}

/// One-off [`AreaResize`] of the region `(x0, y0, w, h)` of `src` (rows of `stride` bytes).
pub fn area_resize(src: &[u8], stride: usize, region: (usize, usize, usize, usize), out_w: usize, out_h: usize) -> Vec<u8> {
    AreaResize::new(region, out_w, out_h).apply(src, stride)
}

/// For each output cell, the source indices it overlaps and their normalised overlap weights.
fn weights(src: usize, dst: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|o| {
            let (start, end) = (o as f64 * scale, (o + 1) as f64 * scale);
            let mut taps = Vec::new();
            let mut s = start.floor() as usize;
            while (s as f64) < end && s < src {
                let overlap = (end.min(s as f64 + 1.0) - start.max(s as f64)).max(0.0);
                if overlap > 0.0 {
                    taps.push((s, (overlap / scale) as f32));
                }
                s += 1;
            }
            taps
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_factor_is_the_block_mean() {
        // 4×2 → 2×1: each output is the mean of a 2×2 block.
        let src: Vec<u8> = (0..4 * 2 * 3).map(|i| (i * 10) as u8).collect();
        let out = area_resize(&src, 12, (0, 0, 4, 2), 2, 1);
        // Block 0: pixels (0,0),(1,0),(0,1),(1,1) of channel 0 are 0, 30, 120, 150 → 75.
        assert_eq!(out[0], 75);
        assert_eq!(out[3] as u32, (60 + 90 + 180 + 210) / 4);
    }

    #[test]
    fn fractional_factor_weights_partial_pixels() {
        // 3 → 2: output 0 covers source [0, 1.5): (1·a + 0.5·b)/1.5.
        let src = [30u8, 30, 30, 90, 90, 90, 150, 150, 150];
        let out = area_resize(&src, 9, (0, 0, 3, 1), 2, 1);
        assert_eq!(out[0], 50);
        assert_eq!(out[3], 130);
    }

    #[test]
    fn a_constant_image_stays_constant_and_crop_is_centred() {
        let src = vec![77u8; 340 * 256 * 3];
        let (x0, y0, s) = centre_square(340, 256);
        assert_eq!((x0, y0, s), (42, 0, 256));
        assert!(area_resize(&src, 340 * 3, (x0, y0, s, s), 64, 64).iter().all(|&v| v == 77));
    }
}
