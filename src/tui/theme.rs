//! Themes as data: dark (the default), light, 16-colour (plain terminals,
//! projectors) and mono (`--no-color`, `NO_COLOR`), which carries the same
//! information in glyphs and shading.

use ratatui::style::{Color, Modifier, Style};

/// The colours of a theme.
#[derive(Debug, PartialEq, Eq)]
pub struct Palette {
    /// Its name in `--theme` and the config file.
    pub name: &'static str,
    /// Focused borders, titles and key hints.
    pub accent: Color,
    /// Unfocused borders and secondary text.
    pub dim: Color,
    /// Errors.
    pub error: Color,
    /// Text on the accent (key hints).
    pub on_accent: Color,
    /// The exact side of comparisons.
    pub exact: Color,
    /// The cached side.
    pub cached: Color,
    /// The similarity and heatmap ramp: viridis in 24-bit colour, or the
    /// 16 ANSI colours.
    pub truecolor: bool,
}

/// The default: light text on a dark terminal.
pub const DARK: Palette = Palette {
    name: "dark",
    accent: Color::Cyan,
    dim: Color::DarkGray,
    error: Color::Red,
    on_accent: Color::Black,
    exact: Color::Rgb(230, 159, 0),
    cached: Color::Rgb(86, 180, 233),
    truecolor: true,
};

/// Dark text on a light terminal.
pub const LIGHT: Palette = Palette {
    name: "light",
    accent: Color::Blue,
    dim: Color::Gray,
    error: Color::Red,
    on_accent: Color::White,
    exact: Color::Rgb(213, 94, 0),
    cached: Color::Rgb(0, 114, 178),
    truecolor: true,
};

/// The 16 ANSI colours only (plain terminals, projectors).
pub const ANSI16: Palette = Palette {
    name: "16",
    accent: Color::Cyan,
    dim: Color::Gray,
    error: Color::LightRed,
    on_accent: Color::Black,
    exact: Color::Yellow,
    cached: Color::LightBlue,
    truecolor: false,
};

/// How the dashboard draws similarity, hits and focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    /// False: no colour at all, shading and glyphs only (`mono`).
    pub color: bool,
    /// The colours (unused when `color` is false).
    pub palette: &'static Palette,
}

/// Glyph of a head that reused its neighbour's map.
pub const HIT: char = '●';
/// Glyph of a head computed exactly although a neighbour was found.
pub const MISS: char = '·';
/// Shades from low to high, for monochrome heatmaps and similarity.
pub const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];

/// The names `--theme` and the config file accept.
pub const THEME_NAMES: [&str; 4] = ["dark", "light", "16", "mono"];

impl Theme {
    /// The dark theme (the default).
    pub const DARK: Theme = Theme {
        color: true,
        palette: &DARK,
    };
    /// No colour at all.
    pub const MONO: Theme = Theme {
        color: false,
        palette: &DARK,
    };

    /// The theme called `name` (see [`THEME_NAMES`]).
    pub fn named(name: &str) -> anyhow::Result<Self> {
        let palette = match name {
            "dark" => &DARK,
            "light" => &LIGHT,
            "16" => &ANSI16,
            "mono" => return Ok(Self::MONO),
            other => anyhow::bail!("unknown theme `{other}`: use {}", THEME_NAMES.join(", ")),
        };
        Ok(Self {
            color: true,
            palette,
        })
    }

    /// The theme called `name` (default dark), mono when `--no-color` or
    /// `NO_COLOR` (set and non-empty) asks for it: those always win.
    pub fn choose(name: Option<&str>, no_color_flag: bool) -> anyhow::Result<Self> {
        let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let theme = Self::named(name.unwrap_or("dark"))?;
        Ok(if no_color_flag || no_color_env {
            Self::MONO
        } else {
            theme
        })
    }

    /// The theme after this one in [`THEME_NAMES`] (mono → dark).
    pub fn next(&self) -> Self {
        let at = THEME_NAMES
            .iter()
            .position(|&n| n == self.name())
            .unwrap_or(0);
        Self::named(THEME_NAMES[(at + 1) % THEME_NAMES.len()]).expect("a known theme")
    }

