//! Prefill of a laid-out prompt three ways, on the same row-wise pass:
//! exact (every row computed, contiguous positions), prefix cache (the
//! leading rows a previous prompt shares, from its cache) and modular (the
//! modules' rows from the store, rotated to where they land, with a
//! recovery policy). Every figure counts what a real request would pay:
//! loading, rotation and recomputation are inside the timed region.

use std::time::Instant;

use serde::Serialize;

use super::layout::Block;
use super::layout::Layout;
use super::recovery::{Recovery, Setting};
use super::store::ModuleStore;
use crate::model::llama::{
    DeviceKv, LlamaDecoder, Prefilled, PromptKv, RowPass, RowRescale, RowsOutput, Selection,
};
use crate::model::ms;

/// Where a prefill's time went, ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stages {
    /// Copying stored (or prefix-cached) keys and values into the cache.
    pub load_ms: f64,
    /// Rotating stored keys to their positions.
    pub rotate_ms: f64,
    /// The question's probe pass (question-aware recomputation).
    pub probe_ms: f64,
    /// The layers.
    pub forward_ms: f64,
    /// Final norm and next-token logits.
    pub logits_ms: f64,
    /// All of it.
    pub total_ms: f64,
}

impl Stages {
    /// The mean of each stage over `runs` (zeros for none).
    pub fn mean(runs: &[Stages]) -> Stages {
        let n = runs.len().max(1) as f64;
        let m = |f: fn(&Stages) -> f64| runs.iter().map(f).sum::<f64>() / n;
        Stages {
            load_ms: m(|s| s.load_ms),
            rotate_ms: m(|s| s.rotate_ms),
            probe_ms: m(|s| s.probe_ms),
            forward_ms: m(|s| s.forward_ms),
            logits_ms: m(|s| s.logits_ms),
            total_ms: m(|s| s.total_ms),
        }
    }
}

/// What happened to one run of rows of the prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The module's name, or `preamble`, `chat`, `question`, `MODULE.PARAM`.
    pub label: String,
    /// `cached` (from the store, some rows maybe recomputed) or `computed`.
    pub state: &'static str,
    /// Its tokens.
    pub tokens: usize,
    /// Of those, rows recomputed in the later layers.
    pub recomputed: usize,
}

/// A finished prefill.
#[derive(Debug, Clone)]
pub struct Prefill {
    /// The prompt's cache, ids, positions and next-token logits.
    pub state: Prefilled,
    /// Time by stage.
    pub stages: Stages,
    /// Per run of rows.
    pub decisions: Vec<Decision>,
    /// Rows served from a cache (store or prefix).
    pub cached_rows: usize,
    /// Cached rows recomputed.
    pub recomputed_rows: usize,
    /// Bytes of keys and values read from the store.
    pub bytes_loaded: u64,
    /// Maps of the captured rows, `[layer][head]`, each `rows × len`.
    pub maps: Vec<Vec<Vec<f32>>>,
}

/// Runs the pass (rescaled, if asked) and reads the last row's logits.
fn finish(
    decoder: &LlamaDecoder,
    (pass, rescale): (RowPass, Option<RowRescale>),
    mut kv: PromptKv,
    mut stages: Stages,
    start: Instant,
) -> anyhow::Result<(Prefilled, RowsOutput, Stages)> {
    let t = Instant::now();
    let out = match rescale {
        Some(r) => decoder.forward_rows_rescaled(pass, &mut kv, r)?,
        None => decoder.forward_rows(pass, &mut kv)?,
    };
    decoder.device().synchronize()?;
    stages.forward_ms = ms(t.elapsed());
    let t = Instant::now();
    let last = pass.ids.len() - 1;
    let logits = decoder
        .logits_of_rows(&out, &[last])?
        .squeeze(0)?
        .to_vec1::<f32>()?;
    stages.logits_ms = ms(t.elapsed());
    stages.total_ms = ms(start.elapsed());
    let state = Prefilled {
        kv,
        ids: pass.ids.to_vec(),
        positions: pass.positions.to_vec(),
        logits,
    };
    Ok((state, out, stages))
}

/// The exact prefill: the layout's tokens at positions 0, 1, 2, …, every
/// row computed; maps of `capture` rows kept.
pub fn exact(
    decoder: &LlamaDecoder,
    layout: &Layout,
    capture: &[usize],
) -> anyhow::Result<Prefill> {
    let start = Instant::now();
    let n = layout.len();
    let positions: Vec<usize> = (0..n).collect();
    let computed: Vec<usize> = (0..n).collect();
    let kv = decoder.prompt_kv(n)?;
    let pass = RowPass {
        ids: &layout.ids,
        positions: &positions,
        computed: &computed,
        select: None,
        capture,
    };
    let (state, out, stages) = finish(decoder, (pass, None), kv, Stages::default(), start)?;
    Ok(Prefill {
        state,
        stages,
        decisions: vec![Decision {
            label: "prompt".into(),
            state: "computed",
            tokens: n,
            recomputed: 0,
        }],
        cached_rows: 0,
        recomputed_rows: 0,
        bytes_loaded: 0,
        maps: out.maps,
    })
}

