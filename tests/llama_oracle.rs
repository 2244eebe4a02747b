//! Our SmolLM2 forward pass against candle-transformers' `quantized_llama`
//! on the same GGUF file and the same token ids.
//!
//! One test in its own binary: candle decides whether a quantized matmul
//! dequantizes its weights from the `CANDLE_DEQUANTIZE_ALL` environment
//! variable (read once per thread), and this binary sets it while no other
//! test runs.

use std::path::Path;

use attncache::model::{Model, ModelSource, StaticPlan};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;

/// Last-position logits of candle's quantized_llama, built on a fresh thread
/// (so the thread-local dequantize switch is read anew).
fn oracle_logits(gguf: &Path, ids: &[u32]) -> Vec<f32> {
    let (gguf, ids) = (gguf.to_path_buf(), ids.to_vec());
    std::thread::spawn(move || {
        let mut file = std::fs::File::open(&gguf).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        let mut model = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        model
            .forward(&input, 0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    })
    .join()
    .unwrap()
}

/// Indices of the five largest values, largest first.
fn top5(v: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx.truncate(5);
    idx
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn exact_logits_match_candles_quantized_llama() {
    let model = Model::load(&ModelSource::Smollm2, &Device::Cpu, "the test suite").unwrap();
    let shape = *model.shape();
    let prompt = model.chat_prompt("What is the capital of France?").unwrap();
    let text = model.tokenizer.encode(&prompt).unwrap();
    let (batch, out) = model
        .forward(
            std::slice::from_ref(&text),
            &mut StaticPlan::exact(shape.layers, shape.heads),
        )
        .unwrap();
    let ours = model
        .logits(&model.readout(&out.hidden, &batch).unwrap())
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();

    // quantized_llama as it runs by default: 4-bit weights times activations
    // quantized to 8 bits (Q8_1) inside every matmul.
    let quantized = oracle_logits(&model.files.weights, &text.ids);
    // The same model with its weights dequantized to f32 like ours.
    // SAFETY: this binary's only test runs here, on this thread; the oracle
    // threads are spawned after the variable is set.
    unsafe { std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1") };
    let dequantized = oracle_logits(&model.files.weights, &text.ids);
    unsafe { std::env::remove_var("CANDLE_DEQUANTIZE_ALL") };

    // Same weights, same f32 arithmetic, different summation order (our
    // fused kernels, GQA without repeating K/V): only rounding remains.
    let diff = max_abs_diff(&ours, &dequantized);
    println!("max |ours − quantized_llama (dequantized)| = {diff:.2e}");
    assert!(diff < 1e-3, "logits differ by {diff}");
    // The default quantized_llama also quantizes every matmul's activations
    // to 8 bits (Q8_1), which moves these logits by about one unit: near-ties
    // may swap (here "The" 25.3 vs "L" 25.2), so only the top of the
    // distribution must agree.
    let diff_q = max_abs_diff(&ours, &quantized);
    println!("max |ours − quantized_llama (Q8_1 activations)| = {diff_q:.2e}");
    let (ours_top, quantized_top) = (top5(&ours), top5(&quantized));
    let shared = ours_top
        .iter()
        .filter(|t| quantized_top.contains(t))
        .count();
    assert!(shared >= 4, "top-5 {ours_top:?} vs {quantized_top:?}");
    assert!(quantized_top[..2].contains(&ours_top[0]));
    assert!(diff_q < 3.0, "logits differ by {diff_q}");
}
