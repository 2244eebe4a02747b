//! The fused CPU kernels against the reference (candle ops) on the real
//! model (all-MiniLM-L6-v2), one input at a time at a short review's length,
//! 128 and 256 tokens, on two paths:
//!
//! - exact: every head computed;
//! - cached: every head reuses a map, the input's own maps stored as f16 as a
//!   database stores them (the best case of any cache; no look-up).
//!
//! Reported separately, so each claim stands on its own: what the fused
//! kernels gain on each path (reference / fused), and what reuse adds on the
//! fused kernels (exact / cached, whole forward and attention alone).
//! Timing: warm blocks per variant in rotating order
//! (`attncache::eval::timed_blocks`).
//!
//!   cargo bench --bench kernels

use std::time::{Duration, Instant};

use attncache::eval::{BlockPlan, timed_blocks};
use attncache::model::{HeadPlan, Kernels, LayerPlan, Model, ModelSource, StaticPlan, ms};
use candle_core::DType;

const BLOCKS: BlockPlan = BlockPlan {
    rounds: 10,
    block: 6,
    pause: Duration::from_millis(50),
};

fn main() -> anyhow::Result<()> {
    let model = Model::load(
        &ModelSource::Default,
        &candle_core::Device::Cpu,
        "the kernel benchmark",
    )?;
    let mut reference = model.clone();
    reference.set_kernels(Kernels::Reference);
    let mut fused = model.clone();
    fused.set_kernels(Kernels::Fused);
    let shape = *model.shape();
    let words =
        "the film follows a retired detective back to the coastal town where he grew up and";
    println!("one input per forward · {}", BLOCKS.describe());
    println!(
        "{:>6} | {:>27} | {:>27} | {:>24}",
        "", "exact path", "cached path (all reused)", "reuse on fused kernels"
    );
    println!(
        "{:>6} | {:>8} {:>8} {:>9} | {:>8} {:>8} {:>9} | {:>11} {:>12}",
        "tokens",
        "ref ms",
        "fused ms",
        "ref/fused",
        "ref ms",
        "fused ms",
        "ref/fused",
        "forward",
        "attention"
    );
    for target in [16usize, 128, 256] {
        let mut text = String::new();
        let tokenized = loop {
            let t = model.tokenizer.encode(&text)?;
            if t.ids.len() >= target {
                break t;
            }
            text.push_str(words.split(' ').nth(t.ids.len() % 16).unwrap_or("film"));
            text.push(' ');
        };
        let reuse_own = StaticPlan::new(
            fused
                .capture_maps(&tokenized)?
                .into_iter()
                .map(|layer| {
                    let heads = layer
                        .into_iter()
                        .map(|m| Ok(HeadPlan::reuse(m.to_dtype(DType::F16)?)))
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    Ok(LayerPlan::new(heads))
                })
                .collect::<candle_core::Result<Vec<_>>>()?,
        );
        let exact = StaticPlan::exact(shape.layers, shape.heads);
        // Variants: 0 reference exact, 1 fused exact, 2 reference cached, 3 fused cached.
        let times = timed_blocks(4, 2, BLOCKS, |variant| {
            let m = if variant % 2 == 0 { &reference } else { &fused };
            let mut plan = if variant < 2 {
                exact.clone()
            } else {
                reuse_own.clone()
            };
            let start = Instant::now();
            let (_, out) = m.forward(std::slice::from_ref(&tokenized), &mut plan)?;
            Ok(vec![ms(start.elapsed()), ms(out.timings.attention())])
        })?;
        println!(
            "{:>6} | {:>8.2} {:>8.2} {:>8.2}× | {:>8.2} {:>8.2} {:>8.2}× | {:>10.2}× {:>11.2}×",
            tokenized.ids.len(),
            times.median(0, 0),
            times.median(1, 0),
            times.ratio(0, 1, 0),
            times.median(2, 0),
            times.median(3, 0),
            times.ratio(2, 3, 0),
            times.ratio(1, 3, 0),
            times.ratio(1, 3, 1),
        );
    }
    Ok(())
}
