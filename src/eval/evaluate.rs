//! Evaluating a policy over a split: hit rate, fidelity, downstream accuracy
//! and speedups over *all* queries, look-up and map loading counted.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::classifier::Classifier;
use super::stats::{mean, median, percentile};
use crate::cache::{HeadType, HeadTypes};
use crate::data::Corpus;
use crate::engine::{Engine, Mode, StageTimings, TimedPair};
use crate::model::cosine;
use crate::model::next_token::kl_divergence;

/// Mean stage times per query, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct MeanTimings {
    /// The exact path.
    pub exact: StageTimings,
    /// The cached path.
    pub cached: StageTimings,
}

/// The result of evaluating one policy on one split.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The split.
    pub split: String,
    /// The policy's name.
    pub policy: String,
    /// Number of queries (all of them count, hits and misses).
    pub queries: usize,
    /// Share of query × layer × head slots served from the cache.
    pub hit_rate: f64,
    /// The same per layer × head.
    pub hit_rate_per_head: Vec<Vec<f64>>,
    /// Share of queries with no qualifying entry at all (no look-up can hit).
    pub no_candidate: f64,
    /// Task accuracy (probe or prompt, see [`Classifier`]) on the exact
    /// readouts (fraction), when the split is labelled.
    pub accuracy_exact: Option<f64>,
    /// Task accuracy on the cached readouts (fraction).
    pub accuracy_cached: Option<f64>,
    /// `accuracy_exact − accuracy_cached` in percentage points.
    pub accuracy_loss_pt: Option<f64>,
    /// Share of queries where the task predicts the same label either way
    /// (labelled or not).
    pub agreement: Option<f64>,
    /// Decoders: mean KL divergence (nats) of the cached from the exact
    /// next-token distribution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl_mean: Option<f64>,
    /// Decoders: its 95th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl_p95: Option<f64>,
    /// Mean cosine of the cached to the exact readout (sentence embedding;
    /// a decoder's final hidden state).
    pub fidelity_mean: f64,
    /// Its 5th percentile.
    pub fidelity_p5: f64,
    /// Exact attention time / cached attention time (feature, search and map
    /// loading included), summed over all queries; median over repeats.
    pub attention_speedup: f64,
    /// Exact / cached time from tokenization to output, likewise.
    pub e2e_speedup: f64,
    /// Timed repeats over the split.
    pub repeats: usize,
    /// Per layer × head: mean true similarity of the neighbour's map to the
    /// exact map over queries that had a neighbour ("cacheability").
    pub cacheability: Vec<Vec<Option<f64>>>,
    /// Decoders: the same over the rows after the tokens query and
    /// neighbour share (their rows are identical in a causal model, and a
    /// prefix cache serves them anyway): what map reuse can add.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cacheability_new_rows: Option<Vec<Vec<Option<f64>>>>,
    /// Mean true similarity of the maps actually reused.
    pub reused_similarity: Option<f64>,
    /// Hit rate and cacheability by head type (databases built with head
    /// types).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_head_type: Option<Vec<HeadTypeSummary>>,
    /// Mean stage times per query.
    pub timings_ms: MeanTimings,
    /// Every timed (exact, cached) pair, for distributions (not serialised).
    #[serde(skip)]
    pub samples: Vec<TimedPair>,
}

