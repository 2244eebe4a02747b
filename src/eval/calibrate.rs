//! Calibration: the loosest thresholds whose measured error on a
//! calibration split stays within a budget.
//!
//! Ours (per layer × head): the exact model's own inputs are looked up once
//! per query, giving for every head samples of (feature distance, true
//! similarity of the neighbour's map). For a map-error tolerance ε, each
//! head's threshold is the largest distance whose admitted samples have a
//! mean map error (1 − similarity) of at most ε. ε is then chosen by
//! bisection as the largest value whose *measured* output error — from real
//! cached runs over the whole split — stays within the budget.
//!
//! Ours also serves heads whose map depends on the length only (classed
//! positional when the database was built, same-length similarity at least
//! [`STATIC_MIN_SIMILARITY`]) from the database's per-length table, with no
//! look-up; every measured error includes them, and the strict fallback
//! drops them.
//!
//! Paper (one look-up, all or nothing): the global distance threshold is
//! chosen by bisection in the same way.
//!
//! Ours, cost-checked, also calibrates a wholesale rule — every head of a
//! layer within one distance threshold, the neighbour carried from layer to
//! layer; the thresholds admit the same share of each layer's observed
//! neighbours, the loosest share within budget found by bisection — and keeps
//! whichever of the two saves more attention time net of its look-up on the
//! calibration split. A per-head rule reuses the heads its neighbour serves
//! well; where nearly every map of the nearest entry is good enough (the
//! oracle's best points on few-shot prompts), reusing them all with one
//! search saves more.
//!
//! Finally, honest accounting: a layer whose hits on the calibration split
//! save less attention time than its look-ups cost (exact layer times, the
//! FLOP share a reused head skips, measured look-up time) gets no look-up at
//! all (identical inputs only); for the paper's single look-up, the same test
//! applies to the whole model.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::classifier::Classifier;
use super::stats::accuracy_loss_bound;
use crate::cache::policy::{Calibration, CandidateRule, IDENTICAL, RuleFamily};
use crate::cache::{HeadType, Lookup, Policy};
use crate::data::Corpus;
use crate::engine::{Engine, Mode, Observation};
use crate::model::{ModelShape, cosine, ms};

/// Bisection steps.
const STEPS: usize = 10;

/// Least same-length similarity of a positional head served from the
/// per-length table (MiniLM's layer 0 head 2: 0.9993).
pub const STATIC_MIN_SIMILARITY: f32 = 0.99;

/// What the error budget bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Mean over queries of 1 − cosine(cached, exact sentence embedding).
    Fidelity,
    /// Upper one-sided 95% confidence bound of the probe's accuracy loss
    /// (exact − cached, paired), in percentage points:
    /// `(max(b − c, 0) + 1.645·√(b + c)) / n` with `b` queries the exact run
    /// gets right and the cached run wrong, `c` the reverse. A net gain counts
    /// as no gain and flips that cancel out still count against the budget, so
    /// calibration cannot chase noise (needs a labelled split).
    Accuracy,
}

impl Objective {
    /// Parses `fidelity` or `accuracy`.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        match name {
            "fidelity" => Ok(Objective::Fidelity),
            "accuracy" => Ok(Objective::Accuracy),
            other => anyhow::bail!("unknown objective `{other}`: use fidelity or accuracy"),
        }
    }

    /// The largest error the objective can measure: 2 for fidelity
    /// (1 − cosine), 100 points for accuracy; a budget above it admits
    /// anything.
    pub fn max_error(self) -> f64 {
        match self {
            Objective::Fidelity => 2.0,
            Objective::Accuracy => 100.0,
        }
    }
}

/// Which decision rule is calibrated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// Per-layer look-up, per-head thresholds.
    Ours,
    /// One look-up per input, all or nothing, one threshold.
    Paper,
}

impl PolicyKind {
    /// Parses `ours` or `paper`.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        match name {
            "ours" => Ok(PolicyKind::Ours),
            "paper" => Ok(PolicyKind::Paper),
            other => anyhow::bail!("unknown policy kind `{other}`: use ours or paper"),
        }
    }
}

