//! The module store: every module of a schema run once on its own, its keys
//! (after RoPE, at its schema positions) and values for every layer kept in
//! f16, memory-mapped, under the discipline every attncache store shares
//! ([`crate::storage`]).
//!
//! Files: `manifest.json` (with the encoding, chat flag and preamble tokens);
//! `schema.json` (the schema as read); `modules.json` (the tokenized modules:
//! segments, positions, rows, offsets, content keys); `kv.bin` (f16 LE; a
//! block of `R` rows holds `[L][2][R][Hkv·d]` — keys then values per layer —
//! from its offset: the preamble's first in a `prefixed` store, then every
//! module's).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::bail;
use half::f16;
use half::slice::HalfFloatSliceExt;
use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use super::device_rows::ResidentRows;
use super::error::StoreError;
use super::layout::{Block, EncodeOptions, Encoding, ModuleTokens, TokenizedSchema};
use super::schema::Schema;
use crate::model::Model;
use crate::model::llama::{KvCache, LlamaDecoder, RowPass};
use crate::storage::{FileRecord, ModelIdentity, StagedDir, check_files, read_json, verify_files};

/// Version of the on-disk format; a store of another version is refused.
/// (2: the encoding and the preamble; stores of version 1 are refused with
/// a line saying how to rebuild.)
pub const STORE_VERSION: u32 = 2;

/// What a module store is, in messages.
pub const STORE_KIND: &str = "an attncache module store";

/// The data files every store holds (besides `manifest.json`).
const DATA_FILES: [&str; 3] = ["schema.json", "modules.json", "kv.bin"];

/// `manifest.json` of a module store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreManifest {
    /// Always [`STORE_KIND`].
    pub kind: String,
    /// [`STORE_VERSION`] at build time.
    pub format_version: u32,
    /// The model the keys and values came from.
    pub model: ModelIdentity,
    /// The schema's name.
    pub schema_name: String,
    /// sha256 of the schema's content ([`Schema::sha256`]).
    pub schema_sha256: String,
    /// How the modules were encoded.
    pub encoding: Encoding,
    /// Built for chat prompts.
    pub chat: bool,
    /// The preamble's tokens (stored once in a `prefixed` store).
    pub preamble: Vec<u32>,
    /// Storage type (always `f16`).
    pub kv_dtype: String,
    /// Modules stored.
    pub modules: usize,
    /// Rows stored, all modules together.
    pub tokens: usize,
    /// Key (or value) width per row: key/value heads × head width.
    pub kv_width: usize,
    /// Bytes per stored token: layers × 2 × key/value heads × head width × 2.
    pub bytes_per_token: usize,
    /// Every data file, by name.
    pub files: BTreeMap<String, FileRecord>,
    /// attncache version that built it.
    pub built_by: String,
}

/// A stored module: its tokens and where its keys and values are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredModule {
    /// The module tokenized and placed.
    #[serde(flatten)]
    pub tokens: ModuleTokens,
    /// Offset of its keys and values in `kv.bin`, in f16 values.
    pub kv_offset: u64,
    /// sha256 of what its rows depend on (tokens, preamble, positions,
    /// encoding): a rebuild copies a module whose key is unchanged.
    pub content_sha256: String,
}

/// An open, checked module store.
pub struct ModuleStore {
    dir: PathBuf,
    manifest: StoreManifest,
    schema: Schema,
    tokenized: TokenizedSchema,
    offsets: Vec<u64>,
    keys: Vec<String>,
    kv: Mmap,
    /// Every stored row in device memory, once made resident.
    resident: Option<ResidentRows>,
}

impl std::fmt::Debug for ModuleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleStore")
            .field("dir", &self.dir)
            .field("modules", &self.manifest.modules)
            .finish_non_exhaustive()
    }
}

