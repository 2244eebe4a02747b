//! The attention cache on the real model: database round trip, identical
//! queries, strict thresholds, and refusal of damaged or foreign databases.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use attncache::cache::{BuildOptions, Database, DbError, HeadType, ModelIdentity, Policy, build};
use attncache::data::{Corpus, CorpusOptions, CorpusSpec};
use attncache::engine::{Engine, Mode};
use attncache::model::Model;
use half::f16;

fn corpus(limit: usize) -> Corpus {
    CorpusSpec::parse("rt:db")
        .unwrap()
        .load(&CorpusOptions::default())
        .unwrap()
        .limited(Some(limit))
}

fn build_db(model: &Model, corpus: &Corpus, out: &Path) {
    build(
        model,
        corpus,
        out,
        BuildOptions::default(),
        &mut |_, _| {},
        &AtomicBool::new(false),
    )
    .unwrap();
}

fn engine(dir: &Path, policy: Policy) -> Engine {
    let model = Arc::new(common::real_model().clone());
    let db = Database::open(dir, &ModelIdentity::of(&model).unwrap()).unwrap();
    Engine::new(model, Arc::new(db), policy).unwrap()
}

#[test]
fn a_database_round_trips_through_disk_bit_exactly() {
    let model = common::real_model();
    let corpus = corpus(30);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db");
    build_db(model, &corpus, &out);
    let db = Database::open(&out, &ModelIdentity::of(model).unwrap()).unwrap();
    assert_eq!(db.entries().len(), 30);
    db.verify().unwrap();
    // Head types are classified with the database: layer 0 head 2's map is
    // the same for any input of a length.
    let types = db.head_types().expect("built with head types");
    let l0h2 = types.get(0, 2).unwrap();
    assert_eq!(l0h2.kind, HeadType::Positional, "{l0h2:?}");
    assert!(l0h2.positional.unwrap() >= 0.95);
    let positional = types
        .heads
        .iter()
        .flatten()
        .filter(|p| p.kind == HeadType::Positional)
        .count();
    assert!(positional < 72 / 2, "{positional} of 72 heads positional");
    for p in types.heads.iter().flatten() {
        for v in [p.previous_token, p.first_sink, p.last_sink, p.entropy] {
            assert!((0.0..=1.0 + 1e-4).contains(&v), "{p:?}");
        }
    }
    let s = *model.shape();
    for (i, item) in corpus.items.iter().enumerate().step_by(7) {
        let entry = &db.entries()[i];
        assert_eq!(entry.text, item.text);
        assert_eq!(entry.label, item.label);
        let tokenized = model.tokenize(&[item.text.as_str()]).unwrap();
        assert_eq!(entry.tokens, tokenized[0].ids.len());
        let maps = common::capture_all(model, &tokenized[0]);
        assert_eq!(maps.len() * maps[0].len(), s.layers * s.heads);
        for (l, layer) in maps.iter().enumerate() {
            for (h, map) in layer.iter().enumerate() {
                let stored = db.map_values(i, l, h).unwrap();
                let expected: Vec<f32> = map
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .into_iter()
                    .map(|x| f16::from_f32(x).to_f32())
                    .collect();
                assert_eq!(stored, expected, "entry {i} layer {l} head {h}");
            }
        }
    }
}