/// Calibration settings.
#[derive(Debug, Clone, Copy)]
pub struct CalibrateOptions {
    /// The error budget (units of the objective).
    pub budget: f64,
    /// What the budget bounds.
    pub objective: Objective,
    /// Which rule to calibrate.
    pub kind: PolicyKind,
    /// Drop look-ups whose hits save less than they cost (on by default;
    /// off reproduces a rule as published).
    pub drop_unprofitable: bool,
}

/// Measured error and hit rate of one candidate policy.
struct Trial {
    error: f64,
    hit_rate: f64,
    /// Per layer: attention time its looked-up hits save, summed over
    /// queries (ms, estimated from each query's exact layer time and the
    /// FLOP share a reused head skips; static heads excluded).
    saved_ms: Vec<f64>,
    /// The cost of one search, summed over queries (ms).
    search_ms: f64,
    /// The look-up time (features, searches, re-ranks) of the trial's own
    /// cached runs, summed over queries (ms).
    lookup_ms: f64,
}

impl Trial {
    /// Attention time the looked-up hits save less what the look-up cost (ms).
    fn net_saving(&self) -> f64 {
        self.saved_ms.iter().sum::<f64>() - self.lookup_ms
    }

    /// This trial as a candidate rule, net saving per query over `queries`.
    fn candidate(&self, rule: RuleFamily, queries: usize, kept: bool) -> CandidateRule {
        CandidateRule {
            rule,
            measured_error: self.error,
            expected_hit_rate: self.hit_rate,
            net_saving_ms: self.net_saving() / queries.max(1) as f64,
            kept,
        }
    }
}

