//! kiln's BuildKit gateway frontend: what runs when a recipe starts with
//! `// syntax=kiln/frontend:dev` and someone runs `docker buildx build -f
//! env.kdl .`.
//!
//! The engine starts the frontend image as a container and serves the
//! `LLBBridge` gRPC API over its stdin/stdout ([`transport`]). The frontend
//! reads its options from the environment ([`options`]), learns what the
//! engine supports ([`engine`]), reads the recipe, answers subrequests
//! ([`subrequests`]) or compiles the recipe with `kiln-compiler` and solves
//! the graphs ([`build`]), and ends with `Return`: the refs and image configs
//! ([`export`]) or a located error ([`failure`]).
//!
//! It is the IO edge around the pure compiler: it does not parse recipes or
//! build LLB itself beyond the one source that reads the recipe file.

pub mod build;
pub mod engine;
pub mod export;
pub mod failure;
pub mod locals;
pub mod options;
pub mod subrequests;
pub mod transport;

pub use build::{build, serve};
pub use engine::Engine;
pub use failure::Failure;
pub use options::{Environment, FrontendOptions};
