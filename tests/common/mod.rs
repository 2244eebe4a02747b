//! Shared test helpers: a tiny randomly initialised BERT written to disk, and
//! the fetched real model.

#![allow(dead_code)] // each test binary uses a different subset

pub mod planted;
pub mod tiny_llama;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use attncache::model::{
    HeadPlan, LayerPlan, Model, ModelSource, Planner, StaticPlan, TokenizedText,
};
use candle_core::{Device, Tensor};
use serde_json::json;

/// Sizes of the tiny test model.
pub const LAYERS: usize = 2;
pub const HEADS: usize = 4;
pub const HIDDEN: usize = 16;
pub const FFN: usize = 32;
pub const MAX_POS: usize = 64;

/// Words of the tiny vocabulary (after the special tokens and letters).
const WORDS: [&str; 12] = [
    "the", "movie", "was", "great", "bad", "plot", "film", "and", "a", "is", "not", "fun",
];

/// The tiny model's vocabulary: specials, words, then single letters.
fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(WORDS.iter().map(|s| s.to_string()));
    v.extend(('a'..='z').map(|c| c.to_string()));
    v.extend(('a'..='z').map(|c| format!("##{c}")));
    v
}

/// The BERT config of the tiny model.
pub fn tiny_config() -> serde_json::Value {
    json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab().len(),
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": FFN,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": MAX_POS,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute"
    })
}

/// A WordPiece `tokenizer.json` for the tiny vocabulary, in the layout of
/// BERT tokenizers (lower-casing, [CLS] … [SEP]).
pub fn tiny_tokenizer() -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> = vocab()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, json!(i)))
        .collect();
    let special = |id: &str| json!({"SpecialToken": {"id": id, "type_id": 0}});
    let added: Vec<serde_json::Value> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]")],
            "pair": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]"),
                     {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

/// Random normal weights for the tiny model, named as in Hugging Face BERT
/// checkpoints (unseeded: every property tested must hold for any draw).
fn tiny_weights() -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let mut w = HashMap::new();
    let mut put = |name: String, shape: &[usize], std: f64, mean: f64| {
        let t = Tensor::randn(mean as f32, std as f32, shape, &dev).unwrap();
        w.insert(name, t);
    };
    let v = vocab().len();
    put(
        "embeddings.word_embeddings.weight".into(),
        &[v, HIDDEN],
        0.5,
        0.0,
    );
    put(
        "embeddings.position_embeddings.weight".into(),
        &[MAX_POS, HIDDEN],
        0.5,
        0.0,
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        &[2, HIDDEN],
        0.5,
        0.0,
    );
    put("embeddings.LayerNorm.weight".into(), &[HIDDEN], 0.1, 1.0);
    put("embeddings.LayerNorm.bias".into(), &[HIDDEN], 0.1, 0.0);
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        for name in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ] {
            put(format!("{p}.{name}.weight"), &[HIDDEN, HIDDEN], 0.4, 0.0);
            put(format!("{p}.{name}.bias"), &[HIDDEN], 0.1, 0.0);
        }
        put(
            format!("{p}.intermediate.dense.weight"),
            &[FFN, HIDDEN],
            0.3,
            0.0,
        );
        put(format!("{p}.intermediate.dense.bias"), &[FFN], 0.1, 0.0);
        put(format!("{p}.output.dense.weight"), &[HIDDEN, FFN], 0.3, 0.0);
        put(format!("{p}.output.dense.bias"), &[HIDDEN], 0.1, 0.0);
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            put(format!("{p}.{norm}.weight"), &[HIDDEN], 0.1, 1.0);
            put(format!("{p}.{norm}.bias"), &[HIDDEN], 0.1, 0.0);
        }
    }
    w
}

/// Writes a complete tiny BERT directory (config, weights, tokenizer) into `dir`.
pub fn write_tiny_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&tiny_config()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_vec(&tiny_tokenizer()).unwrap(),
    )
    .unwrap();
    candle_core::safetensors::save(&tiny_weights(), dir.join("model.safetensors")).unwrap();
}

