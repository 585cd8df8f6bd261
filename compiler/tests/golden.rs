//! Golden snapshots of the LLB (its readable JSON form, decoded from the
//! bytes) and the image config, for every example and variant, and for the
//! lowering rules the examples do not reach. Review a changed snapshot like
//! code: `cargo insta review`, or `INSTA_UPDATE=always cargo test` and read
//! the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_compiler::{EngineCaps, ImageConfig, Options, Platform, ResolvedImage};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn examples() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dir = root().join("examples");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for e in entries {
        let recipe = e.join("kiln.kdl");
        if recipe.is_file() {
            let name = e
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("?")
                .to_string();
            out.push((name, std::fs::read_to_string(recipe).expect("readable")));
        }
    }
    out
}

/// The resolved python:3.11-slim config, as an engine answers it.
fn slim_config() -> BTreeMap<String, ResolvedImage> {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python-3.11-slim.json"),
    )
    .expect("fixture");
    let config = ImageConfig::from_json(&bytes).expect("config");
    let mut m = BTreeMap::new();
    m.insert(
        "docker.io/library/python:3.11-slim".to_string(),
        ResolvedImage {
            digest: Some(format!("sha256:{}", "1".repeat(64))),
            config,
        },
    );
    m
}

fn snapshot(name: &str, text: &str, opts: &Options) -> Value {
    let compiled = match kiln_compiler::compile(&format!("{name}/kiln.kdl"), text, opts) {
        Ok(c) => c,
        Err(d) => panic!("{name}: {}", d.render_plain()),
    };
    let builds: Vec<Value> = compiled
        .builds
        .iter()
        .map(|b| {
            json!({
                "platform": b.platform.to_string(),
                "llb": kiln_compiler::llb::definition_json(&b.definition),
                "checks": b.checks.as_ref().map(kiln_compiler::llb::definition_json),
                "config": serde_json::from_slice::<Value>(&b.config.to_json()).expect("json"),
            })
        })
        .collect();
    let warnings: Vec<String> = compiled
        .warnings
        .items
        .iter()
        .map(|d| {
            format!(
                "{} {}: {}",
                compiled.warnings.location(d),
                d.code,
                d.message
            )
        })
        .collect();
    json!({ "variant": compiled.variant, "warnings": warnings, "builds": builds })
}

#[test]
fn every_example_and_variant() {
    let all = examples();
    assert!(all.len() >= 5, "the five seed examples");
    for (name, text) in all {
        let loaded = kiln_compiler::load("kiln.kdl", &text).expect("loads");
        let mut targets: Vec<Option<String>> = loaded
            .recipe
            .variants
            .iter()
            .map(|v| Some(v.name.value.clone()))
            .collect();
        if targets.is_empty() {
            targets.push(None);
        }
        for t in targets {
            let opts = Options {
                target: t.clone(),
                images: slim_config(),
                ..Options::default()
            };
            let snap = format!("{name}@{}", t.as_deref().unwrap_or("default"));
            insta::assert_json_snapshot!(snap, snapshot(&name, &text, &opts));
        }
    }
}

#[test]
fn fallback_without_mergeop_copies_the_venv() {
    for (name, text) in examples()
        .into_iter()
        .filter(|(n, _)| n == "sklearn-service" || n == "pytorch-cuda")
    {
        let opts = Options {
            caps: EngineCaps::legacy(),
            images: slim_config(),
            ..Options::default()
        };
        let value = snapshot(&name, &text, &opts);
        let ops = value["builds"][0]["llb"]["ops"]
            .as_array()
            .expect("ops")
            .clone();
        assert!(
            ops.iter()
                .all(|o| o.get("merge").is_none() && o.get("diff").is_none()),
            "{name}: no MergeOp/DiffOp for an old engine"
        );
        insta::assert_json_snapshot!(format!("{name}@legacy"), value);
    }
}

