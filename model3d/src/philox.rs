//! Counter-based random numbers on the device: Philox-4x32-10 (Salmon, Moraes, Dror & Shaw 2011,
//! "Parallel random numbers: as easy as 1, 2, 3", §3.2), written in burn integer tensor ops so
//! noise is made where the tensors live, with no upload. Every output is a pure function of its
//! counter and key: normal `e` of clip `i` in stream `s` under seed `k` is the same whatever the
//! batch, the batch size or the device.
//!
//! The 32×32→64-bit products are split into 16-bit halves, so every intermediate stays below
//! 2^35 in i64 tensors: no overflow on any backend (CUDA's signed overflow is undefined, and
//! burn-flex checks overflow in debug builds). The integers are bit-identical on every backend;
//! the Box–Muller transform then runs in f32 with the backend's `ln`, `cos` and `sin`.

use burn::prelude::*;
use burn::tensor::DType;

const M0: u64 = 0xD251_1F53;
const M1: u64 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;
const ROUNDS: usize = 10;
const MASK: i64 = 0xFFFF_FFFF;

/// Philox-4x32-10 of one counter under one key, on the host.
pub fn philox4x32(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for _ in 0..ROUNDS {
        let p0 = M0 * c[0] as u64;
        let p1 = M1 * c[2] as u64;
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// Where a stream of normals comes from: the run's seed, the clip's global index, and what the
/// noise is for (a step of training or of sampling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    pub seed: u64,
    pub stream: u64,
}

impl Stream {
    fn key(self) -> [u32; 2] {
        [self.seed as u32, (self.seed >> 32) as u32]
    }

    /// Counter of block `j` of clip `i`.
    fn counter(self, i: u64, j: u64) -> [u32; 4] {
        [j as u32, i as u32, self.stream as u32, (self.stream >> 32) as u32]
    }

    /// The normals of clips `first..first + clips`, `per_clip` each, on the host (f64 maths).
    pub fn normals_host(self, first: u64, clips: usize, per_clip: usize) -> Vec<f32> {
        let blocks = per_clip.div_ceil(4);
        let mut out = Vec::with_capacity(clips * per_clip);
        for i in first..first + clips as u64 {
            let row: Vec<f32> = (0..blocks as u64).flat_map(|j| box_muller(philox4x32(self.counter(i, j), self.key()))).collect();
            out.extend_from_slice(&row[..per_clip]);
        }
        out
    }

    /// The same normals computed on `device`: `[clips, per_clip]`.
    pub fn normals(self, first: u64, clips: usize, per_clip: usize, device: &Device) -> Tensor<2> {
        let blocks = per_clip.div_ceil(4);
        let bits = self.bits(first, clips, blocks, device); // 4 × [clips, blocks]
        let unit = |x: Tensor<2, Int>, offset: f64| x.bitwise_right_shift_scalar(8).float().add_scalar(offset).mul_scalar(1.0 / 16_777_216.0);
        let [x0, x1, x2, x3] = bits;
        let pairs = [(unit(x0, 1.0), unit(x1, 0.0)), (unit(x2, 1.0), unit(x3, 0.0))];
        let mut z = Vec::with_capacity(4);
        for (u1, u2) in pairs {
            let r = u1.log().mul_scalar(-2.0).sqrt();
            let angle = u2.mul_scalar(std::f64::consts::TAU);
            z.push(r.clone() * angle.clone().cos());
            z.push(r * angle.sin());
        }
        Tensor::stack::<3>(z, 2).reshape([clips, blocks * 4]).narrow(1, 0, per_clip)
    }

    /// The four output words of every counter, `[clips, blocks]` each, as i64 below 2^32.
    pub fn bits(self, first: u64, clips: usize, blocks: usize, device: &Device) -> [Tensor<2, Int>; 4] {
        let i64s = (device, DType::I64);
        let column = |values: Vec<i64>, n: usize| Tensor::<1, Int>::from_data(TensorData::new(values, [n]), i64s);
        let j = column((0..blocks as i64).collect(), blocks).reshape([1, blocks]).expand([clips, blocks]);
        let i = column((0..clips as u64).map(|c| ((first + c) & MASK as u64) as i64).collect(), clips).reshape([clips, 1]).expand([clips, blocks]);
        let full = |v: u64| Tensor::<2, Int>::full([clips, blocks], v as i64, i64s);
        let mut c = [j, i, full(self.stream & MASK as u64), full(self.stream >> 32)];
        let mut k = self.key();
        for _ in 0..ROUNDS {
            let [c0, c1, c2, c3] = c;
            let (hi0, lo0) = mulhilo(c0, M0);
            let (hi1, lo1) = mulhilo(c2, M1);
            c = [hi1.bitwise_xor(c1).bitwise_xor_scalar(k[0] as i64), lo1, hi0.bitwise_xor(c3).bitwise_xor_scalar(k[1] as i64), lo0];
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        c
    }
}

/// `(hi, lo)` 32-bit halves of `a · m` for `a < 2^32`, through 16-bit partial products.
fn mulhilo(a: Tensor<2, Int>, m: u64) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let (m_lo, m_hi) = ((m & 0xFFFF) as i64, (m >> 16) as i64);
    let (a_lo, a_hi) = (a.clone().bitwise_and_scalar(0xFFFF), a.bitwise_right_shift_scalar(16));
    let mid = a_hi.clone().mul_scalar(m_lo) + a_lo.clone().mul_scalar(m_hi); // < 2^33
    let low = a_lo.mul_scalar(m_lo) + mid.clone().bitwise_and_scalar(0xFFFF).bitwise_left_shift_scalar(16); // < 2^33
    let hi = a_hi.mul_scalar(m_hi) + mid.bitwise_right_shift_scalar(16) + low.clone().bitwise_right_shift_scalar(32);
    (hi.bitwise_and_scalar(MASK), low.bitwise_and_scalar(MASK))
}

/// Four normals from four words: two Box–Muller pairs, `u1 = (x >> 8 + 1)/2^24 ∈ (0, 1]`,
/// `u2 = (x >> 8)/2^24 ∈ [0, 1)`, `z = √(−2 ln u1) (cos 2πu2, sin 2πu2)`.
fn box_muller(x: [u32; 4]) -> [f32; 4] {
    let unit = |v: u32, offset: f64| ((v >> 8) as f64 + offset) / 16_777_216.0;
    let pair = |a: u32, b: u32| {
        let r = (-2.0 * unit(a, 1.0).ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * unit(b, 0.0)).sin_cos();
        [(r * c) as f32, (r * s) as f32]
    };
    let ([z0, z1], [z2, z3]) = (pair(x[0], x[1]), pair(x[2], x[3]));
    [z0, z1, z2, z3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers_of_philox4x32_10() {
        // The known-answer vectors Random123 ships (kat_vectors, "philox4x32 10").
        assert_eq!(philox4x32([0; 4], [0; 2]), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
        assert_eq!(philox4x32([u32::MAX; 4], [u32::MAX; 2]), [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]);
        assert_eq!(
            philox4x32([0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344], [0xa409_3822, 0x299f_31d0]),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn device_words_equal_the_host_words_bit_for_bit() {
        let device = Device::flex();
        let stream = Stream { seed: 0xFFFF_FFFF_1234_5678, stream: (7 << 32) | 3 };
        let (first, clips, blocks) = (u32::MAX as u64 - 1, 3, 5); // clip indices wrap past 2^32
        let words = stream.bits(first, clips, blocks, &device).map(|t| t.into_data().convert::<i64>().try_into_vec::<i64>().unwrap());
        for c in 0..clips {
            for j in 0..blocks {
                let host = philox4x32(stream.counter(first + c as u64, j as u64), stream.key());
                for w in 0..4 {
                    assert_eq!(words[w][c * blocks + j], host[w] as i64, "clip {c} block {j} word {w}");
                }
            }
        }
    }

    #[test]
    fn device_normals_match_the_host_and_are_standard() {
        let device = Device::flex();
        let stream = Stream { seed: 42, stream: 9 };
        let ours = stream.normals(100, 2, 10_001, &device).into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        let host = stream.normals_host(100, 2, 10_001);
        let err = ours.iter().zip(&host).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err < 2e-5, "{err}");
        // Clip 101's noise does not depend on which clips share its batch.
        let alone = stream.normals_host(101, 1, 10_001);
        assert_eq!(&host[10_001..], &alone[..]);
        let n = host.len() as f64;
        let mean = host.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = host.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.03, "{mean} {var}");
    }
}
