//! FlashAttention-2 (Dao 2023) on the CPU for one head at a time, in f32: the forward pass keeps
//! only the output and each row's log-sum-exp (Alg. 1), the backward pass recomputes the scores
//! block by block from them (Alg. 2), so memory grows with `N·d`, never `N²`. The block products
//! run through the `gemm` crate (the kernels burn-flex's own matmul uses).
//!
//! Every matrix is row-major: `q` `[n_q, d]`, `k` and `v` `[n_k, d]`, `o` `[n_q, d]`, `lse` `[n_q]`.

use gemm::Parallelism;

/// Rows of queries and of keys per block.
pub const BLOCK: usize = 64;

/// `c[m×n] = (c if accumulate, else 0) + alpha · op(a) · op(b)`, with `op(x) = xᵀ` when asked:
/// `a` holds `[m, kk]` (or `[kk, m]` when transposed), `b` `[kk, n]` (or `[n, kk]`).
#[allow(clippy::too_many_arguments)]
fn matmul(c: &mut [f32], a: &[f32], a_t: bool, b: &[f32], b_t: bool, [m, n, kk]: [usize; 3], alpha: f32, accumulate: bool) {
    assert!(c.len() >= m * n && a.len() >= m * kk && b.len() >= kk * n, "block sizes");
    let (a_rs, a_cs) = if a_t { (1, m) } else { (kk, 1) };
    let (b_rs, b_cs) = if b_t { (1, kk) } else { (n, 1) };
    // SAFETY: the assertion above keeps every access inside the three slices, `c` is borrowed
    // mutably and distinct from `a` and `b`; gemm computes dst := 1·dst + alpha·lhs·rhs.
    unsafe {
        gemm::gemm(
            m, n, kk,
            c.as_mut_ptr(), 1, n as isize, accumulate,
            a.as_ptr(), a_cs as isize, a_rs as isize,
            b.as_ptr(), b_cs as isize, b_rs as isize,
            1.0, alpha, false, false, false, Parallelism::None,
        );
    }
}

/// One head's forward pass: `o = softmax(scale · q kᵀ) v`, and `lse[i] = log Σ_j exp(scale q_i·k_j)`.
#[allow(clippy::too_many_arguments)]
pub fn forward(q: &[f32], k: &[f32], v: &[f32], [n_q, n_k, d]: [usize; 3], scale: f32, o: &mut [f32], lse: &mut [f32]) {
    let mut s = vec![0f32; BLOCK * BLOCK];
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
                let m_new = row.iter().fold(m[r], |a, &x| a.max(x));
                let correction = (m[r] - m_new).exp();
                let mut sum = 0.0;
                for x in row.iter_mut() {
                    *x = (*x - m_new).exp();
                    sum += *x;
                }
                l[r] = l[r] * correction + sum;
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

/// One head's backward pass from the output gradient `d_o`: recomputes `P = exp(scale·q kᵀ − lse)`
/// per block and accumulates `dv = Pᵀ d_o`, `dq = scale·dS k`, `dk = scale·dSᵀ q`, with
/// `dS = P ∘ (d_o vᵀ − rowsum(d_o ∘ o))`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    [q, k, v, o, d_o]: [&[f32]; 5],
    lse: &[f32],
    [n_q, n_k, d]: [usize; 3],
    scale: f32,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let delta: Vec<f32> = (0..n_q).map(|i| d_o[i * d..(i + 1) * d].iter().zip(&o[i * d..(i + 1) * d]).map(|(a, b)| a * b).sum()).collect();
    let (mut p, mut ds) = (vec![0f32; BLOCK * BLOCK], vec![0f32; BLOCK * BLOCK]);
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
                p[r * bc..(r + 1) * bc].iter_mut().for_each(|x| *x = (*x - lse[i0 + r]).exp());
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
        for (n_q, n_k, d, spread) in [(1, 1, 8, 1.0), (70, 130, 16, 1.0), (64, 64, 32, 1.0), (5, 200, 8, 30.0)] {
            let (q, k, v) = (values(n_q * d, 1, spread), values(n_k * d, 2, spread), values(n_k * d, 3, 1.0));
            let scale = 1.0 / (d as f32).sqrt();
            let (mut o, mut lse) = (vec![0f32; n_q * d], vec![0f32; n_q]);
            forward(&q, &k, &v, [n_q, n_k, d], scale, &mut o, &mut lse);
            let (ro, rl) = reference(&q, &k, &v, [n_q, n_k, d], scale);
            let err = o.iter().zip(&ro).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            let lse_err = lse.iter().zip(&rl).map(|(a, b)| ((*a as f64 - b) / b.abs().max(1.0)).abs()).fold(0.0, f64::max);
            assert!(err < 1e-5 && lse_err < 1e-6, "n_q {n_q} n_k {n_k} d {d} spread {spread}: {err} {lse_err}");
            assert!(lse.iter().all(|x| x.is_finite()));
        }
    }
}
