//! BuildKit's wire API as Rust types: LLB (`pb`), the gateway `LLBBridge`
//! service a frontend talks to (`gateway`, with a tonic client and server),
//! and the small packages those refer to. The `.proto` files under `protos/`
//! are written for kiln from upstream moby/buildkit and tonistiigi/fsutil with
//! the same packages, names and field numbers, so the bytes are what a real
//! BuildKit reads and writes; see `README.md` for how they map to upstream.
//!
//! This crate is only generated code and its re-exports. It does not build
//! graphs, compute digests or talk to an engine: that is `kiln-compiler` (the
//! LLB builder) and the frontend crate (the gRPC edge). Every map field is a
//! `BTreeMap`, so encoding a message always gives the same bytes.

/// The prost/tonic output, one module per protobuf package, nested exactly as
/// the packages are: generated code refers across packages with paths like
/// `super::super::super::super::pb::Definition`, which only resolve in this
/// tree. Use the re-exports below instead of these paths.
mod generated {
    #![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
    include!(concat!(env!("OUT_DIR"), "/kiln_proto.rs"));
}

/// LLB: `Op` and its kinds, `Definition`, source maps (package `pb`).
pub use generated::pb;

/// The gateway API (package `moby.buildkit.v1.frontend`): `llb_bridge_client`
/// for the frontend, `llb_bridge_server` for test engines. Server methods a
/// fake does not implement answer `Unimplemented`.
pub use generated::moby::buildkit::v1::frontend as gateway;

/// Capability records returned by `Ping` (package `moby.buildkit.v1.apicaps`).
pub use generated::moby::buildkit::v1::apicaps;

/// Worker records returned by `Ping` (package `moby.buildkit.v1.types`).
pub use generated::moby::buildkit::v1::types;

/// Source policies that gateway requests may carry
/// (package `moby.buildkit.v1.sourcepolicy`).
pub use generated::moby::buildkit::v1::sourcepolicy;

/// `google::rpc::Status`, the error `Return` carries (package `google.rpc`).
pub use generated::google;

/// File metadata from `ReadDir`/`StatFile` (package `fsutil.types`).
pub use generated::fsutil::types as fsutil;
