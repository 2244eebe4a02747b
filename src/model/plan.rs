//! Per-head attention plans: what each head of a layer does in a forward pass.

use candle_core::{Result, Tensor};

/// What one attention head does.
#[derive(Debug, Clone)]
pub enum HeadPlan {
    /// Compute the attention map exactly.
    Exact,
    /// Compute exactly and hand the post-softmax map out (shape `[B, S, S]`).
    Capture,
    /// Skip this head's Q and K work and use the given post-softmax map:
    /// output = map · V.
    Reuse(ReusedMap),
}

impl HeadPlan {
    /// Reuse `map` (`[S, S]`, shared by the batch, or `[B, S, S]`).
    pub fn reuse(map: Tensor) -> Self {
        HeadPlan::Reuse(ReusedMap::from(map))
    }

    /// True when the head's map is computed (exactly) in this pass.
    pub fn computes(&self) -> bool {
        !matches!(self, HeadPlan::Reuse(_))
    }
}

/// A post-softmax map one head reuses: a tensor of its own (`[S, S]`,
/// shared by the batch, or `[B, S, S]`), or its slice of a stack `[N, S, S]`
/// of maps loaded together, so a layer's reused heads share one tensor
/// instead of a tensor (and its allocations) each.
#[derive(Debug, Clone)]
pub struct ReusedMap {
    tensor: Tensor,
    index: Option<usize>,
}

impl ReusedMap {
    /// Map `index` of `stack` (`[N, S, S]`).
    pub fn stacked(stack: Tensor, index: usize) -> Self {
        Self {
            tensor: stack,
            index: Some(index),
        }
    }

    /// The head's own map: its tensor, or a view of its slice of the stack.
    pub fn head_map(&self) -> Result<Tensor> {
        match self.index {
            None => Ok(self.tensor.clone()),
            Some(i) => self.tensor.get(i),
        }
    }

    /// The tensor holding the map, and the map's index when it is a stack.
    pub fn parts(&self) -> (&Tensor, Option<usize>) {
        (&self.tensor, self.index)
    }
}

impl From<Tensor> for ReusedMap {
    fn from(tensor: Tensor) -> Self {
        Self {
            tensor,
            index: None,
        }
    }
}

/// The plans of every head of one layer.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    heads: Vec<HeadPlan>,
}

impl LayerPlan {
    /// One plan per head, in head order.
    pub fn new(heads: Vec<HeadPlan>) -> Self {
        Self { heads }
    }

    /// Every head exact.
    pub fn exact(heads: usize) -> Self {
        Self::new(vec![HeadPlan::Exact; heads])
    }

    /// Every head exact, every map captured.
    pub fn capture_all(heads: usize) -> Self {
        Self::new(vec![HeadPlan::Capture; heads])
    }

    /// The head plans, in head order.
    pub fn heads(&self) -> &[HeadPlan] {
        &self.heads
    }

    /// Fails unless the plan has one entry per head of a `heads`-head layer.
    pub fn check_heads(&self, heads: usize) -> Result<()> {
        if self.heads.len() != heads {
            candle_core::bail!(
                "the layer plan has {} heads, the model has {heads}",
                self.heads.len()
            );
        }
        Ok(())
    }

    /// Number of heads that reuse a given map.
    pub fn reused(&self) -> usize {
        self.heads.iter().filter(|h| !h.computes()).count()
    }
}

/// Chooses each layer's plan during a forward pass, seeing the layer's input
/// hidden state (`[B, S, D]`) before its attention runs: this is where a
/// per-layer look-up plugs in. Planners are `Send`: the layer loop runs on a
/// worker thread.
pub trait Planner: Send {
    /// The plan for `layer`, given that layer's input.
    fn plan_layer(&mut self, layer: usize, input: &Tensor) -> Result<LayerPlan>;

    /// Whether [`Self::plan_layer`] reads the input (a forward pass after a
    /// cached prefix then assembles the prefix's rows and the new ones).
    fn reads_input(&self) -> bool {
        true
    }
}

/// A fixed plan for every layer, decided before the pass.
#[derive(Debug, Clone)]
pub struct StaticPlan {
    layers: Vec<LayerPlan>,
}

impl StaticPlan {
    /// One plan per layer, in layer order.
    pub fn new(layers: Vec<LayerPlan>) -> Self {
        Self { layers }
    }

    /// Every head of every layer exact.
    pub fn exact(layers: usize, heads: usize) -> Self {
        Self::new(vec![LayerPlan::exact(heads); layers])
    }

    /// Every head of every layer exact, every map captured.
    pub fn capture_all(layers: usize, heads: usize) -> Self {
        Self::new(vec![LayerPlan::capture_all(heads); layers])
    }

    /// Every head of every layer reuses the given map (`[L][H]`, as captured
    /// by a forward pass); an error names the first head without one.
    pub fn reuse_captured(maps: &[Vec<Option<Tensor>>]) -> Result<Self> {
        let layers = maps
            .iter()
            .enumerate()
            .map(|(l, heads)| {
                let plans = heads
                    .iter()
                    .enumerate()
                    .map(|(h, map)| match map {
                        Some(map) => Ok(HeadPlan::reuse(map.clone())),
                        None => Err(candle_core::Error::Msg(format!(
                            "layer {l} head {h} has no captured map"
                        ))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(LayerPlan::new(plans))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::new(layers))
    }

    /// The layer plans.
    pub fn layers(&self) -> &[LayerPlan] {
        &self.layers
    }
}

impl Planner for StaticPlan {
    fn reads_input(&self) -> bool {
        false
    }

    fn plan_layer(&mut self, layer: usize, _input: &Tensor) -> Result<LayerPlan> {
        self.layers.get(layer).cloned().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "the plan has {} layers but the model asked for layer {layer}",
                self.layers.len()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn reuse_captured_needs_every_map() {
        let map = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        let plan =
            StaticPlan::reuse_captured(&[vec![Some(map.clone()), Some(map.clone())]]).unwrap();
        assert_eq!(plan.layers()[0].reused(), 2);
        let err = StaticPlan::reuse_captured(&[vec![Some(map), None]]).unwrap_err();
        assert!(
            err.to_string()
                .contains("layer 0 head 1 has no captured map"),
            "{err}"
        );
    }
}
