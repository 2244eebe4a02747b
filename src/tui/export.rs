//! `e`: writes the current view to the export directory on a background
//! thread: its data as JSON, and as plots (PNG + SVG) the selected head's
//! exact / reused / difference maps, the current query's layer × head
//! similarity and decisions, the latency of recent queries, and the sweep of
//! this session's threshold checks.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, channel};

use anyhow::Context;
use serde_json::json;

use super::app::{App, HistoryItem};
use crate::cache::write_atomically;
use crate::engine::{Mode, STAGES};
use crate::plot::{
    LatencyFigure, MapRow, MapsFigure, MatrixFigure, MatrixPanel, SweepFigure, SweepPoint, save,
};

/// Starts writing the current view; the receiver yields the files written.
pub fn export(app: &App) -> anyhow::Result<Written> {
    let current = app
        .current
        .as_ref()
        .context("nothing to export yet: run a query first")?;
    let (layer, head) = app.selected;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let stem = format!("view-{stamp}-L{layer}H{head}");
    let dir = app.export_dir.clone();
    let view = view_json(app);
    let maps = app.head_maps.as_ref().map(|m| MapsFigure {
        title: format!("“{}”", current.query),
        rows: vec![MapRow {
            label: format!("L{} H{}", m.layer, m.head),
            tokens: m.tokens.clone(),
            exact: m.exact.clone(),
            cached: m.cached.clone(),
        }],
    });
    let heads = heads_figure(app);
    let latency = latency_figure(app);
    let sweep = sweep_figure(app);
    write_in_background(dir, stem, view, move |dir, stem| {
        let mut files = plots(dir, stem, maps, heads, latency)?;
        if let Some(sweep) = sweep {
            files.extend(save(&sweep, dir, &format!("{stem}-sweep"), true)?);
        }
        Ok(files)
    })
}

/// Files an export wrote, once it is done.
pub type Written = Receiver<anyhow::Result<Vec<PathBuf>>>;

/// Writes `view` as `DIR/STEM.json`, then what `plots(DIR, STEM)` writes,
/// on a thread of its own (every view's `e`); the receiver yields the files.
pub fn write_in_background(
    dir: PathBuf,
    stem: String,
    view: serde_json::Value,
    plots: impl FnOnce(&Path, &str) -> anyhow::Result<Vec<PathBuf>> + Send + 'static,
) -> anyhow::Result<Written> {
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("attncache-export".into())
        .spawn(move || {
            let written = (|| {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let json_path = dir.join(format!("{stem}.json"));
                write_atomically(&json_path, serde_json::to_string_pretty(&view)?.as_bytes())?;
                let mut files = vec![json_path];
                files.extend(plots(&dir, &stem)?);
                Ok(files)
            })();
            let _ = tx.send(written);
        })?;
    Ok(rx)
}

fn plots(
    dir: &Path,
    stem: &str,
    maps: Option<MapsFigure>,
    heads: MatrixFigure,
    latency: LatencyFigure,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if let Some(maps) = maps {
        files.extend(save(&maps, dir, &format!("{stem}-maps"), true)?);
    }
    files.extend(save(&heads, dir, &format!("{stem}-heads"), true)?);
    files.extend(save(&latency, dir, &format!("{stem}-latency"), true)?);
    Ok(files)
}

/// This session's threshold checks along the scale, the latest marked.
fn sweep_figure(app: &App) -> Option<SweepFigure> {
    let latest = app.checks.last()?.clone();
    let mut ours: Vec<SweepPoint> = app.checks.clone();
    ours.sort_by(|a, b| a.knob.total_cmp(&b.knob));
    ours.dedup_by(|a, b| a.knob == b.knob);
    Some(SweepFigure {
        title: format!(
            "Threshold checks on {} calibration queries · {}",
            app.check_queries, app.base_policy.name
        ),
        knob_desc: format!("threshold scale (× {})", app.base_policy.name),
        ours,
        paper: Vec::new(),
        oracle: Vec::new(),
        chosen: Some(latest),
    })
}

