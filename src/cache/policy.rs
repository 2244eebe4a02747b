//! Hit/miss decisions: thresholds on the look-up distance per layer × head.
//!
//! Head `h` of layer `l` reuses the neighbour's map when the feature distance
//! found at that layer's look-up is at most `max_distance[l][h]`. A policy
//! also says how the look-up runs (one per layer, or one per input as in the
//! paper), which entry lengths qualify, and how to predict a reused map's
//! similarity from the distance (fitted by calibration).

use std::path::Path;

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};

use super::feature;
use crate::model::ModelShape;

/// Which database entries may serve a query of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LengthPolicy {
    /// Entries of exactly the query's length.
    Exact,
    /// Entries at least as long, cropped with `[CLS]`/`[SEP]` aligned and rows
    /// renormalised.
    Crop,
}

impl LengthPolicy {
    /// Parses `exact` or `crop`.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        match name {
            "exact" => Ok(LengthPolicy::Exact),
            "crop" => Ok(LengthPolicy::Crop),
            other => bail!("unknown length policy `{other}`: use exact or crop"),
        }
    }
}

/// How often the database is searched per input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lookup {
    /// A search per layer, from that layer's own input (ours).
    PerLayer,
    /// One search from the layer-0 input serves every layer (the paper's).
    Single,
}

/// How a policy was calibrated, kept with it for reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The corpus it was calibrated on.
    pub split: String,
    /// The objective (`fidelity` or `accuracy`).
    pub objective: String,
    /// The error budget.
    pub budget: f64,
    /// Measured error on the calibration split at these thresholds.
    pub measured_error: f64,
    /// Share of query × layer × head slots reused on the calibration split.
    pub expected_hit_rate: f64,
    /// Layers whose look-up was dropped because the attention time their
    /// hits save was measured to be less than the look-up costs.
    #[serde(default)]
    pub unprofitable_layers: Vec<usize>,
    /// Layers whose static heads were dropped because, timed, the layer's
    /// attention was not faster with them than exact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unprofitable_static_layers: Vec<usize>,
    /// The rules calibration found within the budget and compared by net
    /// saving, the kept one marked (empty: one rule was calibrated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<CandidateRule>,
}

/// A family of decision rules calibration can choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleFamily {
    /// A distance threshold per head, fitted to a map-error tolerance; layers
    /// whose hits save less than their search dropped.
    PerHead,
    /// Every head of a layer within one distance threshold, the neighbour
    /// carried from layer to layer: reuse as close to wholesale as the budget
    /// allows.
    Wholesale,
}

impl RuleFamily {
    /// The family's name, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            RuleFamily::PerHead => "per-head",
            RuleFamily::Wholesale => "wholesale",
        }
    }
}

impl Calibration {
    /// The candidate rule the policy holds, when calibration compared rules.
    pub fn kept_rule(&self) -> Option<&CandidateRule> {
        self.candidates.iter().find(|c| c.kept)
    }

    /// One line naming the kept rule and what each compared rule saves, or
    /// `None` when one rule was calibrated.
    pub fn rule_summary(&self) -> Option<String> {
        let kept = self.kept_rule()?;
        let others: String = (self.candidates.iter().filter(|c| !c.kept))
            .map(|c| format!("; {} {:.2} ms", c.rule.name(), c.net_saving_ms))
            .collect();
        Some(format!(
            "{} rule kept: saves {:.2} ms a query net of its look-up{others}",
            kept.rule.name(),
            kept.net_saving_ms
        ))
    }
}

/// One rule calibration measured within the budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateRule {
    /// Which family.
    pub rule: RuleFamily,
    /// Measured error on the calibration split.
    pub measured_error: f64,
    /// Share of query × layer × head slots reused on the calibration split.
    pub expected_hit_rate: f64,
    /// Attention time its hits save less its look-up's time, per calibration
    /// query (ms; the savings estimated from exact layer times).
    pub net_saving_ms: f64,
    /// Whether this is the rule the policy holds.
    pub kept: bool,
}

