//! `modules eval` and `modules calibrate`.

use std::path::Path;

use super::super::progress;
use super::super::setup::Target;
use super::{PromptsArgs, RECOVERY_FILE, StoreArgs, open, prompts};
use crate::eval::{
    Machine, ModularEval, ModularOptions, RecoveryCalibration, RecoveryObjective,
    calibrate_recovery, every_setting,
};
use crate::modules::{Recovery, Rescale, Setting};
use crate::storage::write_atomically;

/// How much `modules eval` measures.
pub struct EvalSizes {
    pub repeats: usize,
    pub heads: usize,
    pub continuation: usize,
}

pub fn eval(
    target: &Target,
    args: &StoreArgs,
    source: &PromptsArgs,
    sizes: EvalSizes,
    json: bool,
) -> anyhow::Result<()> {
    let opened = open(target, args, "modules eval")?;
    let prompts = prompts(&opened.store, source)?;
    let decoder = opened.decoder();
    let options = ModularOptions {
        positions: opened.positions,
        recovery: opened.recovery,
        chat: args.chat.then_some(decoder.chat()),
        repeats: sizes.repeats,
        head_prompts: sizes.heads,
        continuation: sizes.continuation,
    };
    let bench = opened.bench();
    let bar = progress::bar(
        prompts.len() * sizes.repeats.max(1),
        "exact, prefix, modular",
    );
    let result = bench.evaluate(&prompts, &options, &mut |d, _| bar.set_position(d as u64));
    bar.finish_and_clear();
    let result = result?;
    if json {
        let mut out = serde_json::to_value(&result)?;
        out["machine"] = serde_json::to_value(Machine::this(&target.device))?;
        println!("{out}");
    } else {
        print_eval(&result);
    }
    Ok(())
}

fn print_eval(e: &ModularEval) {
    let pct = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.1} %", v * 100.0));
    println!(
        "{} prompts, {:.0} tokens on average, {:.1} % from the store ({:.1} % of those recomputed); positions {}, recovery {}; median of {} repeats",
        e.prompts,
        e.tokens_mean,
        e.cached_fraction * 100.0,
        e.recomputed_fraction * 100.0,
        e.positions.name(),
        e.recovery,
        e.repeats
    );
    println!(
        "  {:<8} {:>12} {:>10}  stages (load / rotate / probe / layers / logits ms)",
        "run", "TTFT median", "p90"
    );
    for (name, l, s) in [
        ("exact", e.ttft_ms.exact, e.stages_ms.exact),
        ("prefix", e.ttft_ms.prefix, e.stages_ms.prefix),
        ("modular", e.ttft_ms.modular, e.stages_ms.modular),
    ] {
        println!(
            "  {name:<8} {:>9.1} ms {:>7.1} ms  {:.1} / {:.1} / {:.1} / {:.1} / {:.1}",
            l.median, l.p90, s.load_ms, s.rotate_ms, s.probe_ms, s.forward_ms, s.logits_ms
        );
    }
    println!(
        "  modular: {:.2}× over exact, {:.2}× over the prefix cache (prefix cache: {:.2}× over exact); {:.1} MiB loaded per prompt",
        e.speedup_vs_exact,
        e.speedup_vs_prefix,
        e.prefix_speedup_vs_exact,
        e.bytes_loaded_mean / (1024.0 * 1024.0)
    );
    println!(
        "  fidelity: top-1 agreement {:.1} %, next-token KL {:.4}, NLL of the exact continuation {:+.4} nats/token; task accuracy exact {} → modular {}",
        e.top1_agreement * 100.0,
        e.kl_mean,
        e.nll_delta,
        pct(e.task_accuracy.exact),
        pct(e.task_accuracy.modular)
    );
    for (title, groups) in [("by length", &e.by_length), ("by modules", &e.by_modules)] {
        println!("  {title}:");
        for g in groups.iter() {
            println!(
                "    {:>6}: {:>3} prompts, {:>6.0} tokens, {:>6.2}× exact, {:>5.2}× prefix, top-1 {:>5.1} %, KL {:.4}",
                g.key,
                g.prompts,
                g.tokens_mean,
                g.speedup_vs_exact,
                g.speedup_vs_prefix,
                g.top1_agreement * 100.0,
                g.kl_mean
            );
        }
    }
    if let Some(h) = &e.heads {
        println!(
            "  per layer (mean over heads; {} prompts): question-map similarity to exact | exact attention from module tokens to tokens before their module = to the preamble (or first token) + to other modules",
            h.prompts
        );
        for l in 0..h.similarity.len() {
            let m = |v: &Vec<Vec<f64>>| v[l].iter().sum::<f64>() / v[l].len().max(1) as f64;
            println!(
                "    L{l:<3} {:.3} | {:.3} = {:.3} + {:.3}",
                m(&h.similarity),
                m(&h.crossing),
                m(&h.crossing_to_sink),
                m(&h.crossing_to_modules)
            );
        }
    }
}

