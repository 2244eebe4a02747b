//! How much of what the cache cannot see is recomputed: the knob a user tunes.
//!
//! A stored module attended only to itself; in a prompt it would also attend
//! to everything before it.
//! - `none`: naive reuse.
//! - `first:K`: recompute the first K tokens of every module after the first
//!   (EPIC: a separately encoded module carries a spurious attention sink at
//!   its start).
//! - `select:R`: CacheBlend: layer 0 for every token, then at layer 1 the R %
//!   of cached tokens whose keys and values deviate most from the stored ones
//!   are recomputed in every later layer; the rest keep the stored ones.

use std::fmt;

use anyhow::bail;
use serde::{Serialize, Serializer};

/// A recovery policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Recovery {
    /// Naive reuse.
    None,
    /// Recompute the first K tokens of every module after the first.
    First(usize),
    /// Recompute the R % of cached tokens that deviate most (0–100).
    Select(f64),
}

impl Recovery {
    /// `none`, `first:K` or `select:R`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let bad = || {
            anyhow::anyhow!(
                "unknown --recovery {s:?}: use none, first:K (K tokens, e.g. first:8) or select:R (R % of cached tokens, 0–100, e.g. select:15)"
            )
        };
        if s == "none" {
            return Ok(Self::None);
        }
        let (kind, value) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "first" => Ok(Self::First(value.parse().map_err(|_| bad())?)),
            "select" => {
                let r: f64 = value.parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&r) {
                    bail!("--recovery select:{value}: R is a percentage from 0 to 100");
                }
                Ok(Self::Select(r))
            }
            _ => Err(bad()),
        }
    }

    /// The same kind with setting `value` (K or R).
    pub fn with_value(self, value: f64) -> Self {
        match self {
            Self::None => Self::None,
            Self::First(_) => Self::First(value.max(0.0).round() as usize),
            Self::Select(_) => Self::Select(value.clamp(0.0, 100.0)),
        }
    }

    /// Its setting: K, R, or 0 for `none`.
    pub fn value(self) -> f64 {
        match self {
            Self::None => 0.0,
            Self::First(k) => k as f64,
            Self::Select(r) => r,
        }
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => write!(f, "none"),
            Self::First(k) => write!(f, "first:{k}"),
            Self::Select(r) => write!(f, "select:{r}"),
        }
    }
}

impl Serialize for Recovery {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_kind() {
        for s in ["none", "first:8", "select:15", "select:2.5"] {
            assert_eq!(Recovery::parse(s).unwrap().to_string(), s);
        }
        for bad in ["", "first", "first:x", "select:101", "all:3"] {
            let err = Recovery::parse(bad).unwrap_err().to_string();
            assert!(err.contains("--recovery"), "{bad}: {err}");
        }
    }
}
