//! Fast tests of the forward pass and its plans on a tiny randomly
//! initialised BERT generated in the test (no download).

mod common;

use attncache::model::{HeadPlan, Kernels, LayerPlan, Model, StaticPlan, TokenizedText};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::BertModel;
use common::*;

#[test]
fn self_reuse_reproduces_the_exact_output() {
    let (_dir, model) = tiny_model();
    for text in [
        "the movie was great",
        "a film is not fun and the plot was bad",
        "x",
    ] {
        let t = &model.tokenize(&[text]).unwrap()[0];
        check_self_reuse_is_exact(&model, t);
    }
}

#[test]
fn reusing_another_inputs_maps_acts_only_through_those_heads() {
    let (_dir, model) = tiny_model();
    let t = model
        .tokenize(&["the movie was great", "the plot was bad"])
        .unwrap();
    check_partial_reuse_acts_only_through_its_heads(&model, &t[0], &t[1], 0, &[1, 2]);
    check_partial_reuse_acts_only_through_its_heads(&model, &t[0], &t[1], 1, &[0]);
}

#[test]
fn matches_candle_transformers_bert_on_padded_batches() {
    let (dir, model) = tiny_model();
    let config: attncache::model::BertConfig = serde_json::from_value(tiny_config()).unwrap();
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.path().join("model.safetensors")],
            candle_core::DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap();
    let reference = BertModel::load(vb, &config).unwrap();
    let texts = model
        .tokenize(&["the movie was great and fun", "a plot", "bad"])
        .unwrap();
    let (batch, ours) = model
        .forward(&texts, &mut StaticPlan::exact(LAYERS, HEADS))
        .unwrap();
    let ones = batch.token_mask.clone().unwrap();
    let theirs = reference
        .forward(&batch.input_ids, &batch.type_ids, Some(&ones))
        .unwrap();
    // Compare real tokens only: padded positions are undefined in both.
    for (i, &len) in batch.lengths.iter().enumerate() {
        let a = ours.hidden.get(i).unwrap().narrow(0, 0, len).unwrap();
        let b = theirs.get(i).unwrap().narrow(0, 0, len).unwrap();
        let diff = max_abs_diff(&a, &b);
        assert!(
            diff <= 1e-5,
            "text {i}: max |ours − candle-transformers| = {diff}"
        );
    }
}

