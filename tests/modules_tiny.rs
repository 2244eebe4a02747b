//! Fast tests of row-wise prefill and modular reuse on a tiny random GQA
//! Llama: exactness of every special case, rotation, masks and gaps, the
//! module store's round trip and refusals.

mod common;

use common::max_diff;

use std::sync::atomic::AtomicBool;

use attncache::model::llama::{LlamaDecoder, PromptKv, RowPass, Selection};
use attncache::model::{Model, StaticPlan};
use attncache::modules::layout::Block;
use attncache::modules::{
    BuildOptions, EncodeOptions, Encoding, Layout, LayoutOptions, ModuleStore, Positions,
    PromptSpec, Recovery, Schema, TokenizedSchema, build_store, prefill,
};
use attncache::storage::ModelIdentity;
use candle_core::Tensor;
use common::last_logits;
use common::tiny_llama::{HEADS, LAYERS, tiny_llama};

fn decoder(model: &Model) -> &LlamaDecoder {
    model.decoder().unwrap()
}

fn ids(model: &Model, text: &str) -> Vec<u32> {
    model.tokenizer.encode(text).unwrap().ids
}

fn logits_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Last-row logits of a row-wise pass with every row computed.
fn rows_logits(d: &LlamaDecoder, ids: &[u32], positions: &[usize]) -> Vec<f32> {
    let n = ids.len();
    let computed: Vec<usize> = (0..n).collect();
    let mut kv = PromptKv::Host(d.kv_cache(n));
    let out = d
        .forward_rows(
            RowPass {
                ids,
                positions,
                computed: &computed,
                select: None,
                capture: &[],
            },
            &mut kv,
        )
        .unwrap();
    logits_vec(&d.logits_of_rows(&out, &[n - 1]).unwrap())
}

#[test]
fn every_row_computed_equals_the_exact_forward() {
    let (_dir, model) = tiny_llama();
    let d = decoder(&model);
    for text in [
        "the movie was great",
        "a plot and a film is not fun and bad",
    ] {
        let t = model.tokenizer.encode(text).unwrap();
        let want = logits_vec(&last_logits(&model, &t, StaticPlan::exact(LAYERS, HEADS)));
        let positions: Vec<usize> = (0..t.ids.len()).collect();
        let got = rows_logits(d, &t.ids, &positions);
        assert!(max_diff(&got, &want) < 1e-5, "{text}");
    }
}

#[test]
fn given_rows_from_an_exact_pass_and_full_selection_are_exact() {
    let (_dir, model) = tiny_llama();
    let d = decoder(&model);
    let ids = ids(&model, "the movie was great and the plot is not bad");
    let n = ids.len();
    let positions: Vec<usize> = (0..n).collect();
    let all: Vec<usize> = (0..n).collect();
    let mut exact_kv = PromptKv::Host(d.kv_cache(n));
    let pass = RowPass {
        ids: &ids,
        positions: &positions,
        computed: &all,
        select: None,
        capture: &[],
    };
    let exact = d.forward_rows(pass, &mut exact_kv).unwrap();
    let want = logits_vec(&d.logits_of_rows(&exact, &[n - 1]).unwrap());
    // A prefix cache: the first 6 rows given.
    let tail: Vec<usize> = (6..n).collect();
    let mut kv = exact_kv.clone();
    let out = d
        .forward_rows(
            RowPass {
                computed: &tail,
                ..pass
            },
            &mut kv,
        )
        .unwrap();
    let got = logits_vec(&d.logits_of_rows(&out, &[n - 1]).unwrap());
    assert!(max_diff(&got, &want) < 1e-5);
    // Given rows that are wrong everywhere but fully reselected: exact again.
    let mut kv = PromptKv::Host(d.kv_cache(n));
    let last = [n - 1];
    let out = d
        .forward_rows(
            RowPass {
                computed: &last,
                select: Some(Selection {
                    at: 1,
                    fraction: 1.0,
                }),
                ..pass
            },
            &mut kv,
        )
        .unwrap();
    assert_eq!(out.selected, (0..n - 1).collect::<Vec<_>>());
    let got = logits_vec(&d.logits_of_rows(&out, &[n - 1]).unwrap());
    assert!(max_diff(&got, &want) < 1e-5);
    // Selecting nothing keeps the given (zero) rows: a different answer.
    let mut kv = PromptKv::Host(d.kv_cache(n));
    let out = d
        .forward_rows(
            RowPass {
                computed: &last,
                select: Some(Selection {
                    at: 1,
                    fraction: 0.0,
                }),
                ..pass
            },
            &mut kv,
        )
        .unwrap();
    assert!(out.selected.is_empty());
    let got = logits_vec(&d.logits_of_rows(&out, &[n - 1]).unwrap());
    assert!(max_diff(&got, &want) > 1e-3);
}

