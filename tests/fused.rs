//! The fused CPU kernels against the reference (candle ops) forward: the same
//! hidden states and maps for inputs of many lengths, with every head
//! computed, some reused, or all reused; on the tiny model and the real one.

mod common;

use attncache::model::{HeadPlan, Kernels, LayerPlan, Model, StaticPlan, TokenizedText};
use candle_core::{DType, Tensor};
use common::max_abs_diff;

/// The model twice: fused (the CPU default) and reference.
fn both(model: &Model) -> (Model, Model) {
    let mut reference = model.clone();
    reference.set_kernels(Kernels::Reference);
    let mut fused = model.clone();
    fused.set_kernels(Kernels::Fused);
    (fused, reference)
}

/// Last hidden state and every captured map under `plan`.
fn run(
    model: &Model,
    text: &TokenizedText,
    plan: StaticPlan,
) -> (Tensor, Vec<Vec<Option<Tensor>>>) {
    let (_, out) = model
        .forward(std::slice::from_ref(text), &mut plan.clone())
        .unwrap();
    (out.hidden, out.maps)
}

/// A plan capturing every head but reusing `donor`'s maps in the heads
/// where `reuse(layer, head)`.
fn mixed_plan(
    model: &Model,
    donor: &[Vec<Tensor>],
    reuse: impl Fn(usize, usize) -> bool,
) -> StaticPlan {
    let s = model.shape();
    StaticPlan::new(
        (0..s.layers)
            .map(|l| {
                LayerPlan::new(
                    (0..s.heads)
                        .map(|h| match reuse(l, h) {
                            true => HeadPlan::reuse(donor[l][h].clone()),
                            false => HeadPlan::Capture,
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

/// Fused and reference agree within `tol` on `text` under exact, mixed and
/// full reuse plans (donor: another text of the same length), with the
/// donor's maps in f32 and in f16 (as a database stores them).
fn check_agreement(model: &Model, text: &TokenizedText, donor: &TokenizedText, tol: f32) {
    let (fused, reference) = both(model);
    let donor_maps = reference.capture_maps(donor).unwrap();
    let donor_f16: Vec<Vec<Tensor>> = donor_maps
        .iter()
        .map(|layer| {
            layer
                .iter()
                .map(|m| m.to_dtype(DType::F16).unwrap())
                .collect()
        })
        .collect();
    let s = model.shape();
    let plans = [
        StaticPlan::capture_all(s.layers, s.heads),
        mixed_plan(model, &donor_maps, |l, h| (l + h) % 3 == 0),
        mixed_plan(model, &donor_maps, |_, _| true),
        mixed_plan(model, &donor_f16, |l, h| (l + h) % 2 == 0),
    ];
    for (i, plan) in plans.into_iter().enumerate() {
        let (hf, mf) = run(&fused, text, plan.clone());
        let (hr, mr) = run(&reference, text, plan);
        let diff = max_abs_diff(&hf, &hr);
        assert!(
            diff <= tol,
            "plan {i}, {} tokens: hidden differs by {diff}",
            text.ids.len()
        );
        for (lf, lr) in mf.iter().zip(&mr) {
            for (a, b) in lf.iter().zip(lr) {
                match (a, b) {
                    (Some(a), Some(b)) => {
                        let d = max_abs_diff(a, b);
                        assert!(d <= tol, "plan {i}: a captured map differs by {d}");
                    }
                    (None, None) => {}
                    _ => panic!("plan {i}: one path captured a map the other did not"),
                }
            }
        }
    }
}

#[test]
fn fused_kernels_match_the_reference_on_many_lengths() {
    let (_dir, model) = common::tiny_model();
    let letters: Vec<char> = ('a'..='z').collect();
    for len in [1usize, 2, 3, 5, 8, 13, 21, 34, 55, 62] {
        // Words of one letter each: `len` words → len + 2 tokens, capped by
        // the tiny model's 64 positions.
        let words = |shift: usize| {
            (0..len.min(60))
                .map(|i| letters[(i * 7 + shift) % 26].to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let text = model.tokenizer.encode(&words(0)).unwrap();
        let donor = model.tokenizer.encode(&words(3)).unwrap();
        assert_eq!(text.ids.len(), donor.ids.len());
        check_agreement(&model, &text, &donor, 1e-5);
    }
}

#[test]
fn fused_kernels_match_the_reference_on_the_real_model() {
    let model = common::real_model();
    for a in [
        "The new movie is awesome",
        "A gripping, beautifully acted film that never lets up.",
    ] {
        // The same words in reverse order: same length, other maps.
        let b = a.split(' ').rev().collect::<Vec<_>>().join(" ");
        let text = model.tokenizer.encode(a).unwrap();
        let donor = model.tokenizer.encode(&b).unwrap();
        assert_eq!(text.ids.len(), donor.ids.len(), "{a} / {b}");
        check_agreement(model, &text, &donor, 1e-5);
    }
    // A long input: exact plans only (no same-length donor needed).
    let long = "The film follows a retired detective back to the coastal town where he grew up. "
        .repeat(15);
    let text = model.tokenizer.encode(&long).unwrap();
    assert!(text.ids.len() > 200);
    check_agreement(model, &text, &text, 1e-5);
}
