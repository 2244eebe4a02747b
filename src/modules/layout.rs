//! Tokenized schemas and prompt layouts: which token sits in which row, at
//! which position, and whether its keys and values come from the store.
//!
//! Every module is tokenized on its own (so its stored rows are the same in
//! every prompt); a prompt's token sequence is the concatenation of its
//! pieces, and the exact baseline runs that same sequence.
//!
//! Positions, two ways:
//! - **schema** (Prompt Cache): each module owns a fixed range assigned in
//!   schema order (union members share one, as long as the longest member;
//!   a parameter reserves its tokens, the value takes the first ones and the
//!   rest is a gap); modules a prompt leaves out leave gaps; modules come in
//!   schema order; the free text starts after the whole schema. Fresh rows
//!   laid out before a module (chat wrappers) shift the modules after them
//!   by their count, so no two rows share a position; without `--chat` no
//!   key is rotated.
//! - **contiguous** (CacheBlend, EPIC): modules in the prompt's order,
//!   positions 0, 1, 2, … as a normally written prompt; stored keys are
//!   rotated to where their rows land.
//!
//! The **preamble** — the tokens that precede the modules in every prompt
//! (the chat template's header under `--chat`, the schema's `preamble`, or a
//! one-token document separator for a raw `prefixed` store) — comes first, at
//! positions 0, 1, …; a `prefixed` store encodes every module after it and
//! serves its rows too, an `alone` store computes them per prompt.

use std::collections::BTreeMap;
use std::ops::Range;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::prompt::PromptSpec;
use super::schema::{Piece, Role, Schema};
use crate::model::TextTokenizer;
use crate::model::llama::ChatTemplate;

/// A piece of a tokenized module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Segment {
    /// Literal text: stored rows `row..row + ids.len()` at module positions
    /// `at..`.
    Text {
        /// Token ids.
        ids: Vec<u32>,
        /// First position inside the module.
        at: usize,
        /// First stored row.
        row: usize,
    },
    /// A parameter: `reserve` positions from `at`, filled per prompt.
    Param {
        /// Its name.
        name: String,
        /// First position inside the module.
        at: usize,
        /// Positions reserved.
        reserve: usize,
    },
}

/// A module tokenized and placed in its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleTokens {
    /// Its name.
    pub name: String,
    /// Its union, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub union: Option<String>,
    /// Its chat role, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// First position of its range in the schema.
    pub offset: usize,
    /// Positions it spans (text tokens and reservations).
    pub span: usize,
    /// Its pieces.
    pub segments: Vec<Segment>,
    /// Stored rows (its text tokens).
    pub rows: usize,
}

impl ModuleTokens {
    /// Schema position of every stored row.
    pub fn stored_positions(&self) -> Vec<usize> {
        self.segments
            .iter()
            .flat_map(|s| match s {
                Segment::Text { ids, at, .. } => {
                    (0..ids.len()).map(|i| self.offset + at + i).collect()
                }
                Segment::Param { .. } => Vec::new(),
            })
            .collect()
    }

    /// Token id of every stored row.
    pub fn stored_ids(&self) -> Vec<u32> {
        self.segments
            .iter()
            .flat_map(|s| match s {
                Segment::Text { ids, .. } => ids.clone(),
                Segment::Param { .. } => Vec::new(),
            })
            .collect()
    }
}

/// How a store encodes its modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Each module after the preamble, at the positions that follow it
    /// (CacheBlend, APE): every module shares the prompt's one attention
    /// sink, the preamble's keys and values are stored once, and the library
    /// may hold any number of modules.
    Prefixed,
    /// Each module on its own at its schema positions (Prompt Cache): every
    /// module re-creates its own attention sink, the preamble is computed
    /// per prompt, and the whole schema must fit the context.
    Alone,
}

impl Encoding {
    /// `prefixed` or `alone`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "prefixed" => Ok(Self::Prefixed),
            "alone" => Ok(Self::Alone),
            _ => bail!("unknown --encode {s:?}: use prefixed or alone"),
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Prefixed => "prefixed",
            Self::Alone => "alone",
        }
    }
}

/// The one-token preamble of a raw prompt whose schema names none, in a
/// `prefixed` store: the document separator, so that every module is encoded
/// after the sink the whole prompt shares.
pub const DOCUMENT_SEPARATOR: &str = "<|endoftext|>";

