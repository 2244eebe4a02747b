//! Evaluation and calibration on the real model with a small database.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use attncache::cache::policy::RuleFamily;
use attncache::cache::{BuildOptions, Database, ModelIdentity, Policy, build};
use attncache::data::{CorpusOptions, CorpusSpec};
use attncache::engine::Engine;
use attncache::eval::{CalibrateOptions, Classifier, Objective, PolicyKind, calibrate, evaluate};

fn small_db(dir: &Path, entries: usize) -> Arc<Database> {
    let model = common::real_model();
    let corpus = CorpusSpec::parse("rt:db")
        .unwrap()
        .load(&CorpusOptions::default())
        .unwrap()
        .limited(Some(entries));
    build(
        model,
        &corpus,
        dir,
        BuildOptions::default(),
        &mut |_, _| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    Arc::new(Database::open(dir, &ModelIdentity::of(model).unwrap()).unwrap())
}

#[test]
fn calibration_respects_its_budget_on_the_calibration_split() {
    let dir = tempfile::tempdir().unwrap();
    let db = small_db(&dir.path().join("db"), 60);
    let model = Arc::new(common::real_model().clone());
    let calib = CorpusSpec::parse("rt:calib")
        .unwrap()
        .load(&CorpusOptions::default())
        .unwrap()
        .limited(Some(25));
    let probe = Classifier::for_task(&model, &db, &calib).unwrap();
    assert!(probe.is_some(), "rt:db entries carry fresh/rotten labels");
    let engine = Engine::new(model.clone(), db.clone(), Policy::strict(model.shape())).unwrap();
    for (budget, kind) in [
        (0.002, PolicyKind::Ours),
        (0.01, PolicyKind::Ours),
        (0.01, PolicyKind::Paper),
    ] {
        let options = CalibrateOptions {
            budget,
            objective: Objective::Fidelity,
            kind,
            drop_unprofitable: true,
        };
        let policy = calibrate(
            &engine,
            &calib,
            probe.as_ref(),
            options,
            &mut |_, _| {},
            &AtomicBool::new(false),
        )
        .unwrap();
        let cal = policy.calibration.clone().unwrap();
        assert!(
            cal.measured_error <= budget,
            "{kind:?}: measured {} > budget {budget}",
            cal.measured_error
        );
        // Ours compares its per-head rule with the wholesale one and keeps
        // the one that saves more, net of its look-up; the paper's rule is
        // calibrated alone.
        match kind {
            PolicyKind::Ours => {
                let kept: Vec<_> = cal.candidates.iter().filter(|c| c.kept).collect();
                assert_eq!(kept.len(), 1, "{:?}", cal.candidates);
                assert_eq!(cal.kept_rule(), Some(kept[0]));
                assert_eq!(cal.candidates[0].rule, RuleFamily::PerHead);
                assert!(cal.candidates.iter().all(|c| c.measured_error <= budget));
                if let Some(w) = (cal.candidates.iter()).find(|c| c.rule == RuleFamily::Wholesale) {
                    let per_head = cal.candidates[0].net_saving_ms;
                    let beats = w.net_saving_ms > 0.0 && w.net_saving_ms > per_head;
                    assert_eq!(w.kept, beats, "{:?}", cal.candidates);
                }
                assert_eq!(kept[0].measured_error, cal.measured_error);
                assert_eq!(kept[0].expected_hit_rate, cal.expected_hit_rate);
                if kept[0].rule == RuleFamily::Wholesale {
                    // One distance for every head of a layer, the neighbour
                    // carried.
                    assert!(policy.carry_neighbour);
                    for layer in &policy.max_distance {
                        assert!(layer.iter().all(|&d| d == layer[0]), "{layer:?}");
                    }
                }
            }
            PolicyKind::Paper => assert!(cal.candidates.is_empty()),
        }
        // An independent evaluation of the same policy on the same split agrees.
        let tuned = Engine::new(model.clone(), db.clone(), policy).unwrap();
        let eval = evaluate(&tuned, &calib, probe.as_ref(), 1, &mut |_, _| {}).unwrap();
        let error = 1.0 - eval.fidelity_mean;
        assert!(
            error <= budget + 1e-6,
            "{kind:?}: evaluated error {error} > budget {budget}"
        );
        assert!((eval.hit_rate - cal.expected_hit_rate).abs() < 1e-9);
    }
}

#[test]
fn eval_json_reports_every_documented_field_over_all_queries() {
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("db");
    small_db(&db_dir, 30);
    let out = Command::new(env!("CARGO_BIN_EXE_attncache"))
        .args([
            "eval",
            "--db",
            db_dir.to_str().unwrap(),
            "--split",
            "rt:test",
            "--limit",
            "8",
        ])
        .args([
            "--policy",
            "global:0.4",
            "--compare",
            "paper:0.4",
            "--repeats",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    let v = common::json_of(&out);
    assert_eq!(v["queries"], 8);
    for key in [
        "hit_rate",
        "accuracy_exact",
        "accuracy_cached",
        "accuracy_loss_pt",
        "fidelity_mean",
        "fidelity_p5",
    ] {
        assert!(v[key].is_number(), "{key} missing: {v}");
    }
    for key in ["attention_speedup", "e2e_speedup"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}");
    }
    let loss = v["accuracy_loss_pt"].as_f64().unwrap();
    let expected =
        (v["accuracy_exact"].as_f64().unwrap() - v["accuracy_cached"].as_f64().unwrap()) * 100.0;
    assert!((loss - expected).abs() < 1e-9);
    assert!(v["fidelity_p5"].as_f64().unwrap() <= v["fidelity_mean"].as_f64().unwrap() + 1e-12);
    // The compared policy ran on the same queries in the same run.
    assert_eq!(v["policy"], "global:0.4");
    assert_eq!(v["compared"][0]["policy"], "paper:0.4");
    assert_eq!(v["compared"][0]["queries"], 8);
}
