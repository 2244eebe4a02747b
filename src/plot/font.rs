//! The font plots are drawn with: found at run time, never committed.
//!
//! Order: `$ATTNCACHE_FONT`; DejaVu Sans where Debian's `fonts-dejavu-core`
//! and other systems put it; else Bitstream Vera Sans fetched (once, checked)
//! from reportlab's PyPI wheel like every other asset. When none can be had
//! (or `ATTNCACHE_FONT=none`), plots are written as SVG only: the text is
//! laid out with a generated metrics-only font (every glyph 0.6 em wide, no
//! outlines) and drawn by whatever displays the SVG.

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

/// What the plots' text is drawn with.
#[derive(Debug, Clone)]
pub enum FontSource {
    /// A TrueType file: PNG and SVG.
    File(PathBuf),
    /// No font: SVG only; the reason says why and what to do.
    MetricsOnly(String),
}

static REGISTERED: OnceLock<Result<FontSource, String>> = OnceLock::new();

/// Finds a font and registers it with plotters (once per process).
pub fn ensure_font() -> anyhow::Result<FontSource> {
    REGISTERED
        .get_or_init(|| register().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn register() -> anyhow::Result<FontSource> {
    let (source, bytes) = match find() {
        Ok(path) => {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            (FontSource::File(path), bytes)
        }
        Err(reason) => {
            let reason = format!(
                "no font for the plots' text ({reason:#}); writing SVG only — install \
                 fonts-dejavu-core or set ATTNCACHE_FONT=FILE.ttf for PNG"
            );
            eprintln!("attncache: {reason}");
            (FontSource::MetricsOnly(reason), metrics_only_font())
        }
    };
    // plotters keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    for style in [FontStyle::Normal, FontStyle::Bold] {
        plotters::style::register_font(FAMILY, style, bytes).map_err(|_| {
            anyhow::anyhow!("the plots' font is not TrueType: set ATTNCACHE_FONT to a .ttf file")
        })?;
    }
    Ok(source)
}

fn find() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ATTNCACHE_FONT") {
        anyhow::ensure!(path != "none", "ATTNCACHE_FONT=none");
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
        .context("fetching reportlab's Vera with pip failed")?;
    Ok(dir.join("Vera.ttf"))
}

/// A minimal TrueType font with metrics and no outlines: one glyph, 0.6 em
/// wide, which every character maps to. Enough to lay text out; nothing is
/// drawn with it.
fn metrics_only_font() -> Vec<u8> {
    let be16 = |v: u16| v.to_be_bytes().to_vec();
    let be32 = |v: u32| v.to_be_bytes().to_vec();
    let head: Vec<u8> = [
        be32(0x0001_0000),
        be32(0x0001_0000),
        be32(0),
        be32(0x5F0F_3CF5),
        be16(0),
        be16(1000),  // units per em
        vec![0; 16], // created, modified
        vec![0; 8],  // bounding box
        be16(0),
        be16(8),
        be16(2),
        be16(0),
        be16(0),
    ]
    .concat();
    let hhea: Vec<u8> = [
        be32(0x0001_0000),
        be16(800),                        // ascender
        (-200i16).to_be_bytes().to_vec(), // descender
        be16(0),
        be16(600), // advance width max
        vec![0; 6],
        be16(1),
        be16(0),
        be16(0),
        vec![0; 8],
        be16(0),
        be16(1), // one horizontal metric
    ]
    .concat();
    let maxp: Vec<u8> = [be32(0x0000_5000), be16(1)].concat();
    let hmtx: Vec<u8> = [be16(600), be16(0)].concat();
    let tables: [(&[u8; 4], Vec<u8>); 4] = [
        (b"head", head),
        (b"hhea", hhea),
        (b"hmtx", hmtx),
        (b"maxp", maxp),
    ];
    let mut out = [be32(0x0001_0000), be16(4), be16(64), be16(2), be16(0)].concat();
    let mut offset = 12 + 16 * tables.len();
    let mut data = Vec::new();
    for (tag, table) in &tables {
        out.extend_from_slice(*tag);
        out.extend(be32(0));
        out.extend(be32(offset as u32));
        out.extend(be32(table.len() as u32));
        let mut padded = table.clone();
        padded.resize(table.len().div_ceil(4) * 4, 0);
        offset += padded.len();
        data.extend(padded);
    }
    out.extend(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_only_font_parses_and_has_advances() {
        use ab_glyph::{Font, FontRef, ScaleFont};
        let bytes = metrics_only_font();
        let font = FontRef::try_from_slice(&bytes).expect("a valid font");
        let scaled = font.as_scaled(10.0);
        let advance = scaled.h_advance(font.glyph_id('W'));
        assert!((advance - 6.0).abs() < 0.5, "{advance}");
    }
}
