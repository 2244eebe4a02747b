//! Reproducible modular workloads (a schema and its prompts) generated from
//! a seed and the Rotten Tomatoes text attncache already fetches:
//! - `multidoc`: plot summaries as modules; each prompt takes D of them in
//!   random order and asks which document began with a quoted sentence,
//!   scored over the documents' numbers.
//!
//! Questions that end in a number end with the space before it: SmolLM2
//! writes every digit as its own token after a separate space token, so the
//! next token is the answer's first digit, not a space every run agrees on.
//! - `passkey`: a number stated in one module (a union of ten, one per
//!   number) among filler modules, asked at the end, scored against the
//!   other numbers.
//! - `fewshot`: k labelled reviews as modules in random order, then the
//!   query review, scored by the label words (the paper's kind of workload,
//!   where a prefix cache helps only while the examples come in one order).
//! - `facts`: plot summaries as modules, and as many again that end in a fact
//!   (a person and the city they live in); each prompt takes one fact
//!   document among D − 1 plain ones in random order and asks where its
//!   person lives, scored against three other fact documents' cities — a
//!   multi-document task a 135M model answers, so task accuracy says
//!   something (on `multidoc` it answers almost none).

use anyhow::bail;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::prompt::PromptSpec;
use super::schema::{ModuleSpec, Schema};
use crate::data::{CorpusOptions, CorpusSpec, Item};

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Multi-document question answering.
    Multidoc,
    /// Passkey retrieval.
    Passkey,
    /// Few-shot sentiment.
    Fewshot,
    /// A fact stated in one of D documents, asked at the end.
    Facts,
}

impl WorkloadKind {
    /// `multidoc`, `passkey` or `fewshot`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "multidoc" => Ok(Self::Multidoc),
            "passkey" => Ok(Self::Passkey),
            "fewshot" => Ok(Self::Fewshot),
            "facts" => Ok(Self::Facts),
            _ => bail!("unknown workload {s:?}: use multidoc, passkey, fewshot or facts"),
        }
    }
}

/// Sizes of a generated workload.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadOptions {
    /// The workload.
    pub kind: WorkloadKind,
    /// Modules per prompt (documents, filler modules, or examples).
    pub per_prompt: usize,
    /// Modules in the schema's pool to draw from.
    pub pool: usize,
    /// Prompts.
    pub prompts: usize,
    /// The seed.
    pub seed: u64,
}

/// A generated schema and its prompts.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The schema.
    pub schema: Schema,
    /// The prompts.
    pub prompts: Vec<PromptSpec>,
}

/// Loads a built-in split (fetched on first use).
fn split(spec: &str) -> anyhow::Result<Vec<Item>> {
    Ok(CorpusSpec::parse(spec)?
        .load(&CorpusOptions::default())?
        .items)
}

/// Generates the workload `options` describes.
pub fn generate(options: WorkloadOptions) -> anyhow::Result<Workload> {
    if options.per_prompt == 0 || options.prompts == 0 {
        bail!("a workload needs at least one module per prompt and one prompt");
    }
    if options.pool < options.per_prompt {
        bail!(
            "the pool ({}) must hold at least the modules of one prompt ({})",
            options.pool,
            options.per_prompt
        );
    }
    let mut rng = StdRng::seed_from_u64(options.seed);
    match options.kind {
        WorkloadKind::Multidoc => multidoc(options, &mut rng),
        WorkloadKind::Passkey => passkey(options, &mut rng),
        WorkloadKind::Fewshot => fewshot(options, &mut rng),
        WorkloadKind::Facts => facts(options, &mut rng),
    }
}

/// The dashboard's default workload: multi-document and passkey prompts
/// (four modules each, from a pool of twelve plot summaries and eight filler
/// ones plus the ten pass keys), alternating, over one schema of both
/// libraries — small enough to build on 2 cores in about a minute.
pub fn demo(seed: u64) -> anyhow::Result<Workload> {
    let part = |kind, pool| {
        generate(WorkloadOptions {
            kind,
            per_prompt: 4,
            pool,
            prompts: 6,
            seed,
        })
    };
    let (docs, keys) = (
        part(WorkloadKind::Multidoc, 12)?,
        part(WorkloadKind::Passkey, 8)?,
    );
    let mut modules = docs.schema.modules;
    if let Some(clash) = keys
        .schema
        .modules
        .iter()
        .find(|k| modules.iter().any(|m| m.name == k.name))
    {
        bail!("both workloads name a module {:?}", clash.name);
    }
    modules.extend(keys.schema.modules);
    let prompts = docs
        .prompts
        .into_iter()
        .zip(keys.prompts)
        .flat_map(|(d, k)| [d, k])
        .collect();
    Ok(Workload {
        schema: Schema {
            name: format!("demo-{seed}"),
            preamble: None,
            modules,
        },
        prompts,
    })
}

