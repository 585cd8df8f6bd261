//! The bytes these types encode to are the bytes BuildKit expects: field
//! numbers as in upstream moby/buildkit (solver/pb/ops.proto and
//! frontend/gateway/pb/gateway.proto at master 73ed6825), fields in tag order
//! like Go's marshaler, and maps in sorted key order like BuildKit's
//! deterministic marshal (op digests are sha256 of these bytes).

use std::collections::BTreeMap;

use kiln_proto::gateway;
use kiln_proto::pb::{self, Op, op};
use prost::Message;

/// A protobuf key for a length-delimited field (wire type 2).
fn len_key(field: u32) -> Vec<u8> {
    varint(u64::from(field << 3 | 2))
}

/// A protobuf key for a varint field (wire type 0).
fn varint_key(field: u32) -> Vec<u8> {
    varint(u64::from(field << 3))
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// The encoding of a message whose only content is an empty sub-message in
/// field `field`: key, then length 0.
fn empty_submessage(field: u32) -> Vec<u8> {
    let mut out = len_key(field);
    out.push(0);
    out
}

fn exec_with_cache_mount() -> Op {
    Op {
        inputs: vec![pb::Input {
            digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                .into(),
            index: 0,
        }],
        op: Some(op::Op::Exec(pb::ExecOp {
            meta: Some(pb::Meta {
                args: vec!["/bin/sh".into(), "-c".into(), "pip install torch".into()],
                env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()],
                cwd: "/".into(),
                user: "1000".into(),
                valid_exit_codes: vec![0, 1],
                ..Default::default()
            }),
            mounts: vec![
                pb::Mount {
                    input: 0,
                    dest: "/".into(),
                    output: 0,
                    ..Default::default()
                },
                pb::Mount {
                    input: -1,
                    dest: "/root/.cache/pip".into(),
                    output: -1,
                    mount_type: pb::MountType::Cache.into(),
                    cache_opt: Some(pb::CacheOpt {
                        id: "kiln-pip".into(),
                        sharing: pb::CacheSharingOpt::Locked.into(),
                    }),
                    ..Default::default()
                },
            ],
            network: pb::NetMode::None.into(),
            ..Default::default()
        })),
        platform: Some(pb::Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Default::default()
        }),
        constraints: Some(pb::WorkerConstraints::default()),
    }
}

#[test]
fn exec_op_with_cache_mount_round_trips() {
    let op = exec_with_cache_mount();
    let bytes = op.encode_to_vec();
    let decoded = Op::decode(bytes.as_slice()).expect("our own bytes decode");
    assert_eq!(decoded, op);

    let Some(op::Op::Exec(exec)) = &decoded.op else {
        panic!("expected an exec op, got {:?}", decoded.op);
    };
    let cache = &exec.mounts[1];
    assert_eq!(cache.mount_type(), pb::MountType::Cache);
    let opt = cache
        .cache_opt
        .as_ref()
        .expect("cache mount keeps its options");
    assert_eq!(opt.id, "kiln-pip");
    assert_eq!(opt.sharing(), pb::CacheSharingOpt::Locked);
    assert_eq!(exec.network(), pb::NetMode::None);
}

#[test]
fn op_fields_have_upstream_numbers() {
    let cases: [(Op, u32); 10] = [
        (
            Op {
                inputs: vec![pb::Input::default()],
                ..Default::default()
            },
            1,
        ),
        (op_of(op::Op::Exec(Default::default())), 2),
        (op_of(op::Op::Source(Default::default())), 3),
        (op_of(op::Op::File(Default::default())), 4),
        (op_of(op::Op::Build(Default::default())), 5),
        (op_of(op::Op::Merge(Default::default())), 6),
        (op_of(op::Op::Diff(Default::default())), 7),
        (op_of(op::Op::Passthrough(Default::default())), 8),
        (
            Op {
                platform: Some(Default::default()),
                ..Default::default()
            },
            10,
        ),
        (
            Op {
                constraints: Some(Default::default()),
                ..Default::default()
            },
            11,
        ),
    ];
    for (op, field) in cases {
        assert_eq!(
            op.encode_to_vec(),
            empty_submessage(field),
            "Op field {field}"
        );
    }
    // The literal bytes, for a reader who wants to check against a hex dump.
    assert_eq!(
        op_of(op::Op::Exec(Default::default())).encode_to_vec(),
        [0x12, 0x00]
    );
    assert_eq!(
        op_of(op::Op::Merge(Default::default())).encode_to_vec(),
        [0x32, 0x00]
    );
    assert_eq!(
        op_of(op::Op::Diff(Default::default())).encode_to_vec(),
        [0x3a, 0x00]
    );
}

