//! The dashboard's background work: one thread that owns the engine and runs
//! queries, and one thread per job (rebuild, calibration, threshold check),
//! all reporting over one channel. The UI thread never waits on them.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

use anyhow::Context;

use crate::cache::{
    BuildOptions, DEFAULT_HNSW_MIN_BUCKET, Database, FeatureKind, Neighbour, Policy, build,
    crop_map,
};
use crate::data::{Corpus, CorpusOptions, CorpusSpec};
use crate::engine::{Engine, Mode, Trace};
use crate::eval::{
    CalibrateOptions, Classifier, Objective, PolicyKind, calibrate, evaluate_until, sweep_point,
    task_corpus, task_text,
};
use crate::model::Model;
use crate::plot::SweepPoint;

/// What the UI asks of the worker.
#[derive(Debug)]
pub enum Request {
    /// Run a text in a mode.
    Run {
        /// The text.
        text: String,
        /// How.
        mode: Mode,
    },
    /// Serve with this policy from now on.
    SetPolicy(Policy),
    /// Serve from this database (with this policy) from now on.
    UseDatabase(Arc<Database>, Policy),
    /// Start a background job with this id (a running job is cancelled
    /// first).
    StartJob(u64, JobRequest),
    /// Cancel the running job, if any.
    CancelJob,
    /// Every exact map of a text, to pin it.
    Capture(String),
    /// The `k` nearest database entries of `text`'s `layer` input.
    Neighbours {
        /// The query as typed (run as the task prompt, like [`Request::Run`]).
        text: String,
        /// The layer whose input is looked up.
        layer: usize,
        /// How many.
        k: usize,
    },
}

/// A background job.
#[derive(Debug, Clone)]
pub enum JobRequest {
    /// Build a database from a corpus into `out` (replacing it on success).
    Rebuild {
        /// Corpus spec (`rt:db`, a file, ...).
        corpus: String,
        /// Use only the first N texts.
        limit: Option<usize>,
        /// The database directory.
        out: PathBuf,
    },
    /// Calibrate thresholds on the calibration split for a budget.
    Calibrate {
        /// The error budget.
        budget: f64,
        /// What it bounds.
        objective: Objective,
    },
    /// A policy evaluated on the calibration split (hit rate, fidelity,
    /// accuracy, speedups), as a point of the session's threshold sweep.
    Check {
        /// The policy.
        policy: Policy,
        /// Its threshold scale (the sweep's knob).
        scale: f64,
    },
}

impl JobRequest {
    /// A short name for the status line and gauges.
    pub fn name(&self) -> &'static str {
        match self {
            JobRequest::Rebuild { .. } => "rebuild",
            JobRequest::Calibrate { .. } => "calibrate",
            JobRequest::Check { .. } => "check",
        }
    }
}

/// One finished query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// The query as typed or streamed (a decoder runs it as the task
    /// prompt; the trace holds that prompt).
    pub query: String,
    /// What happened.
    pub trace: Trace,
    /// The exact model's maps of the query, `[S·S]` by layer then head.
    pub exact_maps: Vec<Vec<Vec<f32>>>,
    /// The database the trace's neighbours refer to.
    pub db: Option<Arc<Database>>,
}

/// What a finished job produced.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    /// A new database, already opened.
    Rebuilt(Arc<Database>),
    /// A calibrated policy (also saved as the database's policy.json).
    Calibrated(Policy),
    /// A policy's evaluation on the calibration split.
    Checked {
        /// The evaluation as a sweep point (knob = threshold scale).
        point: SweepPoint,
        /// Queries measured.
        queries: usize,
        /// Per layer × head: hit rate and cacheability (mean true
        /// similarity of the neighbour's map) on the calibration split.
        heads: CheckHeads,
    },
}

/// A check's per-head numbers on the calibration split.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckHeads {
    /// Share of queries in which each head reused a map, `[L][H]`.
    pub hit_rate: Vec<Vec<f64>>,
    /// Mean true similarity of each head's neighbour maps (`None`: no
    /// neighbour), `[L][H]`.
    pub cacheability: Vec<Vec<Option<f64>>>,
}

/// What happened to a job.
#[derive(Debug, Clone)]
pub enum JobUpdate {
    /// It advanced: steps done of steps in all.
    Progress(usize, usize),
    /// It finished.
    Done(Box<JobOutcome>),
    /// It failed or was cancelled (the message says which).
    Failed(String),
}

/// The nearest entries of one query at one layer.
#[derive(Debug, Clone)]
pub struct NeighbourList {
    /// The query as typed.
    pub query: String,
    /// The layer.
    pub layer: usize,
    /// Entry and feature distance, nearest first.
    pub entries: Vec<Neighbour>,
}

/// An input whose maps the next queries are compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct Pinned {
    /// What it is, for titles (`"history: …"`, `"entry #12"`).
    pub label: String,
    /// Its token count.
    pub tokens: usize,
    /// Every exact map, `[S·S]` by layer then head.
    pub maps: Vec<Vec<Vec<f32>>>,
}

