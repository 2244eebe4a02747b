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
//! - `probe:R` (ProphetKV, A³): a probe pass runs the question's rows over the
//!   loaded cache and reads their attention to every cached token (summed
//!   over heads, question rows and layers); the R % of cached tokens it
//!   attends to most are recomputed through every layer, then the question
//!   again. `probe:R@L` probes only the first L layers.
//! - `probe-modules:M`: the same signal summed per module; the M modules the
//!   question attends to most are recomputed whole.
//!
//! Rows that are already exact (the stored preamble, the module that follows
//! it at its encoded positions) are chosen last by every kind.

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
    /// Recompute the R % of cached tokens the question attends to most
    /// (0–100), probing the first `layers` layers (0: every layer).
    Probe {
        /// R, a percentage of cached tokens.
        percent: f64,
        /// Layers probed (0: all).
        layers: usize,
    },
    /// Recompute the M modules the question attends to most.
    ProbeModules(usize),
}

impl Recovery {
    /// Every kind's name, in the order the dashboard cycles them.
    pub const KINDS: [&'static str; 5] = ["none", "first", "select", "probe", "probe-modules"];

    /// `none`, `first:K`, `select:R`, `probe:R`, `probe:R@L` or
    /// `probe-modules:M`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let bad = || {
            anyhow::anyhow!(
                "unknown --recovery {s:?}: use none, first:K (K tokens, e.g. first:8), select:R (R % of cached tokens, 0–100, e.g. select:15), probe:R (R % the question attends to most; probe:R@L probes L layers) or probe-modules:M (M whole modules)"
            )
        };
        let percent = |value: &str, kind: &str| -> anyhow::Result<f64> {
            let r: f64 = value.parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&r) {
                bail!("--recovery {kind}:{value}: R is a percentage from 0 to 100");
            }
            Ok(r)
        };
        if s == "none" {
            return Ok(Self::None);
        }
        let (kind, value) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "first" => Ok(Self::First(value.parse().map_err(|_| bad())?)),
            "select" => Ok(Self::Select(percent(value, kind)?)),
            "probe" => {
                let (r, layers) = match value.split_once('@') {
                    Some((r, l)) => (
                        r,
                        l.parse::<usize>().ok().filter(|&l| l > 0).ok_or_else(bad)?,
                    ),
                    None => (value, 0),
                };
                Ok(Self::Probe {
                    percent: percent(r, kind)?,
                    layers,
                })
            }
            "probe-modules" => Ok(Self::ProbeModules(value.parse().map_err(|_| bad())?)),
            _ => Err(bad()),
        }
    }

    /// The same kind with setting `value` (K or R).
    pub fn with_value(self, value: f64) -> Self {
        match self {
            Self::None => Self::None,
            Self::First(_) => Self::First(value.max(0.0).round() as usize),
            Self::Select(_) => Self::Select(value.clamp(0.0, 100.0)),
            Self::Probe { layers, .. } => Self::Probe {
                percent: value.clamp(0.0, 100.0),
                layers,
            },
            Self::ProbeModules(_) => Self::ProbeModules(value.max(0.0).round() as usize),
        }
    }

    /// Its kind's name (`none`, `first`, …).
    pub fn kind(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::First(_) => "first",
            Self::Select(_) => "select",
            Self::Probe { .. } => "probe",
            Self::ProbeModules(_) => "probe-modules",
        }
    }

    /// The settings of its kind that calibration, the frontier and the
    /// dashboard's `+`/`-` step through, cheapest first.
    pub fn settings(self) -> Vec<Self> {
        const PERCENTS: [f64; 10] = [0.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0];
        match self {
            Self::None => vec![Self::None],
            Self::First(_) => [0, 1, 2, 4, 8, 16, 32, 64]
                .into_iter()
                .map(Self::First)
                .collect(),
            Self::Select(_) | Self::Probe { .. } => {
                PERCENTS.into_iter().map(|r| self.with_value(r)).collect()
            }
            Self::ProbeModules(_) => (0..=8).map(Self::ProbeModules).collect(),
        }
    }

    /// Whether it reads the question's attention before recomputing.
    pub fn probes(self) -> bool {
        matches!(self, Self::Probe { .. } | Self::ProbeModules(_))
    }

    /// Its setting: K, R, or 0 for `none`.
    pub fn value(self) -> f64 {
        match self {
            Self::None => 0.0,
            Self::First(k) => k as f64,
            Self::Select(r) | Self::Probe { percent: r, .. } => r,
            Self::ProbeModules(m) => m as f64,
        }
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => write!(f, "none"),
            Self::First(k) => write!(f, "first:{k}"),
            Self::Select(r) => write!(f, "select:{r}"),
            Self::Probe { percent, layers: 0 } => write!(f, "probe:{percent}"),
            Self::Probe { percent, layers } => write!(f, "probe:{percent}@{layers}"),
            Self::ProbeModules(m) => write!(f, "probe-modules:{m}"),
        }
    }
}

