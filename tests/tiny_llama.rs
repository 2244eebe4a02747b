//! Fast tests of our Llama forward pass on a tiny random model with grouped
//! query attention (4 query heads, 2 key/value heads).

mod common;

use attncache::model::{HeadPlan, Kernels, LayerPlan, Model, StaticPlan};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};
use common::tiny_llama::{HEADS, KV_HEADS, LAYERS, tiny_llama, tiny_llama_config};
use common::{
    capture_all, check_self_reuse_is_exact, donor_maps_and_inputs, exact_hidden,
    last_logits as logits, max_abs_diff, tokens, with_kernels,
};

#[test]
fn exact_logits_match_candle_transformers_llama() {
    let (dir, model) = tiny_llama();
    let dev = Device::Cpu;
    let cfg: LlamaConfig = serde_json::from_value(tiny_llama_config()).unwrap();
    let cfg = cfg.into_config(false);
    // SAFETY: the test's own temporary file, not written while mapped.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.path().join("model.safetensors")],
            DType::F32,
            &dev,
        )
    }
    .unwrap();
    let oracle = Llama::load(vb, &cfg).unwrap();
    for text in [
        "the movie was great",
        "a plot",
        "the film is not fun and the plot was bad",
    ] {
        let t = tokens(&model, text);
        let mut cache = Cache::new(false, DType::F32, &cfg, &dev).unwrap();
        let input = Tensor::new(t.ids.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let want = oracle.forward(&input, 0, &mut cache).unwrap();
        for kernels in [Kernels::Fused, Kernels::Reference] {
            let m = with_kernels(&model, kernels);
            let got = logits(&m, &t, StaticPlan::exact(LAYERS, HEADS));
            let diff = max_abs_diff(&got, &want);
            assert!(diff < 1e-4, "{kernels:?} {text:?}: logits differ by {diff}");
        }
    }
}

#[test]
fn maps_are_causal_and_self_reuse_is_exact() {
    let (_dir, model) = tiny_llama();
    let t = tokens(&model, "the movie was great and fun");
    for layer in capture_all(&model, &t) {
        for map in layer {
            let rows = map.to_vec2::<f32>().unwrap();
            for (i, row) in rows.iter().enumerate() {
                assert!(
                    row[i + 1..].iter().all(|&v| v == 0.0),
                    "row {i} sees the future"
                );
            }
        }
    }
    for kernels in [Kernels::Fused, Kernels::Reference] {
        check_self_reuse_is_exact(&with_kernels(&model, kernels), &t);
    }
}

/// Reused heads of one layer: fused and reference kernels agree, reused
/// heads change their own context columns only, and with a whole group of
/// query heads reused (so its K is skipped) as well as with part of a group.
#[test]
fn partial_reuse_under_gqa_acts_only_through_its_heads() {
    let (_dir, model) = tiny_llama();
    let (text, donor) = (
        tokens(&model, "the movie was great"),
        tokens(&model, "a plot is fun"),
    );
    let (donor_maps, inputs) = donor_maps_and_inputs(&model, &text, &donor);
    let head_dim = model.shape().head_dim;
    let group = HEADS / KV_HEADS;
    for reused in [vec![0], vec![0, 1], vec![1, 2], vec![0, 1, 2, 3]] {
        let layer = 1;
        let plan = LayerPlan::new(
            (0..HEADS)
                .map(|h| {
                    if reused.contains(&h) {
                        HeadPlan::reuse(donor_maps[layer][h].clone())
                    } else {
                        HeadPlan::Capture
                    }
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
        };
        let exact = run(Kernels::Fused, &LayerPlan::exact(HEADS)).context;
        let fused = run(Kernels::Fused, &plan);
        let reference = run(Kernels::Reference, &plan);
        let diff = max_abs_diff(&fused.context, &reference.context);
        assert!(
            diff < 1e-5,
            "{reused:?}: fused and reference differ by {diff}"
        );
        for h in 0..HEADS {
            let cols = |t: &Tensor| t.narrow(2, h * head_dim, head_dim).unwrap();
            let change = max_abs_diff(&cols(&exact), &cols(&fused.context));
            if reused.contains(&h) {
                assert!(change > 1e-4, "{reused:?}: reused head {h} unchanged");
                assert!(fused.captured[h].is_none());
            } else {
                assert!(
                    change < 1e-5,
                    "{reused:?}: head {h} (group {}) changed by {change}",
                    h / group
                );
                let (f, r) = (
                    fused.captured[h].as_ref().unwrap(),
                    reference.captured[h].as_ref().unwrap(),
                );
                // f32 sums in another order: map values of random
                // weights differ by up to a few 1e-6.
                let diff = max_abs_diff(f, r);
                assert!(diff < 1e-5, "{reused:?}: head {h}'s maps differ by {diff}");
            }
        }
    }
}

#[test]
fn a_padded_batch_matches_single_inputs() {
    let (_dir, model) = tiny_llama();
    let texts = [
        tokens(&model, "the movie was great and fun"),
        tokens(&model, "a plot"),
    ];
    let (batch, out) = model
        .forward(&texts, &mut StaticPlan::exact(LAYERS, HEADS))
        .unwrap();
    let readouts = model.readout(&out.hidden, &batch).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let single = exact_hidden(&model, t);
        let len = t.ids.len();
        let diff = max_abs_diff(
            &out.hidden.get(i).unwrap().narrow(0, 0, len).unwrap(),
            &single.squeeze(0).unwrap(),
        );
        assert!(diff < 1e-4, "text {i}: {diff}");
        let want = logits(&model, t, StaticPlan::exact(LAYERS, HEADS));
        let got = model
            .logits(&readouts.get(i).unwrap().unsqueeze(0).unwrap())
            .unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-4);
    }
}

