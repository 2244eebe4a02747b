//! Time to first token of modular attention reuse on SmolLM2-135M-Instruct
//! against exact prefill and a prefix cache, by prompt length: multi-document
//! prompts (Rotten Tomatoes plot summaries as modules) with at most 64
//! uncached tokens; the previous prompt held the same modules with the two in
//! the middle swapped, so a prefix cache serves about half of each prompt. Variants: exact, prefix cache, modular naive, `first:16`,
//! `select:15`, all on one row-wise pass with loading, rotation and
//! recomputation timed. Warm blocks per variant in rotating order
//! (`attncache::eval::timed_blocks`).
//!
//!   cargo bench --bench modules [-- LENGTHS [VARIANTS]]
//!
//! LENGTHS: comma-separated target token counts (default 512,1024,2048,4096);
//! VARIANTS: comma-separated names (default all).

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use attncache::eval::{BlockPlan, timed_blocks};
use attncache::model::{Model, ModelSource};
use attncache::modules::workload::{WorkloadKind, WorkloadOptions, generate};
use attncache::modules::{
    BuildOptions, Layout, LayoutOptions, ModuleStore, Positions, PromptSpec, Recovery, build_store,
    prefill,
};
use attncache::storage::ModelIdentity;

const BLOCKS: BlockPlan = BlockPlan {
    rounds: 3,
    block: 3,
    pause: Duration::from_millis(50),
};

/// Plot summaries per 1,000 tokens (they average ~120 tokens).
const DOCS_PER_1K: f64 = 8.2;

const VARIANTS: [&str; 5] = ["exact", "prefix", "naive", "first:16", "select:15"];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let lengths: Vec<usize> = match args.first() {
        Some(list) => list.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![512, 1024, 2048, 4096],
    };
    let wanted: Vec<&str> = match args.get(1) {
        Some(list) => list.split(',').collect(),
        None => VARIANTS.to_vec(),
    };
    let model = Model::load(
        &ModelSource::Smollm2,
        &candle_core::Device::Cpu,
        "the module benchmark",
    )?;
    let decoder = model.decoder().expect("SmolLM2 is a decoder");
    let max_docs =
        (*lengths.iter().max().unwrap_or(&2048) as f64 / 1000.0 * DOCS_PER_1K).ceil() as usize;
    let work = generate(WorkloadOptions {
        kind: WorkloadKind::Multidoc,
        per_prompt: 1,
        pool: max_docs + 2,
        prompts: 1,
        seed: 7,
    })?;
    let dir = tempfile::tempdir()?;
    let store_dir = dir.path().join("store");
    build_store(
        &model,
        &work.schema,
        &store_dir,
        BuildOptions::default(),
        &mut |_, _| {},
        &AtomicBool::new(false),
    )?;
    let store = ModuleStore::open(&store_dir, &ModelIdentity::of(&model)?)?;
    println!("SmolLM2-135M-Instruct, 2 threads · {}", BLOCKS.describe());
    println!(
        "{:>6} {:>6} {:>8} | {}",
        "target",
        "tokens",
        "uncached",
        wanted
            .iter()
            .map(|v| format!("{v:>10} ms"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for &target in &lengths {
        let docs = ((target as f64 / 1000.0 * DOCS_PER_1K).round() as usize).max(2);
        let modules: Vec<String> = (0..docs).map(|i| format!("doc-{i}")).collect();
        let prompt = |modules: Vec<String>| PromptSpec {
            modules,
            text: "Question: which document is about a hit man?\nAnswer: Document".into(),
            ..PromptSpec::default()
        };
        // The previous prompt: the same documents with the two in the middle
        // swapped, so a prefix cache serves about half of this one.
        let mut previous_modules = modules.clone();
        previous_modules.swap(docs / 2 - 1, docs / 2);
        let options = LayoutOptions {
            positions: Positions::Contiguous,
            chat: None,
            max_positions: decoder.shape().max_positions,
        };
        let layout = Layout::new(
            store.tokenized(),
            &prompt(modules),
            &model.tokenizer,
            options,
        )?;
        let previous_layout = Layout::new(
            store.tokenized(),
            &prompt(previous_modules),
            &model.tokenizer,
            options,
        )?;
        let previous = match wanted.contains(&"prefix") {
            true => Some(prefill::exact(decoder, &previous_layout, &[])?.state),
            false => None,
        };
        let times = timed_blocks(wanted.len(), 1, BLOCKS, |v| {
            let run = match wanted[v] {
                "exact" => prefill::exact(decoder, &layout, &[])?,
                "prefix" => prefill::prefix(decoder, &layout, previous.clone())?,
                "naive" => prefill::modular(decoder, &store, &layout, Recovery::None, &[])?,
                other => prefill::modular(decoder, &store, &layout, Recovery::parse(other)?, &[])?,
            };
            Ok(vec![run.stages.total_ms])
        })?;
        let cells: Vec<String> = (0..wanted.len())
            .map(|v| format!("{:>13.1}", times.median(v, 0)))
            .collect();
        println!(
            "{:>6} {:>6} {:>8} | {}",
            target,
            layout.len(),
            layout.len() - layout.cached_rows(),
            cells.join(" ")
        );
        if let Some(exact) = wanted.iter().position(|v| *v == "exact") {
            let ratios: Vec<String> = (0..wanted.len())
                .map(|v| format!("{:>12.2}×", times.ratio(exact, v, 0)))
                .collect();
            println!(
                "{:>6} {:>6} {:>8} | {}",
                "",
                "",
                "vs exact",
                ratios.join(" ")
            );
        }
        if let Some(prefix) = wanted.iter().position(|v| *v == "prefix") {
            let ratios: Vec<String> = (0..wanted.len())
                .map(|v| format!("{:>12.2}×", times.ratio(prefix, v, 0)))
                .collect();
            println!(
                "{:>6} {:>6} {:>8} | {}",
                "",
                "",
                "vs prefix",
                ratios.join(" ")
            );
        }
    }
    Ok(())
}
