//! The AttnCache paper's accounting reproduced beside ours, one choice at a
//! time, so a reader sees what each contributes to a published speedup.
//!
//! The steps are cumulative, each on the same timed runs as far as it can:
//! 1. `honest` — ours: every query, look-up and map loading timed, against
//!    the fastest exact path (the fused kernels);
//! 2. `hits only` — only the queries whose cached run reused a map;
//! 3. `look-up untimed` — the feature, the search and the map loading left
//!    out of the cached side;
//! 4. `padded inputs` — every input cut and padded to one fixed length, as
//!    the paper's reference code does: a database built from padded inputs
//!    (`build --pad-to`), so every query shares its one length bucket, and
//!    both sides run the padded length (still hits only, look-up untimed);
//!    left out when no padded database is given;
//! 5. `unfused baseline` — both sides re-timed on the eager candle ops (the
//!    reference kernels), as the paper's eager attention (on the padded
//!    database when there is one).

use serde::Serialize;

use super::evaluate::pass_median_ratio;
use super::stats::mean;
use crate::engine::{StageTimings, TimedPair};

/// Which accounting `eval` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accounting {
    /// Ours only (all queries, look-up counted, fastest exact path).
    Ours,
    /// The paper's: the last step of the ladder as the headline, with the
    /// ladder in the JSON.
    Paper,
    /// Every step, side by side.
    Both,
}

impl Accounting {
    /// Parses `ours`, `paper` or `both`.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        match name {
            "ours" => Ok(Accounting::Ours),
            "paper" => Ok(Accounting::Paper),
            "both" => Ok(Accounting::Both),
            other => anyhow::bail!("unknown accounting `{other}`: use ours, paper or both"),
        }
    }
}

/// One step of the ladder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountingStep {
    /// What this step changes (cumulative).
    pub step: &'static str,
    /// Queries it counts.
    pub queries: usize,
    /// Mean share of heads reused over the counted queries.
    pub hit_rate: f64,
    /// Exact attention ÷ cached attention (`None` when nothing is counted).
    pub attention_speedup: Option<f64>,
    /// Exact ÷ cached time, tokenisation to output.
    pub e2e_speedup: Option<f64>,
    /// The padded step only: the same queries' *unpadded* exact time ÷
    /// their padded cached time (look-up untimed) — what padding buys over
    /// running each input at its own length, (attention, end to end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against_unpadded_exact: Option<(Option<f64>, Option<f64>)>,
}

