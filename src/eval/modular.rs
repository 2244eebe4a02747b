//! Modular attention reuse measured against exact prefill and a prefix
//! cache on the same prompts, in one run: time to first token (loading,
//! rotation and recomputation inside the timed region; the three runs of a
//! prompt interleaved in a rotating order), fidelity to the exact run
//! (top-1 agreement, next-token KL, teacher-forced NLL of the exact model's
//! greedy continuation, task accuracy), and, per layer × head, how close the
//! question's attention stays to the exact one and how much of the exact
//! model's attention crosses module boundaries (what the cache cannot see).

use serde::Serialize;

use super::stats::{median, percentile};
use crate::cache::similarity;
use crate::model::TextTokenizer;
use crate::model::llama::{ChatTemplate, LlamaDecoder, Prefilled, argmax};
use crate::model::next_token::{kl_divergence, softmax};
use crate::modules::prefill::{self, Prefill, Stages};
use crate::modules::{Layout, LayoutOptions, ModuleStore, Positions, PromptSpec, Setting};

/// Most tokens of the schema's leading modules a prefix cache holds.
pub const SCAFFOLD_TOKENS: usize = 4096;

/// How an evaluation runs.
#[derive(Debug, Clone, Copy)]
pub struct ModularOptions<'a> {
    /// Position assignment of the modular run.
    pub positions: Positions,
    /// Its setting (recovery and rescaling).
    pub recovery: Setting,
    /// The chat template to wrap prompts in, if any.
    pub chat: Option<&'a ChatTemplate>,
    /// Timed passes (speedups are medians over them).
    pub repeats: usize,
    /// Prompts (the first ones) that also get the per-head view.
    pub head_prompts: usize,
    /// Tokens of the exact model's greedy continuation scored teacher-forced.
    pub continuation: usize,
}

/// Median and 90th percentile over prompts, ms.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
}

/// Time to first token of each run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ttft {
    /// Every row computed.
    pub exact: Latency,
    /// A prefix cache (the previous prompt's or the schema's leading
    /// modules', whichever shares more).
    pub prefix: Latency,
    /// Modules from the store.
    pub modular: Latency,
}

/// Mean stage times of each run, ms.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StageMeans {
    /// Exact.
    pub exact: Stages,
    /// Prefix cache.
    pub prefix: Stages,
    /// Modular.
    pub modular: Stages,
}

/// Task accuracy of the exact and the modular run (scored prompts only).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TaskAccuracy {
    /// Exact.
    pub exact: Option<f64>,
    /// Modular.
    pub modular: Option<f64>,
}

/// Figures of a group of prompts (by length or by module count).
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// Tokens (rounded to a power of two) or modules.
    pub key: usize,
    /// Prompts in it.
    pub prompts: usize,
    /// Mean tokens.
    pub tokens_mean: f64,
    /// Summed exact TTFT ÷ summed modular TTFT (per-prompt medians).
    pub speedup_vs_exact: f64,
    /// The same against the prefix cache.
    pub speedup_vs_prefix: f64,
    /// Top-1 agreement with exact.
    pub top1_agreement: f64,
    /// Mean next-token KL from exact.
    pub kl_mean: f64,
}

/// Per layer × head: where modular reuse moves attention.
#[derive(Debug, Clone, Serialize)]
pub struct HeadView {
    /// Prompts it averages over.
    pub prompts: usize,
    /// `[layer][head]`: 1 − total variation between the modular and the exact
    /// map of the question's rows over the whole prompt.
    pub similarity: Vec<Vec<f64>>,
    /// `[layer][head]`: the exact model's attention mass from cached rows to
    /// rows before their module (sampled rows).
    pub crossing: Vec<Vec<f64>>,
    /// `[layer][head]`: the part of it that goes to the preamble (to the
    /// prompt's first token when there is none): what a shared sink serves.
    pub crossing_to_sink: Vec<Vec<f64>>,
    /// `[layer][head]`: the part that goes to the rows between the sink and
    /// the module (other modules): what no encoding can see.
    pub crossing_to_modules: Vec<Vec<f64>>,
}

