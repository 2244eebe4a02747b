//! A tiny randomly initialised Llama (Hugging Face layout) written to disk:
//! 2 layers, 4 query heads sharing 2 key/value heads, width 16.

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

/// The tiny vocabulary size (the tiny BERT tokenizer's).
fn vocab_size() -> usize {
    super::tiny_tokenizer()["model"]["vocab"]
        .as_object()
        .unwrap()
        .len()
}

/// The Hugging Face config of the tiny Llama.
pub fn tiny_llama_config() -> serde_json::Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "vocab_size": vocab_size(),
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 64,
        "tie_word_embeddings": false
    })
}

fn weights() -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let mut w = HashMap::new();
    let mut put = |name: String, shape: &[usize], std: f32, mean: f32| {
        w.insert(name, Tensor::randn(mean, std, shape, &dev).unwrap());
    };
    let (v, d, kv) = (vocab_size(), HIDDEN, KV_HEADS * HIDDEN / HEADS);
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
        put(format!("{p}.mlp.gate_proj.weight"), &[FFN, d], 0.3, 0.0);
        put(format!("{p}.mlp.up_proj.weight"), &[FFN, d], 0.3, 0.0);
        put(format!("{p}.mlp.down_proj.weight"), &[d, FFN], 0.3, 0.0);
    }
    w
}

/// Writes a tiny Llama directory (config, weights, tokenizer) into `dir`.
pub fn write_tiny_llama(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&tiny_llama_config()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_vec(&super::tiny_tokenizer()).unwrap(),
    )
    .unwrap();
    candle_core::safetensors::save(&weights(), dir.join("model.safetensors")).unwrap();
}

/// A freshly generated tiny Llama, loaded, with the directory that holds it.
pub fn tiny_llama() -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_llama(dir.path());
    let model = Model::load_path(dir.path(), &Device::Cpu).unwrap();
    (dir, model)
}
