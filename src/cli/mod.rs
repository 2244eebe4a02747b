//! The `attncache` command line: one module per subcommand.

mod attention;
mod demo;
mod embed;
mod fetch;
mod heatmap;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Faster transformer prefill by reusing attention maps.
#[derive(Debug, Parser)]
#[command(name = "attncache", version, about)]
pub struct Cli {
    /// A local Hugging Face-layout BERT directory (config.json,
    /// model.safetensors, tokenizer.json) instead of the default model.
    #[arg(long, global = true, value_name = "DIR")]
    pub model: Option<PathBuf>,

    /// What to do (default: `demo`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download the default model and the Rotten Tomatoes data (idempotent).
    Fetch {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Sentence embeddings, their cosine matrix, token counts and timings.
    Embed {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// The texts to embed.
        #[arg(required = true, value_name = "TEXT")]
        texts: Vec<String>,
    },
    /// One head's post-softmax attention map for a text.
    Attention {
        /// Layer index (0-based).
        #[arg(long)]
        layer: usize,
        /// Head index (0-based).
        #[arg(long)]
        head: usize,
        /// Print one JSON object instead of a text heatmap.
        #[arg(long)]
        json: bool,
        /// The text.
        #[arg(value_name = "TEXT")]
        text: String,
    },
    /// A short tour: embeddings, one attention map, and capture → reuse of
    /// every map with its effect on output and time.
    Demo,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let model = cli.model.as_deref();
    match cli.command.unwrap_or(Command::Demo) {
        Command::Fetch { json } => fetch::run(json),
        Command::Embed { json, texts } => embed::run(model, &texts, json),
        Command::Attention {
            layer,
            head,
            json,
            text,
        } => attention::run(model, layer, head, &text, json),
        Command::Demo => demo::run(model),
    }
}
