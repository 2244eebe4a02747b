//! `modules workload` and `modules build`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use super::super::progress;
use super::super::setup::{Target, load_model};
use crate::modules::prompt::prompts_jsonl;
use crate::modules::store::BuildOptions;
use crate::modules::workload::{WorkloadKind, WorkloadOptions, generate};
use crate::modules::{Encoding, Schema, build_store, decoder_of};
use crate::storage::write_atomically;

/// Writes a generated workload's schema.toml and prompts.jsonl into `out`.
pub fn workload(
    kind: &str,
    (per_prompt, pool, prompts, seed): (usize, usize, usize, u64),
    out: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let kind = WorkloadKind::parse(kind)?;
    let w = generate(WorkloadOptions {
        kind,
        per_prompt,
        pool,
        prompts,
        seed,
    })?;
    std::fs::create_dir_all(out)?;
    let (schema, prompts_path) = (out.join("schema.toml"), out.join("prompts.jsonl"));
    write_atomically(&schema, toml::to_string(&w.schema)?.as_bytes())?;
    write_atomically(&prompts_path, prompts_jsonl(&w.prompts).as_bytes())?;
    if json {
        println!(
            "{}",
            json!({"kind": kind, "schema": schema, "prompts": prompts_path,
                   "modules": w.schema.modules.len(), "prompt_count": w.prompts.len(), "seed": seed})
        );
    } else {
        println!(
            "wrote {} ({} modules) and {} ({} prompts of {} modules, seed {seed})",
            schema.display(),
            w.schema.modules.len(),
            prompts_path.display(),
            w.prompts.len(),
            per_prompt
        );
    }
    Ok(())
}

/// Builds a module store from a schema.
pub fn build(
    target: &Target,
    (schema_path, out): (&Path, &Path),
    (encode, chat): (&str, bool),
    json: bool,
) -> anyhow::Result<()> {
    let options = BuildOptions {
        encoding: Encoding::parse(encode)?,
        chat,
    };
    let schema = Schema::load(schema_path)?;
    let model = load_model(target, "modules build")?;
    decoder_of(&model)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    // Ctrl-C stops the build cleanly: the staging directory is removed and
    // any store already at --out stays as it was.
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)).ok();
    let bar = progress::bar(schema.modules.len(), &format!("encoding {}", schema.name));
    let summary = build_store(
        &model,
        &schema,
        out,
        options,
        &mut |done, _| bar.set_position(done as u64),
        &cancel,
    );
    bar.finish_and_clear();
    let summary = summary?;
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "built {}: {} modules ({} encoded, {} unchanged and copied), {} tokens, {:.1} MiB, encoding {} (preamble of {} tokens)",
            summary.dir.display(),
            summary.modules,
            summary.encoded,
            summary.reused,
            summary.tokens,
            summary.bytes as f64 / (1024.0 * 1024.0),
            summary.encoding.name(),
            summary.preamble_tokens
        );
    }
    Ok(())
}
