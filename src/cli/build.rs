//! `attncache build`: a database from a corpus.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::progress;
use super::setup::{Target, load_corpus, load_model, pad_model};
use crate::cache::{BuildOptions, FeatureKind, build};
use crate::data::CorpusOptions;

/// Options of `attncache build`.
pub struct BuildArgs<'a> {
    pub corpus: &'a str,
    pub out: &'a Path,
    pub limit: Option<usize>,
    pub feature: &'a str,
    pub hnsw_min_bucket: usize,
    pub columns: CorpusOptions,
    pub shots: usize,
    /// Cut and pad every input to this many tokens (the paper's setting).
    pub pad_to: Option<usize>,
    pub json: bool,
}

pub fn run(target: &Target, args: BuildArgs) -> anyhow::Result<()> {
    let options = BuildOptions {
        feature: FeatureKind::parse(args.feature)?,
        hnsw_min_bucket: args.hnsw_min_bucket,
    };
    let mut model = load_model(target, "build")?;
    if let Some(length) = args.pad_to {
        pad_model(&mut model, length)?;
    }
    let corpus = load_corpus(args.corpus, &args.columns, args.limit, args.shots, &model)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    // Ctrl-C stops the build cleanly: the temporary directory is removed and
    // any database already at --out stays as it was.
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)).ok();
    let bar = progress::bar(corpus.items.len(), &format!("building {}", corpus.name));
    let summary = build(
        &model,
        &corpus,
        args.out,
        options,
        &mut |done, _| bar.set_position(done as u64),
        &cancel,
    );
    bar.finish_and_clear();
    let summary = summary?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "built {}: {} entries from {} ({} duplicates skipped), {:.1} MiB",
            summary.dir.display(),
            summary.entries,
            corpus.name,
            summary.duplicates,
            summary.bytes as f64 / (1024.0 * 1024.0)
        );
    }
    Ok(())
}
