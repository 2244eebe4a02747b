//! What kind of head each attention head is, from its maps over the
//! database's entries, in the spirit of TransformerLens' `detect_head`: a
//! score per type in [0, 1] and one type per head.
//!
//! Scores (means over up to [`SAMPLE`] entries, rows of one map averaged):
//! - `positional` — mean similarity (1 − mean row TV) of the head's maps of
//!   two different entries of the same length, over up to [`PAIRS`] pairs:
//!   1 when the map depends only on the length;
//! - `previous_token` — attention of row r to token r − 1 (rows 1…);
//! - `first_sink` — attention to the first token ([CLS], `<|im_start|>`);
//! - `last_sink` — attention to the last token ([SEP]) from the other rows;
//! - `entropy` — row entropy over ln(row length): 1 is uniform.
//!
//! The type is the first that applies: positional (≥ 0.95), previous token
//! (≥ 0.5), first-token sink (≥ 0.5), last-token sink (≥ 0.5), broad
//! (entropy ≥ 0.8), else content.

use serde::{Deserialize, Serialize};

use super::error::DbError;
use super::maps::MapFile;
use super::similarity::similarity;
use super::store::Entry;

/// Entries sampled for the scores (evenly over the database).
pub const SAMPLE: usize = 300;
/// Same-length entry pairs compared for the positional score.
pub const PAIRS: usize = 100;

/// The kind of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadType {
    /// The map is the same for any input of a length.
    Positional,
    /// Each token attends mostly to the one before it.
    PreviousToken,
    /// Most attention goes to the first token.
    FirstSink,
    /// Most attention goes to the last token.
    LastSink,
    /// Attention spread nearly uniformly.
    Broad,
    /// None of the above: the map follows the content.
    Content,
}

impl HeadType {
    /// Every type, in classification order.
    pub const ALL: [HeadType; 6] = [
        HeadType::Positional,
        HeadType::PreviousToken,
        HeadType::FirstSink,
        HeadType::LastSink,
        HeadType::Broad,
        HeadType::Content,
    ];

    /// Its position in [`HeadType::ALL`].
    pub fn index(self) -> usize {
        HeadType::ALL
            .iter()
            .position(|&k| k == self)
            .expect("every type is in ALL")
    }

    /// A one-character tag for grid cells.
    pub fn tag(self) -> char {
        match self {
            HeadType::Positional => 'P',
            HeadType::PreviousToken => '←',
            HeadType::FirstSink => 'F',
            HeadType::LastSink => 'L',
            HeadType::Broad => 'B',
            HeadType::Content => 'C',
        }
    }

    /// The name used in JSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            HeadType::Positional => "positional",
            HeadType::PreviousToken => "previous-token",
            HeadType::FirstSink => "first-sink",
            HeadType::LastSink => "last-sink",
            HeadType::Broad => "broad",
            HeadType::Content => "content",
        }
    }
}

/// One head's scores and type.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadProfile {
    /// The type (see the module doc).
    pub kind: HeadType,
    /// Same-length maps' mean similarity (`None` without two entries of one length).
    pub positional: Option<f32>,
    /// Mean attention to the previous token.
    pub previous_token: f32,
    /// Mean attention to the first token.
    pub first_sink: f32,
    /// Mean attention to the last token.
    pub last_sink: f32,
    /// Mean normalised row entropy.
    pub entropy: f32,
}

impl HeadProfile {
    /// The type these scores give.
    fn classify(&mut self) {
        self.kind = if self.positional.is_some_and(|p| p >= 0.95) {
            HeadType::Positional
        } else if self.previous_token >= 0.5 {
            HeadType::PreviousToken
        } else if self.first_sink >= 0.5 {
            HeadType::FirstSink
        } else if self.last_sink >= 0.5 {
            HeadType::LastSink
        } else if self.entropy >= 0.8 {
            HeadType::Broad
        } else {
            HeadType::Content
        };
    }
}

/// Every head's profile, `[L][H]`, as stored in a database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadTypes {
    /// Entries the scores were measured on.
    pub entries: usize,
    /// Profiles by layer, then head.
    pub heads: Vec<Vec<HeadProfile>>,
}

impl HeadTypes {
    /// The profile of head `(l, h)`.
    pub fn get(&self, l: usize, h: usize) -> Option<&HeadProfile> {
        self.heads.get(l)?.get(h)
    }
}

/// The scores of one `s × s` map: (previous, first, last, entropy).
fn map_scores(map: &[f32], s: usize) -> (f64, f64, f64, f64) {
    let (mut previous, mut first, mut last, mut entropy) = (0f64, 0f64, 0f64, 0f64);
    for (r, row) in map.chunks(s).enumerate() {
        if r >= 1 {
            previous += row[r - 1] as f64;
            first += row[0] as f64;
        }
        if r + 1 < s {
            last += row[s - 1] as f64;
        }
        let h: f64 = row
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| -(p as f64) * (p as f64).ln())
            .sum();
        entropy += if s > 1 { h / (s as f64).ln() } else { 0.0 };
    }
    let others = (s.max(2) - 1) as f64;
    (
        previous / others,
        first / others,
        last / others,
        entropy / s as f64,
    )
}

