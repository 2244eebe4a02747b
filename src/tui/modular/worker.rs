//! The modular view's engine thread: it owns the model and the module store,
//! runs each prompt three ways (exact with the question's maps captured,
//! prefix cache from the previous prompt, modular with the chosen positions
//! and recovery), continues both answers greedily, and rebuilds the store
//! from a schema with progress and cancel. The UI thread only sends
//! requests and reads events.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, Sender, channel};

use serde::Serialize;

use crate::cache::similarity;
use crate::model::Model;
use crate::model::llama::{Prefilled, argmax};
use crate::model::next_token::{kl_divergence, softmax};
use crate::modules::prefill::{self, Decision, Stages};
use crate::modules::{
    BuildOptions, Layout, LayoutOptions, ModuleStore, Positions, PromptSpec, Recovery, Schema,
    build_store,
};
use crate::storage::ModelIdentity;

/// Tokens of each side's greedy answer.
pub const ANSWER_TOKENS: usize = 12;

/// What the UI asks for.
#[derive(Debug)]
pub enum Request {
    /// Run a prompt three ways.
    Run {
        /// Matches the reply to the request.
        seq: u64,
        /// The prompt.
        prompt: PromptSpec,
        /// Position assignment of the modular run.
        positions: Positions,
        /// Its recovery.
        recovery: Recovery,
        /// Wrap in the chat template.
        chat: bool,
    },
    /// Rebuild the store from a schema file.
    Rebuild {
        /// The schema.
        schema: PathBuf,
        /// Set to stop (the old store stays).
        cancel: Arc<AtomicBool>,
    },
}

/// One prompt run three ways.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// A short label of the prompt.
    pub label: String,
    /// Tokens.
    pub tokens: usize,
    /// Tokens served from the store.
    pub cached: usize,
    /// Cached tokens recomputed.
    pub recomputed: usize,
    /// Per run of rows (modules, chat, question).
    pub decisions: Vec<Decision>,
    /// TTFT of exact, prefix cache and modular, ms.
    pub ttft_ms: [f64; 3],
    /// The modular run's stages.
    pub stages: Stages,
    /// `[layer][head]`: similarity of the question's modular maps to exact.
    pub similarity: Vec<Vec<f32>>,
    /// Greedy answers: exact, modular.
    pub answers: [String; 2],
    /// Same most likely next token.
    pub top1_agree: bool,
    /// KL(exact ‖ modular) of the next token.
    pub kl: f64,
    /// The settings it ran with.
    pub positions: Positions,
    /// The recovery it ran with.
    pub recovery: Recovery,
}

/// What the worker reports.
#[derive(Debug)]
pub enum Event {
    /// A run finished (or failed: the message).
    Ran {
        /// The request's number.
        seq: u64,
        /// The result.
        result: Result<Box<Comparison>, String>,
    },
    /// Rebuild progress.
    Progress {
        /// Modules done.
        done: usize,
        /// Modules in all.
        total: usize,
    },
    /// The rebuild ended: a summary, or why not.
    Rebuilt(Result<String, String>),
}

/// The worker's channels and thread.
pub struct Spawned {
    /// Requests to it (dropping this stops it).
    pub requests: Sender<Request>,
    /// Its events.
    pub events: Receiver<Event>,
    /// Its thread (join after dropping `requests`).
    pub thread: std::thread::JoinHandle<()>,
}

/// Starts the worker; it stops when the request sender is dropped.
pub fn spawn(model: Arc<Model>, store: ModuleStore) -> Spawned {
    let (req_tx, req_rx) = channel::<Request>();
    let (ev_tx, ev_rx) = channel::<Event>();
    let thread = std::thread::spawn(move || {
        let mut worker = Worker {
            model,
            store,
            previous: None,
        };
        for request in req_rx {
            let event = match request {
                Request::Run {
                    seq,
                    prompt,
                    positions,
                    recovery,
                    chat,
                } => Event::Ran {
                    seq,
                    result: worker
                        .run(&prompt, positions, recovery, chat)
                        .map(Box::new)
                        .map_err(|e| format!("{e:#}")),
                },
                Request::Rebuild { schema, cancel } => Event::Rebuilt(
                    worker
                        .rebuild(&schema, &cancel, &ev_tx)
                        .map_err(|e| format!("{e:#}")),
                ),
            };
            if ev_tx.send(event).is_err() {
                break;
            }
        }
    });
    Spawned {
        requests: req_tx,
        events: ev_rx,
        thread,
    }
}

