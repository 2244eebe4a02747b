//! Reusing a longer entry's map for a shorter query: an aligned crop.
//!
//! The query's first `S − 1` positions are matched with the entry's first
//! `S − 1`, and its last position ([SEP]) with the entry's last, so the
//! special tokens stay aligned; each cropped row is renormalised to sum to 1.

/// Indices of an entry of length `entry_len` that stand for the positions of
/// a query of length `query_len` (`query_len ≤ entry_len`, both ≥ 1).
pub fn aligned_indices(query_len: usize, entry_len: usize) -> Vec<usize> {
    debug_assert!(query_len >= 1 && query_len <= entry_len);
    let mut idx: Vec<usize> = (0..query_len - 1).collect();
    idx.push(entry_len - 1);
    idx
}

/// Crops a row-major `entry_len × entry_len` map to `query_len × query_len`
/// along [`aligned_indices`] and renormalises each row.
pub fn crop_map(map: &[f32], entry_len: usize, query_len: usize) -> Vec<f32> {
    let idx = aligned_indices(query_len, entry_len);
    let mut out = Vec::with_capacity(query_len * query_len);
    for &r in &idx {
        let row = &map[r * entry_len..(r + 1) * entry_len];
        let start = out.len();
        out.extend(idx.iter().map(|&c| row[c]));
        let sum: f32 = out[start..].iter().sum();
        if sum > 0.0 {
            out[start..].iter_mut().for_each(|x| *x /= sum);
        } else {
            // No mass left on the kept keys: fall back to uniform attention.
            out[start..]
                .iter_mut()
                .for_each(|x| *x = 1.0 / query_len as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_first_and_last_positions_aligned() {
        assert_eq!(aligned_indices(3, 5), vec![0, 1, 4]);
        assert_eq!(aligned_indices(4, 4), vec![0, 1, 2, 3]);
        assert_eq!(aligned_indices(1, 6), vec![5]);
    }

    #[test]
    fn cropped_rows_are_renormalised() {
        // 3×3 map cropped to 2×2: rows 0 and 2, columns 0 and 2.
        let map = [0.5, 0.25, 0.25, 0.2, 0.6, 0.2, 0.0, 1.0, 0.0];
        let out = crop_map(&map, 3, 2);
        assert_eq!(out.len(), 4);
        assert!((out[0] - 2.0 / 3.0).abs() < 1e-6 && (out[1] - 1.0 / 3.0).abs() < 1e-6);
        // Row 2 had all its mass on the dropped column: uniform.
        assert_eq!(&out[2..], &[0.5, 0.5]);
        // Same length: unchanged.
        assert_eq!(crop_map(&map, 3, 3), map.to_vec());
    }
}
