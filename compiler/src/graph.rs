//! `kiln graph`: a marshaled `Definition` as Graphviz DOT, for people.
//!
//! Decoded from the bytes the engine gets, like the JSON form, so the picture
//! cannot disagree with the build. Nodes are ops (named by `llb.customname`
//! where kiln set one), edges run from an input to the op that reads it.

use std::fmt::Write as _;

use kiln_proto::pb;
use prost::Message;
use sha2::{Digest, Sha256};

fn short(d: &str) -> String {
    d.strip_prefix("sha256:")
        .unwrap_or(d)
        .chars()
        .take(12)
        .collect()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn kind(op: &pb::Op) -> (&'static str, &'static str) {
    match &op.op {
        Some(pb::op::Op::Source(_)) => ("source", "box"),
        Some(pb::op::Op::Exec(_)) => ("exec", "ellipse"),
        Some(pb::op::Op::File(_)) => ("file", "note"),
        Some(pb::op::Op::Merge(_)) => ("merge", "invtrapezium"),
        Some(pb::op::Op::Diff(_)) => ("diff", "diamond"),
        Some(pb::op::Op::Build(_)) => ("build", "box"),
        Some(pb::op::Op::Passthrough(_)) => ("passthrough", "box"),
        None => ("result", "doublecircle"),
    }
}

/// Render `def` as a DOT digraph named `title`.
pub fn dot(def: &pb::Definition, title: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(title));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  node [fontname=\"Helvetica\", fontsize=10];");
    for bytes in &def.def {
        let digest = format!("sha256:{:x}", Sha256::digest(bytes));
        let id = short(&digest);
        let Ok(op) = pb::Op::decode(bytes.as_slice()) else {
            let _ = writeln!(out, "  \"{id}\" [label=\"undecodable op\", color=red];");
            continue;
        };
        let (what, shape) = kind(&op);
        let name = def
            .metadata
            .get(&digest)
            .and_then(|m| m.description.get("llb.customname"))
            .cloned()
            .unwrap_or_else(|| match &op.op {
                Some(pb::op::Op::Source(s)) => s.identifier.clone(),
                _ => what.to_string(),
            });
        let _ = writeln!(
            out,
            "  \"{id}\" [label=\"{}\\n{what} {id}\", shape={shape}];",
            escape(&name)
        );
        for (i, input) in op.inputs.iter().enumerate() {
            let label = match &op.op {
                Some(pb::op::Op::Diff(d))
                    if d.lower.as_ref().is_some_and(|l| l.input == i as i64) =>
                {
                    " [label=\"lower\"]"
                }
                Some(pb::op::Op::Diff(d))
                    if d.upper.as_ref().is_some_and(|u| u.input == i as i64) =>
                {
                    " [label=\"upper\"]"
                }
                Some(pb::op::Op::Exec(e))
                    if e.mounts
                        .iter()
                        .any(|m| m.input == i as i64 && m.dest != "/") =>
                {
                    " [style=dashed]"
                }
                _ => "",
            };
            let _ = writeln!(out, "  \"{}\" -> \"{id}\"{label};", short(&input.digest));
        }
    }
    out.push_str("}\n");
    out
}