    /// The theme's name.
    pub fn name(&self) -> &'static str {
        if self.color {
            self.palette.name
        } else {
            "mono"
        }
    }

    /// Borders and title of a panel, brighter when focused.
    pub fn border(&self, focused: bool) -> Style {
        match (self.color, focused) {
            (true, true) => Style::new()
                .fg(self.palette.accent)
                .add_modifier(Modifier::BOLD),
            (true, false) => Style::new().fg(self.palette.dim),
            (false, true) => Style::new().add_modifier(Modifier::BOLD),
            (false, false) => Style::new(),
        }
    }

    /// A key in the hint bar and the help popup.
    pub fn key(&self) -> Style {
        if self.color {
            Style::new()
                .fg(self.palette.on_accent)
                .bg(self.palette.accent)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }

    /// Secondary text.
    pub fn dim(&self) -> Style {
        if self.color {
            Style::new().fg(self.palette.dim)
        } else {
            Style::new()
        }
    }

    /// Errors in the status line.
    pub fn error(&self) -> Style {
        if self.color {
            Style::new()
                .fg(self.palette.error)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        }
    }

    /// The selected row or cell.
    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    /// [`Theme::selected`] for a row that is selected, else no style.
    pub fn selected_if(&self, selected: bool) -> Style {
        if selected {
            self.selected()
        } else {
            Style::default()
        }
    }

    /// The exact side of a comparison (latency charts).
    pub fn exact(&self) -> Style {
        if self.color {
            Style::new().fg(self.palette.exact)
        } else {
            Style::new()
        }
    }

    /// The cached side of a comparison.
    pub fn cached(&self) -> Style {
        if self.color {
            Style::new().fg(self.palette.cached)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        }
    }

    /// Cell style of a similarity in `[0, 1]` (`None`: no neighbour).
    pub fn similarity(&self, value: Option<f32>) -> Style {
        match (self.color, value) {
            (_, None) => self.dim(),
            (true, Some(v)) => Style::new().bg(self.pixel(v)).fg(contrast(v)),
            (false, Some(_)) => Style::new(),
        }
    }

    /// Colour of a heatmap pixel in `[0, 1]` (colour themes only).
    pub fn pixel(&self, value: f32) -> Color {
        if self.palette.truecolor {
            heat(value)
        } else {
            ansi_heat(value)
        }
    }
}

/// The heatmap ramp (viridis, colour-blind safe), `v` in `[0, 1]`.
pub fn heat(v: f32) -> Color {
    let (r, g, b) = crate::plot::palette::viridis(v);
    Color::Rgb(r, g, b)
}

/// The 16-colour ramp, dark to bright.
pub fn ansi_heat(v: f32) -> Color {
    const RAMP: [Color; 6] = [
        Color::Black,
        Color::Blue,
        Color::Cyan,
        Color::Green,
        Color::Yellow,
        Color::White,
    ];
    RAMP[step(v, RAMP.len())]
}

/// Readable text on a [`heat`] background.
fn contrast(v: f32) -> Color {
    if v > 0.6 { Color::Black } else { Color::White }
}

/// The shade glyph of `v` in `[0, 1]`.
pub fn shade(v: f32) -> char {
    SHADES[step(v, SHADES.len())]
}

/// The nearest of `steps` evenly spaced steps to `v` in `[0, 1]` (clamped;
/// NaN and infinities are the first step).
fn step(v: f32, steps: usize) -> usize {
    let v = if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    };
    ((v * (steps - 1) as f32).round() as usize).min(steps - 1)
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
        assert_eq!(ansi_heat(0.0), Color::Black);
        assert_eq!(ansi_heat(1.0), Color::White);
        assert_eq!(ansi_heat(f32::NAN), Color::Black);
    }

    #[test]
    fn every_named_theme_exists_and_mono_wins() {
        for name in THEME_NAMES {
            assert_eq!(Theme::named(name).unwrap().name(), name);
        }
        assert!(
            Theme::named("neon")
                .unwrap_err()
                .to_string()
                .contains("dark, light, 16, mono")
        );
        assert_eq!(Theme::choose(Some("light"), true).unwrap(), Theme::MONO);
        let mut theme = Theme::DARK;
        for name in ["light", "16", "mono", "dark"] {
            theme = theme.next();
            assert_eq!(theme.name(), name);
        }
    }
}
