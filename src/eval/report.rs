//! What `attncache report` measures in one run: the policy's evaluation, a
//! sweep of its thresholds beside the paper's rule, cross-layer map
//! similarity, and example maps of the most and least similar heads.

use serde::Serialize;

use super::classifier::Classifier;
use super::evaluate::{Evaluation, evaluate};
use super::oracle::{ORACLE_SCALE, oracle_frontier, oracle_gain_share};
use crate::cache::Policy;
use crate::cache::js_divergence;
use crate::cache::policy::IDENTICAL;
use crate::data::Corpus;
use crate::engine::{Engine, Mode};
use crate::plot::{MapRow, SweepPoint};

/// How much a report measures.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Timed passes of the main evaluation.
    pub repeats: usize,
    /// Timed passes of each sweep point.
    pub sweep_repeats: usize,
    /// Example queries whose maps are drawn.
    pub examples: usize,
    /// Queries averaged in the cross-layer similarity.
    pub similarity_queries: usize,
    /// Also the oracle frontier (timed with `sweep_repeats`).
    pub oracle: bool,
}

/// One example query's maps: its most and least similar reused-or-not heads.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    /// The query.
    pub text: String,
    /// Rows to draw (most similar first).
    #[serde(skip)]
    pub rows: Vec<MapRow>,
    /// (layer, head, true similarity) of each row.
    pub heads: Vec<(usize, usize, f32)>,
}

/// Everything a report holds.
#[derive(Debug, Clone, Serialize)]
pub struct ReportData {
    /// The policy's evaluation (as `attncache eval --json` prints it).
    pub evaluation: Evaluation,
    /// What the sweep's knob is.
    pub knob_desc: String,
    /// Our policy along the knob.
    pub sweep: Vec<SweepPoint>,
    /// The paper's rule along its distance.
    pub paper_sweep: Vec<SweepPoint>,
    /// The oracle along its least similarity (empty unless asked for).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub oracle_sweep: Vec<SweepPoint>,
    /// The evaluated policy's end-to-end gain over the oracle's at no more
    /// loss (with the oracle; `None` where the oracle gains nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oracle_gain_share: Option<f64>,
    /// The evaluated policy as a sweep point.
    pub chosen: SweepPoint,
    /// Mean JS divergence between the head-averaged maps of two layers,
    /// `[L][L]`.
    pub layer_similarity: Vec<Vec<f64>>,
    /// Example maps.
    pub examples: Vec<Example>,
}