#[test]
fn identical_queries_hit_everywhere_and_others_follow_the_thresholds() {
    let model = common::real_model();
    let corpus = corpus(30);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db");
    build_db(model, &corpus, &out);
    let strict = engine(&out, Policy::strict(model.shape()));

    // A query identical to an entry hits in every head and reproduces the
    // exact output up to the f16 storage of the maps.
    let text = &corpus.items[5].text;
    let cached = strict.run(text, Mode::Shadow).unwrap();
    assert_eq!(cached.trace.hit_rate, 1.0);
    for layer in &cached.trace.layers {
        assert_eq!(layer.neighbour.as_ref().unwrap().entry, 5);
        assert!(layer.heads.iter().all(|h| h.similarity.unwrap() > 0.999));
    }
    let exact = strict.run(text, Mode::Exact).unwrap();
    let diff = common::max_abs_diff(&exact.hidden, &cached.hidden);
    assert!(
        diff <= 2e-3,
        "identical query: max |cached − exact| = {diff}"
    );
    assert!(cached.trace.fidelity.unwrap() > 0.99999);

    // With the strictest thresholds nothing else is reused and the output is
    // the exact output, bit for bit.
    let other = "An unseen sentence about a film that is not in the database.";
    let run = strict.run(other, Mode::Cached).unwrap();
    assert_eq!(run.trace.hit_rate, 0.0);
    // No head can hit, so no layer searched; shadow mode still shows the
    // neighbours, found outside the timed run.
    assert_eq!(run.trace.timings.search, 0.0);
    assert!(run.trace.layers.iter().all(|l| l.neighbour.is_none()));
    let shadow = strict.run(other, Mode::Shadow).unwrap();
    assert_eq!(shadow.trace.timings.search, 0.0);
    assert!(shadow.trace.layers.iter().any(|l| l.neighbour.is_some()));
    // Both sides are timed alike, tokenisation included, and with nothing
    // reused they compute the same output.
    let exact_side = shadow.trace.exact_timings.unwrap();
    assert!(exact_side.tokenize > 0.0 && shadow.trace.timings.tokenize > 0.0);
    assert!(exact_side.total >= exact_side.tokenize + exact_side.attention);
    assert_eq!(shadow.exact_embedding.as_ref(), Some(&shadow.embedding));
    let exact = strict.run(other, Mode::Exact).unwrap();
    assert_eq!(common::max_abs_diff(&exact.hidden, &run.hidden), 0.0);

    // The loosest thresholds reuse every head whenever an entry of the same
    // length exists, and nothing otherwise.
    let loose = engine(&out, Policy::global(model.shape(), 2.0));
    let lengths: Vec<usize> = corpus
        .items
        .iter()
        .map(|i| model.tokenize(&[i.text.as_str()]).unwrap()[0].ids.len())
        .collect();
    let mut matched = 0;
    for words in 3..40 {
        let text = vec!["film"; words].join(" ");
        let run = loose.run(&text, Mode::Cached).unwrap();
        let has_entry = lengths.contains(&run.trace.tokens.len());
        matched += usize::from(has_entry);
        assert_eq!(
            run.trace.hit_rate,
            if has_entry { 1.0 } else { 0.0 },
            "{} tokens",
            run.trace.tokens.len()
        );
    }
    assert!(matched > 0, "no test text matched an entry length");
    let query = &corpus.items[0].text;

    // The paper's rule: one look-up, every layer uses the same neighbour.
    let paper = engine(&out, Policy::paper(model.shape(), 2.0));
    let run = paper.run(query, Mode::Cached).unwrap();
    let first = run.trace.layers[0].neighbour.as_ref().unwrap().entry;
    assert!(
        run.trace
            .layers
            .iter()
            .all(|l| l.neighbour.as_ref().unwrap().entry == first)
    );
}

/// Builds a small database, lets `spoil` damage it, and returns the open error.
fn open_error(spoil: impl FnOnce(&Path)) -> DbError {
    let model = common::real_model();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db");
    build_db(model, &corpus(6), &out);
    spoil(&out);
    let err = Database::open(&out, &ModelIdentity::of(model).unwrap()).unwrap_err();
    assert!(!err.to_string().contains('\n'), "not one line: {err}");
    err
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(path, serde_json::to_vec(&m).unwrap()).unwrap();
}

