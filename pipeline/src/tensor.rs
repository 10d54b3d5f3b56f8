//! The one place host arrays become device tensors and back: clips in the network's layout
//! `[N, T, C, H, W]`, values in [−1, 1].

use burn::prelude::*;
use ndarray::Array5;
use video_io::clips::Clips;

/// `[N, T, C, H, W]` host values as a tensor on `device`.
pub fn to_tensor(values: Array5<f32>, device: &Device) -> Tensor<5> {
    let (n, t, c, h, w) = values.dim();
    let (data, offset) = values.as_standard_layout().into_owned().into_raw_vec_and_offset();
    debug_assert_eq!(offset.unwrap_or(0), 0);
    Tensor::from_data(TensorData::new(data, [n, t, c, h, w]), device)
}

/// Clips as network input.
pub fn clips_to_tensor(clips: &Clips, device: &Device) -> Tensor<5> {
    to_tensor(clips.to_network(), device)
}

/// Network output as clips with `labels` (rounded to bytes, clamped to [0, 255]).
pub fn tensor_to_clips(x: Tensor<5>, labels: Vec<i32>) -> Clips {
    let [n, t, c, h, w] = x.dims();
    let values = x.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 values");
    let values = Array5::from_shape_vec((n, t, c, h, w), values).expect("tensor size matches its shape");
    Clips::from_network(values.view(), labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_round_trip_through_a_tensor() {
        let pixels = Array5::from_shape_fn((2, 3, 4, 4, 3), |(n, t, y, x, c)| ((n * 50 + t * 20 + y * 7 + x * 3 + c) % 256) as u8);
        let clips = Clips::new(pixels, vec![0, 1]);
        let x = clips_to_tensor(&clips, &Device::flex());
        assert_eq!(x.dims(), [2, 3, 3, 4, 4]);
        // Channel 1 of frame 2, pixel (y = 1, x = 3) of clip 1, in [−1, 1].
        let v: f32 = x.clone().slice([1..2, 2..3, 1..2, 1..2, 3..4]).into_scalar();
        assert_eq!(v, clips.pixels[[1, 2, 1, 3, 1]] as f32 / 127.5 - 1.0);
        assert_eq!(tensor_to_clips(x, vec![0, 1]), clips);
    }
}
