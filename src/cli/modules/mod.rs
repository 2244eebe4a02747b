//! `attncache modules …`: modular attention reuse (Prompt Cache) from the
//! command line: generate a workload, build a store, run a prompt, evaluate
//! and calibrate the recovery.

mod build;
mod dashboard;
mod eval;
mod frontier;
mod run;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::setup::{Target, load_model};
use crate::eval::{ModularBench, RecoveryCalibration};
use crate::model::Model;
use crate::model::llama::LlamaDecoder;
use crate::modules::{
    ModuleStore, Positions, PromptSpec, Recovery, Rescale, Schema, Setting, decoder_of,
    load_prompts,
};
use crate::storage::ModelIdentity;

/// Where the recovery calibrated for a store is kept.
const RECOVERY_FILE: &str = "recovery.json";

/// The store and how prompts are laid out over it.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The module store (built by `modules build`).
    #[arg(long, value_name = "DIR")]
    pub store: PathBuf,
    /// The schema the store must have been built from (refused when it
    /// differs).
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// schema (the paper's fixed ranges) or contiguous (rotated to where the
    /// modules land).
    #[arg(long, default_value = "contiguous", value_name = "P")]
    pub positions: String,
    /// none, first:K, select:R, probe:R[@L] or probe-modules:M (default:
    /// the store's calibrated recovery.json for these positions, else none).
    #[arg(long, value_name = "R")]
    pub recovery: Option<String>,
    /// APE's rescaling T,S of the question's attention to cached module
    /// tokens, each in (0, 4] (1,1 is exact softmax; default: the calibrated
    /// setting's, else none).
    #[arg(long, value_name = "T,S")]
    pub rescale: Option<String>,
    /// Wrap each prompt in the model's chat template.
    #[arg(long)]
    pub chat: bool,
}

