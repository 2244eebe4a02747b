//! `attncache eval`, `attncache calibrate` and `attncache sweep`.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use super::progress;
use super::setup::{Target, load_corpus, load_model, load_policy, open_database};
use crate::cache::{LengthPolicy, Policy};
use crate::data::CorpusOptions;
use crate::engine::Engine;
use crate::eval::{
    CalibrateOptions, Classifier, Evaluation, Objective, PolicyKind, calibrate, evaluate,
};

/// Where a command reads its database and queries.
pub struct Workload<'a> {
    pub db: &'a Path,
    pub split: &'a str,
    pub limit: Option<usize>,
    pub columns: CorpusOptions,
}

/// `attncache eval`.
pub fn run_eval(
    target: &Target,
    work: Workload,
    policy: Option<&str>,
    compare: &[String],
    repeats: usize,
    json: bool,
) -> anyhow::Result<()> {
    let model = load_model(target, "eval")?;
    let db = open_database(work.db, &model)?;
    let mut policies = vec![load_policy(policy, Some(&db), &model)?];
    for spec in compare {
        policies.push(load_policy(Some(spec), Some(&db), &model)?);
    }
    let corpus = load_corpus(work.split, &work.columns, work.limit, &model)?;
    let probe = Classifier::for_task(&model, &db, &corpus)?;
    let per_policy = corpus.items.len() * (1 + repeats);
    let bar = progress::bar(
        per_policy * policies.len(),
        &format!("evaluating on {}", corpus.name),
    );
    let mut evals = Vec::new();
    for (i, policy) in policies.into_iter().enumerate() {
        let engine = Engine::new(model.clone(), db.clone(), policy)?;
        let eval = evaluate(&engine, &corpus, probe.as_ref(), repeats, &mut |d, _| {
            bar.set_position((i * per_policy + d) as u64)
        });
        evals.push(eval.inspect_err(|_| bar.finish_and_clear())?);
    }
    bar.finish_and_clear();
    let first = evals.remove(0);
    if json {
        let mut out = serde_json::to_value(&first)?;
        if !evals.is_empty() {
            out["compared"] = serde_json::to_value(&evals)?;
        }
        println!("{out}");
    } else {
        for e in std::iter::once(&first).chain(&evals) {
            print_evaluation(e);
        }
    }
    Ok(())
}

/// Human-readable summary of an evaluation.
fn print_evaluation(e: &Evaluation) {
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    println!(
        "policy {} on {} ({} queries, all counted)",
        e.policy, e.split, e.queries
    );
    println!(
        "  hit rate            {} of query × layer × head slots",
        pct(e.hit_rate)
    );
    println!("  no same-length entry {}", pct(e.no_candidate));
    println!(
        "  fidelity            mean {:.5}, p5 {:.5} (cosine cached vs exact)",
        e.fidelity_mean, e.fidelity_p5
    );
    if let (Some(kl), Some(p95)) = (e.kl_mean, e.kl_p95) {
        println!("  next-token KL       mean {kl:.5}, p95 {p95:.5} nats (exact ‖ cached)");
    }
    if let (Some(a), Some(c), Some(loss)) =
        (e.accuracy_exact, e.accuracy_cached, e.accuracy_loss_pt)
    {
        println!(
            "  accuracy            exact {}, cached {}, loss {loss:.2} pt, agreement {}",
            pct(a),
            pct(c),
            pct(e.agreement.unwrap_or(f64::NAN))
        );
    }
    println!(
        "  speedup             attention {:.3}× (look-up and map loading included), end to end {:.3}× (median of {} repeats)",
        e.attention_speedup, e.e2e_speedup, e.repeats
    );
    let (x, c) = (&e.timings_ms.exact, &e.timings_ms.cached);
    println!(
        "  mean ms per query   exact: attention {:.2}, total {:.2}",
        x.attention, x.total
    );
    println!(
        "                      cached: feature {:.2}, search {:.2}, map load {:.2}, attention {:.2}, rest {:.2}, total {:.2}",
        c.feature, c.search, c.map_load, c.attention, c.rest, c.total
    );
    println!("  hit rate per layer × head (%):");
    for (l, row) in e.hit_rate_per_head.iter().enumerate() {
        let cells: String = row.iter().map(|h| format!("{:>4.0}", h * 100.0)).collect();
        println!("    L{l}{cells}");
    }
    println!("  cacheability (mean true similarity of the neighbour's map, %):");
    for (l, row) in e.cacheability.iter().enumerate() {
        let cells: String = row
            .iter()
            .map(|s| s.map_or("   -".into(), |s| format!("{:>4.0}", s * 100.0)))
            .collect();
        println!("    L{l}{cells}");
    }
}

/// Options of `attncache calibrate`.
pub struct CalibrateArgs<'a> {
    pub budget: f64,
    pub objective: &'a str,
    pub kind: &'a str,
    pub length_policy: &'a str,
    pub out: Option<&'a Path>,
    pub keep_unprofitable: bool,
    pub json: bool,
}