fn op_of(kind: op::Op) -> Op {
    Op {
        op: Some(kind),
        ..Default::default()
    }
}

#[test]
fn op_fields_encode_in_tag_order_like_go() {
    // Go's marshaler writes fields by number and prost sorts by tag too (the
    // oneof counts at its members' tags), so a full op starts inputs (1),
    // exec (2), and ends platform (10), constraints (11). A different order
    // would still decode, but the digest would differ from the Go client's.
    let bytes = exec_with_cache_mount().encode_to_vec();
    let mut keys = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let key = rest[0];
        let (len, used) = read_varint(&rest[1..]);
        keys.push(key);
        rest = &rest[1 + used + len..];
    }
    assert_eq!(keys, [0x0a, 0x12, 0x52, 0x5a]);
}

fn read_varint(bytes: &[u8]) -> (usize, usize) {
    let mut value = 0usize;
    for (i, byte) in bytes.iter().enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("truncated varint");
}

#[test]
fn definition_fields_have_upstream_numbers() {
    let def = pb::Definition {
        def: vec![Vec::new()],
        ..Default::default()
    };
    assert_eq!(def.encode_to_vec(), empty_submessage(1));

    let def = pb::Definition {
        metadata: BTreeMap::from([(
            "k".to_string(),
            pb::OpMetadata {
                ignore_cache: true,
                ..Default::default()
            },
        )]),
        ..Default::default()
    };
    // One map entry under key 2, 7 bytes: key "k" (0x0a 0x01 'k'), then the
    // OpMetadata value (0x12, length 2, ignore_cache = 1 true).
    assert_eq!(
        def.encode_to_vec(),
        [0x12, 0x07, 0x0a, 0x01, b'k', 0x12, 0x02, 0x08, 0x01]
    );

    let def = pb::Definition {
        source: Some(Default::default()),
        ..Default::default()
    };
    assert_eq!(def.encode_to_vec(), empty_submessage(3));
}

#[test]
fn mount_fields_have_upstream_numbers() {
    let sub = |m: pb::Mount| m.encode_to_vec();
    assert_eq!(
        sub(pb::Mount {
            tmpfs_opt: Some(Default::default()),
            ..Default::default()
        }),
        empty_submessage(19)
    );
    assert_eq!(
        sub(pb::Mount {
            cache_opt: Some(Default::default()),
            ..Default::default()
        }),
        [0xa2, 0x01, 0x00],
        "cacheOpt = 20"
    );
    assert_eq!(
        sub(pb::Mount {
            secret_opt: Some(Default::default()),
            ..Default::default()
        }),
        [0xaa, 0x01, 0x00],
        "secretOpt = 21"
    );
    assert_eq!(
        sub(pb::Mount {
            ssh_opt: Some(Default::default()),
            ..Default::default()
        }),
        empty_submessage(22)
    );
    let mut expected = varint_key(6);
    expected.push(pb::MountType::Cache as u8);
    assert_eq!(
        sub(pb::Mount {
            mount_type: pb::MountType::Cache.into(),
            ..Default::default()
        }),
        expected,
        "mountType = 6, CACHE = 3"
    );
    let mut expected = varint_key(24);
    expected.push(2);
    assert_eq!(
        sub(pb::Mount {
            content_cache: pb::MountContentCache::Off.into(),
            ..Default::default()
        }),
        expected,
        "contentCache = 24, OFF = 2"
    );
}