/// How a schema is encoded: what [`TokenizedSchema::new`] needs beyond the
/// schema.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions<'a> {
    /// Prefixed or alone.
    pub encoding: Encoding,
    /// The chat template, when the store serves chat prompts.
    pub chat: Option<&'a ChatTemplate>,
}

/// The chat template's tokens before the first module: the system turn's
/// opening when the schema has a system module, else the default system turn
/// and the user turn's opening.
fn chat_head(chat: &ChatTemplate, has_system: bool) -> String {
    if has_system {
        return "<|im_start|>system\n".into();
    }
    let head = ChatTemplate {
        default_system: chat.default_system.clone(),
    }
    .user_prompt("\u{0}");
    head.split('\u{0}').next().unwrap_or_default().to_string()
}

/// Every module of a schema tokenized, with the schema's end position and
/// the preamble.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizedSchema {
    /// The modules, in schema order.
    pub modules: Vec<ModuleTokens>,
    /// Positions the whole schema spans.
    pub end: usize,
    /// How the modules were encoded.
    pub encoding: Encoding,
    /// Built for chat prompts.
    pub chat: bool,
    /// The preamble's tokens (empty: none), at positions `0..len`.
    pub preamble: Vec<u32>,
}

impl TokenizedSchema {
    /// Tokenizes the preamble and every module and assigns the schema's
    /// position ranges.
    pub fn new(
        schema: &Schema,
        tokenizer: &TextTokenizer,
        options: EncodeOptions,
    ) -> anyhow::Result<Self> {
        let has_system = schema.modules.first().and_then(|m| m.role) == Some(Role::System);
        let mut pieces: Vec<String> = Vec::new();
        if let Some(chat) = options.chat {
            pieces.push(chat_head(chat, has_system));
        }
        match &schema.preamble {
            Some(text) => pieces.push(text.clone()),
            None if options.chat.is_none()
                && options.encoding == Encoding::Prefixed
                && tokenizer.token_id(DOCUMENT_SEPARATOR).is_some() =>
            {
                pieces.push(DOCUMENT_SEPARATOR.into())
            }
            None => {}
        }
        let mut preamble = Vec::new();
        for piece in &pieces {
            preamble.extend(tokenizer.encode(piece)?.ids);
        }
        let mut modules = Vec::with_capacity(schema.modules.len());
        for spec in &schema.modules {
            let (mut segments, mut at, mut row) = (Vec::new(), 0, 0);
            for piece in spec.pieces() {
                match piece {
                    Piece::Text(text) => {
                        let encoded = tokenizer.encode(text)?;
                        if encoded.truncated {
                            bail!(
                                "module {:?} is longer than the model's context: split it",
                                spec.name
                            );
                        }
                        let ids = encoded.ids;
                        let n = ids.len();
                        segments.push(Segment::Text { ids, at, row });
                        at += n;
                        row += n;
                    }
                    Piece::Param(name) => {
                        let reserve = spec.params[name];
                        segments.push(Segment::Param {
                            name: name.to_string(),
                            at,
                            reserve,
                        });
                        at += reserve;
                    }
                }
            }
            if row == 0 {
                bail!(
                    "module {:?} has no text of its own (only parameters): nothing to store",
                    spec.name
                );
            }
            modules.push(ModuleTokens {
                name: spec.name.clone(),
                union: spec.union.clone(),
                role: spec.role,
                offset: 0,
                span: at,
                segments,
                rows: row,
            });
        }
        // A union reserves its longest member's span where its first member is.
        let mut union_span: BTreeMap<String, usize> = BTreeMap::new();
        for m in &modules {
            if let Some(u) = &m.union {
                let span = union_span.entry(u.clone()).or_default();
                *span = (*span).max(m.span);
            }
        }
        let mut union_start: BTreeMap<String, usize> = BTreeMap::new();
        let mut cursor = 0;
        for m in &mut modules {
            m.offset = match &m.union {
                Some(u) => *union_start.entry(u.clone()).or_insert_with(|| {
                    let start = cursor;
                    cursor += union_span[u.as_str()];
                    start
                }),
                None => {
                    let start = cursor;
                    cursor += m.span;
                    start
                }
            };
        }
        Ok(Self {
            modules,
            end: cursor,
            encoding: options.encoding,
            chat: options.chat.is_some(),
            preamble,
        })
    }

