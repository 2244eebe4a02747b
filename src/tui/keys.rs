//! The key map: every key the dashboard understands, as [`Action`]s, and the
//! table the help popup and the hint bar are drawn from.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key asks for (outside text input, which takes printable keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave the dashboard.
    Quit,
    /// Open the help popup.
    Help,
    /// Close the top popup, or cancel the running job.
    Close,
    /// Focus the next panel.
    FocusNext,
    /// Focus the previous panel.
    FocusPrev,
    /// Move up in the focused grid, list or popup.
    Up,
    /// Move down.
    Down,
    /// Move left.
    Left,
    /// Move right.
    Right,
    /// Start typing a query.
    EditQuery,
    /// Pause or resume the demo stream.
    TogglePause,
    /// Cycle exact → cached → shadow.
    CycleMode,
    /// Loosen the thresholds (more reuse).
    Loosen,
    /// Tighten the thresholds (less reuse).
    Tighten,
    /// Open the thresholds popup.
    Thresholds,
    /// Calibrate thresholds for the chosen budget.
    Calibrate,
    /// Open the database popup (rebuild).
    Rebuild,
    /// Export the current view.
    Export,
    /// Confirm (run the query, start the rebuild).
    Confirm,
    /// Raise the calibration budget.
    BudgetUp,
    /// Lower the calibration budget.
    BudgetDown,
    /// Switch the calibration objective.
    Objective,
    /// Toggle the grid between this query and the stream so far.
    GridView,
    /// Zoom the focused panel to the whole screen and back.
    Zoom,
    /// Cycle the grid overlay: none → head types → entropy.
    Overlay,
    /// Write the config file from the current state.
    SaveConfig,
    /// Cycle the theme.
    Theme,
    /// The selected layer's nearest database entries, to compare against.
    Neighbours,
    /// Pin the selected history item or neighbour entry for comparison.
    Pin,
    /// Search the database's texts.
    Search,
    /// In the thresholds popup: show and scale one head type only.
    TypeFilter,
}

impl Action {
    /// Every action, as the config file's `[keys]` table names them.
    pub const ALL: [Action; 31] = [
        Action::Quit,
        Action::Help,
        Action::Close,
        Action::FocusNext,
        Action::FocusPrev,
        Action::Up,
        Action::Down,
        Action::Left,
        Action::Right,
        Action::EditQuery,
        Action::TogglePause,
        Action::CycleMode,
        Action::Loosen,
        Action::Tighten,
        Action::Thresholds,
        Action::Calibrate,
        Action::Rebuild,
        Action::Export,
        Action::Confirm,
        Action::BudgetUp,
        Action::BudgetDown,
        Action::Objective,
        Action::GridView,
        Action::Zoom,
        Action::Overlay,
        Action::SaveConfig,
        Action::Theme,
        Action::Neighbours,
        Action::Pin,
        Action::Search,
        Action::TypeFilter,
    ];

    /// The action's name in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Action::Quit => "quit",
            Action::Help => "help",
            Action::Close => "close",
            Action::FocusNext => "focus-next",
            Action::FocusPrev => "focus-prev",
            Action::Up => "up",
            Action::Down => "down",
            Action::Left => "left",
            Action::Right => "right",
            Action::EditQuery => "type",
            Action::TogglePause => "pause",
            Action::CycleMode => "mode",
            Action::Loosen => "loosen",
            Action::Tighten => "tighten",
            Action::Thresholds => "thresholds",
            Action::Calibrate => "calibrate",
            Action::Rebuild => "rebuild",
            Action::Export => "export",
            Action::Confirm => "confirm",
            Action::BudgetUp => "budget-up",
            Action::BudgetDown => "budget-down",
            Action::Objective => "objective",
            Action::GridView => "grid-view",
            Action::Zoom => "zoom",
            Action::Overlay => "overlay",
            Action::SaveConfig => "save-config",
            Action::Theme => "theme",
            Action::Neighbours => "neighbours",
            Action::Pin => "pin",
            Action::Search => "search",
            Action::TypeFilter => "type-filter",
        }
    }
}

/// One line of the help popup: keys, what they do.
pub const HELP: &[(&str, &str)] = &[
    ("q  Ctrl-C", "quit"),
    ("?  F1", "this help"),
    ("Esc", "close a popup · stop typing · cancel a running job"),
    (
        "Tab  Shift-Tab",
        "cycle focus: query, history, grid, maps, latency",
    ),
    ("←↓↑→  hjkl", "move in the grid, the history and popups"),
    ("i", "type a query; Enter runs it"),
    (
        "/",
        "search the database's texts as you type; Enter pins the selected entry",
    ),
    ("Space", "pause / resume the demo stream"),
    ("m", "mode: exact → cached → shadow"),
    (
        "+  -",
        "loosen / tighten the thresholds (selected layer in the popup)",
    ),
    ("t", "thresholds: global scale, per-layer bars, budget"),
    ("[  ]", "calibration budget down / up (thresholds popup)"),
    (
        "f",
        "thresholds popup: show and scale one head type only (all → positional → … → content)",
    ),
    ("o", "calibration objective: accuracy / fidelity"),
    ("c", "calibrate for the budget (background job)"),
    (
        "R",
        "database: counts, lengths, rebuild (Enter starts, Esc cancels)",
    ),
    (
        "v",
        "grid: this query → the stream so far (mean true similarity, hit rate per head) → the last check on the calibration split → the pinned input",
    ),
    ("z", "zoom the focused panel to the whole screen and back"),
    (
        "y",
        "grid overlay: head types (P positional, ← previous token, F/L first/last sink, B broad, C content) → entropy → off",
    ),
    (
        "T  W",
        "cycle the theme · write the config file from the current state",
    ),
    ("e", "export the current view to the export directory"),
    (
        "mouse",
        "click a grid cell to select that head, a panel to focus it",
    ),
];

