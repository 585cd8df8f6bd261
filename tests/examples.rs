//! The examples' CPU variants, built from `examples/` through the frontend
//! image exactly as the README shows (`docker buildx build -f
//! examples/NAME/kiln.kdl --target cpu examples/NAME`), and run.
//!
//! They run with `KILN_E2E=1` (`make test`); the TensorFlow ones download
//! several hundred MB of wheels each and also need `KILN_E2E_EXAMPLES=1`
//! (`make test-examples`). The conda example needs conda's channels, which
//! the test machines cannot reach.

mod common;

use common::{Build, EngineKind, Image};

/// The engine for a heavy example, when both the engine tests and the
/// heavy examples are asked for.
fn heavy_example_engine(test: &str) -> Option<&'static common::Engine> {
    let engine = common::engine(EngineKind::New, test)?;
    let on = std::env::var("KILN_E2E_EXAMPLES").as_deref() == Ok("1");
    if !on {
        eprintln!("*** {test}: SKIPPED: set KILN_E2E_EXAMPLES=1 (make test-examples) ***");
    }
    on.then_some(engine)
}

/// Build `examples/NAME` for `target` and check the config every example
/// shares: the recipe's user and workdir, the venv first on PATH, the
/// recipe digest and variant labels.
fn build_example(
    engine: &'static common::Engine,
    name: &str,
    target: &str,
    user: &str,
    workdir: &str,
) -> Image {
    let dir = common::repo().join("examples").join(name);
    let image = engine.image(&format!("example-{name}"));
    engine
        .build(
            &Build::new(dir.join("kiln.kdl"), &dir)
                .target(target)
                .tag(&image),
        )
        .expect_ok();
    let inspect = image.inspect();
    let config = &inspect["Config"];
    // The user as uid:gid (what Kubernetes' runAsNonRoot checks), and the
    // name the image's passwd gives that uid.
    assert_eq!(config["User"], "1000:1000", "{config:#}");
    assert_eq!(image.sh("id -un").trim(), user);
    assert_eq!(config["WorkingDir"], workdir, "{config:#}");
    let env = config["Env"].to_string();
    assert!(env.contains("PATH=/opt/venv/bin:"), "{env}");
    assert!(env.contains("VIRTUAL_ENV=/opt/venv"), "{env}");
    let labels = &config["Labels"];
    assert_eq!(labels["kiln.variant"], target, "{labels:#}");
    assert!(
        labels["kiln.recipe.digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{labels:#}"
    );
    // No cache of pip's or apt's in any layer.
    let leftovers = image.sh_as(
        Some("root"),
        "find /root/.cache /var/cache/apt/archives /var/lib/apt/lists -type f 2>/dev/null | grep -v /partial/ | head -5",
    );
    assert_eq!(leftovers.trim(), "", "caches in {}", image.tag);
    image
}

#[test]
fn sklearn_service_cpu_builds_and_serves() {
    let Some(engine) = common::engine(EngineKind::New, "example_sklearn") else {
        return;
    };
    let image = build_example(engine, "sklearn-service", "cpu", "app", "/app");
    let out = image.run(&[]);
    assert!(
        out.contains("sklearn-service: y(20) = 61.0 (running as app in /app)"),
        "{out}"
    );
}

#[test]
fn tf_gpu_training_cpu_trains_with_tensorflow_cpu() {
    let Some(engine) = heavy_example_engine("example_tf_training") else {
        return;
    };
    let image = build_example(engine, "tf-gpu-training", "cpu", "trainer", "/app");
    let out = image.run(&["python", "train.py", "--epochs", "2"]);
    assert!(out.contains("GPUs: []"), "{out}");
    assert!(out.contains("Epoch 2/2"), "{out}");
    // protobuf stays the one TensorFlow 2.16 needs (a later requirement's
    // dependency once pulled protobuf 7 and broke its messages).
    assert!(!out.contains("GetPrototype"), "{out}");
    let freeze = image.exec(&["pip", "freeze"]);
    assert!(freeze.contains("tensorflow-cpu==2.16.1"), "{freeze}");
    assert!(
        !freeze.lines().any(|l| l.starts_with("tensorflow==")),
        "a second, full tensorflow: {freeze}"
    );
    image.exec(&["pip", "check"]);
}

#[test]
fn tf_object_detection_cpu_has_opencv_and_tensorflow() {
    let Some(engine) = heavy_example_engine("example_tf_detection") else {
        return;
    };
    let image = build_example(engine, "tf-object-detection", "cpu", "app", "/app");
    // entrypoint python /app/detect.py, cmd --help.
    let out = image.run(&[]);
    assert!(out.contains("usage: detect.py"), "{out}");
    let run = image.run_with(
        &["--entrypoint", "python"],
        &[
            "-c",
            "import cv2, tensorflow as tf, tensorflow_hub; print(cv2.__version__, tf.__version__)",
        ],
    );
    assert!(run.stdout.contains("4.10.0 2.15.1"), "{run:?}");
    let freeze = image.exec(&["pip", "freeze"]);
    assert!(freeze.contains("tensorflow-cpu==2.15.1"), "{freeze}");
    assert!(
        !freeze.lines().any(|l| l.starts_with("tensorflow==")),
        "{freeze}"
    );
}