/// What a finished build holds.
#[derive(Debug, Clone, Serialize)]
pub struct StoreSummary {
    /// Where the store now is.
    pub dir: PathBuf,
    /// Modules stored.
    pub modules: usize,
    /// Rows stored.
    pub tokens: usize,
    /// Bytes on disk.
    pub bytes: u64,
    /// How the modules were encoded.
    pub encoding: Encoding,
    /// Tokens of the preamble.
    pub preamble_tokens: usize,
    /// Modules encoded by this build.
    pub encoded: usize,
    /// Modules copied unchanged from the store that was at `--out`.
    pub reused: usize,
}

/// The decoder of `model`, or the one-line refusal for an encoder.
pub fn decoder_of(model: &Model) -> anyhow::Result<&LlamaDecoder> {
    model.decoder().ok_or_else(|| {
        anyhow::anyhow!(
            "module reuse needs a decoder (pass --model smollm2 or qwen2.5-0.5b): an encoder's bidirectional attention lets every token see the whole input, so no module's keys and values can be computed apart"
        )
    })
}

/// How a store is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// Prefixed (after the preamble) or alone (at schema positions).
    pub encoding: Encoding,
    /// For chat prompts (the model's chat template's header is the
    /// preamble's start).
    pub chat: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            encoding: Encoding::Prefixed,
            chat: false,
        }
    }
}