/// The evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct ModularEval {
    /// Prompts evaluated.
    pub prompts: usize,
    /// Mean tokens per prompt.
    pub tokens_mean: f64,
    /// Mean share of a prompt's tokens served from the store.
    pub cached_fraction: f64,
    /// Mean share of cached tokens recomputed.
    pub recomputed_fraction: f64,
    /// TTFT, ms.
    pub ttft_ms: Ttft,
    /// Summed exact TTFT ÷ summed modular TTFT, median over repeats.
    pub speedup_vs_exact: f64,
    /// Summed prefix TTFT ÷ summed modular TTFT, median over repeats.
    pub speedup_vs_prefix: f64,
    /// Summed exact TTFT ÷ summed prefix TTFT, median over repeats.
    pub prefix_speedup_vs_exact: f64,
    /// Share of prompts whose most likely next token is the exact one's.
    pub top1_agreement: f64,
    /// Mean KL(exact ‖ modular) of the next-token distribution, nats.
    pub kl_mean: f64,
    /// Mean teacher-forced NLL per token of the exact greedy continuation,
    /// modular minus exact, nats.
    pub nll_delta: f64,
    /// Task accuracy.
    pub task_accuracy: TaskAccuracy,
    /// Mean bytes of keys and values read from the store per prompt.
    pub bytes_loaded_mean: f64,
    /// Mean stage times.
    pub stages_ms: StageMeans,
    /// `schema` or `contiguous`.
    pub positions: Positions,
    /// The setting (recovery and rescaling).
    pub recovery: Setting,
    /// Timed repeats.
    pub repeats: usize,
    /// By prompt length.
    pub by_length: Vec<Group>,
    /// By modules per prompt.
    pub by_modules: Vec<Group>,
    /// Per layer × head, over the first prompts.
    pub heads: Option<HeadView>,
}

/// One prompt's measurements.
#[derive(Debug, Clone)]
struct PromptRecord {
    tokens: usize,
    modules: usize,
    cached_fraction: f64,
    recomputed_fraction: f64,
    bytes: u64,
    /// Per repeat: exact, prefix, modular TTFT (ms).
    ttft: Vec<[f64; 3]>,
    stages: [Stages; 3],
    top1: bool,
    kl: f64,
    nll_delta: f64,
    correct: Option<(bool, bool)>,
}

impl PromptRecord {
    fn median_ttft(&self, run: usize) -> f64 {
        let v: Vec<f64> = self.ttft.iter().map(|t| t[run]).collect();
        median(&v).unwrap_or(f64::NAN)
    }
}

/// Everything a prompt's runs need.
pub struct ModularBench<'a> {
    /// The decoder.
    pub decoder: &'a LlamaDecoder,
    /// Its tokenizer.
    pub tokenizer: &'a TextTokenizer,
    /// The module store.
    pub store: &'a ModuleStore,
}

