use super::*;
use kiln_proto::pb;
use prost::Message;
use sha2::{Digest, Sha256};

fn amd64() -> Platform {
    Platform::linux_amd64()
}

fn decode_all(m: &Marshaled) -> Vec<(String, pb::Op)> {
    m.definition
        .def
        .iter()
        .map(|b| {
            (
                format!("sha256:{:x}", Sha256::digest(b)),
                pb::Op::decode(b.as_slice()).expect("op decodes"),
            )
        })
        .collect()
}

fn sample() -> State {
    let base = State::image(
        "docker.io/library/python:3.11-slim",
        &amd64(),
        OpMeta::named("base"),
    );
    let ctx = State::local(
        "context",
        &LocalOpts {
            include: vec!["requirements.txt".into()],
            ..Default::default()
        },
        OpMeta::named("context"),
    );
    let venv = base
        .run(
            Exec::shell("python -m venv /opt/venv", &amd64(), OpMeta::named("venv"))
                .mount(Mount::Cache {
                    target: "/root/.cache/pip".into(),
                    id: "pip".into(),
                    sharing: Sharing::Shared,
                })
                .mount(Mount::Bind {
                    target: "/ctx".into(),
                    source: ctx.clone(),
                    selector: None,
                    readonly: true,
                }),
        )
        .root();
    let app = State::scratch().file(
        FileActions::new()
            .then(FileAction::Mkdir {
                path: "/app".into(),
                mode: 0o755,
                parents: true,
                owner: Some(Owner {
                    uid: 1000,
                    gid: 1000,
                }),
            })
            .then(FileAction::Copy {
                from: ctx,
                src: "/src".into(),
                dest: "/app/src".into(),
                owner: None,
                contents: false,
                create_parents: true,
                include: vec![],
            }),
        OpMeta::named("app"),
    );
    State::merge(&[base, venv, app], OpMeta::named("join"))
}

#[test]
fn same_graph_same_bytes() {
    let a = marshal(&sample(), None);
    let b = marshal(&sample(), None);
    assert_eq!(a.bytes, b.bytes);
    assert!(!a.bytes.is_empty());
}

#[test]
fn inputs_are_wired_by_digest_and_index_in_dependency_order() {
    let m = marshal(&sample(), None);
    let ops = decode_all(&m);
    let mut seen: Vec<&str> = Vec::new();
    for (digest, op) in &ops {
        for input in &op.inputs {
            assert!(
                seen.contains(&input.digest.as_str()),
                "input {} of {digest} comes before it",
                input.digest
            );
        }
        seen.push(digest);
    }
    // The terminal op is last, with one input: the merge.
    let (_, terminal) = ops.last().expect("ops");
    assert!(terminal.op.is_none());
    assert_eq!(terminal.inputs.len(), 1);
    let merge_digest = &terminal.inputs[0].digest;
    let (_, merge) = ops
        .iter()
        .find(|(d, _)| d == merge_digest)
        .expect("merge op");
    match &merge.op {
        Some(pb::op::Op::Merge(mo)) => {
            assert_eq!(
                mo.inputs.iter().map(|i| i.input).collect::<Vec<_>>(),
                vec![0, 1, 2]
            );
        }
        other => panic!("expected a merge, got {other:?}"),
    }
    assert_eq!(merge.inputs.len(), 3);
    // Equal image sources marshal once: the base appears once though used twice.
    let images = ops
        .iter()
        .filter(|(_, op)| matches!(&op.op, Some(pb::op::Op::Source(s)) if s.identifier.starts_with("docker-image://")))
        .count();
    assert_eq!(images, 1);
}