    /// Where module rows were encoded: `(position of its first stored row's
    /// module start)` — after the preamble for `prefixed`, at the schema
    /// offset for `alone`.
    pub fn encoded_at(&self, module: &ModuleTokens) -> usize {
        match self.encoding {
            Encoding::Prefixed => self.preamble.len(),
            Encoding::Alone => module.offset,
        }
    }

    /// The position of every stored row of `module` as encoded.
    pub fn encoded_positions(&self, module: &ModuleTokens) -> Vec<usize> {
        let base = self.encoded_at(module);
        module
            .stored_positions()
            .into_iter()
            .map(|p| p - module.offset + base)
            .collect()
    }

    /// The module named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.modules.iter().position(|m| m.name == name)
    }
}

/// How positions are assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    /// The paper's fixed schema ranges.
    Schema,
    /// 0, 1, 2, … in the prompt's order.
    Contiguous,
}

impl Positions {
    /// `schema` or `contiguous`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "schema" => Ok(Self::Schema),
            "contiguous" => Ok(Self::Contiguous),
            _ => bail!("unknown --positions {s:?}: use schema or contiguous"),
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Schema => "schema",
            Self::Contiguous => "contiguous",
        }
    }
}

/// A block of stored rows: the preamble or a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Block {
    /// The preamble (`prefixed` stores).
    Preamble,
    /// A module (index in the schema).
    Module(usize),
}

/// Where a stored row comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRow {
    /// The block.
    pub block: Block,
    /// Its stored row.
    pub row: usize,
    /// The position its keys were rotated for at build.
    pub stored: usize,
}

/// A run of rows of one kind in a layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    /// The module's name, or `preamble`, `chat`, `question`, `MODULE.PARAM`.
    pub label: String,
    /// The stored block when the rows come from the store.
    #[serde(skip)]
    pub block: Option<Block>,
    /// Its rows.
    pub rows: Range<usize>,
}

/// A prompt laid out: one entry per row.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Position ids.
    pub positions: Vec<usize>,
    /// The stored row behind each row, or `None` for fresh rows.
    pub stored: Vec<Option<StoredRow>>,
    /// Runs of rows, in order.
    pub spans: Vec<Span>,
}

/// What a layout is built from.
#[derive(Debug, Clone, Copy)]
pub struct LayoutOptions<'a> {
    /// Position assignment.
    pub positions: Positions,
    /// The chat template to wrap the prompt in, if any.
    pub chat: Option<&'a ChatTemplate>,
    /// The model's context length.
    pub max_positions: usize,
}

/// Builds layouts.
struct Builder<'a> {
    layout: Layout,
    tokenizer: &'a TextTokenizer,
    positions: Positions,
    /// Fresh rows laid out before the current module (schema positions).
    base: usize,
}

