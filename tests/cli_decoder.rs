//! The `attncache` binary with `--model smollm2`: next-token JSON, every
//! workload command on a small decoder database, and databases refused
//! across models.

mod common;

use std::process::{Command, Output};

use common::{assert_success, json_of};

fn attncache(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attncache"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn run_chat_json_reports_the_five_most_likely_next_tokens() {
    common::smollm2();
    let v = json_of(&attncache(&[
        "--model",
        "smollm2",
        "run",
        "--chat",
        "--json",
        "What is the capital of France?",
    ]));
    let run = &v["runs"][0];
    assert!(
        run["text"]
            .as_str()
            .unwrap()
            .contains("<|im_start|>user\nWhat is the capital"),
        "{run}"
    );
    let top = run["top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    let probs: Vec<f64> = top.iter().map(|t| t["prob"].as_f64().unwrap()).collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]), "{probs:?}");
    assert!(probs.iter().sum::<f64>() <= 1.0 + 1e-6);
    assert!(top.iter().all(|t| !t["token"].as_str().unwrap().is_empty()));

    // An encoder has no chat template and no next token.
    let out = attncache(&["run", "--chat", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--chat needs a chat model"));
}

#[test]
fn workload_commands_run_on_a_decoder_and_databases_stay_with_their_model() {
    common::smollm2();
    common::real_model();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let db = db.to_str().unwrap();
    let sm = |args: &[&str]| {
        let mut all = vec!["--model", "smollm2"];
        all.extend_from_slice(args);
        attncache(&all)
    };
    assert_success(&sm(&[
        "build", "--corpus", "rt:db", "--limit", "6", "--out", db,
    ]));

    // The default encoder refuses the decoder's database, naming both models.
    let out = attncache(&["run", "--db", db, "a fine film"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("smollm2") && stderr.contains("all-minilm-l6-v2"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // eval: prompted accuracy, agreement and next-token KL.
    let split = ["--split", "rt:calib", "--limit", "3"];
    // Every run: the database, reuse everything, one repeat, JSON.
    let run = [
        "--db",
        db,
        "--policy",
        "global:2",
        "--repeats",
        "1",
        "--json",
    ];
    let e = json_of(&sm(&[&["eval"][..], &run, &split].concat()));
    assert_eq!(e["queries"], 3);
    assert!(e["accuracy_exact"].as_f64().is_some(), "{e}");
    assert!(e["kl_mean"].as_f64().unwrap() >= 0.0);
    assert_eq!(e["hit_rate_per_head"][29].as_array().unwrap().len(), 9);

    // The paper's accounting and the oracle, on the database's own texts:
    // every query hits (identical entry), and the oracle finds each text's
    // own entry for every head.
    let e = json_of(&sm(&[
        &["eval"][..],
        &run,
        &[
            "--split",
            "rt:db",
            "--limit",
            "3",
            "--accounting",
            "both",
            "--compare",
            "oracle",
        ][..],
    ]
    .concat()));
    let steps = e["accounting"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["honest", "hits only", "look-up untimed", "unfused baseline"]
    );
    for step in steps {
        assert_eq!(step["queries"], 3, "{step}");
        assert_eq!(step["hit_rate"], 1.0, "{step}");
        assert!(step["e2e_speedup"].as_f64().unwrap() > 0.0, "{step}");
    }
    let oracle = e["oracle"].as_array().unwrap();
    assert_eq!(oracle.len(), 8);
    assert_eq!(oracle[1]["policy"], "oracle:0.999");
    assert_eq!(oracle[1]["hit_rate"], 1.0, "{e}");
    assert!(e.get("oracle_gain_share").is_some(), "{e}");

    // prefix: the prefix cache changes nothing but time.
    let prefix_args = [&["prefix"][..], &run, &split].concat();
    let p = json_of(&sm(&prefix_args));
    let runs = p["runs"].as_array().unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r["run"].as_str().unwrap()).collect();
    assert_eq!(names, ["exact", "prefix", "reuse", "both"]);
    assert!(runs[1]["kl_mean"].as_f64().unwrap() < 1e-4, "{p}");
    assert_eq!(runs[1]["agreement"].as_f64(), Some(1.0));
    assert!(p["mean_prefix_tokens"].as_f64().unwrap() > 30.0, "{p}");
    // Two shots: the same examples open every prompt, so the prefix cache
    // serves them too.
    let shots = json_of(&sm(&[prefix_args.as_slice(), &["--shots", "2"]].concat()));
    assert!(
        shots["mean_prefix_tokens"].as_f64().unwrap()
            > p["mean_prefix_tokens"].as_f64().unwrap() + 20.0,
        "{shots}"
    );

    // bench --shots: the same query as a 0-shot and a 3-shot prompt, the
    // longer one in a longer bucket.
    let b = json_of(&sm(&[
        "bench",
        "--db",
        db,
        "--policy",
        "global:2",
        "--splits",
        "rt:calib",
        "--limit",
        "1",
        "--shots",
        "0,3",
        "--repeats",
        "1",
        "--json",
    ]));
    let rows: Vec<&serde_json::Value> = b["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["queries"].as_u64() > Some(0))
        .collect();
    assert_eq!(rows.len(), 2, "{b}");
    assert!(
        rows[1]["mean_tokens"].as_f64().unwrap() > rows[0]["mean_tokens"].as_f64().unwrap() + 60.0,
        "{b}"
    );

    // calibrate and sweep run too.
    let policy = dir.path().join("policy.json");
    let mut args = vec![
        "calibrate",
        "--db",
        db,
        "--budget",
        "0.01",
        "--json",
        "--out",
    ];
    args.push(policy.to_str().unwrap());
    args.extend_from_slice(&split);
    assert_success(&sm(&args));
    assert!(policy.is_file());
    let mut args = vec!["sweep", "--db", db, "--thresholds", "0,2"];
    args.extend_from_slice(&split);
    let s = json_of(&sm(&args));
    assert!(s.to_string().contains("hit_rate"), "{s}");
}
