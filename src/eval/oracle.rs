//! The oracle frontier: the physical limit of any map cache.
//!
//! For every query and every head, the oracle knows the query's exact maps
//! and picks the same-length database entry whose stored map is truly most
//! similar (1 − mean row total variation) — something no real cache can do,
//! since it must decide before computing the map. A head hits when that
//! similarity is at least the knob `min_similarity`. Nothing of the look-up
//! is timed: the chosen maps are loaded before the timed run, so the oracle's
//! speedup is the most any map cache could get on these queries at its
//! accuracy loss. Exact and oracle runs are interleaved per query (the order
//! alternating), timed from tokenisation to output like every other
//! evaluation, and summed over all queries.

use std::time::Instant;

use candle_core::Tensor;
use serde::Serialize;

use super::classifier::Classifier;
use super::stats::{mean, median};
use crate::cache::Database;
use crate::cache::similarity;
use crate::data::Corpus;
use crate::model::{HeadPlan, LayerPlan, Model, ReusedMap, StaticPlan, TokenizedText, cosine, ms};
use crate::plot::SweepPoint;

/// The oracle's knob: the least true similarity a reused map must have, from
/// "identical maps only" down to loose.
pub const ORACLE_SCALE: [f32; 8] = [1.0, 0.999, 0.995, 0.99, 0.98, 0.95, 0.9, 0.8];

/// An oracle frontier point gains "anything at all" only above this
/// end-to-end speedup (timing noise of a ratio of medians on this CPU).
pub const ORACLE_NOISE: f64 = 0.02;

/// The entry the oracle picks for one head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OracleChoice {
    /// Entry number in the database.
    pub entry: u32,
    /// True similarity of its stored map to the query's exact map.
    pub similarity: f32,
}

/// Per layer × head, the same-length entry whose map is truly most similar
/// to `text`'s exact map (the lowest entry number among equals), or `None`
/// for every head when no entry has the text's length.
pub fn oracle_choices(
    model: &Model,
    db: &Database,
    text: &TokenizedText,
) -> anyhow::Result<Vec<Vec<Option<OracleChoice>>>> {
    let shape = *model.shape();
    let s = text.ids.len();
    let candidates = db.entries_of_length(s);
    if candidates.is_empty() {
        return Ok(vec![vec![None; shape.heads]; shape.layers]);
    }
    let maps = model.capture_maps(text)?;
    let mut out = Vec::with_capacity(shape.layers);
    for (l, layer) in maps.iter().enumerate() {
        let mut heads = Vec::with_capacity(shape.heads);
        for (h, map) in layer.iter().enumerate() {
            let truth = map.flatten_all()?.to_vec1::<f32>()?;
            let mut best: Option<OracleChoice> = None;
            for &c in &candidates {
                let sim = similarity(&db.map_values(c, l, h)?, &truth, s);
                if best.is_none_or(|b| sim > b.similarity) {
                    best = Some(OracleChoice {
                        entry: c as u32,
                        similarity: sim,
                    });
                }
            }
            heads.push(best);
        }
        out.push(heads);
    }
    Ok(out)
}

/// One query made ready for the oracle: its choices and exact readout.
struct Prepared<'a> {
    text: &'a str,
    tokenized: TokenizedText,
    label: Option<&'a str>,
    choices: Vec<Vec<Option<OracleChoice>>>,
}

