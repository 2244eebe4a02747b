//! `attncache report`: one evaluation run turned into figures (PNG + SVG),
//! `report.md` and `report.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::eval::Workload;
use super::progress;
use super::setup::{Target, load_corpus, load_model, load_policy, open_database};
use crate::cache::write_atomically;
use crate::engine::{Engine, STAGES, TimedPair};
use crate::eval::{Classifier, Machine, ReportData, ReportOptions, collect_report, task_input};
use crate::plot::{LatencyFigure, MapsFigure, MatrixFigure, MatrixPanel, SweepFigure, save};
use crate::text::shorten;

/// Options of `attncache report`.
pub struct ReportArgs<'a> {
    pub policy: Option<&'a str>,
    pub out: &'a Path,
    pub options: ReportOptions,
    pub json: bool,
}

/// Runs the report.
pub fn run(target: &Target, work: Workload, args: ReportArgs) -> anyhow::Result<()> {
    let mut model = load_model(target, "report")?;
    let db = open_database(target, work.db, &mut model)?;
    let policy = load_policy(args.policy, Some(&db), &model)?;
    let corpus = load_corpus(work.split, &work.columns, work.limit, work.shots, &model)?;
    let probe = Classifier::for_task(&model, &db, &corpus)?;
    let engine = Engine::new(model.clone(), db, policy)?;
    let bar = progress::bar(1, &format!("report on {}", corpus.name));
    let data = collect_report(
        &engine,
        &corpus,
        probe.as_ref(),
        &args.options,
        &mut |what, d, n| {
            bar.set_length(n as u64);
            bar.set_position(d as u64);
            bar.set_message(what.to_string());
        },
    );
    bar.finish_and_clear();
    let data = data?;
    std::fs::create_dir_all(args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let files = write_figures(&data, &model_name(&engine), args.out)?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let json = serde_json::json!({
        "command": command,
        "model": model_name(&engine),
        "files": names,
        "machine": Machine::this(&target.device),
        "report": data,
    });
    write_atomically(
        &args.out.join("report.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    write_atomically(
        &args.out.join("report.md"),
        markdown(&data, &command, &model_name(&engine), &names).as_bytes(),
    )?;
    if args.json {
        println!("{}", serde_json::json!({ "out": args.out, "files": names }));
    } else {
        println!(
            "wrote {} figures, report.md and report.json to {}",
            files.len(),
            args.out.display()
        );
    }
    Ok(())
}

fn model_name(engine: &Engine) -> String {
    engine
        .model()
        .files
        .dir
        .file_name()
        .map_or("model".into(), |n| n.to_string_lossy().into_owned())
}

/// Every figure of the report; returns the files written.
fn write_figures(data: &ReportData, model: &str, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let e = &data.evaluation;
    let mut files = Vec::new();
    let sweep = SweepFigure {
        title: format!("{model} · {} · {} queries", e.split, e.queries),
        knob_desc: data.knob_desc.clone(),
        ours: data.sweep.clone(),
        paper: data.paper_sweep.clone(),
        oracle: data.oracle_sweep.clone(),
        chosen: Some(data.chosen.clone()),
    };
    files.extend(save(&sweep, out, "sweep", true)?);
    let layers = e.hit_rate_per_head.len();
    let heads = e.hit_rate_per_head.first().map_or(0, Vec::len);
    let names = |p: &str, n: usize| (0..n).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    let cacheability = MatrixFigure {
        title: format!("Cacheability · {model} · {} · policy {}", e.split, e.policy),
        panels: vec![
            MatrixPanel {
                title: "Mean true similarity of the neighbour's map".into(),
                x_desc: "head".into(),
                y_desc: "layer".into(),
                x_names: names("H", heads),
                y_names: names("L", layers),
                values: e.cacheability.clone(),
                range: (0.0, 1.0),
                legend: "similarity (1 − mean row TV)".into(),
                annotate: heads <= 16,
            },
            MatrixPanel {
                title: "Hit rate".into(),
                x_desc: "head".into(),
                y_desc: "layer".into(),
                x_names: names("H", heads),
                y_names: names("L", layers),
                values: e
                    .hit_rate_per_head
                    .iter()
                    .map(|r| r.iter().map(|&v| Some(v)).collect())
                    .collect(),
                range: (0.0, 1.0),
                legend: "share of queries reusing".into(),
                annotate: heads <= 16,
            },
        ],
    };
    files.extend(save(&cacheability, out, "cacheability", true)?);
    files.extend(save(&latency_figure(data, model), out, "latency", true)?);
    for (i, example) in data.examples.iter().enumerate() {
        let figure = MapsFigure {
            title: format!(
                "Most and least similar heads · “{}”",
                shorten(task_input(&example.text), 80)
            ),
            rows: example.rows.clone(),
        };
        files.extend(save(&figure, out, &format!("maps-{}", i + 1), false)?);
    }
    let max = data
        .layer_similarity
        .iter()
        .flatten()
        .fold(0f64, |a, &b| a.max(b));
    let similarity = MatrixFigure {
        title: format!("Cross-layer map divergence · {model} · {}", e.split),
        panels: vec![MatrixPanel {
            title: "Mean JS divergence of head-averaged maps (0 = same)".into(),
            x_desc: "layer".into(),
            y_desc: "layer".into(),
            x_names: names("L", layers),
            y_names: names("L", layers),
            values: data
                .layer_similarity
                .iter()
                .map(|r| r.iter().map(|&v| Some(v)).collect())
                .collect(),
            range: (0.0, max.max(1e-6)),
            legend: "JS divergence (nats)".into(),
            annotate: false,
        }],
    };
    files.extend(save(&similarity, out, "layer-similarity", false)?);
    Ok(files)
}

/// The latency figure from the evaluation's timed pairs.
fn latency_figure(data: &ReportData, model: &str) -> LatencyFigure {
    let e = &data.evaluation;
    let pick = |f: fn(&TimedPair) -> f64| e.samples.iter().map(f).collect();
    let (x, c) = (&e.timings_ms.exact, &e.timings_ms.cached);
    LatencyFigure {
        title: format!(
            "Latency · {model} · {} · policy {} · {} runs",
            e.split,
            e.policy,
            e.samples.len()
        ),
        exact_e2e: pick(|p| p.exact.total),
        cached_e2e: pick(|p| p.cached.total),
        exact_attention: pick(|p| p.exact.attention),
        cached_attention: pick(|p| p.cached.attention_with_lookup()),
        stages: STAGES
            .iter()
            .map(|(name, f)| (name.to_string(), f(x), f(c)))
            .collect(),
    }
}

/// `report.md`: the numbers, the figures and the command.
fn markdown(data: &ReportData, command: &str, model: &str, files: &[String]) -> String {
    let e = &data.evaluation;
    let ext = crate::plot::raster_extension();
    let pct = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.1} %", v * 100.0));
    let mut md = String::new();
    let _ = writeln!(md, "# attncache report: {model} on {}\n", e.split);
    let _ = writeln!(md, "Reproduce with:\n\n```sh\n{command}\n```\n");
    let _ = writeln!(
        md,
        "Policy `{}` on {} queries. Speedups are summed exact time over summed cached time over all \
         queries (hits and misses), exact and cached runs interleaved, look-up and map loading on the \
         cached side; median of {} passes.\n",
        e.policy, e.queries, e.repeats
    );
    let _ = writeln!(md, "| measure | value |\n|---|---|");
    let rows = [
        (
            "hit rate (heads reused)",
            format!("{:.2} %", e.hit_rate * 100.0),
        ),
        (
            "queries with no same-length entry",
            format!("{:.1} %", e.no_candidate * 100.0),
        ),
        (
            "accuracy exact → cached",
            format!("{} → {}", pct(e.accuracy_exact), pct(e.accuracy_cached)),
        ),
        (
            "accuracy loss",
            e.accuracy_loss_pt
                .map_or("–".into(), |v| format!("{v:.2} points")),
        ),
        (
            "fidelity mean / p5",
            format!("{:.4} / {:.4}", e.fidelity_mean, e.fidelity_p5),
        ),
        ("attention speedup", format!("{:.3}×", e.attention_speedup)),
        ("end-to-end speedup", format!("{:.3}×", e.e2e_speedup)),
        (
            "mean ms per query exact / cached",
            format!(
                "{:.2} / {:.2}",
                e.timings_ms.exact.total, e.timings_ms.cached.total
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(
        md,
        "\n## Sweep\n\n![sweep](sweep.{ext})\n\nOur policy along {} and the paper's rule \
         (one look-up, every map or none) along its distance; one timed pass per point.\n",
        data.knob_desc
    );
    let _ = writeln!(
        md,
        "| policy | knob | hit rate | loss | fidelity | attention × | end-to-end × |\n|---|---|---|---|---|---|---|"
    );
    for p in data
        .sweep
        .iter()
        .chain(&data.paper_sweep)
        .chain(&data.oracle_sweep)
    {
        let _ = writeln!(
            md,
            "| `{}` | {} | {:.2} % | {:.2} | {:.4} | {:.3} | {:.3} |",
            p.policy,
            p.knob,
            p.hit_rate * 100.0,
            p.loss(),
            p.fidelity_mean,
            p.attention_speedup,
            p.e2e_speedup
        );
    }
    if !data.oracle_sweep.is_empty() {
        let _ = writeln!(
            md,
            "\nThe `oracle:S` rows are the limit of any map cache: per head the same-length entry \
             whose map is truly most similar to the query's exact map, reused when that similarity \
             is at least S, look-up and map loading not timed. The evaluated policy gets {} of the \
             oracle's end-to-end gain at no more loss.",
            data.oracle_gain_share
                .map_or("– (the oracle gains nothing there)".into(), |s| {
                    format!("{:.1} %", s * 100.0)
                })
        );
    }
    if let Some(types) = &data.evaluation.by_head_type {
        let _ = writeln!(
            md,
            "\n## By head type\n\n| type | heads | hit rate | cacheability |\n|---|---|---|---|"
        );
        for t in types {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} % | {} |",
                t.kind,
                t.heads,
                t.hit_rate * 100.0,
                t.cacheability.map_or("–".into(), |c| format!("{c:.3}"))
            );
        }
    }
    let _ = writeln!(
        md,
        "\n## Where reuse can pay\n\n![cacheability](cacheability.{ext})\n\n## Latency\n\n\
         ![latency](latency.{ext})\n\n## Cross-layer similarity\n\n\
         ![layer similarity](layer-similarity.{ext})\n"
    );
    if !data.examples.is_empty() {
        let _ = writeln!(md, "## Example maps\n");
        for (i, example) in data.examples.iter().enumerate() {
            let _ = writeln!(
                md,
                "“{}”\n\n![maps](maps-{}.{ext})\n",
                task_input(&example.text),
                i + 1
            );
        }
    }
    let _ = writeln!(md, "Files: {}", files.join(", "));
    md
}