/// Calibrates a policy for `engine`'s database (and its length policy) on
/// `corpus`; `progress(step, steps)` reports each observed query, then each
/// bisection step; setting `cancel` stops it with an error.
pub fn calibrate(
    engine: &Engine,
    corpus: &Corpus,
    probe: Option<&Classifier>,
    options: CalibrateOptions,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &AtomicBool,
) -> anyhow::Result<Policy> {
    anyhow::ensure!(
        !corpus.items.is_empty(),
        "the calibration split {} is empty",
        corpus.name
    );
    if options.objective == Objective::Accuracy {
        anyhow::ensure!(
            probe.is_some() && corpus.items.iter().any(|i| i.label.is_some()),
            "the accuracy objective needs labels in the database and in {}: use --objective fidelity",
            corpus.name
        );
    }
    let shape = *engine.model().shape();
    let lengths = engine.policy().lengths;
    let mut observer = engine.clone();
    let mut base = match options.kind {
        PolicyKind::Ours => Policy::global(&shape, 0.0),
        PolicyKind::Paper => Policy::paper(&shape, 0.0),
    };
    base.lengths = lengths;
    observer.set_policy(base.clone())?;
    if options.kind == PolicyKind::Ours {
        base.static_heads = static_heads(engine, &shape);
    }
    let wholesale = options.kind == PolicyKind::Ours && options.drop_unprofitable;
    let steps = corpus.items.len() + STEPS + if wholesale { STEPS + 1 } else { 0 };
    let observations = corpus
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            anyhow::ensure!(!cancel.load(Ordering::Relaxed), "calibration cancelled");
            let observation = observer.observe(&item.text);
            progress(i + 1, steps);
            observation
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let samples = samples_per_head(&observations, shape.layers, shape.heads);
    base.predictor = fit_predictors(&samples);

    let policy_at = |x: f64| -> Policy {
        let mut p = base.clone();
        match options.kind {
            PolicyKind::Ours => p.max_distance = thresholds_for(&samples, x),
            PolicyKind::Paper => p.max_distance = vec![vec![x as f32; shape.heads]; shape.layers],
        }
        p
    };
    let measure = |policy: &Policy| -> anyhow::Result<Trial> {
        let mut trial_engine = engine.clone();
        trial_engine.set_policy(policy.clone())?;
        measure_trial(
            &trial_engine,
            corpus,
            &observations,
            probe,
            options.objective,
        )
    };
    // Bisection on ε (map error, ours) or the distance (paper), from the
    // strict end; errors grow with the knob, so keep the last value within
    // budget.
    let hi = match options.kind {
        PolicyKind::Ours => 1.0,
        PolicyKind::Paper => 2.0,
    };
    let mut best = (policy_at(0.0), measure(&policy_at(0.0))?);
    if best.1.error > options.budget {
        // Even the strictest setting of the knob is over budget: reuse
        // identical inputs only.
        let strict = Policy {
            max_distance: vec![vec![IDENTICAL; shape.heads]; shape.layers],
            static_heads: Vec::new(),
            ..base.clone()
        };
        let trial = measure(&strict)?;
        best = (strict, trial);
    }
    let mut step = corpus.items.len();
    let mut next_step = || {
        step += 1;
        progress(step, steps);
    };
    let bisected = loosest_within(
        options.budget,
        (0.0, hi),
        &policy_at,
        &measure,
        &mut next_step,
        cancel,
    )?;
    let (mut policy, mut trial) = bisected.unwrap_or(best);
    let best_policy = policy.clone();
    // Drop look-ups that cost more than their hits save.
    let mut unprofitable = Vec::new();
    match options.kind {
        _ if !options.drop_unprofitable => {}
        PolicyKind::Ours => {
            for (l, &saved) in trial.saved_ms.iter().enumerate() {
                if policy.may_hit(l) && saved < trial.search_ms {
                    policy.max_distance[l] = vec![IDENTICAL; shape.heads];
                    unprofitable.push(l);
                }
            }
        }
        PolicyKind::Paper => {
            if policy.may_hit(0) && trial.saved_ms.iter().sum::<f64>() < trial.search_ms {
                policy.max_distance = vec![vec![IDENTICAL; shape.heads]; shape.layers];
                unprofitable = (0..shape.layers).collect();
            }
        }
    }
    // Static heads need no look-up, but a layer that reuses any head loses
    // the fused path's single Q·K·V product: keep them only where that
    // layer's attention, timed, is faster with them than exact.
    let mut unprofitable_static = Vec::new();
    if options.drop_unprofitable && (0..shape.layers).any(|l| policy.has_static(l)) {
        let mut timed = engine.clone();
        timed.set_policy(policy.clone())?;
        let (with, without) = static_attention_ms(&timed, corpus, cancel)?;
        for l in 0..shape.layers {
            if policy.has_static(l) && with[l] >= without[l] {
                policy.static_heads[l] = vec![false; shape.heads];
                unprofitable_static.push(l);
            }
        }
        if !policy.static_heads.iter().flatten().any(|&s| s) {
            policy.static_heads.clear();
        }
    }
    if !unprofitable.is_empty() || !unprofitable_static.is_empty() {
        let pruned = measure(&policy)?;
        if pruned.error <= options.budget {
            trial = pruned;
        } else {
            // Reusing less moved the error over the budget (it is not
            // monotone): keep the policy as bisection found it.
            policy = best_policy;
            unprofitable.clear();
            unprofitable_static.clear();
        }
    }
    // Fewer searches, each tried in turn and kept only where, within budget,
    // the searches it saves outweigh the hits it loses: stopping at the
    // first layer that reuses nothing, then carrying a layer's neighbour
    // into the next where it serves every head there.
    let searched_layers = (0..shape.layers).filter(|&l| policy.may_hit(l)).count();
    if options.drop_unprofitable && policy.lookup == Lookup::PerLayer && searched_layers > 1 {
        let fewer_searches: [fn(&Policy) -> Policy; 2] = [
            |p| Policy {
                stop_after_miss: true,
                ..p.clone()
            },
            |p| Policy {
                carry_neighbour: true,
                ..p.clone()
            },
        ];
        for fewer in fewer_searches {
            let candidate = fewer(&policy);
            let measured = measure(&candidate)?;
            if measured.error <= options.budget && measured.net_saving() > trial.net_saving() {
                (policy, trial) = (candidate, measured);
            }
        }
    }
    // The wholesale rule, kept where it saves more, net, within budget.
    let mut candidates = Vec::new();
    if wholesale {
        // Every head of a layer shares the layer's look-up distance, the
        // neighbour carried; the layer's samples are those of any one head.
        let wholesale_with = |max_distance: Vec<Vec<f32>>| Policy {
            max_distance,
            carry_neighbour: true,
            ..base.clone()
        };
        let wholesale_at = |share: f64| -> Policy {
            wholesale_with(
                (samples.iter())
                    .map(|layer| vec![admitting(layer.first(), share); shape.heads])
                    .collect(),
            )
        };
        // Every map of the nearest entry first: where that is within budget,
        // no bisection is needed.
        let loosest = wholesale_with(vec![vec![2.0; shape.heads]; shape.layers]);
        let measured = measure(&loosest)?;
        next_step();
        let found = match measured.error <= options.budget {
            true => Some((loosest, measured)),
            false => loosest_within(
                options.budget,
                (0.0, 1.0),
                &wholesale_at,
                &measure,
                &mut next_step,
                cancel,
            )?,
        };
        let queries = corpus.items.len();
        let kept = found
            .as_ref()
            .is_some_and(|(_, w)| keeps_wholesale(&trial, w));
        candidates.push(trial.candidate(RuleFamily::PerHead, queries, !kept));
        if let Some((w_policy, w_trial)) = found {
            candidates.push(w_trial.candidate(RuleFamily::Wholesale, queries, kept));
            if kept {
                (policy, trial) = (w_policy, w_trial);
                unprofitable.clear();
                unprofitable_static.clear();
            }
        }
    }
    progress(steps, steps);
    policy.name = match options.kind {
        PolicyKind::Ours => {
            format!("calibrated:{:?}≤{}", options.objective, options.budget).to_lowercase()
        }
        PolicyKind::Paper => format!(
            "paper-calibrated:{:?}≤{}",
            options.objective, options.budget
        )
        .to_lowercase(),
    };
    policy.calibration = Some(Calibration {
        split: corpus.name.clone(),
        objective: format!("{:?}", options.objective).to_lowercase(),
        budget: options.budget,
        measured_error: trial.error,
        expected_hit_rate: trial.hit_rate,
        unprofitable_layers: unprofitable,
        unprofitable_static_layers: unprofitable_static,
        candidates,
    });
    Ok(policy)
}

