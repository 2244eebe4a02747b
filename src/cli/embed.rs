//! `attncache embed`: sentence embeddings and their cosine matrix.

use super::setup::{Target, load_model};
use std::time::Instant;

use serde_json::json;

use crate::model::{cosine, ms, truncation_note};

pub fn run(target: &Target, texts: &[String], json: bool) -> anyhow::Result<()> {
    let model = load_model(target, "embed")?;
    let start = Instant::now();
    let embedded = model.embed(texts)?;
    let total = start.elapsed();
    for (i, t) in embedded
        .texts
        .iter()
        .enumerate()
        .filter(|(_, t)| t.truncated)
    {
        eprintln!("warning: text [{i}]: {}", truncation_note(t.ids.len()));
    }
    let cos: Vec<Vec<f32>> = embedded
        .embeddings
        .iter()
        .map(|a| embedded.embeddings.iter().map(|b| cosine(a, b)).collect())
        .collect();
    let tokens: Vec<usize> = embedded.texts.iter().map(|t| t.ids.len()).collect();
    let timings = json!({
        "tokenize": ms(embedded.tokenize),
        "embeddings": ms(embedded.forward.embeddings),
        "attention": ms(embedded.forward.attention()),
        "rest": ms(embedded.forward.rest()),
        "forward": ms(embedded.forward.total()),
        "pooling": ms(embedded.pooling),
        "total": ms(total),
    });
    if json {
        let out = json!({
            "model": model.files.dir,
            "dim": model.shape().hidden,
            "texts": texts,
            "tokens": tokens,
            "truncated": embedded.texts.iter().map(|t| t.truncated).collect::<Vec<_>>(),
            "embeddings": embedded.embeddings,
            "cosine": cos,
            "timings_ms": timings,
        });
        println!("{out}");
        return Ok(());
    }
    for (i, (text, n)) in texts.iter().zip(&tokens).enumerate() {
        println!("[{i}] {n:>3} tokens  {text}");
    }
    println!("\ncosine similarity:");
    print!("     ");
    for j in 0..texts.len() {
        print!("{:>8}", format!("[{j}]"));
    }
    println!();
    for (i, row) in cos.iter().enumerate() {
        print!("{:>4} ", format!("[{i}]"));
        for c in row {
            print!("{c:>8.4}");
        }
        println!();
    }
    println!(
        "\ntime (one batch of {}): tokenize {:.2} ms, forward {:.2} ms (attention {:.2} ms, rest {:.2} ms), total {:.2} ms",
        texts.len(),
        ms(embedded.tokenize),
        ms(embedded.forward.total()),
        ms(embedded.forward.attention()),
        ms(embedded.forward.rest()),
        ms(total)
    );
    Ok(())
}
