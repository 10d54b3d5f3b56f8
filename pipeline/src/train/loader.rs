//! Training data off the training thread, on tokio: each batch is read from the memory-mapped
//! shards, augmented and laid out on the blocking pool while the previous ones train; a bounded
//! channel of two batches gives back-pressure.
//!
//! Which record sample `p` (counted over the whole run) sees, and whether it is flipped, depend only
//! on `(seed, p)`: a resumed run sees exactly the batches the uninterrupted run would have seen.

use std::sync::Arc;

use anyhow::{Context, Result};
use model3d::noise::key;
use ndarray::{Array5, Axis, s};
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};
use tokio::sync::mpsc;
use video_io::clips::to_network_layout;
use video_io::prepare::ShardDataset;

/// One training batch on the host.
pub struct Batch {
    /// `[B, T, C, H, W]` values in [−1, 1].
    pub pixels: Array5<f32>,
    pub labels: Vec<i64>,
}

impl Batch {
    pub fn shape(&self) -> [usize; 5] {
        let (b, t, c, h, w) = self.pixels.dim();
        [b, t, c, h, w]
    }
}

pub struct Loader {
    batches: mpsc::Receiver<Batch>,
    /// Kept alive while batches are read; dropping it stops the reading task.
    _runtime: tokio::runtime::Runtime,
}

impl Loader {
    /// Streams batches of `batch` samples starting at sample `start`.
    pub fn start(data: Arc<ShardDataset>, batch: usize, start: u64, seed: u64, flip: bool) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .thread_name("loader")
            .build()
            .context("cannot start the data loader's runtime")?;
        let (tx, batches) = mpsc::channel(2);
        runtime.spawn(async move {
            let mut order = Order::new(data.len(), seed);
            for first in (start..).step_by(batch) {
                let data = data.clone();
                let assembled = tokio::task::spawn_blocking(move || {
                    let b = assemble(&data, &mut order, first, batch, seed, flip);
                    (b, order)
                });
                let Ok((b, returned)) = assembled.await else { return };
                order = returned;
                if tx.send(b).await.is_err() {
                    return; // the loader was dropped
                }
            }
        });
        Ok(Self { batches, _runtime: runtime })
    }

    /// The next batch; blocks while the reader catches up.
    pub fn next(&mut self) -> Result<Batch> {
        self.batches.blocking_recv().context("the data loader stopped (a shard could not be read)")
    }
}

/// The batch of samples `first..first + batch`.
fn assemble(data: &ShardDataset, order: &mut Order, first: u64, batch: usize, seed: u64, flip: bool) -> Batch {
    let [t, h, w, c] = data.layout().dims();
    let mut pixels = Array5::zeros((batch, t, c, h, w));
    let mut labels = Vec::with_capacity(batch);
    for (i, p) in (first..first + batch as u64).enumerate() {
        let (record, _) = data.get(order.index(p));
        let clip = ndarray::ArrayView4::from_shape((t, h, w, c), record.pixels).expect("records match the shard layout");
        let mirrored = flip && key(&[seed, p, 0xF1]) & 1 == 1;
        pixels.slice_mut(s![i, .., .., .., ..]).assign(&to_network_layout(clip, mirrored));
        labels.push(record.label as i64);
    }
    debug_assert_eq!(pixels.len_of(Axis(0)), labels.len());
    Batch { pixels, labels }
}

/// Record index of sample `p`: epoch `p / N` walks a permutation drawn from `(seed, epoch)`.
pub struct Order {
    seed: u64,
    epoch: Option<u64>,
    perm: Vec<usize>,
    n: usize,
}

impl Order {
    pub fn new(n: usize, seed: u64) -> Self {
        Self { seed, epoch: None, perm: Vec::new(), n }
    }

    pub fn index(&mut self, p: u64) -> usize {
        let epoch = p / self.n as u64;
        if self.epoch != Some(epoch) {
            self.perm = (0..self.n).collect();
            self.perm.shuffle(&mut StdRng::seed_from_u64(key(&[self.seed, epoch, 0x0D])));
            self.epoch = Some(epoch);
        }
        self.perm[(p % self.n as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_permutation_per_epoch_and_reproducible() {
        let mut a = Order::new(10, 3);
        let first: Vec<usize> = (0..10).map(|p| a.index(p)).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let second: Vec<usize> = (10..20).map(|p| a.index(p)).collect();
        assert_ne!(first, second);
        let mut b = Order::new(10, 3);
        assert_eq!(b.index(13), second[3]);
    }
}
