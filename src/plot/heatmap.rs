//! Heatmaps: attention maps (exact, reused, difference) with tokens on the
//! axes, and layer × head (or layer × layer) matrices, each with a colour
//! bar.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::font::FAMILY;
use super::palette::{GREY, heat};
use super::{Figure, err};

/// Largest side a map is drawn at; longer maps are mean-pooled to it.
const MAX_SIDE: usize = 128;

/// Resamples a row-major `[s, s]` map to `[n, n]`: mean pooling when
/// `n < s`, nearest neighbour (blocks) when `n > s`.
pub fn resample(map: &[f32], s: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * n];
    if s == 0 || n == 0 {
        return out;
    }
    let bounds = |i: usize| (i * s / n, ((i + 1) * s / n).max(i * s / n + 1));
    for (r, row) in out.chunks_mut(n).enumerate() {
        let (r0, r1) = bounds(r);
        for (c, value) in row.iter_mut().enumerate() {
            let (c0, c1) = bounds(c);
            let mut sum = 0f32;
            for rr in r0..r1 {
                sum += map[rr * s + c0..rr * s + c1].iter().sum::<f32>();
            }
            *value = sum / ((r1 - r0) * (c1 - c0)) as f32;
        }
    }
    out
}

/// One matrix to draw: values by row then column (`None`: no data).
#[derive(Debug, Clone)]
pub struct MatrixPanel {
    /// Panel title.
    pub title: String,
    /// Horizontal axis description (with unit).
    pub x_desc: String,
    /// Vertical axis description.
    pub y_desc: String,
    /// Column names.
    pub x_names: Vec<String>,
    /// Row names (first row drawn at the top).
    pub y_names: Vec<String>,
    /// Values.
    pub values: Vec<Vec<Option<f64>>>,
    /// Colour range.
    pub range: (f64, f64),
    /// What the colour means (colour bar label).
    pub legend: String,
    /// Write each value in its cell.
    pub annotate: bool,
}

impl MatrixPanel {
    /// A square map `[s, s]` (pooled to at most 128 per side) with tokens
    /// as axis names where they fit.
    pub fn map(title: &str, tokens: &[String], values: &[f32], range: (f64, f64)) -> Self {
        let s = tokens.len();
        let n = s.min(MAX_SIDE);
        let pooled = resample(values, s, n);
        let names: Vec<String> = if n == s {
            tokens.to_vec()
        } else {
            (0..n).map(|i| format!("{}", i * s / n)).collect()
        };
        Self {
            title: title.into(),
            x_desc: "key token".into(),
            y_desc: "query token".into(),
            x_names: names.clone(),
            y_names: names,
            values: pooled
                .chunks(n.max(1))
                .map(|row| row.iter().map(|&v| Some(v as f64)).collect())
                .collect(),
            range,
            legend: "attention probability".into(),
            annotate: false,
        }
    }
}

/// Draws `panel` into `area` (matrix on the left, colour bar on the right).
pub fn draw_matrix<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &MatrixPanel,
) -> anyhow::Result<()> {
    let rows = panel.values.len();
    let cols = panel.values.first().map_or(0, Vec::len);
    let (width, _) = area.dim_in_pixel();
    let (main, bar) = area.split_horizontally(width.saturating_sub(90));
    let label_every = |n: usize| (n / 24).max(1);
    let (xe, ye) = (label_every(cols), label_every(rows));
    let x_names = panel.x_names.clone();
    let y_names = panel.y_names.clone();
    let longest = y_names.iter().map(|n| n.chars().count()).max().unwrap_or(2);
    let mut chart = ChartBuilder::on(&main)
        .caption(&panel.title, (FAMILY, 18))
        .margin(8)
        .x_label_area_size(if cols <= 40 { 70 } else { 40 })
        .y_label_area_size((longest as u32 * 7 + 30).clamp(40, 110))
        // plotters' integer ranges include their end: 0..n-1 is n segments.
        .build_cartesian_2d(
            (0..cols as i32 - 1).into_segmented(),
            (0..rows as i32 - 1).into_segmented(),
        )
        .map_err(err)?;
    let rotate = cols > 12 || x_names.iter().any(|n| n.chars().count() > 3);
    let x_style = if rotate {
        (FAMILY, 11).into_font().transform(FontTransform::Rotate90)
    } else {
        (FAMILY, 11).into_font()
    };
    // Segment i holds column i; rows are flipped so row 0 is at the top.
    let name = |names: &[String], every: usize, i: i32| -> String {
        match usize::try_from(i) {
            Ok(i) if i < names.len() && i % every == 0 => names[i].clone(),
            _ => String::new(),
        }
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(&panel.x_desc)
        .y_desc(&panel.y_desc)
        .axis_desc_style((FAMILY, 13))
        .x_labels(cols + 1)
        .y_labels(rows + 1)
        .x_label_style(x_style)
        .y_label_style((FAMILY, 11))
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => name(&x_names, xe, *i),
            _ => String::new(),
        })
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) => name(&y_names, ye, rows as i32 - 1 - i),
            _ => String::new(),
        })
        .draw()
        .map_err(err)?;
    let (lo, hi) = panel.range;
    let scale = |v: f64| ((v - lo) / (hi - lo).max(1e-12)) as f32;
    let cells = panel.values.iter().enumerate().flat_map(|(r, row)| {
        let y = rows as i32 - 1 - r as i32;
        row.iter().enumerate().map(move |(c, v)| (c as i32, y, *v))
    });
    chart
        .draw_series(cells.clone().map(|(c, y, v)| {
            let color = match v {
                Some(v) => heat(scale(v)).filled(),
                None => GREY.mix(0.25).filled(),
            };
            Rectangle::new(
                [
                    (SegmentValue::Exact(c), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(c + 1), SegmentValue::Exact(y + 1)),
                ],
                color,
            )
        }))
        .map_err(err)?;
    if panel.annotate {
        let style =
            TextStyle::from((FAMILY, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        chart
            .draw_series(cells.filter_map(|(c, y, v)| {
                let v = v?;
                let color: &'static RGBColor = if scale(v) > 0.6 { &BLACK } else { &WHITE };
                Some(Text::new(
                    format!("{:.0}", v * 100.0),
                    (SegmentValue::CenterOf(c), SegmentValue::CenterOf(y)),
                    style.color(color),
                ))
            }))
            .map_err(err)?;
    }
    draw_colour_bar(&bar, panel)
}

/// A vertical colour bar with the range and the legend.
fn draw_colour_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &MatrixPanel,
) -> anyhow::Result<()> {
    let (lo, hi) = panel.range;
    let mut chart = ChartBuilder::on(area)
        .margin_top(40)
        .margin_bottom(80)
        .margin_right(8)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, lo..hi.max(lo + 1e-9))
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(5)
        .y_desc(&panel.legend)
        .axis_desc_style((FAMILY, 12))
        .y_label_style((FAMILY, 10))
        .draw()
        .map_err(err)?;
    let steps = 64;
    chart
        .draw_series((0..steps).map(|i| {
            let a = lo + (hi - lo) * i as f64 / steps as f64;
            let b = lo + (hi - lo) * (i + 1) as f64 / steps as f64;
            Rectangle::new(
                [(0.0, a), (1.0, b)],
                heat(i as f32 / (steps - 1) as f32).filled(),
            )
        }))
        .map_err(err)?;
    Ok(())
}

