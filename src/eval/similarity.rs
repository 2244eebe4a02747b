//! Similarity of two attention maps.

use candle_core::{D, Result, Tensor};

/// 1 − mean over rows of the total variation distance (½·L1) between two
/// row-stochastic maps of the same shape (`[.., S, S]`): 1 for identical
/// maps, 0 for maps whose rows share no mass.
pub fn map_similarity(a: &Tensor, b: &Tensor) -> Result<f32> {
    let tv = (a - b)?.abs()?.sum(D::Minus1)?.affine(0.5, 0.0)?;
    Ok(1.0 - tv.mean_all()?.to_scalar::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn identical_maps_are_one_and_disjoint_rows_are_zero() {
        let a = Tensor::new(&[[1f32, 0.0], [0.5, 0.5]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[0f32, 1.0], [0.5, 0.5]], &Device::Cpu).unwrap();
        assert_eq!(map_similarity(&a, &a).unwrap(), 1.0);
        // Row 0 disjoint (TV 1), row 1 identical (TV 0): mean TV 0.5.
        assert!((map_similarity(&a, &b).unwrap() - 0.5).abs() < 1e-6);
    }
}