#[test]
fn digest_is_sha256_of_op_bytes_and_stable() {
    let base = State::image(
        "docker.io/library/busybox:latest",
        &amd64(),
        OpMeta::named("busybox"),
    );
    let m = marshal(&base, None);
    let (digest, op) = &decode_all(&m)[0];
    assert_eq!(encode_op(op), m.definition.def[0]);
    // Pinned: a change in field numbers or encoding of SourceOp/Platform shows up here
    // (the digest BuildKit's Go code gives the same op).
    assert_eq!(
        digest,
        "sha256:e1432b8e2054abb034451c15f0a8ad49d07f5892ca266016226fec77e95d20a0"
    );
    let md = &m.definition.metadata[digest];
    assert_eq!(md.description["llb.customname"], "busybox");
    assert!(md.caps.contains_key("source.image"));
}

#[test]
fn exec_mounts_are_sorted_and_outputs_indexed() {
    let base = State::image(
        "docker.io/library/busybox:latest",
        &amd64(),
        OpMeta::named("b"),
    );
    let out = State::scratch();
    let r = base.run(
        Exec::shell("true", &amd64(), OpMeta::named("x"))
            .mount(Mount::Tmpfs {
                target: "/z".into(),
            })
            .mount(Mount::Bind {
                target: "/out".into(),
                source: out,
                selector: None,
                readonly: false,
            })
            .mount(Mount::Secret {
                target: "/run/secrets/ca".into(),
                id: "ca".into(),
                uid: 0,
                gid: 0,
                mode: 0o400,
                optional: false,
            }),
    );
    assert!(r.mount("/out").is_some());
    assert!(r.mount("/z").is_none());
    let m = marshal(&r.mount("/out").expect("output"), None);
    let ops = decode_all(&m);
    let exec = ops
        .iter()
        .find_map(|(_, op)| match &op.op {
            Some(pb::op::Op::Exec(e)) => Some(e.clone()),
            _ => None,
        })
        .expect("exec");
    let targets: Vec<&str> = exec.mounts.iter().map(|m| m.dest.as_str()).collect();
    assert_eq!(targets, vec!["/", "/out", "/run/secrets/ca", "/z"]);
    assert_eq!(exec.mounts[0].output, 0);
    assert_eq!(exec.mounts[1].output, 1);
    assert_eq!(exec.mounts[1].input, -1, "scratch bind has no input");
    assert_eq!(exec.mounts[2].output, -1);
    // The terminal op points at output 1 of the exec.
    assert_eq!(ops.last().expect("terminal").1.inputs[0].index, 1);
}

#[test]
fn chained_file_actions_reference_previous_action() {
    let base = State::image(
        "docker.io/library/busybox:latest",
        &amd64(),
        OpMeta::named("b"),
    );
    let ctx = State::local("context", &LocalOpts::default(), OpMeta::named("ctx"));
    let s = base.file(
        FileActions::new()
            .then(FileAction::Mkdir {
                path: "/a".into(),
                mode: 0o755,
                parents: true,
                owner: None,
            })
            .then(FileAction::Copy {
                from: ctx,
                src: "/f".into(),
                dest: "/a/f".into(),
                owner: None,
                contents: false,
                create_parents: false,
                include: vec![],
            })
            .then(FileAction::Rm {
                path: "/tmp/x".into(),
                allow_not_found: true,
                wildcard: false,
            }),
        OpMeta::named("files"),
    );
    let m = marshal(&s, None);
    let file = decode_all(&m)
        .into_iter()
        .find_map(|(_, op)| match op.op {
            Some(pb::op::Op::File(f)) => Some((op.inputs.len(), f)),
            _ => None,
        })
        .expect("file op");
    let (n_inputs, f) = file;
    assert_eq!(n_inputs, 2);
    let wiring: Vec<(i64, i64, i64)> = f
        .actions
        .iter()
        .map(|a| (a.input, a.secondary_input, a.output))
        .collect();
    assert_eq!(wiring, vec![(0, -1, -1), (2, 1, -1), (3, -1, 0)]);
}