/// The loosest knob in `range` whose measured error stays within `budget`,
/// by [`STEPS`] bisection steps from the strict end (errors grow with the
/// knob, so the last value within budget is kept); `None` when every step
/// was over budget.
fn loosest_within(
    budget: f64,
    range: (f64, f64),
    policy_at: &dyn Fn(f64) -> Policy,
    measure: &dyn Fn(&Policy) -> anyhow::Result<Trial>,
    next_step: &mut dyn FnMut(),
    cancel: &AtomicBool,
) -> anyhow::Result<Option<(Policy, Trial)>> {
    let (mut lo, mut hi) = range;
    let mut best = None;
    for _ in 0..STEPS {
        anyhow::ensure!(!cancel.load(Ordering::Relaxed), "calibration cancelled");
        let mid = (lo + hi) / 2.0;
        let policy = policy_at(mid);
        let trial = measure(&policy)?;
        if trial.error <= budget {
            lo = mid;
            best = Some((policy, trial));
        } else {
            hi = mid;
        }
        next_step();
    }
    Ok(best)
}

/// Whether a wholesale trial within budget beats the per-head one: it must
/// save more attention time, net of its look-up, and save some at all.
fn keeps_wholesale(per_head: &Trial, wholesale: &Trial) -> bool {
    let net = wholesale.net_saving();
    net > 0.0 && net > per_head.net_saving()
}

/// The heads the database classes positional with a same-length similarity
/// of at least [`STATIC_MIN_SIMILARITY`]: served from the per-length table
/// with no look-up (kept only if the budget allows: the bisection's every
/// step, its strictest included, measures the error with them).
fn static_heads(engine: &Engine, shape: &ModelShape) -> Vec<Vec<bool>> {
    let Some(types) = engine.database().and_then(|db| db.head_types()) else {
        return Vec::new();
    };
    let rows: Vec<Vec<bool>> = (0..shape.layers)
        .map(|l| {
            (0..shape.heads)
                .map(|h| {
                    types.get(l, h).is_some_and(|p| {
                        p.kind == HeadType::Positional
                            && p.positional.is_some_and(|s| s >= STATIC_MIN_SIMILARITY)
                    })
                })
                .collect()
        })
        .collect();
    match rows.iter().flatten().any(|&s| s) {
        true => rows,
        false => Vec::new(),
    }
}

