//! `attncache eval`, `attncache calibrate` and `attncache sweep`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use super::progress;
use super::setup::{Target, load_corpus, load_model, load_policy, open_database};
use crate::cache::{LengthPolicy, Policy, feature};
use crate::data::CorpusOptions;
use crate::engine::Engine;
use crate::eval::{
    Accounting, AccountingStep, CalibrateOptions, Classifier, Evaluation, Machine, ORACLE_SCALE,
    Objective, PolicyKind, accounting_ladder, calibrate, evaluate, oracle_frontier,
    oracle_gain_share, sweep_point, timed_pairs,
};
use crate::model::{Kernels, Model};
use crate::plot::SweepPoint;

/// Where a command reads its database and queries.
pub struct Workload<'a> {
    pub db: &'a Path,
    pub split: &'a str,
    pub limit: Option<usize>,
    pub columns: CorpusOptions,
    /// Decoders: labelled examples before every prompt (0: zero-shot).
    pub shots: usize,
}

/// Options of `attncache eval`.
pub struct EvalArgs<'a> {
    pub policy: Option<&'a str>,
    pub compare: &'a [String],
    pub repeats: usize,
    pub accounting: &'a str,
    /// The accounting ladder's padded-inputs step, if asked for.
    pub padded: Option<PaddedRun<'a>>,
    pub json: bool,
}

/// The padded database (and its policy) of the ladder's padded-inputs step.
pub struct PaddedRun<'a> {
    pub db: &'a Path,
    pub policy: Option<&'a str>,
}