/// APE's attention rescaling (arXiv 2502.05431): the question's attention
/// to cached module tokens gets a temperature T and a scale S (their softmax
/// weights `exp(s / T)` times S); T = S = 1 is exact softmax.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rescale {
    /// Temperature T, in (0, 4].
    pub temperature: f64,
    /// Scale S, in (0, 4].
    pub scale: f64,
}

impl Rescale {
    /// `T,S`, each in (0, 4].
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let bad = || {
            anyhow::anyhow!(
                "--rescale {s:?}: give T,S (temperature and scale, each in (0, 4], e.g. 0.9,0.9; 1,1 is exact softmax)"
            )
        };
        let (t, sc) = s.split_once(',').ok_or_else(bad)?;
        let value = |v: &str| -> anyhow::Result<f64> {
            let x: f64 = v.trim().parse().map_err(|_| bad())?;
            if !(x > 0.0 && x <= 4.0) {
                return Err(bad());
            }
            Ok(x)
        };
        Ok(Self {
            temperature: value(t)?,
            scale: value(sc)?,
        })
    }

    /// Whether it changes nothing (T = S = 1).
    pub fn is_identity(self) -> bool {
        self.temperature == 1.0 && self.scale == 1.0
    }
}

impl fmt::Display for Rescale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.temperature, self.scale)
    }
}

/// A complete modular setting: the recovery and, optionally, the rescaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    /// What is recomputed.
    pub recovery: Recovery,
    /// APE's rescaling of the question's attention, if any.
    pub rescale: Option<Rescale>,
}

impl Setting {
    /// `RECOVERY` or `RECOVERY+rescale:T,S` (as [`fmt::Display`] writes it).
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let (recovery, rescale) = match s.split_once("+rescale:") {
            Some((r, t)) => (r, Some(Rescale::parse(t)?)),
            None => (s, None),
        };
        Ok(Self {
            recovery: Recovery::parse(recovery)?,
            rescale,
        })
    }
}

impl From<Recovery> for Setting {
    fn from(recovery: Recovery) -> Self {
        Self {
            recovery,
            rescale: None,
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rescale {
            Some(r) => write!(f, "{}+rescale:{r}", self.recovery),
            None => write!(f, "{}", self.recovery),
        }
    }
}

impl Serialize for Setting {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
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
    fn rescaling_parses_in_range_and_settings_round_trip() {
        assert!(Rescale::parse("1,1").unwrap().is_identity());
        for bad in ["0,1", "1", "4.5,1", "1,-1", "a,b", "1,0"] {
            let err = Rescale::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("--rescale") && err.contains("(0, 4]"),
                "{bad}: {err}"
            );
        }
        for s in ["none", "probe:5+rescale:0.9,0.9", "select:15"] {
            assert_eq!(Setting::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn parses_and_prints_every_kind() {
        for s in [
            "none",
            "first:8",
            "select:15",
            "select:2.5",
            "probe:5",
            "probe:7.5@4",
            "probe-modules:2",
        ] {
            assert_eq!(Recovery::parse(s).unwrap().to_string(), s);
        }
        for bad in [
            "",
            "first",
            "first:x",
            "select:101",
            "all:3",
            "probe:101",
            "probe:5@0",
            "probe:5@x",
            "probe-modules:-1",
        ] {
            let err = Recovery::parse(bad).unwrap_err().to_string();
            assert!(err.contains("--recovery"), "{bad}: {err}");
        }
    }
}
