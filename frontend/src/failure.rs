//! Why a frontend run failed, and how that reaches the user: every failure
//! ends in a `Return` carrying a `google.rpc.Status`, which the engine hands
//! to the build client (`docker buildx` prints its message).

use kiln_compiler::{Diagnostic, Diagnostics};
use kiln_proto::google::rpc::Status as RpcStatus;
use kiln_proto::pb;
use prost::Message;
use tonic::Code;

use crate::options::OptionError;

/// BuildKit's `errdefs.Source` error detail (`solver/errdefs/errdefs.proto`):
/// the file and the ranges an error is about. A client that finds one prints
/// the recipe lines with the error's line marked. It also stops BuildKit's
/// Dockerfile frontend, which forwarded to kiln because of the `// syntax=`
/// line, from pinning the error on that line instead.
#[derive(Clone, PartialEq, Message)]
pub struct SourceDetail {
    #[prost(message, optional, tag = "1")]
    pub info: Option<pb::SourceInfo>,
    #[prost(message, repeated, tag = "2")]
    pub ranges: Vec<pb::Range>,
}

/// The type URL the Go side gives `errdefs.Source` (containerd's typeurl
/// falls back to the message's full name for unregistered protobuf types).
pub const SOURCE_DETAIL_TYPE: &str = "errdefs.Source";

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The recipe does not compile: every problem, located.
    #[error("{}", render_errors(.0))]
    Recipe(Diagnostics),
    /// The client's options make no sense.
    #[error(transparent)]
    Options(#[from] OptionError),
    /// What the client sent cannot be used (the recipe file is not text).
    #[error("{0}")]
    Input(String),
    /// An engine call failed. `context` says what kiln was doing; it is empty
    /// for solve errors, which already say where in the recipe they happened.
    #[error("{}", engine_message(.context, .status))]
    Engine {
        context: String,
        status: tonic::Status,
    },
    /// Something the engine or kiln does not support (a subrequest, a cap).
    #[error("{0}")]
    Unsupported(String),
    /// A problem that is not the user's.
    #[error("{0}")]
    Internal(String),
}

fn render_errors(diags: &Diagnostics) -> String {
    errors_only(diags).render_plain().trim_end().to_string()
}

fn errors_only(diags: &Diagnostics) -> Diagnostics {
    let mut only = Diagnostics::new(diags.source.clone());
    for d in diags.errors() {
        only.push(d.clone());
    }
    only
}

fn engine_message(context: &str, status: &tonic::Status) -> String {
    let message = shorten_process(status.message());
    if context.is_empty() {
        message
    } else {
        format!("{context}: {message}")
    }
}

/// BuildKit names a failed exec by its whole command line (`process
/// "/bin/sh -c …" did not complete successfully`), which for kiln's install
/// steps is a script of dozens of lines the user never wrote. The first line
/// stays; the client shows the step's name, recipe line and log above.
/// Only failures of what the frontend solves itself come through here (a
/// recipe's `verify` checks, which build the environment first); a step
/// that fails while the exporter builds the image is reported by the
/// engine directly, whole.
fn shorten_process(message: &str) -> String {
    const START: &str = "process \"";
    const END: &str = "\" did not complete successfully";
    let (Some(start), Some(end)) = (message.find(START), message.find(END)) else {
        return message.to_string();
    };
    let inner_start = start + START.len();
    if end < inner_start {
        return message.to_string();
    }
    let command = &message[inner_start..end];
    // Go's %q writes line breaks as `\n`.
    let lines = command.split("\\n").count();
    if lines <= 2 && command.len() <= 200 {
        return message.to_string();
    }
    let first: String = command
        .split("\\n")
        .next()
        .unwrap_or_default()
        .chars()
        .take(120)
        .collect();
    format!(
        "{}{first} … ({lines} lines; the step's log is above){}",
        &message[..inner_start],
        &message[end..]
    )
}

impl Failure {
    pub fn engine(context: impl Into<String>, status: tonic::Status) -> Failure {
        Failure::Engine {
            context: context.into(),
            status,
        }
    }

    /// The status `Return` carries.
    ///
    /// Errors that are the user's to fix use `Unknown`, the code BuildKit's
    /// Go frontends give plain errors: its error type prints any other code
    /// as a `Code: ` prefix, once per gRPC hop (`InvalidArgument:
    /// InvalidArgument: …` by the time buildx shows it), while `Unknown`
    /// shows just the message (`util/grpcerrors`).
    pub fn to_rpc_status(&self) -> RpcStatus {
        let message = self.to_string();
        match self {
            Failure::Recipe(diags) => RpcStatus {
                code: Code::Unknown as i32,
                message,
                details: diags
                    .errors()
                    .next()
                    .map(|d| source_detail(diags, d))
                    .into_iter()
                    .collect(),
            },
            Failure::Options(_) | Failure::Input(_) => RpcStatus {
                code: Code::Unknown as i32,
                message,
                details: Vec::new(),
            },
            Failure::Engine { status, .. } => RpcStatus {
                code: status.code() as i32,
                message,
                // The engine's own details (which vertex failed, where in the
                // recipe, the exec's mounts) go back to it untouched, so the
                // client shows what it would for any other frontend.
                details: RpcStatus::decode(status.details())
                    .map(|s| s.details)
                    .unwrap_or_default(),
            },
            Failure::Unsupported(_) => RpcStatus {
                code: Code::Unimplemented as i32,
                message,
                details: Vec::new(),
            },
            Failure::Internal(_) => RpcStatus {
                code: Code::Internal as i32,
                message,
                details: Vec::new(),
            },
        }
    }
}

