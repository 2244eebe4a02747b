//! The `attncache` binary: JSON contracts scripts rely on, and one-line errors.

mod common;

use std::process::{Command, Output};

use common::json_of;

fn attncache(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attncache"))
        .args(args)
        .output()
        .unwrap()
}

/// Asserts a failure with exactly one `error:` line on stderr containing `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{stderr}"
    );
}

#[test]
fn embed_json_has_the_documented_fields_and_values() {
    common::real_model();
    let v = json_of(&attncache(&[
        "embed",
        "--json",
        "The new movie is awesome",
        "The new movie is so great",
    ]));
    assert_eq!(v["texts"][1], "The new movie is so great");
    assert_eq!(v["tokens"], serde_json::json!([7, 8]));
    let c = v["cosine"][0][1].as_f64().unwrap();
    assert!((c - 0.8939).abs() <= 0.002, "cosine {c}");
    assert!((v["cosine"][1][1].as_f64().unwrap() - 1.0).abs() < 1e-5);
    for key in ["tokenize", "attention", "rest", "forward", "total"] {
        assert!(
            v["timings_ms"][key].as_f64().unwrap() >= 0.0,
            "timings_ms.{key}"
        );
    }
}

#[test]
fn attention_json_gives_a_row_stochastic_map() {
    common::real_model();
    let v = json_of(&attncache(&[
        "attention",
        "--layer",
        "0",
        "--head",
        "2",
        "--json",
        "Wonderful film",
    ]));
    let tokens = v["tokens"].as_array().unwrap();
    assert_eq!(tokens[0], "[CLS]");
    let map = v["map"].as_array().unwrap();
    assert_eq!(map.len(), tokens.len());
    for row in map {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), tokens.len());
        let sum: f64 = row.iter().map(|x| x.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-5, "row sums to {sum}");
    }
    let text = attncache(&["attention", "--layer", "0", "--head", "2", "Wonderful film"]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert_eq!(text.lines().count(), 2 + tokens.len(), "{text}");
}

/// A text longer than MiniLM's 512 tokens is run cut, and every command
/// that runs it says so: stderr and JSON `truncated`.
#[test]
fn a_text_over_the_maximum_length_is_reported_cut() {
    common::real_model();
    let long = vec!["film"; 600].join(" ");
    let short = "A short review.";
    let warned = |out: &Output| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        stderr
            .lines()
            .filter(|l| l.contains("longer than the model's maximum of 512 tokens"))
            .count()
    };
    let out = attncache(&["run", "--json", &long, short]);
    assert_eq!(warned(&out), 1);
    let v = json_of(&out);
    assert_eq!(v["runs"][0]["truncated"], true);
    assert_eq!(v["runs"][0]["tokens"].as_array().unwrap().len(), 512);
    assert_eq!(v["runs"][1]["truncated"], false);
    let out = attncache(&["embed", "--json", short, &long]);
    assert_eq!(warned(&out), 1);
    assert_eq!(json_of(&out)["truncated"], serde_json::json!([false, true]));
    let out = attncache(&["attention", "--layer", "0", "--head", "0", "--json", &long]);
    assert_eq!(warned(&out), 1);
    assert_eq!(json_of(&out)["truncated"], true);
    let out = attncache(&["attention", "--layer", "0", "--head", "0", "--json", short]);
    assert_eq!(warned(&out), 0);
    assert_eq!(json_of(&out)["truncated"], false);
}

#[test]
fn a_local_model_directory_needs_no_fetch() {
    let dir = tempfile::tempdir().unwrap();
    common::write_tiny_model(dir.path());
    let model = dir.path().to_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_attncache"))
        .args(["--model", model, "embed", "--json", "the movie", "a plot"])
        .env("ATTNCACHE_HOME", dir.path().join("empty-home"))
        .env("ATTNCACHE_PYTHON", "/nonexistent/python3")
        .output()
        .unwrap();
    let v = json_of(&out);
    assert_eq!(v["dim"], common::HIDDEN);
    assert!(
        !dir.path().join("empty-home").exists(),
        "a local model must not touch the data directory"
    );
}

