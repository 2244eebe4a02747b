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
        if self.interleaved {
            candle_nn::rotary_emb::rope_i(x, &cos, &sin)
        } else {
            candle_nn::rotary_emb::rope(x, &cos, &sin)
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
        let (half, d) = (self.half, 2 * self.half);
        for (r, row) in rows.chunks_mut(stride).enumerate() {
            let at = (start + r) * half;
            let (cos, sin) = (&self.cos[at..at + half], &self.sin[at..at + half]);
            for h in 0..heads {
                let x = &mut row[offset + h * d..offset + (h + 1) * d];
                for i in 0..half {
                    let (a, b) = if self.interleaved {
                        (2 * i, 2 * i + 1)
                    } else {
                        (i, i + half)
                    };
                    let (x0, x1) = (x[a], x[b]);
                    x[a] = x0 * cos[i] - x1 * sin[i];
                    x[b] = x0 * sin[i] + x1 * cos[i];
                }
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
}
