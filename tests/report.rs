//! `attncache report` on a tiny generated model: every figure is written,
//! decodes as a PNG or SVG of the expected size, and report.json holds the
//! same evaluation as `attncache eval --json` on the same run.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn attncache(home: &Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_attncache"))
        .args(args)
        .env("ATTNCACHE_HOME", home)
        .output()
        .unwrap();
    common::json_of(&out)
}

/// Width and height of a PNG, decoded completely.
fn png_size(path: &Path) -> (u32, u32) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert!(buf.iter().any(|&b| b != 255), "{} is blank", path.display());
    (info.width, info.height)
}

/// Width and height declared by an SVG's root element.
fn svg_size(path: &Path) -> (u32, u32) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.trim_end().ends_with("</svg>"),
        "{} is cut short",
        path.display()
    );
    let attr = |name: &str| -> u32 {
        let start = text.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        text[start..].split('"').next().unwrap().parse().unwrap()
    };
    assert!(text.contains("<text"), "{} has no text", path.display());
    (attr("width"), attr("height"))
}

/// A tiny model, a database built from 120 labelled texts, and 30 labelled
/// queries: (temp dir, model dir, database dir, queries file).
fn setup() -> (tempfile::TempDir, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    common::write_tiny_model(&dir.path().join("model"));
    let words = [
        "the", "movie", "was", "great", "bad", "plot", "film", "and", "a", "is", "not", "fun",
    ];
    let line = |i: usize| {
        let text: Vec<&str> = (0..3 + i % 4)
            .map(|k| words[(i * 5 + k * 7) % words.len()])
            .collect();
        serde_json::json!({"text": format!("{} {}", text.join(" "), "x".repeat(1 + i / 12)),
                           "label": if i.is_multiple_of(2) { "fresh" } else { "rotten" }})
        .to_string()
    };
    let write = |name: &str, range: std::ops::Range<usize>| {
        let path = dir.path().join(name);
        std::fs::write(&path, range.map(line).collect::<Vec<_>>().join("\n")).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (db_corpus, queries) = (write("db.jsonl", 0..120), write("queries.jsonl", 120..150));
    let model = dir.path().join("model").to_str().unwrap().to_string();
    let db = dir.path().join("db").to_str().unwrap().to_string();
    attncache(
        &home,
        &[
            "--model", &model, "build", "--corpus", &db_corpus, "--out", &db, "--json",
        ],
    );
    (dir, model, db, queries)
}

#[test]
fn a_report_writes_every_figure_and_matches_eval() {
    let (dir, model, db, queries) = setup();
    let home = dir.path().join("home");
    let out = dir.path().join("report");
    let (model, db, out) = (model.as_str(), db.as_str(), out.to_str().unwrap());
    let common_args = [
        "--model",
        model,
        "--db",
        db,
        "--split",
        &queries,
        "--policy",
        "global:0.5",
    ];
    let mut report_args = vec!["report"];
    report_args.extend_from_slice(&common_args);
    report_args.extend_from_slice(&["--out", out, "--repeats", "1", "--examples", "2", "--json"]);
    let listed = attncache(&home, &report_args);
    let out = Path::new(out);
    let expected = [
        ("sweep", (1400, 1500), true),
        ("cacheability", (1440, 620), true),
        ("latency", (1500, 560), true),
        ("maps-1", (1500, 1000), false),
        ("maps-2", (1500, 1000), false),
        ("layer-similarity", (720, 620), false),
    ];
    for (stem, size, svg) in expected {
        assert_eq!(
            png_size(&out.join(format!("{stem}.png"))),
            size,
            "{stem}.png"
        );
        if svg {
            assert_eq!(
                svg_size(&out.join(format!("{stem}.svg"))),
                size,
                "{stem}.svg"
            );
        }
    }
    assert_eq!(listed["files"].as_array().unwrap().len(), 9);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("![sweep](sweep.png)") && md.contains("report --model"),
        "{md}"
    );

    // report.json's evaluation is eval --json's on the same queries and policy
    // (timings aside, which differ between runs).
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let from_report = &report["report"]["evaluation"];
    let mut eval_args = vec!["eval"];
    eval_args.extend_from_slice(&common_args);
    eval_args.extend_from_slice(&["--repeats", "1", "--json"]);
    let from_eval = attncache(&home, &eval_args);
    for field in [
        "split",
        "policy",
        "queries",
        "hit_rate",
        "hit_rate_per_head",
        "no_candidate",
        "accuracy_exact",
        "accuracy_cached",
        "agreement",
        "fidelity_mean",
        "fidelity_p5",
        "cacheability",
        "reused_similarity",
    ] {
        assert_eq!(from_report[field], from_eval[field], "{field}");
    }
    assert!(
        from_report["hit_rate"].as_f64().unwrap() > 0.0,
        "the policy reuses something"
    );
    let sweep = report["report"]["sweep"].as_array().unwrap();
    assert_eq!(sweep.len(), 5);
    let paper = report["report"]["paper_sweep"].as_array().unwrap();
    assert_eq!(paper.len(), 5);
    let layers = report["report"]["layer_similarity"].as_array().unwrap();
    assert_eq!(layers.len(), common::LAYERS);
    assert_eq!(layers[0][0], 0.0, "a layer does not diverge from itself");
}

#[test]
fn without_a_font_the_figures_are_svg_only_and_say_so() {
    let (dir, model, db, queries) = setup();
    let out_dir = dir.path().join("report");
    let out = Command::new(env!("CARGO_BIN_EXE_attncache"))
        .args([
            "--model", &model, "report", "--db", &db, "--split", &queries, "--limit", "6",
        ])
        .args([
            "--policy",
            "global:0.5",
            "--repeats",
            "1",
            "--examples",
            "1",
        ])
        .args(["--out", out_dir.to_str().unwrap()])
        .env("ATTNCACHE_HOME", dir.path().join("home"))
        .env("ATTNCACHE_FONT", "none")
        .output()
        .unwrap();
    common::assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("writing SVG only"), "{stderr}");
    for stem in [
        "sweep",
        "cacheability",
        "latency",
        "maps-1",
        "layer-similarity",
    ] {
        assert!(!out_dir.join(format!("{stem}.png")).exists(), "{stem}.png");
        let size = svg_size(&out_dir.join(format!("{stem}.svg")));
        assert!(size.0 >= 720 && size.1 >= 560, "{stem}: {size:?}");
    }
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("![sweep](sweep.svg)"), "{md}");
}
