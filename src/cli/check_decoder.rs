//! `check-device` for a decoder: the row-wise pass behind exact prefill,
//! the prefix cache, modular reuse and decoding, on the device (tensor
//! pass) against the CPU (fused pass): next-token logits and 16 greedy
//! tokens after each, with a module store built on the CPU in a temporary
//! directory from the check's own texts.

use std::sync::atomic::AtomicBool;

use serde::Serialize;

use crate::model::Model;
use crate::model::llama::LlamaDecoder;
use crate::modules::schema::ModuleSpec;
use crate::modules::{
    BuildOptions, Encoding, Layout, LayoutOptions, ModuleStore, Positions, Prefill, PromptSpec,
    Recovery, Schema, build_store, decoder_of, prefill,
};
use crate::storage::ModelIdentity;

/// Largest |device − CPU| allowed on next-token logits.
pub const LOGITS_TOLERANCE: f32 = 1e-3;
/// Greedy tokens compared after each prefill.
const GREEDY_TOKENS: usize = 16;

/// One prefill's comparison.
#[derive(Debug, Serialize)]
pub struct PrefillCheck {
    /// exact, prefix, or the modular recovery.
    pub prefill: String,
    /// Prompt tokens.
    pub tokens: usize,
    /// Largest |device − CPU| of the next-token logits.
    pub logits_max_abs_diff: f32,
    /// Whether the greedy continuations are the same tokens.
    pub greedy_equal: bool,
}

/// Runs every prefill of one prompt on both decoders.
pub fn check(cpu: &Model, device: &Model) -> anyhow::Result<Vec<PrefillCheck>> {
    let (cpu_decoder, device_decoder) = (decoder_of(cpu)?, decoder_of(device)?);
    let text = |s: &str| s.to_string();
    let module = |name: &str, body: String| ModuleSpec {
        name: name.into(),
        text: body,
        union: None,
        params: Default::default(),
        role: None,
    };
    let schema = Schema {
        name: "check-device".into(),
        preamble: None,
        modules: vec![
            module(
                "system",
                text("You are a film critic. You answer in one short sentence.\n"),
            ),
            module(
                "doc",
                "Document: A retired detective returns to the coastal town where he grew up, \
                 and the quiet mystery he finds there becomes a story about memory and guilt.\n"
                    .repeat(4),
            ),
            module("note", text("Note: the town is called Port Mellow.\n")),
        ],
    };
    schema.check()?;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("store");
    let options = BuildOptions {
        encoding: Encoding::Prefixed,
        chat: true,
    };
    build_store(
        cpu,
        &schema,
        &out,
        options,
        &mut |_, _| {},
        &AtomicBool::new(false),
    )?;
    let store = ModuleStore::open(&out, &ModelIdentity::of(cpu)?)?;
    let layout = |question: &str| -> anyhow::Result<Layout> {
        let prompt = PromptSpec {
            modules: vec!["system".into(), "note".into(), "doc".into()],
            text: question.into(),
            ..PromptSpec::default()
        };
        let options = LayoutOptions {
            positions: Positions::Contiguous,
            chat: Some(cpu_decoder.chat()),
            max_positions: cpu_decoder.shape().max_positions,
        };
        Layout::new(store.tokenized(), &prompt, &cpu.tokenizer, options)
    };
    let asked = layout("Where does the detective return to?")?;
    let before = layout("What is the town called?")?;
    let runs = |d: &LlamaDecoder| -> anyhow::Result<Vec<(String, Prefill)>> {
        let held = prefill::exact(d, &before, &[])?.state;
        let mut runs = vec![
            (text("exact"), prefill::exact(d, &asked, &[])?),
            (text("prefix"), prefill::prefix(d, &asked, Some(held))?),
        ];
        for recovery in [Recovery::None, Recovery::Select(30.0), Recovery::First(8)] {
            let run = prefill::modular(d, &store, &asked, recovery, &[])?;
            runs.push((recovery.to_string(), run));
        }
        Ok(runs)
    };
    let mut checks = Vec::new();
    for ((name, mut a), (_, mut b)) in runs(cpu_decoder)?.into_iter().zip(runs(device_decoder)?) {
        let diff = a
            .state
            .logits
            .iter()
            .zip(&b.state.logits)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let greedy_a = cpu_decoder.greedy(&mut a.state, GREEDY_TOKENS, None)?;
        let greedy_b = device_decoder.greedy(&mut b.state, GREEDY_TOKENS, None)?;
        checks.push(PrefillCheck {
            prefill: name,
            tokens: asked.len(),
            logits_max_abs_diff: diff,
            greedy_equal: greedy_a == greedy_b,
        });
    }
    Ok(checks)
}
