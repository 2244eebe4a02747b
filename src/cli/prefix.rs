//! `attncache prefix`: attention-map reuse against prefix caching on a
//! decoder's templated prompts (exact, prefix cache, map reuse, both).

use std::sync::Arc;

use super::eval::Workload;
use super::progress;
use super::setup::{Target, load_corpus, load_model, load_policy, open_database, task_template};
use crate::engine::Engine;
use crate::eval::{Classifier, Machine, PrefixComparison, compare_with_prefix_cache};

pub fn run(
    target: &Target,
    work: Workload,
    policy: Option<&str>,
    repeats: usize,
    json: bool,
) -> anyhow::Result<()> {
    let mut model = load_model(target, "prefix")?;
    let db = open_database(target, work.db, &mut model)?;
    anyhow::ensure!(
        model.padded_to().is_none(),
        "{} holds padded inputs (`build --pad-to`); prefix caching runs on inputs at their own length: pass a database built without --pad-to",
        work.db.display()
    );
    let decoder = model.decoder().ok_or_else(|| {
        anyhow::anyhow!("prefix caching compares decoders: pass --model smollm2 or qwen2.5-0.5b")
    })?;
    let policy = load_policy(policy, Some(&db), &model)?;
    let corpus = load_corpus(work.split, &work.columns, work.limit, work.shots, &model)?;
    let classifier = Classifier::for_task(&model, &db, &corpus)?;
    // The template's tokens, up to where the texts begin: every query shares
    // its longest common token prefix with them.
    let template = model
        .tokenizer
        .encode(&task_template(&model, work.shots)?)?;
    let prefix = Arc::new(decoder.prefix_cache(&template.ids)?);
    let engine = Engine::new(model.clone(), db, policy)?;
    let bar = progress::bar(
        corpus.items.len() * repeats.max(1),
        &format!("exact, prefix, reuse, both on {}", corpus.name),
    );
    let result = compare_with_prefix_cache(
        &engine,
        prefix,
        &corpus,
        classifier.as_ref(),
        repeats,
        &mut |d, _| bar.set_position(d as u64),
    );
    bar.finish_and_clear();
    let result = result?;
    if json {
        let mut out = serde_json::to_value(&result)?;
        out["machine"] = serde_json::to_value(Machine::this(&target.device))?;
        println!("{out}");
    } else {
        print_comparison(&result);
    }
    Ok(())
}

fn print_comparison(c: &PrefixComparison) {
    println!(
        "policy {} on {} ({} queries, {:.1} tokens, {:.1} served by the prefix cache; median of {} repeats)",
        c.policy, c.split, c.queries, c.mean_tokens, c.mean_prefix_tokens, c.repeats
    );
    println!(
        "  {:<7} {:>9} {:>12} {:>8} {:>11} {:>9} {:>9} {:>10} {:>9}",
        "run",
        "total ms",
        "attention ms",
        "e2e ×",
        "attention ×",
        "hit rate",
        "accuracy",
        "agreement",
        "KL"
    );
    let pct = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.1}%", v * 100.0));
    for r in &c.runs {
        println!(
            "  {:<7} {:>9.2} {:>12.2} {:>8.3} {:>11.3} {:>8.1}% {:>9} {:>10} {:>9.5}",
            r.run,
            r.total_ms,
            r.attention_ms,
            r.e2e_speedup,
            r.attention_speedup,
            r.hit_rate * 100.0,
            pct(r.accuracy),
            pct(r.agreement),
            r.kl_mean
        );
    }
    println!(
        "  map reuse on top of the prefix cache: {:.3}× end to end, {:.3}× attention (prefix / both)",
        c.reuse_over_prefix_e2e, c.reuse_over_prefix_attention
    );
}
