//! The dashboard as one app of two tabs, headless, with real engine threads
//! on a tiny generated Llama: Maps (its database built in the background)
//! and Modules (a module store of the same model). Scripts switch tabs
//! mid-run, start work in one and go on in the other; the JSON shows both
//! tabs' states.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use attncache::modules::{BuildOptions, Schema, build_store};
use common::tiny_llama::tiny_llama;

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A tiny model directory, a corpus file, a module store and its prompts.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let (dir, model) = tiny_llama();
        let p = dir.path();
        std::fs::write(
            p.join("corpus.txt"),
            "the movie was great\na bad plot\nthe film is fun\nnot fun\n",
        )
        .unwrap();
        std::fs::write(
            p.join("schema.toml"),
            r#"
            [[module]]
            name = "doc-a"
            text = "the movie was great and the plot was fun"
            [[module]]
            name = "doc-b"
            text = "the film is not fun"
            "#,
        )
        .unwrap();
        let schema = Schema::load(&p.join("schema.toml")).unwrap();
        let cancel = std::sync::atomic::AtomicBool::new(false);
        build_store(
            &model,
            &schema,
            &p.join("store"),
            BuildOptions::default(),
            &mut |_, _| {},
            &cancel,
        )
        .unwrap();
        std::fs::write(
            p.join("prompts.jsonl"),
            "{\"modules\": [\"doc-b\", \"doc-a\"], \"text\": \"the plot\"}\n\
             {\"modules\": [\"doc-a\"], \"text\": \"a film\"}\n",
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn dashboard(&self, extra: &[&str], keys: &str) -> Output {
        let (model, corpus, db) = (self.path(""), self.path("corpus.txt"), self.path("db"));
        let mut args = vec![
            "--model",
            &model,
            "dashboard",
            "--headless",
            "--json",
            "--db",
            &db,
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
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_attncache"))
            .args(args)
            .env("ATTNCACHE_HOME", self.dir.path().join("home"))
            .output()
            .unwrap()
    }
}

fn tab<'a>(v: &'a serde_json::Value, title: &str) -> &'a serde_json::Value {
    v["tabs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["title"] == title)
        .unwrap_or_else(|| panic!("no tab {title} in {v}"))
}

#[test]
fn two_tabs_run_their_own_engines_and_switch_mid_run() {
    let f = Fixture::new();
    let (store, prompts) = (f.path("store"), f.path("prompts.jsonl"));
    let with_store = ["--store", store.as_str(), "--prompts", prompts.as_str()];
    // The Maps tab builds its database in the background; meanwhile the
    // script switches to Modules, runs a prompt there, switches back, and
    // both tabs' work is done and kept.
    let v = json_of(&f.dashboard(&with_store, "2,n,1,wait,2,wait"));
    assert_eq!(v["tab"], "Modules");
    let screen: Vec<&str> = v["screen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        screen[0].contains("1 Maps") && screen[0].contains("2 Modules"),
        "{screen:?}"
    );
    assert!(screen[1].starts_with(" modular"), "{screen:?}");
    let modules = &tab(&v, "Modules")["state"];
    let current = &modules["current"];
    assert_eq!(
        current["label"].as_str().unwrap().split(']').next(),
        Some("[doc-b doc-a")
    );
    assert!(current["ttft_ms"][2].as_f64().unwrap() > 0.0);
    let maps = &tab(&v, "Maps")["state"];
    assert_eq!(maps["db_entries"], 4, "{maps}");
    assert!(
        tab(&v, "Maps")["serves"]
            .as_str()
            .unwrap()
            .contains("database building")
    );
    // The shown tab's own fields stay at the top level, as a one-view
    // script reads them.
    assert_eq!(v["recovery"], modules["recovery"]);

    // Keys typed into a text field are text, not tab switches: `i`, then
    // `2` in the Maps query, then Enter runs "2" there (asked in the
    // decoder's task prompt).
    let v = json_of(&f.dashboard(&with_store, "wait,i,2,Enter,wait"));
    assert_eq!(v["tab"], "Maps");
    let asked = v["current"]["text"].as_str().unwrap();
    assert!(asked.contains("\n\n2<|im_end|>"), "{asked}");
    // --tab modules opens there; a click on the tab bar switches.
    let v = json_of(&f.dashboard(
        &[&with_store[..], &["--tab", "modules"]].concat(),
        "click:3:0",
    ));
    assert_eq!(v["tab"], "Maps");
    let v = json_of(&f.dashboard(&[&with_store[..], &["--tab", "modules"]].concat(), "wait"));
    assert_eq!(v["tab"], "Modules");
}

#[test]
fn a_store_that_does_not_open_is_said_in_its_tab_and_maps_works_on() {
    let f = Fixture::new();
    let missing = f.path("no-store");
    let v = json_of(&f.dashboard(&["--store", &missing, "--tab", "modules"], "wait"));
    assert_eq!(v["tab"], "Modules");
    let waiting = v["waiting"].as_str().unwrap();
    assert!(
        waiting.contains("modules build") && waiting.contains("no-store"),
        "{waiting}"
    );
    assert!(v["screen"].to_string().contains("modules build"));
    // The Maps tab built its database meanwhile.
    assert_eq!(tab(&v, "Maps")["state"]["db_entries"], 4);
    let bad = f.dashboard(&["--tab", "sideways"], "wait");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("use maps or modules"), "{stderr}");
    assert!(Path::new(&f.path("db/manifest.json")).is_file());
}

/// The config file's `[modules]` section sets the Modules tab (flags win
/// over it); a bad value there names the file, line and key; `W` in the
/// Maps tab rewrites its own settings and keeps the section.
#[test]
fn the_config_files_modules_section_sets_the_modules_tab() {
    let f = Fixture::new();
    let config = f.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "interval_ms = 900\n[modules]\nstore = {:?}\nprompts = {:?}\nrecovery = \"select:15\"\n",
            f.path("store"),
            f.path("prompts.jsonl")
        ),
    )
    .unwrap();
    let config_arg = config.to_string_lossy().into_owned();
    let v = json_of(&f.dashboard(
        &["--config", &config_arg, "--tab", "modules"],
        "n,wait,1,W,wait",
    ));
    let modules = &tab(&v, "Modules")["state"];
    assert_eq!(modules["recovery"], "select:15");
    assert!(modules["current"]["ttft_ms"][2].as_f64().unwrap() > 0.0);
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains("[modules]") && written.contains("select:15"),
        "{written}"
    );
    assert!(
        written.contains("split = "),
        "W wrote the Maps tab's settings: {written}"
    );

    std::fs::write(
        &config,
        "theme = \"dark\"\n[modules]\nrecovery = \"sideways\"\n",
    )
    .unwrap();
    let bad = f.dashboard(&["--config", &config_arg], "wait");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(
        last.contains("config.toml:3") && last.contains("modules.recovery"),
        "{stderr}"
    );
}
