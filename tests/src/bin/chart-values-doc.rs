//! `chart-values-doc`: rewrite the values table of `charts/paperbot/README.md`
//! from `charts/paperbot/values.yaml` (every value, its default and its `# --`
//! description). `--check` only reports whether the README is current.
//!
//! ```text
//! cargo run -p paperbot-e2e --bin chart-values-doc
//! cargo run -p paperbot-e2e --bin chart-values-doc -- --check
//! ```

use std::process::ExitCode;

use anyhow::Context as _;
use paperbot_e2e::chart_values::{self, BEGIN, END};

fn main() -> anyhow::Result<ExitCode> {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => anyhow::bail!("unknown argument {other:?}; expected nothing or --check"),
    };
    let dir = chart_values::chart_dir();
    let values_path = dir.join("values.yaml");
    let readme_path = dir.join("README.md");
    let text = std::fs::read_to_string(&values_path)
        .with_context(|| format!("reading {}", values_path.display()))?;
    let values = chart_values::parse(&text)?;
    let readme = std::fs::read_to_string(&readme_path)
        .with_context(|| format!("reading {}", readme_path.display()))?;
    let updated =
        chart_values::with_table(&readme, &chart_values::table(&values)).with_context(|| {
            format!(
                "{} has no values table: put the lines\n{BEGIN}\n{END}\nwhere it belongs",
                readme_path.display()
            )
        })?;
    if updated == readme {
        println!(
            "{} is current ({} values)",
            readme_path.display(),
            values.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if check {
        eprintln!(
            "{} is stale: regenerate it with `{}`",
            readme_path.display(),
            chart_values::REGENERATE_COMMAND
        );
        return Ok(ExitCode::FAILURE);
    }
    std::fs::write(&readme_path, updated)
        .with_context(|| format!("writing {}", readme_path.display()))?;
    println!("wrote {} ({} values)", readme_path.display(), values.len());
    Ok(ExitCode::SUCCESS)
}