/// A prompts file and how much of it to use.
#[derive(Debug, Args)]
pub struct PromptsArgs {
    /// The prompts (JSONL).
    #[arg(long, value_name = "FILE")]
    pub prompts: PathBuf,
    /// Use only the first N prompts.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// The `modules` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModulesCommand {
    /// Generate a reproducible workload (schema.toml + prompts.jsonl) from
    /// the Rotten Tomatoes text: multidoc, passkey, fewshot or facts.
    Workload {
        /// multidoc, passkey, fewshot or facts.
        #[arg(value_name = "KIND")]
        kind: String,
        /// Modules per prompt (documents, filler modules, examples).
        #[arg(long, default_value_t = 8, value_name = "N")]
        per_prompt: usize,
        /// Modules in the schema's pool.
        #[arg(long, default_value_t = 32, value_name = "N")]
        pool: usize,
        /// Prompts.
        #[arg(long, default_value_t = 20, value_name = "N")]
        prompts: usize,
        /// The seed.
        #[arg(long, default_value_t = 1, value_name = "S")]
        seed: u64,
        /// Where to write schema.toml and prompts.jsonl.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run every module of a schema once and store its keys and values (f16).
    Build {
        /// The schema (TOML or JSON).
        #[arg(long, value_name = "FILE")]
        schema: PathBuf,
        /// Where to write the store (replaced only when the build succeeds;
        /// modules unchanged since the store there was built are copied).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// prefixed (every module encoded after the preamble, which is stored
        /// once: one shared attention sink, any number of modules) or alone
        /// (each module on its own at its schema positions, the paper's way).
        #[arg(long, default_value = "prefixed", value_name = "E")]
        encode: String,
        /// Build for chat prompts: the chat template's header (and system
        /// turn) is the preamble; such a store serves only `--chat` runs.
        #[arg(long)]
        chat: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Prefill one prompt from the store: the decision for every module, TTFT
    /// and stages, the top-5 next tokens, optionally a greedy continuation
    /// and the exact run beside it.
    Run {
        #[command(flatten)]
        store: StoreArgs,
        /// Greedy continuation of N tokens.
        #[arg(long, default_value_t = 0, value_name = "N")]
        generate: usize,
        /// Also run the prompt exactly and show both.
        #[arg(long)]
        compare: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// A prompt record (`{"modules": [...], "text": "..."}`) or plain text.
        #[arg(value_name = "PROMPT")]
        prompt: String,
    },
    /// Exact vs prefix cache vs modular on a prompts file, interleaved: TTFT,
    /// speedups, fidelity, task accuracy, per layer × head.
    Eval {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        prompts: PromptsArgs,
        /// Timed passes (speedups are medians over them).
        #[arg(long, default_value_t = 2, value_name = "N", value_parser = super::timed_repeats)]
        repeats: usize,
        /// Prompts (the first ones) that also get the per-layer × head view.
        #[arg(long, default_value_t = 2, value_name = "N")]
        heads: usize,
        /// Tokens of the exact greedy continuation scored teacher-forced.
        #[arg(long, default_value_t = 16, value_name = "N")]
        continuation: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The modular view: the prompt as a strip of modules, the per-head
    /// similarity grid, TTFT of exact / prefix / modular and both answers
    /// live; tune the recovery, switch positions, rebuild the store.
    Dashboard {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        view: dashboard::ViewArgs,
    },
    /// The speed–fidelity frontier: every recovery kind at a sweep of
    /// settings on the same prompts, exact interleaved; frontier.json and a
    /// plot (PNG + SVG) of TTFT speedup against KL and top-1 with the Pareto
    /// set marked.
    Frontier {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        prompts: PromptsArgs,
        /// Kinds to sweep, comma-separated (none, first, select, probe,
        /// probe-modules; default all).
        #[arg(long, value_name = "K,…")]
        kinds: Option<String>,
        /// Where to write frontier.json, frontier.png and frontier.svg.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The fastest setting whose error on calibration prompts stays within a
    /// budget at 95 % confidence; written to the store's recovery.json, which
    /// run, eval and the dashboard then use by default.
    Calibrate {
        #[command(flatten)]
        store: StoreArgs,
        /// The calibration prompts.
        #[command(flatten)]
        prompts: PromptsArgs,
        /// Which knob: auto (every kind, with and without APE's rescaling),
        /// none, first, select, probe or probe-modules.
        #[arg(long, default_value = "auto", value_name = "KIND")]
        kind: String,
        /// kl (mean KL ≤ budget), top1 (agreement ≥ budget) or accuracy
        /// (task-accuracy loss ≤ budget points), each at 95 % confidence.
        #[arg(long, default_value = "kl", value_name = "O")]
        objective: String,
        /// The budget (kl: nats, e.g. 0.02; top1: a share, e.g. 0.95;
        /// accuracy: points, e.g. 1).
        #[arg(long, default_value_t = 0.02, value_name = "B")]
        budget: f64,
        /// Also write the frontier it chose from (frontier.json, PNG, SVG).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Measure and print without writing recovery.json.
        #[arg(long)]
        no_save: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `modules` subcommand.
pub fn run(target: &Target, command: ModulesCommand) -> anyhow::Result<()> {
    match command {
        ModulesCommand::Workload {
            kind,
            per_prompt,
            pool,
            prompts,
            seed,
            out,
            json,
        } => build::workload(&kind, (per_prompt, pool, prompts, seed), &out, json),
        ModulesCommand::Build {
            schema,
            out,
            encode,
            chat,
            json,
        } => build::build(target, (&schema, &out), (&encode, chat), json),
        ModulesCommand::Run {
            store,
            generate,
            compare,
            json,
            prompt,
        } => run::run(target, &store, &prompt, (generate, compare), json),
        ModulesCommand::Eval {
            store,
            prompts,
            repeats,
            heads,
            continuation,
            json,
        } => eval::eval(
            target,
            &store,
            &prompts,
            eval::EvalSizes {
                repeats,
                heads,
                continuation,
            },
            json,
        ),
        ModulesCommand::Dashboard { store, view } => dashboard::run(target, &store, &view),
        ModulesCommand::Frontier {
            store,
            prompts,
            kinds,
            out,
            json,
        } => frontier::frontier(target, &store, &prompts, kinds.as_deref(), &out, json),
        ModulesCommand::Calibrate {
            store,
            prompts,
            kind,
            objective,
            budget,
            out,
            no_save,
            json,
        } => eval::calibrate(
            target,
            &store,
            &prompts,
            (&kind, &objective, budget),
            (out.as_deref(), !no_save),
            json,
        ),
    }
}

/// A loaded decoder with its store, positions and setting.
struct Opened {
    model: Arc<Model>,
    store: ModuleStore,
    positions: Positions,
    recovery: Setting,
}

impl Opened {
    fn decoder(&self) -> &LlamaDecoder {
        self.model.decoder().expect("checked when opened")
    }

    /// The decoder, tokenizer and store, as evaluation and calibration run them.
    fn bench(&self) -> ModularBench<'_> {
        ModularBench {
            decoder: self.decoder(),
            tokenizer: &self.model.tokenizer,
            store: &self.store,
        }
    }
}

/// Loads the model (a decoder), opens the store and resolves the options.
fn open(target: &Target, args: &StoreArgs, command: &str) -> anyhow::Result<Opened> {
    let positions = Positions::parse(&args.positions)?;
    let recovery = args.recovery.as_deref().map(Recovery::parse).transpose()?;
    let rescale = args.rescale.as_deref().map(Rescale::parse).transpose()?;
    let model = load_model(target, command)?;
    decoder_of(&model)?;
    target.check_resident()?;
    let mut store = ModuleStore::open(&args.store, &ModelIdentity::of(&model)?)?;
    if target.resident {
        store.make_resident(model.device())?;
    }
    if let Some(path) = &args.schema {
        store.check_schema(&Schema::load(path)?, path)?;
    }
    let saved = saved_recovery(store.dir(), positions)?;
    let recovery = match (recovery, saved) {
        (Some(r), _) => Setting {
            recovery: r,
            rescale,
        },
        (None, Some(s)) => Setting {
            rescale: rescale.or(s.rescale),
            ..s
        },
        (None, None) => Setting {
            recovery: Recovery::None,
            rescale,
        },
    };
    Ok(Opened {
        model,
        store,
        positions,
        recovery,
    })
}

/// The setting calibrated for `positions` in the store's recovery.json.
fn saved_recovery(dir: &Path, positions: Positions) -> anyhow::Result<Option<Setting>> {
    let path = dir.join(RECOVERY_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let saved: Vec<RecoveryCalibration> =
        serde_json::from_slice(&std::fs::read(&path)?).map_err(|e| {
            anyhow::anyhow!(
                "{} is malformed ({e}): recalibrate or delete it",
                path.display()
            )
        })?;
    saved
        .iter()
        .find(|c| c.positions == positions.name())
        .map(|c| Setting::parse(&c.chosen))
        .transpose()
}

/// Reads the prompts file against the store's schema.
fn prompts(store: &ModuleStore, args: &PromptsArgs) -> anyhow::Result<Vec<PromptSpec>> {
    let mut prompts = load_prompts(&args.prompts, store.schema())?;
    if let Some(n) = args.limit {
        prompts.truncate(n);
    }
    Ok(prompts)
}
