//! Rotary position embeddings: one table of cosines and sines, applied in
//! place on projected rows (fused path) or through candle's rope kernels
//! (reference path).

use candle_core::{Device, Result, Tensor};

/// cos/sin of every position × frequency, as host values and as tensors.
#[derive(Debug, Clone)]
pub struct Rope {
    /// `[positions][d/2]` row-major.
    cos: Vec<f32>,
    sin: Vec<f32>,
    cos_t: Tensor,
    sin_t: Tensor,
    half: usize,
    interleaved: bool,
}

impl Rope {
    /// The table for heads of width `d` and `positions` positions.
    pub fn new(
        d: usize,
        theta: f32,
        positions: usize,
        interleaved: bool,
        device: &Device,
    ) -> Result<Self> {
        let half = d / 2;
        let freqs: Vec<f32> = (0..half)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / d as f32))
            .collect();
        let angles: Vec<f32> = (0..positions)
            .flat_map(|p| freqs.iter().map(move |f| p as f32 * f))
            .collect();
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        Ok(Self {
            cos_t: Tensor::from_slice(&cos, (positions, half), device)?,
            sin_t: Tensor::from_slice(&sin, (positions, half), device)?,
            cos,
            sin,
            half,
            interleaved,
        })
    }

    /// Positions the table covers.
    pub fn positions(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }

    /// Rotates `[B, H, S, d]` (contiguous) for positions `start..start + S`.
    pub fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let s = x.dim(2)?;
        let cos = self.cos_t.narrow(0, start, s)?;
        let sin = self.sin_t.narrow(0, start, s)?;
        self.rotate(x, &cos, &sin)
    }

    /// Rotates `[B, H, S, d]` (contiguous) with row `s` at position
    /// `positions[s]` (a `[S]` u32 tensor on the table's device).
    pub fn apply_at(&self, x: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let cos = self.cos_t.index_select(positions, 0)?;
        let sin = self.sin_t.index_select(positions, 0)?;
        self.rotate(x, &cos, &sin)
    }

    /// Moves rotated `[B, H, S, d]` rows (contiguous) to other positions on
    /// their device: row `s`, rotated for `from[s]`, is rotated by
    /// `to[s] − from[s]` (either sign), as [`Self::shift_rows`] does on the host.
    pub fn shift(&self, x: &Tensor, (from, to): (&[usize], &[usize])) -> Result<Tensor> {
        let device = x.device();
        let steps: Vec<u32> = from
            .iter()
            .zip(to)
            .map(|(f, t)| f.abs_diff(*t) as u32)
            .collect();
        let signs: Vec<f32> = from
            .iter()
            .zip(to)
            .map(|(f, t)| if t < f { -1.0 } else { 1.0 })
            .collect();
        let steps = Tensor::from_vec(steps, from.len(), device)?;
        let signs = Tensor::from_vec(signs, (from.len(), 1), device)?;
        let cos = self.cos_t.index_select(&steps, 0)?;
        let sin = self.sin_t.index_select(&steps, 0)?.broadcast_mul(&signs)?;
        self.rotate(x, &cos, &sin)
    }

    /// candle's rope kernel in this table's layout, with per-row `[S, d/2]`
    /// cosines and sines.
    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        if self.interleaved {
            candle_nn::rotary_emb::rope_i(x, cos, sin)
        } else {
            candle_nn::rotary_emb::rope(x, cos, sin)
        }
    }

    /// Rotates, in place, the `heads` head blocks of width `d` starting at
    /// column `offset` of every row of `rows` (row `r` is at position
    /// `start + r`; rows are `stride` apart).
    pub fn apply_rows(
        &self,
        rows: &mut [f32],
        stride: usize,
        (offset, heads): (usize, usize),
        start: usize,
    ) {
        for (r, row) in rows.chunks_mut(stride).enumerate() {
            self.rotate_row(row, (offset, heads), start + r, false);
        }
    }

    /// [`Self::apply_rows`] with each row's own position: row `r` is at
    /// `positions[r]`.
    pub fn apply_rows_at(
        &self,
        rows: &mut [f32],
        stride: usize,
        heads: (usize, usize),
        positions: &[usize],
    ) {
        for (row, &at) in rows.chunks_mut(stride).zip(positions) {
            self.rotate_row(row, heads, at, false);
        }
    }

    /// Moves rotated rows to other positions: row `r`, rotated for position
    /// `from[r]`, is rotated by `to[r] − from[r]` (either sign), which equals
    /// rotating the unrotated row for `to[r]` up to rounding.
    pub fn shift_rows(
        &self,
        rows: &mut [f32],
        stride: usize,
        heads: (usize, usize),
        (from, to): (&[usize], &[usize]),
    ) {
        for ((row, &from), &to) in rows.chunks_mut(stride).zip(from).zip(to) {
            if from != to {
                self.rotate_row(row, heads, from.abs_diff(to), to < from);
            }
        }
    }

    /// Rotates one row's head blocks by the angles of position `at`
    /// (backwards when `inverse`).
    fn rotate_row(
        &self,
        row: &mut [f32],
        (offset, heads): (usize, usize),
        at: usize,
        inverse: bool,
    ) {
        let (half, d) = (self.half, 2 * self.half);
        let base = at * half;
        let (cos, sin) = (&self.cos[base..base + half], &self.sin[base..base + half]);
        let sign = if inverse { -1.0 } else { 1.0 };
        for h in 0..heads {
            let x = &mut row[offset + h * d..offset + (h + 1) * d];
            for i in 0..half {
                let (a, b) = if self.interleaved {
                    (2 * i, 2 * i + 1)
                } else {
                    (i, i + half)
                };
                let (x0, x1, s) = (x[a], x[b], sign * sin[i]);
                x[a] = x0 * cos[i] - x1 * s;
                x[b] = x0 * s + x1 * cos[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_rotation_matches_candles_kernels_in_both_layouts() {
        let (b, h, s, d) = (1, 2, 5, 8);
        let x = Tensor::randn(0f32, 1.0, (b, h, s, d), &Device::Cpu).unwrap();
        for interleaved in [true, false] {
            let rope = Rope::new(d, 10_000.0, 16, interleaved, &Device::Cpu).unwrap();
            let want = rope.apply(&x, 3).unwrap();
            // The same values as rows [S, H·d].
            let mut rows = x
                .transpose(1, 2)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            rope.apply_rows(&mut rows, h * d, (0, h), 3);
            let want = want
                .transpose(1, 2)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let diff = rows
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-5, "interleaved {interleaved}: {diff}");
        }
    }

    #[test]
    fn shifting_rotated_rows_equals_rotating_at_the_new_position() {
        let (h, d) = (2, 8);
        let x = Tensor::randn(0f32, 1.0, (3, h * d), &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for interleaved in [true, false] {
            let rope = Rope::new(d, 10_000.0, 64, interleaved, &Device::Cpu).unwrap();
            let (from, to) = ([0, 40, 7], [30, 2, 7]);
            let mut shifted = x.clone();
            rope.apply_rows_at(&mut shifted, h * d, (0, h), &from);
            rope.shift_rows(&mut shifted, h * d, (0, h), (&from, &to));
            let mut want = x.clone();
            rope.apply_rows_at(&mut want, h * d, (0, h), &to);
            let diff = shifted
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-5, "interleaved {interleaved}: {diff}");
        }
    }
}