#[test]
fn damaged_and_foreign_databases_are_refused() {
    let err = open_error(|d| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join("maps.bin"))
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - 100).unwrap();
    });
    assert!(
        matches!(err, DbError::Corrupt { .. }) && err.to_string().contains("maps.bin has"),
        "{err}"
    );

    let err = open_error(|d| {
        let mut entries = std::fs::read_to_string(d.join("entries.json")).unwrap();
        entries = entries.replacen("\"tokens\":", "\"tokens\": ", 1);
        std::fs::write(d.join("entries.json"), entries).unwrap();
    });
    assert!(err.to_string().contains("entries.json"), "{err}");

    let err = open_error(|d| edit_manifest(d, |m| m["format_version"] = 99.into()));
    assert!(
        matches!(err, DbError::WrongVersion { found: 99, .. }),
        "{err}"
    );

    let err = open_error(|d| std::fs::remove_file(d.join("index.bin")).unwrap());
    assert!(err.to_string().contains("index.bin is missing"), "{err}");

    let err = open_error(|d| std::fs::write(d.join("manifest.json"), "{").unwrap());
    assert!(
        err.to_string().contains("manifest.json is malformed"),
        "{err}"
    );

    // NaN features, with the checksum updated so only the values are wrong.
    let err = open_error(|d| {
        let path = d.join("features.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let sha = attncache::fetch::sha256_file(&path).unwrap();
        edit_manifest(d, |m| m["files"]["features.bin"]["sha256"] = sha.into());
    });
    assert!(err.to_string().contains("NaN"), "{err}");

    // A database of another model: the tiny test model.
    let tiny_dir = tempfile::tempdir().unwrap();
    common::write_tiny_model(tiny_dir.path());
    let tiny = Model::load_path(tiny_dir.path(), &candle_core::Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    build_db(common::real_model(), &corpus(3), &dir.path().join("db"));
    let err =
        Database::open(&dir.path().join("db"), &ModelIdentity::of(&tiny).unwrap()).unwrap_err();
    assert!(matches!(err, DbError::WrongModel { .. }), "{err}");
    assert!(err.to_string().contains("all-minilm-l6-v2"), "{err}");
}

#[test]
fn a_corrupted_map_is_an_error_when_loaded_not_a_wrong_answer() {
    let model = common::real_model();
    let corpus = corpus(4);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db");
    build_db(model, &corpus, &out);
    // Overwrite the first map values of entry 0 with 1.0 (f16 0x3C00).
    let mut bytes = std::fs::read(out.join("maps.bin")).unwrap();
    for b in bytes[..16].chunks_mut(2) {
        b.copy_from_slice(&f16::ONE.to_le_bytes());
    }
    std::fs::write(out.join("maps.bin"), bytes).unwrap();
    let e = engine(&out, Policy::strict(model.shape()));
    let err = e.run(&corpus.items[0].text, Mode::Cached).unwrap_err();
    assert!(format!("{err:#}").contains("is corrupt"), "{err:#}");
    // An exact run is unaffected.
    e.run(&corpus.items[0].text, Mode::Exact).unwrap();
}

#[test]
fn a_cancelled_rebuild_leaves_the_old_database_in_place() {
    let model = common::real_model();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db");
    build_db(model, &corpus(3), &out);
    let before = std::fs::read(out.join("manifest.json")).unwrap();
    let cancel = AtomicBool::new(true);
    let err = build(
        model,
        &corpus(10),
        &out,
        BuildOptions::default(),
        &mut |_, _| {},
        &cancel,
    )
    .unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "temporary files left: {leftovers:?}");
    // A successful rebuild replaces it.
    build_db(model, &corpus(5), &out);
    assert_eq!(Database::open_any(&out).unwrap().entries().len(), 5);
}

