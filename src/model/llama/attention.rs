//! Grouped-query causal self-attention with RoPE under a per-head plan.
//!
//! Fused path (one unpadded input on the CPU, the default there): a layer
//! with every head computed runs one Q·K·V projection; otherwise one
//! projection through the Q rows of the computed query heads and the K rows
//! of the key/value heads they need (gathered once per set of heads), plus
//! V. So a reused query head skips its Q projection, RoPE and QKᵀ + softmax,
//! and a K head is skipped when every query head that shares it is reused;
//! V always runs. RoPE is applied in place, the 1/√d scale is folded into
//! the Q weights (and Qwen2's Q bias) at load time, the biases are added as
//! a tile is stored, and the core is [`fused::attention`] with a causal mask.
//!
//! Reference path (candle ops; any batch, any device): computes every head
//! and substitutes the reused maps before map·V. It is the correctness
//! reference and the CUDA path; it saves no work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{IndexOp, Result, Tensor};

use super::config::LlamaConfig;
use super::rope::Rope;
use crate::model::attention::{AttentionOutput, reused_map};
use crate::model::fused::{self, Core, HeadMap, Kernels, View};
use crate::model::packed::{Activation, PackedLinear};
use crate::model::plan::{HeadPlan, LayerPlan};

/// Most head sets whose gathered weights a layer keeps.
const GATHERED_CACHE: usize = 32;

/// Q rows of some query heads and K rows of the key/value heads they need,
/// stacked `[(q + k)·d, D]` and packed.
#[derive(Debug)]
struct Gathered {
    weight: PackedLinear,
    /// Query heads, in order.
    queries: Vec<usize>,
    /// Key/value heads, in order.
    keys: Vec<usize>,
}

/// Qwen2's Q, K and V biases (the Q bias pre-scaled by 1/√d like the Q
/// weights).
#[derive(Debug, Clone)]
struct QkvBias {
    q: Tensor,
    k: Tensor,
    v: Tensor,
}

/// The Q, K, V projections of one decoder layer.
#[derive(Debug, Clone)]
pub struct LlamaAttention {
    /// `[H·d, D]`, pre-scaled by 1/√d.
    q_weight: Tensor,
    /// `[Hkv·d, D]`.
    k_weight: Tensor,
    /// `[Hkv·d, D]`.
    v_weight: Tensor,
    /// Biases (Qwen2), `None` for Llama.
    bias: Option<QkvBias>,
    /// Q, K, V stacked and packed (fused kernels).
    qkv_packed: Arc<PackedLinear>,
    /// V packed, for a layer with reused heads (fused kernels).
    v_packed: Arc<PackedLinear>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rope: Arc<Rope>,
    kernels: Kernels,
    gathered: Arc<Mutex<HashMap<u64, Arc<Gathered>>>>,
}

impl LlamaAttention {
    /// Projections from PyTorch-layout weights (`[out, in]`) and optional
    /// Q, K, V biases.
    pub fn new(
        (q, k, v): (Tensor, Tensor, Tensor),
        bias: Option<(Tensor, Tensor, Tensor)>,
        config: &LlamaConfig,
        rope: Arc<Rope>,
    ) -> Result<Self> {
        let scale = 1.0 / (config.head_dim() as f64).sqrt();
        let q = (q * scale)?;
        let bias = bias
            .map(|(q, k, v)| {
                Ok::<_, candle_core::Error>(QkvBias {
                    q: (q * scale)?,
                    k,
                    v,
                })
            })
            .transpose()?;
        let pack = |w: &Tensor, b: Option<Tensor>| {
            PackedLinear::from_tensor(w, b.as_ref(), Activation::Identity).map(Arc::new)
        };
        let qkv_bias = bias
            .as_ref()
            .map(|b| Tensor::cat(&[&b.q, &b.k, &b.v], 0))
            .transpose()?;
        let qkv_packed = pack(&Tensor::cat(&[&q, &k, &v], 0)?, qkv_bias)?;
        let v_packed = pack(&v, bias.as_ref().map(|b| b.v.clone()))?;
        Ok(Self {
            bias,
            kernels: Kernels::default_for(q.device()),
            q_weight: q,
            k_weight: k,
            v_weight: v,
            qkv_packed,
            v_packed,
            heads: config.heads,
            kv_heads: config.kv_heads,
            head_dim: config.head_dim(),
            rope,
            gathered: Arc::default(),
        })
    }