/// `attncache eval`.
pub fn run_eval(target: &Target, work: Workload, args: EvalArgs) -> anyhow::Result<()> {
    let EvalArgs {
        policy,
        compare,
        repeats,
        json,
        ..
    } = args;
    let accounting = Accounting::parse(args.accounting)?;
    anyhow::ensure!(
        args.padded.is_none() || accounting != Accounting::Ours,
        "--padded-db adds a step to the accounting ladder: pass --accounting paper or both"
    );
    let mut model = load_model(target, "eval")?;
    let db = open_database(target, work.db, &mut model)?;
    anyhow::ensure!(
        model.padded_to().is_none() || accounting == Accounting::Ours,
        "{} holds padded inputs: for the accounting ladder pass a database built without --pad-to as --db and this one as --padded-db",
        work.db.display()
    );
    let padded = args
        .padded
        .as_ref()
        .map(|run| padded_engine(target, &model, run))
        .transpose()?;
    let with_oracle = compare.iter().any(|c| c == "oracle");
    let mut policies = vec![load_policy(policy, Some(&db), &model)?];
    for spec in compare.iter().filter(|c| *c != "oracle") {
        policies.push(load_policy(Some(spec), Some(&db), &model)?);
    }
    let corpus = load_corpus(work.split, &work.columns, work.limit, work.shots, &model)?;
    let probe = Classifier::for_task(&model, &db, &corpus)?;
    let per_policy = corpus.items.len() * (1 + repeats);
    let oracle_steps = match with_oracle {
        true => corpus.items.len() * (1 + ORACLE_SCALE.len() * repeats.max(1)),
        false => 0,
    };
    let eager_steps = match accounting {
        Accounting::Ours => 0,
        _ => corpus.items.len() * repeats.max(1) * (1 + usize::from(padded.is_some())),
    };
    let bar = progress::bar(
        per_policy * policies.len() + oracle_steps + eager_steps,
        &format!("evaluating on {}", corpus.name),
    );
    let first_policy = policies[0].clone();
    let mut evals = Vec::new();
    for (i, policy) in policies.into_iter().enumerate() {
        let engine = Engine::new(model.clone(), db.clone(), policy)?;
        let eval = evaluate(&engine, &corpus, probe.as_ref(), repeats, &mut |d, _| {
            bar.set_position((i * per_policy + d) as u64)
        });
        evals.push(eval.inspect_err(|_| bar.finish_and_clear())?);
    }
    let ladder = match accounting {
        Accounting::Ours => None,
        _ => {
            let mut timed = |engine: &Engine| {
                let done = bar.position();
                timed_pairs(engine, &corpus, repeats, &mut |d| {
                    bar.set_position(done + d as u64);
                    Ok(())
                })
                .inspect_err(|_| bar.finish_and_clear())
            };
            // The same queries padded (from the padded database), then
            // re-timed on the eager candle ops, as the paper's eager attention.
            let padded_pairs = padded.as_ref().map(&mut timed).transpose()?;
            let last = match &padded {
                Some(engine) => engine.clone(),
                None => Engine::new(model.clone(), db.clone(), first_policy)?,
            };
            let mut eager = (**last.model()).clone();
            eager.set_kernels(Kernels::Reference);
            let db = last.database().expect("a cached engine").clone();
            let eager_pairs = timed(&Engine::new(Arc::new(eager), db, last.policy().clone())?)?;
            Some(accounting_ladder(
                &evals[0].samples,
                padded_pairs.as_deref(),
                &eager_pairs,
                corpus.items.len(),
            ))
        }
    };
    let done = bar.position();
    let oracle = with_oracle
        .then(|| {
            oracle_frontier(
                &model,
                &db,
                &corpus,
                probe.as_ref(),
                &ORACLE_SCALE,
                repeats,
                &mut |d, _| bar.set_position(done + d as u64),
            )
        })
        .transpose();
    bar.finish_and_clear();
    let oracle = oracle?;
    let share = |e: &Evaluation| {
        oracle
            .as_ref()
            .and_then(|o| oracle_gain_share(&sweep_point(0.0, e), o))
    };
    let first = evals.remove(0);
    if json {
        let with_share = |e: &Evaluation| -> anyhow::Result<serde_json::Value> {
            let mut v = serde_json::to_value(e)?;
            if oracle.is_some() {
                v["oracle_gain_share"] = serde_json::to_value(share(e))?;
            }
            Ok(v)
        };
        let mut out = with_share(&first)?;
        if !evals.is_empty() {
            out["compared"] = evals
                .iter()
                .map(with_share)
                .collect::<anyhow::Result<Vec<_>>>()?
                .into();
        }
        if let Some(oracle) = &oracle {
            out["oracle"] = serde_json::to_value(oracle)?;
        }
        if let Some(ladder) = &ladder {
            out["accounting"] = serde_json::to_value(ladder)?;
        }
        out["machine"] = serde_json::to_value(Machine::this(&target.device))?;
        println!("{out}");
    } else {
        for e in std::iter::once(&first).chain(&evals) {
            print_evaluation(e);
            if oracle.is_some() {
                println!(
                    "  oracle gain share   {}",
                    share(e).map_or(
                        "– (the oracle gains nothing at this loss)".into(),
                        |s| format!(
                            "{:.1}% of the oracle's end-to-end gain at no more loss",
                            s * 100.0
                        )
                    )
                );
            }
        }
        if let Some(oracle) = &oracle {
            print_oracle(oracle);
        }
        if let Some(ladder) = &ladder {
            print_accounting(ladder, accounting);
        }
        println!("machine: {}", Machine::this(&target.device));
    }
    Ok(())
}

/// The engine of the ladder's padded-inputs step: `model` padded as the
/// padded database's inputs were, serving from it under its policy.
fn padded_engine(target: &Target, model: &Arc<Model>, run: &PaddedRun) -> anyhow::Result<Engine> {
    let mut padded = model.clone();
    let db = open_database(target, run.db, &mut padded)?;
    anyhow::ensure!(
        padded.padded_to().is_some(),
        "--padded-db {} was built without --pad-to: build it with `attncache build --pad-to N`",
        run.db.display()
    );
    let policy = match run.policy {
        Some(spec) => load_policy(Some(spec), Some(&db), &padded)?,
        None => {
            anyhow::ensure!(
                db.policy_path().is_file(),
                "--padded-db {0} has no policy.json: calibrate one on it (`attncache calibrate --db {0}`) or pass --padded-policy",
                run.db.display()
            );
            load_policy(None, Some(&db), &padded)?
        }
    };
    Engine::new(padded, db, policy)
}

