//! A one-layer BERT whose two heads are planted in its weights: head 0 is a
//! previous-token head, head 1 a first-token sink, each with a content term
//! on top so that its maps also follow the words (as real such heads do).
//!
//! The construction (hidden 64, two heads of 32):
//! - dims 0..16 carry the word (a fixed pseudo-random code per token), dims
//!   16..40 a one-hot of the position (height [`POSITION`]);
//! - head 0: the query reads position p into head dim p, the key reads
//!   position p into head dim p + 1, so the query at i meets the key at
//!   i − 1; head 1: a constant query bias meets the key of position 0;
//! - both heads add a word term: query dims 0..8 against key dims 8..16 in
//!   head dims 24..32, so attention left over from the planted pattern goes
//!   where the words send it;
//! - values, the attention output and the feed-forward block are zero, so
//!   the layer's output is its input normalised.

use std::collections::HashMap;

use attncache::model::Model;
use candle_core::{Device, Tensor};

use super::{tiny_config, tiny_tokenizer};

const HIDDEN: usize = 64;
const HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const FFN: usize = 16;
/// Positions the one-hot code covers (the model's maximum input).
pub const MAX_POS: usize = 24;
const WORD_DIMS: usize = 16;
const POSITION_DIM0: usize = WORD_DIMS;
/// Height of the position one-hot in the embedding.
const POSITION: f32 = 8.0;
/// First head dim of the word term.
const WORD_TERM_DIM0: usize = 24;
/// Scale of the planted position pattern in each head.
const PLANTED: f32 = 0.75;
/// Scale of the word term in each head.
const WORDS: f32 = 1.8;

/// A fixed code in [-1.7, 1.7] for word dim `d` of token `t`.
fn word_code(t: usize, d: usize) -> f32 {
    let mut x = (t as u64 + 1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(d as u64 * 0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    ((x % 10_000) as f32 / 10_000.0 * 2.0 - 1.0) * 1.7
}

fn planted_weights(vocab: usize) -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let mut w = HashMap::new();
    let mut put = |name: &str, data: Vec<f32>, shape: &[usize]| {
        w.insert(
            name.to_string(),
            Tensor::from_vec(data, shape, &dev).unwrap(),
        );
    };
    let mut words = vec![0f32; vocab * HIDDEN];
    for t in 0..vocab {
        for d in 0..WORD_DIMS {
            words[t * HIDDEN + d] = word_code(t, d);
        }
    }
    put("embeddings.word_embeddings.weight", words, &[vocab, HIDDEN]);
    let mut positions = vec![0f32; MAX_POS * HIDDEN];
    for p in 0..MAX_POS {
        positions[p * HIDDEN + POSITION_DIM0 + p] = POSITION;
    }
    put(
        "embeddings.position_embeddings.weight",
        positions,
        &[MAX_POS, HIDDEN],
    );
    put(
        "embeddings.token_type_embeddings.weight",
        vec![0.0; 2 * HIDDEN],
        &[2, HIDDEN],
    );
    // Linear weights are [out, in]: out = head dim (head h at h · HEAD_DIM).
    let (mut q, mut k) = (vec![0f32; HIDDEN * HIDDEN], vec![0f32; HIDDEN * HIDDEN]);
    let mut q_bias = vec![0f32; HIDDEN];
    let at = |out: usize, inp: usize| out * HIDDEN + inp;
    // Head 0: previous token.
    for p in 0..MAX_POS - 1 {
        q[at(p + 1, POSITION_DIM0 + p + 1)] = PLANTED;
        k[at(p + 1, POSITION_DIM0 + p)] = PLANTED;
    }
    // Head 1: the first token, from a constant query.
    q_bias[HEAD_DIM] = 7.0 * PLANTED;
    k[at(HEAD_DIM, POSITION_DIM0)] = PLANTED;
    // Both heads: query word dims 0..8 against key word dims 8..16.
    for h in 0..HEADS {
        for d in 0..8 {
            q[at(h * HEAD_DIM + WORD_TERM_DIM0 + d, d)] = WORDS;
            k[at(h * HEAD_DIM + WORD_TERM_DIM0 + d, 8 + d)] = WORDS;
        }
    }
    let p = "encoder.layer.0";
    put(
        &format!("{p}.attention.self.query.weight"),
        q,
        &[HIDDEN, HIDDEN],
    );
    put(&format!("{p}.attention.self.query.bias"), q_bias, &[HIDDEN]);
    put(
        &format!("{p}.attention.self.key.weight"),
        k,
        &[HIDDEN, HIDDEN],
    );
    for (name, shape) in [
        ("attention.self.key.bias", vec![HIDDEN]),
        ("attention.self.value.weight", vec![HIDDEN, HIDDEN]),
        ("attention.self.value.bias", vec![HIDDEN]),
        ("attention.output.dense.weight", vec![HIDDEN, HIDDEN]),
        ("attention.output.dense.bias", vec![HIDDEN]),
        ("intermediate.dense.weight", vec![FFN, HIDDEN]),
        ("intermediate.dense.bias", vec![FFN]),
        ("output.dense.weight", vec![HIDDEN, FFN]),
        ("output.dense.bias", vec![HIDDEN]),
    ] {
        let n = shape.iter().product();
        put(&format!("{p}.{name}"), vec![0.0; n], &shape);
    }
    for norm in [
        "embeddings.LayerNorm".to_string(),
        format!("{p}.attention.output.LayerNorm"),
        format!("{p}.output.LayerNorm"),
    ] {
        put(&format!("{norm}.weight"), vec![1.0; HIDDEN], &[HIDDEN]);
        put(&format!("{norm}.bias"), vec![0.0; HIDDEN], &[HIDDEN]);
    }
    w
}

/// The planted model, written to a temporary directory and loaded.
pub fn planted_model() -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config();
    config["hidden_size"] = HIDDEN.into();
    config["num_hidden_layers"] = 1.into();
    config["num_attention_heads"] = HEADS.into();
    config["intermediate_size"] = FFN.into();
    config["max_position_embeddings"] = MAX_POS.into();
    let vocab = config["vocab_size"].as_u64().unwrap() as usize;
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tokenizer.json"),
        serde_json::to_vec(&tiny_tokenizer()).unwrap(),
    )
    .unwrap();
    candle_core::safetensors::save(
        &planted_weights(vocab),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let model = Model::load_path(dir.path(), &Device::Cpu).unwrap();
    (dir, model)
}
