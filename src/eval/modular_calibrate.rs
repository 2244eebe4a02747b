//! `modules calibrate`: the fastest modular setting whose error on
//! calibration prompts stays within a budget at 95 % confidence — mean
//! next-token KL (upper bound) at most the budget by default, top-1 agreement
//! (lower bound) at least it, or the task-accuracy loss (upper bound, in
//! points) at most it. It searches one recovery kind's settings or every
//! kind's (`auto`), optionally with APE's rescaling, on the frontier the same
//! prompts produce ([`super::modular_frontier`]): the knob is set by
//! measurement, not by hand, and every candidate is kept.

use serde::{Deserialize, Serialize};

use super::modular::{ModularBench, ModularOptions};
use super::modular_frontier::{Frontier, FrontierPoint, measure_frontier};
use crate::modules::{PromptSpec, Setting};

/// What the budget bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryObjective {
    /// Top-1 agreement with exact ≥ budget (a share, 0–1), lower bound.
    Top1,
    /// Mean next-token KL from exact ≤ budget (nats), upper bound.
    Kl,
    /// Task-accuracy loss ≤ budget (points, 0–100), upper bound.
    Accuracy,
}

impl RecoveryObjective {
    /// `kl`, `top1` or `accuracy`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "top1" => Ok(Self::Top1),
            "kl" => Ok(Self::Kl),
            "accuracy" => Ok(Self::Accuracy),
            _ => anyhow::bail!("unknown --objective {s:?}: use kl, top1 or accuracy"),
        }
    }

    /// Fails on a budget outside the objective's range, in one line.
    pub fn check_budget(self, budget: f64) -> anyhow::Result<()> {
        let ok = match self {
            Self::Top1 => (0.0..=1.0).contains(&budget),
            Self::Kl => budget > 0.0 && budget <= 10.0,
            Self::Accuracy => (0.0..=100.0).contains(&budget),
        };
        if !ok {
            anyhow::bail!(
                "--budget {budget}: {}",
                match self {
                    Self::Top1 => "top-1 agreement is a share from 0 to 1 (e.g. 0.95)",
                    Self::Kl => "a KL budget is in nats, above 0 and at most 10 (e.g. 0.02)",
                    Self::Accuracy => "an accuracy loss is in points from 0 to 100 (e.g. 1)",
                }
            );
        }
        Ok(())
    }

    /// Whether `p` meets `budget` at 95 % confidence.
    fn met(self, p: &FrontierPoint, budget: f64) -> bool {
        match self {
            Self::Top1 => p.top1_bound >= budget,
            Self::Kl => p.kl_bound <= budget,
            Self::Accuracy => p.accuracy_loss_bound.is_some_and(|b| b <= budget),
        }
    }

    /// Whether `p` is on the frontier this objective is read from (every
    /// point for accuracy, which the frontier does not plot).
    fn on_frontier(self, p: &FrontierPoint) -> bool {
        match self {
            Self::Top1 => p.pareto_top1,
            Self::Kl => p.pareto_kl,
            Self::Accuracy => true,
        }
    }

    /// How far `p` is from exact under this objective (lower is better).
    fn error(self, p: &FrontierPoint) -> f64 {
        match self {
            Self::Top1 => 1.0 - p.top1_bound,
            Self::Kl => p.kl_bound,
            Self::Accuracy => p.accuracy_loss_bound.unwrap_or(f64::INFINITY),
        }
    }
}

/// One setting's measured error and cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryPoint {
    /// Its point on the frontier.
    #[serde(flatten)]
    pub point: FrontierPoint,
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
    /// The store's encoding.
    #[serde(default)]
    pub encoding: String,
    /// The kind searched (`auto`: every kind).
    #[serde(default)]
    pub kind: String,
    /// Calibration prompts.
    pub prompts: usize,
    /// The chosen setting: the fastest within budget on the frontier (the
    /// one closest to exact when none is).
    pub chosen: String,
    /// Whether the chosen setting meets the budget.
    pub met: bool,
    /// Every setting tried, in the order tried.
    pub points: Vec<RecoveryPoint>,
}

/// Measures every setting of `settings` on `prompts` and picks the fastest
/// within `budget`; `progress(done, total)` after each prompt. Returns the
/// calibration and the frontier it was chosen from.
pub fn calibrate_recovery(
    bench: &ModularBench,
    prompts: &[PromptSpec],
    (kind, settings): (&str, &[Setting]),
    (objective, budget): (RecoveryObjective, f64),
    options: &ModularOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<(RecoveryCalibration, Frontier)> {
    objective.check_budget(budget)?;
    let frontier = measure_frontier(bench, prompts, settings, options, progress)?;
    let points: Vec<RecoveryPoint> = frontier
        .points
        .iter()
        .map(|p| RecoveryPoint {
            point: p.clone(),
            within_budget: objective.met(p, budget),
        })
        .collect();
    // The fastest within budget among the settings no other beats on both
    // speed and mean error (a setting slower and worse than another is not
    // the answer while a frontier setting meets the budget), else the fastest
    // within budget, else the closest to exact.
    let fastest = |on_frontier: bool| {
        points
            .iter()
            .filter(|p| p.within_budget && (!on_frontier || objective.on_frontier(&p.point)))
            .max_by(|a, b| {
                a.point
                    .speedup_vs_exact
                    .total_cmp(&b.point.speedup_vs_exact)
            })
    };
    let chosen = fastest(true)
        .or_else(|| fastest(false))
        .or_else(|| {
            points.iter().min_by(|a, b| {
                objective
                    .error(&a.point)
                    .total_cmp(&objective.error(&b.point))
            })
        })
        .expect("at least one setting");
    let calibration = RecoveryCalibration {
        objective,
        budget,
        positions: options.positions.name().into(),
        encoding: frontier.encoding.clone(),
        kind: kind.into(),
        prompts: prompts.len(),
        chosen: chosen.point.recovery.clone(),
        met: chosen.within_budget,
        points,
    };
    Ok((calibration, frontier))
}
