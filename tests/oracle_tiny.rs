//! The oracle frontier on a tiny generated BERT: its choice per head is the
//! truly most similar same-length entry, found independently here from the
//! entries' own exact maps.

mod common;

use attncache::cache::similarity;
use attncache::data::{Corpus, Item};
use attncache::eval::{ORACLE_SCALE, oracle_choices, oracle_frontier};
use common::tiny_model;

fn corpus(texts: &[&str]) -> Corpus {
    Corpus {
        name: "tiny".into(),
        items: texts
            .iter()
            .map(|t| Item {
                text: t.to_string(),
                label: None,
            })
            .collect(),
    }
}

const ENTRIES: [&str; 8] = [
    "the movie was great",
    "the plot was bad",
    "a film is not fun",
    "the movie is fun",
    "a plot and a film",
    "great great great great",
    "the movie was not great at all",
    "fun",
];

#[test]
fn the_oracle_picks_the_truly_most_similar_same_length_entry_for_every_head() {
    let (_model_dir, model) = tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let db = common::tiny_database(&model, &ENTRIES, dir.path());
    let shape = *model.shape();

    for query in [
        "the film was bad",
        "a movie is great",
        "the movie was great",
    ] {
        let tokenized = model.tokenizer.encode(query).unwrap();
        let s = tokenized.ids.len();
        let truth = model.capture_maps(&tokenized).unwrap();
        let choices = oracle_choices(&model, &db, &tokenized).unwrap();
        // Independently: every same-length entry's own exact maps.
        let candidates: Vec<(usize, Vec<Vec<Vec<f32>>>)> = ENTRIES
            .iter()
            .enumerate()
            .filter_map(|(e, text)| {
                let t = model.tokenizer.encode(text).unwrap();
                (t.ids.len() == s).then(|| {
                    let maps = model.capture_maps(&t).unwrap();
                    let flat = maps
                        .iter()
                        .map(|l| {
                            l.iter()
                                .map(|m| m.flatten_all().unwrap().to_vec1().unwrap())
                                .collect()
                        })
                        .collect();
                    (e, flat)
                })
            })
            .collect();
        assert!(candidates.len() >= 3, "the test needs several candidates");
        for l in 0..shape.layers {
            for h in 0..shape.heads {
                let exact: Vec<f32> = truth[l][h].flatten_all().unwrap().to_vec1().unwrap();
                let sims: Vec<(usize, f32)> = candidates
                    .iter()
                    .map(|(e, maps)| (*e, similarity(&maps[l][h], &exact, s)))
                    .collect();
                let best = sims.iter().map(|x| x.1).fold(f32::MIN, f32::max);
                let choice = choices[l][h].expect("same-length entries exist");
                let chosen = sims
                    .iter()
                    .find(|(e, _)| *e == choice.entry as usize)
                    .unwrap_or_else(|| panic!("entry {} is not of length {s}", choice.entry));
                // The stored maps are f16: the choice may differ from the
                // best only by a similarity within f16 rounding.
                assert!(
                    best - chosen.1 <= 2e-3,
                    "{query:?} L{l}H{h}: chose {chosen:?}, best {best} in {sims:?}"
                );
                assert!((choice.similarity - chosen.1).abs() <= 2e-3);
            }
        }
        if ENTRIES.contains(&query) {
            let own = ENTRIES.iter().position(|e| *e == query).unwrap() as u32;
            assert!(choices.iter().flatten().all(|c| c.unwrap().entry == own));
            assert!(
                choices
                    .iter()
                    .flatten()
                    .all(|c| c.unwrap().similarity > 0.999)
            );
        }
    }
    // No entry of the query's length: no choice at all.
    let lonely = model
        .tokenizer
        .encode("the the the the the the the the the")
        .unwrap();
    assert!(
        oracle_choices(&model, &db, &lonely)
            .unwrap()
            .iter()
            .flatten()
            .all(Option::is_none)
    );
}

#[test]
fn the_oracle_frontier_reuses_more_as_its_knob_loosens() {
    let (_model_dir, model) = tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let db = common::tiny_database(&model, &ENTRIES, dir.path());
    let queries = corpus(&[
        "the movie was great",
        "the film was bad",
        "a movie is great",
    ]);
    let points = oracle_frontier(
        &model,
        &db,
        &queries,
        None,
        &ORACLE_SCALE,
        1,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(points.len(), ORACLE_SCALE.len());
    for pair in points.windows(2) {
        assert!(pair[1].hit_rate >= pair[0].hit_rate, "{points:#?}");
    }
    // One query of three is an entry: all its heads are ≥ 0.999 similar.
    assert!(points[1].hit_rate >= 1.0 / 3.0 - 1e-9, "{:?}", points[1]);
    assert!(points.last().unwrap().hit_rate > points[1].hit_rate);
    for p in &points {
        assert!(p.e2e_speedup.is_finite() && p.e2e_speedup > 0.0);
        assert!(p.fidelity_mean > 0.0 && p.fidelity_mean <= 1.0 + 1e-6);
        assert_eq!(p.policy, format!("oracle:{}", p.knob as f32));
    }
}
