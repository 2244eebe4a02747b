//! Sketches: a cheap first pass of the look-up.
//!
//! Every entry's feature (1,536 values per layer for MiniLM's pooled
//! feature) is cut into [`BLOCKS`] equal parts (the pooled feature's
//! position segments); each part is projected at build time onto the
//! `SKETCH_DIM / BLOCKS` principal directions of that layer's parts over
//! the database (fitted by subspace iteration, [`PCA_ITERATIONS`] rounds
//! from a seeded random start), and the projections and sketches are stored
//! with the database (`sketch.bin`: f32 LE, the projections `[L][F/B][K/B]`,
//! then the sketches `[L][N][K]`). The projection of a layer is 24 KB for
//! MiniLM, so it stays in cache while the forward pass streams the weights
//! (a full `[F][K]` projection, 393 KB a layer, made the look-up slower than
//! the exact scan it replaces). A query projects its feature once per layer
//! (F·K/B multiply-adds), scans a bucket's sketches (24× less data than the
//! features, laid out side by side) for the [`RERANK`] nearest by Euclidean
//! sketch distance, and re-ranks those few by the exact feature distance. The entry found is the exact scan's whenever
//! the sketch ranks it among the best [`RERANK`]; `attncache bench-index`
//! and `attncache retrieval` measure how often it does. (Random projections
//! were tried first: pooled features of one layer are so alike that a
//! random 64-value sketch kept the nearest entry among its best 8 in only
//! 14–66 % of queries.)

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::feature::dot;

/// Values per sketch.
pub const SKETCH_DIM: usize = 64;
/// Equal parts of the feature, each projected by its layer's one block.
pub const BLOCKS: usize = 4;
/// Values per sketch of one part.
const OUT: usize = SKETCH_DIM / BLOCKS;
/// Entries re-ranked by the exact feature distance after the sketch scan:
/// on all 5,184 `rt:test` reviews, 8 keeps the served look-up's
/// oracle-best rate within 1 point of the exact scan's in every MiniLM
/// layer (4 missed layer 0 by 1.3 points; 16 costs twice the re-rank).
pub const RERANK: usize = 8;
/// Rounds of subspace iteration fitting the principal directions.
pub const PCA_ITERATIONS: usize = 6;
/// Seed of the iteration's random start.
const SEED: u64 = 0x5ce7_c4ed;

/// The per-layer projections and every entry's sketch.
#[derive(Debug, Clone)]
pub struct Sketches {
    /// `[L][F/B][K/B]`: row `i` of a layer is the contribution of value `i`
    /// of a part.
    projection: Vec<f32>,
    /// `[L][N][K]`.
    data: Vec<f32>,
    entries: usize,
    feature_dim: usize,
}

impl Sketches {
    /// Fits each layer's projection to `features` (`[L][N][F]` flat) and
    /// sketches every entry.
    pub fn build(
        features: &[f32],
        layers: usize,
        entries: usize,
        feature_dim: usize,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            features.len() == layers * entries * feature_dim && entries > 0,
            "cannot sketch {} feature values as {layers} layers × {entries} entries × {feature_dim}",
            features.len()
        );
        let part = part_len(feature_dim)?;
        let mut projection = Vec::with_capacity(layers * part * OUT);
        for layer in features.chunks_exact(entries * feature_dim) {
            // Every part of every entry is one sample of the part space.
            projection.extend(principal_directions(layer, entries * BLOCKS, part)?);
        }
        let mut sketches = Self {
            projection,
            data: Vec::with_capacity(layers * entries * SKETCH_DIM),
            entries,
            feature_dim,
        };
        for (i, feature) in features.chunks_exact(feature_dim).enumerate() {
            let sketch = sketches.project(i / entries, feature);
            sketches.data.extend_from_slice(&sketch);
        }
        Ok(sketches)
    }

    /// Reads them back from `sketch.bin`'s values, checking the size.
    pub fn from_values(
        values: Vec<f32>,
        layers: usize,
        entries: usize,
        feature_dim: usize,
    ) -> anyhow::Result<Self> {
        let projection_len = layers * part_len(feature_dim)? * OUT;
        let want = projection_len + layers * entries * SKETCH_DIM;
        anyhow::ensure!(
            values.len() == want,
            "sketch.bin has {} values, expected {want} ({layers} layers, {entries} entries, \
             features of {feature_dim}, sketches of {SKETCH_DIM})",
            values.len()
        );
        anyhow::ensure!(
            values.iter().all(|x| x.is_finite()),
            "sketch.bin holds NaN or infinite values"
        );
        let mut projection = values;
        let data = projection.split_off(projection_len);
        Ok(Self {
            projection,
            data,
            entries,
            feature_dim,
        })
    }

    /// The values written to `sketch.bin`.
    pub fn values(&self) -> impl Iterator<Item = f32> + '_ {
        self.projection.iter().chain(&self.data).copied()
    }

    /// The sketch of a feature at `layer`.
    pub fn project(&self, layer: usize, feature: &[f32]) -> [f32; SKETCH_DIM] {
        project(&self.projection, self.feature_dim, layer, feature)
    }

    /// The stored sketch of `entry` at `layer`.
    pub fn get(&self, layer: usize, entry: usize) -> &[f32] {
        let start = (layer * self.entries + entry) * SKETCH_DIM;
        &self.data[start..start + SKETCH_DIM]
    }

    /// Every (layer, length) bucket's sketches laid out contiguously, in
    /// the order of `by_length`'s entry lists, so a scan reads one block.
    pub fn arrange(self, layers: usize, by_length: &BTreeMap<usize, Vec<u32>>) -> SketchBuckets {
        let mut buckets = BTreeMap::new();
        for layer in 0..layers {
            for (&length, ids) in by_length {
                let mut data = Vec::with_capacity(ids.len() * SKETCH_DIM);
                for &e in ids {
                    data.extend_from_slice(self.get(layer, e as usize));
                }
                let half_norms = data
                    .chunks_exact(SKETCH_DIM)
                    .map(|s| 0.5 * dot(s, s))
                    .collect();
                buckets.insert((layer, length), Bucket { data, half_norms });
            }
        }
        SketchBuckets {
            projection: self.projection,
            feature_dim: self.feature_dim,
            buckets,
        }
    }
}

