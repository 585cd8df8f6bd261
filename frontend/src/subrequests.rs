//! Answers to subrequests: questions a client asks instead of a build
//! (`docker buildx build --call targets`, `--print outline`).
//!
//! The request names, versions and JSON shapes are BuildKit's
//! (`frontend/subrequests/`: `describe.go`, `targets/targets.go`,
//! `outline/outline.go`), because buildx decodes `result.json` with those Go
//! types and prints it itself; `result.txt` is the same answer as text for
//! clients that only print. The answer is a `Result` with metadata and no refs.

use std::collections::BTreeMap;

use kiln_compiler::{Compilation, Options};
use kiln_proto::gateway;
use serde::Serialize;

use crate::failure::Failure;

pub const DESCRIBE: &str = "frontend.subrequests.describe";
pub const TARGETS: &str = "frontend.targets";
pub const OUTLINE: &str = "frontend.outline";

/// Every subrequest kiln answers, with its version.
const VERSION: &str = "1.0.0";

/// `subrequests.Request`.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub name: &'static str,
    pub version: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub description: &'static str,
    pub opts: Vec<Named>,
    pub inputs: Vec<Named>,
    pub metadata: Vec<Named>,
    pub refs: Vec<Named>,
}

/// `subrequests.Named`.
#[derive(Debug, Clone, Serialize)]
pub struct Named {
    pub name: &'static str,
    pub description: &'static str,
}

fn result_metadata() -> Vec<Named> {
    vec![
        Named {
            name: "result.json",
            description: "",
        },
        Named {
            name: "result.txt",
            description: "",
        },
    ]
}

fn request(name: &'static str, description: &'static str, opts: Vec<Named>) -> Request {
    Request {
        name,
        version: VERSION,
        kind: "rpc",
        description,
        opts,
        inputs: Vec::new(),
        metadata: result_metadata(),
        refs: Vec::new(),
    }
}

/// The subrequests kiln answers, as `frontend.subrequests.describe` lists them.
pub fn supported() -> Vec<Request> {
    vec![
        request(
            OUTLINE,
            "List all parameters current build target supports",
            vec![Named {
                name: "target",
                description: "Target build stage",
            }],
        ),
        request(
            TARGETS,
            "List all targets current build supports",
            Vec::new(),
        ),
        request(DESCRIBE, "List available subrequest types", Vec::new()),
    ]
}

/// `targets.Target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// `targets.List`.
#[derive(Debug, Clone, Serialize)]
pub struct TargetList {
    pub targets: Vec<Target>,
}

/// `outline.Outline`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outline {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<OutlineArg>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<OutlineSecret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlineArg {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlineSecret {
    pub name: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

/// The recipe's variants. A recipe without variants has one target, the
/// name the compiler accepts for it.
pub fn targets(compilation: &Compilation) -> TargetList {
    let recipe = &compilation.recipe;
    let default = recipe.default_variant().map(|v| v.name.value.clone());
    let targets = if recipe.variants.is_empty() {
        vec![Target {
            name: "default".to_string(),
            default: true,
            description: String::new(),
        }]
    } else {
        recipe
            .variants
            .iter()
            .map(|v| Target {
                name: v.name.value.clone(),
                default: default.as_deref() == Some(v.name.value.as_str()),
                description: v.description.clone().unwrap_or_default(),
            })
            .collect()
    };
    TargetList { targets }
}

/// The parameters of the target `opts` selects: the recipe's build
/// arguments and the build secrets its steps mount.
pub fn outline(compilation: &Compilation, opts: &Options) -> Result<Outline, Failure> {
    let (plans, _) = compilation.plan(opts).map_err(Failure::Recipe)?;
    // The value this build would use, as the Dockerfile frontend shows it:
    // the `--build-arg` given, else the default as substituted.
    let values = compilation.arg_values(opts);
    let mut out = Outline {
        args: compilation
            .recipe
            .args
            .iter()
            .map(|a| OutlineArg {
                name: a.name.value.clone(),
                description: String::new(),
                value: values.get(&a.name.value).cloned().unwrap_or_default(),
            })
            .collect(),
        ..Outline::default()
    };
    // Secret name -> required; a secret any platform requires is required.
    let mut secrets: BTreeMap<String, bool> = BTreeMap::new();
    for plan in &plans {
        out.name = plan.variant.clone();
        out.description = plan.description.clone().unwrap_or_default();
        if let Some(id) = &plan.ca_bundle {
            // The CA bundle mount is optional: builds without it still run.
            secrets.entry(id.clone()).or_insert(false);
        }
        for id in plan.indexes.iter().filter_map(|i| i.secret.as_ref()) {
            secrets.insert(id.clone(), true);
        }
        for id in plan.runs.iter().filter_map(|r| r.value.secret.as_ref()) {
            secrets.insert(id.clone(), true);
        }
    }
    out.secrets = secrets
        .into_iter()
        .map(|(name, required)| OutlineSecret { name, required })
        .collect();
    Ok(out)
}

/// Lay out rows in columns the way Go's `text/tabwriter` does with
/// `minwidth 0, tabwidth 0, padding`: every cell but a row's last is padded
/// to its column's widest cell plus `padding` spaces.
fn columns(rows: &[Vec<String>], padding: usize) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(max) => *max = (*max).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] + padding - cell.chars().count();
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_string()).collect()
}