/// Runs everything a report needs; `progress(step, steps)` after each part.
pub fn collect(
    engine: &Engine,
    corpus: &Corpus,
    probe: Option<&Classifier>,
    options: &ReportOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> anyhow::Result<ReportData> {
    let policy = engine.policy().clone();
    let shape = *engine.model().shape();
    let (knob_desc, ours): (String, Vec<(f64, Policy)>) = if policy
        .max_distance
        .iter()
        .flatten()
        .all(|&d| d <= IDENTICAL)
    {
        (
            "global feature-distance threshold".into(),
            [0.0, 0.05, 0.1, 0.2, 0.4]
                .iter()
                .map(|&d| (d, Policy::global(&shape, d as f32)))
                .collect(),
        )
    } else {
        (
            format!("threshold scale (× {})", policy.name),
            [0.25, 0.5, 1.0, 2.0, 4.0]
                .iter()
                .map(|&f| {
                    let mut p = policy.clone();
                    p.scale(f as f32);
                    p.name = format!("{}×{f}", policy.name);
                    (f, p)
                })
                .collect(),
        )
    };
    let paper: Vec<(f64, Policy)> = [0.05, 0.1, 0.2, 0.3, 0.5]
        .iter()
        .map(|&d| (d, Policy::paper(&shape, d as f32)))
        .collect();
    let steps = 1 + ours.len() + paper.len() + 2 + usize::from(options.oracle);
    let mut step = 0;
    let mut advance = |what: &str| {
        step += 1;
        progress(what, step, steps);
    };
    let evaluation = evaluate(engine, corpus, probe, options.repeats, &mut |_, _| {})?;
    advance("evaluation");
    let chosen_knob = if knob_desc.starts_with("global") {
        0.0
    } else {
        1.0
    };
    let chosen = sweep_point(chosen_knob, &evaluation);
    let mut sweep_of = |points: &[(f64, Policy)], what: &str| -> anyhow::Result<Vec<SweepPoint>> {
        points
            .iter()
            .map(|(knob, p)| {
                let mut e = engine.clone();
                e.set_policy(p.clone())?;
                let ev = evaluate(&e, corpus, probe, options.sweep_repeats, &mut |_, _| {})?;
                advance(what);
                Ok(sweep_point(*knob, &ev))
            })
            .collect()
    };
    let sweep = sweep_of(&ours, "sweep")?;
    let paper_sweep = sweep_of(&paper, "paper sweep")?;
    let oracle_sweep = match (options.oracle, engine.database()) {
        (true, Some(db)) => {
            let points = oracle_frontier(
                engine.model(),
                db,
                corpus,
                probe,
                &ORACLE_SCALE,
                options.sweep_repeats,
                &mut |_, _| {},
            )?;
            advance("oracle frontier");
            points
        }
        _ => Vec::new(),
    };
    let oracle_gain_share = oracle_gain_share(&chosen, &oracle_sweep);
    let layer_similarity = layer_similarity(engine, corpus, options.similarity_queries)?;
    advance("layer similarity");
    let examples = examples(engine, corpus, options.examples)?;
    advance("examples");
    Ok(ReportData {
        evaluation,
        knob_desc,
        sweep,
        paper_sweep,
        oracle_sweep,
        oracle_gain_share,
        chosen,
        layer_similarity,
        examples,
    })
}

/// An evaluation as a sweep point at `knob`.
pub fn sweep_point(knob: f64, e: &Evaluation) -> SweepPoint {
    SweepPoint {
        knob,
        policy: e.policy.clone(),
        hit_rate: e.hit_rate,
        accuracy_exact: e.accuracy_exact,
        accuracy_cached: e.accuracy_cached,
        fidelity_mean: e.fidelity_mean,
        e2e_speedup: e.e2e_speedup,
        attention_speedup: e.attention_speedup,
    }
}

/// Mean over the first `n` queries of the JS divergence between every two
/// layers' head-averaged exact maps.
fn layer_similarity(engine: &Engine, corpus: &Corpus, n: usize) -> anyhow::Result<Vec<Vec<f64>>> {
    let model = engine.model();
    let layers = model.shape().layers;
    let mut sums = vec![vec![0f64; layers]; layers];
    let mut count = 0usize;
    for item in corpus.items.iter().take(n) {
        let tokenized = model.tokenizer.encode(&item.text)?;
        let s = tokenized.ids.len();
        let means = model
            .capture_maps(&tokenized)?
            .iter()
            .map(|heads| {
                let stacked = candle_core::Tensor::stack(heads, 0)?;
                Ok(stacked.mean(0)?.flatten_all()?.to_vec1::<f32>()?)
            })
            .collect::<anyhow::Result<Vec<Vec<f32>>>>()?;
        for (a, row) in sums.iter_mut().enumerate() {
            for (b, sum) in row.iter_mut().enumerate() {
                *sum += js_divergence(&means[a], &means[b], s) as f64;
            }
        }
        count += 1;
    }
    let count = count.max(1) as f64;
    Ok(sums
        .into_iter()
        .map(|row| row.into_iter().map(|v| v / count).collect())
        .collect())
}

/// The first `n` queries' most and least similar heads (shadow runs).
fn examples(engine: &Engine, corpus: &Corpus, n: usize) -> anyhow::Result<Vec<Example>> {
    let model = engine.model();
    let Some(db) = engine.database() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in corpus.items.iter().take(n) {
        let run = engine.run(&item.text, Mode::Shadow)?;
        let tokenized = model.tokenizer.encode(&item.text)?;
        let s = tokenized.ids.len();
        let mut heads: Vec<(usize, usize, f32, u32)> = run
            .trace
            .layers
            .iter()
            .enumerate()
            .flat_map(|(l, layer)| {
                let entry = layer.neighbour.as_ref().map(|n| n.entry);
                layer
                    .heads
                    .iter()
                    .enumerate()
                    .filter_map(move |(h, head)| Some((l, h, head.similarity?, entry?)))
            })
            .collect();
        if heads.is_empty() {
            continue;
        }
        heads.sort_by(|a, b| b.2.total_cmp(&a.2));
        let picks = [heads[0], heads[heads.len() - 1]];
        let maps = model.capture_maps(&tokenized)?;
        let rows = picks
            .iter()
            .map(|&(l, h, sim, entry)| {
                Ok(MapRow {
                    label: format!("L{l} H{h} · similarity {sim:.3}"),
                    tokens: tokenized.tokens.clone(),
                    exact: maps[l][h].flatten_all()?.to_vec1::<f32>()?,
                    cached: Some(db.map_values_for(entry as usize, l, h, s)?),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        out.push(Example {
            text: item.text.clone(),
            rows,
            heads: picks.iter().map(|&(l, h, s, _)| (l, h, s)).collect(),
        });
    }
    Ok(out)
}