struct Worker {
    model: Arc<Model>,
    store: ModuleStore,
    /// The previous prompt's exact prefill: the prefix cache.
    previous: Option<Prefilled>,
}

impl Worker {
    fn run(
        &mut self,
        prompt: &PromptSpec,
        positions: Positions,
        recovery: Recovery,
        chat: bool,
    ) -> anyhow::Result<Comparison> {
        prompt.check(self.store.schema())?;
        let decoder = self
            .model
            .decoder()
            .expect("the modular view runs decoders");
        let layout = Layout::new(
            self.store.tokenized(),
            prompt,
            &self.model.tokenizer,
            LayoutOptions {
                positions,
                chat: chat.then_some(decoder.chat()),
                max_positions: decoder.shape().max_positions,
            },
        )?;
        let question: Vec<usize> = layout.question_rows().collect();
        let mut modular = prefill::modular(decoder, &self.store, &layout, recovery, &question)?;
        let prefix = prefill::prefix(decoder, &layout, self.previous.take())?;
        let mut exact = prefill::exact(decoder, &layout, &question)?;
        let n = layout.len();
        let similarity = exact
            .maps
            .iter()
            .zip(&modular.maps)
            .map(|(e, m)| e.iter().zip(m).map(|(e, m)| similarity(e, m, n)).collect())
            .collect();
        let stop = self.model.tokenizer.token_id("<|im_end|>");
        let answer = |state: &mut Prefilled| -> anyhow::Result<String> {
            let ids = decoder.greedy(state, ANSWER_TOKENS, stop)?;
            self.model.tokenizer.decode(&ids)
        };
        let answers = [answer(&mut exact.state)?, answer(&mut modular.state)?];
        let comparison = Comparison {
            label: crate::text::shorten(&prompt_label(prompt), 60),
            tokens: n,
            cached: modular.cached_rows,
            recomputed: modular.recomputed_rows,
            decisions: modular.decisions.clone(),
            ttft_ms: [
                exact.stages.total_ms,
                prefix.stages.total_ms,
                modular.stages.total_ms,
            ],
            stages: modular.stages,
            similarity,
            answers,
            top1_agree: argmax(&exact.state.logits) == argmax(&modular.state.logits),
            kl: kl_divergence(
                &softmax(&exact.state.logits),
                &softmax(&modular.state.logits),
            ),
            positions,
            recovery,
        };
        self.previous = Some(exact.state);
        Ok(comparison)
    }

    fn rebuild(
        &mut self,
        schema_path: &std::path::Path,
        cancel: &AtomicBool,
        events: &Sender<Event>,
    ) -> anyhow::Result<String> {
        let schema = Schema::load(schema_path)?;
        let dir = self.store.dir().to_path_buf();
        // The rebuilt store is built the way the open one was.
        let options = BuildOptions {
            encoding: self.store.manifest().encoding,
            chat: self.store.manifest().chat,
        };
        let summary = build_store(
            &self.model,
            &schema,
            &dir,
            options,
            &mut |done, total| {
                let _ = events.send(Event::Progress { done, total });
            },
            cancel,
        )?;
        self.store = ModuleStore::open(&dir, &ModelIdentity::of(&self.model)?)?;
        self.previous = None;
        Ok(format!(
            "rebuilt {}: {} modules, {} tokens",
            dir.display(),
            summary.modules,
            summary.tokens
        ))
    }
}

/// The modules and the start of the question, for lists.
pub fn prompt_label(prompt: &PromptSpec) -> String {
    let modules = if prompt.modules.is_empty() {
        String::new()
    } else {
        format!("[{}] ", prompt.modules.join(" "))
    };
    format!("{modules}{}", prompt.text.replace('\n', " "))
}