/// sha256 of what a module's stored rows depend on besides the model: the
/// format version, the encoding, the preamble's tokens, the module's tokens
/// and the positions they were encoded at (integers little-endian).
fn content_key(tokenized: &TokenizedSchema, module: &ModuleTokens) -> String {
    let mut h = Sha256::new();
    h.update(STORE_VERSION.to_le_bytes());
    h.update(tokenized.encoding.name().as_bytes());
    let words = |h: &mut Sha256, xs: &mut dyn Iterator<Item = u32>| {
        let xs: Vec<u32> = xs.collect();
        h.update((xs.len() as u32).to_le_bytes());
        xs.iter().for_each(|x| h.update(x.to_le_bytes()));
    };
    words(&mut h, &mut tokenized.preamble.iter().copied());
    words(&mut h, &mut module.stored_ids().into_iter());
    words(
        &mut h,
        &mut tokenized
            .encoded_positions(module)
            .into_iter()
            .map(|p| p as u32),
    );
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the preamble once and every module of `schema` after it (`prefixed`)
/// or on its own at its schema positions (`alone`), and stores their keys and
/// values at `out`, one module at a time (memory bounded by one module).
/// Modules whose content key matches one in a store already at `out` (same
/// model) are copied from it instead of encoded. `progress(done, total)`
/// after each module; setting `cancel` stops the build and leaves any store
/// at `out` untouched.
pub fn build_store(
    model: &Model,
    schema: &Schema,
    out: &Path,
    options: BuildOptions,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &AtomicBool,
) -> anyhow::Result<StoreSummary> {
    let decoder = decoder_of(model)?;
    let identity = ModelIdentity::of(model)?;
    let tokenized = TokenizedSchema::new(
        schema,
        &model.tokenizer,
        EncodeOptions {
            encoding: options.encoding,
            chat: options.chat.then_some(decoder.chat()),
        },
    )?;
    check_bound(&tokenized, decoder.shape().max_positions)?;
    let previous = ModuleStore::open(out, &identity).ok();
    let reusable: BTreeMap<&str, usize> = previous
        .iter()
        .flat_map(|p| p.keys.iter().enumerate().map(|(i, k)| (k.as_str(), i)))
        .collect();
    let cancelled = || {
        anyhow::anyhow!(
            "build cancelled; the store at {} is unchanged",
            out.display()
        )
    };
    let staged = StagedDir::new(out)?;
    let mut kv_file = BufWriter::new(File::create(staged.path().join("kv.bin"))?);
    let mut buf = Vec::<f16>::new();
    let mut write = |kv: &KvCache, file: &mut BufWriter<File>| -> std::io::Result<u64> {
        for layer in &kv.layers {
            for values in [&layer.k, &layer.v] {
                buf.resize(values.len(), f16::ZERO);
                buf.convert_from_f32_slice(values);
                file.write_all(bytemuck::cast_slice(&buf))?;
            }
        }
        Ok((kv.layers.len() * 2 * kv.rows() * kv.width) as u64)
    };
    let preamble = match tokenized.encoding {
        Encoding::Prefixed if !tokenized.preamble.is_empty() => {
            let kv = encode_preamble(decoder, &tokenized.preamble)?;
            write(&kv, &mut kv_file)?;
            Some(kv)
        }
        _ => None,
    };
    let mut offset = preamble
        .as_ref()
        .map_or(0, |kv| (kv.layers.len() * 2 * kv.rows() * kv.width) as u64);
    let mut stored = Vec::with_capacity(tokenized.modules.len());
    let (total, mut reused) = (tokenized.modules.len(), 0);
    for (done, module) in tokenized.modules.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(cancelled());
        }
        let key = content_key(&tokenized, module);
        let values = match (&previous, reusable.get(key.as_str())) {
            (Some(p), Some(&i)) => {
                kv_file.write_all(p.module_bytes(i))?;
                reused += 1;
                p.module_bytes(i).len() as u64 / 2
            }
            _ => {
                let kv = encode_module(decoder, &tokenized, module, preamble.as_ref())?;
                write(&kv, &mut kv_file)?
            }
        };
        stored.push(StoredModule {
            tokens: module.clone(),
            kv_offset: offset,
            content_sha256: key,
        });
        offset += values;
        progress(done + 1, total);
    }
    kv_file
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    drop(previous);
    std::fs::write(
        staged.path().join("schema.json"),
        serde_json::to_vec_pretty(schema)?,
    )?;
    std::fs::write(
        staged.path().join("modules.json"),
        serde_json::to_vec(&stored)?,
    )?;
    let files = FileRecord::all(staged.path(), DATA_FILES)?;
    let bytes = files.values().map(|f| f.bytes).sum();
    let tokens = stored.iter().map(|m| m.tokens.rows).sum();
    let manifest = StoreManifest {
        kind: STORE_KIND.into(),
        format_version: STORE_VERSION,
        model: identity,
        schema_name: schema.name.clone(),
        schema_sha256: schema.sha256(),
        encoding: tokenized.encoding,
        chat: tokenized.chat,
        preamble: tokenized.preamble.clone(),
        kv_dtype: "f16".into(),
        modules: stored.len(),
        tokens,
        kv_width: decoder.kv_width(),
        bytes_per_token: decoder.shape().layers * 2 * decoder.kv_width() * 2,
        files,
        built_by: format!("attncache {}", env!("CARGO_PKG_VERSION")),
    };
    std::fs::write(
        staged.path().join("manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    if cancel.load(Ordering::Relaxed) {
        return Err(cancelled());
    }
    staged.commit(STORE_KIND)?;
    Ok(StoreSummary {
        dir: out.to_path_buf(),
        modules: stored.len(),
        tokens,
        bytes,
        encoding: tokenized.encoding,
        preamble_tokens: tokenized.preamble.len(),
        encoded: total - reused,
        reused,
    })
}

/// Fails when a module cannot be encoded within the model's context: at its
/// schema positions (`alone`, the paper's bound on the whole schema) or after
/// the preamble (`prefixed`, a bound on each module alone).
fn check_bound(tokenized: &TokenizedSchema, max: usize) -> anyhow::Result<()> {
    for m in &tokenized.modules {
        let end = tokenized.encoded_at(m) + m.span;
        if end > max {
            match tokenized.encoding {
                Encoding::Alone => bail!(
                    "module {:?} ends at position {end}, past the model's context of {max}: an alone store encodes every module at its schema position (the paper's bound on the whole schema); build with --encode prefixed for a library of any size, or shorten the schema",
                    m.name
                ),
                Encoding::Prefixed => bail!(
                    "module {:?} needs {end} positions after the preamble, more than the model's context of {max}: split it",
                    m.name
                ),
            }
        }
    }
    Ok(())
}