/// A freshly generated tiny model, loaded, with the directory that holds it.
pub fn tiny_model() -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path());
    let model = Model::load_path(dir.path(), &Device::Cpu).unwrap();
    (dir, model)
}

/// The real default model, fetched on first use, loaded once per test binary.
pub fn real_model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL
        .get_or_init(|| Model::load(&ModelSource::Default, &Device::Cpu, "the test suite").unwrap())
}

/// The directory of the fetched real model.
pub fn real_model_dir() -> PathBuf {
    real_model().files.dir.clone()
}

/// Largest |a − b| of two equally long value lists.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Largest absolute difference between two tensors.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Every map of one input, `[S, S]`, by layer then head.
pub fn capture_all(model: &Model, text: &TokenizedText) -> Vec<Vec<Tensor>> {
    model.capture_maps(text).unwrap()
}

/// The exact last hidden state of one input, `[1, S, D]`.
pub fn exact_hidden(model: &Model, text: &TokenizedText) -> Tensor {
    let s = model.shape();
    model
        .forward(
            std::slice::from_ref(text),
            &mut StaticPlan::exact(s.layers, s.heads),
        )
        .unwrap()
        .1
        .hidden
}

/// A decoder's next-token logits `[1, V]` for one input under `plan`.
pub fn last_logits(model: &Model, text: &TokenizedText, plan: StaticPlan) -> Tensor {
    let (batch, out) = model
        .forward(std::slice::from_ref(text), &mut { plan })
        .unwrap();
    model
        .logits(&model.readout(&out.hidden, &batch).unwrap())
        .unwrap()
}

/// `text` tokenized by `model`.
pub fn tokens(model: &Model, text: &str) -> TokenizedText {
    model.tokenizer.encode(text).unwrap()
}

/// A copy of `model` on `kernels`.
pub fn with_kernels(model: &Model, kernels: attncache::model::Kernels) -> Model {
    let mut m = model.clone();
    m.set_kernels(kernels);
    m
}

/// The maps of `donor` and each layer's input for `text` (of the same
/// length) under the exact plan: what partial-reuse tests substitute and
/// where.
pub fn donor_maps_and_inputs(
    model: &Model,
    text: &TokenizedText,
    donor: &TokenizedText,
) -> (Vec<Vec<Tensor>>, Vec<Tensor>) {
    assert_eq!(text.ids.len(), donor.ids.len());
    let maps = capture_all(model, donor);
    let s = model.shape();
    let mut recorder = Recorder {
        plan: StaticPlan::exact(s.layers, s.heads),
        inputs: Vec::new(),
    };
    let _ = model
        .forward(std::slice::from_ref(text), &mut recorder)
        .unwrap();
    (maps, recorder.inputs)
}

/// Records each layer's input while following a fixed plan.
pub struct Recorder {
    pub plan: StaticPlan,
    pub inputs: Vec<Tensor>,
}

impl Planner for Recorder {
    fn plan_layer(&mut self, layer: usize, input: &Tensor) -> candle_core::Result<LayerPlan> {
        self.inputs.push(input.clone());
        self.plan.plan_layer(layer, input)
    }
}

/// Capture then reuse of an input's own maps in every layer and head
/// reproduces the exact output; every captured row sums to 1.
pub fn check_self_reuse_is_exact(model: &Model, text: &TokenizedText) {
    let maps = capture_all(model, text);
    for (l, layer) in maps.iter().enumerate() {
        for (h, map) in layer.iter().enumerate() {
            let sums = map.sum(1).unwrap().to_vec1::<f32>().unwrap();
            for (row, sum) in sums.iter().enumerate() {
                assert!(
                    (sum - 1.0).abs() <= 1e-5,
                    "layer {l} head {h} row {row} sums to {sum}"
                );
            }
        }
    }
    let plan = StaticPlan::new(
        maps.iter()
            .map(|heads| LayerPlan::new(heads.iter().cloned().map(HeadPlan::reuse).collect()))
            .collect(),
    );
    let (_, reused) = model
        .forward(std::slice::from_ref(text), &mut { plan })
        .unwrap();
    let exact = exact_hidden(model, text);
    let diff = max_abs_diff(&exact, &reused.hidden);
    assert!(
        diff <= 1e-5,
        "reusing the input's own maps changed the output by {diff}"
    );
}

