//! `attncache bench`: exact vs cached latency by sequence length.

use std::path::Path;

use super::progress;
use super::setup::{Target, load_corpus, load_model, load_policy, open_database};
use crate::cache::{RERANK, SKETCH_DIM};
use crate::data::CorpusOptions;
use crate::engine::Engine;
use crate::eval::bench;

/// Options of `attncache bench`.
pub struct BenchArgs<'a> {
    pub db: &'a Path,
    pub policy: Option<&'a str>,
    pub splits: &'a [String],
    pub limit: usize,
    pub repeats: usize,
    pub json: bool,
}

pub fn run(target: &Target, args: BenchArgs) -> anyhow::Result<()> {
    let model = load_model(target, "bench")?;
    let db = open_database(args.db, &model)?;
    let policy = load_policy(args.policy, Some(&db), &model)?;
    let mut texts = Vec::new();
    for split in args.splits {
        let corpus = load_corpus(
            split,
            &CorpusOptions::default(),
            Some(args.limit),
            0,
            &model,
        )?;
        texts.extend(corpus.items.into_iter().map(|i| i.text));
    }
    let engine = Engine::new(model, db, policy)?;
    let bar = progress::bar(texts.len(), "benchmarking");
    let rows = bench(&engine, &texts, args.repeats, &mut |d, _| {
        bar.set_position(d as u64)
    });
    bar.finish_and_clear();
    let rows = rows?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "policy": engine.policy().name, "splits": args.splits, "repeats": args.repeats, "rows": rows })
        );
        return Ok(());
    }
    println!(
        "policy {} · {} · medians of {} interleaved repeats per query · speedup = Σ exact / Σ cached per bucket",
        engine.policy().name,
        args.splits.join(" + "),
        args.repeats
    );
    println!(
        "{:>9} {:>7} {:>6} {:>6} | {:>9} {:>7} | {:>9} {:>7} | {:>9} {:>9} {:>6} | {:>8} {:>8}",
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
        "(e2e)"
    );
    for r in &rows {
        println!(
            "{:>9} {:>7} {:>6.1} {:>5.1}% | {:>8.3}× {:>6.3}× | {:>8.3}× {:>6.3}× | {:>6.2} ms {:>6.2} ms {:>5.1}% | {:>7.3}× {:>7.3}×",
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
        "ideal: FLOP model of the work the reused heads skip, look-up free; share: look-up ÷ exact forward; ceiling: every map reused, no look-up"
    );
    Ok(())
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