#[test]
fn bad_arguments_give_one_line_errors() {
    assert_one_line_error(
        &attncache(&["--model", "/no/such/dir", "embed", "x"]),
        "does not exist",
    );

    let dir = tempfile::tempdir().unwrap();
    common::write_tiny_model(dir.path());
    let model = dir.path().to_str().unwrap();
    assert_one_line_error(
        &attncache(&[
            "--model",
            model,
            "attention",
            "--layer",
            "9",
            "--head",
            "0",
            "x",
        ]),
        "--layer 9 is out of range",
    );
    assert_one_line_error(
        &attncache(&[
            "--model",
            model,
            "attention",
            "--layer",
            "0",
            "--head",
            "4",
            "x",
        ]),
        "--head 4 is out of range",
    );
    assert_one_line_error(
        &attncache(&[
            "--model",
            model,
            "build",
            "--corpus",
            "rt:db",
            "--limit",
            "2",
            "--shots",
            "2",
            "--out",
            "/tmp/never",
        ]),
        "few-shot prompts need a decoder",
    );
    // A budget the objective cannot reach admits everything.
    for (objective, budget, needle) in [
        ("accuracy", "200", "outside [0, 100]"),
        ("fidelity", "3", "outside [0, 2]"),
        ("accuracy", "-1", "outside [0, 100]"),
    ] {
        assert_one_line_error(
            &attncache(&[
                "--model",
                model,
                "calibrate",
                "--db",
                "/no/such/db",
                "--split",
                "rt:calib",
                "--objective",
                objective,
                &format!("--budget={budget}"),
            ]),
            needle,
        );
    }
    assert_one_line_error(
        &attncache(&[
            "--model",
            model,
            "sweep",
            "--db",
            "/no/such/db",
            "--split",
            "rt:test",
            "--thresholds=0.1,-1",
        ]),
        "-1 is no feature distance",
    );
    // A median of no timed pass is refused by the argument parser.
    let zero = attncache(&[
        "eval",
        "--db",
        "/no/such/db",
        "--split",
        "rt:test",
        "--repeats",
        "0",
    ]);
    assert!(!zero.status.success());
    assert!(
        String::from_utf8_lossy(&zero.stderr).contains("at least 1 timed pass"),
        "{}",
        String::from_utf8_lossy(&zero.stderr)
    );
    // A bad config file stops the dashboard before anything starts.
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "theme = \"dark\"\n[keys]\ncalibrate = \"Hyper\"\n").unwrap();
    let config = config.to_str().unwrap();
    assert_one_line_error(
        &attncache(&["dashboard", "--headless", "--config", config]),
        "config.toml:3: key `keys.calibrate`",
    );
    assert_one_line_error(
        &attncache(&[
            "dashboard",
            "--headless",
            "--config",
            "/no/such/config.toml",
        ]),
        "/no/such/config.toml",
    );
}

#[test]
fn fetch_without_python_is_a_one_line_error() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_attncache"))
        .args(["fetch"])
        .env("ATTNCACHE_HOME", home.path())
        .env("ATTNCACHE_PYTHON", "/nonexistent/python3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: cannot run `/nonexistent/python3`"),
        "{stderr}"
    );
}

