//! Training the judge: AdamW with a linear warm-up and a linear decay to zero over the run, label
//! smoothing 0.1, and the usual CIFAR augmentation (He et al. 2016, §4.2): a random shift of up
//! to `size / 8` pixels with zero padding and a random horizontal flip.

use anyhow::Result;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use ndarray::{Array4, ArrayView4, s};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng, rngs::StdRng};
use video_io::prepare::ShardDataset;

use super::network::{Judge, JudgeShape};
use super::classify;

/// How a judge is trained.
#[derive(Clone, Debug)]
pub struct Recipe {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

/// What one epoch reached.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    /// On the test split, when one was given.
    pub test_accuracy: Option<f64>,
    pub seconds: f64,
}

/// Images `[N, H, W, 3]` of a shard folder with one frame per record, and their labels.
pub struct Images {
    pub pixels: Array4<u8>,
    pub labels: Vec<usize>,
}

impl Images {
    pub fn load(data: &ShardDataset) -> Self {
        let clips = data.clips(0..data.len());
        let (n, _, h, w, c) = clips.pixels.dim();
        let pixels = clips.pixels.into_shape_with_order((n, h, w, c)).expect("one frame per record");
        Self { pixels, labels: clips.labels.iter().map(|&l| l as usize).collect() }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// `[N, H, W, 3]` bytes as `[N, 3, H, W]` values in [−1, 1] (the diffusion network's scaling).
pub fn to_input(images: ArrayView4<'_, u8>, device: &Device) -> Tensor<4> {
    let (n, h, w, c) = images.dim();
    let values: Vec<f32> = images.permuted_axes([0, 3, 1, 2]).iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
    Tensor::from_data(TensorData::new(values, [n, c, h, w]), device)
}

/// Image `i` shifted by `(dy, dx)` (the pixels shifted in are black, value −1 after scaling)
/// and mirrored when `flip`.
fn augmented(image: ndarray::ArrayView3<'_, u8>, dy: isize, dx: isize, flip: bool) -> ndarray::Array3<u8> {
    let (h, w, c) = image.dim();
    let mut out = ndarray::Array3::<u8>::zeros((h, w, c));
    for y in 0..h as isize {
        let sy = y + dy;
        if !(0..h as isize).contains(&sy) {
            continue;
        }
        for x in 0..w as isize {
            let sx = if flip { w as isize - 1 - (x + dx) } else { x + dx };
            if (0..w as isize).contains(&sx) {
                out.slice_mut(s![y, x, ..]).assign(&image.slice(s![sy, sx, ..]));
            }
        }
    }
    out
}

/// Trains a judge of `shape` on `train`; scores `test` after every epoch when given.
/// `on_epoch` sees each epoch's record as it ends.
pub fn fit(shape: &JudgeShape, recipe: &Recipe, train: &Images, test: Option<&Images>, device: &Device, mut on_epoch: impl FnMut(&EpochRecord)) -> Result<(Judge, Vec<EpochRecord>)> {
    let device = device.clone().autodiff();
    device.seed(recipe.seed);
    let mut judge = Judge::new(shape, &device);
    let mut optim = AdamWConfig::new().with_weight_decay(recipe.weight_decay as f32).init();
    let loss_fn = CrossEntropyLossConfig::new().with_smoothing(Some(0.1)).init(&device);
    let mut rng = StdRng::seed_from_u64(recipe.seed);
    let (n, b) = (train.len(), recipe.batch);
    let steps_per_epoch = n.div_ceil(b);
    let total = (recipe.epochs * steps_per_epoch) as f64;
    let warmup = steps_per_epoch as f64 / 2.0;
    let shift = (shape.size / 8) as i32;
    let mut history = Vec::new();
    let mut step = 0usize;
    for epoch in 1..=recipe.epochs {
        let started = std::time::Instant::now();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct) = (0.0, 0usize);
        for chunk in order.chunks(b) {
            let batch: Vec<ndarray::Array3<u8>> = chunk
                .iter()
                .map(|&i| augmented(train.pixels.index_axis(ndarray::Axis(0), i), (rng.random_range(0..=2 * shift) - shift) as isize, (rng.random_range(0..=2 * shift) - shift) as isize, rng.random_bool(0.5)))
                .collect();
            let views: Vec<_> = batch.iter().map(|a| a.view()).collect();
            let pixels = ndarray::stack(ndarray::Axis(0), &views).expect("images of one size");
            let labels: Vec<i64> = chunk.iter().map(|&i| train.labels[i] as i64).collect();
            let targets = Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [chunk.len()]), &device);
            let (logits, _) = judge.forward(to_input(pixels.view(), &device));
            let loss = loss_fn.forward(logits.clone(), targets);
            let predicted = logits.argmax(1).into_data().convert::<i64>().try_into_vec::<i64>().expect("i64 values");
            correct += predicted.iter().zip(&labels).filter(|(p, l)| p == l).count();
            loss_sum += loss.clone().into_scalar::<f64>() * chunk.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &judge);
            // Linear warm-up over half an epoch, then linear decay to zero at the end.
            let s = step as f64 + 1.0;
            let lr = recipe.lr * (s / warmup).min(1.0) * ((total - s + 1.0) / (total - warmup).max(1.0)).min(1.0);
            judge = optim.step(lr, judge, grads);
            step += 1;
        }
        let test_accuracy = test.map(|t| classify::accuracy(&judge.valid(), t, 256, &device.clone().inner()));
        let record = EpochRecord { epoch, train_loss: loss_sum / n as f64, train_accuracy: correct as f64 / n as f64, test_accuracy, seconds: started.elapsed().as_secs_f64() };
        on_epoch(&record);
        history.push(record);
    }
    Ok((judge.valid(), history))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shift_moves_pixels_and_pads_with_black() {
        let image = ndarray::Array3::from_shape_fn((4, 4, 3), |(y, x, c)| (1 + y * 16 + x * 4 + c) as u8);
        let shifted = augmented(image.view(), 1, -1, false);
        // Output (y, x) reads input (y + 1, x − 1).
        assert_eq!(shifted[[0, 1, 0]], image[[1, 0, 0]]);
        assert_eq!(shifted.slice(s![.., 0, ..]).iter().all(|&v| v == 0), true, "column 0 reads x = −1");
        assert_eq!(shifted.slice(s![3, .., ..]).iter().all(|&v| v == 0), true, "row 3 reads y = 4");
        let mirrored = augmented(image.view(), 0, 0, true);
        assert_eq!(mirrored[[2, 0, 1]], image[[2, 3, 1]]);
    }
}
