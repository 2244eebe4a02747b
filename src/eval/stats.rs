//! Summary statistics for repeated measurements.

/// The median of `values` (mean of the middle two for an even count); `None`
/// when empty or when a value is NaN.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// The arithmetic mean (NaN when empty).
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The `p`-th percentile (0–100) by linear interpolation between closest
/// ranks (NaN when empty).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// One-sided z for 95% confidence.
pub const Z_95: f64 = 1.645;

/// Upper 95% bound of a paired accuracy loss in points: `(max(b − c, 0) +
/// 1.645·√(b + c)) / n` with `lost` = b answers the exact run gets right and
/// the reusing run wrong, `gained` = c the reverse. A net gain is not
/// credited: answers a setting happens to gain on the calibration split must
/// not pay for the flips it makes.
pub fn accuracy_loss_bound(lost: usize, gained: usize, n: usize) -> f64 {
    let flips = (lost + gained) as f64;
    let net_loss = lost.saturating_sub(gained) as f64;
    (net_loss + Z_95 * flips.sqrt()) / n.max(1) as f64 * 100.0
}

/// Upper 95% bound of the mean of `values`: mean + 1.645 · sd / √n (the mean
/// itself for one value).
pub fn mean_upper_bound(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let m = mean(values);
    if values.len() < 2 {
        return m;
    }
    let var = values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0);
    m + Z_95 * (var / n).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn mean_and_percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(mean(&v), 3.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 100.0), 5.0);
        assert!((percentile(&v, 5.0) - 1.2).abs() < 1e-12);
    }
}
