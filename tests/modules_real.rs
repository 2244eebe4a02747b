//! Modular attention reuse on the real SmolLM2-135M-Instruct: exactness of
//! the special cases, rotation, the f16 store's round trip, the passkey task.

mod common;

use common::max_diff;

use std::sync::atomic::AtomicBool;

use attncache::model::llama::{KvCache, LlamaDecoder, PromptKv, RowPass, argmax};
use attncache::modules::layout::Block;
use attncache::modules::schema::ModuleSpec;
use attncache::modules::store::{encode_module, encode_preamble};
use attncache::modules::{
    BuildOptions, EncodeOptions, Encoding, Layout, LayoutOptions, ModuleStore, Positions,
    PromptSpec, Recovery, Rescale, Schema, Setting, TokenizedSchema, build_store, prefill,
};
use attncache::storage::ModelIdentity;
use half::f16;

fn decoder() -> &'static LlamaDecoder {
    common::smollm2().decoder().unwrap()
}

const SYSTEM: &str = "You are a film critic. You answer in one short sentence.\n";
const DOC: &str = "Document: A retired detective returns to the coastal town where he grew up to find his brother missing and the harbour full of strangers.\n";
const QUESTION: &str = "Question: where does the detective return to?\nAnswer:";

/// Every row computed: logits of the last row and the cache.
fn exact(ids: &[u32], positions: &[usize]) -> (Vec<f32>, KvCache) {
    let d = decoder();
    let n = ids.len();
    let all: Vec<usize> = (0..n).collect();
    let mut kv = PromptKv::Host(d.kv_cache(n));
    let out = d
        .forward_rows(
            RowPass {
                ids,
                positions,
                computed: &all,
                select: None,
                capture: &[],
            },
            &mut kv,
        )
        .unwrap();
    let logits = d.logits_of_rows(&out, &[n - 1]).unwrap().get(0).unwrap();
    (logits.to_vec1().unwrap(), kv.into_host().unwrap())
}

