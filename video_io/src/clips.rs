//! Clips on the host: an `[N, T, H, W, C]` array of bytes with a label per clip, the layout of
//! shard records, and the one conversion to and from the network's `[N, T, C, H, W]` values in
//! [−1, 1] (the host side of it; turning those arrays into device tensors is the caller's).

use std::path::Path;

use ndarray::{Array4, Array5, ArrayView4, ArrayView5, Axis, s};

use crate::error::Result;
use crate::shard::{Record, RecordLayout, Shard, write_shard};

/// `N` clips of `T` frames of `H × W × C` bytes, and their class labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clips {
    /// `[N, T, H, W, C]`.
    pub pixels: Array5<u8>,
    pub labels: Vec<i32>,
}

impl Clips {
    /// # Panics
    /// When `labels` does not hold one label per clip.
    pub fn new(pixels: Array5<u8>, labels: Vec<i32>) -> Self {
        assert_eq!(pixels.dim().0, labels.len(), "one label per clip");
        Self { pixels, labels }
    }

    /// Clips from packed `[T, H, W, C]` records of `layout`.
    ///
    /// # Panics
    /// When a record's size does not match `layout`.
    pub fn from_records<'a>(layout: RecordLayout, records: impl IntoIterator<Item = Record<'a>>) -> Self {
        let [t, h, w, c] = layout.dims();
        let (mut bytes, mut labels) = (Vec::new(), Vec::new());
        for r in records {
            assert_eq!(r.pixels.len(), layout.pixel_bytes(), "record does not match the layout");
            bytes.extend_from_slice(r.pixels);
            labels.push(r.label);
        }
        let n = labels.len();
        Self::new(Array5::from_shape_vec((n, t, h, w, c), bytes).expect("sizes checked"), labels)
    }

    /// Every record of a shard.
    pub fn read(shard: &Shard) -> Self {
        Self::from_records(shard.layout, (0..shard.len).map(|i| shard.get(i)))
    }

    /// Writes the clips as a shard (record `source` = clip index) and returns its body checksum.
    pub fn write(&self, path: &Path) -> Result<u32> {
        let pixels = self.pixels.as_standard_layout();
        let bytes = pixels.as_slice().expect("standard layout");
        let per_clip = self.layout().pixel_bytes();
        let records = self.labels.iter().enumerate().map(|(i, &label)| Record { label, source: i as u32, pixels: &bytes[i * per_clip..][..per_clip] });
        write_shard(path, self.layout(), records)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn layout(&self) -> RecordLayout {
        let (_, t, h, w, c) = self.pixels.dim();
        RecordLayout { frames: t as u32, height: h as u32, width: w as u32, channels: c as u32 }
    }

    /// Clip `i`, `[T, H, W, C]`.
    pub fn clip(&self, i: usize) -> ArrayView4<'_, u8> {
        self.pixels.index_axis(Axis(0), i)
    }

    /// The clips of `parts` one after another.
    ///
    /// # Panics
    /// When `parts` is empty or its clips differ in layout.
    pub fn concat(parts: &[Clips]) -> Self {
        let views: Vec<_> = parts.iter().map(|p| p.pixels.view()).collect();
        let pixels = ndarray::concatenate(Axis(0), &views).expect("clips of one layout");
        Self::new(pixels, parts.iter().flat_map(|p| p.labels.iter().copied()).collect())
    }

    /// Clips `range` as their own set.
    pub fn select(&self, range: std::ops::Range<usize>) -> Self {
        Self::new(self.pixels.slice(s![range.clone(), .., .., .., ..]).to_owned(), self.labels[range].to_vec())
    }

    /// `[N, T, C, H, W]` values in [−1, 1]: `v = byte / 127.5 − 1`.
    pub fn to_network(&self) -> Array5<f32> {
        self.pixels.view().permuted_axes([0, 1, 4, 2, 3]).mapv(|v| v as f32 / 127.5 - 1.0)
    }

    /// The inverse of [`Self::to_network`], rounding to the nearest byte and clamping.
    pub fn from_network(values: ArrayView5<'_, f32>, labels: Vec<i32>) -> Self {
        let pixels = values.permuted_axes([0, 1, 3, 4, 2]).mapv(|v| ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8);
        Self::new(pixels.as_standard_layout().into_owned(), labels)
    }
}

/// One clip's `[T, H, W, C]` bytes as `[T, C, H, W]` values in [−1, 1], mirrored left to right
/// when asked (a training augmentation).
pub fn to_network_layout(clip: ArrayView4<'_, u8>, mirrored: bool) -> Array4<f32> {
    let clip = if mirrored { clip.slice_move(s![.., .., ..;-1, ..]) } else { clip };
    clip.permuted_axes([0, 3, 1, 2]).mapv(|v| v as f32 / 127.5 - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clips() -> Clips {
        let pixels = Array5::from_shape_fn((2, 3, 4, 5, 3), |(n, t, y, x, c)| ((n * 61 + t * 29 + y * 11 + x * 7 + c * 3) % 256) as u8);
        Clips::new(pixels, vec![4, 7])
    }

    #[test]
    fn network_layout_round_trips_and_puts_channels_before_rows() {
        let c = clips();
        let v = c.to_network();
        assert_eq!(v.dim(), (2, 3, 3, 4, 5));
        // Clip 1, frame 2, channel 1, pixel (y = 3, x = 4).
        assert_eq!(v[[1, 2, 1, 3, 4]], c.pixels[[1, 2, 3, 4, 1]] as f32 / 127.5 - 1.0);
        assert_eq!(Clips::from_network(v.view(), c.labels.clone()), c);
        let one = to_network_layout(c.clip(1), false);
        assert_eq!(one, v.index_axis(Axis(0), 1));
    }

    #[test]
    fn mirroring_reverses_columns_only() {
        let c = clips();
        let m = to_network_layout(c.clip(0), true);
        assert_eq!(m[[2, 1, 3, 0]], c.pixels[[0, 2, 3, 4, 1]] as f32 / 127.5 - 1.0);
    }

    #[test]
    fn shards_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.bin");
        let c = clips();
        c.write(&path).unwrap();
        let back = Clips::read(&Shard::open(&path).unwrap());
        assert_eq!(back, c);
        assert_eq!(back.select(1..2).labels, vec![7]);
        assert_eq!(Clips::concat(&[back.select(0..1), back.select(1..2)]), c);
    }
}
