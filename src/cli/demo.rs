//! `attncache demo` (also what `attncache` with no arguments runs): a short
//! tour of the model and of attention-map capture and reuse.

use super::setup::{Target, load_model};
use std::time::Instant;

use candle_core::Tensor;

use crate::cache::map_similarity;
use crate::eval::median;
use crate::model::{HeadPlan, LayerPlan, Model, StaticPlan, TokenizedText, cosine, ms};

/// Our own demo prompts (see the file for the format).
const DEMO_PROMPTS: &str = include_str!("../../assets/demo_prompts.txt");

/// Interleaved repeats per timed variant.
const REPEATS: usize = 15;

/// The demo prompts, comments and blank lines dropped.
pub fn demo_prompts() -> Vec<&'static str> {
    DEMO_PROMPTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

pub fn run(target: &Target) -> anyhow::Result<()> {
    let model = load_model(target, "demo")?;
    let shape = *model.shape();
    println!(
        "attncache demo: {} ({} layers × {} heads, hidden {})\n",
        model.files.dir.display(),
        shape.layers,
        shape.heads,
        shape.hidden
    );
    let prompts = demo_prompts();
    let tokenized = model.tokenize(&prompts)?;

    println!("1. Sentence embeddings: cosine of neighbouring demo prompts");
    let embedded = model.embed(&prompts)?;
    for pair in (0..prompts.len()).collect::<Vec<_>>().chunks(2) {
        if let [i, j] = *pair {
            let c = cosine(&embedded.embeddings[i], &embedded.embeddings[j]);
            println!("   {c:.4}  {:?} vs {:?}", prompts[i], prompts[j]);
        }
    }

    let a = &tokenized[0];
    println!(
        "\n2. Capture every map of {:?} ({} tokens), then reuse them all",
        prompts[0],
        a.ids.len()
    );
    let captured = model.capture_maps(a)?;
    let exact = forward_hidden(&model, a, &mut StaticPlan::exact(shape.layers, shape.heads))?;
    let reused = forward_hidden(&model, a, &mut reuse_plan(&captured, shape.layers))?;
    let diff = (&exact - &reused)?.abs()?.max_all()?.to_scalar::<f32>()?;
    println!("   max |Δ| of the last hidden state vs exact: {diff:.1e}");
    let (exact_ms, reuse_ms) = time_interleaved(&model, a, &captured)?;
    println!(
        "   forward time, median of {REPEATS} interleaved runs: exact {exact_ms:.2} ms, all maps reused {reuse_ms:.2} ms ({:.2}× — the ceiling of full reuse at this length; look-up not included)",
        exact_ms / reuse_ms
    );

    if let Some(j) = (1..tokenized.len()).find(|&j| tokenized[j].ids.len() == a.ids.len()) {
        let (b, b_text) = (&tokenized[j], prompts[j]);
        println!(
            "\n3. Reuse the maps of {b_text:?} (same length) in {:?}",
            prompts[0]
        );
        let other = model.capture_maps(b)?;
        print!("   mean map similarity (1 − TV) per layer:");
        for l in 0..shape.layers {
            let sims = (0..shape.heads)
                .map(|h| map_similarity(&captured[l][h], &other[l][h]))
                .collect::<candle_core::Result<Vec<f32>>>()?;
            print!(" L{l} {:.2}", sims.iter().sum::<f32>() / sims.len() as f32);
        }
        println!();
        for layers in [1, shape.layers] {
            let mut plan_layers = reuse_plan(&other, layers).layers().to_vec();
            plan_layers.resize(shape.layers, LayerPlan::exact(shape.heads));
            let hidden = forward_hidden(&model, a, &mut StaticPlan::new(plan_layers))?;
            println!(
                "   reuse in the first {layers} layer(s): output cosine vs exact {:.4}",
                mean_token_cosine(&exact, &hidden)?
            );
        }
    }
    println!(
        "\nNext: `attncache build --corpus rt:db --limit 500 --out db`, then `attncache run --db db TEXT` and `attncache eval --db db --split rt:test --limit 200`."
    );
    Ok(())
}

/// A plan reusing `maps` in the first `layers` layers.
fn reuse_plan(maps: &[Vec<Tensor>], layers: usize) -> StaticPlan {
    StaticPlan::new(
        maps.iter()
            .take(layers)
            .map(|heads| LayerPlan::new(heads.iter().cloned().map(HeadPlan::reuse).collect()))
            .collect(),
    )
}

fn forward_hidden(
    model: &Model,
    text: &TokenizedText,
    plan: &mut StaticPlan,
) -> anyhow::Result<Tensor> {
    Ok(model.forward(std::slice::from_ref(text), plan)?.1.hidden)
}

/// Median forward times (ms) of the exact plan and of reusing every map,
/// run alternately so both see the same machine state.
fn time_interleaved(
    model: &Model,
    text: &TokenizedText,
    maps: &[Vec<Tensor>],
) -> anyhow::Result<(f64, f64)> {
    let shape = model.shape();
    let (mut exact, mut reused) = (Vec::new(), Vec::new());
    for _ in 0..REPEATS {
        let start = Instant::now();
        forward_hidden(
            model,
            text,
            &mut StaticPlan::exact(shape.layers, shape.heads),
        )?;
        exact.push(ms(start.elapsed()));
        let start = Instant::now();
        forward_hidden(model, text, &mut reuse_plan(maps, shape.layers))?;
        reused.push(ms(start.elapsed()));
    }
    Ok((
        median(&exact).unwrap_or(f64::NAN),
        median(&reused).unwrap_or(f64::NAN),
    ))
}

/// Mean over tokens of the cosine between two `[1, S, D]` hidden states.
fn mean_token_cosine(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    let a = a.squeeze(0)?.to_vec2::<f32>()?;
    let b = b.squeeze(0)?.to_vec2::<f32>()?;
    Ok(a.iter().zip(&b).map(|(x, y)| cosine(x, y)).sum::<f32>() / a.len() as f32)
}