impl Pinned {
    /// Database entry `entry`'s stored maps.
    pub fn entry(db: &Database, entry: u32) -> anyhow::Result<Self> {
        let e = db
            .entries()
            .get(entry as usize)
            .with_context(|| format!("no entry #{entry}"))?;
        let shape = db.manifest().model.shape;
        let maps = (0..shape.layers)
            .map(|l| {
                (0..shape.heads)
                    .map(|h| Ok(db.map_values(entry as usize, l, h)?))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            label: format!("entry #{entry}"),
            tokens: e.tokens,
            maps,
        })
    }

    /// Its map of head `(l, h)` fitted to a query of `s` tokens: as it is
    /// at the same length, cropped when longer, `None` when shorter.
    pub fn map_for(&self, l: usize, h: usize, s: usize) -> Option<Cow<'_, [f32]>> {
        let map = self.maps.get(l)?.get(h)?;
        match self.tokens.cmp(&s) {
            std::cmp::Ordering::Equal => Some(Cow::Borrowed(map)),
            std::cmp::Ordering::Greater => Some(Cow::Owned(crop_map(map, self.tokens, s))),
            std::cmp::Ordering::Less => None,
        }
    }
}

/// Everything the worker tells the UI.
#[derive(Debug, Clone)]
pub enum Event {
    /// The answer to [`Request::Neighbours`] (or why there is none).
    Neighbours(Result<NeighbourList, String>),
    /// The answer to [`Request::Capture`].
    Captured(Result<Pinned, String>),
    /// A query finished.
    Ran(Box<QueryResult>),
    /// A query failed.
    RunFailed(String),
    /// Job `id` (named `name`) advanced, finished or failed.
    Job {
        /// The id given in [`Request::StartJob`].
        id: u64,
        /// The job's name.
        name: &'static str,
        /// What happened.
        update: JobUpdate,
    },
}

/// Where jobs read their data and calibrate.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// The calibration split (e.g. `rt:calib`).
    pub calib_split: String,
    /// Queries used by calibration and checks.
    pub calib_limit: usize,
}

/// Starts the engine thread; it ends when `requests` closes.
pub fn spawn(
    engine: Engine,
    settings: JobSettings,
    requests: Receiver<Request>,
    events: Sender<Event>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("attncache-engine".into())
        .spawn(move || serve(engine, settings, requests, events))
        .expect("cannot start the engine thread")
}

/// The engine thread's loop.
fn serve(
    mut engine: Engine,
    settings: JobSettings,
    requests: Receiver<Request>,
    events: Sender<Event>,
) {
    let mut job: Option<(Arc<AtomicBool>, JoinHandle<()>)> = None;
    for request in requests {
        let sent = match request {
            Request::Run { text, mode } => events.send(match run_query(&engine, &text, mode) {
                Ok(result) => Event::Ran(Box::new(result)),
                Err(e) => Event::RunFailed(format!("{e:#}")),
            }),
            Request::SetPolicy(policy) => match engine.set_policy(policy) {
                Ok(()) => Ok(()),
                Err(e) => events.send(Event::RunFailed(format!("{e:#}"))),
            },
            Request::UseDatabase(db, policy) => {
                match Engine::new(engine.model().clone(), db, policy) {
                    Ok(new) => {
                        engine = new;
                        Ok(())
                    }
                    Err(e) => events.send(Event::RunFailed(format!("{e:#}"))),
                }
            }
            Request::StartJob(id, request) => {
                cancel(&mut job);
                let flag = Arc::new(AtomicBool::new(false));
                let handle = spawn_job(
                    engine.clone(),
                    settings.clone(),
                    (id, request),
                    flag.clone(),
                    events.clone(),
                );
                job = Some((flag, handle));
                Ok(())
            }
            Request::CancelJob => {
                cancel(&mut job);
                Ok(())
            }
            Request::Capture(text) => events.send(Event::Captured(
                capture(&engine, &text).map_err(|e| format!("{e:#}")),
            )),
            Request::Neighbours { text, layer, k } => events.send(Event::Neighbours(
                nearest(&engine, &text, layer, k).map_err(|e| format!("{e:#}")),
            )),
        };
        if sent.is_err() {
            break;
        }
    }
    cancel(&mut job);
}

/// Signals the running job to stop and waits for it.
fn cancel(job: &mut Option<(Arc<AtomicBool>, JoinHandle<()>)>) {
    if let Some((flag, handle)) = job.take() {
        flag.store(true, Ordering::Relaxed);
        let _ = handle.join();
    }
}

/// `[S, S]` map tensors by layer then head as row-major vectors.
fn flat_maps(maps: Vec<Vec<candle_core::Tensor>>) -> anyhow::Result<Vec<Vec<Vec<f32>>>> {
    maps.into_iter()
        .map(|layer| {
            layer
                .into_iter()
                .map(|m| Ok(m.flatten_all()?.to_vec1::<f32>()?))
                .collect()
        })
        .collect()
}

/// Every exact map of `query` (run as the task prompt).
fn capture(engine: &Engine, query: &str) -> anyhow::Result<Pinned> {
    let model = engine.model();
    let tokenized = model.tokenizer.encode(&task_text(model, query)?)?;
    let maps = flat_maps(model.capture_maps(&tokenized)?)?;
    Ok(Pinned {
        label: format!("history: {}", crate::text::shorten(query, 40)),
        tokens: tokenized.ids.len(),
        maps,
    })
}

