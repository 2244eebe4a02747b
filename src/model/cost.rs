//! A FLOP model of one encoder layer, for the "ideal" speedup implied by the
//! work a reused head actually skips (its Q and K projections, QKᵀ and
//! softmax); map·V, V, the output projection and the feed-forward block
//! always run.

use super::ModelShape;
use super::llama::LlamaConfig;

/// Floating-point operations of one input's forward pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerCost {
    /// Attention (Q/K/V projections, QKᵀ, softmax, map·V) of one layer.
    pub attention: f64,
    /// What one reused head skips in one layer.
    pub skippable_per_head: f64,
    /// Output projection and feed-forward block of one layer.
    pub rest: f64,
}

/// Approximate softmax cost per score (max, subtract, exp, sum, divide).
const SOFTMAX_FLOPS: f64 = 5.0;

impl LayerCost {
    /// The cost of a decoder layer at `s` tokens: grouped-query attention
    /// (K and V projections `kv_heads` wide; a reused query head skips its Q
    /// rows, its share of the K rows, QKᵀ and softmax), a three-matrix
    /// feed-forward block.
    pub fn decoder(config: &LlamaConfig, s: usize) -> Self {
        let (s, d, h, dh, f) = (
            s as f64,
            config.hidden as f64,
            config.heads as f64,
            config.head_dim() as f64,
            config.ffn as f64,
        );
        let kv = config.kv_heads as f64 * dh;
        let projections = 2.0 * s * d * (d + 2.0 * kv);
        let scores = 2.0 * s * s * d;
        let softmax = SOFTMAX_FLOPS * s * s * h;
        let map_v = 2.0 * s * s * d;
        let group = config.group() as f64;
        Self {
            attention: projections + scores + softmax + map_v,
            skippable_per_head: 2.0 * s * d * dh
                + 2.0 * s * d * dh / group
                + 2.0 * s * s * dh
                + SOFTMAX_FLOPS * s * s,
            rest: 2.0 * s * d * d + 3.0 * 2.0 * s * d * f,
        }
    }

    /// The cost of an encoder layer of `shape` with `ffn` feed-forward width
    /// at `s` tokens.
    pub fn encoder(shape: &ModelShape, ffn: usize, s: usize) -> Self {
        let (s, d, h, dh, f) = (
            s as f64,
            shape.hidden as f64,
            shape.heads as f64,
            shape.head_dim as f64,
            ffn as f64,
        );
        let projections = 3.0 * 2.0 * s * d * d;
        let scores = 2.0 * s * s * d;
        let softmax = SOFTMAX_FLOPS * s * s * h;
        let map_v = 2.0 * s * s * d;
        Self {
            attention: projections + scores + softmax + map_v,
            skippable_per_head: 2.0 * 2.0 * s * d * dh + 2.0 * s * s * dh + SOFTMAX_FLOPS * s * s,
            rest: 2.0 * s * d * d + 2.0 * 2.0 * s * d * f,
        }
    }

    /// Ideal (attention, end-to-end) speedups when `reused` of the model's
    /// `layers × heads` head slots are reused and reuse and look-up cost nothing.
    pub fn ideal_speedups(&self, layers: usize, reused: f64) -> (f64, f64) {
        let attention = self.attention * layers as f64;
        let total = attention + self.rest * layers as f64;
        let skipped = self.skippable_per_head * reused;
        (attention / (attention - skipped), total / (total - skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reusing_every_head_skips_q_k_scores_and_softmax_only() {
        let shape = ModelShape {
            layers: 6,
            heads: 12,
            head_dim: 32,
            hidden: 384,
            max_positions: 512,
        };
        let c = LayerCost::encoder(&shape, 1536, 28);
        let skipped_all = c.skippable_per_head * 12.0;
        assert!(skipped_all < c.attention);
        // V projection and map·V remain.
        let remaining = c.attention - skipped_all;
        let expected = 2.0 * 28.0 * 384.0 * 384.0 + 2.0 * 28.0 * 28.0 * 384.0;
        assert!((remaining - expected).abs() / expected < 1e-9);
        let (att, e2e) = c.ideal_speedups(6, 0.0);
        assert_eq!((att, e2e), (1.0, 1.0));
        let (att, e2e) = c.ideal_speedups(6, 72.0);
        assert!(att > e2e && e2e > 1.0);
    }
}