impl Builder<'_> {
    fn next_position(&self) -> usize {
        self.layout.positions.last().map_or(0, |p| p + 1)
    }

    fn push_fresh(&mut self, label: &str, text: &str, before_modules: bool) -> anyhow::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let ids = self.tokenizer.encode(text)?.ids;
        let start = self.layout.ids.len();
        for id in ids {
            let at = match self.positions {
                Positions::Contiguous => self.layout.ids.len(),
                Positions::Schema => self.next_position(),
            };
            self.push(id, at, None);
            if before_modules {
                self.base += 1;
            }
        }
        self.span(label, None, start);
        Ok(())
    }

    fn push(&mut self, id: u32, position: usize, stored: Option<StoredRow>) {
        self.layout.ids.push(id);
        self.layout.positions.push(position);
        self.layout.stored.push(stored);
    }

    fn span(&mut self, label: &str, block: Option<Block>, start: usize) {
        let end = self.layout.ids.len();
        if end > start {
            self.layout.spans.push(Span {
                label: label.to_string(),
                block,
                rows: start..end,
            });
        }
    }

    /// The preamble's rows at positions 0, 1, …: from the store when it is
    /// `prefixed`, computed otherwise.
    fn push_preamble(&mut self, schema: &TokenizedSchema) {
        let start = self.layout.ids.len();
        let stored = schema.encoding == Encoding::Prefixed;
        for (i, &id) in schema.preamble.iter().enumerate() {
            let source = stored.then_some(StoredRow {
                block: Block::Preamble,
                row: i,
                stored: i,
            });
            let position = self.next_position();
            self.push(id, position, source);
            self.base += 1;
        }
        self.span("preamble", stored.then_some(Block::Preamble), start);
    }

    fn push_module(
        &mut self,
        (index, encoded_at): (usize, usize),
        m: &ModuleTokens,
        args: Option<&BTreeMap<String, String>>,
    ) -> anyhow::Result<()> {
        for segment in &m.segments {
            let start = self.layout.ids.len();
            match segment {
                Segment::Text { ids, at, row } => {
                    for (i, &id) in ids.iter().enumerate() {
                        let position = match self.positions {
                            Positions::Contiguous => self.layout.ids.len(),
                            Positions::Schema => m.offset + at + i + self.base,
                        };
                        let source = StoredRow {
                            block: Block::Module(index),
                            row: row + i,
                            stored: encoded_at + at + i,
                        };
                        self.push(id, position, Some(source));
                    }
                    self.span(&m.name, Some(Block::Module(index)), start);
                }
                Segment::Param { name, at, reserve } => {
                    let Some(value) = args.and_then(|a| a.get(name)) else {
                        bail!(
                            "module {:?} needs a value for parameter {name:?}: add \"args\": {{\"{}\": {{\"{name}\": \"...\"}}}}",
                            m.name,
                            m.name
                        );
                    };
                    let ids = self.tokenizer.encode(value)?.ids;
                    if ids.len() > *reserve {
                        bail!(
                            "the value of parameter {name:?} of module {:?} has {} tokens, more than the {reserve} it reserves",
                            m.name,
                            ids.len()
                        );
                    }
                    for (i, id) in ids.into_iter().enumerate() {
                        let position = match self.positions {
                            Positions::Contiguous => self.layout.ids.len(),
                            Positions::Schema => m.offset + at + i + self.base,
                        };
                        self.push(id, position, None);
                    }
                    self.span(&format!("{}.{name}", m.name), None, start);
                }
            }
        }
        Ok(())
    }
}