/// The `k` nearest entries of `query`'s `layer` input (exact scan, the
/// engine's length policy).
fn nearest(engine: &Engine, query: &str, layer: usize, k: usize) -> anyhow::Result<NeighbourList> {
    let db = engine
        .database()
        .context("neighbours need a database: press R to build one")?;
    let model = engine.model();
    let text = task_text(model, query)?;
    let tokenized = model.tokenizer.encode(&text)?;
    let input = model.layer_input(&tokenized, layer)?;
    let feature = db.query_feature(layer, &input)?;
    let entries = db.search_k(
        layer,
        &feature,
        tokenized.ids.len(),
        engine.policy().lengths,
        k,
    );
    Ok(NeighbourList {
        query: query.to_string(),
        layer,
        entries,
    })
}

/// One query: the engine's run plus the exact maps for the map view (the
/// shadow run's own; other modes capture them in one more exact pass).
fn run_query(engine: &Engine, query: &str, mode: Mode) -> anyhow::Result<QueryResult> {
    let text = &task_text(engine.model(), query)?;
    let run = engine.run(text, mode)?;
    let maps = match run.exact_maps {
        Some(maps) => maps,
        None => {
            let model = engine.model();
            model.capture_maps(&model.tokenizer.encode(text)?)?
        }
    };
    let exact_maps = flat_maps(maps)?;
    Ok(QueryResult {
        query: query.to_string(),
        trace: run.trace,
        exact_maps,
        db: match mode {
            Mode::Exact => None,
            _ => engine.database().cloned(),
        },
    })
}

/// Runs `request` on its own thread.
fn spawn_job(
    engine: Engine,
    settings: JobSettings,
    (id, request): (u64, JobRequest),
    cancel: Arc<AtomicBool>,
    events: Sender<Event>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("attncache-{}", request.name()))
        .spawn(move || {
            let name = request.name();
            let send = |update| {
                let _ = events.send(Event::Job { id, name, update });
            };
            let mut progress = |done, total| send(JobUpdate::Progress(done, total));
            let outcome = run_job(&engine, &settings, request, &mut progress, &cancel);
            send(match outcome {
                Ok(outcome) => JobUpdate::Done(Box::new(outcome)),
                Err(e) => JobUpdate::Failed(format!("{e:#}")),
            });
        })
        .expect("cannot start a job thread")
}

/// The body of one job.
pub fn run_job(
    engine: &Engine,
    settings: &JobSettings,
    request: JobRequest,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &AtomicBool,
) -> anyhow::Result<JobOutcome> {
    let model = engine.model();
    match request {
        JobRequest::Rebuild { corpus, limit, out } => {
            let corpus = load(&corpus, model)?.limited(limit);
            let feature = engine
                .database()
                .map_or(FeatureKind::Pooled, |db| db.manifest().feature);
            build(
                model,
                &corpus,
                &out,
                BuildOptions {
                    feature,
                    hnsw_min_bucket: DEFAULT_HNSW_MIN_BUCKET,
                },
                progress,
                cancel,
            )?;
            let identity = crate::cache::ModelIdentity::of(model)?;
            Ok(JobOutcome::Rebuilt(Arc::new(Database::open(
                &out, &identity,
            )?)))
        }
        JobRequest::Calibrate { budget, objective } => {
            let db = engine.database().ok_or_else(|| {
                anyhow::anyhow!("calibration needs a database: press R to build one")
            })?;
            let corpus = load(&settings.calib_split, model)?.limited(Some(settings.calib_limit));
            let probe = Classifier::for_task(model, db, &corpus)?;
            let options = CalibrateOptions {
                budget,
                objective,
                kind: PolicyKind::Ours,
                drop_unprofitable: true,
            };
            let policy = calibrate(engine, &corpus, probe.as_ref(), options, progress, cancel)?;
            policy.save(&db.policy_path())?;
            Ok(JobOutcome::Calibrated(policy))
        }
        JobRequest::Check { policy, scale } => {
            let mut engine = engine.clone();
            engine.set_policy(policy)?;
            let corpus = load(&settings.calib_split, model)?.limited(Some(settings.calib_limit));
            let probe = match engine.database() {
                Some(db) => Classifier::for_task(model, db, &corpus)?,
                None => None,
            };
            let e = evaluate_until(&engine, &corpus, probe.as_ref(), 1, progress, cancel)?;
            Ok(JobOutcome::Checked {
                point: sweep_point(scale, &e),
                queries: e.queries,
                heads: CheckHeads {
                    hit_rate: e.hit_rate_per_head.clone(),
                    cacheability: e.cacheability.clone(),
                },
            })
        }
    }
}

/// Loads a corpus spec with default columns, as `model`'s task sees it.
fn load(spec: &str, model: &Model) -> anyhow::Result<Corpus> {
    task_corpus(
        model,
        CorpusSpec::parse(spec)?.load(&CorpusOptions::default())?,
    )
}
