//! The `projector` feature: the paper's learned feature done properly. One
//! small network per layer (pooled feature → 256 → ReLU → 128, L2
//! normalised) is trained with candle's autograd and AdamW on pairs of
//! same-length database entries, so that the cosine distance of two
//! projected features predicts the true distance of their attention maps in
//! that layer (1 − mean over heads of the map similarity). Its weights are
//! stored with the database (`projector.safetensors`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{D, DType, Device, Module, Result, Tensor, Var};
use candle_nn::{AdamW, Linear, Optimizer, ParamsAdamW};

/// Hidden width.
const HIDDEN: usize = 256;
/// Output (feature) width.
pub const PROJECTED_DIM: usize = 128;
/// Partners per entry when sampling training pairs.
const PARTNERS: usize = 4;
/// Optimiser steps per layer.
const STEPS: usize = 300;
/// Pairs per step.
const BATCH: usize = 256;

/// One layer's network.
#[derive(Debug, Clone)]
struct Mlp {
    first: Linear,
    second: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.second.forward(&self.first.forward(x)?.relu()?)?;
        let norm = y.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
        y.broadcast_div(&norm)
    }
}

/// Per-layer projectors.
#[derive(Debug, Clone)]
pub struct Projector {
    layers: Vec<Mlp>,
}

/// How well a trained projector predicts map distances on held-out pairs.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ProjectorFit {
    /// Mean squared error of the predicted distance, held-out pairs.
    pub validation_mse: f64,
    /// Pearson correlation of predicted and true distance, held-out pairs.
    pub validation_correlation: f64,
}

/// A deterministic normal generator (xorshift + Box–Muller), so a build is
/// reproducible (candle's CPU RNG cannot be seeded).
struct Normal(u64);

