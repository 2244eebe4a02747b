//! Square attention maps as terminal heatmaps: half-block cells (two pixels
//! per cell, colour theme) or shaded double-width cells (monochrome).

use ratatui::style::Style;
use ratatui::text::{Line, Span};

use super::super::theme::{Theme, shade};
pub use crate::plot::resample;

/// Pixels per side a heatmap of an `[s, s]` map gets in `cols × rows`
/// cells: a whole number of pixels per token when the map is small, else
/// pooled to fit.
pub fn side(theme: &Theme, s: usize, cols: usize, rows: usize) -> usize {
    let fit = if theme.color {
        cols.min(rows * 2)
    } else {
        (cols / 2).min(rows)
    };
    if s == 0 || s > fit { fit } else { fit / s * s }
}

/// The lines of an `[n, n]` heatmap, values divided by `scale`.
pub fn lines(theme: &Theme, pixels: &[f32], n: usize, scale: f32) -> Vec<Line<'static>> {
    let v = |r: usize, c: usize| pixels[r * n + c] / scale.max(f32::MIN_POSITIVE);
    if theme.color {
        (0..n.div_ceil(2))
            .map(|pair| {
                let spans = (0..n)
                    .map(|c| {
                        let top = theme.pixel(v(2 * pair, c));
                        let bottom = if 2 * pair + 1 < n {
                            theme.pixel(v(2 * pair + 1, c))
                        } else {
                            ratatui::style::Color::Reset
                        };
                        Span::styled("▀", Style::new().fg(top).bg(bottom))
                    })
                    .collect::<Vec<_>>();
                Line::from(spans)
            })
            .collect()
    } else {
        (0..n)
            .map(|r| {
                let row: String = (0..n)
                    .flat_map(|c| {
                        let g = shade(v(r, c));
                        [g, g]
                    })
                    .collect();
                Line::raw(row)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monochrome_uses_two_columns_per_pixel() {
        let theme = Theme::MONO;
        let out = lines(&theme, &[1.0, 0.0, 0.0, 1.0], 2, 1.0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].to_string(), "██  ");
        assert_eq!(side(&theme, 50, 20, 30), 10);
        assert_eq!(side(&Theme::DARK, 50, 20, 30), 20);
        // Small maps get whole blocks per token.
        assert_eq!(side(&Theme::DARK, 8, 40, 30), 40);
        assert_eq!(side(&Theme::DARK, 7, 40, 30), 35);
        assert_eq!(
            resample(&[1.0, 0.0, 0.0, 1.0], 2, 4)[..4],
            [1.0, 1.0, 0.0, 0.0]
        );
    }
}