#[test]
fn the_headless_dashboard_builds_its_database_then_serves_from_it() {
    let dir = tempfile::tempdir().unwrap();
    common::write_tiny_model(&dir.path().join("model"));
    let corpus = dir.path().join("corpus.txt");
    let texts = [
        "the movie was great",
        "a bad plot",
        "the film is fun",
        "not fun",
    ];
    std::fs::write(&corpus, texts.join("\n")).unwrap();
    let (model, corpus) = (
        dir.path().join("model"),
        corpus.to_str().unwrap().to_string(),
    );
    let db = dir.path().join("db");
    let dashboard = |keys: &str, json: bool| {
        let mut args = vec![
            "--model",
            model.to_str().unwrap(),
            "dashboard",
            "--headless",
            "--db",
            db.to_str().unwrap(),
            "--split",
            &corpus,
            "--build-corpus",
            &corpus,
            "--calib-split",
            &corpus,
            "--screen",
            "80x24",
            "--keys",
            keys,
        ];
        if json {
            args.push("--json");
        }
        Command::new(env!("CARGO_BIN_EXE_attncache"))
            .args(args)
            .env("ATTNCACHE_HOME", dir.path().join("home"))
            .output()
            .unwrap()
    };
    // First run: the database is built in the background; once it is ready
    // the dashboard serves in shadow mode; a database text hits everywhere.
    let v = json_of(&dashboard("wait,run:a bad plot,l,j", true));
    assert_eq!(v["db_entries"], 4);
    assert_eq!(v["mode"], "shadow");
    assert_eq!(v["current"]["text"], "a bad plot");
    assert_eq!(v["current"]["hit_rate"], 1.0);
    assert_eq!(v["selected"], serde_json::json!([1, 1]));
    assert!(db.join("manifest.json").is_file());
    // Second run opens it at once; the default output is the last frame.
    let out = dashboard("m,run:the movie was great", false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let screen = String::from_utf8(out.stdout).unwrap();
    assert!(
        screen.contains("mode exact") && screen.contains("db 4 entries"),
        "{screen}"
    );
    assert_eq!(screen.lines().count(), 24);
    // A bad script step is a one-line error.
    assert_one_line_error(&dashboard("Hyper", false), "unknown key `Hyper`");
}

#[test]
fn the_dashboard_without_a_terminal_says_how_to_script_it() {
    let dir = tempfile::tempdir().unwrap();
    common::write_tiny_model(dir.path());
    let out = attncache(&["--model", dir.path().to_str().unwrap()]);
    assert_one_line_error(&out, "the dashboard needs a terminal");
}

/// A tiny model, a corpus and a query file in a temporary directory: the
/// binary run on them with no fetch.
struct TinyWorkspace {
    dir: tempfile::TempDir,
}

impl TinyWorkspace {
    /// Writes the tiny model, `db.txt` (one text a line) and `queries.txt`.
    fn new(texts: &[&str], queries: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        common::write_tiny_model(&dir.path().join("model"));
        std::fs::write(dir.path().join("db.txt"), texts.join("\n")).unwrap();
        std::fs::write(dir.path().join("queries.txt"), queries.join("\n")).unwrap();
        Self { dir }
    }

    /// The path of `name` in the workspace.
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// Runs the binary with the tiny model and the workspace's home.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_attncache"))
            .args(["--model", &self.path("model")])
            .args(args)
            .env("ATTNCACHE_HOME", self.dir.path().join("home"))
            .output()
            .unwrap()
    }

    /// Builds `out` from `db.txt` with `extra` arguments, asserting success.
    fn build(&self, out: &str, extra: &[&str]) {
        let (corpus, out) = (self.path("db.txt"), self.path(out));
        let built = self.run(&[&["build", "--corpus", &corpus, "--out", &out][..], extra].concat());
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
    }
}