#[test]
fn rules_the_examples_do_not_reach() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lowering");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/lowering")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "kdl"))
        .collect();
    files.sort();
    for f in files {
        let name = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_string();
        let text = std::fs::read_to_string(&f).expect("readable");
        let platforms = text
            .lines()
            .find_map(|l| l.strip_prefix("// platforms: "))
            .map(|p| {
                p.split(',')
                    .map(|x| Platform::parse(x).expect("platform"))
                    .collect()
            })
            .unwrap_or_default();
        let mut build_args = BTreeMap::new();
        for l in text
            .lines()
            .filter_map(|l| l.strip_prefix("// build-arg: "))
        {
            if let Some((k, v)) = l.split_once('=') {
                build_args.insert(k.to_string(), v.to_string());
            }
        }
        // `// context-file: PATH=TEXT` (`\n` for a line break): a file of
        // the build context, as the caller read it; `PATH=` alone: missing.
        let mut context_files = BTreeMap::new();
        for l in text
            .lines()
            .filter_map(|l| l.strip_prefix("// context-file: "))
        {
            if let Some((k, v)) = l.split_once('=') {
                let v = (!v.is_empty()).then(|| v.replace("\\n", "\n"));
                context_files.insert(k.to_string(), v);
            }
        }
        let opts = Options {
            platforms,
            build_args,
            context_files,
            target: text
                .lines()
                .find_map(|l| l.strip_prefix("// target: "))
                .map(str::to_string),
            images: slim_config(),
            ..Options::default()
        };
        insta::assert_json_snapshot!(format!("lowering-{name}"), snapshot(&name, &text, &opts));
    }
}

#[test]
fn same_recipe_same_bytes() {
    for (name, text) in examples() {
        let opts = Options {
            images: slim_config(),
            ..Options::default()
        };
        let a = kiln_compiler::compile("kiln.kdl", &text, &opts).expect("compiles");
        let b = kiln_compiler::compile("kiln.kdl", &text, &opts).expect("compiles");
        for (x, y) in a.builds.iter().zip(&b.builds) {
            assert_eq!(x.bytes, y.bytes, "{name}: two compiles, identical bytes");
            assert_eq!(
                x.config.to_json(),
                y.config.to_json(),
                "{name}: identical configs"
            );
        }
    }
}

