//! Colours and glyphs: a colour theme and a monochrome one (`--no-color`,
//! `NO_COLOR`) that carries the same information in glyphs and shading.

use ratatui::style::{Color, Modifier, Style};

/// How the dashboard draws similarity, hits and focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    /// False: no colour at all, shading and glyphs only.
    pub color: bool,
}

/// Glyph of a head that reused its neighbour's map.
pub const HIT: char = '●';
/// Glyph of a head computed exactly although a neighbour was found.
pub const MISS: char = '·';
/// Shades from low to high, for monochrome heatmaps and similarity.
pub const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];

impl Theme {
    /// The theme for `--no-color` / `NO_COLOR` (set and non-empty).
    pub fn from_env(no_color_flag: bool) -> Self {
        let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            color: !(no_color_flag || no_color_env),
        }
    }

    /// Borders and title of a panel, brighter when focused.
    pub fn border(&self, focused: bool) -> Style {
        match (self.color, focused) {
            (true, true) => Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            (true, false) => Style::new().fg(Color::DarkGray),
            (false, true) => Style::new().add_modifier(Modifier::BOLD),
            (false, false) => Style::new(),
        }
    }

    /// A key in the hint bar and the help popup.
    pub fn key(&self) -> Style {
        if self.color {
            Style::new().fg(Color::Black).bg(Color::Cyan)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }

    /// Secondary text.
    pub fn dim(&self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }

    /// Errors in the status line.
    pub fn error(&self) -> Style {
        if self.color {
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        }
    }

    /// The selected row or cell.
    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    /// The exact side of a comparison (latency charts).
    pub fn exact(&self) -> Style {
        if self.color {
            Style::new().fg(Color::Rgb(230, 159, 0))
        } else {
            Style::new()
        }
    }

    /// The cached side of a comparison.
    pub fn cached(&self) -> Style {
        if self.color {
            Style::new().fg(Color::Rgb(86, 180, 233))
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        }
    }

    /// Cell style of a similarity in `[0, 1]` (`None`: no neighbour).
    pub fn similarity(&self, value: Option<f32>) -> Style {
        match (self.color, value) {
            (_, None) => self.dim(),
            (true, Some(v)) => {
                let bg = heat(v);
                Style::new().bg(bg).fg(contrast(v))
            }
            (false, Some(_)) => Style::new(),
        }
    }

    /// Colour of a heatmap pixel in `[0, 1]` (colour theme only).
    pub fn pixel(&self, value: f32) -> Color {
        heat(value)
    }
}

/// The heatmap ramp (viridis, colour-blind safe), `v` in `[0, 1]`.
pub fn heat(v: f32) -> Color {
    let (r, g, b) = crate::plot::palette::viridis(v);
    Color::Rgb(r, g, b)
}

/// Readable text on a [`heat`] background.
fn contrast(v: f32) -> Color {
    if v > 0.6 { Color::Black } else { Color::White }
}

/// The shade glyph of `v` in `[0, 1]`.
pub fn shade(v: f32) -> char {
    let v = if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    };
    SHADES[((v * (SHADES.len() - 1) as f32).round() as usize).min(SHADES.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_ends_are_dark_and_bright_and_nan_is_safe() {
        assert_eq!(heat(0.0), Color::Rgb(68, 1, 84));
        assert_eq!(heat(1.0), Color::Rgb(253, 231, 37));
        assert_eq!(heat(f32::NAN), heat(0.0));
        assert_eq!(shade(0.0), ' ');
        assert_eq!(shade(1.0), '█');
        assert_eq!(shade(2.0), '█');
    }
}
