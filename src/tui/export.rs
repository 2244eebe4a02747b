//! `e`: writes the current view's data (the selected head's maps, the
//! current trace and the latency history) to the export directory.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use super::app::App;
use crate::cache::write_atomically;

/// Writes the current view as JSON and returns the file's path.
pub fn export(app: &App) -> anyhow::Result<PathBuf> {
    let current = app
        .current
        .as_ref()
        .context("nothing to export yet: run a query first")?;
    std::fs::create_dir_all(&app.export_dir)
        .with_context(|| format!("cannot create {}", app.export_dir.display()))?;
    let (layer, head) = app.selected;
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
    let latency: Vec<_> = app
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
    let view = json!({
        "model": app.model.name,
        "policy": app.policy,
        "trace": current.trace,
        "selected_head": maps,
        "history": latency,
    });
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let path = app
        .export_dir
        .join(format!("view-{stamp}-L{layer}H{head}.json"));
    write_atomically(&path, serde_json::to_string_pretty(&view)?.as_bytes())?;
    Ok(path)
}
