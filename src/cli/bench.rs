//! `attncache bench`: exact vs cached latency by sequence length.

use std::path::Path;

use serde::Serialize;

use super::progress;
use super::setup::{Target, load_corpus, load_model, load_policy, open_database};
use crate::cache::{RERANK, SKETCH_DIM};
use crate::data::CorpusOptions;
use crate::engine::Engine;
use crate::eval::{BenchRow, Machine, bench};
use crate::plot::{LengthFigure, LengthSeries};

/// Options of `attncache bench`.
pub struct BenchArgs<'a> {
    pub db: &'a Path,
    /// Policies benchmarked one after the other (none: the database's).
    pub policies: &'a [String],
    /// The oracle's least similarity, when timed.
    pub oracle: Option<f32>,
    /// Where to write the "where reuse pays" plot.
    pub plot: Option<&'a Path>,
    pub splits: &'a [String],
    pub limit: usize,
    /// Decoders: each query as a prompt with each of these numbers of
    /// labelled examples.
    pub shots: &'a [usize],
    pub repeats: usize,
    pub json: bool,
}

/// One policy's benchmark.
#[derive(Serialize)]
struct PolicyBench {
    policy: String,
    rows: Vec<BenchRow>,
}

pub fn run(target: &Target, args: BenchArgs) -> anyhow::Result<()> {
    if let Some(sim) = args.oracle {
        anyhow::ensure!(
            (0.0..=1.0).contains(&sim),
            "--oracle {sim}: a map similarity lies in [0, 1] (e.g. --oracle 0.99)"
        );
    }
    let mut model = load_model(target, "bench")?;
    let db = open_database(target, args.db, &mut model)?;
    let specs: Vec<Option<&str>> = match args.policies {
        [] => vec![None],
        specs => specs.iter().map(|s| Some(s.as_str())).collect(),
    };
    let policies = specs
        .iter()
        .map(|spec| load_policy(*spec, Some(&db), &model))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut texts = Vec::new();
    for split in args.splits {
        for &shots in args.shots {
            let corpus = load_corpus(
                split,
                &CorpusOptions::default(),
                Some(args.limit),
                shots,
                &model,
            )?;
            texts.extend(corpus.items.into_iter().map(|i| i.text));
        }
    }
    anyhow::ensure!(
        !texts.is_empty(),
        "no queries to benchmark: the splits are empty or --limit is 0"
    );
    let mut benches = Vec::with_capacity(policies.len());
    for (i, (policy, spec)) in policies.into_iter().zip(&specs).enumerate() {
        let engine = Engine::new(model.clone(), db.clone(), policy)?;
        let bar = progress::bar(
            texts.len(),
            &format!("benchmarking {}", engine.policy().name),
        );
        // The oracle does not depend on the policy: timed with the first
        // only (each policy's rows keep their own ceiling, timed beside them).
        let oracle = args.oracle.filter(|_| i == 0);
        let rows = bench(&engine, &texts, args.repeats, oracle, &mut |d, _| {
            bar.set_position(d as u64)
        });
        bar.finish_and_clear();
        benches.push(PolicyBench {
            policy: label(&engine.policy().name, *spec),
            rows: rows?,
        });
    }
    let plotted = match args.plot {
        Some(dir) => save_lengths_plot(&benches, args.oracle, dir)?,
        None => Vec::new(),
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "policy": benches[0].policy,
                "splits": args.splits,
                "repeats": args.repeats,
                "rows": benches[0].rows,
                "policies": benches,
                "oracle_min_similarity": args.oracle,
                "plots": plotted,
                "machine": Machine::this(&target.device),
            })
        );
        return Ok(());
    }
    for b in &benches {
        print_table(b, args.splits, args.repeats);
    }
    println!(
        "ideal: FLOP model of the work the reused heads skip, look-up free; share: look-up ÷ exact forward; ceiling: every map reused, no look-up"
    );
    println!("machine: {}", Machine::this(&target.device));
    if let Some(min) = args.oracle {
        println!(
            "oracle ≥ {min}: each head reuses the entry whose map is truly most similar when at least {min} (no look-up)"
        );
    }
    for path in &plotted {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// A policy's name, and the file it came from when it was read from one
/// (calibrated policies of one budget share their name).
fn label(name: &str, spec: Option<&str>) -> String {
    match spec.map(Path::new).filter(|p| p.is_file()) {
        Some(path) => format!(
            "{name} ({})",
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
        None => name.to_string(),
    }
}

fn print_table(b: &PolicyBench, splits: &[String], repeats: usize) {
    let oracle = b.rows.iter().any(|r| r.oracle_e2e.is_some());
    println!(
        "policy {} · {} · medians of {} interleaved repeats per query · speedup = Σ exact / Σ cached per bucket",
        b.policy,
        splits.join(" + "),
        repeats
    );
    println!(
        "{:>9} {:>7} {:>6} {:>6} | {:>9} {:>7} | {:>9} {:>7} | {:>9} {:>9} {:>6} | {:>8} {:>8}{}",
        "tokens",
        "queries",
        "mean",
        "hits",
        "attention",
        "ideal",
        "e2e",
        "ideal",
        "look-up",
        "exact",
        "share",
        "ceiling",
        "(e2e)",
        if oracle {
            format!(" | {:>6} {:>8}", "oracle", "(e2e)")
        } else {
            String::new()
        }
    );
    for r in &b.rows {
        let oracle = match (r.oracle_hit_rate, r.oracle_e2e) {
            (Some(h), Some(e)) => format!(" | {:>5.1}% {:>7.3}×", h * 100.0, e),
            _ => String::new(),
        };
        println!(
            "{:>9} {:>7} {:>6.1} {:>5.1}% | {:>8.3}× {:>6.3}× | {:>8.3}× {:>6.3}× | {:>6.2} ms {:>6.2} ms {:>5.1}% | {:>7.3}× {:>7.3}×{oracle}",
            r.lengths,
            r.queries,
            r.mean_tokens,
            r.hit_rate * 100.0,
            r.attention_speedup,
            r.attention_ideal,
            r.e2e_speedup,
            r.e2e_ideal,
            r.lookup_ms,
            r.exact_ms,
            r.lookup_share * 100.0,
            r.ceiling_attention,
            r.ceiling_e2e
        );
    }
    println!(
        "look-up by stage, µs per query: {:>9} {:>8} {:>8} {:>8} {:>8}",
        "tokens", "feature", "search", "re-rank", "map load"
    );
    for r in &b.rows {
        let st = &r.lookup_stages;
        println!(
            "{:>41} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            r.lengths,
            st.feature_ms * 1e3,
            st.search_ms * 1e3,
            st.rerank_ms * 1e3,
            st.map_load_ms * 1e3
        );
    }
}

/// Draws every policy's, the oracle's and the ceiling's end-to-end speedup
/// against length into `dir/where-reuse-pays.*`.
fn save_lengths_plot(
    benches: &[PolicyBench],
    oracle: Option<f32>,
    dir: &Path,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    use crate::plot::palette::{GREY, ORACLE, OURS, PAPER, STAGES};
    let line = |rows: &[BenchRow], y: fn(&BenchRow) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r.mean_tokens, y(r)?)))
            .collect()
    };
    let colours = [OURS, PAPER, STAGES[4], STAGES[6]];
    let mut series: Vec<LengthSeries> = benches
        .iter()
        .enumerate()
        .map(|(i, b)| LengthSeries {
            label: format!("{} (look-up counted)", b.policy),
            color: colours[i % colours.len()],
            points: line(&b.rows, |r| Some(r.e2e_speedup)),
        })
        .collect();
    let first = &benches[0].rows;
    if let Some(min) = oracle {
        series.push(LengthSeries {
            label: format!("oracle ≥ {min} (no look-up)"),
            color: ORACLE,
            points: line(first, |r| r.oracle_e2e),
        });
    }
    series.push(LengthSeries {
        label: "ceiling: every map of the input itself".into(),
        color: GREY,
        points: line(first, |r| Some(r.ceiling_e2e)),
    });
    let figure = LengthFigure {
        title: "Where does map reuse pay? End-to-end speedup by input length".into(),
        series,
    };
    crate::plot::save(&figure, dir, "where-reuse-pays", true)
}