/// The name of the op an input (`DIGEST:INDEX`) refers to.
fn input_name(ops: &[Value], input: &Value) -> String {
    let digest = input
        .as_str()
        .expect("input")
        .split(':')
        .next()
        .unwrap_or("");
    ops.iter()
        .find(|o| o["digest"] == digest)
        .and_then(|o| o["name"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// The inputs of the graph's last MergeOp (the image's join), by op name.
fn final_join_inputs(value: &Value) -> Vec<String> {
    let ops = value["builds"][0]["llb"]["ops"].as_array().expect("ops");
    let name_of = |input: &Value| input_name(ops, input);
    let join = ops
        .iter()
        .rev()
        .find(|o| o.get("merge").is_some())
        .expect("a MergeOp");
    join["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(name_of)
        .collect()
}

#[test]
fn joins_start_from_the_environment_chain_when_the_builder_is_the_runtime_base() {
    let compile = |text: &str| {
        let opts = Options {
            images: slim_config(),
            ..Options::default()
        };
        snapshot("join-order", text, &opts)
    };
    // Builder = runtime base: the venv's chain first (the engine mounts it
    // as it is), the runtime's own steps as one layer after the packages.
    let same = compile(
        "kiln 1\npython \"3.11\"\npip \"six==1.16.0\" \"idna==3.7\"\nuser \"app\" uid=1000\ncopy \"app\" \"/app\"\n",
    );
    let inputs = final_join_inputs(&same);
    assert!(
        inputs[0].ends_with("python -m venv /opt/venv"),
        "{inputs:?}"
    );
    assert!(inputs[1].ends_with("layer: six==1.16.0"), "{inputs:?}");
    assert!(
        inputs[inputs.len() - 3].ends_with("layer: runtime steps"),
        "{inputs:?}"
    );
    assert!(
        inputs[inputs.len() - 2].ends_with("layer: remaining requirements"),
        "{inputs:?}"
    );
    assert!(!inputs.iter().any(|i| i.ends_with("layer: environment")));
    // A builder with packages of its own: the runtime first, the venv as a
    // diff of the builder, so nothing of the builder's packages is joined.
    let other = compile(
        "kiln 1\npython \"3.11\"\napt \"build-essential\" stage=\"build\"\npip \"six==1.16.0\"\nuser \"app\" uid=1000\ncopy \"app\" \"/app\"\n",
    );
    let inputs = final_join_inputs(&other);
    assert!(inputs[0].ends_with("user app (1000:1000)"), "{inputs:?}");
    assert!(inputs[1].ends_with("layer: environment"), "{inputs:?}");
}

/// The pins check op of a compiled recipe, with the names of the states
/// its root and its `/kiln/pins/*` mounts come from.
fn pins_check(text: &str) -> (String, Vec<String>, Value) {
    let opts = Options {
        images: slim_config(),
        ..Options::default()
    };
    let value = snapshot("pins-check", text, &opts);
    let ops = value["builds"][0]["llb"]["ops"]
        .as_array()
        .expect("ops")
        .clone();
    let check = ops
        .iter()
        .find(|o| {
            o["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("pip: dependencies the pins did not name"))
        })
        .expect("the pins check")
        .clone();
    let inputs = check["inputs"].as_array().expect("inputs");
    let root = input_name(&ops, &inputs[0]);
    let pins = check["exec"]["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter(|m| {
            m["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("/kiln/pins/"))
        })
        .map(|m| input_name(&ops, &inputs[m["input"].as_u64().expect("input") as usize]))
        .collect();
    (root, pins, value)
}

#[test]
fn the_pins_check_runs_on_the_join_when_the_builder_is_the_runtime_base() {
    // Nothing mounted: pip sees the pins installed as the image has them,
    // and the checks run on the step's result, the one join materialized.
    let (root, pins, value) = pins_check(
        "kiln 1\npython \"3.11\"\npip \"six==1.16.0\" \"idna==3.7\"\nuser \"app\"\nverify \"import six\"\n",
    );
    assert!(root.ends_with("join runtime + environment"), "{root}");
    assert!(pins.is_empty(), "{pins:?}");
    let checks = value["builds"][0]["checks"]["ops"]
        .as_array()
        .expect("checks");
    let verify = checks
        .iter()
        .find(|o| {
            o["name"]
                .as_str()
                .is_some_and(|n| n.contains("verify: import six"))
        })
        .expect("the verify op");
    let on = input_name(checks, &verify["inputs"][0]);
    assert!(
        on.ends_with("pip: dependencies the pins did not name"),
        "{on}"
    );
}

#[test]
fn a_separate_builder_mounts_each_install_step_for_the_pins_check() {
    // A builder with packages of its own: the check runs there, with each
    // install step mounted (not its layer: a mounted DiffOp result broke the
    // step's cache key on BuildKit 0.13 when the layer was cached and its
    // install step was not).
    let (root, pins, _) = pins_check(
        "kiln 1\npython \"3.11\"\napt \"build-essential\" stage=\"build\"\npip \"six==1.16.0\" \"idna==3.7\"\n",
    );
    assert!(root.ends_with("python -m venv /opt/venv"), "{root}");
    assert_eq!(pins.len(), 2, "{pins:?}");
    assert!(pins[0].ends_with("pip install six==1.16.0"), "{pins:?}");
    assert!(pins[1].ends_with("pip install idna==3.7"), "{pins:?}");
}

#[test]
fn no_pip_step_sees_the_runtimes_apt_packages() {
    // With runtime apt packages (a compiler and headers, say), the last pip
    // step runs in the builder as the pins' steps do: a loose requirement
    // must not build against packages a pinned one would not see.
    let (root, pins, _) = pins_check(
        "kiln 1\npython \"3.11\"\napt \"gcc\" \"libpq-dev\"\npip \"six==1.16.0\" \"idna==3.7\"\n",
    );
    assert!(root.ends_with("python -m venv /opt/venv"), "{root}");
    assert_eq!(pins.len(), 2, "{pins:?}");
    let opts = Options {
        images: slim_config(),
        ..Options::default()
    };
    let value = snapshot(
        "loose-with-apt",
        "kiln 1\npython \"3.11\"\napt \"gcc\"\npip \"psycopg2>=2.9\"\n",
        &opts,
    );
    let ops = value["builds"][0]["llb"]["ops"].as_array().expect("ops");
    let step = ops
        .iter()
        .find(|o| {
            o["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("pip install: remaining requirements"))
        })
        .expect("the loose requirements' step");
    let on = input_name(ops, &step["inputs"][0]);
    assert!(on.ends_with("python -m venv /opt/venv"), "{on}");
}

/// What each per-package step of `target` installs, in order, with the
/// context files given.
fn pin_installs(text: &str, target: &str, files: &[(&str, &str)]) -> Vec<String> {
    let mut opts = Options {
        images: slim_config(),
        target: Some(target.to_string()),
        ..Options::default()
    };
    for (path, content) in files {
        opts.context_files
            .insert(path.to_string(), Some(content.to_string()));
    }
    let value = snapshot("variant-pins", text, &opts);
    value["builds"][0]["llb"]["ops"]
        .as_array()
        .expect("ops")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .filter_map(|n| n.split_once("] pip install ").map(|(_, s)| s.to_string()))
        .collect()
}

#[test]
fn a_variant_pin_replaces_the_top_level_pin_of_the_same_package() {
    let text = "kiln 1\npython \"3.11\"\npip \"numpy==1.26.4\" \"pandas==2.2.2\"\nvariant \"old\" default=#true\nvariant \"new\" {\n    pip \"NumPy==2.0.2\"\n}\n";
    assert_eq!(
        pin_installs(text, "old", &[]),
        vec!["numpy==1.26.4", "pandas==2.2.2"]
    );
    assert_eq!(
        pin_installs(text, "new", &[]),
        vec!["pandas==2.2.2", "NumPy==2.0.2"]
    );
}

#[test]
fn a_variant_pin_replaces_the_same_package_in_a_top_level_lock() {
    let text = "kiln 1\npython \"3.11\"\npip requirements=\"lock.txt\"\nvariant \"old\" default=#true\nvariant \"new\" {\n    pip \"numpy==2.0.2\"\n}\n";
    let lock = [("lock.txt", "numpy==1.26.4\npandas==2.2.2\n")];
    assert_eq!(
        pin_installs(text, "old", &lock),
        vec!["numpy==1.26.4", "pandas==2.2.2"]
    );
    assert_eq!(
        pin_installs(text, "new", &lock),
        vec!["pandas==2.2.2", "numpy==2.0.2"]
    );
}

/// `--add-host`, `--ulimit` and `--shm-size` reach every step, the checks
/// included, as a Dockerfile's RUN gets them.
#[test]
fn the_clients_sandbox_settings_reach_every_step() {
    let opts = Options {
        images: slim_config(),
        extra_hosts: vec![("pypi.internal".into(), "10.0.0.5".into())],
        ulimits: vec![("nofile".into(), 1024, 2048)],
        shm_size: Some(256 << 20),
        ..Options::default()
    };
    let text = "kiln 1\npython \"3.11\"\napt \"curl\"\npip \"six==1.16.0\"\nuser \"app\"\nrun \"true\"\nverify \"import six\"\n";
    let value = snapshot("sandbox", text, &opts);
    let mut execs = 0;
    for def in ["llb", "checks"] {
        for op in value["builds"][0][def]["ops"].as_array().expect("ops") {
            let Some(exec) = op.get("exec") else { continue };
            execs += 1;
            assert_eq!(
                exec["extra_hosts"],
                json!(["pypi.internal=10.0.0.5"]),
                "{}",
                op["name"]
            );
            assert_eq!(
                exec["ulimit"],
                json!(["nofile=1024:2048"]),
                "{}",
                op["name"]
            );
            let shm = exec["mounts"]
                .as_array()
                .expect("mounts")
                .iter()
                .find(|m| m["target"] == "/dev/shm")
                .unwrap_or_else(|| panic!("no /dev/shm in {}", op["name"]));
            assert_eq!(shm["type"], "tmpfs");
            assert_eq!(shm["size"], 256 << 20);
            let caps: Vec<&str> = op["caps"]
                .as_array()
                .expect("caps")
                .iter()
                .filter_map(|c| c.as_str())
                .collect();
            assert!(caps.contains(&"exec.meta.ulimit") && caps.contains(&"exec.mount.tmpfs.size"));
        }
    }
    assert!(execs >= 6, "{execs} execs");
}

/// `expose "9090/UDP"` is Docker's `9090/udp`.
#[test]
fn exposed_protocols_are_lower_case() {
    let opts = Options {
        images: slim_config(),
        ..Options::default()
    };
    let value = snapshot(
        "expose",
        "kiln 1\npython \"3.11\"\nexpose 8080 \"9090/UDP\"\n",
        &opts,
    );
    let ports = &value["builds"][0]["config"]["config"]["ExposedPorts"];
    assert!(ports.get("9090/udp").is_some(), "{ports}");
    assert!(ports.get("8080/tcp").is_some(), "{ports}");
}

/// uv is installed from PyPI: its step trusts the CA bundle but never sees
/// a private index's credentials.
#[test]
fn installing_uv_mounts_no_index_credentials() {
    let opts = Options {
        images: slim_config(),
        ..Options::default()
    };
    let value = snapshot(
        "uv-secrets",
        "kiln 1\npython \"3.11\"\ninstaller \"uv\"\npip \"six==1.16.0\"\npip index=\"https://pypi.example.org/simple\" secret=\"pip-index\"\nca-bundle secret=\"ca\"\n",
        &opts,
    );
    let ops = value["builds"][0]["llb"]["ops"].as_array().expect("ops");
    let secrets = |needle: &str| -> Vec<String> {
        let op = ops
            .iter()
            .find(|o| o["name"].as_str().is_some_and(|n| n.contains(needle)))
            .expect("the op");
        op["exec"]["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter_map(|m| m["secret"]["id"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(secrets("install uv (builder only)"), ["ca"]);
    assert_eq!(secrets("pip install six==1.16.0"), ["ca", "pip-index"]);
}

/// Loose requirements from several `pip` lines install in one step, which
/// points at every one of those lines (a failing one is any of them).
#[test]
fn the_loose_requirements_step_points_at_every_line_it_installs() {
    let opts = Options {
        images: slim_config(),
        ..Options::default()
    };
    let value = snapshot(
        "loose-lines",
        "kiln 1\npython \"3.11\"\npip \"tabulate>=0.9\"\npip \"six==1.16.0\"\npip \"attrs>=22\"\npip \"idna>=3\"\n",
        &opts,
    );
    let llb = &value["builds"][0]["llb"];
    let step = llb["ops"]
        .as_array()
        .expect("ops")
        .iter()
        .find(|o| {
            o["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("pip install: remaining requirements"))
        })
        .expect("the step");
    let digest = step["digest"].as_str().expect("digest");
    let lines: Vec<&str> = llb["source_map"]["locations"][digest]
        .as_array()
        .expect("locations")
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (l, want) in lines.iter().zip(["3:", "5:", "6:"]) {
        assert!(l.starts_with(want), "{lines:?}");
    }
}

/// Every exec's KILN_STEP script of `target`.
fn step_scripts(text: &str, target: &str) -> Vec<String> {
    let opts = Options {
        images: slim_config(),
        target: Some(target.to_string()),
        ..Options::default()
    };
    let value = snapshot("build-extras", text, &opts);
    value["builds"][0]["llb"]["ops"]
        .as_array()
        .expect("ops")
        .iter()
        .filter_map(|o| o["exec"]["env"].as_array())
        .flatten()
        .filter_map(|e| e.as_str()?.strip_prefix("KILN_STEP=").map(str::to_string))
        .collect()
}

/// `tensorflow[and-cuda]` or `jax[cuda12]` in a shared `pip` line: the
/// framework step chooses the build per variant, so the CPU variant gets
/// no CUDA build next to its CPU one; other extras stay.
#[test]
fn a_frameworks_build_extras_in_pip_stay_with_the_framework_step() {
    let tf = "kiln 1\npython \"3.11\"\nframework \"tensorflow\" \"2.16.1\"\npip \"tensorflow[and-cuda]==2.16.1\"\nvariant \"cpu\" default=#true\nvariant \"gpu\" {\n    cuda \"12.3\"\n}\n";
    let cpu = step_scripts(tf, "cpu");
    assert!(cpu.iter().any(|s| s.contains("tensorflow-cpu==2.16.1")));
    assert!(cpu.iter().all(|s| !s.contains("and-cuda")), "{cpu:#?}");
    let gpu = step_scripts(tf, "gpu");
    assert!(
        gpu.iter()
            .any(|s| s.contains("tensorflow[and-cuda]==2.16.1"))
    );
    let jax = "kiln 1\npython \"3.11\"\nframework \"jax\" \"0.4.30\"\npip \"jax[cuda12,k8s]==0.4.30\" \"flax\"\nvariant \"cpu\" default=#true\nvariant \"gpu\" {\n    cuda \"12.3\"\n}\n";
    let cpu = step_scripts(jax, "cpu");
    assert!(
        cpu.iter().any(|s| s.contains("'jax[k8s]==0.4.30'")),
        "{cpu:#?}"
    );
    assert!(cpu.iter().all(|s| !s.contains("cuda12")), "{cpu:#?}");
    let gpu = step_scripts(jax, "gpu");
    assert!(
        gpu.iter().any(|s| s.contains("jax[cuda12]==0.4.30")),
        "{gpu:#?}"
    );
}
