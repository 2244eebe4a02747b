//! The module store: every module of a schema run once on its own, its keys
//! (after RoPE, at its schema positions) and values for every layer kept in
//! f16, memory-mapped, under the discipline every attncache store shares
//! ([`crate::storage`]).
//!
//! Files: `manifest.json`; `schema.json` (the schema as read); `modules.json`
//! (the tokenized modules: segments, positions, rows, offsets); `kv.bin`
//! (f16 LE; module `m` of `R` rows holds `[L][2][R][Hkv·d]` — keys then
//! values per layer — from its offset).

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

use super::error::StoreError;
use super::layout::{ModuleTokens, TokenizedSchema};
use super::schema::Schema;
use crate::model::Model;
use crate::model::llama::{KvCache, LlamaDecoder, RowPass};
use crate::storage::{FileRecord, ModelIdentity, StagedDir, check_files, read_json, verify_files};

/// Version of the on-disk format; a store of another version is refused.
pub const STORE_VERSION: u32 = 1;

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
}

/// An open, checked module store.
pub struct ModuleStore {
    dir: PathBuf,
    manifest: StoreManifest,
    schema: Schema,
    tokenized: TokenizedSchema,
    offsets: Vec<u64>,
    kv: Mmap,
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
}

/// The decoder of `model`, or the one-line refusal for an encoder.
pub fn decoder_of(model: &Model) -> anyhow::Result<&LlamaDecoder> {
    model.decoder().ok_or_else(|| {
        anyhow::anyhow!(
            "module reuse needs a decoder (pass --model smollm2): an encoder's bidirectional attention lets every token see the whole input, so no module's keys and values can be computed apart"
        )
    })
}

/// Runs every module of `schema` on its own (at its schema positions) and
/// stores its keys and values at `out`. `progress(done, total)` after each
/// module; setting `cancel` stops the build and leaves any store at `out`
/// untouched.
pub fn build_store(
    model: &Model,
    schema: &Schema,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &AtomicBool,
) -> anyhow::Result<StoreSummary> {
    let decoder = decoder_of(model)?;
    if !model.device().is_cpu() {
        bail!("module stores are built on the CPU: pass --device cpu");
    }
    let identity = ModelIdentity::of(model)?;
    let tokenized = TokenizedSchema::new(schema, &model.tokenizer)?;
    let max = decoder.shape().max_positions;
    if let Some(m) = tokenized.modules.iter().find(|m| m.offset + m.span > max) {
        bail!(
            "module {:?} ends at position {}, past the model's context of {max}: shorten the schema",
            m.name,
            m.offset + m.span
        );
    }
    let staged = StagedDir::new(out)?;
    let mut kv_file = BufWriter::new(File::create(staged.path().join("kv.bin"))?);
    let mut stored = Vec::with_capacity(tokenized.modules.len());
    let (mut offset, mut buf) = (0u64, Vec::<f16>::new());
    let total = tokenized.modules.len();
    for (done, module) in tokenized.modules.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            bail!(
                "build cancelled; the store at {} is unchanged",
                out.display()
            );
        }
        let kv = encode_module(decoder, module)?;
        for layer in &kv.layers {
            for values in [&layer.k, &layer.v] {
                buf.resize(values.len(), f16::ZERO);
                buf.convert_from_f32_slice(values);
                kv_file.write_all(bytemuck::cast_slice(&buf))?;
            }
        }
        stored.push(StoredModule {
            tokens: module.clone(),
            kv_offset: offset,
        });
        offset += (kv.layers.len() * 2 * module.rows * kv.width) as u64;
        progress(done + 1, total);
    }
    kv_file
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
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
        bail!(
            "build cancelled; the store at {} is unchanged",
            out.display()
        );
    }
    staged.commit(STORE_KIND)?;
    Ok(StoreSummary {
        dir: out.to_path_buf(),
        modules: stored.len(),
        tokens,
        bytes,
    })
}

/// A module's keys and values in f32, encoded on its own at its schema
/// positions (rows are its text tokens; reserved parameter positions are
/// gaps).
pub fn encode_module(decoder: &LlamaDecoder, module: &ModuleTokens) -> anyhow::Result<KvCache> {
    let ids = module.stored_ids();
    let positions = module.stored_positions();
    let computed: Vec<usize> = (0..ids.len()).collect();
    let mut kv = decoder.kv_cache(ids.len());
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
        let tokenized = TokenizedSchema {
            modules: stored.into_iter().map(|m| m.tokens).collect(),
            end,
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            schema,
            tokenized,
            offsets,
            kv,
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

    /// Copies stored rows `rows` of `module` in every layer into rows
    /// `at..` of `kv` (f16 → f32), checking that they are finite.
    pub fn load_rows(
        &self,
        module: usize,
        rows: std::ops::Range<usize>,
        kv: &mut KvCache,
        at: usize,
    ) -> Result<(), StoreError> {
        let m = &self.tokenized.modules[module];
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
        let all: &[f16] = bytemuck::cast_slice(&self.kv[..self.kv.len() / 2 * 2]);
        let base = self.offsets[module] as usize;
        let (n, count) = (m.rows, rows.len());
        for (l, layer) in kv.layers.iter_mut().enumerate() {
            for (half, dst) in [&mut layer.k, &mut layer.v].into_iter().enumerate() {
                let block = base + (l * 2 + half) * n * w;
                let src = &all[block + rows.start * w..block + rows.end * w];
                let dst = &mut dst[at * w..(at + count) * w];
                src.convert_to_f32_slice(dst);
                if !dst.iter().all(|x| x.is_finite()) {
                    return Err(StoreError::Corrupt {
                        dir: self.dir.clone(),
                        detail: format!(
                            "kv.bin holds non-finite values in module {:?} layer {l}",
                            m.name
                        ),
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
