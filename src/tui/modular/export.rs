//! `e` in the modular view: writes the view to the export directory on a
//! background thread — its data as JSON (the settings, the current
//! comparison, every run of the session, the session's frontier) and the
//! session's speed–fidelity frontier as a plot (PNG + SVG).

use anyhow::Context;
use serde_json::json;

use super::state::{ModularApp, SessionPoint};
use crate::plot::{FrontierDot, FrontierFigure, save};
use crate::tui::export::{Written, write_in_background};

/// Starts writing the view; the receiver yields the files written.
pub fn export(app: &ModularApp) -> anyhow::Result<Written> {
    let current = app
        .current
        .clone()
        .context("nothing to export yet: run a prompt first")?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let stem = format!("modules-{stamp}");
    let dir = app.export_dir.clone();
    let points = app.session_frontier();
    let runs: Vec<_> = app
        .history
        .iter()
        .map(|h| {
            json!({
                "label": h.label,
                "positions": h.positions.name(),
                "recovery": h.recovery.to_string(),
                "ttft_ms": {"exact": h.ttft_ms[0], "prefix": h.ttft_ms[1], "modular": h.ttft_ms[2]},
                "speedup_vs_exact": h.ttft_ms[0] / h.ttft_ms[2],
                "speedup_vs_prefix": h.ttft_ms[1] / h.ttft_ms[2],
                "kl": h.kl,
                "top1_agree": h.top1_agree,
            })
        })
        .collect();
    let view = json!({
        "store": app.store_label,
        "positions": app.positions.name(),
        "recovery": app.recovery.to_string(),
        "chat": app.chat,
        "current": current,
        "runs": runs,
        "frontier": points,
    });
    let figure = frontier_figure(&app.store_label, &points);
    write_in_background(dir, stem, view, move |dir, stem| {
        save(&figure, dir, &format!("{stem}-frontier"), true)
    })
}

/// The session's settings as frontier dots: a setting is on the Pareto set
/// when no other is at least as fast with at most its KL (or at least its
/// top-1), and better in one.
fn frontier_figure(store: &str, points: &[SessionPoint]) -> FrontierFigure {
    let dominated = |p: &SessionPoint, better: fn(&SessionPoint, &SessionPoint) -> bool| {
        points.iter().any(|q| better(q, p))
    };
    let by_kl = |q: &SessionPoint, p: &SessionPoint| {
        q.speedup >= p.speedup && q.kl <= p.kl && (q.speedup > p.speedup || q.kl < p.kl)
    };
    let by_top1 = |q: &SessionPoint, p: &SessionPoint| {
        q.speedup >= p.speedup && q.top1 >= p.top1 && (q.speedup > p.speedup || q.top1 > p.top1)
    };
    let dots = points
        .iter()
        .map(|p| {
            let recovery = p.setting.rsplit(" · ").next().unwrap_or(&p.setting);
            FrontierDot {
                label: p.setting.clone(),
                kind: recovery.split(':').next().unwrap_or(recovery).to_string(),
                speedup: p.speedup,
                kl: p.kl,
                top1: p.top1,
                pareto_kl: !dominated(p, by_kl),
                pareto_top1: !dominated(p, by_top1),
                rescaled: false,
            }
        })
        .collect();
    FrontierFigure {
        title: format!("This session's settings on {store}: speed against fidelity"),
        dots,
        chosen: points.iter().find(|p| p.current).map(|p| p.setting.clone()),
    }
}
