//! Wall-clock timers of a forward pass.

use std::time::Duration;

use serde::Serialize;

/// Time spent in one encoder layer.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LayerTiming {
    /// The planner's decision for the layer (look-up, map loading).
    #[serde(serialize_with = "as_ms")]
    pub plan: Duration,
    /// Q/K/V projections and the attention core (QKᵀ, softmax, map·V), or the
    /// map·V of reused heads.
    #[serde(serialize_with = "as_ms")]
    pub attention: Duration,
    /// Output projection, residual + layer norm, feed-forward block.
    #[serde(serialize_with = "as_ms")]
    pub rest: Duration,
}

/// Time spent in one forward pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForwardTimings {
    /// Embedding look-up and its layer norm.
    #[serde(serialize_with = "as_ms")]
    pub embeddings: Duration,
    /// Per layer, in order.
    pub layers: Vec<LayerTiming>,
}

impl ForwardTimings {
    /// Sum of the planning time of all layers.
    pub fn plan(&self) -> Duration {
        self.layers.iter().map(|l| l.plan).sum()
    }

    /// Sum of the attention time of all layers.
    pub fn attention(&self) -> Duration {
        self.layers.iter().map(|l| l.attention).sum()
    }

    /// Sum of the non-attention time of all layers.
    pub fn rest(&self) -> Duration {
        self.layers.iter().map(|l| l.rest).sum()
    }

    /// Embeddings + every layer (planning included).
    pub fn total(&self) -> Duration {
        self.embeddings + self.plan() + self.attention() + self.rest()
    }
}

/// A duration in milliseconds, as JSON reports them.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(ms(*d))
}