/// `attncache calibrate`.
pub fn run_calibrate(target: &Target, work: Workload, args: CalibrateArgs) -> anyhow::Result<()> {
    let options = CalibrateOptions {
        budget: args.budget,
        objective: Objective::parse(args.objective)?,
        kind: PolicyKind::parse(args.kind)?,
        drop_unprofitable: !args.keep_unprofitable,
    };
    anyhow::ensure!(args.budget >= 0.0, "--budget must be at least 0");
    let model = load_model(target, "calibrate")?;
    let db = open_database(work.db, &model)?;
    let corpus = load_corpus(work.split, &work.columns, work.limit, &model)?;
    let probe = Classifier::for_task(&model, &db, &corpus)?;
    let mut start = Policy::strict(model.shape());
    start.lengths = LengthPolicy::parse(args.length_policy)?;
    let engine = Engine::new(model, db.clone(), start)?;
    let bar = progress::bar(
        corpus.items.len() + 10,
        &format!("calibrating on {}", corpus.name),
    );
    let policy = calibrate(
        &engine,
        &corpus,
        probe.as_ref(),
        options,
        &mut |d, total| {
            bar.set_length(total as u64);
            bar.set_position(d as u64)
        },
        &AtomicBool::new(false),
    );
    bar.finish_and_clear();
    let policy = policy?;
    let out = args
        .out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| db.dir().join("policy.json"));
    policy.save(&out)?;
    let cal = policy.calibration.as_ref().context("calibration result")?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "policy": out, "calibration": cal })
        );
    } else {
        println!(
            "wrote {}: {} on {}: measured {} error {:.4} (budget {}), expected hit rate {:.1}%",
            out.display(),
            policy.name,
            cal.split,
            cal.objective,
            cal.measured_error,
            cal.budget,
            cal.expected_hit_rate * 100.0
        );
    }
    Ok(())
}

/// `attncache sweep`: evaluations over a list of global thresholds.
pub fn run_sweep(
    target: &Target,
    work: Workload,
    thresholds: &[f32],
    paper: bool,
    repeats: usize,
    csv: bool,
) -> anyhow::Result<()> {
    let model = load_model(target, "sweep")?;
    let db = open_database(work.db, &model)?;
    let corpus = load_corpus(work.split, &work.columns, work.limit, &model)?;
    let probe = Classifier::for_task(&model, &db, &corpus)?;
    let mut rows = Vec::new();
    let bar = progress::bar(thresholds.len(), &format!("sweeping on {}", corpus.name));
    for &t in thresholds {
        let policy = if paper {
            Policy::paper(model.shape(), t)
        } else {
            Policy::global(model.shape(), t)
        };
        let engine = Engine::new(model.clone(), db.clone(), policy)?;
        rows.push((
            t,
            evaluate(&engine, &corpus, probe.as_ref(), repeats, &mut |_, _| {})?,
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    if csv {
        println!(
            "threshold,policy,queries,hit_rate,fidelity_mean,fidelity_p5,accuracy_exact,accuracy_cached,accuracy_loss_pt,attention_speedup,e2e_speedup"
        );
        let opt = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.6}"));
        for (t, e) in &rows {
            println!(
                "{t},{},{},{:.6},{:.6},{:.6},{},{},{},{:.4},{:.4}",
                e.policy,
                e.queries,
                e.hit_rate,
                e.fidelity_mean,
                e.fidelity_p5,
                opt(e.accuracy_exact),
                opt(e.accuracy_cached),
                opt(e.accuracy_loss_pt),
                e.attention_speedup,
                e.e2e_speedup
            );
        }
    } else {
        let points: Vec<_> = rows
            .iter()
            .map(|(t, e)| serde_json::json!({ "threshold": t, "evaluation": e }))
            .collect();
        println!(
            "{}",
            serde_json::json!({ "split": corpus.name, "points": points })
        );
    }
    Ok(())
}

/// `attncache retrieval`: look-up quality against the oracle-best entry.
pub fn run_retrieval(target: &Target, work: Workload, json: bool) -> anyhow::Result<()> {
    let model = load_model(target, "retrieval")?;
    let db = open_database(work.db, &model)?;
    let corpus = load_corpus(work.split, &work.columns, work.limit, &model)?;
    let bar = progress::bar(corpus.items.len(), &format!("retrieval on {}", corpus.name));
    let layers = crate::eval::retrieval_quality(&model, &db, &corpus, &mut |d, _| {
        bar.set_position(d as u64)
    });
    bar.finish_and_clear();
    let layers = layers?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "split": corpus.name, "entries": db.entries().len(), "layers": layers })
        );
        return Ok(());
    }
    println!(
        "look-up vs oracle-best same-length entry ({} entries, {} queries of {}; similarity = 1 − mean row TV, mean over heads)",
        db.entries().len(),
        corpus.items.len(),
        corpus.name
    );
    println!(
        "{:>5} {:>7} {:>7} | {:>10} {:>7} | {:>10} {:>7} | {:>10}",
        "layer", "queries", "oracle", "per-layer", "gap", "single", "gap", "random gap"
    );
    for (l, r) in layers.iter().enumerate() {
        println!(
            "{l:>5} {:>7} {:>7.3} | {:>9.1}% {:>7.3} | {:>9.1}% {:>7.3} | {:>10.3}",
            r.queries,
            r.oracle_similarity,
            r.per_layer_oracle_rate * 100.0,
            r.per_layer_gap,
            r.single_oracle_rate * 100.0,
            r.single_gap,
            r.random_gap
        );
    }
    Ok(())
}
