//! Feature vectors for the look-up, computed from a layer's input hidden state.
//!
//! `pooled` (parameter-free): the input `[S, D]` is cut into
//! [`SEGMENTS`] contiguous position segments; each segment's mean is L2
//! normalised and scaled by 1/√SEGMENTS, so the whole vector has unit length
//! and the cosine distance `1 − a·b` lies in [0, 2]. Position-aware: two
//! inputs are close only when their tokens are alike segment by segment.

use candle_core::{DType, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::fused::with_values;

/// Number of position segments of the pooled feature.
pub const SEGMENTS: usize = 4;

/// Which feature a database was built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureKind {
    /// Parameter-free position-segment pooling of each layer's input.
    Pooled,
    /// The pooled feature through a per-layer network trained so that
    /// feature distance predicts map distance (see `projector`).
    Projector,
}

impl FeatureKind {
    /// Parses a `--feature` value.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        match name {
            "pooled" => Ok(FeatureKind::Pooled),
            "projector" => Ok(FeatureKind::Projector),
            other => anyhow::bail!("unknown feature `{other}`: use pooled or projector"),
        }
    }

    /// Dimension of the feature for a model of hidden size `hidden`.
    pub fn dim(self, hidden: usize) -> usize {
        match self {
            FeatureKind::Pooled => SEGMENTS * hidden,
            FeatureKind::Projector => super::projector::PROJECTED_DIM,
        }
    }
}

/// The pooled feature of one input's hidden state `[1, S, D]` (or `[S, D]`).
/// A contiguous f32 CPU tensor is read in place, without a copy.
pub fn pooled_feature(hidden: &Tensor) -> Result<Vec<f32>> {
    let (s, d) = match *hidden.dims() {
        [1, s, d] | [s, d] => (s, d),
        ref other => candle_core::bail!(
            "a pooled feature needs one input's hidden state [1, S, D] or [S, D], got {other:?}"
        ),
    };
    match with_values(hidden, |values| pool(values, s, d)) {
        Ok(feature) => Ok(feature),
        // A GPU, strided or half-precision input: copied out first.
        Err(_) => {
            let values = hidden.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
            Ok(pool(&values, s, d))
        }
    }
}

/// [`pooled_feature`] of row-major `[s, d]` values.
fn pool(values: &[f32], s: usize, d: usize) -> Vec<f32> {
    let mut feature = vec![0f32; SEGMENTS * d];
    let scale = 1.0 / (SEGMENTS as f32).sqrt();
    for (k, chunk) in feature.chunks_mut(d).enumerate() {
        let (start, end) = segment(s, k);
        for row in values[start * d..end * d].chunks_exact(d) {
            for (f, x) in chunk.iter_mut().zip(row) {
                *f += x;
            }
        }
        let norm = dot(chunk, chunk).sqrt();
        if norm > 0.0 {
            chunk.iter_mut().for_each(|x| *x *= scale / norm);
        }
    }
    feature
}

/// Token range `[start, end)` of segment `k` of a length-`s` input (empty
/// when `s < SEGMENTS` leaves nothing for it).
fn segment(s: usize, k: usize) -> (usize, usize) {
    (k * s / SEGMENTS, (k + 1) * s / SEGMENTS)
}

/// Every value [`distance`] can take: a threshold outside it means nothing.
pub const DISTANCE_RANGE: std::ops::RangeInclusive<f32> = 0.0..=2.0;

/// Cosine distance `1 − a·b` of two unit-length features (rounding below 0
/// is clamped to 0).
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    (1.0 - dot(a, b)).max(0.0)
}

/// Dot product with eight independent accumulators, so the compiler can
/// vectorise it (a plain iterator sum must keep its sequential order).
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn dot_matches_the_plain_sum_for_any_length() {
        for n in [0, 1, 7, 8, 9, 31, 1536] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4, "n = {n}");
        }
    }

    #[test]
    fn segments_cover_every_token_once() {
        for s in 1..40 {
            let covered: usize = (0..SEGMENTS)
                .map(|k| segment(s, k))
                .map(|(a, b)| b - a)
                .sum();
            assert_eq!(covered, s);
            assert_eq!(segment(s, SEGMENTS - 1).1, s);
        }
    }

    #[test]
    fn feature_is_unit_length_and_position_aware() {
        let a = Tensor::new(
            &[[1f32, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]],
            &Device::Cpu,
        )
        .unwrap();
        let b = Tensor::new(
            &[[0f32, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]],
            &Device::Cpu,
        )
        .unwrap();
        let (fa, fb) = (pooled_feature(&a).unwrap(), pooled_feature(&b).unwrap());
        assert!((distance(&fa, &fa)).abs() < 1e-6);
        // Same tokens in another order: mean pooling would call them equal.
        assert!(distance(&fa, &fb) > 0.9, "{}", distance(&fa, &fb));
        let norm: f32 = fa.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_strided_or_half_input_gives_the_feature_of_its_contiguous_copy() {
        let values: Vec<f32> = (0..7 * 8).map(|i| (i as f32 * 0.3).sin()).collect();
        let x = Tensor::from_vec(values, (1, 7, 8), &Device::Cpu).unwrap();
        let expected = pooled_feature(&x).unwrap();
        // The same values, stored transposed and read through a strided view.
        let strided = x
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .transpose(1, 2)
            .unwrap();
        assert!(!strided.is_contiguous());
        assert_eq!(pooled_feature(&strided).unwrap(), expected);
        let half = x.to_dtype(candle_core::DType::F16).unwrap();
        let from_half = pooled_feature(&half).unwrap();
        assert!(distance(&from_half, &expected) < 1e-4);
        // A batch of two is not one input's state.
        let batch = Tensor::zeros((2, 7, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = pooled_feature(&batch).unwrap_err().to_string();
        assert!(err.contains("[1, S, D] or [S, D], got [2, 7, 8]"), "{err}");
    }
}
