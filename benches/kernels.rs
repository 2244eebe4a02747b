//! The exact forward with the fused CPU kernels against the reference
//! (candle ops), on the real model: one input at a time, at a short review's
//! length, 128 and 256 tokens; runs interleaved, medians of per-pair ratios.
//!
//!   cargo bench --bench kernels

use std::time::Instant;

use attncache::eval::median;
use attncache::model::{Kernels, Model, ModelSource, StaticPlan};

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
    let repeats = 40;
    println!("exact forward, one input, {repeats} interleaved pairs per length (medians)");
    println!(
        "{:>7} {:>14} {:>14} {:>16}",
        "tokens", "reference ms", "fused ms", "reference/fused"
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
        let time = |m: &Model| -> anyhow::Result<f64> {
            let start = Instant::now();
            m.forward(
                std::slice::from_ref(&tokenized),
                &mut StaticPlan::exact(shape.layers, shape.heads),
            )?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        };
        for _ in 0..3 {
            time(&reference)?;
            time(&fused)?;
        }
        let (mut r, mut f, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..repeats {
            let (a, b) = if i % 2 == 0 {
                let a = time(&reference)?;
                (a, time(&fused)?)
            } else {
                let b = time(&fused)?;
                (time(&reference)?, b)
            };
            r.push(a);
            f.push(b);
            ratio.push(a / b);
        }
        let m = |v: &[f64]| median(v).unwrap_or(f64::NAN);
        println!(
            "{:>7} {:>14.2} {:>14.2} {:>15.2}×",
            tokenized.ids.len(),
            m(&r),
            m(&f),
            m(&ratio)
        );
    }
    Ok(())
}
