//! A compact text heatmap of an attention map for the terminal.

/// Shades from low to high probability.
const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];

/// Longest token label shown at the left of a row.
const LABEL_WIDTH: usize = 12;

/// Renders `map` (rows = queries, columns = keys, values in [0, 1]) with one
/// character per cell, shaded by probability relative to the map's maximum,
/// each row labelled with its token and the column of its largest value.
pub fn render(tokens: &[String], map: &[Vec<f32>]) -> String {
    let max = map
        .iter()
        .flatten()
        .copied()
        .fold(f32::MIN_POSITIVE, f32::max);
    let mut out = String::new();
    out.push_str(&format!(
        "{:>w$}  keys 0..{} (█ = {max:.3}, shade ∝ probability)\n",
        "query",
        tokens.len().saturating_sub(1),
        w = LABEL_WIDTH + 4
    ));
    for (i, row) in map.iter().enumerate() {
        let label: String = tokens
            .get(i)
            .map(String::as_str)
            .unwrap_or("?")
            .chars()
            .take(LABEL_WIDTH)
            .collect();
        let cells: String = row.iter().map(|&p| shade(p / max)).collect();
        let (argmax, top) =
            row.iter().enumerate().fold(
                (0, f32::MIN),
                |best, (j, &p)| if p > best.1 { (j, p) } else { best },
            );
        let top_token = tokens.get(argmax).map(String::as_str).unwrap_or("?");
        out.push_str(&format!(
            "{i:>3} {label:>LABEL_WIDTH$} |{cells}| → {argmax} {top_token} ({top:.2})\n"
        ));
    }
    out
}

fn shade(x: f32) -> char {
    let i = (x.clamp(0.0, 1.0) * (SHADES.len() - 1) as f32).round() as usize;
    SHADES[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_row_per_query_and_marks_the_peak() {
        let tokens = vec!["[CLS]".to_string(), "hi".to_string()];
        let map = vec![vec![0.9, 0.1], vec![0.0, 1.0]];
        let text = render(&tokens, &map);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains("|█ |"), "{}", lines[1]);
        assert!(lines[1].ends_with("→ 0 [CLS] (0.90)"), "{}", lines[1]);
        assert!(lines[2].contains("| █|"), "{}", lines[2]);
    }
}
