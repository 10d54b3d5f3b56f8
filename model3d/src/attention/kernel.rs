//! FlashAttention-2 (Dao 2023) on the CPU for one head at a time, in f32: the forward pass keeps
//! only the output and each row's log-sum-exp (Alg. 1), the backward pass recomputes the scores
//! block by block from them (Alg. 2), so memory grows with `N·d`, never `N²`. The block products
//! run through [`crate::cpu::matmul`] (the `gemm` crate, as burn-flex's matmul); the row loops between
//! them (maximum, `exp`, sums) are written so the compiler vectorises them, and both passes are
//! compiled a second time for AVX2 and FMA, taken when the CPU has them ([`crate::cpu`]).
//!
//! Every matrix is row-major: `q` `[n_q, d]`, `k` and `v` `[n_k, d]`, `o` `[n_q, d]`, `lse` `[n_q]`.

use crate::cpu::{LANES, exp, matmul, wide};

/// Rows of queries and of keys per block: 128 was the fastest of 64 to 512 for tiny_video's
/// heads (1024 tokens, d = 16; BENCHMARKS.md); a block of scores is 64 KiB, within L2.
pub const BLOCK: usize = 128;

/// The largest of `init` and the row's values.
#[inline(always)]
fn row_max(row: &[f32], init: f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(init, |a, &x| a.max(x));
    for chunk in chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a = a.max(x);
        }
    }
    acc.iter().fold(tail, |a, &x| a.max(x))
}

/// `row[j] = e^(row[j] − shift)`; returns their sum. Two loops, so that each vectorises.
#[inline(always)]
fn exp_shifted(row: &mut [f32], shift: f32) -> f32 {
    row.iter_mut().for_each(|x| *x = exp(*x - shift));
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder().iter().sum::<f32>();
    for chunk in chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a += x;
        }
    }
    tail + acc.iter().sum::<f32>()
}

wide!(
    /// One head's forward pass: `o = softmax(scale · q kᵀ) v`, and `lse[i] = log Σ_j exp(scale q_i·k_j)`.
    pub fn forward = forward_body(q: &[f32], k: &[f32], v: &[f32], shape: [usize; 3], scale: f32, o: &mut [f32], lse: &mut [f32])
);
wide!(
    /// One head's backward pass from the output gradient `d_o`: recomputes `P = exp(scale·q kᵀ − lse)`
    /// per block and accumulates `dv = Pᵀ d_o`, `dq = scale·dS k`, `dk = scale·dSᵀ q`, with
    /// `dS = P ∘ (d_o vᵀ − rowsum(d_o ∘ o))`.
    pub fn backward = backward_body(inputs: [&[f32]; 5], lse: &[f32], shape: [usize; 3], scale: f32, dq: &mut [f32], dk: &mut [f32], dv: &mut [f32])
);

/// The body of [`forward`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_body(q: &[f32], k: &[f32], v: &[f32], [n_q, n_k, d]: [usize; 3], scale: f32, o: &mut [f32], lse: &mut [f32]) {
    // Scratch no larger than the head needs: temporal attention calls this for thousands of
    // 16-token heads a step.
    let mut s = vec![0f32; BLOCK.min(n_q) * BLOCK.min(n_k)];
    let (mut m, mut l) = ([0f32; BLOCK], [0f32; BLOCK]);
    for i0 in (0..n_q).step_by(BLOCK) {
        let br = BLOCK.min(n_q - i0);
        let acc = &mut o[i0 * d..(i0 + br) * d];
        acc.fill(0.0);
        m[..br].fill(f32::NEG_INFINITY);
        l[..br].fill(0.0);
        for j0 in (0..n_k).step_by(BLOCK) {
            let bc = BLOCK.min(n_k - j0);
            matmul(&mut s, &q[i0 * d..], false, &k[j0 * d..], true, [br, bc, d], scale, false); // S = scale·Q_i K_jᵀ
            // Online softmax: rescale what was summed under the old row maximum.
            for r in 0..br {
                let row = &mut s[r * bc..(r + 1) * bc];
                let m_new = row_max(row, m[r]);
                let correction = exp(m[r] - m_new);
                l[r] = l[r] * correction + exp_shifted(row, m_new);
                if correction != 1.0 {
                    acc[r * d..(r + 1) * d].iter_mut().for_each(|a| *a *= correction);
                }
                m[r] = m_new;
            }
            matmul(acc, &s, false, &v[j0 * d..], false, [br, d, bc], 1.0, true); // O_i += P V_j
        }
        for r in 0..br {
            let inv = 1.0 / l[r];
            acc[r * d..(r + 1) * d].iter_mut().for_each(|a| *a *= inv);
            lse[i0 + r] = m[r] + l[r].ln();
        }
    }
}

