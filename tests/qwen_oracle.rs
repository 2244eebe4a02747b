//! Our forward pass on Qwen2.5-Coder-0.5B-Instruct (the Qwen2 family: Llama
//! plus Q, K, V biases, NeoX rotation, untied output) against
//! candle-transformers' `quantized_qwen2` on the same GGUF file and the same
//! token ids: next-token logits and a greedy continuation.
//!
//! One test in its own binary: candle decides whether a quantized matmul
//! dequantizes its weights from the `CANDLE_DEQUANTIZE_ALL` environment
//! variable (read once per thread), and this binary sets it while no other
//! test runs.

mod common;

use std::path::Path;

use attncache::model::llama::{Family, Prefilled};
use attncache::model::{Model, ModelSource, StaticPlan};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_qwen2::ModelWeights;

/// Tokens the continuations are compared over.
const GREEDY: usize = 12;

/// quantized_qwen2's last-position logits after `ids` and its greedy
/// continuation of `GREEDY` tokens, built on a fresh thread (so the
/// thread-local dequantize switch is read anew).
fn oracle(gguf: &Path, ids: &[u32]) -> (Vec<f32>, Vec<u32>) {
    let (gguf, ids) = (gguf.to_path_buf(), ids.to_vec());
    std::thread::spawn(move || {
        let mut file = std::fs::File::open(&gguf).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        let mut model = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
        let step = |model: &mut ModelWeights, ids: &[u32], at: usize| -> Vec<f32> {
            let input = Tensor::new(ids, &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let logits = model.forward(&input, at).unwrap();
            logits.squeeze(0).unwrap().to_vec1::<f32>().unwrap()
        };
        let first = step(&mut model, &ids, 0);
        let mut tokens = vec![attncache::model::llama::argmax(&first)];
        while tokens.len() < GREEDY {
            let at = ids.len() + tokens.len() - 1;
            let logits = step(&mut model, &tokens[tokens.len() - 1..], at);
            tokens.push(attncache::model::llama::argmax(&logits));
        }
        (first, tokens)
    })
    .join()
    .unwrap()
}

#[test]
fn qwen2_logits_and_greedy_tokens_match_candles_quantized_qwen2() {
    let model = Model::load(&ModelSource::Qwen25, &Device::Cpu, "the test suite").unwrap();
    let decoder = model.decoder().expect("Qwen2.5 is a decoder");
    assert_eq!(decoder.config().family, Family::Qwen2);
    let shape = *model.shape();
    assert_eq!((shape.layers, shape.heads), (24, 14));
    assert_eq!(decoder.config().kv_heads, 2);
    let prompts = [
        model.chat_prompt("What is the capital of France?").unwrap(),
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n".to_string(),
    ];
    // SAFETY: this binary's only test runs here, on this thread; the oracle
    // threads are spawned after the variable is set.
    unsafe { std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1") };
    for prompt in &prompts {
        let text = model.tokenizer.encode(prompt).unwrap();
        let ours = common::last_logits(&model, &text, StaticPlan::exact(shape.layers, shape.heads))
            .squeeze(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let (want, want_tokens) = oracle(&model.files.weights, &text.ids);
        // Same weights, same f32 arithmetic, different summation order.
        let diff = common::max_diff(&ours, &want);
        println!("{prompt:?}: max |ours − quantized_qwen2 (dequantized)| = {diff:.2e}");
        assert!(diff < 1e-3, "logits differ by {diff}");
        // The row-wise pass (prefill, then one row per step) continues the
        // same way.
        let mut state = Prefilled {
            kv: decoder.prompt_kv(0).unwrap(),
            ids: Vec::new(),
            positions: Vec::new(),
            logits: Vec::new(),
        };
        decoder.append(&mut state, &text.ids).unwrap();
        assert!(common::max_diff(&state.logits, &ours) < 1e-3);
        let tokens = decoder.greedy(&mut state, GREEDY, None).unwrap();
        println!("{:?}", model.tokenizer.decode(&tokens));
        assert_eq!(tokens, want_tokens, "greedy continuations differ");
    }
    unsafe { std::env::remove_var("CANDLE_DEQUANTIZE_ALL") };
}