/// A complete decision policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Name for displays (`strict`, `global:0.05`, `paper:0.05`, `calibrated`…).
    pub name: String,
    /// One look-up per layer or per input.
    pub lookup: Lookup,
    /// Which entry lengths qualify.
    pub lengths: LengthPolicy,
    /// Reuse every map or none (the paper's rule): all heads of all layers
    /// hit when the single look-up's distance is within layer 0 head 0's
    /// threshold.
    pub all_or_nothing: bool,
    /// Largest feature distance that still counts as a hit, `[L][H]`.
    pub max_distance: Vec<Vec<f32>>,
    /// Predicted similarity `clamp(a − b·distance, 0, 1)` per head, `[L][H]`
    /// of `[a, b]`.
    pub predictor: Vec<Vec<[f32; 2]>>,
    /// Heads served from the database's per-length table with no look-up,
    /// `[L][H]` (empty: none): heads whose map depends on the length only
    /// reuse the map of the first entry of the query's length (see
    /// [`Policy::is_static`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_heads: Vec<Vec<bool>>,
    /// Per-layer look-up: once a searched layer reuses no head, deeper
    /// layers are not searched (their heads are computed exactly).
    /// Calibration turns it on where the searches it saves outweigh the
    /// hits it loses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_after_miss: bool,
    /// Per-layer look-up: a layer first measures the previous layer's
    /// neighbour at its own feature and keeps it, with no search, when it
    /// lies within the threshold of every head the layer may reuse (see
    /// [`Policy::carries`]). Calibration turns it on where the searches it
    /// saves outweigh what it changes, within the budget.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub carry_neighbour: bool,
    /// How the thresholds were chosen, when calibrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// Distance under which two features count as the same input.
pub const IDENTICAL: f32 = 1e-5;

impl Policy {
    /// One threshold for every head, per-layer look-up, exact lengths.
    pub fn global(shape: &ModelShape, max_distance: f32) -> Self {
        Self {
            name: format!("global:{max_distance}"),
            lookup: Lookup::PerLayer,
            lengths: LengthPolicy::Exact,
            all_or_nothing: false,
            max_distance: vec![vec![max_distance; shape.heads]; shape.layers],
            predictor: vec![vec![[1.0, 1.0]; shape.heads]; shape.layers],
            static_heads: Vec::new(),
            stop_after_miss: false,
            carry_neighbour: false,
            calibration: None,
        }
    }

    /// Reuse only for inputs identical to an entry.
    pub fn strict(shape: &ModelShape) -> Self {
        Self {
            name: "strict".into(),
            ..Self::global(shape, IDENTICAL)
        }
    }

    /// The paper's rule: one look-up from the layer-0 input, every map or
    /// none, one global threshold.
    pub fn paper(shape: &ModelShape, max_distance: f32) -> Self {
        Self {
            name: format!("paper:{max_distance}"),
            lookup: Lookup::Single,
            all_or_nothing: true,
            ..Self::global(shape, max_distance)
        }
    }

    /// Parses a `--policy` value: `strict`, `global:D`, `global:D+carry`
    /// (with [`Policy::carry_neighbour`]), `paper:D` (D = the largest
    /// feature distance that hits) or a policy JSON file.
    pub fn parse(spec: &str, shape: &ModelShape) -> anyhow::Result<Self> {
        let distance = |v: &str| -> anyhow::Result<f32> {
            let d: f32 = v
                .parse()
                .with_context(|| format!("`{v}` in --policy {spec} is not a number"))?;
            ensure!(
                feature::DISTANCE_RANGE.contains(&d),
                "--policy {spec}: the distance must be in [0, 2]"
            );
            Ok(d)
        };
        if spec == "strict" {
            return Ok(Self::strict(shape));
        }
        if let Some(v) = spec.strip_prefix("global:") {
            return Ok(match v.strip_suffix("+carry") {
                Some(v) => Self {
                    name: spec.to_string(),
                    carry_neighbour: true,
                    ..Self::global(shape, distance(v)?)
                },
                None => Self::global(shape, distance(v)?),
            });
        }
        if let Some(v) = spec.strip_prefix("paper:") {
            return Ok(Self::paper(shape, distance(v)?));
        }
        let path = Path::new(spec);
        ensure!(
            path.is_file(),
            "--policy {spec} is neither strict, global:D, global:D+carry, paper:D nor a policy file"
        );
        let policy = Self::load(path)?;
        policy
            .check_shape(shape)
            .with_context(|| format!("policy {spec} does not fit the model"))?;
        Ok(policy)
    }

