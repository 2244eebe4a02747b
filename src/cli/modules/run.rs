//! `modules run`: one prompt from the store, every decision shown.

use serde::Serialize;
use serde_json::json;

use super::super::setup::Target;
use super::{StoreArgs, open};
use crate::model::{Model, TokenProb};
use crate::modules::prefill::{self, Prefill};
use crate::modules::{Layout, LayoutOptions, PromptSpec};

/// Most likely next tokens shown.
const TOP: usize = 5;

/// One run's report.
#[derive(Debug, Serialize)]
struct RunReport {
    ttft_ms: f64,
    stages_ms: crate::modules::Stages,
    cached_tokens: usize,
    recomputed_tokens: usize,
    bytes_loaded: u64,
    top: Vec<TokenProb>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generated: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generated_ids: Option<Vec<u32>>,
}

fn report(model: &Model, run: &mut Prefill, generate: usize) -> anyhow::Result<RunReport> {
    let decoder = model.decoder().expect("a decoder");
    let (generated, generated_ids) = if generate > 0 {
        let stop = model.tokenizer.token_id("<|im_end|>");
        let ids = decoder.greedy(&mut run.state, generate, stop)?;
        (Some(model.tokenizer.decode(&ids)?), Some(ids))
    } else {
        (None, None)
    };
    Ok(RunReport {
        ttft_ms: run.stages.total_ms,
        stages_ms: run.stages,
        cached_tokens: run.cached_rows,
        recomputed_tokens: run.recomputed_rows,
        bytes_loaded: run.bytes_loaded,
        top: model.top_of_logits(&run.state.logits, TOP)?,
        generated,
        generated_ids,
    })
}

pub fn run(
    target: &Target,
    args: &StoreArgs,
    prompt: &str,
    (generate, compare): (usize, bool),
    json: bool,
) -> anyhow::Result<()> {
    let opened = open(target, args, "modules run")?;
    let prompt = PromptSpec::from_arg(prompt)?;
    prompt.check(opened.store.schema())?;
    let decoder = opened.decoder();
    let layout = Layout::new(
        opened.store.tokenized(),
        &prompt,
        &opened.model.tokenizer,
        LayoutOptions {
            positions: opened.positions,
            chat: args.chat.then_some(decoder.chat()),
            max_positions: decoder.shape().max_positions,
        },
    )?;
    let mut modular = prefill::modular_with(decoder, &opened.store, &layout, opened.recovery, &[])?;
    let modular_report = report(&opened.model, &mut modular, generate)?;
    let exact = if compare {
        let mut exact = prefill::exact(decoder, &layout, &[])?;
        Some(report(&opened.model, &mut exact, generate)?)
    } else {
        None
    };
    if json {
        let out = json!({
            "tokens": layout.len(),
            "positions": opened.positions,
            "recovery": opened.recovery,
            "decisions": modular.decisions,
            "modular": modular_report,
            "exact": exact,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "prompt     {} tokens, {} from the store ({:.1} %), positions {}, recovery {}",
        layout.len(),
        modular.cached_rows,
        100.0 * modular.cached_rows as f64 / layout.len() as f64,
        opened.positions.name(),
        opened.recovery
    );
    for d in &modular.decisions {
        let recomputed = if d.recomputed > 0 {
            format!(", {} recomputed", d.recomputed)
        } else {
            String::new()
        };
        println!(
            "  {:<20} {:<9} {:>6} tokens{recomputed}",
            crate::text::shorten(&d.label, 20),
            d.state,
            d.tokens
        );
    }
    let show = |name: &str, r: &RunReport| {
        let s = &r.stages_ms;
        println!(
            "{name:<10} TTFT {:.1} ms (load {:.1}, rotate {:.1}, probe {:.1}, layers {:.1}, logits {:.1}); {:.1} MiB loaded",
            r.ttft_ms,
            s.load_ms,
            s.rotate_ms,
            s.probe_ms,
            s.forward_ms,
            s.logits_ms,
            r.bytes_loaded as f64 / (1024.0 * 1024.0)
        );
        let top: Vec<String> = r
            .top
            .iter()
            .map(|t| format!("{:?} {:.3}", t.token, t.prob))
            .collect();
        println!("           top-5 {}", top.join(", "));
        if let Some(text) = &r.generated {
            println!("           greedy {text:?}");
        }
    };
    show("modular", &modular_report);
    if let Some(exact) = &exact {
        show("exact", exact);
        println!(
            "speedup    {:.2}× over exact",
            exact.ttft_ms / modular_report.ttft_ms
        );
    }
    Ok(())
}