/// The prefix-cache prefill: the leading rows `layout` shares with
/// `previous` (an exact prefill, whose cache a serving stack would hold)
/// come from its cache, at least the last row is computed.
pub fn prefix(
    decoder: &LlamaDecoder,
    layout: &Layout,
    previous: Option<Prefilled>,
) -> anyhow::Result<Prefill> {
    let start = Instant::now();
    let n = layout.len();
    let mut stages = Stages::default();
    let (kv, shared) = match previous {
        Some(prev) => {
            let shared = prev.shared_len(&layout.ids);
            let t = Instant::now();
            let mut kv = prev.kv;
            kv.resize(shared)?;
            kv.resize(n)?;
            decoder.device().synchronize()?;
            stages.load_ms = ms(t.elapsed());
            (kv, shared)
        }
        None => (decoder.prompt_kv(n)?, 0),
    };
    let positions: Vec<usize> = (0..n).collect();
    let computed: Vec<usize> = (shared..n).collect();
    let pass = RowPass {
        ids: &layout.ids,
        positions: &positions,
        computed: &computed,
        select: None,
        capture: &[],
    };
    let (state, _, stages) = finish(decoder, (pass, None), kv, stages, start)?;
    Ok(Prefill {
        state,
        stages,
        decisions: vec![
            Decision {
                label: "shared prefix".into(),
                state: "cached",
                tokens: shared,
                recomputed: 0,
            },
            Decision {
                label: "rest".into(),
                state: "computed",
                tokens: n - shared,
                recomputed: 0,
            },
        ],
        cached_rows: shared,
        recomputed_rows: 0,
        bytes_loaded: 0,
        maps: Vec::new(),
    })
}

/// The modular prefill: stored rows (the preamble's and the modules') loaded
/// and rotated to the layout's positions, fresh rows computed, `recovery`
/// recomputing some stored rows; maps of `capture` rows (fresh ones) kept.
pub fn modular(
    decoder: &LlamaDecoder,
    store: &ModuleStore,
    layout: &Layout,
    recovery: Recovery,
    capture: &[usize],
) -> anyhow::Result<Prefill> {
    modular_with(decoder, store, layout, recovery.into(), capture)
}

/// [`modular`] with a complete setting: the recovery and APE's rescaling of
/// the question's attention to cached module tokens (none at T = S = 1).
pub fn modular_with(
    decoder: &LlamaDecoder,
    store: &ModuleStore,
    layout: &Layout,
    setting: Setting,
    capture: &[usize],
) -> anyhow::Result<Prefill> {
    let recovery = setting.recovery;
    let start = Instant::now();
    let mut stages = Stages::default();
    let mut kv = stored_rows(decoder, store, layout, &mut stages)?;
    let question: Vec<usize> = layout.question_rows().collect();
    let mut computed = layout.fresh_rows();
    let mut select = None;
    match recovery {
        Recovery::None => {}
        Recovery::First(k) => {
            for (_, rows) in layout.module_runs().iter().skip(1) {
                computed.extend(rows.iter().take(k));
            }
        }
        Recovery::Select(r) => {
            select = Some(Selection {
                at: 1,
                fraction: r / 100.0,
            })
        }
        Recovery::Probe { .. } | Recovery::ProbeModules(_) => {
            let t = Instant::now();
            let layers = match recovery {
                Recovery::Probe { layers, .. } => layers,
                _ => 0,
            };
            let mass = decoder.probe_rows(
                RowPass {
                    ids: &layout.ids,
                    positions: &layout.positions,
                    computed: &computed,
                    select: None,
                    capture: &question,
                },
                &mut kv,
                layers,
            )?;
            computed.extend(question_aware_choice(layout, &mass, recovery));
            stages.probe_ms = ms(t.elapsed());
        }
    }
    computed.sort_unstable();
    computed.dedup();
    let pass = RowPass {
        ids: &layout.ids,
        positions: &layout.positions,
        computed: &computed,
        select,
        capture,
    };
    let module_keys: Vec<bool> = layout
        .stored
        .iter()
        .map(|s| s.is_some_and(|s| matches!(s.block, Block::Module(_))))
        .collect();
    let rescale = setting
        .rescale
        .filter(|r| !r.is_identity())
        .map(|r| RowRescale {
            rows: &question,
            keys: &module_keys,
            temperature: r.temperature as f32,
            scale: r.scale as f32,
        });
    let (state, out, stages) = finish(decoder, (pass, rescale), kv, stages, start)?;
    let recomputed: Vec<usize> = match recovery {
        Recovery::Select(_) => out.selected.clone(),
        _ => computed
            .iter()
            .copied()
            .filter(|&r| layout.stored[r].is_some())
            .collect(),
    };
    let decisions = layout
        .spans
        .iter()
        .map(|span| {
            let cached = span.block.is_some();
            Decision {
                label: span.label.clone(),
                state: if cached { "cached" } else { "computed" },
                tokens: span.rows.len(),
                recomputed: if cached {
                    recomputed.iter().filter(|r| span.rows.contains(r)).count()
                } else {
                    0
                },
            }
        })
        .collect();
    let cached_rows = layout.cached_rows();
    Ok(Prefill {
        state,
        stages,
        decisions,
        cached_rows,
        recomputed_rows: recomputed.len(),
        bytes_loaded: (cached_rows * store.manifest().bytes_per_token) as u64,
        maps: out.maps,
    })
}

