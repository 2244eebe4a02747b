//! A downstream task for measuring accuracy loss: a softmax-regression probe
//! on frozen exact sentence embeddings, trained in Rust by full-batch
//! gradient descent on standardised features.

use anyhow::ensure;

/// Training iterations.
const ITERATIONS: usize = 300;
/// Learning rate.
const LEARNING_RATE: f32 = 0.5;
/// L2 penalty on the weights.
const L2: f32 = 1e-3;

/// A trained linear classifier over embeddings.
#[derive(Debug, Clone)]
pub struct Probe {
    labels: Vec<String>,
    mean: Vec<f32>,
    std: Vec<f32>,
    /// `[K][D]`.
    weights: Vec<Vec<f32>>,
    bias: Vec<f32>,
}

impl Probe {
    /// Trains on `(embedding, label)` pairs; needs at least two labels.
    pub fn train(examples: &[(&[f32], &str)]) -> anyhow::Result<Self> {
        let mut labels: Vec<String> = examples.iter().map(|(_, l)| l.to_string()).collect();
        labels.sort();
        labels.dedup();
        ensure!(
            labels.len() >= 2,
            "the probe needs at least two labels in the training data"
        );
        let d = examples[0].0.len();
        let n = examples.len() as f32;
        let mut mean = vec![0f32; d];
        for (x, _) in examples {
            mean.iter_mut().zip(*x).for_each(|(m, v)| *m += v / n);
        }
        let mut std = vec![0f32; d];
        for (x, _) in examples {
            std.iter_mut()
                .zip(x.iter().zip(&mean))
                .for_each(|(s, (v, m))| *s += (v - m).powi(2) / n);
        }
        std.iter_mut().for_each(|s| *s = s.sqrt().max(1e-6));
        let mut probe = Self {
            mean,
            std,
            weights: vec![vec![0f32; d]; labels.len()],
            bias: vec![0f32; labels.len()],
            labels,
        };
        let data: Vec<(Vec<f32>, usize)> = examples
            .iter()
            .map(|(x, l)| {
                (
                    probe.standardise(x),
                    probe
                        .labels
                        .iter()
                        .position(|k| k == l)
                        .expect("known label"),
                )
            })
            .collect();
        for _ in 0..ITERATIONS {
            let mut grad_w = vec![vec![0f32; d]; probe.labels.len()];
            let mut grad_b = vec![0f32; probe.labels.len()];
            for (x, y) in &data {
                let p = probe.probabilities_standardised(x);
                for (k, pk) in p.iter().enumerate() {
                    let err = pk - if k == *y { 1.0 } else { 0.0 };
                    grad_b[k] += err / n;
                    grad_w[k]
                        .iter_mut()
                        .zip(x)
                        .for_each(|(g, v)| *g += err * v / n);
                }
            }
            for k in 0..probe.labels.len() {
                probe.bias[k] -= LEARNING_RATE * grad_b[k];
                for (w, g) in probe.weights[k].iter_mut().zip(&grad_w[k]) {
                    *w -= LEARNING_RATE * (g + L2 * *w);
                }
            }
        }
        Ok(probe)
    }

    /// The labels, in class order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The most probable label of an embedding.
    pub fn predict(&self, embedding: &[f32]) -> &str {
        let p = self.probabilities_standardised(&self.standardise(embedding));
        let best = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(k, _)| k);
        &self.labels[best]
    }

    /// Share of `(embedding, label)` pairs predicted correctly.
    pub fn accuracy(&self, examples: &[(&[f32], &str)]) -> f64 {
        let correct = examples
            .iter()
            .filter(|(x, l)| self.predict(x) == *l)
            .count();
        correct as f64 / examples.len().max(1) as f64
    }

    fn standardise(&self, x: &[f32]) -> Vec<f32> {
        x.iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(v, (m, s))| (v - m) / s)
            .collect()
    }

    fn probabilities_standardised(&self, x: &[f32]) -> Vec<f32> {
        let logits: Vec<f32> = self
            .weights
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| b + w.iter().zip(x).map(|(a, v)| a * v).sum::<f32>())
            .collect();
        let max = logits.iter().copied().fold(f32::MIN, f32::max);
        let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        exp.into_iter().map(|e| e / sum).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_two_clusters_and_rejects_one_label() {
        let pts: Vec<(Vec<f32>, &str)> = (0..40)
            .map(|i| {
                let t = i as f32 * 0.1;
                if i % 2 == 0 {
                    (vec![1.0 + t.sin() * 0.3, t.cos()], "pos")
                } else {
                    (vec![-1.0 + t.cos() * 0.3, t.sin()], "neg")
                }
            })
            .collect();
        let examples: Vec<(&[f32], &str)> = pts.iter().map(|(x, l)| (x.as_slice(), *l)).collect();
        let probe = Probe::train(&examples).unwrap();
        assert_eq!(probe.accuracy(&examples), 1.0);
        assert_eq!(probe.predict(&[2.0, 0.0]), "pos");
        assert_eq!(probe.labels(), ["neg", "pos"]);
        assert!(Probe::train(&examples[..1]).is_err());
    }
}
