//! The dashboard's config file: `$XDG_CONFIG_HOME/attncache/config.toml`
//! (else `~/.config/attncache/config.toml`) or `--config FILE`. It overrides
//! only what it names (command-line flags override it in turn); `W` in the
//! dashboard writes it from the current state. A bad file is refused with one
//! line naming the file, the line and the key, and nothing starts.
//!
//! ```toml
//! model = "smollm2"          # as --model
//! db = "/data/db"            # as --db
//! policy = "global:0.1"      # as --policy (W saves the tuned policy beside the file)
//! split = "rt:test"          # the demo stream
//! interval_ms = 1500
//! theme = "light"            # dark, light, 16, mono
//! [keys]                     # action = key, as --keys names keys
//! calibrate = "C"
//! [modules]                  # the Modules tab
//! store = "/data/store"      # as --store
//! prompts = "/data/p.jsonl"  # as --prompts
//! positions = "contiguous"   # contiguous or schema
//! recovery = "select:15"     # none, first:K, select:R, probe:R, probe-modules:M
//! chat = false
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde::{Deserialize, Serialize};

use super::keys::{self, Action, parse_key};
use super::theme::Theme;
use crate::modules::{Positions, Recovery};
use crate::storage::write_atomically;

/// What a config file may set (all optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `--model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `--db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<PathBuf>,
    /// `--policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// `--split`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// `--interval-ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// `--theme`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<String>,
    /// Action name → key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<String, String>,
    /// The Modules tab's section.
    #[serde(default, skip_serializing_if = "ModulesConfig::is_empty")]
    pub modules: ModulesConfig,
}

/// The `[modules]` section: what the Modules tab serves and how.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulesConfig {
    /// `--store`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<PathBuf>,
    /// `--prompts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<PathBuf>,
    /// Position assignment: contiguous or schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<String>,
    /// The recovery it starts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<String>,
    /// Wrap prompts in the chat template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<bool>,
}

impl ModulesConfig {
    /// True when it names nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Where the config file lives by default.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("attncache").join("config.toml"))
}

impl Config {
    /// Reads and checks `path`; a missing file is an empty config unless
    /// `required` (`--config`).
    pub fn load(path: &Path, required: bool) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::default());
            }
            Err(e) => anyhow::bail!("cannot read the config file {} ({e})", path.display()),
        };
        Self::parse(&text, path)
    }

    /// Parses and checks a config file's `text` (`path` for messages).
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map_or(String::new(), |s| format!(":{}", line_of(text, s.start)));
            anyhow::anyhow!("{}{line}: {}", path.display(), e.message().trim())
        })?;
        let at = |key: &str| format!("{}:{}", path.display(), line_of_key(text, key));
        if let Some(theme) = &config.theme {
            Theme::named(theme)
                .map_err(|e| anyhow::anyhow!("{}: key `theme`: {e}", at("theme")))?;
        }
        if config.interval_ms == Some(0) {
            anyhow::bail!(
                "{}: key `interval_ms`: must be at least 1",
                at("interval_ms")
            );
        }
        KeyMap::from_config(&config.keys)
            .map_err(|(key, e)| anyhow::anyhow!("{}: key `keys.{key}`: {e}", at(&key)))?;
        let m = &config.modules;
        if let Some(p) = &m.positions {
            Positions::parse(p).map_err(|e| {
                anyhow::anyhow!("{}: key `modules.positions`: {e}", at("positions"))
            })?;
        }
        if let Some(r) = &m.recovery {
            Recovery::parse(r)
                .map_err(|e| anyhow::anyhow!("{}: key `modules.recovery`: {e}", at("recovery")))?;
        }
        Ok(config)
    }

    /// Writes the config to `path` (temporary file, then rename).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_atomically(path, toml::to_string(self)?.as_bytes())?;
        Ok(())
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The 1-based line where `key = …` is set (1 when not found).
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
                || l.strip_prefix(&format!("\"{key}\""))
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

/// The key bindings: the defaults of [`keys::action`] with a config's
/// overrides (an overridden action leaves its default key).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyMap {
    overrides: Vec<(KeyEvent, Action)>,
}

impl KeyMap {
    /// The overrides of a config's `[keys]` table; an error names the
    /// offending entry.
    pub fn from_config(keys: &BTreeMap<String, String>) -> Result<Self, (String, String)> {
        let mut overrides = Vec::new();
        for (name, key) in keys {
            let action = Action::ALL
                .iter()
                .find(|a| a.name() == name)
                .copied()
                .ok_or_else(|| {
                    (
                        name.clone(),
                        format!(
                            "unknown action: use one of {}",
                            Action::ALL.map(|a| a.name()).join(", ")
                        ),
                    )
                })?;
            let event = parse_key(key).map_err(|e| (name.clone(), e.to_string()))?;
            if let Some((_, other)) = overrides.iter().find(|(k, _)| *k == event) {
                return Err((
                    name.clone(),
                    format!("`{key}` is already bound to {}", Action::name(*other)),
                ));
            }
            overrides.push((event, action));
        }
        Ok(Self { overrides })
    }