/// The oracle's plan for a query of `tokens` tokens from its `choices` at
/// `min_similarity` (maps loaded here, outside any timed region) and the
/// number of heads it reuses.
pub fn oracle_plan(
    model: &Model,
    db: &Database,
    tokens: usize,
    choices: &[Vec<Option<OracleChoice>>],
    min_similarity: f32,
) -> anyhow::Result<(StaticPlan, usize)> {
    let mut hits = 0;
    let layers = choices
        .iter()
        .enumerate()
        .map(|(l, heads)| {
            let plans = heads
                .iter()
                .enumerate()
                .map(|(h, choice)| match choice {
                    Some(c) if c.similarity >= min_similarity => {
                        hits += 1;
                        let map = db.maps_for(c.entry as usize, l, &[h], tokens, model.device())?;
                        Ok(HeadPlan::Reuse(ReusedMap::stacked(map, 0)))
                    }
                    _ => Ok(HeadPlan::Exact),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(LayerPlan::new(plans))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((StaticPlan::new(layers), hits))
}

/// One timed run from tokenisation to readout: (total ms, attention ms,
/// readout).
fn timed_run(model: &Model, text: &str, plan: &StaticPlan) -> anyhow::Result<(f64, f64, Vec<f32>)> {
    let start = Instant::now();
    let tokenized = model.tokenizer.encode(text)?;
    let (batch, out) = model.forward(std::slice::from_ref(&tokenized), &mut plan.clone())?;
    let readout: Tensor = model.readout(&out.hidden, &batch)?;
    let readout = readout.squeeze(0)?.to_vec1::<f32>()?;
    Ok((ms(start.elapsed()), ms(out.timings.attention()), readout))
}

/// The oracle along `scale` over `corpus`: one [`SweepPoint`] per knob
/// (hit rate, accuracy or fidelity, attention and end-to-end speedup, the
/// speedups medians over `repeats` passes of summed times);
/// `progress(done, total)` after each query of each phase.
pub fn oracle_frontier(
    model: &Model,
    db: &Database,
    corpus: &Corpus,
    probe: Option<&Classifier>,
    scale: &[f32],
    repeats: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<Vec<SweepPoint>> {
    let shape = *model.shape();
    let n = corpus.items.len();
    anyhow::ensure!(n > 0, "the split {} is empty", corpus.name);
    let repeats = repeats.max(1);
    let total = n * (1 + scale.len() * repeats);
    let mut done = 0;
    let mut queries = Vec::with_capacity(n);
    for item in &corpus.items {
        let tokenized = model.tokenizer.encode(&item.text)?;
        queries.push(Prepared {
            text: &item.text,
            choices: oracle_choices(model, db, &tokenized)?,
            tokenized,
            label: item.label.as_deref(),
        });
        done += 1;
        progress(done, total);
    }
    let exact_plan = StaticPlan::exact(shape.layers, shape.heads);
    let heads = (shape.layers * shape.heads) as f64;
    let mut points = Vec::with_capacity(scale.len());
    for &min_similarity in scale {
        let plans = queries
            .iter()
            .map(|q| oracle_plan(model, db, q.tokenized.ids.len(), &q.choices, min_similarity))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (mut e2e_ratios, mut attention_ratios) = (Vec::new(), Vec::new());
        let mut readouts: Vec<(Vec<f32>, Vec<f32>)> = Vec::with_capacity(n);
        for repeat in 0..repeats {
            let (mut exact_total, mut oracle_total) = (0f64, 0f64);
            let (mut exact_attention, mut oracle_attention) = (0f64, 0f64);
            for (i, (query, (plan, _))) in queries.iter().zip(&plans).enumerate() {
                let (exact, oracle) = if (i + repeat) % 2 == 0 {
                    let exact = timed_run(model, query.text, &exact_plan)?;
                    (exact, timed_run(model, query.text, plan)?)
                } else {
                    let oracle = timed_run(model, query.text, plan)?;
                    (timed_run(model, query.text, &exact_plan)?, oracle)
                };
                exact_total += exact.0;
                oracle_total += oracle.0;
                exact_attention += exact.1;
                oracle_attention += oracle.1;
                if repeat == 0 {
                    readouts.push((exact.2, oracle.2));
                }
                done += 1;
                progress(done, total);
            }
            e2e_ratios.push(exact_total / oracle_total);
            attention_ratios.push(exact_attention / oracle_attention);
        }
        let fidelity = mean(
            &readouts
                .iter()
                .map(|(e, o)| cosine(e, o) as f64)
                .collect::<Vec<_>>(),
        );
        let (mut labelled, mut correct_exact, mut correct_oracle) = (0usize, 0usize, 0usize);
        if let Some(probe) = probe {
            for (query, (exact, oracle)) in queries.iter().zip(&readouts) {
                if let Some(label) = query.label {
                    labelled += 1;
                    correct_exact += usize::from(probe.predict(exact) == label);
                    correct_oracle += usize::from(probe.predict(oracle) == label);
                }
            }
        }
        let accuracy = |c: usize| (labelled > 0).then(|| c as f64 / labelled as f64);
        points.push(SweepPoint {
            knob: min_similarity as f64,
            policy: format!("oracle:{min_similarity}"),
            hit_rate: plans.iter().map(|(_, h)| *h as f64 / heads).sum::<f64>() / n as f64,
            accuracy_exact: accuracy(correct_exact),
            accuracy_cached: accuracy(correct_oracle),
            fidelity_mean: fidelity,
            e2e_speedup: median(&e2e_ratios).unwrap_or(f64::NAN),
            attention_speedup: median(&attention_ratios).unwrap_or(f64::NAN),
        });
    }
    Ok(points)
}

/// Our end-to-end gain over exact divided by the oracle's best gain at no
/// more loss (accuracy points, or 100·(1 − fidelity) without labels; a
/// policy that gained accuracy lost nothing, so it is compared at no loss);
/// `None` where the oracle gains nothing beyond timing noise at that loss.
pub fn oracle_gain_share(ours: &SweepPoint, oracle: &[SweepPoint]) -> Option<f64> {
    let loss = ours.loss().max(0.0);
    let best = oracle
        .iter()
        .filter(|p| p.loss() <= loss + 1e-9)
        .map(|p| p.e2e_speedup)
        .fold(f64::NEG_INFINITY, f64::max);
    (best > 1.0 + ORACLE_NOISE).then(|| (ours.e2e_speedup - 1.0) / (best - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(loss_pt: f64, e2e: f64) -> SweepPoint {
        SweepPoint {
            knob: 0.0,
            policy: "p".into(),
            hit_rate: 0.0,
            accuracy_exact: Some(0.9),
            accuracy_cached: Some(0.9 - loss_pt / 100.0),
            fidelity_mean: 1.0,
            e2e_speedup: e2e,
            attention_speedup: e2e,
        }
    }

    #[test]
    fn gain_share_compares_with_the_best_oracle_point_at_no_more_loss() {
        let oracle = [point(0.0, 1.1), point(0.5, 1.4), point(2.0, 2.0)];
        // At 0.5 point the oracle reaches 1.4×: 1.2× is half of its gain.
        let share = oracle_gain_share(&point(0.5, 1.2), &oracle).unwrap();
        assert!((share - 0.5).abs() < 1e-9, "{share}");
        // At no loss, 1.1× is all the oracle gets.
        assert!((oracle_gain_share(&point(0.0, 1.1), &oracle).unwrap() - 1.0).abs() < 1e-9);
        // An oracle that gains nothing beyond noise gives no share.
        assert_eq!(
            oracle_gain_share(&point(0.0, 1.0), &[point(0.0, 1.01)]),
            None
        );
        // A policy that gained accuracy is compared with the oracle at no loss.
        let share = oracle_gain_share(&point(-3.0, 1.05), &oracle).unwrap();
        assert!((share - 0.5).abs() < 1e-9, "{share}");
        // Slower than exact is a negative share, not hidden.
        assert!(oracle_gain_share(&point(0.5, 0.9), &oracle).unwrap() < 0.0);
    }
}
