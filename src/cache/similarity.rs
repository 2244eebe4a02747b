//! Similarity of two attention maps.

use candle_core::{Result, Tensor};

/// 1 − mean over rows of the total variation distance (½·L1) between two
/// row-stochastic `s × s` maps (row-major): 1 for identical maps, 0 for maps
/// whose rows share no mass.
pub fn similarity(a: &[f32], b: &[f32], s: usize) -> f32 {
    let tv: f32 = a
        .chunks(s)
        .zip(b.chunks(s))
        .map(|(ra, rb)| 0.5 * ra.iter().zip(rb).map(|(x, y)| (x - y).abs()).sum::<f32>())
        .sum();
    1.0 - tv / (a.len() / s) as f32
}

/// Mean over rows of the Jensen–Shannon divergence (natural log, so in
/// [0, ln 2]) between two row-stochastic `s × s` maps.
pub fn js_divergence(a: &[f32], b: &[f32], s: usize) -> f32 {
    let kl_to_mid = |p: f32, m: f32| if p > 0.0 { p * (p / m).ln() } else { 0.0 };
    let total: f32 = a
        .chunks(s)
        .zip(b.chunks(s))
        .map(|(ra, rb)| {
            ra.iter()
                .zip(rb)
                .map(|(&p, &q)| {
                    let m = 0.5 * (p + q);
                    0.5 * (kl_to_mid(p, m) + kl_to_mid(q, m))
                })
                .sum::<f32>()
        })
        .sum();
    total / (a.len() / s) as f32
}

/// [`similarity`] of two `[S, S]` map tensors.
pub fn map_similarity(a: &Tensor, b: &Tensor) -> Result<f32> {
    let s = a.dim(candle_core::D::Minus1)?;
    let (a, b) = (
        a.flatten_all()?.to_vec1::<f32>()?,
        b.flatten_all()?.to_vec1::<f32>()?,
    );
    Ok(similarity(&a, &b, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_maps_are_one_and_disjoint_rows_are_zero() {
        let a = [1f32, 0.0, 0.5, 0.5];
        let b = [0f32, 1.0, 0.5, 0.5];
        assert_eq!(similarity(&a, &a, 2), 1.0);
        // Row 0 disjoint (TV 1), row 1 identical (TV 0): mean TV 0.5.
        assert!((similarity(&a, &b, 2) - 0.5).abs() < 1e-6);
        assert_eq!(js_divergence(&a, &a, 2), 0.0);
        // Row 0: JS of disjoint distributions = ln 2; row 1: 0.
        assert!((js_divergence(&a, &b, 2) - std::f32::consts::LN_2 / 2.0).abs() < 1e-6);
    }
}