#[test]
fn inconsistent_configs_are_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_llama::write_tiny_llama(dir.path());
    let mut config = tiny_llama_config();
    config["num_key_value_heads"] = 3.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let err = Model::load_path(dir.path(), &Device::Cpu).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("4 query heads do not split into 3 key/value heads"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

/// A pass after a cached prefix reproduces the full pass's rows for the new
/// tokens, with the exact plan and with the input's own full maps reused.
#[test]
fn a_cached_prefix_reproduces_the_full_forward() {
    let (_dir, model) = tiny_llama();
    let decoder = model.decoder().unwrap();
    let full = tokens(&model, "the movie was great and the plot was fun");
    // The prefix diverges from the input after a few tokens.
    let prefix_text = tokens(&model, "the movie was bad");
    let prefix = decoder.prefix_cache(&prefix_text.ids).unwrap();
    let p = prefix.shared_len(&full.ids);
    assert_eq!(p, 4, "[CLS] the movie was");
    let exact = exact_hidden(&model, &full);
    let s = full.ids.len();
    let maps = capture_all(&model, &full);
    let reuse_own = StaticPlan::new(
        maps.iter()
            .map(|heads| LayerPlan::new(heads.iter().cloned().map(HeadPlan::reuse).collect()))
            .collect(),
    );
    for mut plan in [StaticPlan::exact(LAYERS, HEADS), reuse_own] {
        let (out, served) = decoder
            .forward_after_prefix(&full.ids, &prefix, &mut plan)
            .unwrap();
        assert_eq!(served, p);
        let want = exact.narrow(1, p, s - p).unwrap();
        let diff = max_abs_diff(&out.hidden, &want);
        // Same arithmetic in another order (the prefix's keys come from a
        // separate pass): rounding only.
        assert!(diff < 1e-4, "rows after the prefix differ by {diff}");
    }
    // Captured maps of the new rows are the full maps' rows.
    let mut capture = StaticPlan::capture_all(LAYERS, HEADS);
    let (out, _) = decoder
        .forward_after_prefix(&full.ids, &prefix, &mut capture)
        .unwrap();
    for (l, layer) in out.maps.iter().enumerate() {
        for (h, map) in layer.iter().enumerate() {
            let got = map.as_ref().unwrap().squeeze(0).unwrap();
            let want = maps[l][h].narrow(0, p, s - p).unwrap();
            let diff = max_abs_diff(&got, &want);
            assert!(diff < 1e-5, "layer {l} head {h}: {diff}");
        }
    }
    // An input identical to the prefix still computes its last token.
    assert_eq!(
        prefix.shared_len(&prefix_text.ids),
        prefix_text.ids.len() - 1
    );
}

/// A decoder input padded on the right reads out as the unpadded one, on
/// both kernels: the causal mask already hides the padding from real tokens.
#[test]
fn right_padding_leaves_the_decoders_readout_unchanged() {
    let (_dir, model) = tiny_llama();
    for kernels in [Kernels::Fused, Kernels::Reference] {
        let plain = with_kernels(&model, kernels);
        let mut padded = plain.clone();
        padded.pad_inputs(16).unwrap();
        let short = tokens(&plain, "the movie was great");
        let long = tokens(&padded, "the movie was great");
        assert_eq!(long.ids.len(), 16);
        assert!(long.padding > 0);
        let exact = || StaticPlan::exact(LAYERS, HEADS);
        let diff = max_abs_diff(
            &logits(&plain, &short, exact()),
            &logits(&padded, &long, exact()),
        );
        assert!(
            diff < 1e-4,
            "{kernels:?}: padding moved the logits by {diff}"
        );
    }
}