fn describe_text(requests: &[Request]) -> String {
    let mut rows = vec![row(&["NAME", "VERSION", "DESCRIPTION"])];
    for r in requests {
        let name = r.name.strip_prefix("frontend.").unwrap_or(r.name);
        rows.push(row(&[name, r.version, r.description]));
    }
    columns(&rows, 1)
}

fn targets_text(list: &TargetList) -> String {
    let mut rows = vec![row(&["TARGET", "DESCRIPTION"])];
    for t in &list.targets {
        let name = if t.default {
            format!("{} (default)", t.name)
        } else {
            t.name.clone()
        };
        rows.push(vec![name, t.description.clone()]);
    }
    columns(&rows, 1)
}

fn outline_text(o: &Outline) -> String {
    let mut out = String::new();
    if !o.name.is_empty() || !o.description.is_empty() {
        let mut rows = vec![row(&["TARGET:", &o.name])];
        if !o.description.is_empty() {
            rows.push(row(&["DESCRIPTION:", &o.description]));
        }
        out.push_str(&columns(&rows, 1));
        out.push('\n');
    }
    if !o.args.is_empty() {
        let mut rows = vec![row(&["BUILD ARG", "VALUE", "DESCRIPTION"])];
        rows.extend(
            o.args
                .iter()
                .map(|a| vec![a.name.clone(), a.value.clone(), a.description.clone()]),
        );
        out.push_str(&columns(&rows, 3));
        out.push('\n');
    }
    if !o.secrets.is_empty() {
        let mut rows = vec![row(&["SECRET", "REQUIRED"])];
        rows.extend(o.secrets.iter().map(|s| {
            vec![
                s.name.clone(),
                if s.required {
                    "true".into()
                } else {
                    String::new()
                },
            ]
        }));
        out.push_str(&columns(&rows, 3));
        out.push('\n');
    }
    out
}

/// A subrequest's `Result`: `result.json`, `result.txt` and `version`.
fn answer(json: Vec<u8>, text: String) -> gateway::Result {
    gateway::Result {
        metadata: BTreeMap::from([
            ("result.json".to_string(), json),
            ("result.txt".to_string(), text.into_bytes()),
            ("version".to_string(), VERSION.as_bytes().to_vec()),
        ]),
        ..Default::default()
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec_pretty(value)
        .map_err(|e| Failure::Internal(format!("encoding a subrequest answer: {e}")))
}

/// The answer to `frontend.subrequests.describe`; needs no recipe.
pub fn describe_result() -> Result<gateway::Result, Failure> {
    let requests = supported();
    Ok(answer(to_json(&requests)?, describe_text(&requests)))
}

/// Answer the subrequest `id` about a loaded recipe.
pub fn answer_for(
    id: &str,
    compilation: &Compilation,
    opts: &Options,
) -> Result<gateway::Result, Failure> {
    match id {
        DESCRIBE => describe_result(),
        TARGETS => {
            let list = targets(compilation);
            Ok(answer(to_json(&list)?, targets_text(&list)))
        }
        OUTLINE => {
            let o = outline(compilation, opts)?;
            Ok(answer(to_json(&o)?, outline_text(&o)))
        }
        other => Err(unsupported(other)),
    }
}

/// The error for a subrequest kiln does not answer (e.g. `frontend.lint`).
pub fn unsupported(id: &str) -> Failure {
    Failure::Unsupported(format!(
        "unsupported request {id}: kiln answers {}",
        supported()
            .iter()
            .map(|r| r.name)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Whether `id` is a subrequest kiln answers.
pub fn is_supported(id: &str) -> bool {
    supported().iter().any(|r| r.name == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_like_tabwriter() {
        let rows = vec![
            row(&["TARGET", "DESCRIPTION"]),
            row(&["cpu (default)", "CPU build"]),
        ];
        assert_eq!(
            columns(&rows, 1),
            "TARGET        DESCRIPTION\ncpu (default) CPU build\n"
        );
    }

    #[test]
    fn describe_lists_each_request_with_version_and_metadata() {
        let result = describe_result().expect("answer");
        let json: serde_json::Value =
            serde_json::from_slice(&result.metadata["result.json"]).expect("json");
        let names: Vec<&str> = json
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(names, [OUTLINE, TARGETS, DESCRIBE]);
        assert_eq!(json[1]["version"], "1.0.0");
        assert_eq!(json[1]["type"], "rpc");
        assert_eq!(json[1]["metadata"][0]["name"], "result.json");
        assert_eq!(result.metadata["version"], b"1.0.0");
        let text = String::from_utf8(result.metadata["result.txt"].clone()).expect("utf-8");
        assert!(text.starts_with("NAME"), "{text}");
        assert!(text.contains("targets "), "{text}");
        assert!(result.result.is_none());
    }

    #[test]
    fn unknown_subrequests_are_unimplemented() {
        assert!(!is_supported("frontend.lint"));
        let status = unsupported("frontend.lint").to_rpc_status();
        assert_eq!(status.code, tonic::Code::Unimplemented as i32);
        assert!(status.message.contains("frontend.lint"));
    }
}