/// The view's data.
fn view_json(app: &App) -> serde_json::Value {
    let maps = app.head_maps.as_ref().map(|m| {
        let difference = m.cached.as_ref().map(|c| {
            m.exact
                .iter()
                .zip(c)
                .map(|(a, b)| (a - b).abs())
                .collect::<Vec<f32>>()
        });
        json!({
            "layer": m.layer,
            "head": m.head,
            "tokens": m.tokens,
            "exact": m.exact,
            "cached": m.cached,
            "difference": difference,
        })
    });
    let history: Vec<_> = app
        .history
        .iter()
        .rev()
        .map(|item| {
            json!({
                "text": item.text,
                "mode": item.mode,
                "hit_rate": item.hit_rate,
                "timings_ms": item.timings,
                "exact_timings_ms": item.exact_timings,
                "fidelity": item.fidelity,
            })
        })
        .collect();
    json!({
        "model": app.model.name,
        "policy": app.policy,
        "trace": app.current.as_ref().map(|c| &c.trace),
        "selected_head": maps,
        "history": history,
        "checks": app.checks,
    })
}

/// The current query's per-head similarity and hits.
fn heads_figure(app: &App) -> MatrixFigure {
    let shape = app.shape();
    let trace = app.current.as_ref().map(|c| &c.trace);
    let shadow = trace.is_some_and(|t| t.mode == Mode::Shadow);
    let names = |p: &str, n: usize| (0..n).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    let grid = |f: &dyn Fn(&crate::engine::HeadTrace) -> Option<f64>| -> Vec<Vec<Option<f64>>> {
        trace.map_or_else(Vec::new, |t| {
            t.layers
                .iter()
                .map(|l| l.heads.iter().map(f).collect())
                .collect()
        })
    };
    let panel = |title: &str, legend: &str, values| MatrixPanel {
        title: title.into(),
        x_desc: "head".into(),
        y_desc: "layer".into(),
        x_names: names("H", shape.heads),
        y_names: names("L", shape.layers),
        values,
        range: (0.0, 1.0),
        legend: legend.into(),
        annotate: shape.heads <= 16,
    };
    let similarity = if shadow {
        grid(&|h| h.similarity.map(f64::from))
    } else {
        grid(&|h| h.predicted.map(f64::from))
    };
    MatrixFigure {
        title: format!(
            "“{}” · {} mode · policy {}",
            trace.map_or("", |t| t.text.as_str()),
            trace.map_or("", |t| super::app::mode_name(t.mode)),
            app.policy.name
        ),
        panels: vec![
            panel(
                if shadow {
                    "True similarity of the neighbour's map"
                } else {
                    "Predicted similarity of the neighbour's map"
                },
                "similarity",
                similarity,
            ),
            panel(
                "Reused (1) or computed (0)",
                "hit",
                grid(&|h| Some(f64::from(u8::from(h.hit)))),
            ),
        ],
    }
}

/// Recent queries' latency.
fn latency_figure(app: &App) -> LatencyFigure {
    let items: Vec<&HistoryItem> = app.history.iter().collect();
    let exact: Vec<_> = items.iter().filter_map(|i| i.exact_ms()).collect();
    let cached: Vec<_> = items.iter().filter_map(|i| i.cached_ms()).collect();
    let attention =
        |pick: fn(&HistoryItem) -> Option<f64>| items.iter().filter_map(|i| pick(i)).collect();
    let mean = |v: Vec<f64>| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let exact_runs: Vec<_> = items
        .iter()
        .filter_map(|i| match i.mode {
            Mode::Exact => Some(i.timings),
            _ => i.exact_timings,
        })
        .collect();
    let cached_runs: Vec<_> = items
        .iter()
        .filter(|i| i.mode != Mode::Exact)
        .map(|i| i.timings)
        .collect();
    LatencyFigure {
        title: format!(
            "Latency of the last {} queries · policy {}",
            items.len(),
            app.policy.name
        ),
        exact_e2e: exact,
        cached_e2e: cached,
        exact_attention: attention(|i| match i.mode {
            Mode::Exact => Some(i.timings.attention),
            _ => i.exact_timings.map(|t| t.attention),
        }),
        cached_attention: attention(|i| {
            (i.mode != Mode::Exact).then(|| i.timings.attention_with_lookup())
        }),
        stages: STAGES
            .iter()
            .map(|(name, f)| {
                (
                    name.to_string(),
                    mean(exact_runs.iter().map(f).collect()),
                    mean(cached_runs.iter().map(f).collect()),
                )
            })
            .collect(),
    }
}
