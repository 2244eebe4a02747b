//! `attncache check-device`: the correctness checks of the test suite, run on
//! the `--device` against the CPU: the same forward on both (last hidden
//! state, every attention map, sentence embedding), and capture → reuse of
//! every map on the device reproducing its exact output; for a decoder also
//! every row-wise prefill and greedy decoding ([`super::check_decoder`]).

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::check_decoder::{self, LOGITS_TOLERANCE};
use super::setup::{Target, load_model};
use crate::model::{Model, ModelSource, StaticPlan, TokenizedText, cosine, device_name};

/// Largest |device − CPU| allowed on the last hidden state (f32 kernels that
/// sum in a different order drift by ~1e-6 per layer; TF32 would be ~1e-2).
const DEVICE_TOLERANCE: f32 = 1e-3;
/// Largest |reuse − exact| allowed on the device (same kernels, same maps).
const REUSE_TOLERANCE: f32 = 1e-4;

/// One text's comparison.
#[derive(Debug, Serialize)]
struct TextCheck {
    tokens: usize,
    hidden_max_abs_diff: f32,
    map_max_abs_diff: f32,
    embedding_cosine: f32,
    reuse_max_abs_diff: f32,
}

/// Runs the checks; fails when a difference exceeds its tolerance.
pub fn run(target: &Target, json: bool) -> anyhow::Result<()> {
    let device_model = load_model(target, "check-device")?;
    let cpu_model = Model::load(
        &ModelSource::from_arg(target.model),
        &Device::Cpu,
        "`attncache check-device`",
    )?;
    let long = "The film follows a retired detective who returns to the small coastal town \
                where he grew up, and the quiet mystery he finds there slowly becomes a story \
                about memory, guilt and the people who stayed behind. "
        .repeat(6);
    let texts = [
        "The new movie is awesome",
        "The new movie is so great",
        "A cat sits outside",
        "A gripping, beautifully acted film that never lets up.",
        long.as_str(),
    ];
    let mut checks = Vec::new();
    for text in texts {
        let tokenized = cpu_model.tokenizer.encode(text)?;
        checks.push(check_text(&cpu_model, &device_model, &tokenized)?);
    }
    let worst = |f: fn(&TextCheck) -> f32| checks.iter().map(f).fold(0f32, f32::max);
    let hidden = worst(|c| c.hidden_max_abs_diff);
    let reuse = worst(|c| c.reuse_max_abs_diff);
    let prefills = match device_model.decoder() {
        Some(_) => check_decoder::check(&cpu_model, &device_model)?,
        None => Vec::new(),
    };
    let logits = prefills
        .iter()
        .map(|c| c.logits_max_abs_diff)
        .fold(0f32, f32::max);
    let greedy = prefills.iter().all(|c| c.greedy_equal);
    let passed = hidden <= DEVICE_TOLERANCE
        && reuse <= REUSE_TOLERANCE
        && logits <= LOGITS_TOLERANCE
        && greedy;
    let device = device_name(&target.device);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "device": device,
                "texts": checks,
                "hidden_max_abs_diff": hidden,
                "reuse_max_abs_diff": reuse,
                "prefills": prefills,
                "logits_max_abs_diff": logits,
                "greedy_equal": greedy,
                "tolerances": {"hidden": DEVICE_TOLERANCE, "reuse": REUSE_TOLERANCE, "logits": LOGITS_TOLERANCE},
                "passed": passed,
            })
        );
    } else {
        println!(
            "{:>6} {:>14} {:>14} {:>12} {:>14}",
            "tokens", "hidden |Δ|", "maps |Δ|", "emb cosine", "reuse |Δ|"
        );
        for c in &checks {
            println!(
                "{:>6} {:>14.3e} {:>14.3e} {:>12.8} {:>14.3e}",
                c.tokens,
                c.hidden_max_abs_diff,
                c.map_max_abs_diff,
                c.embedding_cosine,
                c.reuse_max_abs_diff
            );
        }
        if !prefills.is_empty() {
            println!(
                "{:>10} {:>6} {:>14} {:>8}",
                "prefill", "tokens", "logits |Δ|", "greedy"
            );
            for c in &prefills {
                println!(
                    "{:>10} {:>6} {:>14.3e} {:>8}",
                    c.prefill,
                    c.tokens,
                    c.logits_max_abs_diff,
                    if c.greedy_equal { "same" } else { "DIFFERS" }
                );
            }
        }
        println!(
            "{device} vs cpu: hidden ≤ {DEVICE_TOLERANCE:e}, reuse ≤ {REUSE_TOLERANCE:e}, logits ≤ {LOGITS_TOLERANCE:e}, same greedy tokens: {}",
            if passed { "passed" } else { "FAILED" }
        );
    }
    anyhow::ensure!(
        passed,
        "{device} differs from the CPU beyond tolerance (hidden {hidden:e}, reuse {reuse:e}, logits {logits:e}, greedy tokens the same: {greedy})"
    );
    Ok(())
}

/// Compares one text on both models.
fn check_text(cpu: &Model, dev: &Model, text: &TokenizedText) -> anyhow::Result<TextCheck> {
    let shape = *cpu.shape();
    let capture = || StaticPlan::capture_all(shape.layers, shape.heads);
    let input = std::slice::from_ref(text);
    let (batch, cpu_out) = cpu.forward(input, &mut capture())?;
    let (dev_batch, dev_out) = dev.forward(input, &mut capture())?;
    let max_diff = |a: &Tensor, b: &Tensor| -> anyhow::Result<f32> {
        let b = b.to_device(&Device::Cpu)?;
        Ok(a.sub(&b)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?)
    };
    let hidden = max_diff(&cpu_out.hidden, &dev_out.hidden)?;
    let mut maps = 0f32;
    for (cpu_layer, dev_layer) in cpu_out.maps.iter().zip(&dev_out.maps) {
        for (a, b) in cpu_layer.iter().zip(dev_layer) {
            if let (Some(a), Some(b)) = (a, b) {
                maps = maps.max(max_diff(a, b)?);
            }
        }
    }
    let embedding = |model: &Model, hidden: &Tensor, batch| -> anyhow::Result<Vec<f32>> {
        Ok(model
            .readout(hidden, batch)?
            .to_device(&Device::Cpu)?
            .squeeze(0)?
            .to_vec1::<f32>()?)
    };
    let cosine_cpu_dev = cosine(
        &embedding(cpu, &cpu_out.hidden, &batch)?,
        &embedding(dev, &dev_out.hidden, &dev_batch)?,
    );
    let (_, reused) = dev.forward(input, &mut StaticPlan::reuse_captured(&dev_out.maps)?)?;
    let reuse = max_diff(&dev_out.hidden.to_device(&Device::Cpu)?, &reused.hidden)?;
    Ok(TextCheck {
        tokens: text.ids.len(),
        hidden_max_abs_diff: hidden,
        map_max_abs_diff: maps,
        embedding_cosine: cosine_cpu_dev,
        reuse_max_abs_diff: reuse,
    })
}
