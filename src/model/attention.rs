//! BERT self-attention with a per-head plan: exact, exact + capture, or reuse.
//!
//! The exact path is the fastest we can write with candle ops: the 1/√d
//! scale is folded into the Q weights at load time, one Q, one K and one V
//! projection, one batched QKᵀ, masking only when something is padded,
//! candle's fused `softmax_last_dim`, and no copy to a contiguous layout but
//! the head merge at the end (and the head split of padded batches, which
//! candle's CPU matmul needs, and of everything on CUDA).
//!
//! A layer with reused heads computes Q and K for the other heads only, with
//! one projection each through weight rows gathered for that set of heads
//! (cached per set: a calibrated policy's decisions in a layer are nested by
//! distance, so a layer sees at most heads + 1 sets). The computed and the
//! reused maps are stacked in model order and one batched map·V runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{D, DType, IndexOp, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::ModelShape;
use super::fused::{self, Core, HeadMap, Kernels, View};
use super::packed::{Activation, PackedLinear};
use super::plan::{HeadPlan, LayerPlan, ReusedMap};

/// Most head sets whose gathered weights a layer keeps.
const GATHERED_CACHE: usize = 32;

/// Q and K weight rows and biases of all heads or of a subset of heads.
#[derive(Debug)]
struct QkWeights {
    q_weight: Tensor,
    q_bias: Tensor,
    k_weight: Tensor,
    k_bias: Tensor,
    /// Q then K stacked and packed, for the fused kernels: each output row
    /// holds the queries then the keys.
    qk_packed: PackedLinear,
}

impl QkWeights {
    fn new(q_weight: Tensor, q_bias: Tensor, k_weight: Tensor, k_bias: Tensor) -> Result<Self> {
        Ok(Self {
            qk_packed: PackedLinear::from_tensor(
                &Tensor::cat(&[&q_weight, &k_weight], 0)?,
                Some(&Tensor::cat(&[&q_bias, &k_bias], 0)?),
                Activation::Identity,
            )?,
            q_weight,
            q_bias,
            k_weight,
            k_bias,
        })
    }
}