/// Per layer, the attention time (map loading included) of `engine`'s
/// cached runs and of exact runs over `corpus`, interleaved (the order
/// alternating), summed (ms).
fn static_attention_ms(
    engine: &Engine,
    corpus: &Corpus,
    cancel: &AtomicBool,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let layers = engine.model().shape().layers;
    let (mut with, mut without) = (vec![0f64; layers], vec![0f64; layers]);
    for (i, item) in corpus.items.iter().enumerate() {
        anyhow::ensure!(!cancel.load(Ordering::Relaxed), "calibration cancelled");
        let (cached, exact) = if i % 2 == 0 {
            let cached = engine.run(&item.text, Mode::Cached)?;
            (cached, engine.run(&item.text, Mode::Exact)?)
        } else {
            let exact = engine.run(&item.text, Mode::Exact)?;
            (engine.run(&item.text, Mode::Cached)?, exact)
        };
        for l in 0..layers {
            let c = cached.trace.layers[l].timing;
            with[l] += ms(c.attention + c.plan);
            without[l] += ms(exact.trace.layers[l].timing.attention);
        }
    }
    Ok((with, without))
}

/// Per layer × head, the (distance, similarity) samples, sorted by distance.
fn samples_per_head(
    observations: &[Observation],
    layers: usize,
    heads: usize,
) -> Vec<Vec<Vec<(f32, f32)>>> {
    let mut samples = vec![vec![Vec::new(); heads]; layers];
    for obs in observations {
        for (l, layer) in obs.layers.iter().enumerate() {
            if let Some((distance, sims)) = layer {
                for (h, &s) in sims.iter().enumerate() {
                    samples[l][h].push((*distance, s));
                }
            }
        }
    }
    for head in samples.iter_mut().flatten() {
        head.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    samples
}

/// The distance threshold that admits `share` of a head's samples (sorted
/// by distance): the distance of its ⌈share · n⌉-th closest, identical
/// inputs only when that is none.
fn admitting(samples: Option<&Vec<(f32, f32)>>, share: f64) -> f32 {
    let samples = samples.map_or(&[][..], |s| s.as_slice());
    let admitted = (share * samples.len() as f64).ceil() as usize;
    match admitted.min(samples.len()).checked_sub(1) {
        Some(last) => samples[last].0.max(IDENTICAL),
        None => IDENTICAL,
    }
}

/// Each head's largest distance whose admitted samples (all with a smaller
/// or equal distance) have a mean map error of at most `epsilon`.
fn thresholds_for(samples: &[Vec<Vec<(f32, f32)>>], epsilon: f64) -> Vec<Vec<f32>> {
    samples
        .iter()
        .map(|layer| {
            layer
                .iter()
                .map(|head| {
                    let mut threshold = IDENTICAL;
                    let mut error_sum = 0f64;
                    for (i, &(d, s)) in head.iter().enumerate() {
                        error_sum += 1.0 - s as f64;
                        if error_sum / (i + 1) as f64 <= epsilon {
                            threshold = threshold.max(d);
                        }
                    }
                    threshold
                })
                .collect()
        })
        .collect()
}

/// Least-squares fit of similarity ≈ a − b·distance per head.
fn fit_predictors(samples: &[Vec<Vec<(f32, f32)>>]) -> Vec<Vec<[f32; 2]>> {
    samples
        .iter()
        .map(|layer| {
            layer
                .iter()
                .map(|head| {
                    let n = head.len() as f64;
                    if n < 2.0 {
                        return [1.0, 1.0];
                    }
                    let (mx, my) = (
                        head.iter().map(|p| p.0 as f64).sum::<f64>() / n,
                        head.iter().map(|p| p.1 as f64).sum::<f64>() / n,
                    );
                    let sxx: f64 = head.iter().map(|p| (p.0 as f64 - mx).powi(2)).sum();
                    let sxy: f64 = head
                        .iter()
                        .map(|p| (p.0 as f64 - mx) * (p.1 as f64 - my))
                        .sum();
                    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
                    [(my - slope * mx) as f32, (-slope) as f32]
                })
                .collect()
        })
        .collect()
}

/// Runs every calibration query cached and measures the objective against
/// the exact embeddings observed before.
fn measure_trial(
    engine: &Engine,
    corpus: &Corpus,
    observations: &[Observation],
    probe: Option<&Classifier>,
    objective: Objective,
) -> anyhow::Result<Trial> {
    let (mut fidelity_loss, mut hit_rate) = (0f64, 0f64);
    let (mut lost, mut gained, mut labelled) = (0usize, 0usize, 0usize);
    let model = engine.model();
    let mut saved_ms = vec![0f64; model.shape().layers];
    let mut search_ms = 0f64;
    let mut lookup_ms = 0f64;
    for (item, obs) in corpus.items.iter().zip(observations) {
        let run = engine.run(&item.text, Mode::Cached)?;
        fidelity_loss += 1.0 - cosine(&run.embedding, &obs.embedding) as f64;
        hit_rate += run.trace.hit_rate;
        let cost = model.layer_cost(obs.tokens);
        let share = cost.skippable_per_head / cost.attention;
        for (l, layer) in run.trace.layers.iter().enumerate() {
            // Static heads need no look-up: their savings do not pay for it.
            let hits = (layer.heads.iter().enumerate())
                .filter(|&(h, head)| head.hit && !engine.policy().is_static(l, h))
                .count() as f64;
            saved_ms[l] += hits * share * obs.attention_ms[l];
        }
        search_ms += obs.search_ms;
        lookup_ms += run.trace.timings.search_stages();
        if let (Some(probe), Some(label)) = (probe, item.label.as_deref()) {
            labelled += 1;
            let exact_right = probe.predict(&obs.embedding) == label;
            let cached_right = probe.predict(&run.embedding) == label;
            lost += usize::from(exact_right && !cached_right);
            gained += usize::from(!exact_right && cached_right);
        }
    }
    let n = corpus.items.len() as f64;
    let error = match objective {
        Objective::Fidelity => fidelity_loss / n,
        Objective::Accuracy => accuracy_loss_bound(lost, gained, labelled),
    };
    Ok(Trial {
        error,
        hit_rate: hit_rate / n,
        saved_ms,
        search_ms,
        lookup_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_admit_the_longest_prefix_within_the_tolerance() {
        // One head: errors 0, 0.1, 0.5 at distances 0.1, 0.2, 0.3.
        let samples = vec![vec![vec![(0.1, 1.0), (0.2, 0.9), (0.3, 0.5)]]];
        assert_eq!(thresholds_for(&samples, 0.0), vec![vec![0.1]]);
        assert_eq!(thresholds_for(&samples, 0.06), vec![vec![0.2]]);
        assert_eq!(thresholds_for(&samples, 0.25), vec![vec![0.3]]);
        // No samples: identical inputs only.
        assert_eq!(thresholds_for(&[vec![vec![]]], 0.5), vec![vec![IDENTICAL]]);
    }

    #[test]
    fn a_share_admits_that_many_of_the_closest_samples() {
        let head = vec![(0.001, 1.0), (0.002, 0.9), (0.004, 0.5), (0.008, 0.5)];
        assert_eq!(admitting(Some(&head), 0.0), IDENTICAL);
        assert_eq!(admitting(Some(&head), 0.25), 0.001);
        assert_eq!(admitting(Some(&head), 0.3), 0.002);
        assert_eq!(admitting(Some(&head), 1.0), 0.008);
        assert_eq!(admitting(None, 0.5), IDENTICAL);
        assert_eq!(admitting(Some(&vec![(0.0, 1.0)]), 1.0), IDENTICAL);
    }

    #[test]
    fn accuracy_bound_counts_cancelling_flips() {
        assert_eq!(accuracy_loss_bound(0, 0, 100), 0.0);
        // 2 lost, 2 gained: no net loss, but 4 flips widen the bound.
        assert!((accuracy_loss_bound(2, 2, 100) - 1.645 * 2.0).abs() < 1e-9);
        assert!(accuracy_loss_bound(3, 0, 100) > 3.0);
    }

    #[test]
    fn accuracy_bound_credits_no_net_gain() {
        // 2 lost, 10 gained: a net gain of 8 answers, counted as none; the
        // 12 flips alone put the bound at 1.645·√12 ≈ 5.7 points.
        let bound = accuracy_loss_bound(2, 10, 100);
        assert!((bound - 1.645 * 12f64.sqrt()).abs() < 1e-9);
        assert!(bound > accuracy_loss_bound(2, 2, 100));
    }

    /// A trial with this error, saving `saved` ms in one layer for a
    /// look-up of `lookup` ms.
    fn trial(error: f64, saved: f64, lookup: f64) -> Trial {
        Trial {
            error,
            hit_rate: 0.0,
            saved_ms: vec![saved],
            search_ms: 0.0,
            lookup_ms: lookup,
        }
    }

    #[test]
    fn bisection_keeps_the_loosest_knob_within_budget() {
        let shape = ModelShape {
            layers: 1,
            heads: 1,
            head_dim: 1,
            hidden: 1,
            max_positions: 8,
        };
        let at = |d: f64| Policy::global(&shape, d as f32);
        // The error grows with the distance: 0.3 at 1.5, so within 0.3 the
        // loosest distance is just under 1.5.
        let measure = |p: &Policy| Ok(trial(p.max_distance[0][0] as f64 / 5.0, 0.0, 0.0));
        let mut steps = 0;
        let cancel = AtomicBool::new(false);
        let (policy, found) =
            loosest_within(0.3, (0.0, 2.0), &at, &measure, &mut || steps += 1, &cancel)
                .unwrap()
                .unwrap();
        let d = policy.max_distance[0][0] as f64;
        assert!(d <= 1.5 && d > 1.5 - 2.0 / 1024.0, "{d}");
        assert!(found.error <= 0.3);
        assert_eq!(steps, STEPS);
        // Over budget everywhere: nothing.
        let over = |_: &Policy| Ok(trial(1.0, 0.0, 0.0));
        let none = loosest_within(0.3, (0.0, 2.0), &at, &over, &mut || {}, &cancel).unwrap();
        assert!(none.is_none());
        // Cancelled: an error, not a policy.
        cancel.store(true, Ordering::Relaxed);
        assert!(loosest_within(0.3, (0.0, 2.0), &at, &measure, &mut || {}, &cancel).is_err());
    }

    #[test]
    fn wholesale_is_kept_only_where_it_saves_more_net_of_its_look_up() {
        let per_head = trial(0.0, 10.0, 4.0);
        // More hits and fewer searches: kept.
        assert!(keeps_wholesale(&per_head, &trial(0.0, 30.0, 1.0)));
        // Saves more, but its look-up eats the difference: not kept.
        assert!(!keeps_wholesale(&per_head, &trial(0.0, 12.0, 7.0)));
        // Better than a per-head rule that loses time, but still a loss.
        assert!(!keeps_wholesale(
            &trial(0.0, 0.0, 3.0),
            &trial(0.0, 1.0, 2.0)
        ));
        let kept = trial(0.5, 30.0, 1.0).candidate(RuleFamily::Wholesale, 10, true);
        assert!((kept.net_saving_ms - 2.9).abs() < 1e-12 && kept.measured_error == 0.5);
        assert!(kept.kept);
    }

    #[test]
    fn predictor_fits_a_line() {
        let samples = vec![vec![vec![(0.0, 1.0), (0.5, 0.75), (1.0, 0.5)]]];
        let [a, b] = fit_predictors(&samples)[0][0];
        assert!((a - 1.0).abs() < 1e-6 && (b - 0.5).abs() < 1e-6, "{a} {b}");
    }
}