impl ModularBench<'_> {
    /// The layout of `prompt` under `options`.
    pub fn layout(&self, prompt: &PromptSpec, options: &ModularOptions) -> anyhow::Result<Layout> {
        Layout::new(
            self.store.tokenized(),
            prompt,
            self.tokenizer,
            LayoutOptions {
                positions: options.positions,
                chat: options.chat,
                max_positions: self.decoder.shape().max_positions,
            },
        )
    }

    /// The choice a prefilled prompt scores highest (log-probability of the
    /// choice's tokens after it).
    pub fn choose(&self, state: &mut Prefilled, choices: &[String]) -> anyhow::Result<usize> {
        let mut best = (0, f64::INFINITY);
        for (i, choice) in choices.iter().enumerate() {
            let ids = self.tokenizer.encode(choice)?.ids;
            let nll = self.decoder.continuation_nll(state, &ids)?;
            if nll < best.1 {
                best = (i, nll);
            }
        }
        Ok(best.0)
    }

    /// Evaluates `prompts`; `progress(done, total)` after each prompt of each
    /// repeat.
    pub fn evaluate(
        &self,
        prompts: &[PromptSpec],
        options: &ModularOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> anyhow::Result<ModularEval> {
        anyhow::ensure!(!prompts.is_empty(), "no prompts to evaluate");
        let layouts = prompts
            .iter()
            .map(|p| self.layout(p, options))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let repeats = options.repeats.max(1);
        let n = prompts.len();
        let mut records: Vec<Option<PromptRecord>> = vec![None; n];
        // What a prefix cache holds: the schema's leading modules, and the
        // previous prompt (before prompt 0: the last one; prompts cycle).
        let scaffold = self.scaffold(options)?;
        // Warm-up outside the timed runs (a device loads its kernels on
        // first use): the exact prefill a prefix cache starts from, and one
        // modular prefill.
        let mut previous = prefill::exact(self.decoder, &layouts[n - 1], &[])?.state;
        prefill::modular_with(
            self.decoder,
            self.store,
            &layouts[n - 1],
            options.recovery,
            &[],
        )?;
        for rep in 0..repeats {
            for (i, (prompt, layout)) in prompts.iter().zip(&layouts).enumerate() {
                let mut runs: [Option<Prefill>; 3] = [None, None, None];
                // The longer shared prefix of the two (a prefix cache's look-up).
                let held = match &scaffold {
                    Some(sc) if sc.shared_len(&layout.ids) > previous.shared_len(&layout.ids) => {
                        sc.clone()
                    }
                    _ => previous.clone(),
                };
                let mut held = Some(held);
                for k in 0..3 {
                    let run = (k + i + rep) % 3;
                    runs[run] = Some(match run {
                        0 => prefill::exact(self.decoder, layout, &[])?,
                        1 => prefill::prefix(self.decoder, layout, held.take())?,
                        _ => prefill::modular_with(
                            self.decoder,
                            self.store,
                            layout,
                            options.recovery,
                            &[],
                        )?,
                    });
                }
                let [mut exact, prefix, mut modular] = runs.map(|r| r.expect("every run ran"));
                let ttft = [
                    exact.stages.total_ms,
                    prefix.stages.total_ms,
                    modular.stages.total_ms,
                ];
                match &mut records[i] {
                    Some(record) => record.ttft.push(ttft),
                    None => {
                        records[i] = Some(self.fidelity(
                            prompt,
                            layout,
                            (&mut exact, &prefix, &mut modular),
                            ttft,
                            options,
                        )?)
                    }
                }
                previous = exact.state;
                progress(rep * n + i + 1, repeats * n);
            }
        }
        let records: Vec<PromptRecord> = records
            .into_iter()
            .map(|r| r.expect("every prompt ran"))
            .collect();
        let heads = if options.head_prompts > 0 {
            Some(self.head_view(&layouts[..options.head_prompts.min(n)], options)?)
        } else {
            None
        };
        Ok(summarise(&records, options, repeats, heads))
    }

    /// The exact prefill of the schema's leading modules in schema order
    /// (the first member of each union; up to the first module with
    /// parameters, at most [`SCAFFOLD_TOKENS`] tokens): the template prefix a
    /// serving stack would cache. `None` when the first module has
    /// parameters.
    fn scaffold(&self, options: &ModularOptions) -> anyhow::Result<Option<Prefilled>> {
        let schema = self.store.tokenized();
        let (mut modules, mut unions, mut tokens) = (Vec::new(), Vec::new(), 0);
        for m in &schema.modules {
            if m.rows < m.span || tokens + m.rows > SCAFFOLD_TOKENS {
                break;
            }
            if let Some(u) = &m.union {
                if unions.contains(u) {
                    continue;
                }
                unions.push(u.clone());
            }
            tokens += m.rows;
            modules.push(m.name.clone());
        }
        if modules.is_empty() {
            return Ok(None);
        }
        let prompt = PromptSpec {
            modules,
            text: "\n".into(),
            ..PromptSpec::default()
        };
        let layout = self.layout(
            &prompt,
            &ModularOptions {
                positions: Positions::Contiguous,
                ..*options
            },
        )?;
        Ok(Some(prefill::exact(self.decoder, &layout, &[])?.state))
    }

    /// Fidelity of one prompt's modular run to its exact one.
    fn fidelity(
        &self,
        prompt: &PromptSpec,
        layout: &Layout,
        (exact, prefix, modular): (&mut Prefill, &Prefill, &mut Prefill),
        ttft: [f64; 3],
        options: &ModularOptions,
    ) -> anyhow::Result<PromptRecord> {
        let (pe, pm) = (softmax(&exact.state.logits), softmax(&modular.state.logits));
        let continuation = self
            .decoder
            .greedy(&mut exact.state, options.continuation, None)?;
        let k = continuation.len().max(1) as f64;
        let nll_exact = self
            .decoder
            .continuation_nll(&mut exact.state, &continuation)?;
        let nll_modular = self
            .decoder
            .continuation_nll(&mut modular.state, &continuation)?;
        let correct = match prompt.answer {
            Some(answer) if !prompt.choices.is_empty() => Some((
                self.choose(&mut exact.state, &prompt.choices)? == answer,
                self.choose(&mut modular.state, &prompt.choices)? == answer,
            )),
            _ => None,
        };
        let cached = layout.cached_rows();
        Ok(PromptRecord {
            tokens: layout.len(),
            modules: prompt.modules.len(),
            cached_fraction: cached as f64 / layout.len() as f64,
            recomputed_fraction: if cached == 0 {
                0.0
            } else {
                modular.recomputed_rows as f64 / cached as f64
            },
            bytes: modular.bytes_loaded,
            ttft: vec![ttft],
            stages: [exact.stages, prefix.stages, modular.stages],
            top1: argmax(&exact.state.logits) == argmax(&modular.state.logits),
            kl: kl_divergence(&pe, &pm),
            nll_delta: (nll_modular - nll_exact) / k,
            correct,
        })
    }

    /// The per-head view over `layouts` (untimed runs that capture maps).
    pub fn head_view(
        &self,
        layouts: &[Layout],
        options: &ModularOptions,
    ) -> anyhow::Result<HeadView> {
        let shape = self.decoder.shape();
        let mut sim = vec![vec![0f64; shape.heads]; shape.layers];
        let mut cross = vec![vec![0f64; shape.heads]; shape.layers];
        let mut to_sink = vec![vec![0f64; shape.heads]; shape.layers];
        let mut cross_rows = 0usize;
        for layout in layouts {
            let question: Vec<usize> = layout.question_rows().collect();
            // Sampled cached rows (up to 4 a module) and where their module starts.
            let mut sampled: Vec<(usize, usize)> = Vec::new();
            let sink = layout
                .spans
                .first()
                .map_or(1, |s| if s.label == "preamble" { s.rows.end } else { 1 });
            for (_, rows) in layout.module_runs() {
                let start = rows[0];
                if start == 0 {
                    continue;
                }
                let step = rows.len().div_ceil(4).max(1);
                sampled.extend(rows.iter().step_by(step).map(|&r| (r, start)));
            }
            let mut capture: Vec<usize> = question.clone();
            capture.extend(sampled.iter().map(|&(r, _)| r));
            capture.sort_unstable();
            capture.dedup();
            let exact = prefill::exact(self.decoder, layout, &capture)?;
            let modular = prefill::modular_with(
                self.decoder,
                self.store,
                layout,
                options.recovery,
                &question,
            )?;
            let n = layout.len();
            let exact_row = |maps: &[f32], row: usize| {
                let i = capture.binary_search(&row).expect("captured");
                maps[i * n..(i + 1) * n].to_vec()
            };
            for l in 0..shape.layers {
                for h in 0..shape.heads {
                    let (em, mm) = (&exact.maps[l][h], &modular.maps[l][h]);
                    let exact_q: Vec<f32> =
                        question.iter().flat_map(|&r| exact_row(em, r)).collect();
                    sim[l][h] += similarity(&exact_q, mm, n) as f64;
                    for &(row, start) in &sampled {
                        let before = &exact_row(em, row)[..start];
                        cross[l][h] += before.iter().sum::<f32>() as f64;
                        to_sink[l][h] += before[..sink.min(start)].iter().sum::<f32>() as f64;
                    }
                }
            }
            cross_rows += sampled.len();
        }
        let k = layouts.len().max(1) as f64;
        let c = cross_rows.max(1) as f64;
        let scaled = |m: &[Vec<f64>], by: f64| -> Vec<Vec<f64>> {
            m.iter()
                .map(|r| r.iter().map(|v| v / by).collect())
                .collect()
        };
        let to_modules: Vec<Vec<f64>> = cross
            .iter()
            .zip(&to_sink)
            .map(|(a, b)| a.iter().zip(b).map(|(a, b)| a - b).collect())
            .collect();
        Ok(HeadView {
            prompts: layouts.len(),
            similarity: scaled(&sim, k),
            crossing: scaled(&cross, c),
            crossing_to_sink: scaled(&to_sink, c),
            crossing_to_modules: scaled(&to_modules, c),
        })
    }
}