/// The `SKETCH_DIM / BLOCKS` leading principal directions of `count`
/// vectors of `dim` values (`samples`, row-major), as a `[dim][K/B]` matrix
/// with orthonormal columns: subspace iteration `V ← orth(Xcᵀ Xc V)` on the
/// centred samples. Data of lower rank leave the extra columns zero.
fn principal_directions(samples: &[f32], count: usize, dim: usize) -> anyhow::Result<Vec<f32>> {
    let dev = Device::Cpu;
    let x = Tensor::from_slice(samples, (count, dim), &dev)?;
    let centred = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    let mut rng = StdRng::seed_from_u64(SEED);
    let start: Vec<f32> = (0..dim * OUT)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let mut v = orthonormal_columns(start, dim);
    let ct = centred.t()?.contiguous()?;
    for _ in 0..PCA_ITERATIONS {
        let basis = Tensor::from_vec(v, (dim, OUT), &dev)?;
        let next = ct.matmul(&centred.matmul(&basis)?)?;
        v = orthonormal_columns(next.flatten_all()?.to_vec1()?, dim);
    }
    Ok(v)
}

/// Modified Gram–Schmidt on the columns of a row-major `[rows][K/B]` matrix;
/// a column that is (numerically) dependent on the earlier ones becomes zero.
fn orthonormal_columns(mut m: Vec<f32>, rows: usize) -> Vec<f32> {
    let column =
        |m: &[f32], j: usize| -> Vec<f64> { (0..rows).map(|i| m[i * OUT + j] as f64).collect() };
    let mut done: Vec<Vec<f64>> = Vec::with_capacity(OUT);
    for j in 0..OUT {
        let mut c = column(&m, j);
        let before = c.iter().map(|x| x * x).sum::<f64>().sqrt();
        for d in &done {
            let p: f64 = c.iter().zip(d).map(|(a, b)| a * b).sum();
            c.iter_mut().zip(d).for_each(|(a, b)| *a -= p * b);
        }
        let norm = c.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 1e-6 * before.max(1e-30) {
            c.iter_mut().for_each(|x| *x /= norm);
        } else {
            c.iter_mut().for_each(|x| *x = 0.0);
        }
        for (i, x) in c.iter().enumerate() {
            m[i * OUT + j] = *x as f32;
        }
        done.push(c);
    }
    m
}

/// The sketch of a feature of `feature_dim` values at `layer` under the
/// projections `[L][F/B][K/B]`.
fn project(
    projection: &[f32],
    feature_dim: usize,
    layer: usize,
    feature: &[f32],
) -> [f32; SKETCH_DIM] {
    let part = feature_dim / BLOCKS;
    let block = &projection[layer * part * OUT..][..part * OUT];
    let mut out = [0f32; SKETCH_DIM];
    for (values, sketch) in feature.chunks_exact(part).zip(out.chunks_exact_mut(OUT)) {
        for (&x, row) in values.iter().zip(block.chunks_exact(OUT)) {
            for (o, &p) in sketch.iter_mut().zip(row) {
                *o += x * p;
            }
        }
    }
    out
}

/// Values per feature part, or why the feature cannot be sketched.
fn part_len(feature_dim: usize) -> anyhow::Result<usize> {
    anyhow::ensure!(
        feature_dim > 0 && feature_dim.is_multiple_of(BLOCKS),
        "features of {feature_dim} values cannot be cut into {BLOCKS} equal parts for the sketch"
    );
    Ok(feature_dim / BLOCKS)
}