/// Q, K and V projections of one layer (weights `[D, D]`, PyTorch layout).
#[derive(Debug, Clone)]
pub struct SelfAttention {
    /// Q (pre-scaled by 1/√d) and K of all heads.
    qk: Arc<QkWeights>,
    v_weight: Tensor,
    v_bias: Tensor,
    /// Q (scaled), K and V stacked `[3D, D]` with their biases, packed: one
    /// projection for a layer with no reused head (fused kernels).
    qkv_packed: Arc<PackedLinear>,
    /// V packed, for a layer with reused heads (fused kernels).
    v_packed: Arc<PackedLinear>,
    heads: usize,
    head_dim: usize,
    kernels: Kernels,
    /// Gathered Q/K weights by bit mask of computed heads.
    gathered: Arc<Mutex<HashMap<u64, Arc<QkWeights>>>>,
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
        if shape.heads > 64 {
            candle_core::bail!("{} heads per layer: at most 64 are supported", shape.heads);
        }
        let scale = 1.0 / (shape.head_dim as f64).sqrt();
        let load = |name: &str| -> Result<(Tensor, Tensor)> {
            let vb = vb.pp(name);
            Ok((vb.get((d, d), "weight")?, vb.get(d, "bias")?))
        };
        let (q_weight, q_bias) = load("query")?;
        let (k_weight, k_bias) = load("key")?;
        let (v_weight, v_bias) = load("value")?;
        let qk = QkWeights::new((q_weight * scale)?, (q_bias * scale)?, k_weight, k_bias)?;
        let qkv_packed = PackedLinear::from_tensor(
            &Tensor::cat(&[&qk.q_weight, &qk.k_weight, &v_weight], 0)?,
            Some(&Tensor::cat(&[&qk.q_bias, &qk.k_bias, &v_bias], 0)?),
            Activation::Identity,
        )?;
        let v_packed = PackedLinear::from_tensor(&v_weight, Some(&v_bias), Activation::Identity)?;
        Ok(Self {
            qk: Arc::new(qk),
            v_weight,
            v_bias,
            qkv_packed: Arc::new(qkv_packed),
            v_packed: Arc::new(v_packed),
            heads: shape.heads,
            head_dim: shape.head_dim,
            kernels: Kernels::default_for(vb.device()),
            gathered: Arc::default(),
        })
    }

    /// Chooses the kernels (the fused ones run on the CPU only).
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
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
        plan.check_heads(self.heads)?;
        if self.kernels == Kernels::Fused && b == 1 && x.device().is_cpu() {
            let padding = match mask {
                None => Some(0),
                Some(mask) => trailing_padding(mask)?,
            };
            if let Some(padding) = padding {
                return self.forward_fused(x, plan, padding);
            }
        }
        let rows = x.reshape((b * s, d))?;
        let v = self.split_heads(
            &rows
                .matmul(&self.v_weight.t()?)?
                .broadcast_add(&self.v_bias)?,
            b,
            s,
        )?;
        let (computed, reused): (Vec<usize>, Vec<usize>) =
            (0..self.heads).partition(|&h| plan.heads()[h].computes());
        let mut captured = vec![None; self.heads];

        if reused.is_empty() {
            let probs = self.probs(&rows, mask, b, s, &self.qk)?;
            capture(plan, &computed, &probs, &mut captured)?;
            let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, d))?;
            return Ok(AttentionOutput { context, captured });
        }
        if computed.is_empty() {
            let maps = stack_maps(plan, &reused, b, s)?;
            let context = maps.matmul(&v)?.transpose(1, 2)?.reshape((b, s, d))?;
            return Ok(AttentionOutput { context, captured });
        }
        let w = self.gathered_weights(&computed)?;
        let probs = self.probs(&rows, mask, b, s, &w)?;
        capture(plan, &computed, &probs, &mut captured)?;
        // All maps in model order: one copy of H·S² values.
        let mut next_computed = 0;
        let pieces = (0..self.heads)
            .map(|h| match &plan.heads()[h] {
                HeadPlan::Reuse(map) => reused_map(map, h, b, s),
                _ => {
                    next_computed += 1;
                    probs.narrow(1, next_computed - 1, 1)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let probs = Tensor::cat(&pieces, 1)?.contiguous()?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, d))?;
        Ok(AttentionOutput { context, captured })
    }

    /// The fused path for one input on the CPU (its last `padding` keys
    /// masked): one Q·K·V projection when every head is computed, else Q and
    /// K for the computed heads only; then [`fused::attention`].
    fn forward_fused(
        &self,
        x: &Tensor,
        plan: &LayerPlan,
        padding: usize,
    ) -> Result<AttentionOutput> {
        let (_, s, d) = x.dims3()?;
        let hd = self.head_dim;
        let rows = x.reshape((s, d))?;
        let computed: Vec<usize> = (0..self.heads)
            .filter(|&h| plan.heads()[h].computes())
            .collect();
        let reused = plan
            .heads()
            .iter()
            .enumerate()
            .map(|(h, p)| match p {
                HeadPlan::Reuse(map) => fused::reused_rows(map, h, s, s).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        let v_cols: Vec<usize> = (0..self.heads).map(|h| h * hd).collect();
        let core = Core::square(s, hd, false).padded(padding);
        let (context, maps) = fused::with_maps(&reused, |reused| {
            // Computed heads read Q and K at `q_of(i)`, `k_of(i)` (i counts
            // computed heads); reused heads read their map.
            let head_maps = |q_of: &dyn Fn(usize) -> usize, k_of: &dyn Fn(usize) -> usize| {
                let mut next = 0;
                plan.heads()
                    .iter()
                    .zip(reused)
                    .map(|(p, map)| match map {
                        Some(map) => HeadMap::Reuse(*map),
                        None => {
                            next += 1;
                            HeadMap::Compute {
                                q: q_of(next - 1),
                                k: k_of(next - 1),
                                capture: matches!(p, HeadPlan::Capture),
                            }
                        }
                    })
                    .collect::<Vec<_>>()
            };
            fused::with_values(&rows, |x| -> Result<_> {
                if computed.len() == self.heads {
                    let qkv = self.qkv_packed.forward(x);
                    let view = |offset| View {
                        data: &qkv,
                        row_stride: 3 * d,
                        offset,
                    };
                    let heads = head_maps(&|i| i * hd, &|i| d + i * hd);
                    return Ok(fused::attention(
                        view(0),
                        view(0),
                        view(2 * d),
                        &heads,
                        &v_cols,
                        core,
                    ));
                }
                let qk = if computed.is_empty() {
                    Vec::new()
                } else {
                    self.gathered_weights(&computed)?.qk_packed.forward(x)
                };
                let v = self.v_packed.forward(x);
                let n = computed.len() * hd;
                let view = |data, row_stride| View {
                    data,
                    row_stride,
                    offset: 0,
                };
                let heads = head_maps(&|i| i * hd, &|i| n + i * hd);
                Ok(fused::attention(
                    view(&qk, 2 * n),
                    view(&qk, 2 * n),
                    view(&v, d),
                    &heads,
                    &v_cols,
                    core,
                ))
            })
        })???;
        let captured = maps
            .into_iter()
            .map(|m| m.map(|m| fused::tensor(m, &[1, s, s])).transpose())
            .collect::<Result<Vec<_>>>()?;
        Ok(AttentionOutput {
            context: fused::tensor(context, &[1, s, d])?,
            captured,
        })
    }

    /// softmax(Q Kᵀ + mask) with the given (already scaled) weights: `[B, n, S, S]`.
    fn probs(
        &self,
        rows: &Tensor,
        mask: Option<&Tensor>,
        b: usize,
        s: usize,
        w: &QkWeights,
    ) -> Result<Tensor> {
        let q = self.split_heads(
            &rows.matmul(&w.q_weight.t()?)?.broadcast_add(&w.q_bias)?,
            b,
            s,
        )?;
        let k = self.split_heads(
            &rows.matmul(&w.k_weight.t()?)?.broadcast_add(&w.k_bias)?,
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

    /// The Q/K weight rows of `heads`, gathered once per set of heads.
    fn gathered_weights(&self, heads: &[usize]) -> Result<Arc<QkWeights>> {
        let key = heads.iter().fold(0u64, |m, &h| m | (1 << h));
        let mut cache = self
            .gathered
            .lock()
            .expect("no panics while holding the lock");
        if let Some(w) = cache.get(&key) {
            return Ok(w.clone());
        }
        let rows: Vec<u32> = heads
            .iter()
            .flat_map(|&h| (h * self.head_dim..(h + 1) * self.head_dim).map(|r| r as u32))
            .collect();
        let rows = Tensor::from_vec(rows, heads.len() * self.head_dim, self.qk.q_weight.device())?;
        let pick = |t: &Tensor| t.index_select(&rows, 0);
        let w = Arc::new(QkWeights::new(
            pick(&self.qk.q_weight)?,
            pick(&self.qk.q_bias)?,
            pick(&self.qk.k_weight)?,
            pick(&self.qk.k_bias)?,
        )?);
        if cache.len() >= GATHERED_CACHE {
            cache.clear();
        }
        cache.insert(key, w.clone());
        Ok(w)
    }

    /// `[B·S, n·d]` → `[B, n, S, d]` (a view when B = 1 on the CPU; CUDA's
    /// batched matmul needs plain batch strides).
    fn split_heads(&self, t: &Tensor, b: usize, s: usize) -> Result<Tensor> {
        let n = t.dim(D::Minus1)? / self.head_dim;
        let t = t.reshape((b, s, n, self.head_dim))?.transpose(1, 2)?;
        if b == 1 && t.device().is_cpu() {
            Ok(t)
        } else {
            t.contiguous()
        }
    }
}

/// Hands out the maps of computed heads whose plan captures them; `probs`
/// holds the computed heads in the order of `computed`.
fn capture(
    plan: &LayerPlan,
    computed: &[usize],
    probs: &Tensor,
    out: &mut [Option<Tensor>],
) -> Result<()> {
    for (j, &h) in computed.iter().enumerate() {
        if matches!(plan.heads()[h], HeadPlan::Capture) {
            out[h] = Some(probs.i((.., j))?);
        }
    }
    Ok(())
}

/// The given maps of the reused heads as `[B, n, S, S]`, in the order of `heads`.
fn stack_maps(plan: &LayerPlan, heads: &[usize], b: usize, s: usize) -> Result<Tensor> {
    let maps = heads
        .iter()
        .map(|&h| match &plan.heads()[h] {
            HeadPlan::Reuse(map) => reused_map(map, h, b, s),
            _ => candle_core::bail!("head {h} is not reused"),
        })
        .collect::<Result<Vec<_>>>()?;
    // candle concatenates along a non-leading axis through a transposed
    // layout; the batched matmul needs plain strides.
    Tensor::cat(&maps, 1)?.contiguous()
}

/// A reused map (`[S, S]` shared by the batch, or `[B, S, S]`) as `[B, 1, S, S]` f32.
pub(super) fn reused_map(map: &ReusedMap, h: usize, b: usize, s: usize) -> Result<Tensor> {
    let map = map.head_map()?;
    let map = match map.dims() {
        [ms, ns] if *ms == s && *ns == s => {
            map.reshape((1, 1, s, s))?.broadcast_as((b, 1, s, s))?
        }
        [mb, ms, ns] if *mb == b && *ms == s && *ns == s => map.unsqueeze(1)?,
        other => candle_core::bail!(
            "the map given for head {h} has shape {other:?}, expected [{s}, {s}] or [{b}, {s}, {s}]"
        ),
    };
    map.to_dtype(DType::F32)
}

/// The number of trailing keys a single input's additive mask (`[1, 1, 1, S]`)
/// masks out, when it masks exactly a suffix (right padding); `None` for any
/// other mask, which the fused path leaves to the reference one.
fn trailing_padding(mask: &Tensor) -> Result<Option<usize>> {
    let values = mask.flatten_all()?.to_vec1::<f32>()?;
    let real = values.iter().take_while(|&&v| v == 0.0).count();
    let suffix_masked = values[real..].iter().all(|&v| v == f32::NEG_INFINITY);
    Ok((suffix_masked && real > 0).then_some(values.len() - real))
}
