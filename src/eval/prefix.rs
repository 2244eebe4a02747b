//! Attention-map reuse against prefix caching, on the same workload.
//!
//! In a causal model the map rows of a shared template prefix are the same
//! for every input — and a prefix cache (the prefix's keys and values,
//! computed once) skips *all* of the prefix's work, not only its attention.
//! So four runs per query, interleaved in a rotating order: exact, prefix
//! cache alone, map reuse alone, and both (map reuse for the rows of the
//! variable part on top of the cached prefix). Map reuse is credited only
//! with what it adds beyond the prefix cache: `both` against `prefix`.

use std::sync::Arc;

use serde::Serialize;

use super::classifier::Classifier;
use super::stats::{mean, median};
use crate::data::Corpus;
use crate::engine::{Engine, Mode, StageTimings};
use crate::model::llama::PrefixCache;
use crate::model::next_token::kl_divergence;

/// The four runs compared.
pub const RUNS: [&str; 4] = ["exact", "prefix", "reuse", "both"];

/// One run's figures over the workload.
#[derive(Debug, Clone, Serialize)]
pub struct RunFigures {
    /// `exact`, `prefix`, `reuse` or `both`.
    pub run: String,
    /// Mean time from tokenization to output, ms.
    pub total_ms: f64,
    /// Mean attention time (look-up and map loading included), ms.
    pub attention_ms: f64,
    /// Exact / this run, summed over all queries (median over repeats):
    /// end to end and attention.
    pub e2e_speedup: f64,
    /// The same for attention alone.
    pub attention_speedup: f64,
    /// Share of head slots served from the map database.
    pub hit_rate: f64,
    /// Task accuracy (fraction), when the split is labelled.
    pub accuracy: Option<f64>,
    /// Share of queries predicted as the exact model predicts them.
    pub agreement: Option<f64>,
    /// Mean next-token KL divergence from the exact run (nats).
    pub kl_mean: f64,
}

/// The comparison.
#[derive(Debug, Clone, Serialize)]
pub struct PrefixComparison {
    /// The split.
    pub split: String,
    /// The map-reuse policy.
    pub policy: String,
    /// Queries (all counted).
    pub queries: usize,
    /// Mean tokens per query.
    pub mean_tokens: f64,
    /// Mean tokens per query served by the prefix cache.
    pub mean_prefix_tokens: f64,
    /// Timed repeats.
    pub repeats: usize,
    /// Exact, prefix, reuse, both.
    pub runs: Vec<RunFigures>,
    /// What map reuse adds on top of the prefix cache: prefix / both,
    /// end to end (median over repeats).
    pub reuse_over_prefix_e2e: f64,
    /// The same for attention.
    pub reuse_over_prefix_attention: f64,
}

/// Runs the comparison; `progress(done, total)` after each query of each repeat.
pub fn compare_with_prefix_cache(
    engine: &Engine,
    prefix: Arc<PrefixCache>,
    corpus: &Corpus,
    classifier: Option<&Classifier>,
    repeats: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<PrefixComparison> {
    let model = engine.model().clone();
    let prefixed = engine.with_prefix(prefix.clone())?;
    let n = corpus.items.len();
    anyhow::ensure!(n > 0, "the split {} is empty", corpus.name);
    let repeats = repeats.max(1);
    // Per repeat, per run: (summed total, summed attention).
    let mut sums = vec![[(0f64, 0f64); 4]; repeats];
    let mut hits = [0f64; 4];
    let mut correct = [0usize; 4];
    let mut agree = [0usize; 4];
    let mut kls: Vec<Vec<f64>> = vec![Vec::new(); 4];
    let (mut labelled, mut tokens, mut shared) = (0usize, 0f64, 0f64);
    for (rep, rep_sums) in sums.iter_mut().enumerate() {
        for (i, item) in corpus.items.iter().enumerate() {
            let mut outputs: Vec<Option<(Vec<f32>, StageTimings, f64)>> = vec![None; 4];
            for k in 0..RUNS.len() {
                let run = (k + i + rep) % RUNS.len();
                let (e, mode) = match run {
                    0 => (engine, Mode::Exact),
                    1 => (&prefixed, Mode::Exact),
                    2 => (engine, Mode::Cached),
                    _ => (&prefixed, Mode::Cached),
                };
                let out = e.run(&item.text, mode)?;
                outputs[run] = Some((out.embedding, out.trace.timings, out.trace.hit_rate));
            }
            let outputs: Vec<_> = outputs
                .into_iter()
                .map(|o| o.expect("every run ran"))
                .collect();
            for (run, (_, t, _)) in outputs.iter().enumerate() {
                rep_sums[run].0 += t.total;
                rep_sums[run].1 += t.attention_with_lookup();
            }
            if rep == 0 {
                let ids = model.tokenizer.encode(&item.text)?.ids;
                tokens += ids.len() as f64;
                shared += prefix.shared_len(&ids) as f64;
                let exact_probs = model.next_token_probs(&outputs[0].0)?;
                let exact_label = classifier.map(|c| c.predict(&outputs[0].0).to_string());
                for (run, (readout, _, hit_rate)) in outputs.iter().enumerate() {
                    hits[run] += hit_rate;
                    kls[run].push(kl_divergence(
                        &exact_probs,
                        &model.next_token_probs(readout)?,
                    ));
                    if let (Some(c), Some(exact)) = (classifier, exact_label.as_deref()) {
                        let predicted = c.predict(readout);
                        agree[run] += usize::from(predicted == exact);
                        if let Some(label) = item.label.as_deref() {
                            correct[run] += usize::from(predicted == label);
                        }
                    }
                }
                labelled += usize::from(classifier.is_some() && item.label.is_some());
            }
            progress(rep * n + i + 1, repeats * n);
        }
    }
    let ratio = |a: usize, b: usize, pick: fn(&(f64, f64)) -> f64| {
        let r: Vec<f64> = sums.iter().map(|s| pick(&s[a]) / pick(&s[b])).collect();
        median(&r).unwrap_or(f64::NAN)
    };
    let share = |c: usize| (labelled > 0).then(|| c as f64 / labelled as f64);
    let runs = RUNS
        .iter()
        .enumerate()
        .map(|(run, name)| {
            let all = (n * repeats) as f64;
            RunFigures {
                run: name.to_string(),
                total_ms: sums.iter().map(|s| s[run].0).sum::<f64>() / all,
                attention_ms: sums.iter().map(|s| s[run].1).sum::<f64>() / all,
                e2e_speedup: ratio(0, run, |s| s.0),
                attention_speedup: ratio(0, run, |s| s.1),
                hit_rate: hits[run] / n as f64,
                accuracy: share(correct[run]),
                agreement: classifier.map(|_| agree[run] as f64 / n as f64),
                kl_mean: mean(&kls[run]),
            }
        })
        .collect();
    Ok(PrefixComparison {
        split: corpus.name.clone(),
        policy: engine.policy().name.clone(),
        queries: n,
        mean_tokens: tokens / n as f64,
        mean_prefix_tokens: shared / n as f64,
        repeats,
        runs,
        reuse_over_prefix_e2e: ratio(1, 3, |s| s.0),
        reuse_over_prefix_attention: ratio(1, 3, |s| s.1),
    })
}
