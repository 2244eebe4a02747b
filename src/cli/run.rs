//! `attncache run`: run texts exactly, from the cache, or in shadow mode.

use std::path::Path;

use serde_json::json;

use super::setup::{Target, load_model, load_policy, open_database};
use crate::engine::{Engine, Mode, Trace};
use crate::model::{TokenProb, truncation_note};
use crate::text::shorten;

/// What `attncache run` was asked to do besides the texts.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions<'a> {
    /// `--db`.
    pub db: Option<&'a Path>,
    /// `--policy`.
    pub policy: Option<&'a str>,
    /// `--mode`.
    pub mode: Option<&'a str>,
    /// `--chat`: wrap each text in the model's chat template.
    pub chat: bool,
    /// `--json`.
    pub json: bool,
}

/// Most likely next tokens reported for a decoder.
const TOP: usize = 5;

pub fn run(target: &Target, options: RunOptions, texts: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.policy.is_none() || options.db.is_some(),
        "--policy needs a database to reuse maps from: pass --db DIR"
    );
    let mode = match (options.mode, options.db) {
        (Some(m), _) => Mode::parse(m)?,
        (None, Some(_)) => Mode::Shadow,
        (None, None) => Mode::Exact,
    };
    let mut model = load_model(target, "run")?;
    let texts = if options.chat {
        texts
            .iter()
            .map(|t| model.chat_prompt(t))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        texts.to_vec()
    };
    let decoder = model.decoder().is_some();
    let engine = match options.db {
        Some(dir) => {
            let db = open_database(target, dir, &mut model)?;
            let policy = load_policy(options.policy, Some(&db), &model)?;
            Engine::new(model.clone(), db, policy)?
        }
        None => Engine::exact_only(model.clone()),
    };
    let mut runs = Vec::with_capacity(texts.len());
    for text in &texts {
        let out = engine.run(text, mode)?;
        if out.trace.truncated {
            eprintln!("warning: {}", truncation_note(out.trace.tokens.len()));
        }
        let top = if decoder {
            Some(model.top_tokens(&out.embedding, TOP)?)
        } else {
            None
        };
        runs.push((out.trace, top));
    }
    if options.json {
        let runs = runs
            .into_iter()
            .map(|(trace, top)| {
                let mut value = serde_json::to_value(trace)?;
                if let Some(top) = top {
                    value["top"] = serde_json::to_value(top)?;
                }
                Ok(value)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        println!(
            "{}",
            json!({ "policy": engine.policy().name, "runs": runs })
        );
    } else {
        for (trace, top) in &runs {
            print_trace(trace);
            if let Some(top) = top {
                print_top(top);
            }
        }
    }
    Ok(())
}

/// The most likely next tokens, one line.
fn print_top(top: &[TokenProb]) {
    let cells: Vec<String> = top
        .iter()
        .map(|t| format!("{:?} {:.1}%", t.token, t.prob * 100.0))
        .collect();
    println!("  next token: {}", cells.join(" · "));
}

/// A compact text rendering of a trace: neighbours, a layer × head grid of
/// decisions (and true similarity in shadow mode), stage timings.
fn print_trace(trace: &Trace) {
    println!(
        "{:?} ({} tokens), mode {:?}, policy {}",
        trace.text,
        trace.tokens.len(),
        trace.mode,
        trace.policy
    );
    let heads = trace.layers.first().map_or(0, |l| l.heads.len());
    println!(
        "  hit rate {:.1}% of {} heads{}",
        trace.hit_rate * 100.0,
        heads * trace.layers.len(),
        trace.fidelity.map_or(String::new(), |f| format!(
            ", output cosine vs exact {f:.5}"
        ))
    );
    for (l, layer) in trace.layers.iter().enumerate() {
        let cells: String = layer
            .heads
            .iter()
            .map(|h| {
                let glyph = if h.hit { '●' } else { '·' };
                match h.similarity {
                    Some(s) => format!(" {glyph}{:>3.0}", s * 100.0),
                    None => format!(" {glyph}"),
                }
            })
            .collect();
        let neighbour = layer
            .neighbour
            .as_ref()
            .map_or("no neighbour".to_string(), |n| {
                format!(
                    "d={:.4} #{} {:?}{}",
                    n.distance,
                    n.entry,
                    shorten(&n.text, 40),
                    if n.carried { " (carried)" } else { "" }
                )
            });
        println!("  L{l}{cells}   {neighbour}");
    }
    if trace
        .layers
        .iter()
        .any(|l| l.heads.iter().any(|h| h.similarity.is_some()))
    {
        println!("  (● reused, · computed; number = true similarity of the neighbour's map, %)");
    }
    let t = &trace.timings;
    println!(
        "  ms: tokenize {:.2} · feature {:.2} · search {:.2} · re-rank {:.2} · map load {:.2} · attention {:.2} · rest {:.2} · total {:.2}{}",
        t.tokenize,
        t.feature,
        t.search,
        t.rerank,
        t.map_load,
        t.attention,
        t.rest,
        t.total,
        trace
            .exact_timings
            .map_or(String::new(), |e| format!(" (exact: total {:.2})", e.total))
    );
}
