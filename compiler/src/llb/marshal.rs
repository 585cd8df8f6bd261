//! The one place where the graph becomes bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_proto::pb;
use prost::Message;
use sha2::{Digest, Sha256};

use super::{Node, State};

/// The recipe the source map points into.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub filename: String,
    pub data: Vec<u8>,
    pub language: String,
}

/// A marshaled definition and its encoded bytes.
#[derive(Debug, Clone)]
pub struct Marshaled {
    pub definition: pb::Definition,
    /// `definition` encoded: what `buildctl build` reads on stdin.
    pub bytes: Vec<u8>,
}

/// An op's bytes, as BuildKit's Go code writes them: Go's protobuf puts a
/// oneof's field after the message's other fields (`inputs`, `platform`,
/// `constraints`, then the exec/source/file/… op), where prost writes the
/// fields by number. BuildKit 0.15+ re-encodes every op it loads and keys
/// the vertex by the digest of its own bytes: ops written in another order
/// get other digests, and the source map (keyed by ours) then points no
/// error at the recipe, nor a warning at its vertex.
pub fn encode_op(op: &pb::Op) -> Vec<u8> {
    use prost::encoding::message;
    let mut buf = Vec::with_capacity(op.encoded_len());
    for input in &op.inputs {
        message::encode(1, input, &mut buf);
    }
    if let Some(p) = &op.platform {
        message::encode(10, p, &mut buf);
    }
    if let Some(c) = &op.constraints {
        message::encode(11, c, &mut buf);
    }
    if let Some(kind) = &op.op {
        kind.encode(&mut buf);
    }
    buf
}

/// Serialise the graph ending at `root` into a `Definition`: ops in
/// dependency order, each named by the sha256 of its bytes, a terminal op
/// last, metadata keyed by digest, and a source map into `source` when given.
pub fn marshal(root: &State, source: Option<&SourceInfo>) -> Marshaled {
    let mut cx = Cx::default();
    let terminal_input = root.out.as_ref().map(|o| pb::Input {
        digest: cx.visit(&o.node),
        index: o.index,
    });
    // The terminal op has one input (none for an empty result) and no kind.
    let terminal = pb::Op {
        inputs: terminal_input.into_iter().collect(),
        ..Default::default()
    };
    let bytes = encode_op(&terminal);
    cx.def.push(bytes);

    let mut source_map = None;
    if let Some(info) = source {
        let locations: BTreeMap<String, pb::Locations> = cx
            .locations
            .into_iter()
            .filter(|(_, ranges)| !ranges.is_empty())
            .map(|(digest, ranges)| {
                let location = pb::Location {
                    source_index: 0,
                    ranges: ranges
                        .iter()
                        .map(|r| pb::Range {
                            start: Some(pb::Position {
                                line: r.start_line as i32,
                                character: r.start_col as i32,
                            }),
                            end: Some(pb::Position {
                                line: r.end_line as i32,
                                character: r.end_col as i32,
                            }),
                        })
                        .collect(),
                };
                (
                    digest,
                    pb::Locations {
                        locations: vec![location],
                    },
                )
            })
            .collect();
        if !locations.is_empty() {
            source_map = Some(pb::Source {
                locations,
                infos: vec![pb::SourceInfo {
                    filename: info.filename.clone(),
                    data: info.data.clone(),
                    definition: None,
                    language: info.language.clone(),
                }],
            });
        }
    }

    let definition = pb::Definition {
        def: cx.def,
        metadata: cx.metadata,
        source: source_map,
    };
    let bytes = definition.encode_to_vec();
    Marshaled { definition, bytes }
}

#[derive(Default)]
struct Cx {
    /// Digest of each node already emitted, by node address.
    done: BTreeMap<usize, String>,
    def: Vec<Vec<u8>>,
    metadata: BTreeMap<String, pb::OpMetadata>,
    locations: BTreeMap<String, Vec<super::SourceRange>>,
}

impl Cx {
    /// The digest of `node`, emitting it and what it depends on first. An
    /// explicit stack, not recursion: a recipe of thousands of steps is a
    /// chain thousands of ops deep.
    fn visit(&mut self, node: &Arc<Node>) -> String {
        let mut stack: Vec<&Arc<Node>> = vec![node];
        while let Some(&top) = stack.last() {
            let key = Arc::as_ptr(top) as usize;
            if self.done.contains_key(&key) {
                stack.pop();
                continue;
            }
            let pending: Vec<&Arc<Node>> = top
                .inputs
                .iter()
                .map(|o| &o.node)
                .filter(|n| !self.done.contains_key(&(Arc::as_ptr(n) as usize)))
                .collect();
            if pending.is_empty() {
                stack.pop();
                self.emit(top);
            } else {
                // The first input first, as a recursive walk would go.
                stack.extend(pending.into_iter().rev());
            }
        }
        self.done
            .get(&(Arc::as_ptr(node) as usize))
            .cloned()
            .unwrap_or_default()
    }

    /// Emit one node whose inputs are all emitted.
    fn emit(&mut self, node: &Arc<Node>) -> String {
        let key = Arc::as_ptr(node) as usize;
        let inputs: Vec<pb::Input> = node
            .inputs
            .iter()
            .map(|o| pb::Input {
                digest: self
                    .done
                    .get(&(Arc::as_ptr(&o.node) as usize))
                    .cloned()
                    .unwrap_or_default(),
                index: o.index,
            })
            .collect();
        let mut op = node.op.clone();
        op.inputs = inputs;
        let bytes = encode_op(&op);
        let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
        self.done.insert(key, digest.clone());
        // Two nodes built separately but equal marshal to the same digest:
        // emit the op once, merging what describes it.
        if !self.metadata.contains_key(&digest) {
            self.def.push(bytes);
        }
        let md = self.metadata.entry(digest.clone()).or_default();
        if !node.meta.name.is_empty() && md.description.is_empty() {
            md.description
                .insert("llb.customname".to_string(), node.meta.name.clone());
            md.caps.insert("meta.description".to_string(), true);
        }
        for cap in &node.caps {
            md.caps.insert((*cap).to_string(), true);
        }
        if let Some((id, name)) = &node.meta.group {
            md.progress_group = Some(pb::ProgressGroup {
                id: id.clone(),
                name: name.clone(),
                weak: false,
            });
        }
        let locs = self.locations.entry(digest.clone()).or_default();
        for r in &node.meta.locations {
            if !locs.contains(r) {
                locs.push(*r);
            }
        }
        digest
    }
}