#[test]
fn a_padded_batch_equals_one_text_at_a_time() {
    let (_dir, model) = tiny_model();
    let texts = model
        .tokenize(&["the movie was great and fun", "a plot", "the film"])
        .unwrap();
    let (batch, out) = model
        .forward(&texts, &mut StaticPlan::capture_all(LAYERS, HEADS))
        .unwrap();
    let pooled = model.readout(&out.hidden, &batch).unwrap();
    for (i, text) in texts.iter().enumerate() {
        let len = text.ids.len();
        let single = exact_hidden(&model, text);
        let diff = max_abs_diff(
            &out.hidden.get(i).unwrap().narrow(0, 0, len).unwrap(),
            &single.squeeze(0).unwrap(),
        );
        assert!(
            diff <= 1e-5,
            "text {i} differs from its unbatched forward by {diff}"
        );
        let (single_batch, _) = model
            .forward(
                std::slice::from_ref(text),
                &mut StaticPlan::exact(LAYERS, HEADS),
            )
            .unwrap();
        let single_pooled = model.readout(&single, &single_batch).unwrap();
        let diff = max_abs_diff(&pooled.get(i).unwrap(), &single_pooled.squeeze(0).unwrap());
        assert!(
            diff <= 1e-5,
            "embedding {i} differs from its unbatched one by {diff}"
        );
        // Captured maps give no weight to padding.
        let map = out.maps[0][0].as_ref().unwrap().get(i).unwrap();
        let pad_mass = map
            .narrow(1, len, batch.input_ids.dim(1).unwrap() - len)
            .unwrap();
        assert_eq!(pad_mass.sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }
}

#[test]
fn embeddings_are_unit_length() {
    let (_dir, model) = tiny_model();
    let embedded = model.embed(&["the movie", "a plot was bad"]).unwrap();
    for e in &embedded.embeddings {
        let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    assert_eq!(embedded.forward.layers.len(), LAYERS);
}

#[test]
fn bad_plans_are_errors_not_panics() {
    let (_dir, model) = tiny_model();
    let t = model.tokenize(&["the movie was great"]).unwrap();
    let short = StaticPlan::new(vec![LayerPlan::exact(HEADS)]);
    let err = model.forward(&t, &mut short.clone()).unwrap_err();
    assert!(format!("{err:#}").contains("plan has 1 layers"), "{err:#}");

    let wrong_heads = StaticPlan::new(vec![LayerPlan::exact(HEADS - 1); LAYERS]);
    let err = model.forward(&t, &mut wrong_heads.clone()).unwrap_err();
    assert!(format!("{err:#}").contains("heads"), "{err:#}");

    let bad_map = Tensor::ones((3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut heads = vec![HeadPlan::Exact; HEADS];
    heads[1] = HeadPlan::reuse(bad_map);
    let mut layers = vec![LayerPlan::exact(HEADS); LAYERS];
    layers[0] = LayerPlan::new(heads);
    let err = model.forward(&t, &mut StaticPlan::new(layers)).unwrap_err();
    assert!(
        format!("{err:#}").contains("head 1 has shape [3, 3]"),
        "{err:#}"
    );
}

/// Writes the tiny model, lets `spoil` damage it, and returns the load error.
fn load_error(spoil: impl FnOnce(&std::path::Path)) -> String {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path());
    spoil(dir.path());
    let err = Model::load_path(dir.path(), &Device::Cpu).unwrap_err();
    let msg = format!("{err:#}");
    assert!(!msg.contains('\n'), "error is not one line: {msg}");
    msg
}

#[test]
fn model_directory_errors_say_what_is_wrong() {
    let err = Model::load_path(std::path::Path::new("/no/such/model"), &Device::Cpu).unwrap_err();
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");

    let msg = load_error(|d| std::fs::remove_file(d.join("config.json")).unwrap());
    assert!(msg.contains("has no config.json"), "{msg}");

    let msg = load_error(|d| std::fs::remove_file(d.join("tokenizer.json")).unwrap());
    assert!(msg.contains("has no tokenizer.json"), "{msg}");

    let msg = load_error(|d| std::fs::write(d.join("config.json"), "{ not json").unwrap());
    assert!(msg.contains("config.json is malformed"), "{msg}");

    let msg = load_error(|d| {
        let mut c = tiny_config();
        c.as_object_mut().unwrap().remove("hidden_size");
        std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    });
    assert!(
        msg.contains("malformed") && msg.contains("hidden_size"),
        "{msg}"
    );

    let msg = load_error(|d| {
        let mut c = tiny_config();
        c["model_type"] = "gpt2".into();
        std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    });
    assert!(msg.contains("`gpt2` model: attncache runs BERT"), "{msg}");

    let msg = load_error(|d| {
        let mut c = tiny_config();
        c.as_object_mut().unwrap().remove("model_type");
        c["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
        std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    });
    assert!(msg.contains("`GPT2LMHeadModel` model: attncache"), "{msg}");

    let msg = load_error(|d| {
        let mut c = tiny_config();
        c["num_attention_heads"] = 3.into();
        std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    });
    assert!(
        msg.contains("not a multiple of num_attention_heads 3"),
        "{msg}"
    );

    let msg = load_error(|d| std::fs::write(d.join("model.safetensors"), b"garbage").unwrap());
    assert!(msg.contains("cannot load the weights"), "{msg}");

    let msg = load_error(|d| std::fs::write(d.join("tokenizer.json"), "{}").unwrap());
    assert!(msg.contains("cannot load the tokenizer"), "{msg}");
}

#[test]
fn a_padded_batch_reuses_its_own_batched_maps_exactly() {
    let (_dir, model) = tiny_model();
    let texts = model
        .tokenize(&["the movie was great and fun", "a plot"])
        .unwrap();
    let (_, captured) = model
        .forward(&texts, &mut StaticPlan::capture_all(LAYERS, HEADS))
        .unwrap();
    let plan = StaticPlan::reuse_captured(&captured.maps).unwrap();
    let (batch, reused) = model.forward(&texts, &mut { plan }).unwrap();
    for (i, &len) in batch.lengths.iter().enumerate() {
        let real = |t: &Tensor| t.get(i).unwrap().narrow(0, 0, len).unwrap();
        let diff = max_abs_diff(&real(&captured.hidden), &real(&reused.hidden));
        assert!(
            diff <= 1e-5,
            "text {i}: batched self-reuse changed the output by {diff}"
        );
    }
}

#[test]
fn heads_planted_in_the_weights_are_typed_as_planted() {
    use attncache::cache::HeadType;
    let (_model_dir, model) = planted::planted_model();
    // Inputs of 5…14 tokens, several of each length, each a different word mix.
    let words = [
        "the", "movie", "was", "great", "bad", "plot", "film", "and", "a", "is", "not", "fun",
    ];
    let texts: Vec<String> = (0..80)
        .map(|i| {
            let n = 3 + i % 10;
            (0..n)
                .map(|j| words[(i * 7 + j * (i % 5 + 1) + j * j) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let db = tiny_database(&model, &refs, dir.path());
    let types = db.head_types().expect("built with head types");
    let previous = types.get(0, 0).unwrap();
    let sink = types.get(0, 1).unwrap();
    eprintln!("previous-token head: {previous:?}\nfirst-token sink: {sink:?}");
    assert_eq!(previous.kind, HeadType::PreviousToken, "{previous:?}");
    assert_eq!(sink.kind, HeadType::FirstSink, "{sink:?}");
    // Each also follows the words: its maps differ between same-length inputs.
    for p in [previous, sink] {
        assert!(p.positional.unwrap() < 0.95, "{p:?}");
    }
}

/// An engine over a tiny model and a database of two four-word reviews,
/// under the policy `policy` makes for the model's shape (the temporary
/// directories live as long as the engine is used).
fn two_review_engine(
    policy: impl FnOnce(&attncache::model::ModelShape) -> attncache::cache::Policy,
) -> (
    tempfile::TempDir,
    tempfile::TempDir,
    attncache::engine::Engine,
) {
    let (model_dir, model) = tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let db = tiny_database(
        &model,
        &["the movie was great", "the plot was bad"],
        dir.path(),
    );
    let policy = policy(model.shape());
    let engine =
        attncache::engine::Engine::new(std::sync::Arc::new(model), std::sync::Arc::new(db), policy)
            .unwrap();
    (model_dir, dir, engine)
}

#[test]
fn a_query_no_entry_can_serve_computes_no_feature_and_searches_nothing() {
    use attncache::cache::Policy;
    use attncache::engine::Mode;
    let (_model_dir, _dir, engine) = two_review_engine(|shape| Policy::global(shape, 2.0));
    // Four words: entries of its length exist, so every layer looks up.
    let served = engine.run("the film was fun", Mode::Cached).unwrap().trace;
    assert!(served.layers.iter().all(|l| l.neighbour.is_some()));
    assert!(served.timings.feature > 0.0 && served.timings.search > 0.0);
    // Two words: no entry of that length, so the look-up costs nothing.
    let unserved = engine.run("great fun", Mode::Cached).unwrap().trace;
    assert!(unserved.layers.iter().all(|l| l.neighbour.is_none()));
    assert_eq!(
        (unserved.timings.feature, unserved.timings.search),
        (0.0, 0.0)
    );
    assert_eq!(unserved.hit_rate, 0.0);
}

/// Padding every input to one length (the AttnCache paper's setting) changes
/// nothing a real token sees, on both kernels: the embedding, and each map's
/// real rows over the real keys; the pad keys get no weight. A text longer
/// than the padded length is cut to it.
#[test]
fn padding_to_one_length_changes_no_real_output() {
    let (_dir, model) = tiny_model();
    let mut padded = model.clone();
    padded.pad_inputs(12).unwrap();
    assert_eq!(padded.padded_to(), Some(12));
    for kernels in [Kernels::Fused, Kernels::Reference] {
        let (mut plain, mut pad) = (model.clone(), padded.clone());
        plain.set_kernels(kernels);
        pad.set_kernels(kernels);
        let text = "the movie was great";
        let short = plain.tokenizer.encode(text).unwrap();
        let long = pad.tokenizer.encode(text).unwrap();
        let len = short.ids.len();
        assert_eq!(
            (long.ids.len(), long.padding, long.real_len()),
            (12, 12 - len, len)
        );
        assert_eq!(long.ids[..len], short.ids[..]);
        let embed = |m: &Model, t: &TokenizedText| {
            let (batch, out) = m
                .forward(
                    std::slice::from_ref(t),
                    &mut StaticPlan::capture_all(LAYERS, HEADS),
                )
                .unwrap();
            (m.readout(&out.hidden, &batch).unwrap(), out.maps)
        };
        let (e_short, maps_short) = embed(&plain, &short);
        let (e_long, maps_long) = embed(&pad, &long);
        let diff = max_abs_diff(&e_short, &e_long);
        assert!(
            diff < 1e-5,
            "{kernels:?}: padding moved the embedding by {diff}"
        );
        for (l, (a, b)) in maps_short.iter().zip(&maps_long).enumerate() {
            for (h, (a, b)) in a.iter().zip(b).enumerate() {
                let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap().squeeze(0).unwrap());
                let real = b.narrow(0, 0, len).unwrap();
                let diff = max_abs_diff(&a.squeeze(0).unwrap(), &real.narrow(1, 0, len).unwrap());
                assert!(
                    diff < 1e-5,
                    "{kernels:?} L{l}H{h}: real rows moved by {diff}"
                );
                let pad_mass = b.narrow(1, len, 12 - len).unwrap().sum_all().unwrap();
                assert_eq!(
                    pad_mass.to_scalar::<f32>().unwrap(),
                    0.0,
                    "{kernels:?} L{l}H{h}"
                );
            }
        }
    }
    let cut = padded
        .tokenizer
        .encode("the movie was great and the plot was fun and the film was not bad at all")
        .unwrap();
    assert_eq!((cut.ids.len(), cut.padding, cut.truncated), (12, 0, true));
    assert!(padded.clone().pad_inputs(1).is_err());
    // Re-padding longer works up to the model's maximum, and not beyond.
    let max = model.shape().max_positions;
    assert!(padded.clone().pad_inputs(max).is_ok());
    let err = padded.clone().pad_inputs(max + 1).unwrap_err().to_string();
    assert!(err.contains("at most"), "{err}");
}

/// A database built from padded inputs holds one length, and refuses a model
/// that does not pad alike (a one-line error naming both), and the reverse.
#[test]
fn a_padded_database_holds_one_length_and_refuses_an_unpadded_model() {
    use attncache::cache::{Database, ModelIdentity};
    let (dir, model) = tiny_model();
    let mut padded = model.clone();
    padded.pad_inputs(10).unwrap();
    let db = tiny_database(
        &padded,
        &["the movie was great", "a plot", "the film was fun"],
        dir.path(),
    );
    assert!(db.entries().iter().all(|e| e.tokens == 10));
    assert_eq!(Database::padding_of(db.dir()).unwrap(), Some(10));
    let err = Database::open(db.dir(), &ModelIdentity::of(&model).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("padded to 10 tokens")
            && err.contains("at their own length")
            && !err.contains('\n'),
        "{err}"
    );
    let mut other = model.clone();
    other.pad_inputs(11).unwrap();
    assert!(Database::open(db.dir(), &ModelIdentity::of(&other).unwrap()).is_err());
}

/// With `carry_neighbour`, a layer keeps the previous layer's neighbour
/// without a search when it lies within every head's threshold: the same
/// entry in every layer, measured at each layer's own feature (the search's
/// distance when the search finds that entry too, never nearer than what it
/// finds); a layer whose threshold the carried entry misses searches.
#[test]
fn a_carried_neighbour_serves_the_next_layer_without_a_search() {
    use attncache::cache::Policy;
    use attncache::engine::Mode;
    let (_model_dir, _dir, mut engine) = two_review_engine(|shape| Policy::global(shape, 2.0));
    let policy = engine.policy().clone();
    let text = "the film was fun";
    let searched = engine.run(text, Mode::Cached).unwrap().trace;
    engine
        .set_policy(Policy {
            carry_neighbour: true,
            ..policy.clone()
        })
        .unwrap();
    let carried = engine.run(text, Mode::Cached).unwrap().trace;
    let first = carried.layers[0].neighbour.as_ref().unwrap();
    assert!(!first.carried);
    for (l, layer) in carried.layers.iter().enumerate().skip(1) {
        let (ours, found) = (
            layer.neighbour.as_ref().unwrap(),
            searched.layers[l].neighbour.as_ref().unwrap(),
        );
        assert!(ours.carried, "layer {l}");
        assert_eq!(ours.entry, first.entry, "layer {l}");
        match ours.entry == found.entry {
            true => assert!((ours.distance - found.distance).abs() < 1e-6, "layer {l}"),
            false => assert!(ours.distance >= found.distance, "layer {l}"),
        }
        assert!(layer.heads.iter().all(|h| h.hit));
    }
    // Layer 1 admits only a near-identical input: the carried entry is too
    // far, so layer 1 searches.
    let mut strict_second = Policy {
        carry_neighbour: true,
        ..policy
    };
    strict_second.max_distance[1] = vec![1e-4; strict_second.max_distance[1].len()];
    engine.set_policy(strict_second).unwrap();
    let searching = engine.run(text, Mode::Cached).unwrap().trace;
    let second = searching.layers[1].neighbour.as_ref().unwrap();
    assert!(!second.carried && second.distance > 1e-4);
    assert_eq!(
        second.entry,
        searched.layers[1].neighbour.as_ref().unwrap().entry
    );
}

/// With `stop_after_miss`, a layer that reuses nothing ends the look-up:
/// the next layer is not searched (and hits nothing) though its threshold
/// would admit its neighbour; without it, that layer hits. A shadow run
/// still shows the unsearched layer's neighbour (searched untimed).
#[test]
fn the_look_up_stops_at_the_first_layer_that_reuses_nothing() {
    use attncache::cache::Policy;
    use attncache::engine::Mode;
    // Layer 0 searches but admits only near-identical inputs; layer 1 admits any.
    let with_strict_first_layer = |shape: &attncache::model::ModelShape| {
        let mut policy = Policy::global(shape, 2.0);
        policy.max_distance[0] = vec![1e-4; shape.heads];
        policy
    };
    let (_model_dir, _dir, mut engine) = two_review_engine(with_strict_first_layer);
    let policy = engine.policy().clone();
    let text = "the film was fun";
    let going_on = engine.run(text, Mode::Cached).unwrap().trace;
    assert!(going_on.layers[0].heads.iter().all(|h| !h.hit));
    assert!(going_on.layers[1].heads.iter().all(|h| h.hit));
    engine
        .set_policy(Policy {
            stop_after_miss: true,
            ..policy
        })
        .unwrap();
    let stopped = engine.run(text, Mode::Cached).unwrap().trace;
    assert!(stopped.layers[0].neighbour.is_some());
    assert!(stopped.layers[1].neighbour.is_none());
    assert_eq!(stopped.hit_rate, 0.0);
    let shadow = engine.run(text, Mode::Shadow).unwrap().trace;
    assert!(shadow.layers[1].neighbour.is_some());
    assert!(shadow.layers[1].heads.iter().all(|h| !h.hit));
}
