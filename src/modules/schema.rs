//! A prompt schema: named modules of text in order, read from TOML (or JSON)
//! with serde and checked before anything runs.
//!
//! ```toml
//! name = "docs"                     # optional
//! preamble = "Answer from the documents below.\n"   # optional: precedes every module
//! [[module]]
//! name = "system"
//! text = "You answer questions about films."
//! role = "system"                   # optional: the system turn under --chat
//! [[module]]
//! name = "doc-1"
//! text = "Film: {title}\nPlot: ..."
//! union = "documents"               # optional: members share one position range
//! params = { title = 8 }            # optional: {title} reserves 8 tokens
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A module's role in a chat prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Under `--chat`, wrapped in the system turn (and the model's default
    /// system message left out).
    System,
}

/// One module of a schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSpec {
    /// Its name, unique in the schema.
    pub name: String,
    /// Its text; `{NAME}` marks a parameter declared in `params`.
    pub text: String,
    /// The union it belongs to: members share one position range (as long
    /// as the longest member) and a prompt uses at most one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub union: Option<String>,
    /// Parameters: name → tokens reserved for its value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, usize>,
    /// Its role in a chat prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// A piece of a module's text: literal text or a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Literal text.
    Text(&'a str),
    /// A parameter placeholder.
    Param(&'a str),
}

impl ModuleSpec {
    /// The module's text split at its parameters' placeholders (empty text
    /// pieces left out).
    pub fn pieces(&self) -> Vec<Piece<'_>> {
        let mut pieces = Vec::new();
        let mut rest = self.text.as_str();
        while let Some((at, name)) = self.next_placeholder(rest) {
            if at > 0 {
                pieces.push(Piece::Text(&rest[..at]));
            }
            pieces.push(Piece::Param(name));
            rest = &rest[at + name.len() + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest));
        }
        pieces
    }

    /// The first `{NAME}` of a declared parameter in `text`: its byte offset
    /// and name.
    fn next_placeholder<'a>(&'a self, text: &str) -> Option<(usize, &'a str)> {
        self.params
            .keys()
            .filter_map(|name| {
                text.find(&format!("{{{name}}}"))
                    .map(|at| (at, name.as_str()))
            })
            .min_by_key(|(at, _)| *at)
    }
}

/// A checked schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// A name for messages and reports (default: the file's stem).
    #[serde(default)]
    pub name: String,
    /// Text that precedes the modules in every prompt (raw prompts; under
    /// `--chat` it follows the chat template's header). A `prefixed` store
    /// encodes every module after it and stores its keys and values once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preamble: Option<String>,
    /// The modules, in schema order.
    #[serde(rename = "module", alias = "modules")]
    pub modules: Vec<ModuleSpec>,
}