#[test]
fn enum_values_match_upstream() {
    assert_eq!(pb::MountType::Bind as i32, 0);
    assert_eq!(pb::MountType::Secret as i32, 1);
    assert_eq!(pb::MountType::Ssh as i32, 2);
    assert_eq!(pb::MountType::Cache as i32, 3);
    assert_eq!(pb::MountType::Tmpfs as i32, 4);
    assert_eq!(pb::CacheSharingOpt::Shared as i32, 0);
    assert_eq!(pb::CacheSharingOpt::Private as i32, 1);
    assert_eq!(pb::CacheSharingOpt::Locked as i32, 2);
    assert_eq!(pb::NetMode::Unset as i32, 0);
    assert_eq!(pb::NetMode::Host as i32, 1);
    assert_eq!(pb::NetMode::None as i32, 2);
    assert_eq!(pb::SecurityMode::Insecure as i32, 1);
}

#[test]
fn exec_and_file_fields_have_upstream_numbers() {
    let exec = pb::ExecOp {
        secretenv: vec![Default::default()],
        ..Default::default()
    };
    assert_eq!(exec.encode_to_vec(), empty_submessage(5));
    let exec = pb::ExecOp {
        cdi_devices: vec![Default::default()],
        ..Default::default()
    };
    assert_eq!(exec.encode_to_vec(), empty_submessage(6));

    let meta = pb::Meta {
        ulimit: vec![Default::default()],
        ..Default::default()
    };
    assert_eq!(meta.encode_to_vec(), empty_submessage(9));

    let actions: [(pb::file_action::Action, u32); 5] = [
        (pb::file_action::Action::Copy(Default::default()), 4),
        (pb::file_action::Action::Mkfile(Default::default()), 5),
        (pb::file_action::Action::Mkdir(Default::default()), 6),
        (pb::file_action::Action::Rm(Default::default()), 7),
        (pb::file_action::Action::Symlink(Default::default()), 8),
    ];
    for (action, field) in actions {
        let fa = pb::FileAction {
            action: Some(action),
            ..Default::default()
        };
        assert_eq!(
            fa.encode_to_vec(),
            empty_submessage(field),
            "FileAction field {field}"
        );
    }
    let file = pb::FileOp {
        actions: vec![Default::default()],
    };
    assert_eq!(
        file.encode_to_vec(),
        empty_submessage(2),
        "FileOp.actions = 2"
    );

    // mode -1 ("keep the source mode") is a 10-byte varint, as in Go.
    let copy = pb::FileActionCopy {
        mode: -1,
        ..Default::default()
    };
    let mut expected = varint_key(4);
    expected.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert_eq!(copy.encode_to_vec(), expected);

    let user = pb::UserOpt {
        user: Some(pb::user_opt::User::ById(0)),
    };
    // A oneof member is written even when zero: root is byID 0, not unset.
    assert_eq!(user.encode_to_vec(), [0x10, 0x00]);

    let diff = pb::DiffOp {
        upper: Some(Default::default()),
        ..Default::default()
    };
    assert_eq!(diff.encode_to_vec(), empty_submessage(2));
}