    /// Chooses the kernels (the fused ones run on the CPU only).
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// The key/value head that query head `h` reads.
    fn kv_of(&self, h: usize) -> usize {
        h / (self.heads / self.kv_heads)
    }

    /// Attention over the normed input `x` (`[B, S, D]`, contiguous) with an
    /// optional additive key mask (`[B, 1, 1, S]`, padded batches) under `plan`.
    /// A single input takes the fused path even when padded: its padding
    /// follows every real token, which the causal mask already hides from
    /// them (the pad rows, never read, may see each other).
    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        plan: &LayerPlan,
    ) -> Result<AttentionOutput> {
        let (b, _, _) = x.dims3()?;
        plan.check_heads(self.heads)?;
        if self.kernels == Kernels::Fused && b == 1 && x.device().is_cpu() {
            Ok(self.forward_after_prefix(x, plan, None, false)?.0)
        } else {
            self.forward_reference(x, mask, plan)
        }
    }

    /// The fused path after an optional cached prefix of which the first
    /// `used` tokens are shared: `x` holds the rows of the new tokens
    /// (positions `used..`); their queries attend to the prefix's keys and
    /// their own. With `keep_kv` the keys and values
    /// of all rows (prefix + new) come back, to extend a prefix cache.
    pub fn forward_after_prefix(
        &self,
        x: &Tensor,
        plan: &LayerPlan,
        prefix: Option<(&LayerKv, usize)>,
        keep_kv: bool,
    ) -> Result<(AttentionOutput, Option<LayerKv>)> {
        let (b, n, d) = x.dims3()?;
        if b != 1 || !x.device().is_cpu() {
            candle_core::bail!("a cached prefix runs on the CPU, one input at a time");
        }
        plan.check_heads(self.heads)?;
        let (hd, h_all, kv_all) = (self.head_dim, self.heads, self.kv_heads);
        let kv_width = kv_all * hd;
        let p = prefix.map_or(0, |(pre, used)| used.min(pre.len));
        let total = p + n;
        let rows = x.reshape((n, d))?;
        let reused = plan
            .heads()
            .iter()
            .enumerate()
            .map(|(h, plan)| match plan {
                HeadPlan::Reuse(map) => fused::reused_rows(map, h, n, total).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        let computed: Vec<usize> = (0..h_all).filter(|&h| plan.heads()[h].computes()).collect();
        // Projections of the new rows: queries (by head), new keys (by
        // key/value head) and values, as column offsets into `proj`/`v_new`.
        let Projected {
            proj,
            width,
            q_col,
            k_col: k_new_col,
            v: v_new,
            v_width,
        } = if computed.len() == h_all {
            let width = (h_all + 2 * kv_all) * hd;
            let mut qkv = fused::with_values(&rows, |x| self.qkv_packed.forward(x))?;
            self.rope
                .apply_rows(&mut qkv, width, (0, h_all + kv_all), p);
            let q_col = (0..h_all).map(|h| h * hd).collect();
            let k_col = (0..kv_all).map(|g| Some((h_all + g) * hd)).collect();
            // Values stay inside the Q·K·V rows: read them from there.
            Projected {
                proj: qkv,
                width,
                q_col,
                k_col,
                v: Vec::new(),
                v_width: 0,
            }
        } else {
            let v = fused::with_values(&rows, |x| self.v_packed.forward(x))?;
            let mut q_col = vec![0; h_all];
            let mut k_col = vec![None; kv_all];
            let (qk, width) = if computed.is_empty() {
                (Vec::new(), 0)
            } else {
                let g = self.gathered_weights(&computed)?;
                let heads = g.queries.len() + g.keys.len();
                let mut qk = fused::with_values(&rows, |x| g.weight.forward(x))?;
                self.rope.apply_rows(&mut qk, heads * hd, (0, heads), p);
                g.queries
                    .iter()
                    .enumerate()
                    .for_each(|(i, &h)| q_col[h] = i * hd);
                g.keys
                    .iter()
                    .enumerate()
                    .for_each(|(i, &k)| k_col[k] = Some((g.queries.len() + i) * hd));
                (qk, heads * hd)
            };
            Projected {
                proj: qk,
                width,
                q_col,
                k_col,
                v,
                v_width: kv_width,
            }
        };
        // Keys and values of all rows, `[p + n, Hkv·d]`: the prefix's, then
        // the new rows' (keys only for key/value heads some query head reads).
        let mut keys = vec![0f32; total * kv_width];
        let mut values = vec![0f32; total * kv_width];
        if let Some((pre, _)) = prefix {
            keys[..p * kv_width].copy_from_slice(&pre.k[..p * kv_width]);
            values[..p * kv_width].copy_from_slice(&pre.v[..p * kv_width]);
        }
        let v_src_col = (h_all + kv_all) * hd;
        for r in 0..n {
            let dst = (p + r) * kv_width;
            for (g, col) in k_new_col.iter().enumerate() {
                if let Some(col) = col {
                    let src = r * width + col;
                    keys[dst + g * hd..dst + (g + 1) * hd].copy_from_slice(&proj[src..src + hd]);
                }
            }
            let (src, stride_src) = if v_width == 0 {
                (&proj, r * width + v_src_col)
            } else {
                (&v_new, r * v_width)
            };
            values[dst..dst + kv_width].copy_from_slice(&src[stride_src..stride_src + kv_width]);
        }
        let v_cols: Vec<usize> = (0..h_all).map(|h| self.kv_of(h) * hd).collect();
        let view = |data, row_stride| View {
            data,
            row_stride,
            offset: 0,
        };
        let (context, captured) = fused::with_maps(&reused, |reused| {
            let maps = plan
                .heads()
                .iter()
                .zip(reused)
                .enumerate()
                .map(|(h, (p, map))| match map {
                    Some(map) => HeadMap::Reuse(*map),
                    None => HeadMap::Compute {
                        q: q_col[h],
                        k: self.kv_of(h) * hd,
                        capture: matches!(p, HeadPlan::Capture),
                    },
                })
                .collect::<Vec<_>>();
            fused::attention(
                view(&proj, width),
                view(&keys, kv_width),
                view(&values, kv_width),
                &maps,
                &v_cols,
                Core {
                    queries: n,
                    keys: total,
                    d: hd,
                    causal: true,
                    padding: 0,
                },
            )
        })?;
        let captured = captured
            .into_iter()
            .map(|m| m.map(|m| fused::tensor(m, &[1, n, total])).transpose())
            .collect::<Result<Vec<_>>>()?;
        let out = AttentionOutput {
            context: fused::tensor(context, &[1, n, h_all * hd])?,
            captured,
        };
        let kv = keep_kv.then_some(LayerKv {
            k: keys,
            v: values,
            len: total,
        });
        Ok((out, kv))
    }

    /// The rotary table.
    pub(super) fn rope(&self) -> &Rope {
        &self.rope
    }

    /// Q, K, V of normed rows `x` (`[m, D]`, any device) with candle ops,
    /// queries and keys rotated for each row's position (`positions`, `[m]`
    /// u32): queries `[H, m, d]` (pre-scaled by 1/√d), keys and values
    /// `[m, Hkv·d]`.
    pub(super) fn project_tensor(
        &self,
        x: &Tensor,
        positions: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (m, _) = x.dims2()?;
        let (h, kv, d) = (self.heads, self.kv_heads, self.head_dim);
        let heads_first = |w: &Tensor, b: Option<&Tensor>, n: usize| -> Result<Tensor> {
            linear(x, w, b)?
                .reshape((m, n, d))?
                .transpose(0, 1)?
                .unsqueeze(0)?
                .contiguous()
        };
        let b = self.bias.as_ref();
        let q = self
            .rope
            .apply_at(&heads_first(&self.q_weight, b.map(|b| &b.q), h)?, positions)?;
        let k = self.rope.apply_at(
            &heads_first(&self.k_weight, b.map(|b| &b.k), kv)?,
            positions,
        )?;
        let k = k.squeeze(0)?.transpose(0, 1)?.reshape((m, kv * d))?;
        let v = linear(x, &self.v_weight, b.map(|b| &b.v))?;
        Ok((q.squeeze(0)?, k, v))
    }

    /// Query, key and value heads and their width.
    pub(super) fn dims(&self) -> (usize, usize, usize) {
        (self.heads, self.kv_heads, self.head_dim)
    }

    /// Q·K·V of normed rows `x` (`[m, D]` row-major), queries and keys
    /// rotated for each row's own position: `[m, (H + 2·Hkv)·d]`, queries
    /// then keys then values.
    pub(super) fn project_rows(&self, x: &[f32], positions: &[usize]) -> Vec<f32> {
        let (h_all, kv_all, hd) = (self.heads, self.kv_heads, self.head_dim);
        let mut qkv = self.qkv_packed.forward(x);
        self.rope.apply_rows_at(
            &mut qkv,
            (h_all + 2 * kv_all) * hd,
            (0, h_all + kv_all),
            positions,
        );
        qkv
    }

    /// Causal attention of some rows of a prompt: `qkv` holds
    /// [`Self::project_rows`] of the rows `rows` (indices into `kv`, in
    /// order). Their keys and values are written into `kv`, whose other rows
    /// hold given (cached) keys and values; row `rows[i]` attends to keys
    /// `0..=rows[i]`. Returns the merged context `[m, H·d]` and, for the
    /// query rows at indices `capture` (into `rows`), every head's map over
    /// all keys (`[head][capture.len() × kv.len]`). `rescale` flags query
    /// rows by index into `rows`.
    pub(super) fn attend_rows(
        &self,
        qkv: &[f32],
        rows: &[usize],
        kv: &mut LayerKv,
        (capture, rescale): (&[usize], Option<fused::KeyRescale>),
    ) -> (Vec<f32>, Vec<Vec<f32>>) {
        let (h_all, kv_all, hd) = (self.heads, self.kv_heads, self.head_dim);
        let (width, kv_width) = ((h_all + 2 * kv_all) * hd, kv_all * hd);
        for (r, &row) in rows.iter().enumerate() {
            let src = r * width + h_all * hd;
            let dst = row * kv_width..(row + 1) * kv_width;
            kv.k[dst.clone()].copy_from_slice(&qkv[src..src + kv_width]);
            kv.v[dst].copy_from_slice(&qkv[src + kv_width..src + 2 * kv_width]);
        }
        let view = |data, row_stride| View {
            data,
            row_stride,
            offset: 0,
        };
        let heads: Vec<HeadMap> = (0..h_all)
            .map(|h| HeadMap::Compute {
                q: h * hd,
                k: self.kv_of(h) * hd,
                capture: !capture.is_empty(),
            })
            .collect();
        let v_cols: Vec<usize> = (0..h_all).map(|h| self.kv_of(h) * hd).collect();
        let (context, maps) = fused::attention_rows(
            (
                view(qkv, width),
                view(&kv.k, kv_width),
                view(&kv.v, kv_width),
            ),
            &heads,
            &v_cols,
            (kv.len, hd),
            (rows, rescale),
        );
        let n = kv.len;
        let maps = maps
            .into_iter()
            .flatten()
            .map(|map| {
                capture
                    .iter()
                    .flat_map(|&i| map[i * n..(i + 1) * n].iter().copied())
                    .collect()
            })
            .collect();
        (context, maps)
    }

    fn forward_reference(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        plan: &LayerPlan,
    ) -> Result<AttentionOutput> {
        let (b, s, _) = x.dims3()?;
        let hd = self.head_dim;
        let split = |w: &Tensor, bias: Option<&Tensor>, n: usize| -> Result<Tensor> {
            let y = x.broadcast_matmul(&w.t()?)?;
            let y = match bias {
                Some(bias) => y.broadcast_add(bias)?,
                None => y,
            };
            y.reshape((b, s, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let group = self.heads / self.kv_heads;
        let bias = self.bias.as_ref();
        let q = self
            .rope
            .apply(&split(&self.q_weight, bias.map(|b| &b.q), self.heads)?, 0)?;
        let k = self.rope.apply(
            &split(&self.k_weight, bias.map(|b| &b.k), self.kv_heads)?,
            0,
        )?;
        let v = split(&self.v_weight, bias.map(|b| &b.v), self.kv_heads)?;
        let k = candle_transformers::utils::repeat_kv(k, group)?.contiguous()?;
        let v = candle_transformers::utils::repeat_kv(v, group)?.contiguous()?;
        let scores = q
            .matmul(&k.t()?)?
            .broadcast_add(&causal_mask(s, x.device())?)?;
        let scores = match mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let mut captured = vec![None; self.heads];
        for (h, p) in plan.heads().iter().enumerate() {
            if matches!(p, HeadPlan::Capture) {
                captured[h] = Some(probs.i((.., h))?);
            }
        }
        let probs = if plan.reused() == 0 {
            probs
        } else {
            let pieces = plan
                .heads()
                .iter()
                .enumerate()
                .map(|(h, p)| match p {
                    HeadPlan::Reuse(map) => reused_map(map, h, b, s),
                    _ => probs.narrow(1, h, 1),
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&pieces, 1)?.contiguous()?
        };
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, s, self.heads * hd))?;
        Ok(AttentionOutput { context, captured })
    }

    /// The Q rows of `queries` and the K rows of the key/value heads they
    /// read, gathered once per set of query heads.
    fn gathered_weights(&self, queries: &[usize]) -> Result<Arc<Gathered>> {
        let key = queries.iter().fold(0u64, |m, &h| m | (1 << h));
        let mut cache = self
            .gathered
            .lock()
            .expect("no panics while holding the lock");
        if let Some(g) = cache.get(&key) {
            return Ok(g.clone());
        }
        let mut keys: Vec<usize> = queries.iter().map(|&h| self.kv_of(h)).collect();
        keys.dedup();
        let hd = self.head_dim;
        let rows = |heads: &[usize]| -> Result<Tensor> {
            let idx: Vec<u32> = heads
                .iter()
                .flat_map(|&h| (h * hd..(h + 1) * hd).map(|r| r as u32))
                .collect();
            Tensor::from_vec(idx, heads.len() * hd, self.q_weight.device())
        };
        let (q_rows, k_rows) = (rows(queries)?, rows(&keys)?);
        let weight = Tensor::cat(
            &[
                self.q_weight.index_select(&q_rows, 0)?,
                self.k_weight.index_select(&k_rows, 0)?,
            ],
            0,
        )?;
        let bias = self
            .bias
            .as_ref()
            .map(|b| {
                Tensor::cat(
                    &[b.q.index_select(&q_rows, 0)?, b.k.index_select(&k_rows, 0)?],
                    0,
                )
            })
            .transpose()?;
        let g = Arc::new(Gathered {
            weight: PackedLinear::from_tensor(&weight, bias.as_ref(), Activation::Identity)?,
            queries: queries.to_vec(),
            keys,
        });
        if cache.len() >= GATHERED_CACHE {
            cache.clear();
        }
        cache.insert(key, g.clone());
        Ok(g)
    }
}

/// `x · wᵀ (+ b)` with candle ops, `x` `[m, D]`.
fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// The projections of the new rows in one layer.
struct Projected {
    /// Row-major projections, `width` per row: queries, then new keys (and,
    /// with every head computed, the values).
    proj: Vec<f32>,
    width: usize,
    /// Column of each query head in `proj`.
    q_col: Vec<usize>,
    /// Column of each key/value head's new keys in `proj`, when computed.
    k_col: Vec<Option<usize>>,
    /// The values when projected apart, `v_width` per row (else empty).
    v: Vec<f32>,
    v_width: usize,
}

/// Keys (after RoPE) and values of `len` tokens in one layer, `[len, Hkv·d]`
/// row-major: a prefix cache's share of that layer, or a prompt's keys and
/// values in a row-wise pass (see [`super::KvCache`]).
#[derive(Debug, Clone)]
pub struct LayerKv {
    /// Keys.
    pub k: Vec<f32>,
    /// Values.
    pub v: Vec<f32>,
    /// Tokens.
    pub len: usize,
}

/// `[S, S]` additive causal mask: 0 on and below the diagonal, −∞ above.
fn causal_mask(s: usize, device: &candle_core::Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..s)
        .flat_map(|i| (0..s).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(values, (s, s), device)
}
