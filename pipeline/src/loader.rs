//! Training data as stages joined by bounded queues, off the training thread:
//! shard reader + augmentation → batcher → (training thread) device upload.
//!
//! Which record sample `p` (counted over the whole run) sees, and whether it is flipped, depend only
//! on `(seed, p)`: a resumed run sees exactly the batches the uninterrupted run would have seen.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use model3d::noise::key;
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};
use video_io::prepare::ShardDataset;

/// One training batch on the host.
pub struct Batch {
    /// `[B, T, C, H, W]` values in [−1, 1].
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
}

struct Item {
    pixels: Vec<f32>,
    label: i64,
}

pub struct Loader {
    batches: Receiver<Batch>,
    threads: Vec<JoinHandle<()>>,
}

impl Loader {
    /// Streams batches of `batch` samples starting at sample `start`.
    pub fn start(data: Arc<ShardDataset>, batch: usize, start: u64, seed: u64, flip: bool) -> Self {
        let (item_tx, item_rx) = sync_channel::<Item>(2 * batch);
        let (batch_tx, batches) = sync_channel::<Batch>(2);
        let reader = std::thread::Builder::new()
            .name("shard-reader".into())
            .spawn(move || read(&data, start, seed, flip, item_tx))
            .expect("spawn reader");
        let batcher = std::thread::Builder::new()
            .name("batcher".into())
            .spawn(move || {
                loop {
                    let mut b = Batch { pixels: Vec::new(), labels: Vec::with_capacity(batch) };
                    for _ in 0..batch {
                        let Ok(item) = item_rx.recv() else { return };
                        b.pixels.extend_from_slice(&item.pixels);
                        b.labels.push(item.label);
                    }
                    if batch_tx.send(b).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn batcher");
        Self { batches, threads: vec![reader, batcher] }
    }

    /// The next batch; blocks while the stages catch up.
    pub fn next(&self) -> Batch {
        self.batches.recv().expect("data stages run until the loader is dropped")
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the last queue stops the batcher, whose closed queue stops the reader.
        let (_, closed) = sync_channel(0);
        drop(std::mem::replace(&mut self.batches, closed));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
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

fn read(data: &ShardDataset, start: u64, seed: u64, flip: bool, out: SyncSender<Item>) {
    let layout = data.layout();
    let (t, h, w, c) = (layout.frames as usize, layout.height as usize, layout.width as usize, layout.channels as usize);
    let mut order = Order::new(data.len(), seed);
    for p in start.. {
        let (record, _) = data.get(order.index(p));
        let mirrored = flip && key(&[seed, p, 0xF1]) & 1 == 1;
        let mut pixels = vec![0f32; t * c * h * w];
        to_network_layout(record.pixels, [t, h, w, c], mirrored, &mut pixels);
        if out.send(Item { pixels, label: record.label as i64 }).is_err() {
            return;
        }
    }
}

/// Stored `[T, H, W, C]` bytes → `[T, C, H, W]` values in [−1, 1], optionally mirrored
/// left-right, written into `out`.
pub fn to_network_layout(bytes: &[u8], [t, h, w, c]: [usize; 4], mirrored: bool, out: &mut [f32]) {
    for f in 0..t {
        for y in 0..h {
            for x in 0..w {
                let sx = if mirrored { w - 1 - x } else { x };
                for ch in 0..c {
                    out[((f * c + ch) * h + y) * w + x] = bytes[((f * h + y) * w + sx) * c + ch] as f32 / 127.5 - 1.0;
                }
            }
        }
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