impl Normal {
    fn next_uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn sample(&mut self) -> f32 {
        let (u, v) = (self.next_uniform(), self.next_uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

fn init_var(rng: &mut Normal, rows: usize, cols: usize, device: &Device) -> Result<Var> {
    let std = (2.0 / cols as f32).sqrt();
    let values: Vec<f32> = (0..rows * cols).map(|_| rng.sample() * std).collect();
    Var::from_tensor(&Tensor::from_vec(values, (rows, cols), device)?)
}

impl Projector {
    /// Trains one network per layer. `features[l]` is `[N, F]` (pooled
    /// features of layer `l`), `lengths` the entries' token counts and
    /// `map_distance(l, i, j)` the true map distance of entries `i`, `j`.
    pub fn train(
        features: &[Tensor],
        lengths: &[usize],
        map_distance: &dyn Fn(usize, usize, usize) -> anyhow::Result<f32>,
    ) -> anyhow::Result<(Self, Vec<ProjectorFit>)> {
        let pairs = sample_pairs(lengths);
        anyhow::ensure!(
            pairs.len() >= 20,
            "too few same-length entry pairs ({}) to train a projector",
            pairs.len()
        );
        let split = pairs.len() * 9 / 10;
        let mut layers = Vec::new();
        let mut fits = Vec::new();
        for (l, x) in features.iter().enumerate() {
            let targets = pairs
                .iter()
                .map(|&(i, j)| map_distance(l, i, j))
                .collect::<anyhow::Result<Vec<f32>>>()?;
            let (mlp, fit) = train_layer(x, &pairs, &targets, split, 0x9e37_79b9 ^ l as u64)?;
            layers.push(mlp);
            fits.push(fit);
        }
        Ok((Self { layers }, fits))
    }

    /// Projects pooled features `[N, F]` (or `[F]`) of `layer`.
    pub fn project(&self, layer: usize, pooled: &Tensor) -> Result<Tensor> {
        self.layers[layer].forward(pooled)
    }

    /// Saves the weights as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for (l, m) in self.layers.iter().enumerate() {
            tensors.insert(format!("layer{l}.first.weight"), m.first.weight().clone());
            tensors.insert(
                format!("layer{l}.first.bias"),
                m.first.bias().expect("bias").clone(),
            );
            tensors.insert(format!("layer{l}.second.weight"), m.second.weight().clone());
            tensors.insert(
                format!("layer{l}.second.bias"),
                m.second.bias().expect("bias").clone(),
            );
        }
        candle_core::safetensors::save(&tensors, path)
    }

    /// Loads weights saved by [`Projector::save`] for `layers` layers.
    pub fn load(path: &Path, layers: usize, device: &Device) -> anyhow::Result<Self> {
        let mut tensors = candle_core::safetensors::load(path, device)?;
        let mut take = |name: String| {
            tensors
                .remove(&name)
                .ok_or_else(|| anyhow::anyhow!("{} lacks {name}", path.display()))
        };
        let layers = (0..layers)
            .map(|l| {
                Ok(Mlp {
                    first: Linear::new(
                        take(format!("layer{l}.first.weight"))?,
                        Some(take(format!("layer{l}.first.bias"))?),
                    ),
                    second: Linear::new(
                        take(format!("layer{l}.second.weight"))?,
                        Some(take(format!("layer{l}.second.bias"))?),
                    ),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { layers })
    }
}

/// Up to [`PARTNERS`] partners of the same length per entry, deterministic.
fn sample_pairs(lengths: &[usize]) -> Vec<(usize, usize)> {
    let mut by_length: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &l) in lengths.iter().enumerate() {
        by_length.entry(l).or_default().push(i);
    }
    let mut pairs = Vec::new();
    for ids in by_length.values().filter(|ids| ids.len() >= 2) {
        for (k, &i) in ids.iter().enumerate() {
            for step in 1..=PARTNERS.min(ids.len() - 1) {
                // Spread partners over the bucket rather than neighbours in order.
                let j = ids[(k + step * ids.len().div_ceil(PARTNERS + 1)) % ids.len()];
                if j != i {
                    pairs.push((i, j));
                }
            }
        }
    }
    // Interleave buckets so the held-out tail covers every length.
    let mut rng = Normal(0x51ed_270b);
    for i in (1..pairs.len()).rev() {
        let j = (rng.next_uniform() * (i + 1) as f64) as usize % (i + 1);
        pairs.swap(i, j);
    }
    pairs
}

fn train_layer(
    x: &Tensor,
    pairs: &[(usize, usize)],
    targets: &[f32],
    split: usize,
    seed: u64,
) -> anyhow::Result<(Mlp, ProjectorFit)> {
    let device = x.device();
    let f = x.dim(1)?;
    let mut rng = Normal(seed | 1);
    let w1 = init_var(&mut rng, HIDDEN, f, device)?;
    let b1 = Var::zeros(HIDDEN, DType::F32, device)?;
    let w2 = init_var(&mut rng, PROJECTED_DIM, HIDDEN, device)?;
    let b2 = Var::zeros(PROJECTED_DIM, DType::F32, device)?;
    let mlp = |w1: &Var, b1: &Var, w2: &Var, b2: &Var| Mlp {
        first: Linear::new(w1.as_tensor().clone(), Some(b1.as_tensor().clone())),
        second: Linear::new(w2.as_tensor().clone(), Some(b2.as_tensor().clone())),
    };
    let mut opt = AdamW::new(
        vec![w1.clone(), b1.clone(), w2.clone(), b2.clone()],
        ParamsAdamW {
            lr: 1e-3,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let predict = |m: &Mlp, idx: &[(usize, usize)]| -> Result<Tensor> {
        let a: Vec<u32> = idx.iter().map(|p| p.0 as u32).collect();
        let b: Vec<u32> = idx.iter().map(|p| p.1 as u32).collect();
        let fa = m.forward(&x.index_select(&Tensor::new(a.as_slice(), device)?, 0)?)?;
        let fb = m.forward(&x.index_select(&Tensor::new(b.as_slice(), device)?, 0)?)?;
        1.0 - (fa * fb)?.sum(1)?
    };
    let train = &pairs[..split];
    for step in 0..STEPS {
        let start = (step * BATCH) % train.len();
        let end = (start + BATCH).min(train.len());
        let m = mlp(&w1, &b1, &w2, &b2);
        let predicted = predict(&m, &train[start..end])?;
        let target = Tensor::new(&targets[start..end], device)?;
        let loss = (predicted - target)?.sqr()?.mean_all()?;
        opt.backward_step(&loss)?;
    }
    let m = mlp(&w1, &b1, &w2, &b2);
    let held_out = &pairs[split..];
    let predicted = predict(&m, held_out)?.to_vec1::<f32>()?;
    let truth = &targets[split..];
    Ok((m, fit(&predicted, truth)))
}

fn fit(predicted: &[f32], truth: &[f32]) -> ProjectorFit {
    let n = predicted.len().max(1) as f64;
    let mse = predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| ((p - t) as f64).powi(2))
        .sum::<f64>()
        / n;
    let (mp, mt) = (
        predicted.iter().map(|&p| p as f64).sum::<f64>() / n,
        truth.iter().map(|&t| t as f64).sum::<f64>() / n,
    );
    let cov: f64 = predicted
        .iter()
        .zip(truth)
        .map(|(&p, &t)| (p as f64 - mp) * (t as f64 - mt))
        .sum();
    let vp: f64 = predicted.iter().map(|&p| (p as f64 - mp).powi(2)).sum();
    let vt: f64 = truth.iter().map(|&t| (t as f64 - mt).powi(2)).sum();
    ProjectorFit {
        validation_mse: mse,
        validation_correlation: if vp > 0.0 && vt > 0.0 {
            cov / (vp * vt).sqrt()
        } else {
            0.0
        },
    }
}
