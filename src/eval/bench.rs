//! The latency benchmark: exact vs cached attention and end-to-end time by
//! sequence length, from one run, beside the ideal speedup implied by the
//! work actually skipped, the oracle's (optional) and the ceiling of reusing
//! every map.

use std::collections::BTreeMap;

use serde::Serialize;

use super::oracle::{oracle_choices, oracle_plan};
use super::stats::median;
use crate::engine::{Engine, Mode};
use crate::model::{StaticPlan, ms};

/// Upper bounds (inclusive) of the token-length buckets.
const BUCKETS: [usize; 8] = [16, 32, 64, 128, 256, 512, 1024, 2048];

/// One length bucket of the benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// Token lengths covered, e.g. `17–32`.
    pub lengths: String,
    /// Queries in the bucket.
    pub queries: usize,
    /// Mean token count.
    pub mean_tokens: f64,
    /// Share of head slots reused.
    pub hit_rate: f64,
    /// Exact attention / cached attention (look-up and map loading included).
    pub attention_speedup: f64,
    /// The same if reused heads and the look-up cost nothing (FLOP model).
    pub attention_ideal: f64,
    /// Exact / cached, tokenization to output.
    pub e2e_speedup: f64,
    /// The same, ideal.
    pub e2e_ideal: f64,
    /// Mean look-up cost per query (feature + search + map load), ms.
    pub lookup_ms: f64,
    /// The same by stage.
    pub lookup_stages: LookupStages,
    /// Mean exact end-to-end time per query, ms.
    pub exact_ms: f64,
    /// The look-up's share of the exact forward: `lookup_ms / exact_ms`
    /// (the near-free look-up's target is ≤ 3 % at every length).
    pub lookup_share: f64,
    /// Attention speedup when every map is reused (the query's own maps,
    /// no look-up): the ceiling at these lengths.
    pub ceiling_attention: f64,
    /// End-to-end speedup of the same.
    pub ceiling_e2e: f64,
    /// With `--oracle`: share of head slots the oracle reuses (each head
    /// the entry whose map is truly most similar, when at least the
    /// asked similarity; no look-up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oracle_hit_rate: Option<f64>,
    /// With `--oracle`: its end-to-end speedup (forward pass, as the ceiling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oracle_e2e: Option<f64>,
}

/// Mean time per query of each look-up stage (each query's median), ms.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct LookupStages {
    /// Computing the layers' features.
    pub feature_ms: f64,
    /// The searches' candidate stage (sketch scan, or scan) and carried
    /// distances.
    pub search_ms: f64,
    /// Re-ranking the sketch scan's candidates.
    pub rerank_ms: f64,
    /// Loading (converting, checking) the reused maps.
    pub map_load_ms: f64,
}

/// Per-query medians.
#[derive(Debug, Default, Clone, Copy)]
struct QueryTimes {
    tokens: usize,
    hits: usize,
    exact_attention: f64,
    exact_total: f64,
    cached_attention: f64,
    cached_total: f64,
    lookup: f64,
    stages: LookupStages,
    full_reuse_attention: f64,
    full_reuse_total: f64,
    exact_forward_attention: f64,
    exact_forward_total: f64,
    /// The oracle's reused heads and forward time, when asked for.
    oracle: Option<(usize, f64)>,
}

