//! The font plots are drawn with: found at run time, never committed.
//!
//! Order: `$ATTNCACHE_FONT`; DejaVu Sans where Debian's `fonts-dejavu-core`
//! and other systems put it; else Bitstream Vera Sans fetched (once, checked)
//! from reportlab's PyPI wheel like every other asset.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use plotters::style::FontStyle;

use crate::fetch::{FONT_VERA, Fetcher};

/// The family name plots ask for.
pub const FAMILY: &str = "sans-serif";

/// Where systems install DejaVu Sans.
const SYSTEM_FONTS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/local/share/fonts/DejaVuSans.ttf",
    "/Library/Fonts/DejaVuSans.ttf",
];

static REGISTERED: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Finds a font and registers it with plotters (once per process); returns
/// its path, or a one-line error saying how to provide one.
pub fn ensure_font() -> anyhow::Result<PathBuf> {
    REGISTERED
        .get_or_init(|| register().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn register() -> anyhow::Result<PathBuf> {
    let path = find()?;
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    // plotters keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    for style in [FontStyle::Normal, FontStyle::Bold] {
        plotters::style::register_font(FAMILY, style, bytes).map_err(|_| {
            anyhow::anyhow!(
                "{} is not a TrueType font: set ATTNCACHE_FONT to one",
                path.display()
            )
        })?;
    }
    Ok(path)
}

fn find() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ATTNCACHE_FONT") {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "ATTNCACHE_FONT={} does not exist: point it to a .ttf file",
            path.display()
        );
        return Ok(path);
    }
    if let Some(path) = SYSTEM_FONTS.iter().map(Path::new).find(|p| p.is_file()) {
        return Ok(path.to_path_buf());
    }
    let dir = Fetcher::from_env()?
        .ensure(&FONT_VERA, "the plots' text")
        .context(
            "no font for the plots' text: install fonts-dejavu-core, or set \
             ATTNCACHE_FONT=FILE.ttf, or let pip fetch reportlab's Vera",
        )?;
    Ok(dir.join("Vera.ttf"))
}