/// Last-row logits of a pass computing `computed` over the given rows of `kv`.
fn last_logits_over(
    ids: &[u32],
    positions: &[usize],
    computed: &[usize],
    kv: &mut KvCache,
) -> Vec<f32> {
    let d = decoder();
    let pass = RowPass {
        ids,
        positions,
        computed,
        select: None,
        capture: &[],
    };
    let mut given = PromptKv::Host(std::mem::replace(kv, KvCache::zeros(0, 0, 0)));
    let out = d.forward_rows(pass, &mut given).unwrap();
    *kv = given.into_host().unwrap();
    d.logits_of_rows(&out, &[ids.len() - 1])
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn schema() -> Schema {
    let module = |name: &str, text: &str| ModuleSpec {
        name: name.into(),
        text: text.into(),
        union: None,
        params: Default::default(),
        role: None,
    };
    let s = Schema {
        name: "real".into(),
        preamble: None,
        modules: vec![module("system", SYSTEM), module("doc", DOC)],
    };
    s.check().unwrap();
    s
}

#[test]
fn a_leading_module_plus_free_text_reproduces_exact_logits() {
    let model = common::smollm2();
    let d = decoder();
    let schema = schema();
    let alone = EncodeOptions {
        encoding: Encoding::Alone,
        chat: None,
    };
    let t = TokenizedSchema::new(&schema, &model.tokenizer, alone).unwrap();
    let module_ids = t.modules[0].stored_ids();
    let q_ids = model.tokenizer.encode(QUESTION).unwrap().ids;
    let ids: Vec<u32> = module_ids.iter().chain(&q_ids).copied().collect();
    let n = ids.len();
    let positions: Vec<usize> = (0..n).collect();
    let (want, _) = exact(&ids, &positions);
    // The module encoded on its own (f32, before storage), then the question.
    let encoded = encode_module(d, &t, &t.modules[0], None).unwrap();
    let m = module_ids.len();
    let mut kv = d.kv_cache(n);
    let w = kv.width;
    for (dst, src) in kv.layers.iter_mut().zip(&encoded.layers) {
        dst.k[..m * w].copy_from_slice(&src.k);
        dst.v[..m * w].copy_from_slice(&src.v);
    }
    let computed: Vec<usize> = (m..n).collect();
    let got = last_logits_over(&ids, &positions, &computed, &mut kv);
    let diff = max_diff(&got, &want);
    assert!(diff <= 1e-4, "logits differ by {diff}");
}

#[test]
fn a_module_rotated_from_offset_0_to_p_equals_it_encoded_at_p() {
    let model = common::smollm2();
    let d = decoder();
    let ids = model.tokenizer.encode(DOC).unwrap().ids;
    let n = ids.len();
    let at0: Vec<usize> = (0..n).collect();
    let p = 300;
    let at_p: Vec<usize> = (p..p + n).collect();
    let (_, mut rotated) = exact(&ids, &at0);
    d.shift_keys(&mut rotated, 0..n, (&at0, &at_p));
    let (_, want) = exact(&ids, &at_p);
    for (l, (a, b)) in rotated.layers.iter().zip(&want.layers).enumerate() {
        let scale = b.k.iter().fold(0f32, |m, x| m.max(x.abs()));
        // Keys: the same rotation up to f32 rounding of the angle tables and
        // of the layer's own arithmetic (attention sees relative positions).
        let dk = max_diff(&a.k, &b.k);
        assert!(
            dk <= 2e-3 * scale.max(1.0),
            "layer {l}: keys differ by {dk} (max |k| {scale})"
        );
        let dv = max_diff(&a.v, &b.v);
        assert!(dv <= 2e-3, "layer {l}: values differ by {dv}");
    }
}

#[test]
fn the_store_round_trips_bit_exactly_and_full_selection_is_exact() {
    let model = common::smollm2();
    let d = decoder();
    let schema = schema();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("store");
    let chat = BuildOptions {
        encoding: Encoding::Prefixed,
        chat: true,
    };
    build_store(
        model,
        &schema,
        &out,
        chat,
        &mut |_, _| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    let store = ModuleStore::open(&out, &ModelIdentity::of(model).unwrap()).unwrap();
    store.verify().unwrap();
    // Round trip: what loads is exactly the f16 rounding of the encoding:
    // the preamble once, every module after it.
    let t = store.tokenized();
    let preamble = encode_preamble(d, &t.preamble).unwrap();
    let same = |a: &KvCache, b: &KvCache| {
        for (a, b) in a.layers.iter().zip(&b.layers) {
            for (x, y) in a.k.iter().chain(&a.v).zip(b.k.iter().chain(&b.v)) {
                assert_eq!(f16::from_f32(*x).to_f32().to_bits(), y.to_bits());
            }
        }
    };
    let mut loaded = d.kv_cache(t.preamble.len());
    store
        .load_rows(Block::Preamble, 0..t.preamble.len(), &mut loaded, 0)
        .unwrap();
    same(&preamble, &loaded);
    for (i, module) in t.modules.iter().enumerate() {
        let encoded = encode_module(d, t, module, Some(&preamble)).unwrap();
        let mut loaded = d.kv_cache(module.rows);
        store
            .load_rows(Block::Module(i), 0..module.rows, &mut loaded, 0)
            .unwrap();
        same(&encoded, &loaded);
    }
    let prompt = PromptSpec {
        modules: vec!["doc".into(), "system".into()],
        text: QUESTION.into(),
        ..PromptSpec::default()
    };
    prompt.check(&schema).unwrap();
    let options = LayoutOptions {
        positions: Positions::Contiguous,
        chat: Some(d.chat()),
        max_positions: d.shape().max_positions,
    };
    let layout = Layout::new(store.tokenized(), &prompt, &model.tokenizer, options).unwrap();
    let want = prefill::exact(d, &layout, &[]).unwrap();
    let full = prefill::modular(d, &store, &layout, Recovery::Select(100.0), &[]).unwrap();
    let diff = max_diff(&full.state.logits, &want.state.logits);
    assert!(diff <= 1e-4, "select:100 differs from exact by {diff}");
    // Question-aware recomputation of every cached token, and of every
    // module, is exact too.
    for recovery in [
        Recovery::Probe {
            percent: 100.0,
            layers: 0,
        },
        Recovery::ProbeModules(3),
    ] {
        let run = prefill::modular(d, &store, &layout, recovery, &[]).unwrap();
        let diff = max_diff(&run.state.logits, &want.state.logits);
        assert!(diff <= 1e-4, "{recovery} differs from exact by {diff}");
        assert_eq!(run.recomputed_rows, layout.cached_rows());
    }
    // Rescaling at T = S = 1 changes nothing, bit for bit; APE's default does.
    let plain = prefill::modular(d, &store, &layout, Recovery::None, &[]).unwrap();
    let rescaled = |t: f64, s: f64| {
        let setting = Setting {
            recovery: Recovery::None,
            rescale: Some(Rescale {
                temperature: t,
                scale: s,
            }),
        };
        prefill::modular_with(d, &store, &layout, setting, &[]).unwrap()
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&rescaled(1.0, 1.0).state.logits),
        bits(&plain.state.logits)
    );
    assert!(max_diff(&rescaled(0.9, 0.9).state.logits, &plain.state.logits) > 1e-3);
    // Naive reuse of the f16 store: the same answer here, measurably moved.
    let naive = prefill::modular(d, &store, &layout, Recovery::None, &[]).unwrap();
    assert_eq!(argmax(&naive.state.logits), argmax(&want.state.logits));
    assert!(max_diff(&naive.state.logits, &want.state.logits) > 1e-3);
    // The same greedy answer continues both, by the same decode loop.
    let mut a = want.state.clone();
    let mut b = full.state.clone();
    assert_eq!(
        d.greedy(&mut a, 6, None).unwrap(),
        d.greedy(&mut b, 6, None).unwrap()
    );
}

#[test]
fn an_encoder_and_a_foreign_store_are_refused() {
    let model = common::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("store");
    build_store(
        model,
        &schema(),
        &out,
        BuildOptions::default(),
        &mut |_, _| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    let minilm = common::real_model();
    let err = build_store(
        minilm,
        &schema(),
        &dir.path().join("x"),
        BuildOptions::default(),
        &mut |_, _| {},
        &AtomicBool::new(false),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("needs a decoder") && err.contains("bidirectional"),
        "{err}"
    );
    let err = ModuleStore::open(&out, &ModelIdentity::of(minilm).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("was built for model smollm2"), "{err}");
    assert_eq!(err.lines().count(), 1);
}

fn spec(name: &str, text: &str) -> ModuleSpec {
    ModuleSpec {
        name: name.into(),
        text: text.into(),
        union: None,
        params: Default::default(),
        role: None,
    }
}

#[test]
fn a_prefixed_module_after_the_preamble_plus_the_question_reproduces_exact_logits() {
    let model = common::smollm2();
    let d = decoder();
    // A raw prompt with the schema's preamble, and a chat prompt whose
    // preamble is the chat template's header.
    for (preamble, chat) in [
        (Some("Answer from the documents below.\n"), None),
        (None, Some(d.chat())),
    ] {
        let schema = Schema {
            name: "prefixed".into(),
            preamble: preamble.map(str::to_string),
            modules: vec![spec("doc", DOC), spec("other", SYSTEM)],
        };
        schema.check().unwrap();
        let encode = EncodeOptions {
            encoding: Encoding::Prefixed,
            chat,
        };
        let t = TokenizedSchema::new(&schema, &model.tokenizer, encode).unwrap();
        let p = t.preamble.len();
        assert!(p > 0);
        let prompt = PromptSpec {
            modules: vec!["doc".into()],
            text: QUESTION.into(),
            ..PromptSpec::default()
        };
        let options = LayoutOptions {
            positions: Positions::Contiguous,
            chat,
            max_positions: d.shape().max_positions,
        };
        let layout = Layout::new(&t, &prompt, &model.tokenizer, options).unwrap();
        let rows = t.modules[0].rows;
        assert_eq!(layout.exact_rows(), (0..p + rows).collect::<Vec<_>>());
        let want = prefill::exact(d, &layout, &[]).unwrap().state.logits;
        // The preamble and the module as the store encodes them (f32, before
        // storage), then the question computed over them.
        let pre = encode_preamble(d, &t.preamble).unwrap();
        let module = encode_module(d, &t, &t.modules[0], Some(&pre)).unwrap();
        let n = layout.len();
        let mut kv = d.kv_cache(n);
        let w = kv.width;
        for (l, dst) in kv.layers.iter_mut().enumerate() {
            dst.k[..p * w].copy_from_slice(&pre.layers[l].k);
            dst.v[..p * w].copy_from_slice(&pre.layers[l].v);
            dst.k[p * w..(p + rows) * w].copy_from_slice(&module.layers[l].k);
            dst.v[p * w..(p + rows) * w].copy_from_slice(&module.layers[l].v);
        }
        let got = last_logits_over(
            &layout.ids,
            &layout.positions,
            &layout.fresh_rows(),
            &mut kv,
        );
        let diff = max_diff(&got, &want);
        assert!(
            diff <= 1e-4,
            "chat {}: logits differ by {diff}",
            chat.is_some()
        );
    }
}

#[test]
fn a_store_built_for_chat_refuses_raw_prompts_and_back() {
    let model = common::smollm2();
    let d = decoder();
    let t = TokenizedSchema::new(
        &schema(),
        &model.tokenizer,
        EncodeOptions {
            encoding: Encoding::Prefixed,
            chat: Some(d.chat()),
        },
    )
    .unwrap();
    let prompt = PromptSpec {
        modules: vec!["doc".into()],
        text: QUESTION.into(),
        ..PromptSpec::default()
    };
    let options = LayoutOptions {
        positions: Positions::Contiguous,
        chat: None,
        max_positions: d.shape().max_positions,
    };
    let err = Layout::new(&t, &prompt, &model.tokenizer, options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("built for chat prompts") && err.contains("--chat"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    let raw = TokenizedSchema::new(
        &schema(),
        &model.tokenizer,
        EncodeOptions {
            encoding: Encoding::Prefixed,
            chat: None,
        },
    )
    .unwrap();
    let chat = LayoutOptions {
        chat: Some(d.chat()),
        ..options
    };
    let err = Layout::new(&raw, &prompt, &model.tokenizer, chat)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("built for raw prompts") && err.contains("without --chat"),
        "{err}"
    );
}