/// The accounting ladder as a table (`paper`: its last step only).
fn print_accounting(ladder: &[AccountingStep], accounting: Accounting) {
    let speedup = |x: Option<f64>| x.map_or("–".into(), |v| format!("{v:.3}×"));
    let rows = match accounting {
        Accounting::Paper => &ladder[ladder.len() - 1..],
        _ => ladder,
    };
    println!(
        "accounting (cumulative{})\n  {:<18} {:>7} {:>9} {:>11} {:>11}",
        match ladder.iter().any(|s| s.step == "padded inputs") {
            true => "",
            false => "; padded inputs left out: pass --padded-db",
        },
        "step",
        "queries",
        "hit rate",
        "attention",
        "end to end"
    );
    for s in rows {
        println!(
            "  {:<18} {:>7} {:>8.1}% {:>11} {:>11}",
            s.step,
            s.queries,
            s.hit_rate * 100.0,
            speedup(s.attention_speedup),
            speedup(s.e2e_speedup)
        );
    }
    if let Some((attention, e2e)) = rows.iter().find_map(|s| s.against_unpadded_exact) {
        println!(
            "  padded inputs against the same queries' unpadded exact runs: attention {}, end to end {}",
            speedup(attention),
            speedup(e2e)
        );
    }
}

/// The oracle frontier as a table.
fn print_oracle(points: &[SweepPoint]) {
    println!(
        "oracle frontier (per head the truly most similar same-length entry; look-up and map loading not timed)"
    );
    println!(
        "  {:>10} {:>9} {:>9} {:>11} {:>11}",
        "min sim", "hit rate", "loss", "attention", "end to end"
    );
    for p in points {
        println!(
            "  {:>10} {:>8.1}% {:>9.3} {:>10.3}× {:>10.3}×",
            p.knob,
            p.hit_rate * 100.0,
            p.loss(),
            p.attention_speedup,
            p.e2e_speedup
        );
    }
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
        "                      cached: feature {:.2}, search {:.2}, re-rank {:.2}, map load {:.2}, attention {:.2}, rest {:.2}, total {:.2}",
        c.feature, c.search, c.rerank, c.map_load, c.attention, c.rest, c.total
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
    if let Some(types) = &e.by_head_type {
        println!("  by head type:");
        for t in types {
            println!(
                "    {:<15} {:>3} heads  hit rate {:>5.1}%  cacheability {}",
                t.kind,
                t.heads,
                t.hit_rate * 100.0,
                t.cacheability.map_or("–".into(), |c| format!("{c:.3}"))
            );
        }
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
    let max = options.objective.max_error();
    anyhow::ensure!(
        (0.0..=max).contains(&args.budget),
        "--budget {} is outside [0, {max}], the {} objective's range",
        args.budget,
        args.objective
    );
    let mut model = load_model(target, "calibrate")?;
    let db = open_database(target, work.db, &mut model)?;
    let corpus = load_corpus(work.split, &work.columns, work.limit, work.shots, &model)?;
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
        .unwrap_or_else(|| db.policy_path());
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
        if let Some(summary) = cal.rule_summary() {
            println!("{summary}");
        }
    }
    Ok(())
}

/// Options of `attncache sweep`.
pub struct SweepArgs<'a> {
    pub thresholds: &'a [f32],
    pub paper: bool,
    pub oracle: bool,
    pub repeats: usize,
    pub csv: bool,
}

