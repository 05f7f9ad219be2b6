//! The chart's values reference: every value of `charts/paperbot/values.yaml`
//! with its default and the description in its `# --` comment (the
//! helm-docs convention), rendered as the Markdown table of the chart's
//! README between [`BEGIN`] and [`END`].
//!
//! `cargo run -p paperbot-e2e --bin chart-values-doc` rewrites the table; the
//! chart tests fail when a value has no description, or when the README's
//! table differs from the one generated (a value added, renamed, removed,
//! re-described or with a new default).
//!
//! A `# --` comment documents the key on the line after it (continued by the
//! `#` lines that follow it directly). A documented key whose value is a map
//! is documented as a whole (its keys need no comment of their own); an
//! undocumented map is a section whose values each need one.

use std::{fmt, path::PathBuf};

/// First line of the generated table in the README.
pub const BEGIN: &str = "<!-- values:begin: generated from values.yaml by `cargo run -p paperbot-e2e --bin chart-values-doc`; do not edit -->";
/// Line after the generated table in the README.
pub const END: &str = "<!-- values:end -->";
/// The command that regenerates the table.
pub const REGENERATE_COMMAND: &str = "cargo run -p paperbot-e2e --bin chart-values-doc";

/// One documented value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    /// Dotted path, e.g. `ledger.storage.size`.
    pub key: String,
    /// The default as compact JSON, e.g. `"1Gi"`, `true`, `[]`.
    pub default: String,
    /// The `# --` comment's text.
    pub description: String,
}

/// What is wrong with values.yaml's documentation.
#[derive(Debug, PartialEq, Eq)]
pub enum DocError {
    /// values.yaml is not YAML, or not a mapping at the top.
    Yaml(String),
    /// Values without a `# --` description (dotted paths).
    Undocumented(Vec<String>),
    /// A `# --` comment that documents no key (the line after it is not a key).
    Dangling {
        /// 1-based line of the comment.
        line: usize,
    },
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Yaml(e) => write!(f, "values.yaml: {e}"),
            Self::Undocumented(keys) => write!(
                f,
                "values.yaml: no `# --` description for {} (add one on the line above each key)",
                keys.join(", ")
            ),
            Self::Dangling { line } => write!(
                f,
                "values.yaml line {line}: a `# --` comment must be directly above the key it documents"
            ),
        }
    }
}

impl std::error::Error for DocError {}

/// `charts/paperbot`.
pub fn chart_dir() -> PathBuf {
    crate::repo().join("charts/paperbot")
}

/// A key line: indentation and key, or None for anything else (list items,
/// comments, blank lines, continuation of a value).
fn key_line(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start_matches(' ');
    let indent = line.len() - trimmed.len();
    let (key, rest) = trimmed.split_once(':')?;
    let is_key = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && (rest.is_empty() || rest.starts_with(' '));
    is_key.then_some((indent, key))
}

/// The documented values of `text` (values.yaml), in file order.
///
/// # Errors
/// [`DocError`] when the text is not a YAML mapping, a `# --` comment is
/// not above a key, or a value has no description.
pub fn parse(text: &str) -> Result<Vec<Value>, DocError> {
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| DocError::Yaml(e.to_string()))?;
    if !yaml.is_mapping() {
        return Err(DocError::Yaml("the top level is not a mapping".into()));
    }
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut doc: Option<(usize, Vec<String>)> = None;
    let mut values = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("# --") {
            doc = Some((i + 1, vec![rest.trim().to_string()]));
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('#') {
            if let Some((_, lines)) = doc.as_mut() {
                lines.push(rest.trim().to_string());
            }
            continue;
        }
        if trimmed.is_empty() {
            if let Some((line, _)) = doc {
                return Err(DocError::Dangling { line });
            }
            continue;
        }
        let Some((indent, key)) = key_line(line) else {
            continue;
        };
        while stack.last().is_some_and(|(d, _)| *d >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        if let Some((_, lines)) = doc.take() {
            let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
            let default = lookup(&yaml, &path)
                .map(compact_json)
                .ok_or_else(|| DocError::Yaml(format!("{} not found", path.join("."))))?;
            values.push(Value {
                key: path.join("."),
                default,
                description: lines.join(" ").trim().to_string(),
            });
        }
    }
    if let Some((line, _)) = doc {
        return Err(DocError::Dangling { line });
    }
    let mut undocumented = Vec::new();
    leaves(&yaml, "", &mut |path| {
        let covered = values
            .iter()
            .any(|v| path == v.key || path.starts_with(&format!("{}.", v.key)));
        if !covered {
            undocumented.push(path.to_string());
        }
    });
    if !undocumented.is_empty() {
        return Err(DocError::Undocumented(undocumented));
    }
    Ok(values)
}

