//! Prompts over a schema, one JSON record per line:
//!
//! ```json
//! {"modules": ["doc-3", "doc-1"], "args": {"doc-3": {"title": "Alien"}},
//!  "text": "Which film is set in space?", "choices": ["Alien", "Heat"], "answer": 0}
//! ```
//!
//! `args`, `choices` and `answer` are optional; `choices` with `answer` make
//! a scored task (the choice with the highest log-probability is the answer).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::schema::Schema;

/// One prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    /// The schema's name, when the record names it (checked against the
    /// store's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Modules used, in the prompt's order.
    #[serde(default)]
    pub modules: Vec<String>,
    /// Parameter values by module.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, BTreeMap<String, String>>,
    /// Free text after the modules (the question).
    #[serde(default)]
    pub text: String,
    /// Answer choices of a scored task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// Index of the right choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<usize>,
}

impl PromptSpec {
    /// A prompt from a command-line argument: a JSON record, or plain text
    /// (free text with no modules).
    pub fn from_arg(arg: &str) -> anyhow::Result<Self> {
        if arg.trim_start().starts_with('{') {
            serde_json::from_str(arg).map_err(|e| anyhow::anyhow!("the prompt record: {e}"))
        } else {
            Ok(Self {
                text: arg.to_string(),
                ..Self::default()
            })
        }
    }

    /// Checks the prompt against `schema`: known modules and parameters,
    /// each module and union used once, an answer among the choices.
    pub fn check(&self, schema: &Schema) -> anyhow::Result<()> {
        if let Some(name) = &self.schema
            && name != &schema.name
        {
            bail!(
                "the prompt names schema {name:?} but the store holds schema {:?}",
                schema.name
            );
        }
        let mut used = HashSet::new();
        let mut unions = HashSet::new();
        for name in &self.modules {
            let Some((_, module)) = schema.module(name) else {
                bail!(
                    "unknown module {name:?}: schema {:?} has {}",
                    schema.name,
                    list(schema.modules.iter().map(|m| m.name.as_str()))
                );
            };
            if !used.insert(name.as_str()) {
                bail!("module {name:?} is used twice in one prompt");
            }
            if let Some(union) = &module.union
                && !unions.insert(union.as_str())
            {
                bail!("union {union:?} is used twice in one prompt: its members share one place");
            }
        }
        for (name, values) in &self.args {
            let Some((_, module)) = schema.module(name) else {
                bail!("arguments for unknown module {name:?}");
            };
            if !used.contains(name.as_str()) {
                bail!("arguments for module {name:?}, which the prompt does not use");
            }
            for param in values.keys() {
                if !module.params.contains_key(param) {
                    bail!(
                        "unknown parameter {param:?} of module {name:?}: it has {}",
                        list(module.params.keys().map(String::as_str))
                    );
                }
            }
        }
        if self.modules.is_empty() && self.text.trim().is_empty() {
            bail!("the prompt is empty: give modules or text");
        }
        match (self.answer, self.choices.len()) {
            (Some(a), n) if a >= n => bail!("answer {a} is not one of the {n} choices"),
            (None, n) if n > 0 => bail!("choices without an answer: add \"answer\": INDEX"),
            _ => Ok(()),
        }
    }
}

/// Names for a message: `"a", "b"` or `none`.
fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.map(|n| format!("{n:?}")).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Reads a JSONL prompts file (blank lines skipped), each record checked
/// against `schema`; errors name the line.
pub fn load_prompts(path: &Path, schema: &Schema) -> anyhow::Result<Vec<PromptSpec>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read prompts {}", path.display()))?;
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let prompt: PromptSpec =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        prompt
            .check(schema)
            .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        prompts.push(prompt);
    }
    if prompts.is_empty() {
        bail!("{} holds no prompts", path.display());
    }
    Ok(prompts)
}

/// Writes prompts as JSONL.
pub fn prompts_jsonl(prompts: &[PromptSpec]) -> String {
    prompts
        .iter()
        .map(|p| serde_json::to_string(p).expect("a prompt serialises") + "\n")
        .collect()
}
