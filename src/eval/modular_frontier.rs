//! The speed–fidelity frontier of modular reuse: every recovery setting run
//! on the same prompts with the exact prefill interleaved (each prompt's runs
//! in a rotating order), each setting's time to first token against exact
//! (ratio of summed TTFT, loading, rotation, probing and recomputation
//! inside), its next-token KL, top-1 agreement and task accuracy with their
//! 95 % bounds, and the settings no other beats on both speed and error.

use serde::{Deserialize, Serialize};

use super::modular::{ModularBench, ModularOptions};
use super::stats::{Z_95, accuracy_loss_bound, mean, mean_upper_bound};
use crate::model::llama::argmax;
use crate::model::next_token::{kl_divergence, softmax};
use crate::modules::prefill::{self, Stages};
use crate::modules::{PromptSpec, Recovery, Setting};

/// One setting measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrontierPoint {
    /// The setting (`select:15`, `probe:5+rescale:0.9,0.9`, …).
    pub recovery: String,
    /// Its recovery kind (`none`, `first`, `select`, `probe`,
    /// `probe-modules`).
    pub kind: String,
    /// Summed exact TTFT ÷ summed TTFT of this setting.
    pub speedup_vs_exact: f64,
    /// Mean TTFT, ms.
    pub ttft_ms: f64,
    /// Mean next-token KL(exact ‖ this), nats.
    pub kl_mean: f64,
    /// Its upper 95 % bound over prompts.
    pub kl_bound: f64,
    /// Share of prompts whose most likely next token is the exact one's.
    pub top1_agreement: f64,
    /// Its lower 95 % bound: 1 − (d + 1.645·√d) / n for d disagreements.
    pub top1_bound: f64,
    /// Task accuracy of the exact run and of this setting (scored prompts).
    #[serde(default)]
    pub accuracy: Option<(f64, f64)>,
    /// Upper 95 % bound of the accuracy loss in points (scored prompts).
    #[serde(default)]
    pub accuracy_loss_bound: Option<f64>,
    /// Mean share of cached tokens recomputed.
    pub recomputed_fraction: f64,
    /// Mean stage times, ms.
    #[serde(skip_deserializing)]
    pub stages_ms: Stages,
    /// On the Pareto set of speedup against mean KL (no other setting is at
    /// least as fast with a lower KL, or faster with one as low).
    pub pareto_kl: bool,
    /// On the Pareto set of speedup against top-1 agreement.
    pub pareto_top1: bool,
}

/// Every setting's point on the same prompts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Frontier {
    /// Prompts measured.
    pub prompts: usize,
    /// Mean tokens per prompt.
    pub tokens_mean: f64,
    /// Mean exact TTFT, ms.
    pub exact_ttft_ms: f64,
    /// `schema` or `contiguous`.
    pub positions: String,
    /// The store's encoding.
    pub encoding: String,
    /// Every setting, in the order measured.
    pub points: Vec<FrontierPoint>,
}

/// Every kind's settings, cheapest first within each kind.
pub fn every_setting() -> Vec<Setting> {
    [
        Recovery::None,
        Recovery::First(0),
        Recovery::Select(0.0),
        Recovery::Probe {
            percent: 0.0,
            layers: 0,
        },
        Recovery::ProbeModules(0),
    ]
    .into_iter()
    .flat_map(|kind| kind.settings())
    .map(Setting::from)
    .collect()
}

/// Per-setting running sums over prompts.
#[derive(Default, Clone)]
struct Tally {
    ttft: Vec<f64>,
    kl: Vec<f64>,
    agree: usize,
    recomputed: Vec<f64>,
    stages: Vec<Stages>,
    lost: usize,
    gained: usize,
    correct: usize,
}

