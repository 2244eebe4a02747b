//! Small text helpers shared by the command line, the dashboard and reports.

/// `text` cut to at most `max` characters, ending in an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn cuts_by_characters_with_an_ellipsis() {
        assert_eq!(shorten("héllo", 5), "héllo");
        assert_eq!(shorten("héllo world", 5), "héll…");
        assert_eq!(shorten("abc", 0), "…");
    }
}
