//! Corpora: the built-in splits are disjoint and deterministic; user files load.

use std::collections::HashSet;

use attncache::data::{CorpusOptions, CorpusSpec};

fn load(spec: &str) -> Vec<attncache::data::Item> {
    CorpusSpec::parse(spec)
        .unwrap()
        .load(&CorpusOptions::default())
        .unwrap()
        .items
}

#[test]
fn builtin_splits_are_disjoint_deterministic_and_cover_the_reviews() {
    let (db, calib, test) = (load("rt:db"), load("rt:calib"), load("rt:test"));
    let texts = |items: &[attncache::data::Item]| {
        items.iter().map(|i| i.text.clone()).collect::<HashSet<_>>()
    };
    let (a, b, c) = (texts(&db), texts(&calib), texts(&test));
    assert!(a.is_disjoint(&b) && a.is_disjoint(&c) && b.is_disjoint(&c));
    assert_eq!(a.len(), db.len(), "duplicates inside rt:db");
    let all = load("rt:all");
    assert_eq!(db.len() + calib.len() + test.len(), all.len());
    // Roughly 40 / 20 / 40 of the ~12,800 reviews.
    assert!(all.len() > 12_000, "{}", all.len());
    for (part, share) in [(&db, 0.4), (&calib, 0.2), (&test, 0.4)] {
        let got = part.len() as f64 / all.len() as f64;
        assert!(
            (got - share).abs() < 0.03,
            "split share {got:.3}, expected {share}"
        );
    }
    assert!(
        db.iter()
            .all(|i| matches!(i.label.as_deref(), Some("fresh" | "rotten")))
    );
    assert_eq!(load("rt:db"), db, "splits are not deterministic");
    let plots = load("rt-plot:all");
    assert!(plots.len() > 1000 && plots.iter().all(|i| i.label.is_none()));
    assert!(texts(&plots).is_disjoint(&texts(&all)));
}

#[test]
fn user_corpora_load_from_text_jsonl_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("c.txt");
    std::fs::write(&txt, "first line\n\n  second line  \n").unwrap();
    let items = load(txt.to_str().unwrap());
    assert_eq!(
        items.iter().map(|i| i.text.as_str()).collect::<Vec<_>>(),
        ["first line", "second line"]
    );

    let jsonl = dir.path().join("c.jsonl");
    std::fs::write(
        &jsonl,
        "{\"text\": \"a\", \"label\": \"pos\"}\n{\"text\": \"b\", \"label\": 1}\n",
    )
    .unwrap();
    let items = load(jsonl.to_str().unwrap());
    assert_eq!(items[0].label.as_deref(), Some("pos"));
    assert_eq!(items[1].label.as_deref(), Some("1"));

    let csv = dir.path().join("c.csv");
    std::fs::write(&csv, "review,stars\n\"good, really\",5\nbad,1\n").unwrap();
    let options = CorpusOptions {
        text_column: Some("review".into()),
        label_column: Some("stars".into()),
    };
    let items = CorpusSpec::parse(csv.to_str().unwrap())
        .unwrap()
        .load(&options)
        .unwrap()
        .items;
    assert_eq!(items[0].text, "good, really");
    assert_eq!(items[1].label.as_deref(), Some("1"));

    let err = CorpusSpec::parse(csv.to_str().unwrap())
        .unwrap()
        .load(&CorpusOptions::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("no column `text`") && err.to_string().contains("--text-column"),
        "{err}"
    );
    std::fs::write(&jsonl, "{\"txt\": 1}\n").unwrap();
    let err = CorpusSpec::parse(jsonl.to_str().unwrap())
        .unwrap()
        .load(&CorpusOptions::default())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("line 1 has no string `text` field"),
        "{err}"
    );
    assert!(
        CorpusSpec::parse("rt:nope")
            .unwrap_err()
            .to_string()
            .contains("unknown split")
    );
    assert!(
        CorpusSpec::parse("/no/such/file.txt")
            .unwrap_err()
            .to_string()
            .contains("neither")
    );
}