/// The power of two nearest to `n` on a log scale (512, 1K, 2K, … buckets).
fn nearest_power_of_two(n: usize) -> usize {
    let up = n.next_power_of_two();
    if up / 2 > 0 && (n as f64 / (up / 2) as f64) < (up as f64 / n as f64) {
        up / 2
    } else {
        up
    }
}

/// Summed-time ratio `a ÷ b` over `records`, median over repeats.
fn speedup(records: &[PromptRecord], repeats: usize, a: usize, b: usize) -> f64 {
    let ratios: Vec<f64> = (0..repeats)
        .map(|r| {
            let sum = |run| records.iter().map(|p| p.ttft[r][run]).sum::<f64>();
            sum(a) / sum(b)
        })
        .collect();
    median(&ratios).unwrap_or(f64::NAN)
}

/// Groups `records` by `key`.
fn groups(records: &[PromptRecord], key: impl Fn(&PromptRecord) -> usize) -> Vec<Group> {
    let mut keys: Vec<usize> = records.iter().map(&key).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let g: Vec<&PromptRecord> = records.iter().filter(|p| key(p) == k).collect();
            let sum = |run| g.iter().map(|p| p.median_ttft(run)).sum::<f64>();
            Group {
                key: k,
                prompts: g.len(),
                tokens_mean: g.iter().map(|p| p.tokens as f64).sum::<f64>() / g.len() as f64,
                speedup_vs_exact: sum(0) / sum(2),
                speedup_vs_prefix: sum(1) / sum(2),
                top1_agreement: g.iter().filter(|p| p.top1).count() as f64 / g.len() as f64,
                kl_mean: g.iter().map(|p| p.kl).sum::<f64>() / g.len() as f64,
            }
        })
        .collect()
}