/// The preamble's keys and values in f32, at positions `0..len`.
pub fn encode_preamble(decoder: &LlamaDecoder, ids: &[u32]) -> anyhow::Result<KvCache> {
    let all: Vec<usize> = (0..ids.len()).collect();
    let mut kv = decoder.prompt_kv(ids.len())?;
    decoder.forward_rows(
        RowPass {
            ids,
            positions: &all,
            computed: &all,
            select: None,
            capture: &[],
        },
        &mut kv,
    )?;
    Ok(kv.into_host()?)
}

/// A module's keys and values in f32 as `tokenized` encodes it: after the
/// `preamble`'s keys and values (`prefixed`; `None` when there is none) or on
/// its own at its schema positions (`alone`). Rows are its text tokens;
/// reserved parameter positions are gaps.
pub fn encode_module(
    decoder: &LlamaDecoder,
    tokenized: &TokenizedSchema,
    module: &ModuleTokens,
    preamble: Option<&KvCache>,
) -> anyhow::Result<KvCache> {
    let p = preamble.map_or(0, KvCache::rows);
    let ids: Vec<u32> = tokenized.preamble[..p]
        .iter()
        .copied()
        .chain(module.stored_ids())
        .collect();
    let positions: Vec<usize> = (0..p).chain(tokenized.encoded_positions(module)).collect();
    let computed: Vec<usize> = (p..ids.len()).collect();
    let mut kv = decoder.kv_cache(ids.len());
    if let Some(pre) = preamble {
        let w = kv.width;
        for (dst, src) in kv.layers.iter_mut().zip(&pre.layers) {
            dst.k[..p * w].copy_from_slice(&src.k[..p * w]);
            dst.v[..p * w].copy_from_slice(&src.v[..p * w]);
        }
    }
    let mut kv = decoder.prompt_kv_from(kv)?;
    decoder.forward_rows(
        RowPass {
            ids: &ids,
            positions: &positions,
            computed: &computed,
            select: None,
            capture: &[],
        },
        &mut kv,
    )?;
    let mut kv = kv.into_host()?;
    if p > 0 {
        let w = kv.width;
        for layer in &mut kv.layers {
            layer.k.drain(..p * w);
            layer.v.drain(..p * w);
            layer.len -= p;
        }
    }
    Ok(kv)
}

impl ModuleStore {
    /// Opens the store at `dir` for `model`, refusing one built for another
    /// model.
    pub fn open(dir: &Path, model: &ModelIdentity) -> Result<Self, StoreError> {
        let store = Self::open_any(dir)?;
        if !store.manifest.model.same_model(model) {
            return Err(StoreError::WrongModel {
                dir: dir.to_path_buf(),
                built_for: store.manifest.model.describe(),
                model: model.describe(),
            });
        }
        Ok(store)
    }

