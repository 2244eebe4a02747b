//! BERT self-attention with a per-head plan: exact, exact + capture, or reuse.
//!
//! The exact path is the fastest we can write with candle ops: the
//! 1/√d scale is folded into the Q weights at load time, all computed heads of
//! a run share one Q and one K projection and one batched QKᵀ, masking is
//! skipped when nothing is padded, the softmax is candle's fused
//! `softmax_last_dim`, and no tensor is copied to a contiguous layout except
//! the head-merge at the end (and the head split for padded batches, which
//! candle's CPU matmul needs).

use candle_core::{D, IndexOp, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::ModelShape;
use super::plan::{HeadPlan, LayerPlan};

/// Q, K and V projections of one layer (weights `[D, D]`, PyTorch layout).
#[derive(Debug, Clone)]
pub struct SelfAttention {
    q_weight: Tensor,
    q_bias: Tensor,
    k_weight: Tensor,
    k_bias: Tensor,
    v_weight: Tensor,
    v_bias: Tensor,
    heads: usize,
    head_dim: usize,
}

/// What an attention layer produced.
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// The merged per-head context `[B, S, D]` (before the output projection).
    pub context: Tensor,
    /// Post-softmax maps `[B, S, S]` of the heads whose plan was `Capture`.
    pub captured: Vec<Option<Tensor>>,
}

impl SelfAttention {
    /// Loads `query`, `key`, `value` under `vb` (the `attention.self` prefix).
    pub fn load(vb: VarBuilder, shape: &ModelShape) -> Result<Self> {
        let d = shape.hidden;
        let scale = 1.0 / (shape.head_dim as f64).sqrt();
        let load = |name: &str| -> Result<(Tensor, Tensor)> {
            let vb = vb.pp(name);
            Ok((vb.get((d, d), "weight")?, vb.get(d, "bias")?))
        };
        let (q_weight, q_bias) = load("query")?;
        let (k_weight, k_bias) = load("key")?;
        let (v_weight, v_bias) = load("value")?;
        Ok(Self {
            q_weight: (q_weight * scale)?,
            q_bias: (q_bias * scale)?,
            k_weight,
            k_bias,
            v_weight,
            v_bias,
            heads: shape.heads,
            head_dim: shape.head_dim,
        })
    }

    /// Runs attention on `x` (`[B, S, D]`, contiguous) with an optional
    /// additive key mask (`[B, 1, 1, S]`) under `plan`.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        plan: &LayerPlan,
    ) -> Result<AttentionOutput> {
        let (b, s, d) = x.dims3()?;
        if plan.heads().len() != self.heads {
            candle_core::bail!(
                "the layer plan has {} heads, the model has {}",
                plan.heads().len(),
                self.heads
            );
        }
        let rows = x.reshape((b * s, d))?;
        let v = self.split_heads(&project(&rows, &self.v_weight, &self.v_bias, 0, d)?, b, s)?;
        let mut captured = vec![None; self.heads];
        let mut parts = Vec::new();
        for (first, end, computed) in plan.runs() {
            let probs = if computed {
                self.exact_probs(&rows, mask, b, s, first, end)?
            } else {
                stack_maps(&plan.heads()[first..end], b, s, first)?
            };
            for (h, head) in plan.heads().iter().enumerate().take(end).skip(first) {
                if matches!(head, HeadPlan::Capture) {
                    captured[h] = Some(probs.i((.., h - first))?);
                }
            }
            parts.push(probs);
        }
        let probs = if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Tensor::cat(&parts, 1)?
        };
        // candle concatenates along a non-leading axis through a transposed
        // layout; the batched matmul needs plain strides (a no-op otherwise).
        let probs = probs.contiguous()?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, d))?;
        Ok(AttentionOutput { context, captured })
    }

    /// softmax(Q Kᵀ / √d + mask) for heads `first..end`: `[B, n, S, S]`.
    fn exact_probs(
        &self,
        rows: &Tensor,
        mask: Option<&Tensor>,
        b: usize,
        s: usize,
        first: usize,
        end: usize,
    ) -> Result<Tensor> {
        let (start, len) = (first * self.head_dim, (end - first) * self.head_dim);
        let q = self.split_heads(
            &project(rows, &self.q_weight, &self.q_bias, start, len)?,
            b,
            s,
        )?;
        let k = self.split_heads(
            &project(rows, &self.k_weight, &self.k_bias, start, len)?,
            b,
            s,
        )?;
        let scores = q.matmul(&k.t()?)?;
        let scores = match mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        candle_nn::ops::softmax_last_dim(&scores)
    }

    /// `[B·S, n·d]` → `[B, n, S, d]` (a view when B = 1).
    fn split_heads(&self, t: &Tensor, b: usize, s: usize) -> Result<Tensor> {
        let n = t.dim(D::Minus1)? / self.head_dim;
        let t = t.reshape((b, s, n, self.head_dim))?.transpose(1, 2)?;
        if b == 1 { Ok(t) } else { t.contiguous() }
    }
}

/// `rows · W[start..start+len]ᵀ + bias[start..start+len]`.
fn project(
    rows: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    start: usize,
    len: usize,
) -> Result<Tensor> {
    let (weight, bias) = if start == 0 && len == weight.dim(0)? {
        (weight.clone(), bias.clone())
    } else {
        (weight.narrow(0, start, len)?, bias.narrow(0, start, len)?)
    };
    rows.matmul(&weight.t()?)?.broadcast_add(&bias)
}

/// The given maps of a run of reused heads as `[B, n, S, S]`.
fn stack_maps(plans: &[HeadPlan], b: usize, s: usize, first: usize) -> Result<Tensor> {
    let maps = plans
        .iter()
        .enumerate()
        .map(|(j, plan)| {
            let HeadPlan::Reuse(map) = plan else {
                candle_core::bail!("head {} is in a reused run without a map", first + j)
            };
            let map = match map.dims() {
                [ms, ns] if *ms == s && *ns == s => map.reshape((1, 1, s, s))?.broadcast_as((b, 1, s, s))?,
                [mb, ms, ns] if *mb == b && *ms == s && *ns == s => map.unsqueeze(1)?,
                other => candle_core::bail!(
                    "the map given for head {} has shape {other:?}, expected [{s}, {s}] or [{b}, {s}, {s}]",
                    first + j
                ),
            };
            map.to_dtype(candle_core::DType::F32)
        })
        .collect::<Result<Vec<_>>>()?;
    if maps.len() == 1 && b == 1 {
        return Ok(maps.into_iter().next().expect("one map"));
    }
    Tensor::cat(&maps, 1)
}
