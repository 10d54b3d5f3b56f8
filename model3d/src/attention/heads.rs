//! Where one head's rows lie in the storage of a `[B, H, N, D]` tensor. The blocks split q, k and
//! v into heads as a view of their token-major projection, `[B, N, H, D]` swapped to
//! `[B, H, N, D]`; the CPU kernels read each head from that order and write their outputs in it
//! ([`crate::cpu::dense`]), so neither the heads nor their gradients are ever copied into
//! head-major order and back.

use crate::cpu::{SharedRows, contiguous_strides};

/// The dimensions `[B, H, N, D]` of a tensor and its strides (in elements).
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub dims: [usize; 4],
    pub strides: [usize; 4],
}

impl Heads {
    /// The order to write an output of the same dimensions in: this one when its rows are runs of
    /// `D` values (any order of the other dimensions), else contiguous.
    pub fn output(&self) -> Heads {
        let strides = if self.strides[3] == 1 || self.dims[3] == 1 { self.strides } else { contiguous_strides(self.dims) };
        Heads { dims: self.dims, strides }
    }

    /// Where row `i` of head `(b, h)` starts.
    fn row(&self, b: usize, h: usize, i: usize) -> usize {
        b * self.strides[0] + h * self.strides[1] + i * self.strides[2]
    }

    /// Head `(b, h)` of `values` as `[N, D]` rows: borrowed when they lie contiguous, else
    /// gathered into `scratch`.
    pub fn read<'a>(&self, values: &'a [f32], b: usize, h: usize, scratch: &'a mut Vec<f32>) -> &'a [f32] {
        let ([_, _, n, d], step) = (self.dims, self.strides[3]);
        let start = self.row(b, h, 0);
        if (step == 1 || d == 1) && (self.strides[2] == d || n == 1) {
            return &values[start..start + n * d];
        }
        scratch.clear();
        for i in 0..n {
            let row = self.row(b, h, i);
            if step == 1 {
                scratch.extend_from_slice(&values[row..row + d]);
            } else {
                scratch.extend((0..d).map(|j| values[row + j * step]));
            }
        }
        scratch
    }

    /// Writes head `(b, h)`'s `[N, D]` rows into an output in this order (one from
    /// [`Heads::output`], whose rows are runs of `D`).
    ///
    /// # Safety
    /// No other task writes head `(b, h)` of `out` meanwhile.
    pub unsafe fn write(&self, out: &SharedRows, b: usize, h: usize, rows: &[f32]) {
        debug_assert!(self.strides[3] == 1 || self.dims[3] == 1, "an order from Heads::output");
        for (i, row) in rows.chunks_exact(self.dims[3]).enumerate() {
            // SAFETY: the rows of head (b, h) are its own (the caller's guarantee).
            unsafe { out.write(self.row(b, h, i), row) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_of_a_token_major_tensor_read_and_write_back_in_place() {
        // [B, N, H, D] = [2, 3, 4, 5] stored token-major, seen as [B, H, N, D].
        let (b, n, h, d) = (2, 3, 4, 5);
        let dims = [b, h, n, d];
        let heads = Heads { dims, strides: [n * h * d, d, h * d, 1] };
        let values: Vec<f32> = (0..b * n * h * d).map(|i| i as f32).collect();
        let mut out = vec![f32::NAN; values.len()];
        let shared = SharedRows::new(&mut out);
        let mut scratch = Vec::new();
        for (bi, hi) in (0..b).flat_map(|bi| (0..h).map(move |hi| (bi, hi))) {
            let rows = heads.read(&values, bi, hi, &mut scratch).to_vec();
            for i in 0..n {
                for j in 0..d {
                    assert_eq!(rows[i * d + j], values[((bi * n + i) * h + hi) * d + j]);
                }
            }
            // SAFETY: one head at a time.
            unsafe { heads.output().write(&shared, bi, hi, &rows) };
        }
        drop(shared);
        assert_eq!(out, values);
        // A contiguous head is borrowed as it lies.
        let contiguous = Heads { dims, strides: contiguous_strides(dims) };
        assert_eq!(contiguous.read(&values, 1, 2, &mut scratch).as_ptr(), values[(4 + 2) * n * d..].as_ptr());
    }
}
