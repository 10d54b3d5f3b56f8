//! Running a trained judge over images: its class decisions and its penultimate features.

use burn::prelude::*;
use ndarray::{ArrayView4, Axis};

use super::fit::{Images, to_input};
use super::network::Judge;

/// What the judge sees in a set of images.
pub struct Seen {
    /// `n × dim` penultimate features, row-major.
    pub features: Vec<f32>,
    pub dim: usize,
    /// The class it decides for each image.
    pub classes: Vec<usize>,
}

/// The judge over `images` `[N, H, W, 3]`, `batch` at a time, without autodiff.
pub fn see(judge: &Judge, images: ArrayView4<'_, u8>, batch: usize, device: &Device) -> Seen {
    let mut seen = Seen { features: Vec::new(), dim: 0, classes: Vec::new() };
    for start in (0..images.len_of(Axis(0))).step_by(batch) {
        let end = (start + batch).min(images.len_of(Axis(0)));
        let (logits, features) = judge.forward(to_input(images.slice_axis(Axis(0), (start..end).into()), device));
        seen.dim = features.dims()[1];
        seen.features.extend(features.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 values"));
        seen.classes.extend(logits.argmax(1).into_data().convert::<i64>().try_into_vec::<i64>().expect("i64 values").into_iter().map(|c| c as usize));
    }
    seen
}

/// The fraction of `classes` equal to `labels`.
pub fn agreement(classes: &[usize], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    classes.iter().zip(labels).filter(|(c, l)| c == l).count() as f64 / labels.len() as f64
}

/// The judge's accuracy on labelled images.
pub fn accuracy(judge: &Judge, images: &Images, batch: usize, device: &Device) -> f64 {
    agreement(&see(judge, images.pixels.view(), batch, device).classes, &images.labels)
}
