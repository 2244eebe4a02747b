//! Fast tests of the Qwen2 family on a tiny random model: Q, K, V biases
//! and Qwen2.5-0.5B's grouping of 14 query heads over 2 key/value heads, on
//! every projection path (one fused Q·K·V product, the gathered Q/K rows of
//! a layer with reused heads, the candle-op reference, the row-wise passes
//! on host and tensor caches, the prefix cache).

mod common;

use attncache::model::llama::{Family, Prefilled};
use attncache::model::{HeadPlan, Kernels, LayerPlan, Model, StaticPlan};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::qwen2::{Config, ModelForCausalLM};
use common::tiny_llama::{LAYERS, QWEN_HEADS, QWEN_KV_HEADS, Tiny, tiny, tiny_config};
use common::{
    donor_maps_and_inputs, exact_hidden, last_logits, max_abs_diff, tokens, with_kernels,
};

const TEXTS: [&str; 3] = [
    "the movie was great",
    "a plot",
    "the film is not fun and the plot was bad",
];

#[test]
fn exact_logits_match_candle_transformers_qwen2() {
    let (dir, model) = tiny(Tiny::Qwen2);
    assert_eq!(model.decoder().unwrap().config().family, Family::Qwen2);
    let dev = Device::Cpu;
    let cfg: Config = serde_json::from_value(tiny_config(Tiny::Qwen2)).unwrap();
    // SAFETY: the test's own temporary file, not written while mapped.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.path().join("model.safetensors")],
            DType::F32,
            &dev,
        )
    }
    .unwrap();
    let mut oracle = ModelForCausalLM::new(&cfg, vb).unwrap();
    for text in TEXTS {
        let t = tokens(&model, text);
        oracle.clear_kv_cache();
        let input = Tensor::new(t.ids.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let want = oracle.forward(&input, 0).unwrap().flatten_all().unwrap();
        for kernels in [Kernels::Fused, Kernels::Reference] {
            let m = with_kernels(&model, kernels);
            let got = last_logits(&m, &t, StaticPlan::exact(LAYERS, QWEN_HEADS))
                .flatten_all()
                .unwrap();
            // f32 rounding grows with the logits' size (random weights,
            // large biases): relative to the largest logit.
            let diff = max_abs_diff(&got, &want);
            let scale = want
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                diff < 3e-5 * scale.max(1.0),
                "{kernels:?} {text:?}: logits differ by {diff} (largest {scale})"
            );
        }
    }
}

/// Reused heads of one layer: the fused path's gathered Q/K rows carry
/// their biases (reference and fused agree; heads not reused keep their
/// context), with a whole group reused (its K skipped) and parts of groups.
#[test]
fn partial_reuse_keeps_the_biases_of_the_heads_still_computed() {
    let (_dir, model) = tiny(Tiny::Qwen2);
    let (text, donor) = (
        tokens(&model, "the movie was great"),
        tokens(&model, "a plot is fun"),
    );
    let (donor_maps, inputs) = donor_maps_and_inputs(&model, &text, &donor);
    let head_dim = model.shape().head_dim;
    let group = QWEN_HEADS / QWEN_KV_HEADS;
    let whole_group: Vec<usize> = (0..group).collect();
    for reused in [vec![0], vec![3, 9], whole_group] {
        let layer = 1;
        let plan = LayerPlan::new(
            (0..QWEN_HEADS)
                .map(|h| match reused.contains(&h) {
                    true => HeadPlan::reuse(donor_maps[layer][h].clone()),
                    false => HeadPlan::Exact,
                })
                .collect(),
        );
        let x = &inputs[layer];
        let run = |kernels, plan: &LayerPlan| {
            with_kernels(&model, kernels)
                .decoder()
                .unwrap()
                .layer_attention(layer, x, plan)
                .unwrap()
                .context
        };
        let exact = run(Kernels::Fused, &LayerPlan::exact(QWEN_HEADS));
        let fused = run(Kernels::Fused, &plan);
        let reference = run(Kernels::Reference, &plan);
        // Rounding only (the biases make these contexts a few times larger
        // than the tiny Llama's); a lost bias moves them by ~0.1.
        let diff = max_abs_diff(&fused, &reference);
        assert!(
            diff < 1e-4,
            "{reused:?}: fused and reference differ by {diff}"
        );
        for h in (0..QWEN_HEADS).filter(|h| !reused.contains(h)) {
            let cols = |t: &Tensor| t.narrow(2, h * head_dim, head_dim).unwrap();
            let change = max_abs_diff(&cols(&exact), &cols(&fused));
            assert!(change < 1e-4, "{reused:?}: head {h} changed by {change}");
        }
    }
}