impl Layout {
    /// Lays `prompt` out over `schema` (checked against it beforehand).
    pub fn new(
        schema: &TokenizedSchema,
        prompt: &PromptSpec,
        tokenizer: &TextTokenizer,
        options: LayoutOptions,
    ) -> anyhow::Result<Self> {
        let mut order = prompt
            .modules
            .iter()
            .map(|name| {
                schema
                    .index_of(name)
                    .ok_or_else(|| anyhow::anyhow!("unknown module {name:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if options.positions == Positions::Schema {
            order.sort_by_key(|&i| (schema.modules[i].offset, i));
        }
        if options.chat.is_some() != schema.chat {
            bail!(
                "the store was built for {} prompts: {}",
                if schema.chat { "chat" } else { "raw" },
                if schema.chat {
                    "run with --chat, or rebuild it without --chat (attncache modules build --schema FILE --out DIR)"
                } else {
                    "run without --chat, or rebuild it with --chat (attncache modules build --chat --schema FILE --out DIR)"
                }
            );
        }
        let system = order
            .iter()
            .position(|&i| schema.modules[i].role == Some(Role::System));
        let mut b = Builder {
            layout: Layout {
                ids: Vec::new(),
                positions: Vec::new(),
                stored: Vec::new(),
                spans: Vec::new(),
            },
            tokenizer,
            positions: options.positions,
            base: 0,
        };
        let args = |i: usize| prompt.args.get(&schema.modules[i].name);
        let module = |i: usize| (i, schema.encoded_at(&schema.modules[i]));
        b.push_preamble(schema);
        if options.chat.is_some()
            && let Some(at) = system
        {
            let i = order.remove(at);
            b.push_module(module(i), &schema.modules[i], args(i))?;
            b.push_fresh("chat", "<|im_end|>\n<|im_start|>user\n", true)?;
        }
        for i in order {
            b.push_module(module(i), &schema.modules[i], args(i))?;
        }
        let question_start = match options.positions {
            Positions::Schema => (schema.end + b.base).max(b.next_position()),
            Positions::Contiguous => b.layout.ids.len(),
        };
        let question = match options.chat {
            Some(_) => format!("{}<|im_end|>\n<|im_start|>assistant\n", prompt.text),
            None => prompt.text.clone(),
        };
        let start = b.layout.ids.len();
        if !question.is_empty() {
            let encoded = tokenizer.encode(&question)?;
            if encoded.truncated {
                bail!(
                    "the prompt's text is longer than the model's context of {}",
                    options.max_positions
                );
            }
            let ids = encoded.ids;
            for (i, id) in ids.into_iter().enumerate() {
                b.push(id, question_start + i, None);
            }
            b.span("question", None, start);
        }
        let layout = b.layout;
        if layout.ids.is_empty() {
            bail!("the prompt has no tokens");
        }
        if layout.stored.last().is_some_and(Option::is_some) {
            bail!("the prompt ends inside a module: add a question (\"text\") after the modules");
        }
        let last = *layout.positions.last().expect("not empty");
        if last >= options.max_positions {
            bail!(
                "the prompt needs {} positions ({} tokens), more than the model's context of {}",
                last + 1,
                layout.ids.len(),
                options.max_positions
            );
        }
        Ok(layout)
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no rows (never for a built layout).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Rows whose keys and values come from the store.
    pub fn cached_rows(&self) -> usize {
        self.stored.iter().filter(|s| s.is_some()).count()
    }

    /// Stored rows whose keys and values are exactly what a full prefill
    /// computes (up to storage rounding): the stored preamble and the stored
    /// run that follows it directly at the positions it was encoded for —
    /// nothing before them is missing from their encoding. The preamble
    /// comes first, so its rows are always among them.
    pub fn exact_rows(&self) -> Vec<usize> {
        let mut exact = Vec::new();
        for (r, s) in self.stored.iter().enumerate() {
            match s {
                Some(s) if s.block == Block::Preamble => exact.push(r),
                // Nothing before it: rotation changes no relative distance.
                Some(s) if exact.len() == r && (r == 0 || s.stored == self.positions[r]) => {
                    let block = s.block;
                    exact.extend(
                        (r..self.len())
                            .take_while(|&q| self.stored[q].is_some_and(|t| t.block == block)),
                    );
                    break;
                }
                _ => break,
            }
        }
        exact
    }

    /// Rows computed fresh (not in any module's text).
    pub fn fresh_rows(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&r| self.stored[r].is_none())
            .collect()
    }

    /// The rows of the free text at the end (the question).
    pub fn question_rows(&self) -> Range<usize> {
        self.spans
            .iter()
            .rev()
            .find(|s| s.label == "question")
            .map_or(self.len() - 1..self.len(), |s| s.rows.clone())
    }

    /// Stored rows by block (the preamble, then modules), in layout order:
    /// (block, rows).
    pub fn block_runs(&self) -> Vec<(Block, Vec<usize>)> {
        let mut runs: Vec<(Block, Vec<usize>)> = Vec::new();
        for (r, s) in self.stored.iter().enumerate() {
            if let Some(s) = s {
                match runs.last_mut() {
                    Some((b, rows)) if *b == s.block => rows.push(r),
                    _ => runs.push((s.block, vec![r])),
                }
            }
        }
        runs
    }

    /// Stored rows as copies: (block, stored rows, first layout row), each a
    /// run of consecutive stored rows landing on consecutive layout rows
    /// (parameter values split a module's rows into several), in layout order.
    pub fn stored_copies(&self) -> Vec<(Block, std::ops::Range<usize>, usize)> {
        let mut copies = Vec::new();
        for (block, rows) in self.block_runs() {
            let mut i = 0;
            while i < rows.len() {
                let mut j = i + 1;
                while j < rows.len() && rows[j] == rows[j - 1] + 1 {
                    j += 1;
                }
                let first = self.stored[rows[i]].expect("a stored row").row;
                copies.push((block, first..first + (j - i), rows[i]));
                i = j;
            }
        }
        copies
    }

    /// Stored module rows by module, in layout order: (module, rows).
    pub fn module_runs(&self) -> Vec<(usize, Vec<usize>)> {
        self.block_runs()
            .into_iter()
            .filter_map(|(b, rows)| match b {
                Block::Module(m) => Some((m, rows)),
                Block::Preamble => None,
            })
            .collect()
    }
}