    /// Opens and checks the store without comparing models (`db-info`).
    pub fn open_any(dir: &Path) -> Result<Self, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            dir: dir.to_path_buf(),
            detail,
        };
        let manifest_path = dir.join("manifest.json");
        if !manifest_path.is_file() {
            return Err(StoreError::NotAStore(dir.to_path_buf()));
        }
        let manifest: StoreManifest = read_json(dir, "manifest.json").map_err(corrupt)?;
        if manifest.kind != STORE_KIND {
            return Err(StoreError::NotAStore(dir.to_path_buf()));
        }
        if manifest.format_version != STORE_VERSION {
            return Err(StoreError::WrongVersion {
                dir: dir.to_path_buf(),
                found: manifest.format_version,
                expected: STORE_VERSION,
            });
        }
        check_files(dir, &manifest.files, &DATA_FILES, &["kv.bin"]).map_err(corrupt)?;
        let schema: Schema = read_json(dir, "schema.json").map_err(corrupt)?;
        let stored: Vec<StoredModule> = read_json(dir, "modules.json").map_err(corrupt)?;
        if schema.sha256() != manifest.schema_sha256 || stored.len() != schema.modules.len() {
            return Err(corrupt("schema.json does not match the manifest".into()));
        }
        let shape = manifest.model.shape;
        let width = manifest.kv_width;
        let file = File::open(dir.join("kv.bin")).map_err(|e| corrupt(format!("kv.bin: {e}")))?;
        // SAFETY: read-only map of a finished store; attncache never writes a
        // store in place (rebuilds write a new directory and swap it in).
        let kv = unsafe { Mmap::map(&file) }.map_err(|e| corrupt(format!("kv.bin: {e}")))?;
        let values = kv.len() as u64 / 2;
        let preamble_rows = match manifest.encoding {
            Encoding::Prefixed => manifest.preamble.len(),
            Encoding::Alone => 0,
        };
        if (shape.layers * 2 * preamble_rows * width) as u64 > values {
            return Err(corrupt("the preamble points outside kv.bin".into()));
        }
        for m in &stored {
            let need = (shape.layers * 2 * m.tokens.rows * width) as u64;
            if m.kv_offset + need > values {
                return Err(corrupt(format!(
                    "module {:?} points outside kv.bin",
                    m.tokens.name
                )));
            }
        }
        let end = stored
            .iter()
            .map(|m| m.tokens.offset + m.tokens.span)
            .max()
            .unwrap_or(0);
        let offsets = stored.iter().map(|m| m.kv_offset).collect();
        let keys = stored.iter().map(|m| m.content_sha256.clone()).collect();
        let tokenized = TokenizedSchema {
            modules: stored.into_iter().map(|m| m.tokens).collect(),
            end,
            encoding: manifest.encoding,
            chat: manifest.chat,
            preamble: manifest.preamble.clone(),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            schema,
            tokenized,
            offsets,
            keys,
            kv,
            resident: None,
        })
    }

    /// Fails unless the store was built from `schema` (same content).
    pub fn check_schema(&self, schema: &Schema, path: &Path) -> Result<(), StoreError> {
        if schema.sha256() != self.manifest.schema_sha256 {
            return Err(StoreError::WrongSchema {
                dir: self.dir.clone(),
                built_from: format!(
                    "{} (sha256 {})",
                    self.manifest.schema_name,
                    &self.manifest.schema_sha256[..12]
                ),
                schema: format!("{} (sha256 {})", path.display(), &schema.sha256()[..12]),
            });
        }
        Ok(())
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its manifest.
    pub fn manifest(&self) -> &StoreManifest {
        &self.manifest
    }

    /// The schema it was built from.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Its modules, tokenized and placed.
    pub fn tokenized(&self) -> &TokenizedSchema {
        &self.tokenized
    }

    /// Total size of the store files in bytes.
    pub fn size_on_disk(&self) -> u64 {
        self.manifest.files.values().map(|f| f.bytes).sum()
    }

    /// The f16 values in `kv.bin`.
    fn values(&self) -> &[f16] {
        bytemuck::cast_slice(&self.kv[..self.kv.len() / 2 * 2])
    }

    /// Rows stored for `block`, and the offset of its values.
    fn block(&self, block: Block) -> (usize, usize, &str) {
        match block {
            Block::Preamble => (self.tokenized.preamble.len(), 0, "the preamble"),
            Block::Module(m) => (
                self.tokenized.modules[m].rows,
                self.offsets[m] as usize,
                &self.tokenized.modules[m].name,
            ),
        }
    }

    /// The stored f16 bytes of module `module` (every layer), as `kv.bin`
    /// holds them.
    fn module_bytes(&self, module: usize) -> &[u8] {
        let (rows, base, _) = self.block(Block::Module(module));
        let n = self.manifest.model.shape.layers * 2 * rows * self.manifest.kv_width;
        bytemuck::cast_slice(&self.values()[base..base + n])
    }

    /// Layers stored.
    pub(super) fn layer_count(&self) -> usize {
        self.manifest.model.shape.layers
    }

    /// Rows stored for `block`.
    pub(super) fn block_rows(&self, block: Block) -> usize {
        self.block(block).0
    }

    /// Copies stored rows `rows` of `block` as stored (f16) into rows `at..`
    /// of `dst`, a `[layers, 2, dst_rows, width]` buffer.
    pub(super) fn copy_rows(
        &self,
        block: Block,
        rows: std::ops::Range<usize>,
        (dst, dst_rows): (&mut [f16], usize),
        at: usize,
    ) -> Result<(), StoreError> {
        let w = self.manifest.kv_width;
        if dst.len() != self.layer_count() * 2 * dst_rows * w || at + rows.len() > dst_rows {
            return Err(self.corrupt("a gather does not fit its buffer".into()));
        }
        let all = self.values();
        let (n, base, _) = self.block(block);
        for half in 0..self.layer_count() * 2 {
            let src = base + half * n * w;
            let to = (half * dst_rows + at) * w;
            dst[to..to + rows.len() * w]
                .copy_from_slice(&all[src + rows.start * w..src + rows.end * w]);
        }
        Ok(())
    }

    /// Fails on any value that is not finite.
    pub(super) fn check_finite(&self, values: &[f16]) -> Result<(), StoreError> {
        match values.iter().all(|x| x.is_finite()) {
            true => Ok(()),
            false => Err(self.corrupt("kv.bin holds non-finite values".into())),
        }
    }

    /// The store's rows in device memory, if made resident.
    pub fn resident(&self) -> Option<&ResidentRows> {
        self.resident.as_ref()
    }

    pub(super) fn set_resident(&mut self, rows: ResidentRows) {
        self.resident = Some(rows);
    }

    /// A corrupt-store error naming `detail`.
    pub(super) fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            dir: self.dir.clone(),
            detail,
        }
    }

    /// Copies stored rows `rows` of `block` in every layer into rows `at..`
    /// of `kv` (f16 → f32), checking that they are finite.
    pub fn load_rows(
        &self,
        block: Block,
        rows: std::ops::Range<usize>,
        kv: &mut KvCache,
        at: usize,
    ) -> Result<(), StoreError> {
        let w = kv.width;
        if w != self.manifest.kv_width || kv.layers.len() != self.manifest.model.shape.layers {
            return Err(StoreError::Corrupt {
                dir: self.dir.clone(),
                detail: format!(
                    "it stores {} layers of width {}, the model has {} of width {w}",
                    self.manifest.model.shape.layers,
                    self.manifest.kv_width,
                    kv.layers.len()
                ),
            });
        }
        let all = self.values();
        let (n, base, name) = self.block(block);
        let count = rows.len();
        for (l, layer) in kv.layers.iter_mut().enumerate() {
            for (half, dst) in [&mut layer.k, &mut layer.v].into_iter().enumerate() {
                let block = base + (l * 2 + half) * n * w;
                let src = &all[block + rows.start * w..block + rows.end * w];
                let dst = &mut dst[at * w..(at + count) * w];
                src.convert_to_f32_slice(dst);
                if !dst.iter().all(|x| x.is_finite()) {
                    return Err(StoreError::Corrupt {
                        dir: self.dir.clone(),
                        detail: format!("kv.bin holds non-finite values in {name:?} layer {l}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Re-reads every file against its checksum, `kv.bin` included.
    pub fn verify(&self) -> Result<(), StoreError> {
        verify_files(&self.dir, &self.manifest.files).map_err(|detail| StoreError::Corrupt {
            dir: self.dir.clone(),
            detail,
        })
    }
}
