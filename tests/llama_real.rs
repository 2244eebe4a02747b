//! SmolLM2-135M-Instruct from its GGUF file: tokenizer, chat template,
//! greedy answer, capture → reuse and fused vs reference kernels.

mod common;

use attncache::model::{HeadPlan, Kernels, LayerPlan, Model, StaticPlan, TokenizedText};
use common::{capture_all, check_self_reuse_is_exact, last_logits, max_abs_diff, smollm2};

fn exact_plan(model: &Model) -> StaticPlan {
    StaticPlan::exact(model.shape().layers, model.shape().heads)
}

#[test]
fn the_gguf_tokenizer_round_trips_and_keeps_chat_tokens_whole() {
    let model = smollm2();
    for text in [
        "The capital of France is Paris.",
        "  two leading spaces, tabs\tand\nnewlines",
        "Prices rose 2024% (ouch) — café naïve 東京 🎬",
        "it's a <b>tag</b> and 3.14159",
    ] {
        let t = model.tokenizer.encode(text).unwrap();
        assert_eq!(model.tokenizer.decode(&t.ids).unwrap(), text);
    }
    // Digits are split one by one, as llama.cpp's `smollm` pre-tokenizer does.
    assert_eq!(model.tokenizer.encode("2024").unwrap().ids.len(), 4);
    // Common words with their leading space are single tokens; no BOS is added.
    let paris = model.tokenizer.encode(" Paris").unwrap();
    assert_eq!(paris.ids.len(), 1, "{:?}", paris.tokens);

    let prompt = model.chat_prompt("Hi").unwrap();
    assert!(prompt.starts_with("<|im_start|>system\n"), "{prompt}");
    assert!(prompt.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
    let t = model.tokenizer.encode(&prompt).unwrap();
    let (start, end) = (
        model.tokenizer.token_id("<|im_start|>").unwrap(),
        model.tokenizer.token_id("<|im_end|>").unwrap(),
    );
    assert_eq!((start, end), (1, 2));
    assert_eq!(t.ids[0], start, "the prompt opens with <|im_start|>");
    assert_eq!(t.ids.iter().filter(|&&i| i == start).count(), 3);
    assert_eq!(t.ids.iter().filter(|&&i| i == end).count(), 2);
    // The turn markers are whole tokens followed by the role and a newline.
    let user = t.tokens.iter().position(|s| s == "user").unwrap();
    assert_eq!(t.ids[user - 1], start);
    assert_eq!(
        t.tokens[user + 1],
        "⏎",
        "byte-level tokens are shown decoded"
    );
}

#[test]
fn greedy_decoding_answers_the_capital_of_france() {
    let model = smollm2();
    let prompt = model.chat_prompt("What is the capital of France?").unwrap();
    let mut ids = model.tokenizer.encode(&prompt).unwrap().ids;
    let prompt_len = ids.len();
    let end = model.tokenizer.token_id("<|im_end|>").unwrap();
    for _ in 0..12 {
        let text = TokenizedText {
            type_ids: vec![0; ids.len()],
            tokens: Vec::new(),
            ids: ids.clone(),
            truncated: false,
            padding: 0,
        };
        let logits = last_logits(model, &text, exact_plan(model));
        let next = logits
            .squeeze(0)
            .unwrap()
            .argmax(0)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        if next == end {
            break;
        }
        ids.push(next);
    }
    let answer = model.tokenizer.decode(&ids[prompt_len..]).unwrap();
    assert!(answer.contains("Paris"), "answer: {answer:?}");
}

#[test]
fn reusing_an_inputs_own_maps_reproduces_the_exact_model() {
    let model = smollm2();
    let prompt = model
        .chat_prompt("A gripping, beautifully shot film.")
        .unwrap();
    let text = model.tokenizer.encode(&prompt).unwrap();
    check_self_reuse_is_exact(model, &text);
    let maps = capture_all(model, &text);
    let reuse_all = StaticPlan::new(
        maps.iter()
            .map(|heads| LayerPlan::new(heads.iter().cloned().map(HeadPlan::reuse).collect()))
            .collect(),
    );
    let diff = max_abs_diff(
        &last_logits(model, &text, exact_plan(model)),
        &last_logits(model, &text, reuse_all),
    );
    assert!(diff < 1e-3, "next-token logits moved by {diff}");
}

#[test]
fn fused_and_reference_kernels_agree_exact_and_with_mixed_plans() {
    let model = smollm2();
    let (mut fused, mut reference) = (model.clone(), model.clone());
    fused.set_kernels(Kernels::Fused);
    reference.set_kernels(Kernels::Reference);
    let text = model
        .tokenizer
        .encode(&model.chat_prompt("Dull and far too long.").unwrap())
        .unwrap();
    // A donor of the same length (maps are per length).
    let donor = [
        "Dull and far too loud.",
        "Sharp and far too short.",
        "Bright, funny, too long.",
    ]
    .iter()
    .map(|d| {
        model
            .tokenizer
            .encode(&model.chat_prompt(d).unwrap())
            .unwrap()
    })
    .find(|d| d.ids.len() == text.ids.len())
    .expect("a donor of the same length");
    let diff = max_abs_diff(
        &last_logits(&fused, &text, exact_plan(model)),
        &last_logits(&reference, &text, exact_plan(model)),
    );
    assert!(diff < 1e-3, "exact logits differ by {diff}");
    // Mixed plan: in every layer, group 0 fully reused (K skipped), one head
    // of group 1 reused, group 2 computed and captured.
    let donor_maps = capture_all(model, &donor);
    let plan = || {
        StaticPlan::new(
            donor_maps
                .iter()
                .map(|heads| {
                    LayerPlan::new(
                        heads
                            .iter()
                            .enumerate()
                            .map(|(h, m)| match h {
                                0..=3 => HeadPlan::reuse(m.clone()),
                                6 => HeadPlan::Capture,
                                _ => HeadPlan::Exact,
                            })
                            .collect(),
                    )
                })
                .collect(),
        )
    };
    let (f, r) = (
        last_logits(&fused, &text, plan()),
        last_logits(&reference, &text, plan()),
    );
    let diff = max_abs_diff(&f, &r);
    assert!(diff < 1e-3, "mixed-plan logits differ by {diff}");
    let moved = max_abs_diff(&f, &last_logits(&fused, &text, exact_plan(model)));
    assert!(
        moved > 1e-2,
        "reusing another input's maps changed nothing ({moved})"
    );
}

#[test]
fn the_sentiment_template_prefix_cache_serves_its_tokens_exactly() {
    let model = smollm2();
    let decoder = model.decoder().unwrap();
    let template = model
        .tokenizer
        .encode(&attncache::eval::sentiment_prompt(model, "").unwrap())
        .unwrap();
    let prefix = decoder.prefix_cache(&template.ids).unwrap();
    let prompt = attncache::eval::sentiment_prompt(model, "An overlong, tedious mess.").unwrap();
    let text = model.tokenizer.encode(&prompt).unwrap();
    let served = prefix.shared_len(&text.ids);
    assert!(
        served > text.ids.len() / 2,
        "the template is most of a short prompt ({served} of {})",
        text.ids.len()
    );
    let (out, _) = decoder
        .forward_after_prefix(&text.ids, &prefix, &mut exact_plan(model))
        .unwrap();
    let got = decoder
        .logits(&decoder.last_row(&out.hidden).unwrap())
        .unwrap();
    let diff = max_abs_diff(&got, &last_logits(model, &text, exact_plan(model)));
    assert!(diff < 1e-3, "next-token logits differ by {diff}");
}
