//! `modules frontier`: every recovery kind at a sweep of settings on the same
//! prompts, exact interleaved; the speed–fidelity frontier as JSON and a plot.

use std::path::Path;

use super::super::progress;
use super::super::setup::Target;
use super::{PromptsArgs, StoreArgs, open, prompts};
use crate::eval::{
    Frontier, FrontierPoint, Machine, ModularOptions, every_setting, measure_frontier,
};
use crate::modules::Recovery;
use crate::plot::{FrontierDot, FrontierFigure, save};
use crate::storage::write_atomically;

/// Writes `frontier.json` and the frontier plot (PNG + SVG) into `dir`,
/// marking `chosen` (a calibrated setting) if given.
pub fn write_frontier(
    frontier: &Frontier,
    dir: &Path,
    chosen: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let json = dir.join("frontier.json");
    write_atomically(&json, serde_json::to_string_pretty(frontier)?.as_bytes())?;
    let figure = FrontierFigure {
        title: format!(
            "Modular reuse: speed against fidelity ({} prompts, {:.0} tokens, {} encoding, {} positions)",
            frontier.prompts, frontier.tokens_mean, frontier.encoding, frontier.positions
        ),
        dots: frontier
            .points
            .iter()
            .map(|p| FrontierDot {
                label: p.recovery.clone(),
                kind: p.kind.clone(),
                speedup: p.speedup_vs_exact,
                kl: p.kl_mean,
                top1: p.top1_agreement,
                pareto_kl: p.pareto_kl,
                pareto_top1: p.pareto_top1,
                rescaled: p.recovery.contains("+rescale"),
            })
            .collect(),
        chosen: chosen.map(str::to_string),
    };
    let mut written = vec![json.display().to_string()];
    written.extend(
        save(&figure, dir, "frontier", true)?
            .into_iter()
            .map(|p| p.display().to_string()),
    );
    Ok(written)
}

/// Prints one row per setting: speedup, KL and its bound, top-1, the
/// recomputed share, TTFT, then `note`.
pub fn print_points<'a>(points: impl Iterator<Item = (&'a FrontierPoint, String)>) {
    println!(
        "  {:<26} {:>8} {:>9} {:>9} {:>8} {:>11} {:>9}",
        "setting", "× exact", "KL", "KL bound", "top-1", "recomputed", "TTFT ms"
    );
    for (p, note) in points {
        println!(
            "  {:<26} {:>7.2}× {:>9.4} {:>9.4} {:>7.1}% {:>10.1}% {:>9.1}{note}",
            p.recovery,
            p.speedup_vs_exact,
            p.kl_mean,
            p.kl_bound,
            p.top1_agreement * 100.0,
            p.recomputed_fraction * 100.0,
            p.ttft_ms,
        );
    }
}

pub fn frontier(
    target: &Target,
    args: &StoreArgs,
    source: &PromptsArgs,
    kinds: Option<&str>,
    out: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let kinds: Vec<&str> = match kinds {
        Some(k) => k.split(',').map(str::trim).collect(),
        None => Recovery::KINDS.to_vec(),
    };
    if let Some(bad) = kinds.iter().find(|k| !Recovery::KINDS.contains(k)) {
        anyhow::bail!(
            "unknown kind {bad:?} in --kinds: use {}",
            Recovery::KINDS.join(", ")
        );
    }
    let opened = open(target, args, "modules frontier")?;
    let rescale = opened.recovery.rescale;
    let settings: Vec<_> = every_setting()
        .into_iter()
        .filter(|s| kinds.contains(&s.recovery.kind()))
        .map(|mut s| {
            s.rescale = rescale;
            s
        })
        .collect();
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
        &format!("frontier: exact and {} settings", settings.len()),
    );
    let result = measure_frontier(&bench, &prompts, &settings, &options, &mut |d, _| {
        bar.set_position(d as u64)
    });
    bar.finish_and_clear();
    let frontier = result?;
    let written = write_frontier(&frontier, out, None)?;
    if json {
        let mut value = serde_json::to_value(&frontier)?;
        value["machine"] = serde_json::to_value(Machine::this(&target.device))?;
        value["written"] = serde_json::to_value(&written)?;
        println!("{value}");
        return Ok(());
    }
    println!(
        "{} prompts, {:.0} tokens on average, exact TTFT {:.1} ms; encoding {}, positions {}",
        frontier.prompts,
        frontier.tokens_mean,
        frontier.exact_ttft_ms,
        frontier.encoding,
        frontier.positions
    );
    print_points(frontier.points.iter().map(|p| {
        let pareto = format!(
            "  Pareto {}{}",
            if p.pareto_kl { "●" } else { "·" },
            if p.pareto_top1 { "●" } else { "·" }
        );
        (p, pareto)
    }));
    println!("wrote {}", written.join(", "));
    Ok(())
}