/// `attncache bench-index`: exact scan vs sketch scan vs HNSW by bucket size.
pub fn run_index(db: &Path, queries: usize, json: bool) -> anyhow::Result<()> {
    let db = crate::cache::Database::open_any(db)?;
    let sizes = [64, 128, 256, 512, 1024, 2048, 4096, 8192];
    let rows = crate::eval::index_bench(&db, &sizes, queries);
    anyhow::ensure!(
        !rows.is_empty(),
        "the database is too small: it needs more than {} entries",
        queries + 64
    );
    if json {
        println!(
            "{}",
            serde_json::json!({ "feature_dim": db.manifest().feature_dim, "queries": queries, "rows": rows })
        );
        return Ok(());
    }
    println!(
        "layer-0 features ({} dims) of {}, {queries} queries, medians",
        db.manifest().feature_dim,
        db.dir().display()
    );
    println!(
        "{:>7} {:>10} | {:>10} {:>9} | {:>10} {:>9} {:>10}",
        "bucket", "scan µs", "sketch µs", "recall@1", "HNSW µs", "recall@1", "build ms"
    );
    for r in &rows {
        println!(
            "{:>7} {:>10.1} | {:>10.1} {:>8.1}% | {:>10.1} {:>8.1}% {:>10.1}",
            r.bucket,
            r.scan_us,
            r.sketch_us,
            r.sketch_recall_at_1 * 100.0,
            r.hnsw_us,
            r.recall_at_1 * 100.0,
            r.build_ms
        );
    }
    println!(
        "sketch: {SKETCH_DIM}-value sketches scanned, the best {RERANK} re-ranked exactly (the look-up's path below the HNSW bucket size)"
    );
    Ok(())
}
