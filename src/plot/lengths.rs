//! Where reuse pays: end-to-end speedup against input length, one line per
//! way of reusing maps, with the break-even line at 1×.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::font::FAMILY;
use super::{Figure, err};

/// One line: a label, its colour and (mean tokens, speedup) points.
#[derive(Debug, Clone)]
pub struct LengthSeries {
    /// Legend label.
    pub label: String,
    /// Line colour.
    pub color: RGBColor,
    /// (mean tokens of a length bucket, end-to-end speedup), by length.
    pub points: Vec<(f64, f64)>,
}

/// End-to-end speedup against input length (log scale).
#[derive(Debug, Clone)]
pub struct LengthFigure {
    /// Title.
    pub title: String,
    /// The lines.
    pub series: Vec<LengthSeries>,
}

impl Figure for LengthFigure {
    fn size(&self) -> (u32, u32) {
        (900, 560)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        let points = || self.series.iter().flat_map(|s| &s.points);
        let x_max = points().map(|p| p.0).fold(16.0, f64::max) * 1.3;
        let x_min = points().map(|p| p.0).fold(x_max, f64::min).max(1.0) / 1.3;
        let y_max = points()
            .map(|p| p.1)
            .filter(|y| y.is_finite())
            .fold(1.1, f64::max)
            * 1.08;
        let y_min = points()
            .map(|p| p.1)
            .filter(|y| y.is_finite())
            .fold(0.9, f64::min)
            * 0.95;
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, (FAMILY, 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((x_min..x_max).log_scale(), y_min..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("input length (tokens, mean of a length bucket)")
            .y_desc("end-to-end speedup over exact (×)")
            .x_labels(10)
            .x_label_formatter(&|x| one_two_five(*x))
            .y_label_formatter(&|y| format!("{y:.2}"))
            .light_line_style(WHITE.mix(0.0))
            .label_style((FAMILY, 13))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                [(x_min, 1.0), (x_max, 1.0)],
                BLACK.mix(0.5).stroke_width(1),
            ))
            .map_err(err)?
            .label("break-even (exact)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.5)));
        for s in &self.series {
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.1.is_finite())
                .collect();
            let color = s.color;
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(&s.label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
        Ok(())
    }
}

/// A log axis's tick label: shown for 1, 2 and 5 times a power of ten
/// only, so the crowded ticks near the top of a decade do not overlap.
fn one_two_five(x: f64) -> String {
    let scale = 10f64.powf(x.log10().floor());
    let lead = (x / scale).round();
    match lead as u32 {
        1 | 2 | 5 => format!("{x:.0}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::one_two_five;

    #[test]
    fn only_one_two_and_five_times_a_power_of_ten_are_labelled() {
        let labels: Vec<String> = [
            10.0, 20.0, 30.0, 50.0, 90.0, 100.0, 200.0, 900.0, 1000.0, 2000.0,
        ]
        .into_iter()
        .map(one_two_five)
        .collect();
        assert_eq!(
            labels,
            ["10", "20", "", "50", "", "100", "200", "", "1000", "2000"]
        );
    }
}
