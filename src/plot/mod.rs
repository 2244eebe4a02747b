//! Plots with plotters, as PNG (bitmap backend, text by ab_glyph from a font
//! found at run time) and SVG: heatmaps of attention maps and layer × head
//! matrices, threshold sweeps and frontiers, latency distributions, the
//! speed–fidelity frontier of modular reuse.

mod charts;
mod font;
mod frontier;
mod heatmap;
mod lengths;

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

pub use charts::{LatencyFigure, SweepFigure, SweepPoint};
pub use font::{FontSource, ensure_font};
pub use frontier::{FrontierDot, FrontierFigure};
pub use heatmap::{MapRow, MapsFigure, MatrixFigure, MatrixPanel, resample};
pub use lengths::{LengthFigure, LengthSeries};

/// A figure that can draw itself on any plotters backend.
pub trait Figure {
    /// Pixel size.
    fn size(&self) -> (u32, u32);
    /// Draws onto `area` (already filled white).
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> anyhow::Result<()>;
}

/// The image format figures that exist in one format only are written in:
/// `png`, or `svg` when no font could be found (see [`FontSource`]).
pub fn raster_extension() -> &'static str {
    match ensure_font() {
        Ok(FontSource::File(_)) => "png",
        _ => "svg",
    }
}

/// Writes `figure` as `DIR/STEM.png` and, with `svg`, `DIR/STEM.svg`
/// (without a font: the SVG only); returns the paths written.
pub fn save(
    figure: &impl Figure,
    dir: &Path,
    stem: &str,
    svg: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    let raster = matches!(ensure_font()?, FontSource::File(_));
    std::fs::create_dir_all(dir)?;
    let size = figure.size();
    let mut written = Vec::new();
    if raster {
        let png = dir.join(format!("{stem}.png"));
        {
            let root = BitMapBackend::new(&png, size).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            figure.draw(&root)?;
            root.present().map_err(err)?;
        }
        written.push(png);
    }
    if svg || !raster {
        let path = dir.join(format!("{stem}.svg"));
        {
            let root = SVGBackend::new(&path, size).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            figure.draw(&root)?;
            root.present().map_err(err)?;
        }
        written.push(path);
    }
    Ok(written)
}

/// A plotters error as an `anyhow` error.
pub fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e}")
}

/// Okabe–Ito colours (safe for colour-blind readers).
pub mod palette {
    use plotters::style::RGBColor;

    /// Exact runs.
    pub const EXACT: RGBColor = RGBColor(230, 159, 0);
    /// Cached runs.
    pub const CACHED: RGBColor = RGBColor(86, 180, 233);
    /// Our policy.
    pub const OURS: RGBColor = RGBColor(0, 114, 178);
    /// The paper's policy.
    pub const PAPER: RGBColor = RGBColor(213, 94, 0);
    /// The oracle frontier.
    pub const ORACLE: RGBColor = PURPLE;
    /// A third series.
    pub const GREEN: RGBColor = RGBColor(0, 158, 115);
    /// A fourth series.
    pub const PURPLE: RGBColor = RGBColor(204, 121, 167);
    /// A fifth series.
    pub const YELLOW: RGBColor = RGBColor(240, 228, 66);
    /// Neutral.
    pub const GREY: RGBColor = RGBColor(120, 120, 120);
    /// Stage colours, in [`crate::plot::LatencyFigure`]'s stage order.
    pub const STAGES: [RGBColor; 7] = [GREY, PURPLE, PAPER, CACHED, YELLOW, OURS, GREEN];

    /// Viridis (five stops, linearly interpolated) at `v` in `[0, 1]`: the
    /// ramp of every heatmap, here and in the dashboard.
    pub fn viridis(v: f32) -> (u8, u8, u8) {
        const STOPS: [(f32, f32, f32); 5] = [
            (68.0, 1.0, 84.0),
            (59.0, 82.0, 139.0),
            (33.0, 145.0, 140.0),
            (94.0, 201.0, 98.0),
            (253.0, 231.0, 37.0),
        ];
        let v = if v.is_finite() {
            v.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let x = v * (STOPS.len() - 1) as f32;
        let i = (x.floor() as usize).min(STOPS.len() - 2);
        let t = x - i as f32;
        let (a, b) = (STOPS[i], STOPS[i + 1]);
        let mix = |p: f32, q: f32| (p + (q - p) * t).round() as u8;
        (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }

    /// [`viridis`] as a plotters colour.
    pub fn heat(v: f32) -> RGBColor {
        let (r, g, b) = viridis(v);
        RGBColor(r, g, b)
    }
}