/// Classifies every head from the maps of `entries` (the first [`SAMPLE`]
/// of them, evenly spaced) in `maps`.
pub(super) fn classify(
    maps: &MapFile,
    entries: &[Entry],
    layers: usize,
    heads: usize,
) -> Result<HeadTypes, DbError> {
    let step = entries.len().div_ceil(SAMPLE).max(1);
    let sample: Vec<&Entry> = entries.iter().step_by(step).collect();
    // Same-length pairs: each entry with the previous sampled one of its length.
    let mut pairs: Vec<(&Entry, &Entry)> = Vec::new();
    let mut last_of_length: std::collections::HashMap<usize, &Entry> = Default::default();
    for &e in &sample {
        if let Some(prev) = last_of_length.insert(e.tokens, e)
            && pairs.len() < PAIRS
        {
            pairs.push((prev, e));
        }
    }
    let mut out = vec![Vec::with_capacity(heads); layers];
    for (l, row) in out.iter_mut().enumerate() {
        for h in 0..heads {
            let (mut previous, mut first, mut last, mut entropy) = (0f64, 0f64, 0f64, 0f64);
            for e in &sample {
                let (p, f, la, en) = map_scores(&maps.values(e, l, h)?, e.tokens);
                previous += p;
                first += f;
                last += la;
                entropy += en;
            }
            let mut positional = None;
            if !pairs.is_empty() {
                let mut total = 0f64;
                for (a, b) in &pairs {
                    total +=
                        similarity(&maps.values(a, l, h)?, &maps.values(b, l, h)?, a.tokens) as f64;
                }
                positional = Some((total / pairs.len() as f64) as f32);
            }
            let n = sample.len().max(1) as f64;
            let mut profile = HeadProfile {
                kind: HeadType::Content,
                positional,
                previous_token: (previous / n) as f32,
                first_sink: (first / n) as f32,
                last_sink: (last / n) as f32,
                entropy: (entropy / n) as f32,
            };
            profile.classify();
            row.push(profile);
        }
    }
    Ok(HeadTypes {
        entries: sample.len(),
        heads: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row-stochastic `s × s` map whose row r puts `w` on column `col(r)`
    /// and spreads the rest uniformly.
    fn planted(s: usize, w: f32, col: impl Fn(usize) -> usize) -> Vec<f32> {
        let rest = (1.0 - w) / s as f32;
        let mut m = vec![rest; s * s];
        for r in 0..s {
            m[r * s + col(r)] += w;
        }
        m
    }

    fn profile_of(maps: &[Vec<f32>], s: usize) -> HeadProfile {
        let mut sums = (0f64, 0f64, 0f64, 0f64);
        for m in maps {
            let (p, f, l, e) = map_scores(m, s);
            sums = (sums.0 + p, sums.1 + f, sums.2 + l, sums.3 + e);
        }
        let n = maps.len() as f64;
        let mut profile = HeadProfile {
            kind: HeadType::Content,
            positional: Some(similarity(&maps[0], &maps[1], s)),
            previous_token: (sums.0 / n) as f32,
            first_sink: (sums.1 / n) as f32,
            last_sink: (sums.2 / n) as f32,
            entropy: (sums.3 / n) as f32,
        };
        profile.classify();
        profile
    }

    #[test]
    fn planted_heads_are_found() {
        let s = 9;
        // Two inputs of one length with different content-dependent noise.
        let noisy = |m: Vec<f32>, seed: usize| -> Vec<f32> {
            let mut m = m;
            for r in 0..s {
                let row = &mut m[r * s..(r + 1) * s];
                let k = (r * 5 + seed * 3) % s;
                let moved = row[k] * 0.9;
                row[k] -= moved;
                row[(k + 1 + seed) % s] += moved;
            }
            m
        };
        let previous = |seed| noisy(planted(s, 0.8, |r| r.saturating_sub(1)), seed);
        let first = |seed| noisy(planted(s, 0.8, |_| 0), seed);
        let last = |seed| noisy(planted(s, 0.8, |_| s - 1), seed);
        let uniform = |_| planted(s, 0.0, |_| 0);
        let content = |seed: usize| planted(s, 0.9, |r| (r * 7 + seed * 4) % s);
        let kind = |f: &dyn Fn(usize) -> Vec<f32>| profile_of(&[f(1), f(2)], s).kind;
        assert_eq!(kind(&previous), HeadType::PreviousToken);
        assert_eq!(kind(&first), HeadType::FirstSink);
        assert_eq!(kind(&last), HeadType::LastSink);
        // The same map for any input of a length: positional, whatever its shape.
        assert_eq!(kind(&uniform), HeadType::Positional);
        let same = |_| planted(s, 0.8, |r| r.saturating_sub(1));
        assert_eq!(kind(&same), HeadType::Positional);
        assert_eq!(kind(&content), HeadType::Content);
        let p = profile_of(&[uniform(0), uniform(0)], s);
        assert!((p.entropy - 1.0).abs() < 1e-5, "{p:?}");
    }
}