/// The first sentence of a text (at most 25 words).
fn first_sentence(text: &str) -> String {
    let end = text.find(". ").map_or(text.len(), |i| i + 1);
    text[..end]
        .split_whitespace()
        .take(25)
        .collect::<Vec<_>>()
        .join(" ")
}

fn multidoc(o: WorkloadOptions, rng: &mut StdRng) -> anyhow::Result<Workload> {
    let plots = split("rt-plot:all")?;
    if plots.len() < o.pool {
        bail!(
            "only {} plot summaries for a pool of {}",
            plots.len(),
            o.pool
        );
    }
    let docs: Vec<&Item> = plots.choose_multiple(rng, o.pool).collect();
    let modules = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            module(
                &format!("doc-{i}"),
                format!("Document {i}:\n{}\n\n", d.text),
            )
        })
        .collect();
    let prompts = (0..o.prompts)
        .map(|_| {
            let mut chosen: Vec<usize> = (0..o.pool).collect::<Vec<_>>();
            chosen.shuffle(rng);
            chosen.truncate(o.per_prompt);
            let answer = rng.random_range(0..chosen.len());
            let target = chosen[answer];
            PromptSpec {
                modules: chosen.iter().map(|i| format!("doc-{i}")).collect(),
                text: format!(
                    "Question: one of the documents above begins \"{}\" Which document is it?\nAnswer: Document ",
                    first_sentence(&docs[target].text)
                ),
                choices: chosen.iter().map(|i| i.to_string()).collect(),
                answer: Some(answer),
                ..PromptSpec::default()
            }
        })
        .collect();
    Ok(Workload {
        schema: Schema {
            name: format!("multidoc-{}", o.seed),
            preamble: None,
            modules,
        },
        prompts,
    })
}

fn passkey(o: WorkloadOptions, rng: &mut StdRng) -> anyhow::Result<Workload> {
    let plots = split("rt-plot:all")?;
    let filler: Vec<&Item> = plots.choose_multiple(rng, o.pool).collect();
    let keys: Vec<u32> = (0..10).map(|_| rng.random_range(10_000..100_000)).collect();
    let mut modules: Vec<ModuleSpec> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let mut m = module(
                &format!("key-{i}"),
                format!("The pass key is {k}. Remember it. {k} is the pass key.\n\n"),
            );
            m.union = Some("passkey".into());
            m
        })
        .collect();
    modules.extend(
        filler
            .iter()
            .enumerate()
            .map(|(i, d)| module(&format!("filler-{i}"), format!("{}\n\n", d.text))),
    );
    let prompts = (0..o.prompts)
        .map(|_| {
            let key = rng.random_range(0..keys.len());
            let mut chosen: Vec<String> = (0..o.pool)
                .collect::<Vec<_>>()
                .choose_multiple(rng, o.per_prompt)
                .map(|i| format!("filler-{i}"))
                .collect();
            let at = rng.random_range(0..=chosen.len());
            chosen.insert(at, format!("key-{key}"));
            let mut choices: Vec<usize> = (0..keys.len()).filter(|&k| k != key).collect();
            choices.shuffle(rng);
            choices.truncate(3);
            let answer = rng.random_range(0..=choices.len());
            choices.insert(answer, key);
            PromptSpec {
                modules: chosen,
                text: "What is the pass key? The pass key is ".into(),
                choices: choices.iter().map(|&k| keys[k].to_string()).collect(),
                answer: Some(answer),
                ..PromptSpec::default()
            }
        })
        .collect();
    Ok(Workload {
        schema: Schema {
            name: format!("passkey-{}", o.seed),
            preamble: None,
            modules,
        },
        prompts,
    })
}

/// A review's label word.
fn label_word(item: &Item) -> &'static str {
    if item.label.as_deref() == Some("fresh") {
        "positive"
    } else {
        "negative"
    }
}

fn fewshot(o: WorkloadOptions, rng: &mut StdRng) -> anyhow::Result<Workload> {
    let pool = split("rt:db")?;
    let queries = split("rt:test")?;
    let examples: Vec<&Item> = pool.choose_multiple(rng, o.pool).collect();
    let modules = examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            module(
                &format!("ex-{i}"),
                format!("Review: {}\nSentiment: {}\n\n", e.text, label_word(e)),
            )
        })
        .collect();
    let prompts = queries
        .choose_multiple(rng, o.prompts)
        .map(|q| {
            let chosen: Vec<String> = (0..o.pool)
                .collect::<Vec<_>>()
                .choose_multiple(rng, o.per_prompt)
                .map(|i| format!("ex-{i}"))
                .collect();
            PromptSpec {
                modules: chosen,
                text: format!("Review: {}\nSentiment:", q.text),
                choices: vec![" positive".into(), " negative".into()],
                answer: Some(usize::from(label_word(q) == "negative")),
                ..PromptSpec::default()
            }
        })
        .collect();
    Ok(Workload {
        schema: Schema {
            name: format!("fewshot-{}", o.seed),
            preamble: None,
            modules,
        },
        prompts,
    })
}