#[test]
fn a_projector_database_is_trained_stored_and_used_for_look_ups() {
    let model = common::real_model();
    let corpus = corpus(80);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db");
    let options = BuildOptions {
        feature: attncache::cache::FeatureKind::Projector,
        ..BuildOptions::default()
    };
    build(
        model,
        &corpus,
        &out,
        options,
        &mut |_, _| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    let db = Database::open(&out, &ModelIdentity::of(model).unwrap()).unwrap();
    let m = db.manifest();
    assert_eq!(m.feature_dim, 128);
    let fits = m.projector_fit.as_ref().unwrap();
    assert_eq!(fits.len(), model.shape().layers);
    assert!(fits.iter().all(|f| f.validation_mse.is_finite()));
    // Stored features are the projected, unit-length features of each entry.
    let f = db.features().get(2, 0);
    assert_eq!(f.len(), 128);
    assert!((f.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
    // An identical query is served from its own entry; a loose policy finds
    // same-length neighbours through the projected features.
    let strict = engine(&out, Policy::strict(model.shape()));
    assert_eq!(
        strict
            .run(&corpus.items[7].text, Mode::Cached)
            .unwrap()
            .trace
            .hit_rate,
        1.0
    );
    let loose = engine(&out, Policy::global(model.shape(), 2.0));
    let run = loose
        .run(&corpus.items[7].text.to_uppercase(), Mode::Shadow)
        .unwrap();
    assert_eq!(
        run.trace.layers[3].neighbour.as_ref().unwrap().tokens,
        run.trace.tokens.len()
    );
    // A projector database without its network is refused.
    std::fs::remove_file(out.join("projector.safetensors")).unwrap();
    let err = Database::open(&out, &ModelIdentity::of(model).unwrap()).unwrap_err();
    assert!(err.to_string().contains("projector.safetensors"), "{err}");
}

/// The served look-up (sketch scan, exact re-rank) finds what the exact
/// scan of the full features finds on identical and near-identical queries
/// (a database text, and the same text with one word changed), in every
/// layer, wherever a bucket is large enough for the sketch path to run.
#[test]
fn the_sketch_look_up_finds_the_exact_scans_entry_on_near_queries() {
    use attncache::cache::{LengthPolicy, RERANK, SearchMethod};
    let model = common::real_model();
    let corpus = corpus(400);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db");
    build_db(model, &corpus, &out);
    let db = Database::open(&out, &ModelIdentity::of(model).unwrap()).unwrap();
    let histogram = db.index().length_histogram();
    let mut checked = 0;
    for entry in db.entries() {
        if histogram[&entry.tokens] <= RERANK || !entry.text.contains(" the ") || checked >= 12 {
            continue;
        }
        let near = entry.text.replacen(" the ", " a ", 1);
        for (text, identical) in [(entry.text.as_str(), true), (near.as_str(), false)] {
            let tokenized = model.tokenize(&[text]).unwrap();
            let s = tokenized[0].ids.len();
            if histogram.get(&s).is_none_or(|&n| n <= RERANK) {
                continue;
            }
            for layer in 0..model.shape().layers {
                let input = model.layer_input(&tokenized[0], layer).unwrap();
                let feature = db.query_feature(layer, &input).unwrap();
                let search = |method| {
                    db.search(layer, &feature, s, LengthPolicy::Exact, method)
                        .unwrap()
                };
                let (served, exact) = (
                    search(SearchMethod::Indexed),
                    search(SearchMethod::ExactScan),
                );
                assert_eq!(served, exact, "{text:?} layer {layer}");
                if identical {
                    assert_eq!(served.entry, entry.id, "{text:?} layer {layer}");
                }
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 12,
        "only {checked} entries lie in buckets the sketch serves"
    );
}

/// A length-only head (layer 0 head 2) served from the per-length table
/// reproduces the query's exact map: similarity (1 − mean row total
/// variation) at least 0.99 on every query with an entry of its length,
/// with no look-up at all when it is the only head reused.
#[test]
fn the_per_length_table_reproduces_a_positional_heads_exact_maps() {
    let model = common::real_model();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db");
    build_db(model, &corpus(120), &out);
    let db = Database::open(&out, &ModelIdentity::of(model).unwrap()).unwrap();
    let shape = *model.shape();
    let mut policy = Policy::strict(&shape);
    policy.static_heads = vec![vec![false; shape.heads]; shape.layers];
    policy.static_heads[0][2] = true;
    let engine = Engine::new(Arc::new(model.clone()), Arc::new(db), policy).unwrap();
    let queries = CorpusSpec::parse("rt:test")
        .unwrap()
        .load(&CorpusOptions::default())
        .unwrap()
        .limited(Some(40));
    let mut served = 0;
    for item in &queries.items {
        let run = engine.run(&item.text, Mode::Shadow).unwrap();
        let l0h2 = &run.trace.layers[0].heads[2];
        let others = run.trace.hits();
        if l0h2.hit {
            served += 1;
            assert_eq!(others, 1, "only the static head is reused");
            let similarity = l0h2.similarity.unwrap();
            assert!(
                similarity >= 0.99,
                "{:?}: similarity {similarity}",
                item.text
            );
            assert_eq!(
                (run.trace.timings.feature, run.trace.timings.search),
                (0.0, 0.0)
            );
        } else {
            assert_eq!(others, 0);
        }
    }
    assert!(
        served >= 10,
        "only {served} of 40 queries had an entry of their length"
    );
}
