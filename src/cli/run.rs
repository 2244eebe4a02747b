//! `attncache run`: run texts exactly, from the cache, or in shadow mode.

use std::path::Path;

use serde_json::json;

use super::setup::{Target, load_model, load_policy, open_database};
use crate::engine::{Engine, Mode, Trace};
use crate::text::shorten;

pub fn run(
    target: &Target,
    db: Option<&Path>,
    policy: Option<&str>,
    mode: Option<&str>,
    texts: &[String],
    json: bool,
) -> anyhow::Result<()> {
    let mode = match (mode, db) {
        (Some(m), _) => Mode::parse(m)?,
        (None, Some(_)) => Mode::Shadow,
        (None, None) => Mode::Exact,
    };
    let model = load_model(target, "run")?;
    let engine = match db {
        Some(dir) => {
            let db = open_database(dir, &model)?;
            let policy = load_policy(policy, Some(&db), &model)?;
            Engine::new(model, db, policy)?
        }
        None => Engine::exact_only(model),
    };
    let traces = texts
        .iter()
        .map(|t| engine.run(t, mode).map(|r| r.trace))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if json {
        println!(
            "{}",
            json!({ "policy": engine.policy().name, "runs": traces })
        );
    } else {
        for trace in &traces {
            print_trace(trace);
        }
    }
    Ok(())
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
                    "d={:.4} #{} {:?}",
                    n.distance,
                    n.entry,
                    shorten(&n.text, 40)
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
        "  ms: tokenize {:.2} · feature {:.2} · search {:.2} · map load {:.2} · attention {:.2} · rest {:.2} · total {:.2}{}",
        t.tokenize,
        t.feature,
        t.search,
        t.map_load,
        t.attention,
        t.rest,
        t.total,
        trace
            .exact_timings
            .map_or(String::new(), |e| format!(" (exact: total {:.2})", e.total))
    );
}