/// First names of the `facts` workload's people.
const NAMES: [&str; 48] = [
    "Alice", "Bruno", "Clara", "Daniel", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas",
    "Karen", "Leo", "Maria", "Nathan", "Olga", "Pablo", "Quinn", "Rosa", "Simon", "Tara", "Ulrich",
    "Vera", "Walter", "Xenia", "Yusuf", "Zoe", "Amir", "Bianca", "Carlos", "Dana", "Emil", "Fiona",
    "Gustav", "Hanna", "Igor", "Julia", "Kenji", "Lena", "Marco", "Nora", "Oscar", "Paula",
    "Rafael", "Sofia", "Tomas", "Ursula", "Victor", "Wanda",
];

/// Cities of the `facts` workload.
const CITIES: [&str; 48] = [
    "Lisbon",
    "Oslo",
    "Cairo",
    "Lima",
    "Dublin",
    "Vienna",
    "Nairobi",
    "Quito",
    "Prague",
    "Madrid",
    "Berlin",
    "Tokyo",
    "Sydney",
    "Toronto",
    "Chicago",
    "Boston",
    "Paris",
    "London",
    "Rome",
    "Athens",
    "Moscow",
    "Seoul",
    "Delhi",
    "Mumbai",
    "Bangkok",
    "Manila",
    "Havana",
    "Santiago",
    "Bogota",
    "Caracas",
    "Warsaw",
    "Budapest",
    "Helsinki",
    "Stockholm",
    "Copenhagen",
    "Brussels",
    "Amsterdam",
    "Zurich",
    "Geneva",
    "Milan",
    "Naples",
    "Munich",
    "Hamburg",
    "Marseille",
    "Seattle",
    "Denver",
    "Houston",
    "Miami",
];

fn facts(o: WorkloadOptions, rng: &mut StdRng) -> anyhow::Result<Workload> {
    if o.pool > NAMES.len() {
        bail!(
            "the facts workload has {} people: use --pool {} or less",
            NAMES.len(),
            NAMES.len()
        );
    }
    let plots = split("rt-plot:all")?;
    if plots.len() < 2 * o.pool {
        bail!(
            "only {} plot summaries for a pool of {} plain and {} fact documents",
            plots.len(),
            o.pool,
            o.pool
        );
    }
    let docs: Vec<&Item> = plots.choose_multiple(rng, 2 * o.pool).collect();
    let (plain, with_fact) = docs.split_at(o.pool);
    let mut names = NAMES.to_vec();
    names.shuffle(rng);
    let mut cities = CITIES.to_vec();
    cities.shuffle(rng);
    let mut modules: Vec<ModuleSpec> = plain
        .iter()
        .enumerate()
        .map(|(i, d)| module(&format!("doc-{i}"), format!("{}\n\n", d.text)))
        .collect();
    modules.extend(with_fact.iter().enumerate().map(|(i, d)| {
        module(
            &format!("fact-{i}"),
            format!("{} {} lives in {}.\n\n", d.text, names[i], cities[i]),
        )
    }));
    let prompts = (0..o.prompts)
        .map(|_| {
            let fact = rng.random_range(0..o.pool);
            let mut chosen: Vec<String> = (0..o.pool)
                .collect::<Vec<_>>()
                .choose_multiple(rng, o.per_prompt.saturating_sub(1))
                .map(|i| format!("doc-{i}"))
                .collect();
            let at = rng.random_range(0..=chosen.len());
            chosen.insert(at, format!("fact-{fact}"));
            let mut others: Vec<usize> = (0..o.pool).filter(|&f| f != fact).collect();
            others.shuffle(rng);
            others.truncate(3);
            let answer = rng.random_range(0..=others.len());
            others.insert(answer, fact);
            let person = names[fact];
            PromptSpec {
                modules: chosen,
                text: format!("Question: where does {person} live?\nAnswer: {person} lives in"),
                choices: others.iter().map(|&i| format!(" {}", cities[i])).collect(),
                answer: Some(answer),
                ..PromptSpec::default()
            }
        })
        .collect();
    Ok(Workload {
        schema: Schema {
            name: format!("facts-{}", o.seed),
            preamble: None,
            modules,
        },
        prompts,
    })
}

fn module(name: &str, text: String) -> ModuleSpec {
    ModuleSpec {
        name: name.into(),
        text,
        union: None,
        params: Default::default(),
        role: None,
    }
}
