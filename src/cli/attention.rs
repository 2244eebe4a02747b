//! `attncache attention`: one head's map for a text.

use super::setup::{Target, load_model};
use anyhow::bail;
use serde_json::json;

use super::heatmap;
use crate::model::{HeadPlan, LayerPlan, StaticPlan, ms, truncation_note};

pub fn run(
    target: &Target,
    layer: usize,
    head: usize,
    text: &str,
    json: bool,
) -> anyhow::Result<()> {
    let model = load_model(target, "attention")?;
    let shape = *model.shape();
    if layer >= shape.layers {
        bail!(
            "--layer {layer} is out of range: the model has layers 0..{}",
            shape.layers - 1
        );
    }
    if head >= shape.heads {
        bail!(
            "--head {head} is out of range: the model has heads 0..{}",
            shape.heads - 1
        );
    }
    let mut heads = vec![HeadPlan::Exact; shape.heads];
    heads[head] = HeadPlan::Capture;
    let mut layers = vec![LayerPlan::exact(shape.heads); shape.layers];
    layers[layer] = LayerPlan::new(heads);
    let mut plan = StaticPlan::new(layers);

    let tokenized = model.tokenize(&[text])?;
    let (_, out) = model.forward(&tokenized, &mut plan)?;
    let map = out.maps[layer][head]
        .as_ref()
        .expect("the plan captures this head")
        .squeeze(0)?
        .to_vec2::<f32>()?;
    let tokens = &tokenized[0].tokens;
    let truncated = tokenized[0].truncated;
    if truncated {
        eprintln!("warning: {}", truncation_note(tokens.len()));
    }
    if json {
        let out = json!({
            "text": text,
            "layer": layer,
            "head": head,
            "tokens": tokens,
            "truncated": truncated,
            "map": map,
            "timings_ms": {
                "forward": ms(out.timings.total()),
                "attention": ms(out.timings.attention()),
                "rest": ms(out.timings.rest()),
            },
        });
        println!("{out}");
    } else {
        println!("layer {layer}, head {head}: {} tokens", tokens.len());
        print!("{}", heatmap::render(tokens, &map));
    }
    Ok(())
}