/// Reusing `donor`'s maps in `heads` of `layer` while running `text` changes
/// the model output, and that layer's attention context changes only in the
/// columns of those heads.
pub fn check_partial_reuse_acts_only_through_its_heads(
    model: &Model,
    text: &TokenizedText,
    donor: &TokenizedText,
    layer: usize,
    heads: &[usize],
) {
    let s = *model.shape();
    assert_eq!(
        text.ids.len(),
        donor.ids.len(),
        "reuse needs inputs of the same length"
    );
    let donor_maps = capture_all(model, donor);
    let layer_plan = LayerPlan::new(
        (0..s.heads)
            .map(|h| {
                if heads.contains(&h) {
                    HeadPlan::reuse(donor_maps[layer][h].clone())
                } else {
                    HeadPlan::Exact
                }
            })
            .collect(),
    );
    let mut layers = vec![LayerPlan::exact(s.heads); s.layers];
    layers[layer] = layer_plan.clone();

    let mut recorder = Recorder {
        plan: StaticPlan::exact(s.layers, s.heads),
        inputs: Vec::new(),
    };
    let (_, exact) = model
        .forward(std::slice::from_ref(text), &mut recorder)
        .unwrap();
    let (_, mixed) = model
        .forward(std::slice::from_ref(text), &mut StaticPlan::new(layers))
        .unwrap();
    let output_change = max_abs_diff(&exact.hidden, &mixed.hidden);
    assert!(
        output_change > 1e-3,
        "reusing another input's maps left the output unchanged ({output_change})"
    );

    let attention = model.encoder().expect("a BERT model").layers()[layer].attention();
    let x = &recorder.inputs[layer];
    let exact_ctx = attention
        .forward(x, None, &LayerPlan::exact(s.heads))
        .unwrap()
        .context;
    let mixed_ctx = attention.forward(x, None, &layer_plan).unwrap().context;
    for h in 0..s.heads {
        let cols = |t: &Tensor| t.narrow(2, h * s.head_dim, s.head_dim).unwrap();
        let diff = max_abs_diff(&cols(&exact_ctx), &cols(&mixed_ctx));
        if heads.contains(&h) {
            assert!(
                diff > 1e-4,
                "reused head {h} left its context unchanged ({diff})"
            );
        } else {
            assert!(
                diff <= 1e-6,
                "head {h} was not reused but its context changed by {diff}"
            );
        }
    }
}

/// A successful command's stdout as one JSON object (fails with its stderr
/// otherwise).
pub fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

/// Asserts that a command succeeded, showing its stderr when not.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SmolLM2-135M-Instruct, fetched on first use, loaded once per test binary.
pub fn smollm2() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL
        .get_or_init(|| Model::load(&ModelSource::Smollm2, &Device::Cpu, "the test suite").unwrap())
}

/// A database of `texts` (unlabelled) built for `model` in `dir/db`, opened.
pub fn tiny_database(model: &Model, texts: &[&str], dir: &Path) -> attncache::cache::Database {
    use attncache::cache::{BuildOptions, Database, FeatureKind, ModelIdentity, build};
    let corpus = attncache::data::Corpus {
        name: "tiny".into(),
        items: texts
            .iter()
            .map(|t| attncache::data::Item {
                text: t.to_string(),
                label: None,
            })
            .collect(),
    };
    build(
        model,
        &corpus,
        &dir.join("db"),
        BuildOptions {
            feature: FeatureKind::Pooled,
            hnsw_min_bucket: 8192,
        },
        &mut |_, _| {},
        &std::sync::atomic::AtomicBool::new(false),
    )
    .unwrap();
    Database::open(&dir.join("db"), &ModelIdentity::of(model).unwrap()).unwrap()
}