/// `bench` with several policies, the oracle and the plot, on a tiny model
/// and local text files (no fetch): one table per policy, the oracle and
/// the ceiling timed once, the plot written; misuse gets one-line errors.
#[test]
fn bench_compares_policies_with_the_oracle_and_plots_where_reuse_pays() {
    let ws = TinyWorkspace::new(
        &[
            "the movie was great",
            "the plot was bad",
            "a film is not fun",
            "the movie is fun",
            "a plot and a film",
            "great fun",
        ],
        &["the film was great", "a movie is not fun", "fun fun"],
    );
    let (run, path) = (|args: &[&str]| ws.run(args), |name: &str| ws.path(name));
    ws.build("db", &[]);
    let v = json_of(&run(&[
        "bench",
        "--db",
        &path("db"),
        "--policy",
        "global:2",
        "--policy",
        "strict",
        "--oracle",
        "0.5",
        "--plot",
        &path("plots"),
        "--splits",
        &path("queries.txt"),
        "--repeats",
        "1",
        "--json",
    ]));
    let policies = v["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2);
    // The machine it ran on is recorded beside the timings.
    assert_eq!(v["machine"]["device"], "cpu", "{}", v["machine"]);
    assert!(v["machine"]["threads"].as_u64().unwrap() >= 1);
    assert!(v["machine"]["cpu"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(policies[0]["policy"], "global:2");
    assert_eq!(policies[1]["policy"], "strict");
    assert_eq!(v["rows"], policies[0]["rows"]);
    let first = policies[0]["rows"].as_array().unwrap();
    assert_eq!(
        first
            .iter()
            .map(|r| r["queries"].as_u64().unwrap())
            .sum::<u64>(),
        3
    );
    for r in first {
        // Every layer searches and reuses: each look-up stage took time.
        let stages = &r["lookup_stages"];
        for stage in ["feature_ms", "search_ms", "map_load_ms"] {
            assert!(stages[stage].as_f64().unwrap() > 0.0, "{stage}: {r}");
        }
        let oracle = r["oracle_hit_rate"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&oracle), "{r}");
        assert!(r["oracle_e2e"].as_f64().unwrap() > 0.0, "{r}");
    }
    // The strict policy reuses nothing and its rows carry no oracle.
    for r in policies[1]["rows"].as_array().unwrap() {
        assert_eq!(r["hit_rate"], 0.0);
        assert!(r.get("oracle_e2e").is_none(), "{r}");
    }
    let plots = v["plots"].as_array().unwrap();
    assert!(!plots.is_empty());
    for p in plots {
        let p = std::path::Path::new(p.as_str().unwrap());
        assert!(
            p.starts_with(path("plots")) && p.metadata().unwrap().len() > 1000,
            "{p:?}"
        );
    }
    // Nothing to measure, or a similarity no map can have: one-line errors.
    let queries = path("queries.txt");
    let bench = |extra: &[&str]| {
        let base = ["bench", "--db", &path("db"), "--splits", &queries];
        run(&[&base[..], extra].concat())
    };
    assert_one_line_error(&bench(&["--oracle", "1.5"]), "--oracle 1.5");
    assert_one_line_error(&bench(&["--limit", "0"]), "no queries to benchmark");
    assert_one_line_error(
        &run(&[
            "retrieval",
            "--db",
            &path("db"),
            "--split",
            &queries,
            "--limit",
            "0",
        ]),
        "is empty",
    );
    assert_one_line_error(
        &run(&["run", "--policy", "global:2", "a film"]),
        "--policy needs a database",
    );
}

/// The accounting ladder's padded-inputs step, on a tiny model and local
/// text files: a database built with `--pad-to` holds one length, so every
/// query finds a same-length entry there; the step sits between the
/// look-up-untimed and the unfused steps; misuse gets one-line errors.
#[test]
fn eval_adds_the_padded_inputs_step_from_a_padded_database() {
    let ws = TinyWorkspace::new(
        &["the movie was great", "the plot was bad", "a film", "fun"],
        &[
            "the film was not great at all",
            "a movie is fun fun",
            "great great fun fun fun",
        ],
    );
    ws.build("db", &[]);
    ws.build("padded", &["--pad-to", "12"]);
    let (path, queries) = (|name: &str| ws.path(name), ws.path("queries.txt"));
    let eval = |db: &str, extra: &[&str]| {
        let base = [
            "eval",
            "--db",
            db,
            "--policy",
            "global:2",
            "--split",
            &queries,
            "--repeats",
            "1",
        ];
        ws.run(&[&base[..], extra].concat())
    };
    let info = ws.run(&["db-info", &path("padded")]);
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("padded to 12 tokens"),
        "{}",
        String::from_utf8_lossy(&info.stdout)
    );
    // Queried directly, the padded database pads its queries: all hit.
    let direct = json_of(&eval(&path("padded"), &["--json"]));
    assert_eq!(direct["hit_rate"], 1.0, "{direct}");
    let v = json_of(&eval(
        &path("db"),
        &[
            "--accounting",
            "both",
            "--padded-db",
            &path("padded"),
            "--padded-policy",
            "global:2",
            "--json",
        ],
    ));
    assert_eq!(v["machine"]["device"], "cpu", "{}", v["machine"]);
    let steps = v["accounting"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "honest",
            "hits only",
            "look-up untimed",
            "padded inputs",
            "unfused baseline"
        ]
    );
    // Unpadded, no query has a same-length entry; padded, every one hits.
    assert_eq!(steps[0]["hit_rate"], 0.0, "{v}");
    assert_eq!(
        (steps[3]["queries"].as_u64(), steps[3]["hit_rate"].as_f64()),
        (Some(3), Some(1.0))
    );
    assert!(steps[3]["e2e_speedup"].as_f64().unwrap() > 0.0);
    assert_eq!(steps[4]["queries"], 3);
    // Misuse: the padded database as --db, an unpadded one as --padded-db,
    // no policy for the padded step, a padded step without the ladder, the
    // oracle as a policy.
    let (db, padded) = (path("db"), path("padded"));
    let ladder = ["--accounting", "both", "--padded-db"];
    for (db, extra, needle) in [
        (
            &padded,
            [&ladder[..], &[&padded]].concat(),
            "holds padded inputs",
        ),
        (
            &db,
            [&ladder[..], &[&db, "--padded-policy", "global:2"]].concat(),
            "built without --pad-to",
        ),
        (
            &db,
            [&ladder[..], &[&padded]].concat(),
            "has no policy.json",
        ),
        (
            &db,
            vec!["--padded-db", &padded],
            "pass --accounting paper or both",
        ),
        // The oracle is compared against, never run as a policy.
        (
            &db,
            vec!["--compare", "oracle:0.9"],
            "ask for it with `eval --compare oracle`",
        ),
    ] {
        assert_one_line_error(&eval(db, &extra), needle);
    }
}
