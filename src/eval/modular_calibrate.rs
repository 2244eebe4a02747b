//! `modules calibrate`: the cheapest recovery setting (K of `first:K`, R of
//! `select:R`) whose measured error on a calibration set stays within a
//! budget — top-1 agreement with the exact next token at least the budget,
//! or mean next-token KL at most it. The same idea as the map cache's
//! calibration: the knob is set by measurement, not by hand.

use serde::{Deserialize, Serialize};

use super::modular::{ModularBench, ModularOptions};
use super::stats::mean;
use crate::model::llama::argmax;
use crate::model::next_token::{kl_divergence, softmax};
use crate::modules::prefill;
use crate::modules::{PromptSpec, Recovery};

/// What the budget bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryObjective {
    /// Top-1 agreement with exact ≥ budget (a share, 0–1).
    Top1,
    /// Mean next-token KL from exact ≤ budget (nats).
    Kl,
}

impl RecoveryObjective {
    /// `top1` or `kl`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "top1" => Ok(Self::Top1),
            "kl" => Ok(Self::Kl),
            _ => anyhow::bail!("unknown --objective {s:?}: use top1 or kl"),
        }
    }
}

/// One setting's measured error and cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryPoint {
    /// The setting.
    pub recovery: String,
    /// Top-1 agreement with exact.
    pub top1_agreement: f64,
    /// Mean next-token KL from exact.
    pub kl_mean: f64,
    /// Mean share of cached tokens recomputed.
    pub recomputed_fraction: f64,
    /// Mean modular TTFT, ms (one untimed-order pass; for orientation).
    pub ttft_ms: f64,
    /// Whether it meets the budget.
    pub within_budget: bool,
}

/// The result, also written as the store's `recovery.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryCalibration {
    /// The objective.
    pub objective: RecoveryObjective,
    /// The budget.
    pub budget: f64,
    /// `schema` or `contiguous`.
    pub positions: String,
    /// Calibration prompts.
    pub prompts: usize,
    /// The chosen setting: the cheapest within budget (the most expensive
    /// tried when none is).
    pub chosen: String,
    /// Whether the chosen setting meets the budget.
    pub met: bool,
    /// Every setting tried, cheapest first.
    pub points: Vec<RecoveryPoint>,
}

/// Settings tried for each kind, cheapest first.
pub fn candidates(kind: Recovery) -> Vec<Recovery> {
    match kind {
        Recovery::None => vec![Recovery::None],
        Recovery::First(_) => [0, 1, 2, 4, 8, 16, 32, 64]
            .into_iter()
            .map(Recovery::First)
            .collect(),
        Recovery::Select(_) => [0.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0]
            .into_iter()
            .map(Recovery::Select)
            .collect(),
    }
}

/// Measures every candidate of `kind` on `prompts` and picks the cheapest
/// within `budget`; `progress(done, total)` after each candidate.
pub fn calibrate_recovery(
    bench: &ModularBench,
    prompts: &[PromptSpec],
    (kind, objective, budget): (Recovery, RecoveryObjective, f64),
    options: &ModularOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<RecoveryCalibration> {
    anyhow::ensure!(!prompts.is_empty(), "no calibration prompts");
    let layouts = prompts
        .iter()
        .map(|p| bench.layout(p, options))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let exact = layouts
        .iter()
        .map(|l| Ok(prefill::exact(bench.decoder, l, &[])?.state.logits))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tried = candidates(kind);
    let mut points = Vec::with_capacity(tried.len());
    for (done, recovery) in tried.iter().enumerate() {
        let (mut top1, mut kl, mut recomputed, mut ttft) = (0usize, vec![], vec![], vec![]);
        for (layout, exact) in layouts.iter().zip(&exact) {
            let run = prefill::modular(bench.decoder, bench.store, layout, *recovery, &[])?;
            top1 += usize::from(argmax(exact) == argmax(&run.state.logits));
            kl.push(kl_divergence(&softmax(exact), &softmax(&run.state.logits)));
            recomputed.push(run.recomputed_rows as f64 / layout.cached_rows().max(1) as f64);
            ttft.push(run.stages.total_ms);
        }
        let top1_agreement = top1 as f64 / layouts.len() as f64;
        let kl_mean = mean(&kl);
        points.push(RecoveryPoint {
            recovery: recovery.to_string(),
            top1_agreement,
            kl_mean,
            recomputed_fraction: mean(&recomputed),
            ttft_ms: mean(&ttft),
            within_budget: match objective {
                RecoveryObjective::Top1 => top1_agreement >= budget,
                RecoveryObjective::Kl => kl_mean <= budget,
            },
        });
        progress(done + 1, tried.len());
    }
    let chosen = points
        .iter()
        .find(|p| p.within_budget)
        .or(points.last())
        .expect("at least one candidate");
    Ok(RecoveryCalibration {
        objective,
        budget,
        positions: options.positions.name().into(),
        prompts: prompts.len(),
        chosen: chosen.recovery.clone(),
        met: chosen.within_budget,
        points,
    })
}
