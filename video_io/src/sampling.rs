//! Choosing clips of `T` frames from a decoded frame sequence.

use serde::{Deserialize, Serialize};

use crate::decode::Frame;

/// How frames are taken from the stream.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FrameSampling {
    /// Every `stride`-th frame at the native frame rate.
    Stride { stride: usize },
    /// Resampled to `fps` frames per second: for each target time, the last frame shown by then.
    Fps { fps: f64 },
}

impl Default for FrameSampling {
    fn default() -> Self {
        Self::Stride { stride: 1 }
    }
}

impl FrameSampling {
    /// The broken rule as `(field, value, rule)`.
    pub fn validate(&self) -> Result<(), (String, String, String)> {
        match *self {
            Self::Stride { stride: 0 } => Err(("stride".into(), "0".into(), "must be at least 1".into())),
            Self::Fps { fps } if !(fps > 0.0 && fps.is_finite()) => Err(("fps".into(), fps.to_string(), "must be positive".into())),
            _ => Ok(()),
        }
    }

    /// Indices of the frames that make up the resampled sequence.
    pub fn indices(&self, frames: &[Frame]) -> Vec<usize> {
        match *self {
            Self::Stride { stride } => (0..frames.len()).step_by(stride.max(1)).collect(),
            Self::Fps { fps } => {
                let Some(first) = frames.first() else { return Vec::new() };
                let last = frames.last().map_or(0.0, |f| f.time);
                let mut out = Vec::new();
                let mut j = 0;
                for k in 0.. {
                    let target = first.time + k as f64 / fps;
                    if target > last + 1e-9 {
                        break;
                    }
                    while j + 1 < frames.len() && frames[j + 1].time <= target + 1e-9 {
                        j += 1;
                    }
                    out.push(j);
                }
                out
            }
        }
    }
}

/// Non-overlapping windows of `length` sampled frames, at most `max_clips` of them.
pub fn windows(sampled: &[usize], length: usize, max_clips: usize) -> Vec<Vec<usize>> {
    sampled.chunks_exact(length).take(max_clips).map(<[usize]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: usize, fps: f64) -> Vec<Frame> {
        (0..n).map(|i| Frame { time: i as f64 / fps, rgb: Vec::new() }).collect()
    }

    #[test]
    fn stride_and_windows() {
        let idx = FrameSampling::Stride { stride: 2 }.indices(&frames(10, 30.0));
        assert_eq!(idx, vec![0, 2, 4, 6, 8]);
        assert_eq!(windows(&idx, 2, 5), vec![vec![0, 2], vec![4, 6]]);
        assert_eq!(windows(&idx, 2, 1), vec![vec![0, 2]]);
        assert!(windows(&idx, 6, 5).is_empty());
    }

    #[test]
    fn fps_resampling_holds_the_last_shown_frame() {
        // 30 fps to 10 fps keeps every third frame; 25 fps to 50 fps repeats each frame.
        assert_eq!(FrameSampling::Fps { fps: 10.0 }.indices(&frames(9, 30.0)), vec![0, 3, 6]);
        assert_eq!(FrameSampling::Fps { fps: 50.0 }.indices(&frames(3, 25.0)), vec![0, 0, 1, 1, 2]);
    }
}