#[test]
fn rotation_masks_and_gaps() {
    let (_dir, model) = tiny_llama();
    let d = decoder(&model);
    let ids = ids(&model, "the film was fun");
    let n = ids.len();
    // Shifting every position by a constant changes nothing (RoPE is relative).
    let at0: Vec<usize> = (0..n).collect();
    let at9: Vec<usize> = (9..9 + n).collect();
    assert!(max_diff(&rows_logits(d, &ids, &at0), &rows_logits(d, &ids, &at9)) < 1e-4);
    // A gap does change it.
    let gapped: Vec<usize> = (0..n).map(|i| if i < 2 { i } else { i + 5 }).collect();
    assert!(max_diff(&rows_logits(d, &ids, &at0), &rows_logits(d, &ids, &gapped)) > 1e-4);
    // Keys encoded at offset 0 and shifted to 9 equal keys encoded at 9.
    let encode = |positions: &[usize]| {
        let mut kv = PromptKv::Host(d.kv_cache(n));
        let all: Vec<usize> = (0..n).collect();
        d.forward_rows(
            RowPass {
                ids: &ids,
                positions,
                computed: &all,
                select: None,
                capture: &[],
            },
            &mut kv,
        )
        .unwrap();
        kv.into_host().unwrap()
    };
    let mut shifted = encode(&at0);
    d.shift_keys(&mut shifted, 0..n, (&at0, &at9));
    let want = encode(&at9);
    for (a, b) in shifted.layers.iter().zip(&want.layers) {
        assert!(max_diff(&a.k, &b.k) < 1e-4);
        assert!(max_diff(&a.v, &b.v) < 1e-5);
    }
    // Causal: a later token never changes an earlier row's keys.
    let mut other = ids.clone();
    *other.last_mut().unwrap() = ids[1];
    let mut kv = PromptKv::Host(d.kv_cache(n));
    let all: Vec<usize> = (0..n).collect();
    d.forward_rows(
        RowPass {
            ids: &other,
            positions: &at0,
            computed: &all,
            select: None,
            capture: &[],
        },
        &mut kv,
    )
    .unwrap();
    let kv = kv.into_host().unwrap();
    let base = encode(&at0);
    let w = d.kv_width();
    for (a, b) in kv.layers.iter().zip(&base.layers) {
        assert!(max_diff(&a.k[..(n - 1) * w], &b.k[..(n - 1) * w]) < 1e-6);
    }
}

#[test]
fn greedy_decoding_continues_any_prefill_the_same_way() {
    let (_dir, model) = tiny_llama();
    let d = decoder(&model);
    let ids = ids(&model, "the movie was great and the plot");
    let n = ids.len();
    let positions: Vec<usize> = (0..n).collect();
    let all: Vec<usize> = (0..n).collect();
    let mut kv = PromptKv::Host(d.kv_cache(n));
    let out = d
        .forward_rows(
            RowPass {
                ids: &ids,
                positions: &positions,
                computed: &all,
                select: None,
                capture: &[],
            },
            &mut kv,
        )
        .unwrap();
    let logits = logits_vec(&d.logits_of_rows(&out, &[n - 1]).unwrap());
    let mut state = attncache::model::llama::Prefilled {
        kv,
        ids: ids.clone(),
        positions,
        logits,
    };
    let tokens = d.greedy(&mut state, 4, None).unwrap();
    assert_eq!(tokens.len(), 4);
    // The prompt is left as it was.
    assert_eq!(state.ids, ids);
    assert_eq!(state.kv.rows(), n);
    // The same continuation recomputed from scratch, one exact pass per step.
    let mut seq = ids.clone();
    for &t in &tokens {
        let p: Vec<usize> = (0..seq.len()).collect();
        assert_eq!(
            attncache::model::llama::argmax(&rows_logits(d, &seq, &p)),
            t
        );
        seq.push(t);
    }
    // Its teacher-forced NLL is the sum of the greedy steps' −log p.
    let nll = d.continuation_nll(&mut state, &tokens).unwrap();
    assert_eq!(state.ids, ids);
    assert!(nll.is_finite() && nll >= 0.0);
}