/// The settings `modules calibrate --kind KIND` searches: one kind's, or
/// for `auto` every kind's plus APE's default rescaling (0.9, 0.9) on naive
/// reuse and on the lighter settings of `first`, `select` and `probe` (at
/// most 16 tokens or 20 %), where a cheap setting may reach the budget.
pub fn calibration_settings(kind: &str) -> anyhow::Result<Vec<Setting>> {
    if kind == "auto" {
        let ape = Rescale {
            temperature: 0.9,
            scale: 0.9,
        };
        let mut settings = every_setting();
        let rescaled: Vec<Setting> = settings
            .iter()
            .filter(|s| match s.recovery {
                Recovery::None => true,
                Recovery::First(k) => (1..=16).contains(&k),
                Recovery::Select(r) | Recovery::Probe { percent: r, .. } => r > 0.0 && r <= 20.0,
                Recovery::ProbeModules(_) => false,
            })
            .map(|s| Setting {
                rescale: Some(ape),
                ..*s
            })
            .collect();
        settings.extend(rescaled);
        return Ok(settings);
    }
    if !Recovery::KINDS.contains(&kind) {
        anyhow::bail!(
            "unknown --kind {kind:?}: use auto, none, first, select, probe or probe-modules"
        );
    }
    Ok(every_setting()
        .into_iter()
        .filter(|s| s.recovery.kind() == kind)
        .collect())
}

pub fn calibrate(
    target: &Target,
    args: &StoreArgs,
    source: &PromptsArgs,
    (kind, objective, budget): (&str, &str, f64),
    (out, save): (Option<&Path>, bool),
    json: bool,
) -> anyhow::Result<()> {
    let settings = calibration_settings(kind)?;
    let objective = RecoveryObjective::parse(objective)?;
    objective.check_budget(budget)?;
    let opened = open(target, args, "modules calibrate")?;
    let prompts = prompts(&opened.store, source)?;
    let decoder = opened.decoder();
    let options = ModularOptions {
        positions: opened.positions,
        recovery: opened.recovery,
        chat: args.chat.then_some(decoder.chat()),
        repeats: 1,
        head_prompts: 0,
        continuation: 0,
    };
    let bench = opened.bench();
    let bar = progress::bar(
        prompts.len(),
        &format!("calibrating: exact and {} settings", settings.len()),
    );
    let result = calibrate_recovery(
        &bench,
        &prompts,
        (kind, &settings),
        (objective, budget),
        &options,
        &mut |d, _| bar.set_position(d as u64),
    );
    bar.finish_and_clear();
    let (result, frontier) = result?;
    if let Some(dir) = out {
        super::frontier::write_frontier(&frontier, dir, Some(&result.chosen))?;
    }
    if save {
        save_calibration(opened.store.dir(), &result)?;
    }
    if json {
        println!("{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    println!(
        "{} prompts, encoding {}, positions {}, kind {}, objective {:?} budget {} (95 % bound)",
        result.prompts,
        result.encoding,
        result.positions,
        result.kind,
        result.objective,
        result.budget
    );
    super::frontier::print_points(result.points.iter().map(|p| {
        let note = if p.within_budget {
            "  within budget"
        } else {
            ""
        };
        (&p.point, note.to_string())
    }));
    println!(
        "chosen {}{}{}",
        result.chosen,
        if result.met {
            " (the fastest within budget)"
        } else {
            " (no setting met the budget: the one closest to exact)"
        },
        if save {
            format!(
                "; saved to {}",
                opened.store.dir().join(RECOVERY_FILE).display()
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Writes (or replaces, for the same positions) the store's calibration.
fn save_calibration(dir: &Path, result: &RecoveryCalibration) -> anyhow::Result<()> {
    let path = dir.join(RECOVERY_FILE);
    let mut saved: Vec<RecoveryCalibration> = if path.is_file() {
        serde_json::from_slice(&std::fs::read(&path)?).unwrap_or_default()
    } else {
        Vec::new()
    };
    saved.retain(|c| c.positions != result.positions);
    saved.push(result.clone());
    write_atomically(&path, serde_json::to_string_pretty(&saved)?.as_bytes())
}