/// The prompt's cache with every stored row loaded and rotated to its
/// position in `layout` (fresh rows zero), where the decoder's passes run:
/// on the host, copied (f16 → f32) from `kv.bin` and rotated there; or on
/// its device, gathered from the resident store or copied there once, and
/// rotated there. Times loading and rotation into `stages`.
fn stored_rows(
    decoder: &LlamaDecoder,
    store: &ModuleStore,
    layout: &Layout,
    stages: &mut Stages,
) -> anyhow::Result<PromptKv> {
    let n = layout.len();
    let from: Vec<usize> = (0..n)
        .map(|r| layout.stored[r].map_or(layout.positions[r], |s| s.stored))
        .collect();
    let t = Instant::now();
    if !decoder.host_rows() {
        let (keys, values) = store.device_rows(layout, decoder.device())?;
        decoder.device().synchronize()?;
        stages.load_ms = ms(t.elapsed());
        let t = Instant::now();
        let keys = decoder.shift_stacked_keys(&keys, (&from, &layout.positions))?;
        let kv = DeviceKv::from_stacked(&keys, &values)?;
        decoder.device().synchronize()?;
        stages.rotate_ms = ms(t.elapsed());
        return Ok(PromptKv::Device(kv));
    }
    let mut kv = decoder.kv_cache(n);
    for (block, rows, at) in layout.stored_copies() {
        store.load_rows(block, rows, &mut kv, at)?;
    }
    stages.load_ms = ms(t.elapsed());
    let t = Instant::now();
    decoder.shift_keys(&mut kv, 0..n, (&from, &layout.positions));
    stages.rotate_ms = ms(t.elapsed());
    Ok(PromptKv::Host(kv))
}

/// The stored rows question-aware recomputation recomputes, given the
/// attention `mass` every row receives from the question: the `probe:R`
/// share of cached rows with the most mass, or every row of the
/// `probe-modules:M` modules with the most mass summed. Rows that are already
/// exact ([`Layout::exact_rows`]) come last, so 100 % (or every module)
/// recomputes everything.
pub fn question_aware_choice(layout: &Layout, mass: &[f32], recovery: Recovery) -> Vec<usize> {
    let exact = layout.exact_rows();
    let is_exact = |r: usize| exact.binary_search(&r).is_ok();
    match recovery {
        Recovery::Probe { percent, .. } => {
            let mut rows: Vec<usize> = (0..layout.len())
                .filter(|&r| layout.stored[r].is_some())
                .collect();
            let take = ((percent / 100.0).clamp(0.0, 1.0) * rows.len() as f64).ceil() as usize;
            rows.sort_by(|&a, &b| {
                is_exact(a)
                    .cmp(&is_exact(b))
                    .then(mass[b].total_cmp(&mass[a]))
            });
            rows.truncate(take);
            rows
        }
        Recovery::ProbeModules(m) => {
            let mut blocks: Vec<(bool, f32, Vec<usize>)> = layout
                .block_runs()
                .into_iter()
                .map(|(_, rows)| {
                    let sum = rows.iter().map(|&r| mass[r]).sum();
                    (rows.iter().all(|&r| is_exact(r)), sum, rows)
                })
                .collect();
            blocks.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
            blocks.into_iter().take(m).flat_map(|b| b.2).collect()
        }
        _ => Vec::new(),
    }
}