/// Row-wise passes (host caches on the fused kernels, tensor caches on the
/// reference ones) prefill in two steps to the full forward's logits and
/// continue with the same greedy tokens; a cached prefix reproduces the
/// full forward's rows.
#[test]
fn row_wise_passes_and_the_prefix_cache_reproduce_the_full_forward() {
    let (_dir, model) = tiny(Tiny::Qwen2);
    let full = tokens(&model, TEXTS[2]);
    let want = last_logits(&model, &full, StaticPlan::exact(LAYERS, QWEN_HEADS))
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut continuations = Vec::new();
    for kernels in [Kernels::Fused, Kernels::Reference] {
        let m = with_kernels(&model, kernels);
        let decoder = m.decoder().unwrap();
        assert_eq!(decoder.host_rows(), kernels == Kernels::Fused);
        let mut state = Prefilled {
            kv: decoder.prompt_kv(0).unwrap(),
            ids: Vec::new(),
            positions: Vec::new(),
            logits: Vec::new(),
        };
        let (head, tail) = full.ids.split_at(4);
        decoder.append(&mut state, head).unwrap();
        decoder.append(&mut state, tail).unwrap();
        let diff = state
            .logits
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
        assert!(
            diff < 3e-5 * scale,
            "{kernels:?}: row-wise logits differ by {diff} (largest {scale})"
        );
        continuations.push(decoder.greedy(&mut state, 6, None).unwrap());
    }
    assert_eq!(continuations[0], continuations[1]);

    let decoder = model.decoder().unwrap();
    let prefix = decoder
        .prefix_cache(&tokens(&model, "the film is good").ids)
        .unwrap();
    let p = prefix.shared_len(&full.ids);
    assert!(p >= 3, "the prompts share [CLS] the film");
    let (out, served) = decoder
        .forward_after_prefix(
            &full.ids,
            &prefix,
            &mut StaticPlan::exact(LAYERS, QWEN_HEADS),
        )
        .unwrap();
    assert_eq!(served, p);
    let s = full.ids.len();
    let exact = exact_hidden(&model, &full).narrow(1, p, s - p).unwrap();
    let diff = max_abs_diff(&out.hidden, &exact);
    assert!(diff < 1e-4, "rows after the prefix differ by {diff}");
}

/// A Qwen2 config that asks for sliding-window attention is refused with
/// what is wrong.
#[test]
fn sliding_window_qwen2_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_llama::write_tiny(Tiny::Qwen2, dir.path());
    let mut config = tiny_config(Tiny::Qwen2);
    config["use_sliding_window"] = true.into();
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let err = Model::load_path(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("use_sliding_window"), "{err}");
}

/// A model of an architecture we do not run is refused in one line that
/// names the file and the families we do run: a GGUF file (Gemma 3's
/// architecture key) and a Hugging Face directory (`model_type` "mistral").
#[test]
fn an_unknown_architecture_names_the_supported_ones() {
    use candle_core::quantized::gguf_file::{Value, write};
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("gemma.gguf");
    let metadata = [("general.architecture", Value::String("gemma3".into()))];
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    write(&mut std::fs::File::create(&gguf).unwrap(), &metadata, &[]).unwrap();
    let hf = dir.path().join("mistral");
    common::tiny_llama::write_tiny(Tiny::Qwen2, &hf);
    let mut config = tiny_config(Tiny::Qwen2);
    config["model_type"] = "mistral".into();
    std::fs::write(hf.join("config.json"), config.to_string()).unwrap();
    for (path, found) in [(gguf, "`gemma3`"), (hf, "`mistral`")] {
        let msg = format!("{:#}", Model::load_path(&path, &Device::Cpu).unwrap_err());
        assert_eq!(msg.lines().count(), 1, "{msg}");
        for want in [found, "\"llama\"", "\"qwen2\"", "bert"] {
            assert!(msg.contains(want), "{want} not in {msg}");
        }
    }
}