/// One (layer, length) bucket's sketches, `[n][K]`, and half their
/// squared norms.
#[derive(Debug, Clone)]
struct Bucket {
    data: Vec<f32>,
    half_norms: Vec<f32>,
}

/// The look-up's view of the sketches: the projections and every bucket's
/// sketches side by side.
#[derive(Debug, Clone)]
pub struct SketchBuckets {
    projection: Vec<f32>,
    feature_dim: usize,
    buckets: BTreeMap<(usize, usize), Bucket>,
}

impl SketchBuckets {
    /// The sketch of a query's feature at `layer`.
    pub fn project(&self, layer: usize, feature: &[f32]) -> [f32; SKETCH_DIM] {
        project(&self.projection, self.feature_dim, layer, feature)
    }

    /// The positions (in the bucket's entry list) of the (at most)
    /// [`RERANK`] entries nearest to `query` by Euclidean sketch distance
    /// (ordered by `q·s − |s|²/2`, which orders as that distance does; the
    /// plain dot product would favour long sketches), in no particular order.
    pub fn nearest(&self, layer: usize, length: usize, query: &[f32]) -> Vec<usize> {
        let Some(bucket) = self.buckets.get(&(layer, length)) else {
            return Vec::new();
        };
        let scores = bucket
            .data
            .chunks_exact(SKETCH_DIM)
            .zip(&bucket.half_norms)
            .map(|(s, half)| dot(query, s) - half);
        best_positions(scores)
    }
}

/// The positions of the (at most) [`RERANK`] largest `scores`, in no
/// particular order.
fn best_positions(scores: impl Iterator<Item = f32>) -> Vec<usize> {
    // (score, position), the worst kept first once full.
    let mut kept: Vec<(f32, usize)> = Vec::with_capacity(RERANK);
    for (i, score) in scores.enumerate() {
        if kept.len() < RERANK {
            kept.push((score, i));
            if kept.len() == RERANK {
                kept.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        } else if score > kept[0].0 {
            kept[0] = (score, i);
            // Restore the order: move the new one up to its place.
            let mut j = 0;
            while j + 1 < kept.len() && kept[j].0 > kept[j + 1].0 {
                kept.swap(j, j + 1);
                j += 1;
            }
        }
    }
    kept.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_positions_are_those_of_the_largest_scores() {
        let score = |i: usize| ((i * 37) % 101) as f32;
        let mut got = best_positions((0..100).map(score));
        got.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
        let mut want: Vec<usize> = (0..100).collect();
        want.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
        assert_eq!(got, want[..RERANK]);
        // Fewer than RERANK: all of them.
        assert_eq!(best_positions((0..3).map(score)).len(), 3);
    }

    #[test]
    fn the_projection_is_orthonormal_and_finds_the_spread_directions() {
        // 200 entries of 96 values whose parts vary along 3 directions only
        // (plus a shared offset): the sketch keeps their distances exactly.
        let (entries, dim) = (200, 96);
        let part = dim / BLOCKS;
        let mut rng = StdRng::seed_from_u64(3);
        let directions: Vec<Vec<f32>> = (0..3)
            .map(|_| (0..part).map(|_| rng.random_range(-1.0f32..1.0)).collect())
            .collect();
        let mut features = Vec::new();
        for _ in 0..entries * BLOCKS {
            let w: Vec<f32> = (0..3).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            features.extend(
                (0..part).map(|i| 0.5 + (0..3).map(|k| w[k] * directions[k][i]).sum::<f32>()),
            );
        }
        let sketches = Sketches::build(&features, 1, entries, dim).unwrap();
        let p = &sketches.projection;
        for a in 0..OUT {
            for b in a..OUT {
                let d: f32 = (0..part).map(|i| p[i * OUT + a] * p[i * OUT + b]).sum();
                let want = if a == b { d.round() } else { 0.0 };
                assert!((d - want).abs() < 1e-3, "columns {a}, {b}: {d}");
            }
        }
        let dist = |a: &[f32], b: &[f32]| -> f32 {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt()
        };
        for (e, f) in [(0, 1), (5, 77), (120, 199)] {
            let full = dist(&features[e * dim..][..dim], &features[f * dim..][..dim]);
            let sketched = dist(sketches.get(0, e), sketches.get(0, f));
            assert!(
                (full - sketched).abs() < 1e-3 * full.max(1.0),
                "{full} vs {sketched}"
            );
        }
        let again = Sketches::from_values(sketches.values().collect(), 1, entries, dim).unwrap();
        assert_eq!(again.get(0, 7), sketches.get(0, 7));
        assert_eq!(&again.project(0, &features[..dim])[..], sketches.get(0, 0));
        let err = Sketches::from_values(vec![0.0; 5], 1, entries, dim).unwrap_err();
        assert!(err.to_string().contains("sketch.bin has 5 values"), "{err}");
        let err = Sketches::build(&[0.5; 6], 1, 1, 6).unwrap_err();
        assert!(err.to_string().contains("4 equal parts"), "{err}");
    }
}