/// The ladder from `fused` (timed pairs on the fastest exact path),
/// `padded` (the same queries padded, from a padded database, if any) and
/// `eager` (the last of those re-timed on the reference kernels), all
/// pass-major with `per_pass` pairs per pass.
pub fn accounting_ladder(
    fused: &[TimedPair],
    padded: Option<&[TimedPair]>,
    eager: &[TimedPair],
    per_pass: usize,
) -> Vec<AccountingStep> {
    let all = |_: &TimedPair| true;
    let hits = |p: &TimedPair| p.hit_rate > 0.0;
    let with_lookup = StageTimings::attention_with_lookup;
    let attention = |t: &StageTimings| t.attention;
    let total = |t: &StageTimings| t.total;
    let untimed = |t: &StageTimings| t.total - t.lookup();
    let step = |name: &'static str,
                pairs: &[TimedPair],
                keep: &dyn Fn(&TimedPair) -> bool,
                cached_attention: &dyn Fn(&StageTimings) -> f64,
                cached_total: &dyn Fn(&StageTimings) -> f64| {
        let kept: Vec<f64> = pairs
            .iter()
            .filter(|p| keep(p))
            .map(|p| p.hit_rate)
            .collect();
        let passes = pairs.len().div_ceil(per_pass.max(1)).max(1);
        AccountingStep {
            step: name,
            against_unpadded_exact: None,
            queries: kept.len() / passes,
            hit_rate: mean(&kept),
            attention_speedup: pass_median_ratio(
                pairs,
                per_pass,
                keep,
                with_lookup,
                cached_attention,
            ),
            e2e_speedup: pass_median_ratio(pairs, per_pass, keep, total, cached_total),
        }
    };
    let mut steps = vec![
        step("honest", fused, &all, &with_lookup, &total),
        step("hits only", fused, &hits, &with_lookup, &total),
        step("look-up untimed", fused, &hits, &attention, &untimed),
    ];
    if let Some(padded) = padded {
        let mut padded_step = step("padded inputs", padded, &hits, &attention, &untimed);
        // Each padded cached run beside the same query's unpadded exact run.
        let mixed: Vec<TimedPair> = fused
            .iter()
            .zip(padded)
            .map(|(f, p)| TimedPair {
                exact: f.exact,
                ..*p
            })
            .collect();
        padded_step.against_unpadded_exact = Some((
            pass_median_ratio(&mixed, per_pass, hits, attention, attention),
            pass_median_ratio(&mixed, per_pass, hits, total, untimed),
        ));
        steps.push(padded_step);
    }
    steps.push(step("unfused baseline", eager, &hits, &attention, &untimed));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(exact: f64, cached: f64, lookup: f64, hit_rate: f64) -> TimedPair {
        let t = |attention: f64, extra: f64| StageTimings {
            attention,
            search: extra,
            total: attention + extra + 10.0,
            ..StageTimings::default()
        };
        TimedPair {
            exact: t(exact, 0.0),
            cached: t(cached, lookup),
            hit_rate,
        }
    }

    #[test]
    fn each_step_drops_what_it_says_and_nothing_else() {
        // One pass: a hit (attention 10 → 4, look-up 2) and a miss (10 → 10, look-up 2).
        let fused = [pair(10.0, 4.0, 2.0, 1.0), pair(10.0, 10.0, 2.0, 0.0)];
        let eager = [pair(20.0, 4.0, 2.0, 1.0), pair(20.0, 20.0, 2.0, 0.0)];
        let steps = accounting_ladder(&fused, None, &eager, 2);
        let names: Vec<_> = steps.iter().map(|s| s.step).collect();
        assert_eq!(
            names,
            ["honest", "hits only", "look-up untimed", "unfused baseline"]
        );
        let close = |a: Option<f64>, b: f64| assert!((a.unwrap() - b).abs() < 1e-9, "{a:?} vs {b}");
        // Honest: attention (10 + 10) / (6 + 12), total 40 / 38.
        close(steps[0].attention_speedup, 20.0 / 18.0);
        close(steps[0].e2e_speedup, 40.0 / 38.0);
        assert_eq!((steps[0].queries, steps[0].hit_rate), (2, 0.5));
        // Hits only: 10 / 6, 20 / 16.
        close(steps[1].attention_speedup, 10.0 / 6.0);
        close(steps[1].e2e_speedup, 20.0 / 16.0);
        assert_eq!((steps[1].queries, steps[1].hit_rate), (1, 1.0));
        // Look-up untimed: 10 / 4, 20 / 14.
        close(steps[2].attention_speedup, 10.0 / 4.0);
        close(steps[2].e2e_speedup, 20.0 / 14.0);
        // Unfused baseline: 20 / 4, 30 / 14.
        close(steps[3].attention_speedup, 20.0 / 4.0);
        close(steps[3].e2e_speedup, 30.0 / 14.0);
    }

    #[test]
    fn the_padded_step_sits_before_the_unfused_one_and_counts_its_own_hits() {
        let fused = [pair(10.0, 4.0, 2.0, 1.0), pair(10.0, 10.0, 2.0, 0.0)];
        // Padded: both sides longer, and both queries hit (one bucket).
        let padded = [pair(30.0, 6.0, 2.0, 1.0), pair(30.0, 10.0, 2.0, 0.5)];
        let eager = [pair(60.0, 6.0, 2.0, 1.0), pair(60.0, 10.0, 2.0, 0.5)];
        let steps = accounting_ladder(&fused, Some(&padded), &eager, 2);
        let names: Vec<_> = steps.iter().map(|s| s.step).collect();
        assert_eq!(
            names,
            [
                "honest",
                "hits only",
                "look-up untimed",
                "padded inputs",
                "unfused baseline"
            ]
        );
        let padded_step = &steps[3];
        assert_eq!((padded_step.queries, padded_step.hit_rate), (2, 0.75));
        // Attention 60 / 16; end to end (30 + 10 each side) 80 / 36.
        let close = |a: Option<f64>, b: f64| assert!((a.unwrap() - b).abs() < 1e-9, "{a:?} vs {b}");
        close(padded_step.attention_speedup, 60.0 / 16.0);
        close(padded_step.e2e_speedup, 80.0 / 36.0);
        close(steps[4].attention_speedup, 120.0 / 16.0);
        // Against the unpadded exact runs (attention 10 each, total 20 each):
        // attention 20 / 16, end to end 40 / 36.
        let (attention, e2e) = padded_step.against_unpadded_exact.unwrap();
        close(attention, 20.0 / 16.0);
        close(e2e, 40.0 / 36.0);
        assert!(
            steps[..3]
                .iter()
                .all(|s| s.against_unpadded_exact.is_none())
        );
    }

    #[test]
    fn no_hit_leaves_the_hit_steps_empty() {
        let fused = [pair(10.0, 10.0, 2.0, 0.0)];
        let steps = accounting_ladder(&fused, None, &fused, 1);
        assert!(steps[0].e2e_speedup.is_some());
        assert!(
            steps[1..]
                .iter()
                .all(|s| s.e2e_speedup.is_none() && s.queries == 0)
        );
    }
}
