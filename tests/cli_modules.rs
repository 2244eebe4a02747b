//! `attncache modules …` end to end on SmolLM2: a generated passkey workload,
//! a store, a run with its decisions, eval and calibrate JSON, db-info, and
//! every refusal as one line.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{assert_success, json_of};

fn attncache(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attncache"))
        .args(args)
        .output()
        .unwrap()
}

fn smollm2(args: &[&str]) -> Output {
    let mut all = vec!["--model", "smollm2"];
    all.extend_from_slice(args);
    attncache(&all)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The one-line error of a failed command.
fn refusal(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn passkey_workload_store_run_eval_calibrate() {
    common::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let store = dir.path().join("store");
    assert_success(&attncache(&[
        "modules",
        "workload",
        "passkey",
        "--per-prompt",
        "3",
        "--pool",
        "4",
        "--prompts",
        "4",
        "--seed",
        "3",
        "--out",
        path(&work),
    ]));
    let schema = work.join("schema.toml");
    let prompts = work.join("prompts.jsonl");
    let built = json_of(&smollm2(&[
        "modules",
        "build",
        "--schema",
        path(&schema),
        "--out",
        path(&store),
        "--json",
    ]));
    assert_eq!(built["modules"], 14, "{built}");
    let info = json_of(&attncache(&["db-info", path(&store), "--verify", "--json"]));
    assert_eq!(info["kind"], "modules");
    assert_eq!(info["bytes_per_token"], 30 * 2 * 3 * 64 * 2);
    // The ten keys share one position range (a union).
    let modules = info["modules"].as_array().unwrap();
    assert!(
        modules[..10]
            .iter()
            .all(|m| m["offset"] == modules[0]["offset"])
    );

    let first = std::fs::read_to_string(&prompts).unwrap();
    let first = first.lines().next().unwrap();
    let run = json_of(&smollm2(&[
        "modules",
        "run",
        "--store",
        path(&store),
        "--recovery",
        "first:4",
        "--generate",
        "4",
        "--compare",
        "--json",
        first,
    ]));
    let decisions = run["decisions"].as_array().unwrap();
    let cached: Vec<_> = decisions
        .iter()
        .filter(|d| d["state"] == "cached")
        .collect();
    // The preamble (one document separator, stored once), then the modules.
    assert_eq!(cached.len(), 5, "{run}");
    assert_eq!(cached[0]["label"], "preamble");
    // first:4 recomputes 4 tokens of every module after the first.
    assert_eq!(cached[1]["recomputed"], 0);
    assert!(cached[2..].iter().all(|d| d["recomputed"] == 4));
    assert_eq!(run["modular"]["top"].as_array().unwrap().len(), 5);
    assert!(run["modular"]["generated"].is_string());
    assert!(run["exact"]["ttft_ms"].as_f64().unwrap() > 0.0);

    let eval = json_of(&smollm2(&[
        "modules",
        "eval",
        "--store",
        path(&store),
        "--prompts",
        path(&prompts),
        "--repeats",
        "1",
        "--heads",
        "1",
        "--continuation",
        "4",
        "--recovery",
        "select:100",
        "--json",
    ]));
    for field in [
        "prompts",
        "tokens_mean",
        "cached_fraction",
        "ttft_ms",
        "speedup_vs_exact",
        "speedup_vs_prefix",
        "top1_agreement",
        "kl_mean",
        "nll_delta",
        "task_accuracy",
        "positions",
        "recovery",
    ] {
        assert!(!eval[field].is_null(), "{field} missing: {eval}");
    }
    assert_eq!(eval["prompts"], 4);
    assert_eq!(eval["recovery"], "select:100");
    // Recomputing every cached token is exact prefill.
    assert_eq!(eval["top1_agreement"], 1.0);
    assert!(eval["kl_mean"].as_f64().unwrap() < 1e-6, "{eval}");
    assert_eq!(
        eval["task_accuracy"]["exact"],
        eval["task_accuracy"]["modular"]
    );
    // The exact model does the passkey task.
    assert!(
        eval["task_accuracy"]["exact"].as_f64().unwrap() >= 0.75,
        "{eval}"
    );
    let heads = &eval["heads"]["similarity"];
    assert_eq!(heads.as_array().unwrap().len(), 30);
    assert!((heads[29][0].as_f64().unwrap() - 1.0).abs() < 1e-3);

    let cal = json_of(&smollm2(&[
        "modules",
        "calibrate",
        "--store",
        path(&store),
        "--prompts",
        path(&prompts),
        "--kind",
        "first",
        "--objective",
        "kl",
        "--budget",
        "10",
        "--out",
        path(&dir.path().join("frontier")),
        "--json",
    ]));
    // A budget anything meets picks the fastest setting, saves it, and it is
    // on the frontier the same measurement wrote.
    let points = cal["points"].as_array().unwrap();
    assert_eq!(points.len(), 8, "{cal}");
    assert!(points.iter().all(|p| p["within_budget"] == true));
    let fastest = points
        .iter()
        .max_by(|a, b| {
            a["speedup_vs_exact"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["speedup_vs_exact"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(cal["chosen"], fastest["recovery"]);
    let chosen = cal["chosen"].as_str().unwrap().to_string();
    assert!(store.join("recovery.json").is_file());
    let frontier: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("frontier").join("frontier.json")).unwrap(),
    )
    .unwrap();
    let on_frontier = frontier["points"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["recovery"] == chosen && p["pareto_kl"] == true);
    assert!(
        on_frontier,
        "{chosen} is not on the KL frontier: {frontier}"
    );
    let run = json_of(&smollm2(&[
        "modules",
        "run",
        "--store",
        path(&store),
        "--json",
        first,
    ]));
    assert_eq!(run["recovery"], chosen);
}

#[test]
fn bad_input_gets_one_clear_line() {
    common::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("s.toml");
    std::fs::write(
        &schema,
        "[[module]]\nname = \"a\"\ntext = \"Alpha.\\n\"\n[[module]]\nname = \"b\"\ntext = \"Beta {x}.\\n\"\nparams = { x = 2 }\n",
    )
    .unwrap();
    let store = dir.path().join("store");
    assert_success(&smollm2(&[
        "modules",
        "build",
        "--schema",
        path(&schema),
        "--out",
        path(&store),
    ]));
    let before = std::fs::read(store.join("manifest.json")).unwrap();
    let run = |prompt: &str| smollm2(&["modules", "run", "--store", path(&store), prompt]);
    for (prompt, want) in [
        (r#"{"modules": ["c"], "text": "q"}"#, "unknown module"),
        (
            r#"{"modules": ["b"], "text": "q", "args": {"b": {"y": "1"}}}"#,
            "unknown parameter",
        ),
        (
            r#"{"modules": ["b"], "text": "q", "args": {"b": {"x": "a very long value"}}}"#,
            "more than the 2 it reserves",
        ),
        (r#"{"modules": ["a", "a"], "text": "q"}"#, "used twice"),
        (r#"{"modules": ["a"], "colour": 1}"#, "unknown field"),
    ] {
        let err = refusal(&run(prompt));
        assert!(err.contains(want), "{prompt}: {err}");
    }
    let long = format!(
        r#"{{"modules": ["a"], "text": "{}"}}"#,
        "word ".repeat(9000)
    );
    assert!(refusal(&run(&long)).contains("context of 8192"));
    // The device path: CUDA without the feature says how to build it;
    // --resident on the CPU's fused kernels says what to pass.
    if !cfg!(feature = "cuda") {
        let err = refusal(&smollm2(&[
            "--device",
            "cuda",
            "modules",
            "run",
            "--store",
            path(&store),
            "q",
        ]));
        assert!(err.contains("scripts/build-cuda.sh"), "{err}");
    }
    let err = refusal(&smollm2(&[
        "modules",
        "run",
        "--store",
        path(&store),
        "--resident",
        "q",
    ]));
    assert!(
        err.contains("--resident") && err.contains("--device cuda"),
        "{err}"
    );
    // Bad options, an encoder, another schema, a foreign directory.
    let err = refusal(&smollm2(&[
        "modules",
        "run",
        "--store",
        path(&store),
        "--recovery",
        "most",
        "q",
    ]));
    assert!(err.contains("--recovery"), "{err}");
    let err = refusal(&smollm2(&[
        "modules",
        "run",
        "--store",
        path(&store),
        "--positions",
        "sideways",
        "q",
    ]));
    assert!(err.contains("--positions"), "{err}");
    let err = refusal(&attncache(&[
        "modules",
        "build",
        "--schema",
        path(&schema),
        "--out",
        path(&dir.path().join("x")),
    ]));
    assert!(err.contains("needs a decoder"), "{err}");
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "[[module]]\nname = \"a\"\ntext = \"Gamma.\\n\"\n").unwrap();
    let err = refusal(&smollm2(&[
        "modules",
        "run",
        "--store",
        path(&store),
        "--schema",
        path(&other),
        "q",
    ]));
    assert!(
        err.contains("was built from schema s") && err.contains("other.toml"),
        "{err}"
    );
    let err = refusal(&smollm2(&[
        "modules",
        "run",
        "--store",
        path(dir.path()),
        "q",
    ]));
    assert!(err.contains("not an attncache module store"), "{err}");
    // Bad schemas: duplicate names, an empty module; nothing overwritten.
    for (text, want) in [
        (
            "[[module]]\nname = \"a\"\ntext = \"x\"\n[[module]]\nname = \"a\"\ntext = \"y\"\n",
            "used twice",
        ),
        ("[[module]]\nname = \"a\"\ntext = \"\"\n", "empty text"),
    ] {
        std::fs::write(&schema, text).unwrap();
        let err = refusal(&smollm2(&[
            "modules",
            "build",
            "--schema",
            path(&schema),
            "--out",
            path(&store),
        ]));
        assert!(err.contains(want), "{err}");
    }
    assert_eq!(std::fs::read(store.join("manifest.json")).unwrap(), before);
    // A truncated store.
    let kv = store.join("kv.bin");
    let len = std::fs::metadata(&kv).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&kv)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = refusal(&smollm2(&["modules", "run", "--store", path(&store), "q"]));
    assert!(err.contains("corrupt") && err.contains("kv.bin"), "{err}");
}
