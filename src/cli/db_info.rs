//! `attncache db-info`: what a database holds.

use std::path::Path;

use serde_json::json;

use crate::cache::{Database, HeadType};
use crate::modules::ModuleStore;
use crate::modules::store::STORE_KIND;

/// True when `dir`'s manifest says it is a module store.
fn is_module_store(dir: &Path) -> bool {
    std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|m| m["kind"] == STORE_KIND)
}

/// What bounds a store's positions, in words.
fn positions_bound(encoding: crate::modules::Encoding, end: usize, max: usize) -> String {
    match encoding {
        crate::modules::Encoding::Alone => format!(
            "every module encoded at its schema position: the schema spans {end} of the model's {max} (the paper's bound)"
        ),
        crate::modules::Encoding::Prefixed => format!(
            "every module encoded after the preamble: any number of modules; a prompt must fit the model's {max} (schema positions span {end}, and schema-position prompts past {max} are refused)"
        ),
    }
}

/// What a module store holds.
fn module_store(dir: &Path, verify: bool, json: bool) -> anyhow::Result<()> {
    let store = ModuleStore::open_any(dir)?;
    if verify {
        store.verify()?;
    }
    let m = store.manifest();
    let t = store.tokenized();
    if json {
        let modules: Vec<_> = t
            .modules
            .iter()
            .map(|m| {
                json!({"name": m.name, "union": m.union, "offset": m.offset, "span": m.span,
                       "tokens": m.rows,
                       "params": m.segments.iter().filter_map(|s| match s {
                           crate::modules::layout::Segment::Param { name, reserve, .. } => Some(json!({"name": name, "reserve": reserve})),
                           _ => None,
                       }).collect::<Vec<_>>()})
            })
            .collect();
        let out = json!({
            "dir": store.dir(),
            "kind": "modules",
            "schema": m.schema_name,
            "schema_sha256": m.schema_sha256,
            "modules": modules,
            "tokens": m.tokens,
            "schema_positions": t.end,
            "encoding": m.encoding.name(),
            "chat": m.chat,
            "preamble_tokens": m.preamble.len(),
            "positions_bound": positions_bound(store.manifest().encoding, t.end, m.model.shape.max_positions),
            "bytes": store.size_on_disk(),
            "bytes_per_token": m.bytes_per_token,
            "kv_dtype": m.kv_dtype,
            "model": m.model,
            "format_version": m.format_version,
            "verified": verify,
        });
        println!("{out}");
        return Ok(());
    }
    println!("module store {}", store.dir().display());
    println!(
        "schema     {} (sha256 {}), {} modules, {} tokens stored, {} positions",
        m.schema_name,
        &m.schema_sha256[..12],
        m.modules,
        m.tokens,
        t.end
    );
    println!(
        "encoding   {} ({} prompts; preamble of {} tokens{})",
        m.encoding.name(),
        if m.chat { "chat" } else { "raw" },
        m.preamble.len(),
        match m.encoding {
            crate::modules::Encoding::Prefixed => ", stored once",
            crate::modules::Encoding::Alone => ", computed per prompt",
        }
    );
    println!(
        "positions  {}",
        positions_bound(m.encoding, t.end, m.model.shape.max_positions)
    );
    println!(
        "size       {:.1} MiB (keys and values {}, {:.1} KiB per token)",
        store.size_on_disk() as f64 / (1024.0 * 1024.0),
        m.kv_dtype,
        m.bytes_per_token as f64 / 1024.0
    );
    println!(
        "model      {} ({} layers)",
        m.model.describe(),
        m.model.shape.layers
    );
    if verify {
        println!("checksums  all files verified");
    }
    println!("modules    name: positions, tokens");
    for module in &t.modules {
        let union = module
            .union
            .as_ref()
            .map(|u| format!(" (union {u})"))
            .unwrap_or_default();
        println!(
            "  {:<24} {:>6}–{:<6} {:>6}{union}",
            crate::text::shorten(&module.name, 24),
            module.offset,
            module.offset + module.span,
            module.rows
        );
    }
    Ok(())
}

pub fn run(dir: &Path, verify: bool, json: bool) -> anyhow::Result<()> {
    if is_module_store(dir) {
        return module_store(dir, verify, json);
    }
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
            "head_types": db.head_types(),
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
    if let Some(length) = m.model.padded_to {
        println!(
            "inputs     cut and padded to {length} tokens (build --pad-to): queries are padded alike"
        );
    }
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
    match db.head_types() {
        Some(types) => {
            println!("head types (from {} entries), by layer:", types.entries);
            for (l, row) in types.heads.iter().enumerate() {
                let tags: String = row.iter().map(|p| format!(" {}", p.kind.tag())).collect();
                println!("  L{l:<3}{tags}");
            }
            println!(
                "  {}",
                HeadType::ALL
                    .iter()
                    .map(|t| format!("{} {}", t.tag(), t.name()))
                    .collect::<Vec<_>>()
                    .join(" · ")
            );
        }
        None => println!("head types none (built before head types: rebuild the database)"),
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