/// A recipe position as BuildKit source maps write it: 1-based lines,
/// 0-based characters.
pub fn position(diags: &Diagnostics, offset: usize) -> pb::Position {
    let (line, col) = diags.source.line_col(offset);
    pb::Position {
        line: i32::try_from(line).unwrap_or(i32::MAX),
        character: i32::try_from(col.saturating_sub(1)).unwrap_or(i32::MAX),
    }
}

/// The range a diagnostic's span covers.
pub fn range(diags: &Diagnostics, d: &Diagnostic) -> pb::Range {
    pb::Range {
        start: Some(position(diags, d.span.offset())),
        end: Some(position(diags, d.span.offset() + d.span.len())),
    }
}

/// The recipe as a source-map entry.
pub fn source_info(diags: &Diagnostics) -> pb::SourceInfo {
    pb::SourceInfo {
        filename: diags.source.name.clone(),
        data: diags.source.text.as_bytes().to_vec(),
        definition: None,
        language: "kdl".to_string(),
    }
}

fn source_detail(diags: &Diagnostics, d: &Diagnostic) -> prost_types::Any {
    let detail = SourceDetail {
        info: Some(source_info(diags)),
        ranges: vec![range(diags, d)],
    };
    prost_types::Any {
        type_url: SOURCE_DETAIL_TYPE.to_string(),
        value: detail.encode_to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_compiler::SourceFile;

    fn diags() -> Diagnostics {
        let mut ds = Diagnostics::new(SourceFile::new("env.kdl", "kiln 1\nfrob 2\n"));
        ds.push(
            Diagnostic::error("kiln::unknown_node", (7, 4), "unknown node `frob`")
                .with_help("remove it"),
        );
        ds.push(Diagnostic::warning("kiln::style", (0, 4), "a warning"));
        ds
    }

    #[test]
    fn a_failed_steps_long_script_is_cut_to_its_first_line() {
        let script = (0..40)
            .map(|i| format!("line {i} with \\\"quotes\\\""))
            .collect::<Vec<_>>()
            .join("\\n");
        let message = format!(
            "process \"/bin/sh -c set -eu\\n{script}\" did not complete successfully: exit code: 1"
        );
        let status = tonic::Status::unknown(message);
        assert_eq!(
            Failure::engine("", status).to_string(),
            "process \"/bin/sh -c set -eu … (41 lines; the step's log is above)\" did not complete successfully: exit code: 1"
        );
        // A short command (a user's `run`) stays whole.
        let short = "process \"/bin/sh -c make test\" did not complete successfully: exit code: 2";
        assert_eq!(
            Failure::engine("", tonic::Status::unknown(short)).to_string(),
            short
        );
        let other = "failed to compute cache key: \"/data\": not found";
        assert_eq!(
            Failure::engine("", tonic::Status::unknown(other)).to_string(),
            other
        );
    }

    #[test]
    fn recipe_errors_are_located_and_carry_the_source() {
        let status = Failure::Recipe(diags()).to_rpc_status();
        assert_eq!(status.code, Code::Unknown as i32);
        assert!(
            status
                .message
                .starts_with("env.kdl:2:1: error[kiln::unknown_node]: unknown node `frob`"),
            "{}",
            status.message
        );
        assert!(!status.message.contains("a warning"));
        assert_eq!(status.details.len(), 1);
        assert_eq!(status.details[0].type_url, SOURCE_DETAIL_TYPE);
        let detail = SourceDetail::decode(status.details[0].value.as_slice()).expect("decodes");
        let info = detail.info.expect("info");
        assert_eq!(info.filename, "env.kdl");
        assert_eq!(info.data, b"kiln 1\nfrob 2\n");
        let start = detail.ranges[0].start.expect("start");
        assert_eq!((start.line, start.character), (2, 0));
        let end = detail.ranges[0].end.expect("end");
        assert_eq!((end.line, end.character), (2, 4));
    }

    #[test]
    fn engine_errors_keep_code_and_details() {
        let inner = RpcStatus {
            code: Code::Unknown as i32,
            message: "process did not complete successfully".into(),
            details: vec![prost_types::Any {
                type_url: "errdefs.Vertex".into(),
                value: vec![10, 1, b'x'],
            }],
        };
        let status = tonic::Status::with_details(
            Code::Unknown,
            "process did not complete successfully",
            inner.encode_to_vec().into(),
        );
        let out = Failure::engine("", status).to_rpc_status();
        assert_eq!(out.code, Code::Unknown as i32);
        assert_eq!(out.message, "process did not complete successfully");
        assert_eq!(out.details, inner.details);

        let out = Failure::engine("reading env.kdl", tonic::Status::not_found("no such file"))
            .to_rpc_status();
        assert_eq!(out.code, Code::NotFound as i32);
        assert_eq!(out.message, "reading env.kdl: no such file");
        assert!(out.details.is_empty());
    }
}