/// Evaluates `engine`'s policy on `corpus`; `progress(done, total)` after
/// each query of each phase.
pub fn evaluate(
    engine: &Engine,
    corpus: &Corpus,
    probe: Option<&Classifier>,
    repeats: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<Evaluation> {
    evaluate_until(
        engine,
        corpus,
        probe,
        repeats,
        progress,
        &AtomicBool::new(false),
    )
}

/// [`evaluate`] that stops with an error once `cancel` is set.
pub fn evaluate_until(
    engine: &Engine,
    corpus: &Corpus,
    probe: Option<&Classifier>,
    repeats: usize,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &AtomicBool,
) -> anyhow::Result<Evaluation> {
    let cancelled = || -> anyhow::Result<()> {
        anyhow::ensure!(!cancel.load(Ordering::Relaxed), "evaluation cancelled");
        Ok(())
    };
    let shape = *engine.model().shape();
    let n = corpus.items.len();
    anyhow::ensure!(n > 0, "the split {} is empty", corpus.name);
    let total_steps = n * (1 + repeats);
    let mut hits = vec![vec![0usize; shape.heads]; shape.layers];
    let mut sims = vec![vec![(0f64, 0usize); shape.heads]; shape.layers];
    let mut new_row_sims = vec![vec![(0f64, 0usize); shape.heads]; shape.layers];
    let (mut reused_sum, mut reused_count) = (0f64, 0usize);
    let mut fidelities = Vec::with_capacity(n);
    let decoder = engine.model().decoder().is_some();
    let mut kls = Vec::new();
    let mut no_candidate = 0usize;
    let (mut correct_exact, mut correct_cached, mut labelled) = (0usize, 0usize, 0usize);
    let (mut agree, mut predicted) = (0usize, 0usize);
    for (i, item) in corpus.items.iter().enumerate() {
        cancelled()?;
        let run = engine.run(&item.text, Mode::Shadow)?;
        let exact_embedding = run.exact_embedding.as_deref().expect("shadow mode");
        fidelities.push(cosine(&run.embedding, exact_embedding) as f64);
        if decoder {
            let model = engine.model();
            kls.push(kl_divergence(
                &model.next_token_probs(exact_embedding)?,
                &model.next_token_probs(&run.embedding)?,
            ));
        }
        no_candidate += usize::from(run.trace.layers.iter().all(|l| l.neighbour.is_none()));
        for (l, layer) in run.trace.layers.iter().enumerate() {
            for (h, head) in layer.heads.iter().enumerate() {
                hits[l][h] += usize::from(head.hit);
                if let Some(s) = head.similarity_new_rows {
                    new_row_sims[l][h].0 += s as f64;
                    new_row_sims[l][h].1 += 1;
                }
                if let Some(s) = head.similarity {
                    sims[l][h].0 += s as f64;
                    sims[l][h].1 += 1;
                    if head.hit {
                        reused_sum += s as f64;
                        reused_count += 1;
                    }
                }
            }
        }
        if let Some(probe) = probe {
            let (e, c) = (
                probe.predict(exact_embedding),
                probe.predict(&run.embedding),
            );
            predicted += 1;
            agree += usize::from(e == c);
            if let Some(label) = item.label.as_deref() {
                labelled += 1;
                correct_exact += usize::from(e == label);
                correct_cached += usize::from(c == label);
            }
        }
        progress(i + 1, total_steps);
    }
    let (attention_speedup, e2e_speedup, timings_ms, samples) =
        time_speedups(engine, corpus, repeats, &mut |done| {
            progress(n + done, total_steps);
            cancelled()
        })?;
    let share = |count: usize| count as f64 / n as f64;
    let accuracy = |c: usize| (labelled > 0).then(|| c as f64 / labelled as f64);
    let (accuracy_exact, accuracy_cached) = (accuracy(correct_exact), accuracy(correct_cached));
    let hit_rate_per_head: Vec<Vec<f64>> = hits
        .iter()
        .map(|r| r.iter().map(|&c| share(c)).collect())
        .collect();
    let cacheability = mean_grid(&sims);
    let by_head_type = engine
        .database()
        .and_then(|db| db.head_types())
        .map(|types| by_head_type(types, &hit_rate_per_head, &cacheability));
    Ok(Evaluation {
        split: corpus.name.clone(),
        policy: engine.policy().name.clone(),
        queries: n,
        hit_rate: mean(&hits.iter().flatten().map(|&c| share(c)).collect::<Vec<_>>()),
        hit_rate_per_head,
        no_candidate: share(no_candidate),
        accuracy_exact,
        accuracy_cached,
        accuracy_loss_pt: accuracy_exact
            .zip(accuracy_cached)
            .map(|(e, c)| (e - c) * 100.0),
        agreement: (predicted > 0).then(|| agree as f64 / predicted as f64),
        kl_mean: decoder.then(|| mean(&kls)),
        kl_p95: decoder.then(|| percentile(&kls, 95.0)),
        fidelity_mean: mean(&fidelities),
        fidelity_p5: percentile(&fidelities, 5.0),
        attention_speedup,
        e2e_speedup,
        repeats,
        cacheability,
        cacheability_new_rows: decoder.then(|| mean_grid(&new_row_sims)),
        reused_similarity: (reused_count > 0).then(|| reused_sum / reused_count as f64),
        by_head_type,
        timings_ms,
        samples,
    })
}

/// One head type's share of an evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct HeadTypeSummary {
    /// The type's name.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Heads of this type.
    pub heads: usize,
    /// Mean hit rate of its heads.
    pub hit_rate: f64,
    /// Mean cacheability (true similarity of the neighbour's map) of its
    /// heads that had neighbours.
    pub cacheability: Option<f64>,
}