/// One row of a [`MapsFigure`]: a head's exact and reused maps.
#[derive(Debug, Clone)]
pub struct MapRow {
    /// What the row shows (layer, head, similarity).
    pub label: String,
    /// The query's tokens.
    pub tokens: Vec<String>,
    /// Exact map, row-major `[S, S]`.
    pub exact: Vec<f32>,
    /// The reused (neighbour's) map, if any.
    pub cached: Option<Vec<f32>>,
}

/// Exact map, reused map and their absolute difference, one row per head.
#[derive(Debug, Clone)]
pub struct MapsFigure {
    /// Figure title.
    pub title: String,
    /// The rows.
    pub rows: Vec<MapRow>,
}

impl Figure for MapsFigure {
    fn size(&self) -> (u32, u32) {
        (1500, 60 + 470 * self.rows.len().max(1) as u32)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        let area = area.titled(&self.title, (FAMILY, 24)).map_err(err)?;
        for (row, cell) in self
            .rows
            .iter()
            .zip(area.split_evenly((self.rows.len().max(1), 1)))
        {
            let max = row
                .exact
                .iter()
                .chain(row.cached.iter().flatten())
                .fold(0f32, |a, &b| a.max(b)) as f64;
            let range = (0.0, max.max(1e-6));
            let panels = cell.split_evenly((1, 3));
            let label = |what: &str| format!("{} · {what}", row.label);
            draw_matrix(
                &panels[0],
                &MatrixPanel::map(&label("exact"), &row.tokens, &row.exact, range),
            )?;
            match &row.cached {
                Some(cached) => {
                    let diff: Vec<f32> = row
                        .exact
                        .iter()
                        .zip(cached)
                        .map(|(a, b)| (a - b).abs())
                        .collect();
                    draw_matrix(
                        &panels[1],
                        &MatrixPanel::map(&label("reused"), &row.tokens, cached, range),
                    )?;
                    let mut panel =
                        MatrixPanel::map(&label("|difference|"), &row.tokens, &diff, range);
                    panel.legend = "|exact − reused|".into();
                    draw_matrix(&panels[2], &panel)?;
                }
                None => {
                    panels[1]
                        .draw_text(
                            "no neighbour: nothing reused",
                            &TextStyle::from((FAMILY, 16).into_font()),
                            (40, 200),
                        )
                        .map_err(err)?;
                }
            }
        }
        Ok(())
    }
}

/// Matrices side by side (e.g. similarity and hit rate per layer × head).
#[derive(Debug, Clone)]
pub struct MatrixFigure {
    /// Figure title.
    pub title: String,
    /// The panels, left to right.
    pub panels: Vec<MatrixPanel>,
}

impl Figure for MatrixFigure {
    fn size(&self) -> (u32, u32) {
        (720 * self.panels.len().max(1) as u32, 620)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        let area = area.titled(&self.title, (FAMILY, 24)).map_err(err)?;
        for (panel, cell) in self
            .panels
            .iter()
            .zip(area.split_evenly((1, self.panels.len().max(1))))
        {
            draw_matrix(&cell, panel)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_averages_blocks_and_repeats_small_maps() {
        let mut map = vec![0f32; 16];
        for i in 0..4 {
            map[i * 4 + i] = 1.0;
        }
        assert_eq!(resample(&map, 4, 2), vec![0.5, 0.0, 0.0, 0.5]);
        assert_eq!(resample(&map, 4, 4), map);
        let ones = vec![1f32; 9];
        assert!(
            resample(&ones, 3, 2)
                .iter()
                .all(|&v| (v - 1.0).abs() < 1e-6)
        );
        assert_eq!(
            resample(&[1.0, 0.0, 0.0, 1.0], 2, 4)[..4],
            [1.0, 1.0, 0.0, 0.0]
        );
    }
}