fn lookup<'a>(v: &'a serde_yaml::Value, path: &[&str]) -> Option<&'a serde_yaml::Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

/// Every leaf of `v` (a scalar, a list, an empty map), as a dotted path.
fn leaves(v: &serde_yaml::Value, prefix: &str, f: &mut impl FnMut(&str)) {
    match v.as_mapping() {
        Some(m) if !m.is_empty() => {
            for (k, child) in m {
                let k = k.as_str().map(str::to_owned).unwrap_or_else(|| {
                    serde_yaml::to_string(k)
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                });
                let path = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(child, &path, f);
            }
        }
        _ => f(prefix),
    }
}

/// A YAML value as compact JSON (map keys in file order).
fn compact_json(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::Mapping(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| {
                    let k =
                        serde_json::to_string(k.as_str().unwrap_or_default()).unwrap_or_default();
                    format!("{k}:{}", compact_json(v))
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        serde_yaml::Value::Sequence(s) => {
            format!(
                "[{}]",
                s.iter().map(compact_json).collect::<Vec<_>>().join(",")
            )
        }
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// The Markdown table of `values`, from [`BEGIN`] to [`END`] inclusive.
pub fn table(values: &[Value]) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let mut out = format!("{BEGIN}\n| value | default | description |\n|---|---|---|\n");
    for v in values {
        out.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            v.key,
            esc(&v.default),
            esc(&v.description)
        ));
    }
    out.push_str(END);
    out
}

/// The README with its table replaced by `table`; None when the README has
/// no [`BEGIN`]…[`END`] block.
pub fn with_table(readme: &str, table: &str) -> Option<String> {
    let start = readme.find(BEGIN)?;
    let end = readme[start..].find(END)? + start + END.len();
    Some(format!("{}{table}{}", &readme[..start], &readme[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# Heading comment, not a description.
crds:
  # -- Install the CRDs.
  create: true

# -- Pod annotations.
podAnnotations: {}

# -- Resources, documented as a whole
# and continued on a second line.
resources:
  requests: {cpu: 50m}

list:
  # -- A list | with a pipe.
  items:
    - a: 1
      b: 2
"#;

    #[test]
    fn documented_values_with_defaults_in_file_order() {
        let values = parse(SAMPLE).unwrap();
        let got: Vec<(&str, &str, &str)> = values
            .iter()
            .map(|v| (v.key.as_str(), v.default.as_str(), v.description.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("crds.create", "true", "Install the CRDs."),
                ("podAnnotations", "{}", "Pod annotations."),
                (
                    "resources",
                    r#"{"requests":{"cpu":"50m"}}"#,
                    "Resources, documented as a whole and continued on a second line."
                ),
                ("list.items", r#"[{"a":1,"b":2}]"#, "A list | with a pipe."),
            ]
        );
        let t = table(&values);
        assert!(t.contains("| `list.items` | `[{\"a\":1,\"b\":2}]` | A list \\| with a pipe. |"));
    }

    #[test]
    fn an_undocumented_value_is_named() {
        let text = format!("{SAMPLE}\nnew:\n  thing: 1\n  other: [x]\n");
        assert_eq!(
            parse(&text),
            Err(DocError::Undocumented(vec![
                "new.thing".into(),
                "new.other".into()
            ]))
        );
    }

    #[test]
    fn a_comment_above_nothing_is_refused() {
        assert_eq!(
            parse("a: 1\n# -- orphan\n\nb: 2\n"),
            Err(DocError::Dangling { line: 2 })
        );
    }

    #[test]
    fn the_table_replaces_only_the_generated_block() {
        let readme = format!("intro\n{BEGIN}\nold\n{END}\noutro\n");
        assert_eq!(
            with_table(&readme, &format!("{BEGIN}\nnew\n{END}")).unwrap(),
            format!("intro\n{BEGIN}\nnew\n{END}\noutro\n")
        );
        assert_eq!(with_table("no block", "x"), None);
    }
}