#[test]
fn source_map_points_ops_at_recipe_lines() {
    let range = SourceRange {
        start_line: 3,
        start_col: 1,
        end_line: 3,
        end_col: 20,
    };
    let s = State::image(
        "docker.io/library/busybox:latest",
        &amd64(),
        OpMeta::named("b").at(Some(range)),
    );
    let info = SourceInfo {
        filename: "env.kdl".into(),
        data: b"kiln 1\n".to_vec(),
        language: "kdl".into(),
    };
    let m = marshal(&s, Some(&info));
    let src = m.definition.source.expect("source map");
    assert_eq!(src.infos[0].filename, "env.kdl");
    let (_, locs) = src.locations.iter().next().expect("a location");
    assert_eq!(locs.locations[0].ranges[0].start.expect("start").line, 3);
}

#[test]
fn merge_of_one_is_the_input_and_scratch_is_dropped() {
    let b = State::image(
        "docker.io/library/busybox:latest",
        &amd64(),
        OpMeta::named("b"),
    );
    let m = State::merge(&[State::scratch(), b.clone()], OpMeta::named("m"));
    assert_eq!(marshal(&m, None).bytes, marshal(&b, None).bytes);
    assert!(State::merge(&[], OpMeta::named("e")).is_scratch());
}

#[test]
fn platforms_parse_and_normalise() {
    assert_eq!(
        Platform::parse("linux/x86_64").expect("ok").to_string(),
        "linux/amd64"
    );
    assert_eq!(
        Platform::parse("linux/arm64/v8").expect("ok").to_string(),
        "linux/arm64"
    );
    assert_eq!(
        Platform::parse("linux/arm/v7").expect("ok").to_string(),
        "linux/arm/v7"
    );
    assert_eq!(
        Platform::parse("Linux/ARM64/V8").expect("ok").to_string(),
        "linux/arm64"
    );
    assert_eq!(
        Platform::parse("linux/AMD64").expect("ok").to_string(),
        "linux/amd64"
    );
    assert!(Platform::parse("linux").is_err());
    assert!(Platform::parse("").is_err());
    assert!(Platform::parse("linux/amd64/v2/x").is_err());
}

/// The top-level field numbers of one encoded message, in order.
fn field_order(mut bytes: &[u8]) -> Vec<u32> {
    use prost::encoding::{DecodeContext, decode_key, skip_field};
    let mut tags = Vec::new();
    while !bytes.is_empty() {
        let (tag, wire) = decode_key(&mut bytes).expect("a key");
        skip_field(wire, tag, &mut bytes, DecodeContext::default()).expect("a value");
        tags.push(tag);
    }
    tags
}

/// Every op is written as BuildKit's Go code writes it (Go's protobuf puts
/// the oneof, the kind of op, after `inputs`, `platform` and
/// `constraints`): BuildKit 0.15+ re-encodes the ops it loads and keys
/// vertices, source-map lines and warnings by those bytes' digests.
#[test]
fn ops_are_encoded_in_go_protobuf_field_order() {
    let m = marshal(&sample(), None);
    let mut kinds = std::collections::BTreeSet::new();
    for bytes in &m.definition.def {
        let tags = field_order(bytes);
        let kind: Vec<usize> = tags
            .iter()
            .enumerate()
            .filter(|(_, t)| (2..=8).contains(*t))
            .map(|(i, _)| i)
            .collect();
        assert!(kind.len() <= 1, "{tags:?}");
        if let Some(&at) = kind.first() {
            assert_eq!(at, tags.len() - 1, "the op's kind comes last: {tags:?}");
            kinds.insert(tags[at]);
        }
        let rest: Vec<u32> = tags
            .iter()
            .copied()
            .filter(|t| !(2..=8).contains(t))
            .collect();
        let mut sorted = rest.clone();
        sorted.sort_unstable();
        assert_eq!(rest, sorted, "{tags:?}");
        // Decoding and encoding again gives the same bytes.
        let op = pb::Op::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(&encode_op(&op), bytes);
    }
    // The sample has sources, an exec and a file op, each with a platform.
    assert!(kinds.len() >= 3, "{kinds:?}");
    let first = &m.definition.def[0];
    assert_eq!(
        field_order(first),
        [10, 11, 3],
        "a source op: platform, constraints, source"
    );
}
