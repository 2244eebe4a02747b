//! Grouped-query causal self-attention with RoPE under a per-head plan.
//!
//! Fused path (one unpadded input on the CPU, the default there): a layer
//! with every head computed runs one Q·K·V projection; otherwise one
//! projection through the Q rows of the computed query heads and the K rows
//! of the key/value heads they need (gathered once per set of heads), plus
//! V. So a reused query head skips its Q projection, RoPE and QKᵀ + softmax,
//! and a K head is skipped when every query head that shares it is reused;
//! V always runs. RoPE is applied in place, the 1/√d scale is folded into
//! the Q weights at load time, and the core is [`fused::attention`] with a
//! causal mask.
//!
//! Reference path (candle ops; any batch, any device): computes every head
//! and substitutes the reused maps before map·V. It is the correctness
//! reference and the CUDA path; it saves no work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{IndexOp, Result, Tensor};

use super::config::LlamaConfig;
use super::rope::Rope;
use crate::model::attention::{AttentionOutput, reused_map, reused_values};
use crate::model::fused::{self, Core, HeadMap, Kernels, View};
use crate::model::plan::{HeadPlan, LayerPlan};

/// Most head sets whose gathered weights a layer keeps.
const GATHERED_CACHE: usize = 32;

/// Q rows of some query heads and K rows of the key/value heads they need,
/// stacked `[(q + k)·d, D]`.
#[derive(Debug)]
struct Gathered {
    weight: Tensor,
    /// Query heads, in order.
    queries: Vec<usize>,
    /// Key/value heads, in order.
    keys: Vec<usize>,
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
    /// Q, K, V stacked.
    qkv_weight: Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rope: Arc<Rope>,
    kernels: Kernels,
    gathered: Arc<Mutex<HashMap<u64, Arc<Gathered>>>>,
}