/// The hint bar's keys, in order.
pub const HINTS: &[(&str, &str)] = &[
    ("q", "quit"),
    ("?", "help"),
    ("i", "type"),
    ("m", "mode"),
    ("+/-", "thr"),
    ("t", "thresholds"),
    ("c", "calibrate"),
    ("R", "rebuild"),
    ("e", "export"),
    ("Spc", "pause"),
];

/// The action of `key` outside text input (`None`: not bound).
pub fn action(key: KeyEvent) -> Option<Action> {
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return matches!(key.code, KeyCode::Char('c')).then_some(Action::Quit);
    }
    Some(match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('?') | KeyCode::F(1) => Action::Help,
        KeyCode::Esc => Action::Close,
        KeyCode::Tab => Action::FocusNext,
        KeyCode::BackTab => Action::FocusPrev,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::Left | KeyCode::Char('h') => Action::Left,
        KeyCode::Right | KeyCode::Char('l') => Action::Right,
        KeyCode::Char('i') => Action::EditQuery,
        KeyCode::Char('/') => Action::Search,
        KeyCode::Char('f') => Action::TypeFilter,
        KeyCode::Char(' ') => Action::TogglePause,
        KeyCode::Char('m') => Action::CycleMode,
        KeyCode::Char('+') | KeyCode::Char('=') => Action::Loosen,
        KeyCode::Char('-') => Action::Tighten,
        KeyCode::Char('t') => Action::Thresholds,
        KeyCode::Char('c') => Action::Calibrate,
        KeyCode::Char('R') => Action::Rebuild,
        KeyCode::Char('e') => Action::Export,
        KeyCode::Enter => Action::Confirm,
        KeyCode::Char(']') => Action::BudgetUp,
        KeyCode::Char('[') => Action::BudgetDown,
        KeyCode::Char('o') => Action::Objective,
        KeyCode::Char('v') => Action::GridView,
        KeyCode::Char('z') => Action::Zoom,
        KeyCode::Char('y') => Action::Overlay,
        KeyCode::Char('W') => Action::SaveConfig,
        KeyCode::Char('T') => Action::Theme,
        KeyCode::Char('n') => Action::Neighbours,
        KeyCode::Char('p') => Action::Pin,
        _ => return None,
    })
}

/// Parses a key as scripts name it: a character (`m`, `+`), or one of
/// `Enter Esc Tab BackTab Up Down Left Right Space F1 Backspace Ctrl-C`.
pub fn parse_key(name: &str) -> anyhow::Result<KeyEvent> {
    let code = match name {
        "Enter" => KeyCode::Enter,
        "Esc" => KeyCode::Esc,
        "Tab" => KeyCode::Tab,
        "BackTab" => KeyCode::BackTab,
        "Up" => KeyCode::Up,
        "Down" => KeyCode::Down,
        "Left" => KeyCode::Left,
        "Right" => KeyCode::Right,
        "Space" => KeyCode::Char(' '),
        "F1" => KeyCode::F(1),
        "Backspace" => KeyCode::Backspace,
        "Ctrl-C" => return Ok(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        other => {
            let mut chars = other.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => KeyCode::Char(c),
                _ => anyhow::bail!(
                    "unknown key `{other}`: use a single character or Enter, Esc, Tab, BackTab, \
                     Up, Down, Left, Right, Space, F1, Backspace, Ctrl-C"
                ),
            }
        }
    };
    Ok(KeyEvent::new(code, KeyModifiers::NONE))
}

/// The name [`parse_key`] reads back for `key`.
pub fn key_name(key: KeyEvent) -> String {
    match key.code {
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => "Ctrl-C".into(),
        KeyCode::Enter => "Enter".into(),
        KeyCode::Esc => "Esc".into(),
        KeyCode::Tab => "Tab".into(),
        KeyCode::BackTab => "BackTab".into(),
        KeyCode::Up => "Up".into(),
        KeyCode::Down => "Down".into(),
        KeyCode::Left => "Left".into(),
        KeyCode::Right => "Right".into(),
        KeyCode::Char(' ') => "Space".into(),
        KeyCode::F(1) => "F1".into(),
        KeyCode::Backspace => "Backspace".into(),
        KeyCode::Char(c) => c.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_a_unique_name_and_keys_read_back() {
        let mut names: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len());
        for name in ["q", "+", "Enter", "Space", "F1", "Ctrl-C", "BackTab", "W"] {
            assert_eq!(key_name(parse_key(name).unwrap()), name);
        }
    }

    #[test]
    fn documented_keys_map_to_their_actions() {
        let key = |c| action(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        assert_eq!(key('q'), Some(Action::Quit));
        assert_eq!(key('/'), Some(Action::Search));
        assert_eq!(key('i'), Some(Action::EditQuery));
        assert_eq!(key('j'), Some(Action::Down));
        assert_eq!(key('R'), Some(Action::Rebuild));
        assert_eq!(key('x'), None);
        assert_eq!(action(parse_key("Ctrl-C").unwrap()), Some(Action::Quit));
        assert_eq!(action(parse_key("F1").unwrap()), Some(Action::Help));
        assert!(parse_key("Hyper").is_err());
    }
}
