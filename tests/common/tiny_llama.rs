//! A tiny randomly initialised Llama (Hugging Face layout) written to disk:
//! 2 layers, 4 query heads sharing 2 key/value heads, width 16; and a tiny
//! Qwen2 (the same plus Q, K, V biases): 14 query heads sharing 2, width 56.

use std::collections::HashMap;
use std::path::Path;

use attncache::model::Model;
use candle_core::{Device, Tensor};
use serde_json::json;

pub const LAYERS: usize = 2;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const HIDDEN: usize = 16;
pub const FFN: usize = 24;

/// The tiny Qwen2's heads (Qwen2.5-0.5B's 14:2 grouping) and width.
pub const QWEN_HEADS: usize = 14;
pub const QWEN_KV_HEADS: usize = 2;
pub const QWEN_HIDDEN: usize = 56;

/// Which tiny decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiny {
    Llama,
    Qwen2,
}

impl Tiny {
    /// (hidden, query heads, key/value heads).
    fn sizes(self) -> (usize, usize, usize) {
        match self {
            Tiny::Llama => (HIDDEN, HEADS, KV_HEADS),
            Tiny::Qwen2 => (QWEN_HIDDEN, QWEN_HEADS, QWEN_KV_HEADS),
        }
    }
}

/// The tiny vocabulary size (the tiny BERT tokenizer's).
fn vocab_size() -> usize {
    super::tiny_tokenizer()["model"]["vocab"]
        .as_object()
        .unwrap()
        .len()
}

/// The Hugging Face config of the tiny Llama.
pub fn tiny_llama_config() -> serde_json::Value {
    tiny_config(Tiny::Llama)
}

/// The Hugging Face config of a tiny decoder (the fields both candle's
/// Llama and Qwen2 configs read).
pub fn tiny_config(kind: Tiny) -> serde_json::Value {
    let (hidden, heads, kv_heads) = kind.sizes();
    let mut config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": FFN,
        "vocab_size": vocab_size(),
        "num_hidden_layers": LAYERS,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 64,
        "tie_word_embeddings": false
    });
    if kind == Tiny::Qwen2 {
        let extra = json!({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "sliding_window": 64,
            "max_window_layers": LAYERS,
            "use_sliding_window": false,
            "hidden_act": "silu"
        });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
    }
    config
}

fn weights(kind: Tiny) -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let mut w = HashMap::new();
    let mut put = |name: String, shape: &[usize], std: f32, mean: f32| {
        w.insert(name, Tensor::randn(mean, std, shape, &dev).unwrap());
    };
    let (d, heads, kv_heads) = kind.sizes();
    let (v, kv) = (vocab_size(), kv_heads * d / heads);
    put("model.embed_tokens.weight".into(), &[v, d], 1.0, 0.0);
    put("model.norm.weight".into(), &[d], 0.1, 1.0);
    put("lm_head.weight".into(), &[v, d], 0.5, 0.0);
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        put(format!("{p}.input_layernorm.weight"), &[d], 0.1, 1.0);
        put(
            format!("{p}.post_attention_layernorm.weight"),
            &[d],
            0.1,
            1.0,
        );
        put(format!("{p}.self_attn.q_proj.weight"), &[d, d], 0.6, 0.0);
        put(format!("{p}.self_attn.k_proj.weight"), &[kv, d], 0.6, 0.0);
        put(format!("{p}.self_attn.v_proj.weight"), &[kv, d], 0.4, 0.0);
        put(format!("{p}.self_attn.o_proj.weight"), &[d, d], 0.3, 0.0);
        if kind == Tiny::Qwen2 {
            // Biases large enough to matter (Qwen2's K biases are large).
            put(format!("{p}.self_attn.q_proj.bias"), &[d], 0.5, 0.0);
            put(format!("{p}.self_attn.k_proj.bias"), &[kv], 1.0, 0.0);
            put(format!("{p}.self_attn.v_proj.bias"), &[kv], 0.5, 0.0);
        }
        put(format!("{p}.mlp.gate_proj.weight"), &[FFN, d], 0.3, 0.0);
        put(format!("{p}.mlp.up_proj.weight"), &[FFN, d], 0.3, 0.0);
        put(format!("{p}.mlp.down_proj.weight"), &[d, FFN], 0.3, 0.0);
    }
    w
}

/// Writes a tiny Llama directory (config, weights, tokenizer) into `dir`.
pub fn write_tiny_llama(dir: &Path) {
    write_tiny(Tiny::Llama, dir)
}

/// Writes a tiny decoder directory (config, weights, tokenizer) into `dir`.
pub fn write_tiny(kind: Tiny, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&tiny_config(kind)).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_vec(&super::tiny_tokenizer()).unwrap(),
    )
    .unwrap();
    candle_core::safetensors::save(&weights(kind), dir.join("model.safetensors")).unwrap();
}

/// A freshly generated tiny Llama, loaded, with the directory that holds it.
pub fn tiny_llama() -> (tempfile::TempDir, Model) {
    tiny(Tiny::Llama)
}

/// A freshly generated tiny decoder, loaded, with the directory that holds it.
pub fn tiny(kind: Tiny) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny(kind, dir.path());
    let model = Model::load_path(dir.path(), &Device::Cpu).unwrap();
    (dir, model)
}
