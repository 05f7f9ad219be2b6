//! `crdgen`: write the CustomResourceDefinitions of the paperbot.io resources,
//! generated from the Rust types, to `crds/manifests/` (plain YAML for
//! `kubectl apply`) and to the Helm chart's `charts/paperbot/templates/crds/`
//! (the same objects as templates: rendered only when `crds.create` is true,
//! annotated `helm.sh/resource-policy: keep`, with the chart's labels).
//!
//! ```text
//! cargo run -p paperbot-crds --bin crdgen            # regenerate the files
//! cargo run -p paperbot-crds --bin crdgen -- --check # exit 1 if any file is stale
//! cargo run -p paperbot-crds --bin crdgen -- --stdout | kubectl apply -f -
//! ```

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Parser;
use paperbot_crds::manifest;

/// Generate the paperbot CRD manifests from the Rust types.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Do not write anything: list the files that are missing or differ from
    /// what the types generate, and exit with status 1 if there are any.
    #[arg(long, conflicts_with = "stdout")]
    check: bool,
    /// Print all CRDs (plain YAML) to standard output as one multi-document
    /// YAML stream instead of writing files.
    #[arg(long)]
    stdout: bool,
    /// Workspace root the output directories (`crds/manifests`,
    /// `charts/paperbot/templates/crds`) are relative to.
    #[arg(long, default_value_os_t = default_root())]
    root: PathBuf,
}

/// The workspace this binary was built from.
fn default_root() -> PathBuf {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().map(PathBuf::from).unwrap_or(crate_dir)
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.stdout {
        let docs = manifest::manifests()?
            .into_iter()
            .map(|m| m.yaml)
            .collect::<Vec<_>>();
        print!("{}", docs.join("---\n"));
        return Ok(ExitCode::SUCCESS);
    }
    if args.check {
        let stale = manifest::stale(&args.root)
            .with_context(|| format!("checking the manifests under {}", args.root.display()))?;
        if stale.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("stale CRD manifests:");
        for file in &stale {
            eprintln!("  {file}");
        }
        eprintln!("regenerate them with `{}`", manifest::REGENERATE_COMMAND);
        return Ok(ExitCode::FAILURE);
    }
    let written = manifest::write_all(&args.root)
        .with_context(|| format!("writing the manifests under {}", args.root.display()))?;
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
