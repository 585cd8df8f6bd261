//! Compiles `protos/` with protox (pure Rust, no `protoc` needed) and
//! generates prost messages plus the tonic LLBBridge client and server.

use std::path::Path;

const PROTO_ROOT: &str = "protos";

/// Every file we compile; imports between them resolve against `PROTO_ROOT`,
/// and `google/protobuf/*` comes bundled with protox.
const PROTOS: &[&str] = &[
    "github.com/moby/buildkit/solver/pb/ops.proto",
    "github.com/moby/buildkit/frontend/gateway/pb/gateway.proto",
    "github.com/moby/buildkit/util/apicaps/pb/caps.proto",
    "github.com/moby/buildkit/api/types/worker.proto",
    "github.com/moby/buildkit/sourcepolicy/pb/policy.proto",
    "github.com/tonistiigi/fsutil/types/stat.proto",
    "google/rpc/status.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for file in PROTOS {
        println!(
            "cargo:rerun-if-changed={}",
            Path::new(PROTO_ROOT).join(file).display()
        );
    }

    let fds = protox::compile(PROTOS, [PROTO_ROOT])?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // LLB digests are sha256 of encoded ops, so map fields must encode in
        // a stable (sorted) order: BTreeMap everywhere, never HashMap.
        .btree_map(".")
        // One file listing all packages as nested modules, so that
        // cross-package paths like `super::super::pb::Definition` resolve.
        .include_file("kiln_proto.rs")
        // Fake engines in tests implement only the methods they need; the
        // rest answer Unimplemented, as an old engine would.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
