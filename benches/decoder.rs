//! SmolLM2's exact prefill on the fused CPU path by length: total time,
//! attention's share, and the rate at which attention and the rest of each
//! layer do their work, measured in one run (the rate ratio is what
//! compares across machines); plus one decoding step after the prompt.
//!
//! Attention's work counts the Q/K/V projections and the causal products a
//! prefill needs (QKᵀ and map·V over the keys each row sees: 2·H·d·n(n+1)/2
//! multiply-adds each); the rest counts the output projection and the
//! feed-forward block. Timing: warm blocks in rotating order
//! (`attncache::eval::timed_blocks`).
//!
//!   cargo bench --bench decoder                       # 512, 1024, 2048 tokens
//!   DECODER_BENCH_TOKENS=1024,4096 cargo bench --bench decoder

use std::time::{Duration, Instant};

use attncache::eval::{BlockPlan, timed_blocks};
use attncache::model::llama::RowPass;
use attncache::model::{Model, ModelSource, StaticPlan, ms};

const BLOCKS: BlockPlan = BlockPlan {
    rounds: 3,
    block: 2,
    pause: Duration::from_millis(200),
};

fn main() -> anyhow::Result<()> {
    let model = Model::load(
        &ModelSource::Smollm2,
        &candle_core::Device::Cpu,
        "the decoder benchmark",
    )?;
    let decoder = model.decoder().expect("SmolLM2 is a decoder");
    let config = decoder.config().clone();
    let lengths: Vec<usize> = std::env::var("DECODER_BENCH_TOKENS")
        .unwrap_or_else(|_| "512,1024,2048".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let sentence = "The film follows a retired detective who returns to the small coastal town where \
                    he grew up, and the quiet mystery he finds there becomes a story about memory. ";
    println!(
        "SmolLM2 exact prefill, fused CPU kernels · {}",
        BLOCKS.describe()
    );
    println!(
        "{:>6} | {:>9} {:>9} {:>6} | {:>11} {:>11} {:>6} | {:>9}",
        "tokens", "total ms", "attn ms", "share", "attn GF/s", "rest GF/s", "ratio", "step ms"
    );
    for target in lengths {
        let mut text = String::new();
        let mut prompt = loop {
            let t = model.tokenizer.encode(&text)?;
            if t.ids.len() >= target {
                break t;
            }
            text.push_str(sentence);
        };
        for field in [&mut prompt.ids, &mut prompt.type_ids] {
            field.truncate(target);
        }
        prompt.tokens.truncate(target);
        let n = target;
        // One decoding step after the prompt: a row-wise pass of one row
        // over n given rows.
        let positions: Vec<usize> = (0..=n).collect();
        let mut step_ids = prompt.ids.clone();
        step_ids.push(prompt.ids[0]);
        let times = timed_blocks(2, 3, BLOCKS, |variant| {
            if variant == 0 {
                let mut plan = StaticPlan::exact(config.layers, config.heads);
                let start = Instant::now();
                let (_, out) = model.forward(std::slice::from_ref(&prompt), &mut plan)?;
                let total = ms(start.elapsed());
                let attention = ms(out.timings.attention());
                Ok(vec![total, attention, total - attention])
            } else {
                let mut kv = decoder.prompt_kv(n + 1)?;
                let start = Instant::now();
                decoder.forward_rows(
                    RowPass {
                        ids: &step_ids,
                        positions: &positions,
                        computed: &[n],
                        select: None,
                        capture: &[],
                    },
                    &mut kv,
                )?;
                Ok(vec![ms(start.elapsed()), 0.0, 0.0])
            }
        })?;
        let (s, d, h, dh) = (
            n as f64,
            config.hidden as f64,
            config.heads as f64,
            config.head_dim() as f64,
        );
        let kv = config.kv_heads as f64 * dh;
        let layers = config.layers as f64;
        // The layer cost model counts the full square's scores; a causal
        // prefill needs only the keys each row sees.
        let attention_work =
            layers * (2.0 * s * d * (d + 2.0 * kv) + 4.0 * h * dh * s * (s + 1.0) / 2.0);
        let rest_work = layers * model.layer_cost(n).rest;
        let (total, attention, rest) = (times.median(0, 0), times.median(0, 1), times.median(0, 2));
        let rate = |work: f64, ms: f64| work / (ms * 1e-3) / 1e9;
        let (attention_rate, rest_rate) = (rate(attention_work, attention), rate(rest_work, rest));
        println!(
            "{:>6} | {:>9.1} {:>9.1} {:>5.0}% | {:>11.1} {:>11.1} {:>6.2} | {:>9.2}",
            n,
            total,
            attention,
            100.0 * attention / total,
            attention_rate,
            rest_rate,
            attention_rate / rest_rate,
            times.median(1, 0),
        );
    }
    Ok(())
}