/// Measures `settings` on `prompts` with the exact prefill interleaved;
/// `progress(done, total)` after each prompt.
pub fn measure_frontier(
    bench: &ModularBench,
    prompts: &[PromptSpec],
    settings: &[Setting],
    options: &ModularOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<Frontier> {
    anyhow::ensure!(!prompts.is_empty(), "no prompts to measure");
    anyhow::ensure!(!settings.is_empty(), "no settings to measure");
    let layouts = prompts
        .iter()
        .map(|p| bench.layout(p, options))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut tallies = vec![Tally::default(); settings.len()];
    let (mut exact_ttft, mut scored, mut exact_correct) = (Vec::new(), 0usize, 0usize);
    for (i, (prompt, layout)) in prompts.iter().zip(&layouts).enumerate() {
        let runs = settings.len() + 1;
        let mut exact = None;
        let mut results = vec![None; settings.len()];
        for k in 0..runs {
            let run = (k + i) % runs;
            if run == 0 {
                exact = Some(prefill::exact(bench.decoder, layout, &[])?);
            } else {
                let s = settings[run - 1];
                results[run - 1] = Some(prefill::modular_with(
                    bench.decoder,
                    bench.store,
                    layout,
                    s,
                    &[],
                )?);
            }
        }
        let mut exact = exact.expect("the exact run ran");
        exact_ttft.push(exact.stages.total_ms);
        let pe = softmax(&exact.state.logits);
        let task = match prompt.answer {
            Some(answer) if !prompt.choices.is_empty() => {
                scored += 1;
                let right = bench.choose(&mut exact.state, &prompt.choices)? == answer;
                exact_correct += usize::from(right);
                Some((answer, right))
            }
            _ => None,
        };
        for (t, run) in tallies.iter_mut().zip(results) {
            let mut run = run.expect("every setting ran");
            t.ttft.push(run.stages.total_ms);
            t.kl.push(kl_divergence(&pe, &softmax(&run.state.logits)));
            t.agree += usize::from(argmax(&exact.state.logits) == argmax(&run.state.logits));
            t.recomputed
                .push(run.recomputed_rows as f64 / layout.cached_rows().max(1) as f64);
            t.stages.push(run.stages);
            if let Some((answer, exact_right)) = task {
                let right = bench.choose(&mut run.state, &prompt.choices)? == answer;
                t.correct += usize::from(right);
                t.lost += usize::from(exact_right && !right);
                t.gained += usize::from(!exact_right && right);
            }
        }
        progress(i + 1, prompts.len());
    }
    let n = prompts.len();
    let exact_sum: f64 = exact_ttft.iter().sum();
    let mut points: Vec<FrontierPoint> = settings
        .iter()
        .zip(&tallies)
        .map(|(s, t)| {
            let d = (n - t.agree) as f64;
            FrontierPoint {
                recovery: s.to_string(),
                kind: s.recovery.kind().into(),
                speedup_vs_exact: exact_sum / t.ttft.iter().sum::<f64>(),
                ttft_ms: mean(&t.ttft),
                kl_mean: mean(&t.kl),
                kl_bound: mean_upper_bound(&t.kl),
                top1_agreement: t.agree as f64 / n as f64,
                top1_bound: 1.0 - (d + Z_95 * d.sqrt()) / n as f64,
                accuracy: (scored > 0).then(|| {
                    (
                        exact_correct as f64 / scored as f64,
                        t.correct as f64 / scored as f64,
                    )
                }),
                accuracy_loss_bound: (scored > 0)
                    .then(|| accuracy_loss_bound(t.lost, t.gained, scored)),
                recomputed_fraction: mean(&t.recomputed),
                stages_ms: Stages::mean(&t.stages),
                pareto_kl: false,
                pareto_top1: false,
            }
        })
        .collect();
    mark_pareto(&mut points);
    Ok(Frontier {
        prompts: n,
        tokens_mean: layouts.iter().map(|l| l.len() as f64).sum::<f64>() / n as f64,
        exact_ttft_ms: mean(&exact_ttft),
        positions: options.positions.name().into(),
        encoding: bench.store.manifest().encoding.name().into(),
        points,
    })
}

/// Marks the points no other point dominates: at least as fast and with a
/// lower error, or faster with an error as low (mean KL; and 1 − top-1
/// agreement).
fn mark_pareto(points: &mut [FrontierPoint]) {
    let on = |points: &[FrontierPoint], i: usize, err: fn(&FrontierPoint) -> f64| {
        let (s, e) = (points[i].speedup_vs_exact, err(&points[i]));
        !points.iter().any(|q| {
            let (qs, qe) = (q.speedup_vs_exact, err(q));
            (qs >= s && qe < e) || (qs > s && qe <= e)
        })
    };
    let kl: Vec<bool> = (0..points.len())
        .map(|i| on(points, i, |p| p.kl_mean))
        .collect();
    let top1: Vec<bool> = (0..points.len())
        .map(|i| on(points, i, |p| 1.0 - p.top1_agreement))
        .collect();
    for (p, (k, t)) in points.iter_mut().zip(kl.into_iter().zip(top1)) {
        p.pareto_kl = k;
        p.pareto_top1 = t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(speedup: f64, kl: f64) -> FrontierPoint {
        FrontierPoint {
            recovery: format!("{speedup}/{kl}"),
            kind: "select".into(),
            speedup_vs_exact: speedup,
            ttft_ms: 1.0,
            kl_mean: kl,
            kl_bound: kl * 2.0,
            top1_agreement: 1.0,
            top1_bound: 1.0,
            accuracy: None,
            accuracy_loss_bound: None,
            recomputed_fraction: 0.0,
            stages_ms: Stages::default(),
            pareto_kl: false,
            pareto_top1: false,
        }
    }

    #[test]
    fn the_pareto_set_keeps_only_undominated_points() {
        let mut points = vec![
            point(10.0, 0.3),
            point(5.0, 0.01),
            point(4.0, 0.02), // slower and worse than 5×/0.01
            point(1.0, 0.0),
            point(10.0, 0.4), // as fast as 10×/0.3, worse
        ];
        mark_pareto(&mut points);
        let on: Vec<bool> = points.iter().map(|p| p.pareto_kl).collect();
        assert_eq!(on, vec![true, true, false, true, false]);
    }
}