/// Mean of each stage over prompts, for run `run`.
fn mean_stages(records: &[PromptRecord], run: usize) -> Stages {
    Stages::mean(&records.iter().map(|p| p.stages[run]).collect::<Vec<_>>())
}

fn summarise(
    records: &[PromptRecord],
    options: &ModularOptions,
    repeats: usize,
    heads: Option<HeadView>,
) -> ModularEval {
    let n = records.len() as f64;
    let latency = |run| {
        let v: Vec<f64> = records.iter().map(|p| p.median_ttft(run)).collect();
        Latency {
            median: median(&v).unwrap_or(f64::NAN),
            p90: percentile(&v, 90.0),
        }
    };
    let scored: Vec<(bool, bool)> = records.iter().filter_map(|p| p.correct).collect();
    let share = |pick: fn(&(bool, bool)) -> bool| {
        (!scored.is_empty())
            .then(|| scored.iter().filter(|c| pick(c)).count() as f64 / scored.len() as f64)
    };
    let avg = |f: fn(&PromptRecord) -> f64| records.iter().map(f).sum::<f64>() / n;
    ModularEval {
        prompts: records.len(),
        tokens_mean: avg(|p| p.tokens as f64),
        cached_fraction: avg(|p| p.cached_fraction),
        recomputed_fraction: avg(|p| p.recomputed_fraction),
        ttft_ms: Ttft {
            exact: latency(0),
            prefix: latency(1),
            modular: latency(2),
        },
        speedup_vs_exact: speedup(records, repeats, 0, 2),
        speedup_vs_prefix: speedup(records, repeats, 1, 2),
        prefix_speedup_vs_exact: speedup(records, repeats, 0, 1),
        top1_agreement: avg(|p| f64::from(u8::from(p.top1))),
        kl_mean: avg(|p| p.kl),
        nll_delta: avg(|p| p.nll_delta),
        task_accuracy: TaskAccuracy {
            exact: share(|c| c.0),
            modular: share(|c| c.1),
        },
        bytes_loaded_mean: avg(|p| p.bytes as f64),
        stages_ms: StageMeans {
            exact: mean_stages(records, 0),
            prefix: mean_stages(records, 1),
            modular: mean_stages(records, 2),
        },
        positions: options.positions,
        recovery: options.recovery,
        repeats,
        by_length: groups(records, |p| nearest_power_of_two(p.tokens)),
        by_modules: groups(records, |p| p.modules),
        heads,
    }
}
