//! The frontend's own overhead: from connecting to the engine to its
//! `Return`, with a fake engine that answers every call at once (so base
//! image resolution and solving cost nothing and what is measured is
//! kiln: HTTP/2 over the pipe, reading the recipe, compiling, assembling the
//! result). Target: well under 100 ms per build.
//!
//! `cargo bench -p kiln-frontend` (or `--bench overhead -- ITERATIONS`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{FakeEngine, run_frontend};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    name: &str,
    fixture: &str,
    opts: &[(&str, &str)],
    iterations: usize,
) {
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let engine = FakeEngine::new().with_fixture("env.kdl", fixture);
        let start = Instant::now();
        let code = runtime.block_on(run_frontend(&engine, opts));
        times.push(start.elapsed());
        assert_eq!(code, 0, "{name}: {:?}", engine.recorded().returns);
    }
    times.sort();
    println!(
        "{name:<40} median {:>8.2?}  p95 {:>8.2?}  max {:>8.2?}  ({iterations} runs)",
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        times[times.len() - 1],
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a bare number sets the iterations.
    let iterations = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(50)
        .max(1);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    let base = [("filename", "env.kdl")];
    measure(
        &runtime,
        "build, 1 platform (env.kdl)",
        "env.kdl",
        &base,
        iterations,
    );
    measure(
        &runtime,
        "build, 2 platforms (env.kdl)",
        "env.kdl",
        &[
            ("filename", "env.kdl"),
            ("platform", "linux/amd64,linux/arm64"),
        ],
        iterations,
    );
    measure(
        &runtime,
        "subrequest frontend.targets",
        "env.kdl",
        &[("filename", "env.kdl"), ("requestid", "frontend.targets")],
        iterations,
    );
}