/// The body of [`backward`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_body(
    [q, k, v, o, d_o]: [&[f32]; 5],
    lse: &[f32],
    [n_q, n_k, d]: [usize; 3],
    scale: f32,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let delta: Vec<f32> = (0..n_q).map(|i| d_o[i * d..(i + 1) * d].iter().zip(&o[i * d..(i + 1) * d]).map(|(a, b)| a * b).sum()).collect();
    let block = BLOCK.min(n_q) * BLOCK.min(n_k);
    let (mut p, mut ds) = (vec![0f32; block], vec![0f32; block]);
    dq.fill(0.0);
    for j0 in (0..n_k).step_by(BLOCK) {
        let bc = BLOCK.min(n_k - j0);
        let (dk_j, dv_j) = (&mut dk[j0 * d..(j0 + bc) * d], &mut dv[j0 * d..(j0 + bc) * d]);
        dk_j.fill(0.0);
        dv_j.fill(0.0);
        for i0 in (0..n_q).step_by(BLOCK) {
            let br = BLOCK.min(n_q - i0);
            matmul(&mut p, &q[i0 * d..], false, &k[j0 * d..], true, [br, bc, d], scale, false);
            for r in 0..br {
                exp_shifted(&mut p[r * bc..(r + 1) * bc], lse[i0 + r]);
            }
            matmul(dv_j, &p, true, &d_o[i0 * d..], false, [bc, d, br], 1.0, true); // dV_j += Pᵀ dO_i
            matmul(&mut ds, &d_o[i0 * d..], false, &v[j0 * d..], true, [br, bc, d], 1.0, false); // dP = dO_i V_jᵀ
            for r in 0..br {
                for c in 0..bc {
                    ds[r * bc + c] = p[r * bc + c] * (ds[r * bc + c] - delta[i0 + r]);
                }
            }
            matmul(&mut dq[i0 * d..], &ds, false, &k[j0 * d..], false, [br, d, bc], scale, true); // dQ_i += scale dS K_j
            matmul(dk_j, &ds, true, &q[i0 * d..], false, [bc, d, br], scale, true); // dK_j += scale dSᵀ Q_i
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain softmax attention for one head, in f64.
    fn reference(q: &[f32], k: &[f32], v: &[f32], [n_q, n_k, d]: [usize; 3], scale: f32) -> (Vec<f64>, Vec<f64>) {
        let mut o = vec![0f64; n_q * d];
        let mut lse = vec![0f64; n_q];
        for i in 0..n_q {
            let s: Vec<f64> = (0..n_k).map(|j| scale as f64 * (0..d).map(|c| q[i * d + c] as f64 * k[j * d + c] as f64).sum::<f64>()).collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            lse[i] = m + z.ln();
            for j in 0..n_k {
                for c in 0..d {
                    o[i * d + c] += (s[j] - lse[i]).exp() * v[j * d + c] as f64;
                }
            }
        }
        (o, lse)
    }

    fn values(n: usize, seed: u64, spread: f32) -> Vec<f32> {
        crate::noise::gaussian(seed, n).into_iter().map(|x| x * spread).collect()
    }

    #[test]
    fn forward_matches_plain_softmax_across_block_edges_and_large_scores() {
        // The dispatched pass (AVX2 where the CPU has it) and the baseline build of the same body.
        let passes: [(&str, fn(&[f32], &[f32], &[f32], [usize; 3], f32, &mut [f32], &mut [f32])); 2] = [("dispatched", forward), ("baseline", forward_body)];
        let cases = [(1, 1, 8, 1.0), (70, 130, 16, 1.0), (200, 300, 16, 1.0), (128, 128, 32, 1.0), (5, 200, 8, 30.0)];
        for ((n_q, n_k, d, spread), (pass, run)) in cases.into_iter().flat_map(|c| passes.map(|p| (c, p))) {
            let (q, k, v) = (values(n_q * d, 1, spread), values(n_k * d, 2, spread), values(n_k * d, 3, 1.0));
            let scale = 1.0 / (d as f32).sqrt();
            let (mut o, mut lse) = (vec![0f32; n_q * d], vec![0f32; n_q]);
            run(&q, &k, &v, [n_q, n_k, d], scale, &mut o, &mut lse);
            let (ro, rl) = reference(&q, &k, &v, [n_q, n_k, d], scale);
            let err = o.iter().zip(&ro).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            let lse_err = lse.iter().zip(&rl).map(|(a, b)| ((*a as f64 - b) / b.abs().max(1.0)).abs()).fold(0.0, f64::max);
            assert!(err < 1e-5 && lse_err < 1e-6, "{pass}: n_q {n_q} n_k {n_k} d {d} spread {spread}: {err} {lse_err}");
            assert!(lse.iter().all(|x| x.is_finite()));
        }
    }

    #[test]
    fn row_reductions_match_sequential_ones_at_every_length() {
        for n in [1, 7, 8, 9, 64, 70] {
            let row = values(n, n as u64, 3.0);
            let max = row.iter().fold(-1.0f32, |a, &x| a.max(x));
            assert_eq!(row_max(&row, -1.0), max, "n {n}");
            let mut shifted = row.clone();
            let sum = exp_shifted(&mut shifted, max);
            let expect: Vec<f64> = row.iter().map(|&x| ((x - max) as f64).exp()).collect();
            assert!(shifted.iter().zip(&expect).all(|(a, b)| (*a as f64 - b).abs() <= 3e-7 * b), "n {n}");
            assert!((sum as f64 - expect.iter().sum::<f64>()).abs() < 1e-6 * n as f64, "n {n}: {sum}");
        }
    }
}