    /// The action of `key`.
    pub fn action(&self, key: KeyEvent) -> Option<Action> {
        let same = |k: &KeyEvent| {
            k.code == key.code
                && (k.modifiers == key.modifiers
                    || matches!(key.code, KeyCode::Char(_))
                        && (k.modifiers | KeyModifiers::SHIFT)
                            == (key.modifiers | KeyModifiers::SHIFT))
        };
        if let Some((_, action)) = self.overrides.iter().find(|(k, _)| same(k)) {
            return Some(*action);
        }
        keys::action(key).filter(|a| !self.overrides.iter().any(|(_, o)| o == a))
    }

    /// `keys` as the help and the hint bar show them (`"c"`, `"q  Ctrl-C"`),
    /// each key whose action was moved replaced by its new key.
    pub fn relabel(&self, keys: &str) -> String {
        keys.split("  ")
            .map(|token| {
                let moved = parse_key(token)
                    .ok()
                    .and_then(keys::action)
                    .and_then(|a| self.overrides.iter().find(|(_, o)| *o == a));
                match moved {
                    Some((key, _)) => keys::key_name(*key),
                    None => token.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    }

    /// The overrides as a config's `[keys]` table.
    pub fn to_config(&self) -> BTreeMap<String, String> {
        self.overrides
            .iter()
            .map(|(k, a)| (a.name().to_string(), keys::key_name(*k)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::parse(text, Path::new("/etc/attncache.toml"))
    }

    fn error(text: &str) -> String {
        let e = parse(text).unwrap_err().to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        e
    }

    #[test]
    fn a_config_round_trips_and_names_only_what_it_sets() {
        let mut keys = BTreeMap::new();
        keys.insert("calibrate".to_string(), "C".to_string());
        keys.insert("quit".to_string(), "x".to_string());
        let config = Config {
            model: Some("smollm2".into()),
            db: Some("/data/db".into()),
            policy: Some("global:0.1".into()),
            split: Some("rt:calib".into()),
            interval_ms: Some(500),
            theme: Some("light".into()),
            keys,
            modules: ModulesConfig {
                store: Some("/data/store".into()),
                recovery: Some("select:15".into()),
                ..Default::default()
            },
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.toml");
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path, true).unwrap(), config);
        // Only what it names.
        let partial = parse("theme = \"16\"\n").unwrap();
        assert_eq!(partial.theme.as_deref(), Some("16"));
        assert_eq!(partial.model, None);
        assert!(toml::to_string(&partial).unwrap().trim() == "theme = \"16\"");
        // A missing default file is an empty config; a missing --config is an error.
        let missing = dir.path().join("none.toml");
        assert_eq!(Config::load(&missing, false).unwrap(), Config::default());
        assert!(
            Config::load(&missing, true)
                .unwrap_err()
                .to_string()
                .contains("none.toml")
        );
    }

    #[test]
    fn every_config_error_names_the_file_the_line_and_the_key() {
        let e = error("theme = \"dark\"\ncolour = \"red\"\n");
        assert!(
            e.starts_with("/etc/attncache.toml:2: ") && e.contains("colour"),
            "{e}"
        );
        let e = error("split = \"rt:test\"\ntheme = \"neon\"\n");
        assert!(
            e.starts_with("/etc/attncache.toml:2: key `theme`") && e.contains("neon"),
            "{e}"
        );
        let e = error("interval_ms = \"fast\"\n");
        assert!(e.starts_with("/etc/attncache.toml:1: "), "{e}");
        let e = error("interval_ms = 0\n");
        assert!(e.contains(":1: key `interval_ms`"), "{e}");
        let e = error("[keys]\nquit = \"x\"\nfly = \"f\"\n");
        assert!(e.contains(":3: key `keys.fly`: unknown action"), "{e}");
        let e = error("[keys]\ncalibrate = \"Hyper\"\n");
        assert!(
            e.contains(":2: key `keys.calibrate`") && e.contains("unknown key"),
            "{e}"
        );
        let e = error("[keys]\ncalibrate = \"x\"\nquit = \"x\"\n");
        assert!(e.contains("already bound"), "{e}");
        let e = error("theme = \n");
        assert!(e.starts_with("/etc/attncache.toml:1: "), "{e}");
    }

    #[test]
    fn an_override_moves_an_action_to_its_new_key() {
        let mut keys = BTreeMap::new();
        keys.insert("calibrate".to_string(), "C".to_string());
        let map = KeyMap::from_config(&keys).unwrap();
        let key = |name| parse_key(name).unwrap();
        assert_eq!(map.action(key("C")), Some(Action::Calibrate));
        assert_eq!(map.action(key("c")), None, "the default key is freed");
        assert_eq!(map.action(key("q")), Some(Action::Quit), "others stay");
        assert_eq!(map.to_config(), keys);
        assert_eq!(map.relabel("c"), "C");
        assert_eq!(map.relabel("q  Ctrl-C"), "q  Ctrl-C");
        assert_eq!(map.relabel("+/-"), "+/-");
        assert_eq!(KeyMap::default().action(key("c")), Some(Action::Calibrate));
    }
}
