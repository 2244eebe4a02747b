//! `attncache db-info`: what a database holds.

use std::path::Path;

use serde_json::json;

use crate::cache::Database;

pub fn run(dir: &Path, verify: bool, json: bool) -> anyhow::Result<()> {
    let db = Database::open_any(dir)?;
    if verify {
        db.verify()?;
    }
    let m = db.manifest();
    let hist = db.index().length_histogram();
    if json {
        let out = json!({
            "dir": db.dir(),
            "entries": m.entries,
            "bytes": db.size_on_disk(),
            "model": m.model,
            "feature": m.feature,
            "feature_dim": m.feature_dim,
            "map_dtype": m.map_dtype,
            "corpus": m.corpus,
            "format_version": m.format_version,
            "hnsw_buckets": db.index().hnsw_buckets(),
            "hnsw_min_bucket": m.hnsw_min_bucket,
            "lengths": hist,
            "verified": verify,
        });
        println!("{out}");
        return Ok(());
    }
    println!("database   {}", db.dir().display());
    println!("entries    {} from {}", m.entries, m.corpus);
    println!(
        "size       {:.1} MiB (maps f16)",
        db.size_on_disk() as f64 / (1024.0 * 1024.0)
    );
    println!(
        "model      {} ({} layers × {} heads)",
        m.model.describe(),
        m.model.shape.layers,
        m.model.shape.heads
    );
    println!(
        "feature    {:?} ({} dims); {} HNSW buckets (≥ {} entries), exact scan elsewhere",
        m.feature,
        m.feature_dim,
        db.index().hnsw_buckets(),
        m.hnsw_min_bucket
    );
    if verify {
        println!("checksums  all files verified");
    }
    // At most ~24 rows: lengths are grouped into bins of equal width.
    let (lo, hi) = (
        hist.keys().next().copied().unwrap_or(0),
        hist.keys().last().copied().unwrap_or(0),
    );
    let width = (hi - lo + 1).div_ceil(24).max(1);
    let mut bins = std::collections::BTreeMap::new();
    for (len, count) in &hist {
        *bins
            .entry(lo + (len - lo) / width * width)
            .or_insert(0usize) += count;
    }
    println!("lengths    tokens: entries");
    let max = bins.values().copied().max().unwrap_or(1);
    for (start, count) in &bins {
        let label = if width == 1 {
            format!("{start}")
        } else {
            format!("{start}–{}", start + width - 1)
        };
        println!(
            "  {label:>9} {count:>6} {}",
            "█".repeat((count * 40).div_ceil(max))
        );
    }
    Ok(())
}
