//! Display rotation: phone videos store frames sideways with a display matrix that says how to
//! turn them (ISO/IEC 14496-12 `tkhd` matrix, FFmpeg's `AV_PKT_DATA_DISPLAYMATRIX`). Frames are
//! turned as a player shows them, as the `ffmpeg` command line does by default (autorotate).

/// A counter-clockwise turn by a multiple of 90°.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Turn {
    #[default]
    None,
    Ccw90,
    Half,
    Cw90,
}

impl Turn {
    /// The turn a display matrix asks for: 3x3 values, 16.16 fixed point in the first two
    /// columns. Its angle is FFmpeg's `av_display_rotation_get` (counter-clockwise degrees,
    /// `-atan2(m1/s1, m0/s0)` with the column scales `s`), rounded to the nearest quarter turn.
    /// Flips and shears are not turns and are left alone, as is a degenerate matrix.
    pub fn from_display_matrix(m: &[i32; 9]) -> Self {
        let f = |i: usize| m[i] as f64 / 65536.0;
        let (s0, s1) = (f(0).hypot(f(3)), f(1).hypot(f(4)));
        if s0 == 0.0 || s1 == 0.0 {
            return Self::None;
        }
        let degrees = -(f(1) / s1).atan2(f(0) / s0).to_degrees();
        match ((degrees / 90.0).round() as i64).rem_euclid(4) {
            1 => Self::Ccw90,
            2 => Self::Half,
            3 => Self::Cw90,
            _ => Self::None,
        }
    }

    /// The displayed width and height of a `width × height` frame.
    pub fn size(self, width: usize, height: usize) -> (usize, usize) {
        match self {
            Self::Ccw90 | Self::Cw90 => (height, width),
            Self::None | Self::Half => (width, height),
        }
    }

    /// RGB rows of `stride` bytes, `width × height`, turned; returns packed RGB of
    /// [`size`](Self::size).
    pub fn apply(self, rgb: &[u8], stride: usize, width: usize, height: usize) -> Vec<u8> {
        let (w2, h2) = self.size(width, height);
        let mut out = vec![0u8; width * height * 3];
        for y in 0..h2 {
            for x in 0..w2 {
                // The source pixel shown at (x, y).
                let (sx, sy) = match self {
                    Self::None => (x, y),
                    Self::Ccw90 => (width - 1 - y, x),
                    Self::Half => (width - 1 - x, height - 1 - y),
                    Self::Cw90 => (y, height - 1 - x),
                };
                let (d, s) = ((y * w2 + x) * 3, sy * stride + sx * 3);
                out[d..d + 3].copy_from_slice(&rgb[s..s + 3]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: i32 = 65536;
    const W: i32 = 1 << 30;

    #[test]
    fn display_matrices_give_quarter_turns() {
        assert_eq!(Turn::from_display_matrix(&[ONE, 0, 0, 0, ONE, 0, 0, 0, W]), Turn::None);
        // What `ffmpeg -metadata:s:v rotate=90` writes (ffprobe: rotation=90; the ffmpeg command
        // line turns it with transpose=cclock).
        assert_eq!(Turn::from_display_matrix(&[0, -ONE, 0, ONE, 0, 0, 0, 0, W]), Turn::Ccw90);
        assert_eq!(Turn::from_display_matrix(&[-ONE, 0, 0, 0, -ONE, 0, 0, 0, W]), Turn::Half);
        assert_eq!(Turn::from_display_matrix(&[0, ONE, 0, -ONE, 0, 0, 0, 0, W]), Turn::Cw90);
        // A scaled matrix and one a degree off still give the quarter turn.
        assert_eq!(Turn::from_display_matrix(&[0, -2 * ONE, 0, 2 * ONE, 1000, 0, 0, 0, W]), Turn::Ccw90);
        assert_eq!(Turn::from_display_matrix(&[0; 9]), Turn::None);
    }

    #[test]
    fn turns_move_corners_where_a_player_shows_them() {
        // 3x2 frame, pixel value = index; the top-left pixel is 0, the top-right 2.
        let rgb: Vec<u8> = (0..6u8).flat_map(|i| [i; 3]).collect();
        let px = |t: Turn| t.apply(&rgb, 9, 3, 2).chunks(3).map(|p| p[0]).collect::<Vec<_>>();
        // Counter-clockwise: the top-right corner comes to the top-left.
        assert_eq!(px(Turn::Ccw90), vec![2, 5, 1, 4, 0, 3]);
        assert_eq!(px(Turn::Cw90), vec![3, 0, 4, 1, 5, 2]);
        assert_eq!(px(Turn::Half), vec![5, 4, 3, 2, 1, 0]);
        assert_eq!(Turn::Ccw90.size(3, 2), (2, 3));
        // Rows padded past the frame (as FFmpeg's frames are) read the same.
        let padded: Vec<u8> = rgb.chunks(9).flat_map(|row| row.iter().copied().chain([7; 3])).collect();
        assert_eq!(Turn::Ccw90.apply(&padded, 12, 3, 2), Turn::Ccw90.apply(&rgb, 9, 3, 2));
        // Four quarter turns are none.
        let mut v = rgb.clone();
        let (mut w, mut h) = (3, 2);
        for _ in 0..4 {
            v = Turn::Ccw90.apply(&v, 3 * w, w, h);
            (w, h) = (h, w);
        }
        assert_eq!(v, rgb);
    }
}