/// Benchmarks `engine` on `texts` with `repeats` interleaved repetitions per
/// query, with the oracle reusing maps of true similarity at least `oracle`
/// when given; `progress(done, total)` after each query.
pub fn bench(
    engine: &Engine,
    texts: &[String],
    repeats: usize,
    oracle: Option<f32>,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<Vec<BenchRow>> {
    let model = engine.model();
    let shape = *model.shape();
    let mut by_bucket: BTreeMap<usize, Vec<QueryTimes>> = BTreeMap::new();
    for (i, text) in texts.iter().enumerate() {
        let t = time_query(engine, text, repeats.max(1), oracle)?;
        let bucket = BUCKETS
            .iter()
            .position(|&b| t.tokens <= b)
            .unwrap_or(BUCKETS.len() - 1);
        by_bucket.entry(bucket).or_default().push(t);
        progress(i + 1, texts.len());
    }
    Ok(by_bucket
        .into_iter()
        .map(|(b, qs)| {
            let sum = |f: fn(&QueryTimes) -> f64| qs.iter().map(f).sum::<f64>();
            let n = qs.len() as f64;
            let (mut flops_att, mut flops_total, mut skipped) = (0.0, 0.0, 0.0);
            for q in &qs {
                let c = model.layer_cost(q.tokens);
                flops_att += c.attention * shape.layers as f64;
                flops_total += (c.attention + c.rest) * shape.layers as f64;
                skipped += c.skippable_per_head * q.hits as f64;
            }
            let low = if b == 0 { 1 } else { BUCKETS[b - 1] + 1 };
            BenchRow {
                lengths: format!("{low}–{}", BUCKETS[b]),
                queries: qs.len(),
                mean_tokens: sum(|q| q.tokens as f64) / n,
                hit_rate: sum(|q| q.hits as f64) / (n * (shape.layers * shape.heads) as f64),
                attention_speedup: sum(|q| q.exact_attention) / sum(|q| q.cached_attention),
                attention_ideal: flops_att / (flops_att - skipped),
                e2e_speedup: sum(|q| q.exact_total) / sum(|q| q.cached_total),
                e2e_ideal: flops_total / (flops_total - skipped),
                lookup_ms: sum(|q| q.lookup) / n,
                lookup_stages: LookupStages {
                    feature_ms: sum(|q| q.stages.feature_ms) / n,
                    search_ms: sum(|q| q.stages.search_ms) / n,
                    rerank_ms: sum(|q| q.stages.rerank_ms) / n,
                    map_load_ms: sum(|q| q.stages.map_load_ms) / n,
                },
                exact_ms: sum(|q| q.exact_total) / n,
                lookup_share: sum(|q| q.lookup) / sum(|q| q.exact_total),
                ceiling_attention: sum(|q| q.exact_forward_attention)
                    / sum(|q| q.full_reuse_attention),
                ceiling_e2e: sum(|q| q.exact_forward_total) / sum(|q| q.full_reuse_total),
                oracle_hit_rate: oracle.map(|_| {
                    sum(|q| q.oracle.map_or(0.0, |o| o.0 as f64))
                        / (n * (shape.layers * shape.heads) as f64)
                }),
                oracle_e2e: oracle.map(|_| {
                    sum(|q| q.exact_forward_total) / sum(|q| q.oracle.map_or(f64::NAN, |o| o.1))
                }),
            }
        })
        .collect())
}

/// Median times of one query over `repeats` interleaved repetitions.
fn time_query(
    engine: &Engine,
    text: &str,
    repeats: usize,
    oracle: Option<f32>,
) -> anyhow::Result<QueryTimes> {
    let model = engine.model();
    let shape = *model.shape();
    let hits = engine.run(text, Mode::Cached)?.trace.hits();
    let tokenized = model.tokenize(&[text])?;
    let (_, captured) = model.forward(
        &tokenized,
        &mut StaticPlan::capture_all(shape.layers, shape.heads),
    )?;
    let reuse_all = StaticPlan::reuse_captured(&captured.maps)?;
    let s = tokenized[0].ids.len();
    let oracle = match (oracle, engine.database()) {
        (Some(min), Some(db)) => {
            let choices = oracle_choices(model, db, &tokenized[0])?;
            Some(oracle_plan(model, db, s, &choices, min)?)
        }
        _ => None,
    };
    let mut samples: [Vec<f64>; 13] = Default::default();
    let mut oracle_samples = Vec::new();
    for r in 0..repeats {
        let pair = engine.timed_pair(text, r % 2 == 1)?;
        let (e, c) = (pair.exact, pair.cached);
        let (_, exact_fwd) = model.forward(
            &tokenized,
            &mut StaticPlan::exact(shape.layers, shape.heads),
        )?;
        let (_, reuse_fwd) = model.forward(&tokenized, &mut reuse_all.clone())?;
        if let Some((plan, _)) = &oracle {
            let (_, oracle_fwd) = model.forward(&tokenized, &mut plan.clone())?;
            oracle_samples.push(ms(oracle_fwd.timings.total()));
        }
        let values = [
            e.attention_with_lookup(),
            e.total,
            c.attention_with_lookup(),
            c.total,
            c.lookup(),
            ms(reuse_fwd.timings.attention()),
            ms(reuse_fwd.timings.total()),
            ms(exact_fwd.timings.attention()),
            ms(exact_fwd.timings.total()),
            c.feature,
            c.search,
            c.rerank,
            c.map_load,
        ];
        for (s, v) in samples.iter_mut().zip(values) {
            s.push(v);
        }
    }
    let m = |i: usize| median(&samples[i]).unwrap_or(f64::NAN);
    Ok(QueryTimes {
        tokens: tokenized[0].ids.len(),
        hits,
        exact_attention: m(0),
        exact_total: m(1),
        cached_attention: m(2),
        cached_total: m(3),
        lookup: m(4),
        stages: LookupStages {
            feature_ms: m(9),
            search_ms: m(10),
            rerank_ms: m(11),
            map_load_ms: m(12),
        },
        full_reuse_attention: m(5),
        full_reuse_total: m(6),
        exact_forward_attention: m(7),
        exact_forward_total: m(8),
        oracle: oracle.map(|(_, hits)| (hits, median(&oracle_samples).unwrap_or(f64::NAN))),
    })
}