fn write_schema(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("schema.toml");
    std::fs::write(
        &path,
        r#"
        [[module]]
        name = "intro"
        text = "the movie was great"
        [[module]]
        name = "doc-a"
        text = "a plot and a film {who} is fun"
        union = "docs"
        params = { who = 4 }
        [[module]]
        name = "doc-b"
        text = "the film is not fun"
        union = "docs"
        [[module]]
        name = "outro"
        text = "the plot was bad"
        "#,
    )
    .unwrap();
    path
}

#[test]
fn module_store_round_trip_positions_and_refusals() {
    let (_dir, model) = tiny_llama();
    let d = decoder(&model);
    let tmp = tempfile::tempdir().unwrap();
    let schema = Schema::load(&write_schema(tmp.path())).unwrap();
    let out = tmp.path().join("store");
    let cancel = AtomicBool::new(false);
    // The paper's encoding: every module at its schema positions.
    let alone = BuildOptions {
        encoding: Encoding::Alone,
        chat: false,
    };
    build_store(&model, &schema, &out, alone, &mut |_, _| {}, &cancel).unwrap();
    let identity = ModelIdentity::of(&model).unwrap();
    let store = ModuleStore::open(&out, &identity).unwrap();
    store.verify().unwrap();
    let t = store.tokenized();
    // Union members share an offset; the union reserves its longest member.
    assert_eq!(t.modules[1].offset, t.modules[2].offset);
    assert_eq!(
        t.modules[3].offset,
        t.modules[1].offset + t.modules[1].span.max(t.modules[2].span)
    );
    let encode = EncodeOptions {
        encoding: Encoding::Alone,
        chat: None,
    };
    assert_eq!(
        *t,
        TokenizedSchema::new(&schema, &model.tokenizer, encode).unwrap()
    );
    let prompt = PromptSpec::from_arg(
        r#"{"modules": ["outro", "doc-a", "intro"], "args": {"doc-a": {"who": "a b"}}, "text": "was it fun"}"#,
    )
    .unwrap();
    prompt.check(&schema).unwrap();
    let options = |positions| LayoutOptions {
        positions,
        chat: None,
        max_positions: 64,
    };
    // Contiguous: prompt order, positions 0..n; select:100 is exact.
    let layout = Layout::new(t, &prompt, &model.tokenizer, options(Positions::Contiguous)).unwrap();
    assert_eq!(layout.positions, (0..layout.len()).collect::<Vec<_>>());
    assert_eq!(layout.spans[0].label, "outro");
    let exact = prefill::exact(d, &layout, &[]).unwrap();
    let full = prefill::modular(d, &store, &layout, Recovery::Select(100.0), &[]).unwrap();
    assert!(max_diff(&full.state.logits, &exact.state.logits) < 1e-4);
    assert_eq!(full.recomputed_rows, layout.cached_rows());
    // Naive reuse differs, and recomputing the module starts moves toward exact.
    let naive = prefill::modular(d, &store, &layout, Recovery::None, &[]).unwrap();
    assert!(max_diff(&naive.state.logits, &exact.state.logits) > 1e-4);
    assert_eq!(naive.recomputed_rows, 0);
    let first = prefill::modular(d, &store, &layout, Recovery::First(2), &[]).unwrap();
    assert_eq!(
        first.recomputed_rows, 4,
        "2 rows of each module after the first"
    );
    // The leading module alone plus free text is exact up to f16 storage.
    let lead = PromptSpec::from_arg(r#"{"modules": ["intro"], "text": "a film"}"#).unwrap();
    let lead_layout =
        Layout::new(t, &lead, &model.tokenizer, options(Positions::Contiguous)).unwrap();
    let a = prefill::modular(d, &store, &lead_layout, Recovery::None, &[]).unwrap();
    let b = prefill::exact(d, &lead_layout, &[]).unwrap();
    assert!(max_diff(&a.state.logits, &b.state.logits) < 2e-2);
    // Schema: schema order, gaps where modules and reservations are unused,
    // no rotation (stored positions kept), the question after the schema.
    let layout = Layout::new(t, &prompt, &model.tokenizer, options(Positions::Schema)).unwrap();
    assert_eq!(layout.spans[0].label, "intro");
    for (r, s) in layout.stored.iter().enumerate() {
        if let Some(s) = s {
            assert_eq!(layout.positions[r], s.stored);
        }
    }
    assert_eq!(layout.positions[layout.question_rows().start], t.end);
    assert!(prefill::modular(d, &store, &layout, Recovery::None, &[]).is_ok());
    // Refusals, one line each.
    let refuse = |record: &str, want: &str| {
        let p = PromptSpec::from_arg(record).unwrap();
        let err = p
            .check(&schema)
            .and_then(|_| {
                Layout::new(t, &p, &model.tokenizer, options(Positions::Contiguous)).map(|_| ())
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{record}: {err}");
        assert_eq!(err.lines().count(), 1);
    };
    refuse(r#"{"modules": ["nope"], "text": "x"}"#, "unknown module");
    refuse(
        r#"{"modules": ["doc-a", "doc-b"], "text": "x", "args": {"doc-a": {"who": "a"}}}"#,
        "union \"docs\" is used twice",
    );
    refuse(
        r#"{"modules": ["intro", "intro"], "text": "x"}"#,
        "used twice",
    );
    refuse(
        r#"{"modules": ["doc-a"], "text": "x", "args": {"doc-a": {"whom": "a"}}}"#,
        "unknown parameter",
    );
    refuse(
        r#"{"modules": ["doc-a"], "text": "x", "args": {"doc-a": {"who": "the movie was great"}}}"#,
        "more than the 4 it reserves",
    );
    refuse(r#"{"modules": ["doc-a"], "text": "x"}"#, "needs a value");
    refuse(
        &format!(
            r#"{{"modules": ["intro"], "text": "{}"}}"#,
            "the film was fun ".repeat(20)
        ),
        "context of 64",
    );
    // A changed schema, a truncated store, a foreign directory.
    let mut changed = schema.clone();
    changed.modules[0].text.push_str(" again");
    let err = store
        .check_schema(&changed, std::path::Path::new("s.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("was built from schema") && err.contains("s.toml"),
        "{err}"
    );
    let kv = out.join("kv.bin");
    let len = std::fs::metadata(&kv).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&kv).unwrap();
    f.set_len(len - 2).unwrap();
    let err = ModuleStore::open(&out, &identity).unwrap_err().to_string();
    assert!(err.contains("corrupt") && err.contains("kv.bin"), "{err}");
    let err = ModuleStore::open(tmp.path(), &identity)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an attncache module store"), "{err}");
}

#[test]
fn a_cancelled_build_leaves_the_old_store() {
    let (_dir, model) = tiny_llama();
    let tmp = tempfile::tempdir().unwrap();
    let schema = Schema::load(&write_schema(tmp.path())).unwrap();
    let out = tmp.path().join("store");
    build_store(
        &model,
        &schema,
        &out,
        BuildOptions::default(),
        &mut |_, _| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    let before = std::fs::read(out.join("manifest.json")).unwrap();
    let err = build_store(
        &model,
        &schema,
        &out,
        BuildOptions::default(),
        &mut |_, _| {},
        &AtomicBool::new(true),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cancelled"), "{err}");
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);
    let leftovers = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(leftovers, 0, "no staging directory left behind");
}

/// A schema of four plain modules after a preamble, for the prefixed tests.
fn write_library(dir: &std::path::Path, modules: usize) -> std::path::PathBuf {
    let path = dir.join("library.toml");
    let words = [
        "the movie was great",
        "a plot and a film is fun",
        "the film is not fun",
        "the plot was bad and the movie is not great",
    ];
    let mut text = String::from("preamble = \"a film\"\n");
    for i in 0..modules {
        text.push_str(&format!(
            "[[module]]\nname = \"m{i}\"\ntext = \"{}\"\n",
            words[i % words.len()]
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn contiguous(max_positions: usize) -> LayoutOptions<'static> {
    LayoutOptions {
        positions: Positions::Contiguous,
        chat: None,
        max_positions,
    }
}

#[test]
fn the_probe_reads_the_questions_exact_attention_and_picks_the_heaviest_modules() {
    let (_dir, model) = tiny_llama();
    let d = decoder(&model);
    let tmp = tempfile::tempdir().unwrap();
    let schema = Schema::load(&write_library(tmp.path(), 4)).unwrap();
    let out = tmp.path().join("store");
    let cancel = AtomicBool::new(false);
    build_store(
        &model,
        &schema,
        &out,
        BuildOptions::default(),
        &mut |_, _| {},
        &cancel,
    )
    .unwrap();
    let store = ModuleStore::open(&out, &ModelIdentity::of(&model).unwrap()).unwrap();
    let t = store.tokenized();
    assert_eq!(t.encoding, Encoding::Prefixed);
    assert_eq!(t.preamble, ids(&model, "a film"));
    let prompt =
        PromptSpec::from_arg(r#"{"modules": ["m2", "m0", "m3", "m1"], "text": "was it fun"}"#)
            .unwrap();
    let layout = Layout::new(t, &prompt, &model.tokenizer, contiguous(64)).unwrap();
    let question: Vec<usize> = layout.question_rows().collect();
    // The question's exact attention over the loaded cache: naive reuse with
    // the question's maps captured (every head, every layer).
    let naive = prefill::modular(d, &store, &layout, Recovery::None, &question).unwrap();
    let n = layout.len();
    let mut want = vec![0f32; n];
    for layer in &naive.maps {
        for map in layer {
            for row in map.chunks_exact(n) {
                want.iter_mut().zip(row).for_each(|(w, a)| *w += a);
            }
        }
    }
    // The probe over the same cache.
    let mut kv = d.kv_cache(n);
    for (block, rows) in layout.block_runs() {
        let first = layout.stored[rows[0]].unwrap().row;
        store
            .load_rows(block, first..first + rows.len(), &mut kv, rows[0])
            .unwrap();
    }
    let from: Vec<usize> = (0..n)
        .map(|r| layout.stored[r].map_or(layout.positions[r], |s| s.stored))
        .collect();
    d.shift_keys(&mut kv, 0..n, (&from, &layout.positions));
    let fresh = layout.fresh_rows();
    let probe = |kv: attncache::model::llama::KvCache, layers: usize| {
        let mut kv = PromptKv::Host(kv);
        let pass = RowPass {
            ids: &layout.ids,
            positions: &layout.positions,
            computed: &fresh,
            select: None,
            capture: &question,
        };
        d.probe_rows(pass, &mut kv, layers).unwrap()
    };
    let mass = probe(kv.clone(), 0);
    assert!(max_diff(&mass, &want) < 1e-4, "{mass:?} vs {want:?}");
    // Probing fewer layers reads less.
    let one = probe(kv, 1);
    let total = |v: &[f32]| v.iter().sum::<f32>();
    assert!(total(&one) < total(&mass));
    // probe-modules:1 recomputes exactly the module (after the first, which
    // follows the preamble and is exact) with the most attention mass.
    let runs = layout.module_runs();
    let heaviest = runs[1..]
        .iter()
        .max_by(|a, b| {
            let m = |rows: &[usize]| rows.iter().map(|&r| want[r]).sum::<f32>();
            m(&a.1).total_cmp(&m(&b.1))
        })
        .unwrap();
    let name = &t.modules[heaviest.0].name;
    let one_module = prefill::modular(d, &store, &layout, Recovery::ProbeModules(1), &[]).unwrap();
    let recomputed: Vec<&str> = one_module
        .decisions
        .iter()
        .filter(|d| d.recomputed > 0)
        .map(|d| d.label.as_str())
        .collect();
    assert_eq!(recomputed, vec![name.as_str()]);
    assert_eq!(one_module.recomputed_rows, heaviest.1.len());
    // probe:R recomputes the R % of cached rows with the most mass, never an
    // exact row while others remain.
    let exact = layout.exact_rows();
    let r = prefill::modular(
        d,
        &store,
        &layout,
        Recovery::Probe {
            percent: 20.0,
            layers: 0,
        },
        &[],
    )
    .unwrap();
    let take = (0.2 * layout.cached_rows() as f64).ceil() as usize;
    assert_eq!(r.recomputed_rows, take);
    let chosen = prefill::question_aware_choice(
        &layout,
        &mass,
        Recovery::Probe {
            percent: 20.0,
            layers: 0,
        },
    );
    assert!(chosen.iter().all(|r| exact.binary_search(r).is_err()));
    let lightest_chosen = chosen
        .iter()
        .map(|&r| mass[r])
        .fold(f32::INFINITY, f32::min);
    let heaviest_left = (0..n)
        .filter(|r| layout.stored[*r].is_some() && !chosen.contains(r) && !exact.contains(r))
        .map(|r| mass[r])
        .fold(0.0, f32::max);
    assert!(lightest_chosen >= heaviest_left);
    // Everything recomputed is exact.
    let full = prefill::modular(
        d,
        &store,
        &layout,
        Recovery::Probe {
            percent: 100.0,
            layers: 0,
        },
        &[],
    )
    .unwrap();
    let want_logits = prefill::exact(d, &layout, &[]).unwrap().state.logits;
    assert!(max_diff(&full.state.logits, &want_logits) < 1e-4);
}

#[test]
fn a_prefixed_library_may_outgrow_the_context_and_rebuilds_only_what_changed() {
    let (_dir, model) = tiny_llama();
    let tmp = tempfile::tempdir().unwrap();
    // Twelve modules span more than the tiny model's 64 positions.
    let path = write_library(tmp.path(), 12);
    let schema = Schema::load(&path).unwrap();
    let out = tmp.path().join("store");
    let cancel = AtomicBool::new(false);
    let alone = BuildOptions {
        encoding: Encoding::Alone,
        chat: false,
    };
    let err = build_store(&model, &schema, &out, alone, &mut |_, _| {}, &cancel)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("past the model's context of 64") && err.contains("--encode prefixed"),
        "{err}"
    );
    let first = build_store(
        &model,
        &schema,
        &out,
        BuildOptions::default(),
        &mut |_, _| {},
        &cancel,
    )
    .unwrap();
    assert_eq!((first.encoded, first.reused), (12, 0));
    let identity = ModelIdentity::of(&model).unwrap();
    let before = ModuleStore::open(&out, &identity).unwrap();
    assert!(before.tokenized().end > 64);
    let load = |store: &ModuleStore, m: usize| {
        let rows = store.tokenized().modules[m].rows;
        let mut kv = decoder(&model).kv_cache(rows);
        store
            .load_rows(Block::Module(m), 0..rows, &mut kv, 0)
            .unwrap();
        kv.layers
            .iter()
            .flat_map(|l| l.k.iter().chain(&l.v).map(|x| x.to_bits()))
            .collect::<Vec<u32>>()
    };
    let kept: Vec<Vec<u32>> = (0..12).map(|m| load(&before, m)).collect();
    drop(before);
    // One module's text changes: only it is encoded again.
    let mut edited = schema.clone();
    edited.modules[5].text = "the film was bad".into();
    let second = build_store(
        &model,
        &edited,
        &out,
        BuildOptions::default(),
        &mut |_, _| {},
        &cancel,
    )
    .unwrap();
    assert_eq!((second.encoded, second.reused), (1, 11));
    let after = ModuleStore::open(&out, &identity).unwrap();
    after.verify().unwrap();
    for (m, want) in kept.iter().enumerate() {
        if m != 5 {
            assert_eq!(&load(&after, m), want, "module {m} changed");
        }
    }
    // A changed preamble changes every module's key.
    drop(after);
    edited.preamble = Some("the plot".into());
    let third = build_store(
        &model,
        &edited,
        &out,
        BuildOptions::default(),
        &mut |_, _| {},
        &cancel,
    )
    .unwrap();
    assert_eq!((third.encoded, third.reused), (12, 0));
    // A prompt must still fit the context.
    let store = ModuleStore::open(&out, &identity).unwrap();
    let many: Vec<String> = (0..12).map(|i| format!("\"m{i}\"")).collect();
    let p = PromptSpec::from_arg(&format!(
        r#"{{"modules": [{}], "text": "x"}}"#,
        many.join(", ")
    ))
    .unwrap();
    let err = Layout::new(store.tokenized(), &p, &model.tokenizer, contiguous(64))
        .unwrap_err()
        .to_string();
    assert!(err.contains("context of 64"), "{err}");
}
