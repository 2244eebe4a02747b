//! Our exact forward against ONNX Runtime on the same model
//! (paraphrase-MiniLM-L3-v2, whose weights this harness reads out of the
//! ONNX file), the same token ids and the same thread count; outputs
//! compared. Timing: per length, warm blocks of back-to-back runs per engine
//! in rotating order (see `attncache::eval::timed_blocks`).
//!
//!   cargo bench --bench ort
//!
//! Needs python3 with venv and pip: ONNX Runtime, onnx, numpy and safetensors
//! are installed into `target/ort-venv` on first use. Not run by CI.

use std::path::{Path, PathBuf};
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use attncache::eval::{BlockPlan, timed_blocks};
use attncache::fetch::{Fetcher, MINILM_L3_ONNX, MINILM_L6};
use attncache::model::{Kernels, Model, StaticPlan, TokenizedText};
use common::{JsonPeer, floats};
use serde_json::{Value, json};

/// Python packages of the peer, pinned.
const PEER_PACKAGES: [&str; 4] = [
    "onnxruntime==1.32.0",
    "onnx==1.23.2",
    "numpy==2.4.6",
    "safetensors==0.8.0",
];

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The virtual environment with ONNX Runtime, created on first use.
fn venv(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("target/ort-venv");
    let python = dir.join("bin/python");
    if !dir.join(".complete").is_file() {
        eprintln!(
            "creating {} with {}",
            dir.display(),
            PEER_PACKAGES.join(" ")
        );
        run(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
        run(Command::new(&python)
            .args(["-m", "pip", "install", "-q"])
            .args(PEER_PACKAGES))?;
        std::fs::write(dir.join(".complete"), "")?;
    }
    Ok(python)
}

/// Our model directory converted from the ONNX file (weights), with the
/// MiniLM tokenizer and config (same vocabulary and sizes, fewer layers).
fn converted(root: &Path, python: &Path, onnx: &Path, minilm: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("target/ort-model");
    if !dir.join("model.safetensors").is_file() {
        std::fs::create_dir_all(&dir)?;
        let layers: usize = run(Command::new(python)
            .arg(root.join("scripts/ort/convert.py"))
            .arg(onnx)
            .arg(dir.join("model.safetensors")))?
        .trim()
        .parse()?;
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(minilm.join("config.json"))?)?;
        config["num_hidden_layers"] = json!(layers);
        std::fs::write(dir.join("config.json"), config.to_string())?;
        std::fs::copy(minilm.join("tokenizer.json"), dir.join("tokenizer.json"))?;
    }
    Ok(dir)
}

/// The ONNX Runtime process.
struct Peer(JsonPeer);

impl Peer {
    fn start(
        python: &Path,
        root: &Path,
        onnx: &Path,
        threads: usize,
    ) -> anyhow::Result<(Self, String)> {
        let mut command = Command::new(python);
        command
            .arg(root.join("scripts/ort/peer.py"))
            .arg(onnx)
            .arg(threads.to_string());
        let (peer, version) = JsonPeer::start(command)?;
        Ok((Self(peer), version))
    }

    fn run(&mut self, ids: &[u32], output: bool) -> anyhow::Result<(f64, Option<Vec<f32>>)> {
        let answer = self.0.ask(&json!({ "ids": ids, "output": output }))?;
        let hidden = floats(&answer["hidden"]);
        Ok((answer["ms"].as_f64().context("no time")?, hidden))
    }
}

/// A text of about `target` tokens.
fn input(model: &Model, target: usize) -> anyhow::Result<TokenizedText> {
    let words: Vec<&str> =
        "the film follows a retired detective back to the coastal town where he grew up and"
            .split(' ')
            .collect();
    let mut text = String::new();
    loop {
        let t = model.tokenizer.encode(&text)?;
        if t.ids.len() >= target {
            return Ok(t);
        }
        text.push_str(words[t.ids.len() % words.len()]);
        text.push(' ');
    }
}

/// Per length: 12 rounds of one warm block per engine.
const BLOCKS: BlockPlan = BlockPlan {
    rounds: 12,
    block: 6,
    pause: Duration::from_millis(50),
};

fn forward_ms(model: &Model, t: &TokenizedText) -> anyhow::Result<(f64, Vec<f32>)> {
    let shape = model.shape();
    let start = Instant::now();
    let (_, out) = model.forward(
        std::slice::from_ref(t),
        &mut StaticPlan::exact(shape.layers, shape.heads),
    )?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    Ok((ms, out.hidden.flatten_all()?.to_vec1()?))
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fetcher = Fetcher::from_env()?;
    let onnx = fetcher
        .ensure(&MINILM_L3_ONNX, "the ONNX Runtime benchmark")?
        .join("model.onnx");
    let minilm = fetcher.ensure(&MINILM_L6, "the ONNX Runtime benchmark")?;
    let python = venv(&root)?;
    let dir = converted(&root, &python, &onnx, &minilm)?;
    let fused = Model::load_path(&dir, &candle_core::Device::Cpu)?;
    let mut reference = fused.clone();
    reference.set_kernels(Kernels::Reference);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (mut peer, version) = Peer::start(&python, &root, &onnx, threads)?;
    println!(
        "paraphrase-MiniLM-L3-v2 · {threads} threads each · ONNX Runtime {version} · per length {}",
        BLOCKS.describe()
    );
    println!(
        "{:>6} | {:>9} {:>9} {:>9} | {:>11} {:>11} | {:>10} {:>9}",
        "tokens", "ORT ms", "fused ms", "ref ms", "fused/ORT", "ref/ORT", "cosine", "max |Δ|"
    );
    for target in [16usize, 128, 256] {
        let t = input(&fused, target)?;
        let (_, ours) = forward_ms(&fused, &t)?;
        let (_, theirs) = peer.run(&t.ids, true)?;
        let theirs = theirs.context("no output from the peer")?;
        let cosine = attncache::model::cosine(&ours, &theirs);
        let max_diff = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Engines: 0 ONNX Runtime, 1 ours fused, 2 ours reference.
        let times = timed_blocks(3, 1, BLOCKS, |engine| {
            Ok(vec![match engine {
                0 => peer.run(&t.ids, false)?.0,
                1 => forward_ms(&fused, &t)?.0,
                _ => forward_ms(&reference, &t)?.0,
            }])
        })?;
        println!(
            "{:>6} | {:>9.2} {:>9.2} {:>9.2} | {:>10.2}× {:>10.2}× | {:>10.7} {:>9.1e}",
            t.ids.len(),
            times.median(0, 0),
            times.median(1, 0),
            times.median(2, 0),
            times.ratio(1, 0, 0),
            times.ratio(2, 0, 0),
            cosine,
            max_diff
        );
    }
    Ok(())
}
