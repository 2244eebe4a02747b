//! The row-wise pass on candle tensors (the CUDA path) against the fused CPU
//! pass, both on the CPU device: exact prefill, prefix cache, modular reuse
//! (naive, select:100, first:K, the probe, APE's rescaling) and 16 greedy
//! tokens after each, on the tiny Llama and on SmolLM2; a resident store
//! gives the same logits as the memory-mapped one.

mod common;

use common::max_diff;

use std::sync::atomic::AtomicBool;

use attncache::model::Model;
use attncache::model::fused::Kernels;
use attncache::model::llama::{LlamaDecoder, PromptKv};
use attncache::modules::schema::ModuleSpec;
use attncache::modules::{
    BuildOptions, Encoding, Layout, LayoutOptions, ModuleStore, Positions, Prefill, PromptSpec,
    Recovery, Rescale, Schema, Setting, build_store, prefill,
};
use attncache::storage::ModelIdentity;
use candle_core::Device;

fn schema(modules: &[(&str, &str)]) -> Schema {
    let s = Schema {
        name: "tensor-rows".into(),
        preamble: None,
        modules: modules
            .iter()
            .map(|(name, text)| ModuleSpec {
                name: (*name).into(),
                text: (*text).into(),
                union: None,
                params: Default::default(),
                role: None,
            })
            .collect(),
    };
    s.check().unwrap();
    s
}

/// The store of `schema` (prefixed encoding), its layout of `prompt`, and
/// the same prompt with another question (what a prefix cache holds).
fn setup(
    model: &Model,
    schema: &Schema,
    prompt: &PromptSpec,
    dir: &std::path::Path,
) -> (ModuleStore, Layout, Layout) {
    let out = dir.join("store");
    let options = BuildOptions {
        encoding: Encoding::Prefixed,
        chat: false,
    };
    let cancel = AtomicBool::new(false);
    build_store(model, schema, &out, options, &mut |_, _| {}, &cancel).unwrap();
    let store = ModuleStore::open(&out, &ModelIdentity::of(model).unwrap()).unwrap();
    let d = model.decoder().unwrap();
    let options = LayoutOptions {
        positions: Positions::Contiguous,
        chat: None,
        max_positions: d.shape().max_positions,
    };
    let layout = Layout::new(store.tokenized(), prompt, &model.tokenizer, options).unwrap();
    let mut other = prompt.clone();
    other.text = format!("{} again", prompt.text);
    let previous = Layout::new(store.tokenized(), &other, &model.tokenizer, options).unwrap();
    (store, layout, previous)
}

/// Every prefill of `layout` by `d`: exact, prefix (after `previous`'s
/// exact prefill), and modular under each setting.
fn prefills(
    d: &LlamaDecoder,
    store: &ModuleStore,
    (layout, previous): (&Layout, &Layout),
    settings: &[Setting],
) -> Vec<(String, Prefill)> {
    let held = prefill::exact(d, previous, &[]).unwrap().state;
    let mut runs = vec![
        ("exact".to_string(), prefill::exact(d, layout, &[]).unwrap()),
        (
            "prefix".to_string(),
            prefill::prefix(d, layout, Some(held)).unwrap(),
        ),
    ];
    for setting in settings {
        let run = prefill::modular_with(d, store, layout, *setting, &[]).unwrap();
        runs.push((setting.to_string(), run));
    }
    runs
}

fn settings() -> Vec<Setting> {
    let plain = |recovery| Setting {
        recovery,
        rescale: None,
    };
    vec![
        plain(Recovery::None),
        plain(Recovery::Select(100.0)),
        plain(Recovery::Select(30.0)),
        plain(Recovery::First(2)),
        plain(Recovery::Probe {
            percent: 40.0,
            layers: 2,
        }),
        plain(Recovery::ProbeModules(1)),
        Setting {
            recovery: Recovery::None,
            rescale: Some(Rescale::parse("0.9,0.9").unwrap()),
        },
    ]
}