/// `attncache sweep`: evaluations over a list of global thresholds (and the
/// oracle frontier when asked).
pub fn run_sweep(target: &Target, work: Workload, args: SweepArgs) -> anyhow::Result<()> {
    if let Some(t) = (args.thresholds.iter()).find(|t| !feature::DISTANCE_RANGE.contains(*t)) {
        anyhow::bail!("--thresholds: {t} is no feature distance (cosine distances lie in [0, 2])");
    }
    let mut model = load_model(target, "sweep")?;
    let db = open_database(target, work.db, &mut model)?;
    let corpus = load_corpus(work.split, &work.columns, work.limit, work.shots, &model)?;
    let probe = Classifier::for_task(&model, &db, &corpus)?;
    let mut rows = Vec::new();
    let bar = progress::bar(
        args.thresholds.len() + usize::from(args.oracle),
        &format!("sweeping on {}", corpus.name),
    );
    for &t in args.thresholds {
        let policy = if args.paper {
            Policy::paper(model.shape(), t)
        } else {
            Policy::global(model.shape(), t)
        };
        let engine = Engine::new(model.clone(), db.clone(), policy)?;
        rows.push((
            t,
            evaluate(
                &engine,
                &corpus,
                probe.as_ref(),
                args.repeats,
                &mut |_, _| {},
            )?,
        ));
        bar.inc(1);
    }
    let oracle = match args.oracle {
        true => oracle_frontier(
            &model,
            &db,
            &corpus,
            probe.as_ref(),
            &ORACLE_SCALE,
            args.repeats,
            &mut |_, _| {},
        )?,
        false => Vec::new(),
    };
    bar.finish_and_clear();
    if args.csv {
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
        for p in &oracle {
            let loss = p
                .accuracy_exact
                .zip(p.accuracy_cached)
                .map(|(e, c)| (e - c) * 100.0);
            println!(
                "{},{},{},{:.6},{:.6},,{},{},{},{:.4},{:.4}",
                p.knob,
                p.policy,
                corpus.items.len(),
                p.hit_rate,
                p.fidelity_mean,
                opt(p.accuracy_exact),
                opt(p.accuracy_cached),
                opt(loss),
                p.attention_speedup,
                p.e2e_speedup
            );
        }
    } else {
        let points: Vec<_> = rows
            .iter()
            .map(|(t, e)| serde_json::json!({ "threshold": t, "evaluation": e }))
            .collect();
        let mut out = serde_json::json!({
            "split": corpus.name,
            "points": points,
            "machine": Machine::this(&target.device),
        });
        if args.oracle {
            out["oracle"] = serde_json::to_value(&oracle)?;
        }
        println!("{out}");
    }
    Ok(())
}

/// `attncache retrieval`: look-up quality against the oracle-best entry.
pub fn run_retrieval(target: &Target, work: Workload, json: bool) -> anyhow::Result<()> {
    let mut model = load_model(target, "retrieval")?;
    let db = open_database(target, work.db, &mut model)?;
    let corpus = load_corpus(work.split, &work.columns, work.limit, work.shots, &model)?;
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
        "{:>5} {:>7} {:>7} | {:>10} {:>7} | {:>10} {:>7} {:>6} | {:>10} {:>7} | {:>10}",
        "layer",
        "queries",
        "oracle",
        "per-layer",
        "gap",
        "served",
        "gap",
        "agree",
        "single",
        "gap",
        "random gap"
    );
    for (l, r) in layers.iter().enumerate() {
        println!(
            "{l:>5} {:>7} {:>7.3} | {:>9.1}% {:>7.3} | {:>9.1}% {:>7.3} {:>5.1}% | {:>9.1}% {:>7.3} | {:>10.3}",
            r.queries,
            r.oracle_similarity,
            r.per_layer_oracle_rate * 100.0,
            r.per_layer_gap,
            r.served_oracle_rate * 100.0,
            r.served_gap,
            r.served_agreement * 100.0,
            r.single_oracle_rate * 100.0,
            r.single_gap,
            r.random_gap
        );
    }
    println!(
        "per-layer and single: exact scan of the features; served: the per-layer look-up as the engine runs it \
         (sketch scan and exact re-rank, or HNSW); agree: served finds the exact scan's entry"
    );
    Ok(())
}
