//! The speed–fidelity frontier of modular reuse: every setting as a point of
//! TTFT speedup over exact against next-token KL (log scale) and against
//! top-1 agreement, one colour per recovery kind, the Pareto set ringed and
//! joined, the calibrated choice crossed.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::font::FAMILY;
use super::palette::{CACHED, EXACT, GREEN, GREY, OURS, PAPER, PURPLE};
use super::{Figure, err};

/// One measured setting.
#[derive(Debug, Clone)]
pub struct FrontierDot {
    /// The setting's name.
    pub label: String,
    /// Its kind, which picks the colour.
    pub kind: String,
    /// TTFT speedup over exact (×).
    pub speedup: f64,
    /// Mean next-token KL, nats.
    pub kl: f64,
    /// Top-1 agreement, 0–1.
    pub top1: f64,
    /// On the Pareto set against KL.
    pub pareto_kl: bool,
    /// On the Pareto set against top-1.
    pub pareto_top1: bool,
    /// Rescaled with APE's temperature and scale.
    pub rescaled: bool,
}

/// The frontier figure: two panels.
#[derive(Debug, Clone)]
pub struct FrontierFigure {
    /// Title.
    pub title: String,
    /// Every setting.
    pub dots: Vec<FrontierDot>,
    /// The calibrated choice, if any (its label).
    pub chosen: Option<String>,
}

/// Smallest KL drawn (the log axis's floor).
const KL_FLOOR: f64 = 1e-5;

/// The colour of a recovery kind.
fn colour(kind: &str) -> RGBColor {
    match kind {
        "none" => PAPER,
        "first" => EXACT,
        "select" => CACHED,
        "probe" => OURS,
        "probe-modules" => GREEN,
        _ => PURPLE,
    }
}

impl FrontierFigure {
    fn panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        (title, x_desc): (&str, &str),
        x: fn(&FrontierDot) -> f64,
        pareto: fn(&FrontierDot) -> bool,
        log: bool,
    ) -> anyhow::Result<()> {
        let top = self
            .dots
            .iter()
            .map(|d| d.speedup)
            .filter(|v| v.is_finite())
            .fold(1.0f64, f64::max)
            * 1.1;
        let xs: Vec<f64> = self.dots.iter().map(x).filter(|v| v.is_finite()).collect();
        let x_max = xs.iter().copied().fold(KL_FLOOR * 10.0, f64::max) * 1.5;
        let mut builder = ChartBuilder::on(area);
        builder
            .caption(title, (FAMILY, 18))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60);
        let mut sorted: Vec<&FrontierDot> = self.dots.iter().filter(|d| pareto(d)).collect();
        sorted.sort_by(|a, b| x(a).total_cmp(&x(b)));
        let legend_kinds = ["none", "first", "select", "probe", "probe-modules"];
        macro_rules! draw {
            ($chart:expr, $clamp:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(x_desc)
                    .y_desc("TTFT speedup over exact (×)")
                    .label_style((FAMILY, 12))
                    .light_line_style(WHITE.mix(0.0))
                    .draw()
                    .map_err(err)?;
                chart
                    .draw_series(LineSeries::new(
                        sorted.iter().map(|d| ($clamp(x(d)), d.speedup)),
                        GREY.stroke_width(2),
                    ))
                    .map_err(err)?
                    .label("Pareto set")
                    .legend(|(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], GREY.stroke_width(2))
                    });
                for kind in legend_kinds
                    .into_iter()
                    .filter(|k| self.dots.iter().any(|d| d.kind == *k))
                {
                    let c = colour(kind);
                    chart
                        .draw_series(self.dots.iter().filter(|d| d.kind == kind).map(|d| {
                            let at = ($clamp(x(d)), d.speedup);
                            if d.rescaled {
                                TriangleMarker::new(at, 6, c.filled()).into_dyn()
                            } else {
                                Circle::new(at, 5, c.filled()).into_dyn()
                            }
                        }))
                        .map_err(err)?
                        .label(kind)
                        .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled()));
                }
                if self.dots.iter().any(|d| d.rescaled) {
                    // Outline the triangles, so the legend can say what they are.
                    chart
                        .draw_series(self.dots.iter().filter(|d| d.rescaled).map(|d| {
                            TriangleMarker::new(($clamp(x(d)), d.speedup), 6, BLACK.stroke_width(1))
                        }))
                        .map_err(err)?
                        .label("with APE rescaling")
                        .legend(|(x, y)| {
                            TriangleMarker::new((x + 10, y), 6, BLACK.stroke_width(1))
                        });
                }
                chart
                    .draw_series(
                        sorted.iter().map(|d| {
                            Circle::new(($clamp(x(d)), d.speedup), 9, BLACK.stroke_width(2))
                        }),
                    )
                    .map_err(err)?;
                if let Some(chosen) = self
                    .chosen
                    .as_ref()
                    .and_then(|c| self.dots.iter().find(|d| &d.label == c))
                {
                    chart
                        .draw_series([Cross::new(
                            ($clamp(x(chosen)), chosen.speedup),
                            10,
                            BLACK.stroke_width(3),
                        )])
                        .map_err(err)?
                        .label("calibrated")
                        .legend(|(x, y)| Cross::new((x + 10, y), 6, BLACK.stroke_width(2)));
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.4))
                    .label_font((FAMILY, 12))
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()
                    .map_err(err)?;
            }};
        }
        if log {
            let c = builder
                .build_cartesian_2d((KL_FLOOR..x_max).log_scale(), 0f64..top)
                .map_err(err)?;
            draw!(c, |v: f64| v.max(KL_FLOOR));
        } else {
            let c = builder
                .build_cartesian_2d(0f64..1.02f64, 0f64..top)
                .map_err(err)?;
            draw!(c, |v: f64| v);
        }
        Ok(())
    }
}

impl Figure for FrontierFigure {
    fn size(&self) -> (u32, u32) {
        (1500, 620)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        let area = area.titled(&self.title, (FAMILY, 22)).map_err(err)?;
        let cells = area.split_evenly((1, 2));
        self.panel(
            &cells[0],
            (
                "Speedup against next-token KL",
                "mean KL(exact ‖ modular), nats (log)",
            ),
            |d| d.kl,
            |d| d.pareto_kl,
            true,
        )?;
        self.panel(
            &cells[1],
            (
                "Speedup against top-1 agreement",
                "top-1 agreement with exact",
            ),
            |d| d.top1,
            |d| d.pareto_top1,
            false,
        )
    }
}