impl LlamaAttention {
    /// Projections from PyTorch-layout weights (`[out, in]`).
    pub fn new(
        (q, k, v): (Tensor, Tensor, Tensor),
        config: &LlamaConfig,
        rope: Arc<Rope>,
    ) -> Result<Self> {
        let q = (q * (1.0 / (config.head_dim() as f64).sqrt()))?;
        let qkv_weight = Tensor::cat(&[&q, &k, &v], 0)?;
        Ok(Self {
            kernels: Kernels::default_for(q.device()),
            q_weight: q,
            k_weight: k,
            v_weight: v,
            qkv_weight,
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
    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        plan: &LayerPlan,
    ) -> Result<AttentionOutput> {
        let (b, _, _) = x.dims3()?;
        if plan.heads().len() != self.heads {
            candle_core::bail!(
                "the layer plan has {} heads, the model has {}",
                plan.heads().len(),
                self.heads
            );
        }
        if self.kernels == Kernels::Fused && b == 1 && mask.is_none() && x.device().is_cpu() {
            self.forward_fused(x, plan)
        } else {
            self.forward_reference(x, mask, plan)
        }
    }

    fn forward_fused(&self, x: &Tensor, plan: &LayerPlan) -> Result<AttentionOutput> {
        let (_, s, d) = x.dims3()?;
        let (hd, h_all, kv_all) = (self.head_dim, self.heads, self.kv_heads);
        let rows = x.reshape((s, d))?;
        let reused_values = plan
            .heads()
            .iter()
            .enumerate()
            .map(|(h, p)| match p {
                HeadPlan::Reuse(map) => reused_values(map, h, s),
                _ => Ok(Vec::new()),
            })
            .collect::<Result<Vec<_>>>()?;
        let computed: Vec<usize> = (0..h_all).filter(|&h| plan.heads()[h].computes()).collect();
        let core = Core {
            s,
            d: hd,
            causal: true,
        };
        let heads = |q_col: &dyn Fn(usize) -> usize, k_col: &dyn Fn(usize) -> usize| {
            plan.heads()
                .iter()
                .enumerate()
                .map(|(h, p)| match p {
                    HeadPlan::Reuse(_) => HeadMap::Reuse(&reused_values[h]),
                    _ => HeadMap::Compute {
                        q: q_col(h),
                        k: k_col(h),
                        capture: matches!(p, HeadPlan::Capture),
                    },
                })
                .collect::<Vec<_>>()
        };
        let (context, maps) = if computed.len() == h_all {
            let width = (h_all + 2 * kv_all) * hd;
            let mut qkv =
                fused::with_values(&rows.matmul(&self.qkv_weight.t()?)?, <[f32]>::to_vec)?;
            self.rope
                .apply_rows(&mut qkv, width, (0, h_all + kv_all), 0);
            let view = |offset| View {
                data: &qkv,
                row_stride: width,
                offset,
            };
            let v_cols: Vec<usize> = (0..h_all).map(|h| self.kv_of(h) * hd).collect();
            let maps = heads(&|h| h * hd, &|h| (h_all + self.kv_of(h)) * hd);
            fused::attention(
                view(0),
                view(0),
                view((h_all + kv_all) * hd),
                &maps,
                &v_cols,
                core,
            )
        } else {
            let gathered = (!computed.is_empty())
                .then(|| self.gathered_weights(&computed))
                .transpose()?;
            let (qk, width, q_pos, k_pos) = match &gathered {
                Some(g) => {
                    let width = (g.queries.len() + g.keys.len()) * hd;
                    let mut qk =
                        fused::with_values(&rows.matmul(&g.weight.t()?)?, <[f32]>::to_vec)?;
                    self.rope
                        .apply_rows(&mut qk, width, (0, g.queries.len() + g.keys.len()), 0);
                    let mut q_pos = vec![0; h_all];
                    g.queries
                        .iter()
                        .enumerate()
                        .for_each(|(i, &h)| q_pos[h] = i);
                    let mut k_pos = vec![0; kv_all];
                    g.keys.iter().enumerate().for_each(|(i, &k)| k_pos[k] = i);
                    (qk, width, q_pos, (g.queries.len(), k_pos))
                }
                None => (Vec::new(), 0, Vec::new(), (0, Vec::new())),
            };
            let v = fused::with_values(&rows.matmul(&self.v_weight.t()?)?, <[f32]>::to_vec)?;
            let v_cols: Vec<usize> = (0..h_all).map(|h| self.kv_of(h) * hd).collect();
            let (n_q, k_pos) = k_pos;
            let maps = heads(&|h| q_pos[h] * hd, &|h| (n_q + k_pos[self.kv_of(h)]) * hd);
            let view = |data, row_stride| View {
                data,
                row_stride,
                offset: 0,
            };
            fused::attention(
                view(&qk, width),
                view(&qk, width),
                view(&v, kv_all * hd),
                &maps,
                &v_cols,
                core,
            )
        };
        let captured = maps
            .into_iter()
            .map(|m| m.map(|m| fused::tensor(m, &[1, s, s])).transpose())
            .collect::<Result<Vec<_>>>()?;
        Ok(AttentionOutput {
            context: fused::tensor(context, &[1, s, h_all * hd])?,
            captured,
        })
    }

    fn forward_reference(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        plan: &LayerPlan,
    ) -> Result<AttentionOutput> {
        let (b, s, _) = x.dims3()?;
        let hd = self.head_dim;
        let split = |w: &Tensor, n: usize| -> Result<Tensor> {
            x.broadcast_matmul(&w.t()?)?
                .reshape((b, s, n, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let group = self.heads / self.kv_heads;
        let q = self.rope.apply(&split(&self.q_weight, self.heads)?, 0)?;
        let k = self.rope.apply(&split(&self.k_weight, self.kv_heads)?, 0)?;
        let v = split(&self.v_weight, self.kv_heads)?;
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
        let weight = Tensor::cat(
            &[
                self.q_weight.index_select(&rows(queries)?, 0)?,
                self.k_weight.index_select(&rows(&keys)?, 0)?,
            ],
            0,
        )?;
        let g = Arc::new(Gathered {
            weight,
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

/// `[S, S]` additive causal mask: 0 on and below the diagonal, −∞ above.
fn causal_mask(s: usize, device: &candle_core::Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..s)
        .flat_map(|i| (0..s).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(values, (s, s), device)
}