    /// Reads a policy JSON file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read policy {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("policy {} is malformed", path.display()))
    }

    /// Writes the policy as JSON (temp file, then rename).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        crate::cache::write_atomically(path, serde_json::to_string_pretty(self)?.as_bytes())
    }

    /// Fails unless the thresholds cover exactly the model's layers and heads.
    pub fn check_shape(&self, shape: &ModelShape) -> anyhow::Result<()> {
        let fits =
            |rows: &[usize]| rows.len() == shape.layers && rows.iter().all(|&c| c == shape.heads);
        let distance_rows: Vec<usize> = self.max_distance.iter().map(Vec::len).collect();
        let predictor_rows: Vec<usize> = self.predictor.iter().map(Vec::len).collect();
        ensure!(
            fits(&distance_rows) && fits(&predictor_rows),
            "it has thresholds for {} layers, the model has {} layers × {} heads",
            self.max_distance.len(),
            shape.layers,
            shape.heads
        );
        ensure!(
            self.max_distance.iter().flatten().all(|d| d.is_finite()),
            "it has a threshold that is not a number"
        );
        let static_rows: Vec<usize> = self.static_heads.iter().map(Vec::len).collect();
        ensure!(
            static_rows.is_empty() || fits(&static_rows),
            "its static heads cover {} layers, the model has {} layers × {} heads",
            self.static_heads.len(),
            shape.layers,
            shape.heads
        );
        Ok(())
    }

    /// Whether head `head` of `layer` reuses a neighbour found at `distance`.
    pub fn hits(&self, layer: usize, head: usize, distance: f32) -> bool {
        if self.all_or_nothing {
            distance <= self.max_distance[0][0]
        } else {
            distance <= self.max_distance[layer][head]
        }
    }

    /// Whether any head of `layer` may reuse a map the look-up finds in a
    /// non-identical entry (when none can, the look-up for that layer can be
    /// skipped; static heads need no look-up).
    pub fn may_hit(&self, layer: usize) -> bool {
        if self.all_or_nothing {
            self.max_distance[0][0] > IDENTICAL
        } else {
            self.max_distance[layer]
                .iter()
                .enumerate()
                .any(|(h, &d)| d > IDENTICAL && !self.is_static(layer, h))
        }
    }

    /// Whether a neighbour at feature `distance` serves every head of `layer`
    /// that may reuse a looked-up map (and there is one): a search could
    /// find a nearer entry, but no further hit, so a carried neighbour this
    /// close is kept without one.
    pub fn carries(&self, layer: usize, distance: f32) -> bool {
        let mut searched = (0..self.max_distance[layer].len())
            .filter(|&h| !self.is_static(layer, h) && self.max_distance[layer][h] > IDENTICAL)
            .peekable();
        searched.peek().is_some() && searched.all(|h| self.hits(layer, h, distance))
    }

    /// Whether head `(layer, head)` is served from the per-length table.
    pub fn is_static(&self, layer: usize, head: usize) -> bool {
        !self.all_or_nothing
            && self
                .static_heads
                .get(layer)
                .and_then(|row| row.get(head))
                .copied()
                .unwrap_or(false)
    }

    /// Whether any head of `layer` is served from the per-length table.
    pub fn has_static(&self, layer: usize) -> bool {
        !self.all_or_nothing
            && self
                .static_heads
                .get(layer)
                .is_some_and(|r| r.contains(&true))
    }

    /// The predicted similarity of the neighbour's map at `distance`.
    pub fn predicted(&self, layer: usize, head: usize, distance: f32) -> f32 {
        let [a, b] = self.predictor[layer][head];
        (a - b * distance).clamp(0.0, 1.0)
    }

    /// Multiplies every threshold by `factor` (> 1 loosens, < 1 tightens).
    pub fn scale(&mut self, factor: f32) {
        self.max_distance
            .iter_mut()
            .flatten()
            .for_each(|d| *d = (*d * factor).min(*feature::DISTANCE_RANGE.end()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_neighbour_is_carried_only_when_it_serves_every_head_that_may_reuse() {
        let shape = shape();
        let mut policy = Policy::global(&shape, 0.2);
        policy.max_distance[1] = vec![0.1, 0.3, IDENTICAL];
        assert!(policy.carries(0, 0.2) && !policy.carries(0, 0.21));
        // Head 2 reuses only identical inputs: it does not hold the carry back.
        assert!(policy.carries(1, 0.1) && !policy.carries(1, 0.2));
        // Static heads need no look-up either.
        policy.static_heads = vec![vec![false; 3], vec![true, false, false]];
        assert!(policy.carries(1, 0.2));
        // A layer no head of which may reuse carries nothing.
        policy.max_distance[1] = vec![IDENTICAL; 3];
        assert!(!policy.carries(1, 0.0));
    }

    #[test]
    fn global_with_carry_parses_and_other_suffixes_do_not() {
        let shape = shape();
        let carried = Policy::parse("global:0.3+carry", &shape).unwrap();
        assert!(carried.carry_neighbour && carried.max_distance[1][2] == 0.3);
        assert_eq!(carried.name, "global:0.3+carry");
        assert!(!Policy::parse("global:0.3", &shape).unwrap().carry_neighbour);
        assert!(Policy::parse("global:0.3+stop", &shape).is_err());
        assert!(Policy::parse("paper:0.3+carry", &shape).is_err());
        let json = serde_json::to_string(&Policy::global(&shape, 0.3)).unwrap();
        assert!(!json.contains("carry_neighbour"), "{json}");
        let read: Policy = serde_json::from_str(&serde_json::to_string(&carried).unwrap()).unwrap();
        assert!(read.carry_neighbour);
    }

    #[test]
    fn stop_after_miss_is_written_only_when_on_and_read_as_off_when_absent() {
        let plain = Policy::global(&shape(), 0.5);
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("stop_after_miss"), "{json}");
        assert!(
            !serde_json::from_str::<Policy>(&json)
                .unwrap()
                .stop_after_miss
        );
        let stopping = Policy {
            stop_after_miss: true,
            ..plain
        };
        let json = serde_json::to_string(&stopping).unwrap();
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), stopping);
    }

    fn shape() -> ModelShape {
        ModelShape {
            layers: 2,
            heads: 3,
            head_dim: 4,
            hidden: 12,
            max_positions: 16,
        }
    }

    #[test]
    fn parses_presets_and_decides_per_head() {
        let s = shape();
        let strict = Policy::parse("strict", &s).unwrap();
        assert!(strict.hits(1, 2, 0.0) && !strict.hits(1, 2, 0.01));
        let mut p = Policy::parse("global:0.1", &s).unwrap();
        p.max_distance[1][2] = 0.3;
        assert!(p.hits(1, 2, 0.2) && !p.hits(1, 1, 0.2));
        let paper = Policy::parse("paper:0.1", &s).unwrap();
        assert_eq!(paper.lookup, Lookup::Single);
        assert!(paper.hits(1, 2, 0.05) && !paper.hits(0, 0, 0.2));
        assert!(Policy::parse("global:abc", &s).is_err());
        assert!(Policy::parse("global:3", &s).is_err());
        assert!(
            Policy::parse("nonsense", &s)
                .unwrap_err()
                .to_string()
                .contains("neither")
        );
    }

    #[test]
    fn round_trips_through_a_file_and_checks_its_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let mut p = Policy::global(&shape(), 0.2);
        p.scale(0.5);
        p.save(&path).unwrap();
        let back = Policy::parse(path.to_str().unwrap(), &shape()).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.max_distance[0][0], 0.1);
        let other = ModelShape {
            layers: 3,
            ..shape()
        };
        assert!(Policy::parse(path.to_str().unwrap(), &other).is_err());
    }

    #[test]
    fn static_heads_need_no_look_up_and_must_fit_the_model() {
        let s = shape();
        let mut p = Policy::strict(&s);
        assert!(!p.is_static(0, 0) && !p.has_static(0));
        p.static_heads = vec![vec![false; s.heads]; s.layers];
        p.static_heads[0][1] = true;
        assert!(p.is_static(0, 1) && p.has_static(0) && !p.has_static(1));
        // A loose threshold on a static head alone needs no look-up.
        p.max_distance[0][1] = 0.5;
        assert!(!p.may_hit(0));
        p.max_distance[0][0] = 0.5;
        assert!(p.may_hit(0));
        p.check_shape(&s).unwrap();
        p.static_heads.pop();
        let err = p.check_shape(&s).unwrap_err();
        assert!(err.to_string().contains("static heads"), "{err}");
        // The paper's all-or-nothing rule has none.
        let mut paper = Policy::paper(&s, 0.1);
        paper.static_heads = vec![vec![true; s.heads]; s.layers];
        assert!(!paper.is_static(0, 0));
    }

    #[test]
    fn calibration_names_the_kept_rule_and_reads_without_candidates() {
        let candidate = |rule, net_saving_ms, kept| CandidateRule {
            rule,
            measured_error: 0.0,
            expected_hit_rate: 0.5,
            net_saving_ms,
            kept,
        };
        let mut calibration = Calibration {
            split: "rt:calib".into(),
            objective: "accuracy".into(),
            budget: 3.0,
            measured_error: 1.0,
            expected_hit_rate: 0.9,
            unprofitable_layers: Vec::new(),
            unprofitable_static_layers: Vec::new(),
            candidates: vec![
                candidate(RuleFamily::PerHead, 1.5, false),
                candidate(RuleFamily::Wholesale, 20.25, true),
            ],
        };
        assert_eq!(
            calibration.rule_summary().unwrap(),
            "wholesale rule kept: saves 20.25 ms a query net of its look-up; per-head 1.50 ms"
        );
        let json = serde_json::to_string(&calibration).unwrap();
        assert!(json.contains(r#""rule":"wholesale""#), "{json}");
        // A policy file written before the candidates existed still reads.
        calibration.candidates.clear();
        assert_eq!(calibration.rule_summary(), None);
        let old = serde_json::to_string(&calibration).unwrap();
        assert!(!old.contains("candidates"), "{old}");
        assert_eq!(
            serde_json::from_str::<Calibration>(&old).unwrap(),
            calibration
        );
    }
}