/// Hit rate and cacheability grouped by head type (types with no head left
/// out).
fn by_head_type(
    types: &HeadTypes,
    hit_rate: &[Vec<f64>],
    cacheability: &[Vec<Option<f64>>],
) -> Vec<HeadTypeSummary> {
    HeadType::ALL
        .iter()
        .filter_map(|&kind| {
            let heads: Vec<(usize, usize)> = types
                .heads
                .iter()
                .enumerate()
                .flat_map(|(l, row)| {
                    row.iter()
                        .enumerate()
                        .filter(move |(_, p)| p.kind == kind)
                        .map(move |(h, _)| (l, h))
                })
                .collect();
            if heads.is_empty() {
                return None;
            }
            let sims: Vec<f64> = heads
                .iter()
                .filter_map(|&(l, h)| cacheability[l][h])
                .collect();
            Some(HeadTypeSummary {
                kind: kind.name(),
                heads: heads.len(),
                hit_rate: mean(
                    &heads
                        .iter()
                        .map(|&(l, h)| hit_rate[l][h])
                        .collect::<Vec<_>>(),
                ),
                cacheability: (!sims.is_empty()).then(|| mean(&sims)),
            })
        })
        .collect()
}

/// Per layer × head mean of `(sum, count)` cells (`None` where empty).
fn mean_grid(cells: &[Vec<(f64, usize)>]) -> Vec<Vec<Option<f64>>> {
    cells
        .iter()
        .map(|r| {
            r.iter()
                .map(|&(s, c)| (c > 0).then(|| s / c as f64))
                .collect()
        })
        .collect()
}

/// Every query of `corpus` run exactly and cached, alternating which goes
/// first, for `repeats` passes, in pass-major order.
pub fn timed_pairs(
    engine: &Engine,
    corpus: &Corpus,
    repeats: usize,
    progress: &mut dyn FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<TimedPair>> {
    let mut pairs = Vec::with_capacity(corpus.items.len() * repeats.max(1));
    for _ in 0..repeats.max(1) {
        for (i, item) in corpus.items.iter().enumerate() {
            pairs.push(engine.timed_pair(&item.text, i % 2 == 1)?);
            progress(pairs.len())?;
        }
    }
    Ok(pairs)
}

/// The median over passes of summed-time ratios of `pairs` (pass-major,
/// `per_pass` pairs each) whose cached run `keep`s, with the cached time
/// `cached_time` and the exact time `exact_time`; `None` when no pair is kept.
pub fn pass_median_ratio(
    pairs: &[TimedPair],
    per_pass: usize,
    keep: impl Fn(&TimedPair) -> bool,
    exact_time: impl Fn(&StageTimings) -> f64,
    cached_time: impl Fn(&StageTimings) -> f64,
) -> Option<f64> {
    let ratios: Vec<f64> = pairs
        .chunks(per_pass.max(1))
        .filter_map(|pass| {
            let kept: Vec<&TimedPair> = pass.iter().filter(|p| keep(p)).collect();
            let exact: f64 = kept.iter().map(|p| exact_time(&p.exact)).sum();
            let cached: f64 = kept.iter().map(|p| cached_time(&p.cached)).sum();
            (!kept.is_empty()).then(|| exact / cached)
        })
        .collect();
    median(&ratios)
}

/// Runs every query exactly and cached ([`timed_pairs`]); returns the
/// median over passes of the summed-time ratios (attention with look-up,
/// end to end), mean stage times and every timed pair.
fn time_speedups(
    engine: &Engine,
    corpus: &Corpus,
    repeats: usize,
    progress: &mut dyn FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64, MeanTimings, Vec<TimedPair>)> {
    let pairs = timed_pairs(engine, corpus, repeats, progress)?;
    let n = corpus.items.len();
    let mut sums = MeanTimings::default();
    for pair in &pairs {
        sums.exact.accumulate(&pair.exact);
        sums.cached.accumulate(&pair.cached);
    }
    let runs = pairs.len() as f64;
    let means = MeanTimings {
        exact: sums.exact.scaled(1.0 / runs),
        cached: sums.cached.scaled(1.0 / runs),
    };
    let ratio = |time: fn(&StageTimings) -> f64| {
        pass_median_ratio(&pairs, n, |_| true, time, time).unwrap_or(f64::NAN)
    };
    Ok((
        ratio(StageTimings::attention_with_lookup),
        ratio(|t| t.total),
        means,
        pairs,
    ))
}