/// The tensor pass equals the fused pass on every prefill of `prompt` and
/// on 16 greedy tokens after each; the store made resident on the CPU gives
/// the memory-mapped store's logits.
fn check_tensor_pass(model: &Model, schema: &Schema, prompt: &PromptSpec, tolerance: f32) {
    let fused = model.decoder().unwrap();
    assert!(fused.host_rows());
    let mut tensor = fused.clone();
    tensor.set_kernels(Kernels::Reference);
    assert!(!tensor.host_rows());
    let dir = tempfile::tempdir().unwrap();
    let (mut store, layout, previous) = setup(model, schema, prompt, dir.path());
    let settings = settings();
    let want = prefills(fused, &store, (&layout, &previous), &settings);
    let got = prefills(&tensor, &store, (&layout, &previous), &settings);
    for ((name, mut a), (_, mut b)) in want.into_iter().zip(got) {
        assert!(matches!(a.state.kv, PromptKv::Host(_)), "{name}");
        assert!(matches!(b.state.kv, PromptKv::Device(_)), "{name}");
        let diff = max_diff(&a.state.logits, &b.state.logits);
        assert!(diff <= tolerance, "{name}: logits differ by {diff}");
        assert_eq!(a.recomputed_rows, b.recomputed_rows, "{name}");
        let host = fused.greedy(&mut a.state, 16, None).unwrap();
        let device = tensor.greedy(&mut b.state, 16, None).unwrap();
        assert_eq!(host, device, "{name}: greedy tokens differ");
        assert_eq!(
            b.state.kv.rows(),
            layout.len(),
            "{name}: the prompt is restored"
        );
    }
    // Resident rows are gathered, not copied: the same values exactly.
    let mapped = prefill::modular(&tensor, &store, &layout, Recovery::None, &[]).unwrap();
    store.make_resident(&Device::Cpu).unwrap();
    assert!(store.resident().unwrap().bytes() > 0);
    for recovery in [Recovery::None, Recovery::Select(30.0)] {
        let resident = prefill::modular(&tensor, &store, &layout, recovery, &[]).unwrap();
        let again = match recovery {
            Recovery::None => mapped.state.logits.clone(),
            _ => {
                let fresh =
                    ModuleStore::open(store.dir(), &ModelIdentity::of(model).unwrap()).unwrap();
                prefill::modular(&tensor, &fresh, &layout, recovery, &[])
                    .unwrap()
                    .state
                    .logits
            }
        };
        assert_eq!(resident.state.logits, again, "{recovery}");
    }
}

#[test]
fn the_tensor_pass_equals_the_fused_pass_on_the_tiny_llama() {
    let (_dir, model) = common::tiny_llama::tiny_llama();
    let schema = schema(&[
        ("intro", "the movie was great"),
        ("doc", "a plot and a film is fun"),
        ("outro", "the plot was bad"),
    ]);
    let prompt = PromptSpec {
        modules: vec!["outro".into(), "doc".into(), "intro".into()],
        text: "was it fun".into(),
        ..PromptSpec::default()
    };
    check_tensor_pass(&model, &schema, &prompt, 1e-4);
}

#[test]
fn the_tensor_pass_equals_the_fused_pass_on_smollm2() {
    let schema = schema(&[
        (
            "system",
            "You are a film critic. You answer in one short sentence.\n",
        ),
        (
            "doc",
            "Document: A retired detective returns to the coastal town where he grew up to find his brother missing and the harbour full of strangers.\n",
        ),
        (
            "note",
            "Note: the town is called Port Mellow and the brother is a fisherman.\n",
        ),
    ]);
    let prompt = PromptSpec {
        modules: vec!["system".into(), "note".into(), "doc".into()],
        text: "Question: where does the detective return to?\nAnswer:".into(),
        ..PromptSpec::default()
    };
    check_tensor_pass(common::smollm2(), &schema, &prompt, 1e-4);
}

#[test]
fn a_store_built_by_the_tensor_pass_holds_the_fused_pass_rows() {
    use attncache::modules::layout::Block;
    let (_dir, model) = common::tiny_llama::tiny_llama();
    let mut tensor_model = model.clone();
    tensor_model.set_kernels(Kernels::Reference);
    assert!(!tensor_model.decoder().unwrap().host_rows());
    let schema = schema(&[
        ("intro", "the movie was great"),
        ("doc", "a plot and a film"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let options = BuildOptions {
        encoding: Encoding::Prefixed,
        chat: false,
    };
    let cancel = AtomicBool::new(false);
    let open = |m: &Model, name: &str| {
        let out = dir.path().join(name);
        build_store(m, &schema, &out, options, &mut |_, _| {}, &cancel).unwrap();
        ModuleStore::open(&out, &ModelIdentity::of(m).unwrap()).unwrap()
    };
    let (fused, tensor) = (open(&model, "fused"), open(&tensor_model, "tensor"));
    let d = model.decoder().unwrap();
    let blocks = std::iter::once(Block::Preamble).chain((0..2).map(Block::Module));
    for block in blocks {
        let rows = match block {
            Block::Preamble => fused.tokenized().preamble.len(),
            Block::Module(m) => fused.tokenized().modules[m].rows,
        };
        let load = |store: &ModuleStore| {
            let mut kv = d.kv_cache(rows);
            store.load_rows(block, 0..rows, &mut kv, 0).unwrap();
            kv
        };
        let (a, b) = (load(&fused), load(&tensor));
        for (a, b) in a.layers.iter().zip(&b.layers) {
            for (x, y) in a.k.iter().chain(&a.v).zip(b.k.iter().chain(&b.v)) {
                // The same f32 values up to summation order, then f16: at
                // most one f16 step apart.
                let step = x.abs().max(y.abs()) / 1024.0 + 1e-6;
                assert!((x - y).abs() <= step, "{block:?}: {x} vs {y}");
            }
        }
    }
}