#[test]
fn gateway_fields_have_upstream_numbers() {
    let ret = gateway::ReturnRequest {
        error: Some(Default::default()),
        ..Default::default()
    };
    assert_eq!(ret.encode_to_vec(), empty_submessage(2));

    let result = gateway::Result {
        metadata: BTreeMap::from([("k".to_string(), b"v".to_vec())]),
        ..Default::default()
    };
    assert_eq!(
        result.encode_to_vec(),
        [0x52, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v'],
        "metadata = 10"
    );

    let result = gateway::Result {
        result: Some(gateway::result::Result::Ref(Default::default())),
        ..Default::default()
    };
    assert_eq!(result.encode_to_vec(), empty_submessage(3));
    let result = gateway::Result {
        result: Some(gateway::result::Result::Refs(Default::default())),
        ..Default::default()
    };
    assert_eq!(result.encode_to_vec(), empty_submessage(4));

    let solve = gateway::SolveRequest {
        evaluate: true,
        ..Default::default()
    };
    assert_eq!(solve.encode_to_vec(), [0x70, 0x01], "Evaluate = 14");
    let solve = gateway::SolveRequest {
        allow_result_return: true,
        ..Default::default()
    };
    assert_eq!(solve.encode_to_vec(), [0x28, 0x01], "allowResultReturn = 5");

    let pong = gateway::PongResponse {
        workers: vec![Default::default()],
        ..Default::default()
    };
    assert_eq!(pong.encode_to_vec(), empty_submessage(3));

    let meta = gateway::ResolveSourceMetaRequest {
        image: Some(Default::default()),
        ..Default::default()
    };
    assert_eq!(meta.encode_to_vec(), empty_submessage(6));
    let meta = gateway::ResolveSourceMetaResponse {
        image: Some(Default::default()),
        ..Default::default()
    };
    assert_eq!(meta.encode_to_vec(), empty_submessage(2));

    let stat = gateway::StatFileResponse {
        stat: Some(kiln_proto::fsutil::Stat {
            mod_time: 1,
            ..Default::default()
        }),
    };
    assert_eq!(
        stat.encode_to_vec(),
        [0x0a, 0x02, 0x30, 0x01],
        "Stat.modTime = 6"
    );
}

#[test]
fn map_fields_are_btree_maps_and_encode_sorted() {
    // A type check: a HashMap here would make op digests vary run to run.
    let attrs: &BTreeMap<String, String> = &pb::SourceOp::default().attrs;
    let metadata: &BTreeMap<String, pb::OpMetadata> = &pb::Definition::default().metadata;
    let opts: &BTreeMap<String, String> = &gateway::SolveRequest::default().frontend_opt;
    assert!(attrs.is_empty() && metadata.is_empty() && opts.is_empty());

    let keys = [
        "local.sharedkeyhint",
        "local.includepattern",
        "a",
        "local.unique",
        "z",
    ];
    let build = |order: &[&str]| pb::SourceOp {
        identifier: "local://context".into(),
        attrs: order
            .iter()
            .map(|k| ((*k).to_string(), format!("value of {k}")))
            .collect(),
    };
    let forward = build(&keys).encode_to_vec();
    let mut reversed_keys = keys;
    reversed_keys.reverse();
    let backward = build(&reversed_keys).encode_to_vec();
    assert_eq!(
        forward, backward,
        "insertion order must not change the bytes"
    );

    // Entries come out in byte order of their keys, like Go's deterministic
    // marshal: find each key's position in the encoding.
    let position = |k: &str| {
        forward
            .windows(k.len())
            .position(|w| w == k.as_bytes())
            .expect("key is encoded")
    };
    let mut sorted = keys;
    sorted.sort_unstable();
    let positions: Vec<usize> = sorted.iter().map(|k| position(k)).collect();
    assert!(positions.is_sorted(), "entries in key order: {positions:?}");
}

#[test]
fn source_op_map_entry_bytes() {
    let op = pb::SourceOp {
        identifier: String::new(),
        attrs: BTreeMap::from([("a".to_string(), "b".to_string())]),
    };
    assert_eq!(
        op.encode_to_vec(),
        [0x12, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b']
    );
}

#[test]
fn empty_map_values_are_left_out_unlike_go() {
    // prost leaves an empty key or value out of a map entry; Go's marshaler
    // writes it (`{"a": ""}` is 12 05 0a 01 61 12 00 from Go). Both decode to
    // the same map, but such an op's digest differs from the Go client's, so
    // the LLB builder should not emit empty attr values if it wants parity.
    let op = pb::SourceOp {
        identifier: String::new(),
        attrs: BTreeMap::from([("a".to_string(), String::new())]),
    };
    assert_eq!(op.encode_to_vec(), [0x12, 0x03, 0x0a, 0x01, b'a']);
    let decoded = pb::SourceOp::decode([0x12, 0x05, 0x0a, 0x01, b'a', 0x12, 0x00].as_slice())
        .expect("Go's form decodes");
    assert_eq!(decoded, op);
}
