//! A decoder's next-token distribution: probabilities, the most likely
//! tokens, and how far two distributions are apart.

use serde::Serialize;

/// One candidate next token.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenProb {
    /// Its text.
    pub token: String,
    /// Its id.
    pub id: u32,
    /// Its probability.
    pub prob: f32,
}

/// Softmax of logits (computed in f64 for the sums).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| (e / sum) as f32).collect()
}

/// Ids of the `k` most probable tokens, most probable first.
pub fn top_ids(probs: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..probs.len() as u32).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| {
        probs[b as usize].total_cmp(&probs[a as usize])
    });
    idx.truncate(k);
    idx.sort_by(|&a, &b| probs[b as usize].total_cmp(&probs[a as usize]));
    idx
}

/// KL(p ‖ q) in nats: how much the distribution `q` (cached) loses against
/// `p` (exact). Tokens with p = 0 contribute nothing; q is floored at 1e-30.
pub fn kl_divergence(p: &[f32], q: &[f32]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(p, _)| **p > 0.0)
        .map(|(&p, &q)| p as f64 * (p as f64 / (q as f64).max(1e-30)).ln())
        .sum::<f64>()
        .max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_top_and_kl_behave() {
        let p = softmax(&[1.0, 3.0, 2.0, -1.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(top_ids(&p, 2), vec![1, 2]);
        assert_eq!(top_ids(&p, 9), vec![1, 2, 0, 3]);
        assert!(kl_divergence(&p, &p).abs() < 1e-9);
        let q = softmax(&[3.0, 1.0, 2.0, -1.0]);
        assert!(kl_divergence(&p, &q) > 0.1);
    }
}
