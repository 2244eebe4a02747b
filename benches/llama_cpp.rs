//! Our exact prefill against llama.cpp (llama-cpp-python 0.3.36, built for
//! this CPU) on the same GGUF file, the same token ids and the same thread
//! count, with llama.cpp's flash attention off and on; next-token logits
//! compared. Timing: per model and length, warm blocks of back-to-back
//! prefills per engine in rotating order (`attncache::eval::timed_blocks`);
//! llama.cpp's time is its `eval` of the whole prompt in one batch measured
//! in Python, ours the forward pass plus the last row's logits.
//!
//!   cargo bench --bench llama_cpp                         # smollm2 and qwen2.5-0.5b, 512 and 2048 tokens
//!   LLAMA_BENCH_MODELS=qwen2.5-0.5b LLAMA_BENCH_TOKENS=512 cargo bench --bench llama_cpp
//!
//! Needs python3 with venv and pip, cmake and a C++ compiler: llama-cpp-python
//! is built into `target/llama-venv` on first use (`-DGGML_NATIVE=ON`, about
//! 6 minutes on 2 cores). Not run by CI.

use std::path::{Path, PathBuf};
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use attncache::eval::{BlockPlan, timed_blocks};
use attncache::model::{Model, ModelSource, StaticPlan, TokenizedText};
use common::{JsonPeer, floats};
use serde_json::json;

/// The peer, pinned.
const PEER_PACKAGE: &str = "llama-cpp-python==0.3.36";

/// Per model and length: 3 rounds of one warm block per engine.
const BLOCKS: BlockPlan = BlockPlan {
    rounds: 3,
    block: 2,
    pause: Duration::from_millis(200),
};

/// The virtual environment with llama.cpp, built on first use.
fn venv(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("target/llama-venv");
    let python = dir.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import llama_cpp"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        eprintln!("building {PEER_PACKAGE} into {} (minutes)", dir.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()?;
        anyhow::ensure!(status.success(), "python3 -m venv failed");
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "-q", PEER_PACKAGE])
            .env("CMAKE_ARGS", "-DGGML_NATIVE=ON")
            .status()?;
        anyhow::ensure!(status.success(), "pip install {PEER_PACKAGE} failed");
    }
    Ok(python)
}

/// llama.cpp in a Python process, answering one prefill per request.
struct Peer(JsonPeer);

impl Peer {
    fn start(
        python: &Path,
        root: &Path,
        gguf: &Path,
        (threads, longest): (usize, usize),
    ) -> anyhow::Result<(Self, String)> {
        let mut command = Command::new(python);
        command
            .arg(root.join("scripts/llama_cpp/peer.py"))
            .arg(gguf)
            .arg(threads.to_string())
            .arg(longest.to_string());
        let (peer, version) = JsonPeer::start(command)?;
        Ok((Self(peer), version))
    }

    fn prefill(
        &mut self,
        ids: &[u32],
        flash: bool,
        output: bool,
    ) -> anyhow::Result<(f64, Option<Vec<f32>>)> {
        let answer = self
            .0
            .ask(&json!({ "ids": ids, "flash": flash, "output": output }))?;
        let logits = floats(&answer["logits"]);
        Ok((answer["ms"].as_f64().context("no time")?, logits))
    }
}

/// Exactly `target` tokens of a repeated sentence.
fn input(model: &Model, target: usize) -> anyhow::Result<TokenizedText> {
    let sentence = "The film follows a retired detective who returns to the small coastal town where \
                    he grew up, and the quiet mystery he finds there becomes a story about memory. ";
    let mut text = String::new();
    let mut t = loop {
        let t = model.tokenizer.encode(&text)?;
        if t.ids.len() >= target {
            break t;
        }
        text.push_str(sentence);
    };
    t.ids.truncate(target);
    t.type_ids.truncate(target);
    t.tokens.truncate(target);
    Ok(t)
}

/// Our exact prefill on the fused path and the last row's logits.
fn ours(model: &Model, t: &TokenizedText) -> anyhow::Result<(f64, Vec<f32>)> {
    let shape = model.shape();
    let start = Instant::now();
    let (batch, out) = model.forward(
        std::slice::from_ref(t),
        &mut StaticPlan::exact(shape.layers, shape.heads),
    )?;
    let logits = model.logits(&model.readout(&out.hidden, &batch)?)?;
    let logits: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    Ok((start.elapsed().as_secs_f64() * 1e3, logits))
}

fn argmax(v: &[f32]) -> usize {
    attncache::model::llama::argmax(v) as usize
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let list = |var: &str, default: &str| -> Vec<String> {
        std::env::var(var)
            .unwrap_or_else(|_| default.into())
            .split(',')
            .map(|s| s.trim().to_string())
            .collect()
    };
    let models = list("LLAMA_BENCH_MODELS", "smollm2,qwen2.5-0.5b");
    let lengths: Vec<usize> = list("LLAMA_BENCH_TOKENS", "512,2048")
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let longest = lengths.iter().copied().max().unwrap_or(512);
    let python = venv(&root)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "exact prefill · {threads} threads each · same GGUF and token ids · per model and length {}",
        BLOCKS.describe()
    );
    println!(
        "{:>13} {:>6} | {:>10} {:>10} {:>10} | {:>9} {:>9} | {:>6} {:>8}",
        "model",
        "tokens",
        "llama.cpp",
        "+flash",
        "ours",
        "vs plain",
        "vs flash",
        "top-1",
        "max |Δ|"
    );
    for name in &models {
        let model = Model::load(
            &ModelSource::from_arg(Some(Path::new(name))),
            &candle_core::Device::Cpu,
            "the llama.cpp benchmark",
        )?;
        let (mut peer, version) =
            Peer::start(&python, &root, &model.files.weights, (threads, longest))?;
        eprintln!("{name}: llama.cpp {version}");
        for &target in &lengths {
            let t = input(&model, target)?;
            let (_, mine) = ours(&model, &t)?;
            let (_, theirs) = peer.prefill(&t.ids, false, true)?;
            let theirs = theirs.context("no logits from llama.cpp")?;
            let max_diff = mine
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let same_top = argmax(&mine) == argmax(&theirs);
            // Engines: 0 llama.cpp, 1 llama.cpp with flash attention, 2 ours.
            let times = timed_blocks(3, 1, BLOCKS, |engine| {
                Ok(vec![match engine {
                    0 => peer.prefill(&t.ids, false, false)?.0,
                    1 => peer.prefill(&t.ids, true, false)?.0,
                    _ => ours(&model, &t)?.0,
                }])
            })?;
            println!(
                "{:>13} {:>6} | {:>8.0}ms {:>8.0}ms {:>8.0}ms | {:>8.2}× {:>8.2}× | {:>6} {:>8.2}",
                name,
                t.ids.len(),
                times.median(0, 0),
                times.median(1, 0),
                times.median(2, 0),
                times.ratio(0, 2, 0),
                times.ratio(1, 2, 0),
                if same_top { "same" } else { "differ" },
                max_diff
            );
        }
    }
    Ok(())
}