impl Schema {
    /// Reads and checks a `.toml` or `.json` schema file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read schema {}", path.display()))?;
        let is_json = path.extension().is_some_and(|e| e == "json");
        let mut schema: Schema = if is_json {
            serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "schema {}: line {} column {}: {e}",
                    path.display(),
                    e.line(),
                    e.column()
                )
            })?
        } else {
            toml::from_str(&text).map_err(|e| {
                let line = e
                    .span()
                    .map(|s| text[..s.start].lines().count().max(1))
                    .unwrap_or(0);
                anyhow::anyhow!(
                    "schema {}: line {line}: {}",
                    path.display(),
                    e.message().trim()
                )
            })?
        };
        if schema.name.is_empty() {
            schema.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "schema".into());
        }
        schema
            .check()
            .map_err(|e| anyhow::anyhow!("schema {}: {e}", path.display()))?;
        Ok(schema)
    }

    /// Checks names, texts, unions and parameters.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.modules.is_empty() {
            bail!("no modules: add [[module]] tables with a name and a text");
        }
        if self.preamble.as_deref().is_some_and(str::is_empty) {
            bail!("the preamble is empty: remove it or give it text");
        }
        let mut names = HashSet::new();
        for (i, m) in self.modules.iter().enumerate() {
            if m.name.trim().is_empty() {
                bail!("module {} has an empty name", i + 1);
            }
            if !names.insert(m.name.as_str()) {
                bail!("module name {:?} is used twice", m.name);
            }
            if m.text.trim().is_empty() {
                bail!("module {:?} has an empty text", m.name);
            }
            for (param, &tokens) in &m.params {
                if tokens == 0 {
                    bail!(
                        "parameter {param:?} of module {:?} reserves 0 tokens: reserve at least 1",
                        m.name
                    );
                }
                if !m.text.contains(&format!("{{{param}}}")) {
                    bail!(
                        "module {:?} declares parameter {param:?} but its text has no {{{param}}}",
                        m.name
                    );
                }
                if m.text.matches(&format!("{{{param}}}")).count() > 1 {
                    bail!(
                        "module {:?} uses {{{param}}} more than once: give each place its own parameter",
                        m.name
                    );
                }
            }
            if m.role == Some(Role::System) && i != 0 {
                bail!(
                    "module {:?} has role \"system\" but is not the first module: the system turn comes first",
                    m.name
                );
            }
        }
        for m in &self.modules {
            if let Some(union) = &m.union
                && names.contains(union.as_str())
            {
                bail!(
                    "union {union:?} has the name of a module: unions and modules need distinct names"
                );
            }
        }
        Ok(())
    }

    /// sha256 of the schema's content (its canonical JSON): two files that
    /// say the same thing in other words hash alike.
    pub fn sha256(&self) -> String {
        let json = serde_json::to_vec(self).expect("a schema serialises");
        let digest = Sha256::digest(&json);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The module named `name`.
    pub fn module(&self, name: &str) -> Option<(usize, &ModuleSpec)> {
        self.modules
            .iter()
            .enumerate()
            .find(|(_, m)| m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> anyhow::Result<Schema> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s.toml");
        std::fs::write(&path, toml_text)?;
        Schema::load(&path)
    }

    #[test]
    fn reads_modules_unions_and_parameters() {
        let s = parse(
            r#"
            [[module]]
            name = "a"
            text = "Hello {who}, and {what}."
            params = { who = 3, what = 2 }
            [[module]]
            name = "b"
            text = "Text"
            union = "u"
            "#,
        )
        .unwrap();
        assert_eq!(s.name, "s");
        assert_eq!(
            s.modules[0].pieces(),
            vec![
                Piece::Text("Hello "),
                Piece::Param("who"),
                Piece::Text(", and "),
                Piece::Param("what"),
                Piece::Text("."),
            ]
        );
        assert_eq!(s.modules[1].union.as_deref(), Some("u"));
    }

    #[test]
    fn refuses_bad_schemas_with_one_line() {
        for (text, want) in [
            ("", "missing field `module`"),
            ("[[module]]\nname = \"a\"\ntext = \" \"", "empty text"),
            (
                "[[module]]\nname = \"a\"\ntext = \"x\"\n[[module]]\nname = \"a\"\ntext = \"y\"",
                "used twice",
            ),
            (
                "[[module]]\nname = \"a\"\ntext = \"x\"\nparams = { p = 2 }",
                "has no {p}",
            ),
            (
                "[[module]]\nname = \"a\"\ntext = \"x\"\ncolour = 1",
                "unknown field",
            ),
            (
                "[[module]]\nname = \"a\"\ntext = \"x\"\n[[module]]\nname = \"b\"\ntext = \"y\"\nunion = \"a\"",
                "distinct names",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }

    #[test]
    fn json_schemas_read_the_same_and_hash_alike() {
        let toml_schema = parse("[[module]]\nname = \"a\"\ntext = \"x\"").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, r#"{"modules": [{"name": "a", "text": "x"}]}"#).unwrap();
        let json_schema = Schema::load(&path).unwrap();
        assert_eq!(json_schema, toml_schema);
        assert_eq!(json_schema.sha256(), toml_schema.sha256());
    }
}
