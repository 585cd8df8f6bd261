//! Every diagnostic class, pinned: each file in `tests/diagnostics/` is a
//! recipe with one mistake (or several), and ends with the problems kiln must
//! report, one `// expect: LINE:COL CODE MESSAGE` line each, in order.
//! `// target: V` and `// platforms: P` lines set the compile options.

use std::path::Path;

use kiln_compiler::{Options, Platform};

struct Expect {
    location: String,
    code: String,
    message: String,
}

fn expectations(text: &str) -> Vec<Expect> {
    text.lines()
        .filter_map(|l| l.strip_prefix("// expect: "))
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            Expect {
                location: parts.next().unwrap_or_default().to_string(),
                code: parts.next().unwrap_or_default().to_string(),
                message: parts.next().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

fn option(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("// {key}: ")))
        .map(str::to_string)
}

/// The packages of the framework step of a recipe's default variant.
fn framework_packages(text: &str) -> Vec<String> {
    let (plans, _) = kiln_compiler::load("f.kdl", text)
        .expect("loads")
        .plan(&Options::default())
        .expect("plans");
    plans[0]
        .framework
        .as_ref()
        .expect("framework")
        .packages
        .clone()
}

/// `FILE:LINE:COL CODE` of each warning of a recipe that compiles.
fn warning_codes(name: &str, text: &str) -> Vec<String> {
    let c = kiln_compiler::compile(name, text, &Options::default()).expect("compiles");
    c.warnings
        .items
        .iter()
        .map(|d| format!("{} {}", c.warnings.location(d), d.code))
        .collect()
}

/// Each diagnostic as `FILE:LINE:COL CODE MESSAGE`.
fn located(d: &kiln_compiler::Diagnostics) -> Vec<String> {
    d.items
        .iter()
        .map(|x| format!("{} {} {}", d.location(x), x.code, x.message))
        .collect()
}

#[test]
fn every_diagnostic_names_file_line_col_code_and_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diagnostics");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/diagnostics exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "kdl"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "one fixture per diagnostic class");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        let name = format!(
            "{}.kdl",
            path.file_stem().and_then(|s| s.to_str()).unwrap_or("?")
        );
        let expected = expectations(&text);
        assert!(!expected.is_empty(), "{name} has // expect: lines");
        let opts = Options {
            target: option(&text, "target"),
            platforms: option(&text, "platforms")
                .map(|p| vec![Platform::parse(&p).expect("platform")])
                .unwrap_or_default(),
            ..Options::default()
        };
        let diags = match kiln_compiler::compile(&name, &text, &opts) {
            Ok(_) => panic!("{name} compiled, but it should fail"),
            Err(d) => d,
        };
        let got = located(&diags);
        let want: Vec<String> = expected
            .iter()
            .map(|e| format!("{name}:{} {} {}", e.location, e.code, e.message))
            .collect();
        assert_eq!(got, want, "diagnostics of {name}");
        // The plain rendering (what the frontend sends the engine) carries
        // the location and the code too, and every error has a help line or
        // a label that says what to do.
        let plain = diags.render_plain();
        for e in &expected {
            assert!(
                plain.contains(&format!("{name}:{}: error[{}]", e.location, e.code))
                    || plain.contains(&format!("{name}:{}: warning[{}]", e.location, e.code)),
                "{name}: plain rendering names {}: {plain}",
                e.location
            );
        }
    }
}

#[test]
fn unknown_names_suggest_the_nearest_known_one() {
    for (text, want) in [
        (
            "kiln 1\npython \"3.11\"\nwrkdir \"/app\"\n",
            "did you mean `workdir`?",
        ),
        (
            "kiln 1\npython \"3.11\"\nframework \"tensorflw\" \"2.16.1\"\n",
            "did you mean `tensorflow`?",
        ),
        (
            "kiln 1\npython 3.10\n",
            "write versions as strings: \"3.10\"",
        ),
        (
            "kiln 1\npython \"3.11\"\nadd \"m.bin\" \"/m/\"\n",
            "ADD of context files is `copy \"SRC\" \"DEST\"`",
        ),
        (
            "kiln 1\npython \"3.11\"\nWORKDIR \"/app\"\n",
            "kiln's nodes are lowercase: write `workdir`",
        ),
        (
            "kiln 1\npython \"3.11\"\nvolume \"/data\"\n",
            "kiln does not set a Dockerfile's VOLUME",
        ),
    ] {
        let diags = kiln_compiler::compile("r.kdl", text, &Options::default()).expect_err("fails");
        let help: Vec<&str> = diags
            .items
            .iter()
            .filter_map(|d| d.help.as_deref())
            .collect();
        assert!(help.iter().any(|h| h.contains(want)), "{text:?}: {help:?}");
    }
}

#[test]
fn kdl_v1_recipes_are_read_and_located() {
    // KDL v1 spells booleans `true`; kiln reads v1 documents too.
    let v1 = "kiln 1\npython \"3.11\"\nvariant \"cpu\" default=true\nvariant \"gpu\" { cuda \"12.4\"; }\npip \"six==1.16.0\"\n";
    let c =
        kiln_compiler::compile("v1.kdl", v1, &Options::default()).expect("a v1 recipe compiles");
    assert_eq!(c.variant, "cpu");
    let bad = "kiln 1\npython \"3.11\"\nvariant \"cpu\" default=true\nfrmework \"jax\"\n";
    let d = kiln_compiler::compile("v1.kdl", bad, &Options::default()).expect_err("unknown node");
    assert_eq!(d.location(&d.items[0]), "v1.kdl:4:1");
}

/// Options with the engine's config for `python:3.11-slim` (amd64, this
/// environment).
fn with_slim_base(env: &[&str]) -> Options {
    use kiln_compiler::{ImageConfig, ResolvedImage};
    let config = ImageConfig::from_json(
        serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": env},
            "rootfs": {"type": "layers", "diff_ids": []}
        })
        .to_string()
        .as_bytes(),
    )
    .expect("config");
    Options {
        images: [(
            "docker.io/library/python:3.11-slim".to_string(),
            ResolvedImage {
                digest: None,
                config,
            },
        )]
        .into_iter()
        .collect(),
        ..Options::default()
    }
}

#[test]
fn warnings_name_the_line_and_the_build_goes_on() {
    let opts = with_slim_base(&["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"]);
    let text = "kiln 1\npython \"3.11\"\nframework \"pytorch\" \"2.4.1\"\npip \"torch==2.4.1\" \"six==1.16.0\"\nenv LD_LIBRARY_PATH=\"/usr/local/cuda/lib64:$LD_LIBRARY_PATH\" LC_ALL=\"$LANG\"\n";
    let compiled = kiln_compiler::compile("w.kdl", text, &opts).expect("compiles with warnings");
    let got: Vec<String> = compiled
        .warnings
        .items
        .iter()
        .map(|d| format!("{} {}", compiled.warnings.location(d), d.code))
        .collect();
    assert_eq!(
        got,
        vec![
            "w.kdl:4:1 kiln::framework_in_pip",
            "w.kdl:5:5 kiln::unset_variable"
        ]
    );
    let build = &compiled.builds[0];
    let env = build.config.env_pairs();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("LD_LIBRARY_PATH"), Some("/usr/local/cuda/lib64:"));
    assert_eq!(get("LC_ALL"), Some("C.UTF-8"));

    // Without the base's config (the CLI with no --base-config) the same
    // variables are unknown: one warning per entry names them and the base.
    let compiled = kiln_compiler::compile("w.kdl", text, &Options::default()).expect("compiles");
    let unknown: Vec<&str> = compiled
        .warnings
        .items
        .iter()
        .filter(|d| d.code == "kiln::base_config_unknown")
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(unknown.len(), 2, "{unknown:?}");
    assert!(
        unknown[0].starts_with(
            "`$LD_LIBRARY_PATH` may come from the base image `docker.io/library/python:3.11-slim`"
        ),
        "{unknown:?}"
    );
    assert!(unknown[1].starts_with("`$LANG` may come"), "{unknown:?}");
}

#[test]
fn a_gpu_variant_that_nothing_brings_cuda_to_is_a_warning() {
    let warnings = |text: &str| -> Vec<String> {
        let c = kiln_compiler::compile("g.kdl", text, &Options::default()).expect("compiles");
        c.warnings
            .items
            .iter()
            .map(|d| format!("{} {}", c.warnings.location(d), d.code))
            .collect()
    };
    let gpu = "variant \"gpu\" {\n    cuda \"12.4\"\n}\n";
    assert_eq!(
        warnings(&format!(
            "kiln 1\npython \"3.11\"\npip \"cupy-cuda12x==13.3.0\"\n{gpu}"
        )),
        vec!["g.kdl:5:5 kiln::no_cuda"]
    );
    // The framework's GPU wheels bring CUDA; so do NVIDIA's own wheels.
    assert!(
        warnings(&format!(
            "kiln 1\npython \"3.11\"\nframework \"pytorch\" \"2.4.1\"\n{gpu}"
        ))
        .is_empty()
    );
    assert!(
        warnings(&format!(
            "kiln 1\npython \"3.11\"\npip \"cupy-cuda12x==13.3.0\" \"nvidia-cuda-runtime-cu12==12.4.127\"\n{gpu}"
        ))
        .is_empty()
    );
}

#[test]
fn versions_may_come_from_build_arguments() {
    let text = "kiln 1\narg \"PY\" default=\"3.11\"\narg \"TORCH\" default=\"2.4.1\"\npython \"${PY}\"\nframework \"pytorch\" \"${TORCH}\"\n";
    let with = |args: &[(&str, &str)]| Options {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Options::default()
    };
    let compiled = kiln_compiler::compile("a.kdl", text, &with(&[])).expect("the defaults");
    let explain = |c: &kiln_compiler::Compiled| kiln_compiler::explain::explain(&c.builds[0].plan);
    assert!(
        explain(&compiled).contains("python:3.11-slim"),
        "{}",
        explain(&compiled)
    );
    let compiled =
        kiln_compiler::compile("a.kdl", text, &with(&[("PY", "3.12"), ("TORCH", "2.5.1")]))
            .expect("a matrix entry");
    let e = explain(&compiled);
    assert!(
        e.contains("python:3.12-slim") && e.contains("torch==2.5.1"),
        "{e}"
    );
    let errors = |args: &[(&str, &str)]| -> Vec<String> {
        let d = kiln_compiler::compile("a.kdl", text, &with(args)).expect_err("fails");
        d.items
            .iter()
            .map(|x| format!("{} {}: {}", d.location(x), x.code, x.message))
            .collect()
    };
    assert_eq!(
        errors(&[("PY", "2.7")]),
        vec![
            "a.kdl:4:8 kiln::invalid_version: `${PY}` is `2.7` here, which is not a python 3.8+ version"
        ]
    );
    assert_eq!(
        errors(&[("TORCH", "latest")]),
        vec![
            "a.kdl:5:1 kiln::invalid_version: `${TORCH}` is `latest` here, which is not a framework version"
        ]
    );
}

/// A release newer than the data, for a CUDA the data does not know: two
/// warnings, and the newest CUDA build's index renamed (whl/cu134), with
/// the verify checking the CUDA asked for.
#[test]
fn a_newer_release_for_a_newer_cuda_is_a_warning_and_a_renamed_index() {
    let text = "kiln 1\npython \"3.11\"\nframework \"pytorch\" \"2.16.0\"\ncuda \"13.4\"\n";
    let c = kiln_compiler::compile("n.kdl", text, &Options::default()).expect("compiles");
    let got: Vec<String> = c
        .warnings
        .items
        .iter()
        .map(|d| format!("{} {}", c.warnings.location(d), d.code))
        .collect();
    assert_eq!(
        got,
        [
            "n.kdl:3:1 kiln::newer_than_data",
            "n.kdl:4:1 kiln::newer_than_data"
        ]
    );
    let plans = kiln_compiler::load("n.kdl", text)
        .expect("loads")
        .plan(&Options::default())
        .expect("plans");
    let fw = plans.0[0].framework.as_ref().expect("framework");
    assert_eq!(
        fw.index_url.as_deref(),
        Some("https://download.pytorch.org/whl/cu134")
    );
    assert_eq!(fw.packages, ["torch==2.16.0"]);
    assert!(
        fw.verify
            .as_deref()
            .is_some_and(|v| v.contains("== '13.4'") && !v.contains("13.2")),
        "{:?}",
        fw.verify
    );
}

/// A devel builder without a `base`: the runtime is its runtime image (the
/// venv's python comes from the distro in both), not python:X-slim.
#[test]
fn a_distro_builder_without_a_base_runs_on_its_runtime_image() {
    let text = "kiln 1\npython \"3.10\"\nbuilder \"nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04\"\n";
    let (plans, _) = kiln_compiler::load("b.kdl", text)
        .expect("loads")
        .plan(&Options::default())
        .expect("plans");
    let p = &plans[0];
    assert_eq!(
        p.runtime.reference.familiar_name_tag(),
        "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04"
    );
    assert!(p.runtime.python_from_apt && p.builder.python_from_apt);
}

/// A python kiln has no image for is a warning (python:X-slim may still
/// exist), not an error; with an explicit base it is the base's business.
#[test]
fn a_python_without_a_known_image_is_a_warning() {
    let text = "kiln 1\npython \"3.99\"\npip \"six\"\n";
    assert_eq!(
        warning_codes("p.kdl", text),
        ["p.kdl:2:8 kiln::unknown_python"]
    );
    let with_base = "kiln 1\npython \"3.99\"\nbase \"python:3.99-slim\"\npip \"six\"\n";
    let c = kiln_compiler::compile("p.kdl", with_base, &Options::default()).expect("compiles");
    assert!(c.warnings.items.is_empty(), "{:?}", c.warnings.items);
    let known = "kiln 1\npython \"3.14\"\npip \"six\"\n";
    let c = kiln_compiler::compile("p.kdl", known, &Options::default()).expect("compiles");
    assert!(c.warnings.items.is_empty(), "{:?}", c.warnings.items);
}

/// The compiler asks for the requirements files and what they include,
/// round by round; a file the context lacks, or an include that leaves it,
/// is an error at the recipe's `pip requirements=` line.
#[test]
fn requirements_files_and_their_includes_are_asked_for_and_checked() {
    let text = "kiln 1\npython \"3.11\"\npip requirements=\"reqs/prod.txt\"\n";
    let c = kiln_compiler::load("r.kdl", text).expect("loads");
    let mut opts = Options::default();
    assert_eq!(c.context_files_wanted(&opts), ["reqs/prod.txt"]);
    opts.context_files.insert(
        "reqs/prod.txt".into(),
        Some("flask\n-r base.txt\n--constraint=../c.txt\n-r https://example.com/r.txt\n".into()),
    );
    assert_eq!(c.context_files_wanted(&opts), ["reqs/base.txt", "c.txt"]);
    opts.context_files
        .insert("reqs/base.txt".into(), Some("-r prod.txt\n".into()));
    opts.context_files.insert("c.txt".into(), None);
    assert!(c.context_files_wanted(&opts).is_empty());
    let errors = c.compile(&opts).err().expect("a missing include fails");
    let got = located(&errors);
    assert_eq!(
        got,
        [
            "r.kdl:3:1 kiln::missing_file `reqs/prod.txt` line 3 reads `-c ../c.txt`, and `c.txt` is not in the build context"
        ]
    );

    opts.context_files
        .insert("c.txt".into(), Some("flask<4\n".into()));
    let compiled = c.compile(&opts).expect("compiles");
    let json = kiln_compiler::llb::definition_json(&compiled.builds[0].definition).to_string();
    assert!(
        json.contains(r#"[\"reqs/prod.txt\",\"c.txt\",\"reqs/base.txt\"]"#),
        "the includes travel with the file: {json}"
    );

    opts.context_files
        .insert("reqs/base.txt".into(), Some("-r ../../up.txt\n".into()));
    let errors = c.compile(&opts).err().expect("an include outside fails");
    assert_eq!(errors.items[0].code, "kiln::outside_context");

    let missing = kiln_compiler::load(
        "m.kdl",
        "kiln 1\npython \"3.11\"\npip requirements=\"r.txt\"\n",
    )
    .expect("loads");
    let mut opts = Options::default();
    opts.context_files.insert("r.txt".into(), None);
    let errors = missing.compile(&opts).err().expect("a missing file fails");
    assert_eq!(
        errors.items[0].message,
        "requirements file `r.txt` is not in the build context"
    );
}

/// A CPU variant on a CUDA base, and a framework image under the same
/// framework, are warnings; a private base whose resolved config says
/// `CUDA_VERSION` is held to it.
#[test]
fn cuda_bases_against_the_variant() {
    let codes = |text: &str, opts: &Options| -> Vec<String> {
        match kiln_compiler::compile("c.kdl", text, opts) {
            Ok(c) => c
                .warnings
                .items
                .iter()
                .map(|d| format!("{} {}", c.warnings.location(d), d.code))
                .collect(),
            Err(d) => d
                .items
                .iter()
                .map(|x| format!("{} {}", d.location(x), x.code))
                .collect(),
        }
    };
    let opts = Options::default();
    assert_eq!(
        codes(
            "kiln 1\npython \"3.10\"\nbase \"nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04\"\nframework \"pytorch\" \"2.4.1\"\n",
            &opts
        ),
        ["c.kdl:3:6 kiln::cuda_unused"]
    );
    assert_eq!(
        codes(
            "kiln 1\npython \"3.10\"\nbase \"tensorflow/tensorflow:2.16.1-gpu\"\nframework \"tensorflow\" \"2.16.1\"\ncuda \"12.3\"\n",
            &opts
        ),
        ["c.kdl:3:6 kiln::framework_twice"]
    );
    // The same CUDA from the base: nothing to say but the usual CUDA-twice.
    assert_eq!(
        codes(
            "kiln 1\npython \"3.10\"\nbase \"nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04\"\nframework \"pytorch\" \"2.4.1\"\ncuda \"12.4\" from=\"base\"\n",
            &opts
        ),
        ["c.kdl:3:6 kiln::cuda_twice"]
    );
    // A private image: unknown unless its config says.
    let private = "kiln 1\npython \"3.10\"\nbase \"registry.example.com/ml/base:7\"\nframework \"tensorflow\" \"2.13.1\"\ncuda \"11.8\"\n";
    assert!(codes(private, &opts).is_empty());
    let mut resolved = Options::default();
    let config = kiln_compiler::ImageConfig::from_json(
        br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin","CUDA_VERSION=12.2.2","PYTHON_VERSION=3.10.14"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
    )
    .expect("config");
    resolved.images.insert(
        "registry.example.com/ml/base:7".into(),
        kiln_compiler::ResolvedImage {
            digest: None,
            config,
        },
    );
    assert_eq!(codes(private, &resolved), ["c.kdl:5:1 kiln::cuda_mismatch"]);
    // Its PYTHON_VERSION holds it to the recipe's python as well.
    let other_python = private.replace("python \"3.10\"", "python \"3.11\"");
    let got = codes(&other_python, &resolved);
    assert!(
        got.contains(&"c.kdl:3:6 kiln::python_mismatch".to_string()),
        "{got:?}"
    );
}

/// A package that requires `tensorflow` by name makes the CPU variant
/// install `tensorflow`, not `tensorflow-cpu` next to it; without one the
/// CPU build stays `tensorflow-cpu`.
#[test]
fn a_tensorflow_dependent_gets_tensorflow_not_tensorflow_cpu() {
    let packages = framework_packages;
    let base = "kiln 1\npython \"3.11\"\nframework \"tensorflow\" \"2.16.1\"\n";
    assert_eq!(packages(base), ["tensorflow-cpu==2.16.1"]);
    assert_eq!(
        packages(&format!(
            "{base}pip \"tensorflow-text==2.16.1\" \"numpy<2\"\n"
        )),
        ["tensorflow==2.16.1"]
    );
    assert_eq!(
        packages(&format!("{base}pip \"tf_keras>=2.16\"\n")),
        ["tensorflow==2.16.1"]
    );
}

/// A base pinned by digest in the recipe names itself in the OCI base
/// labels even when nobody resolved it.
#[test]
fn a_digest_pinned_base_is_labelled_without_resolution() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let text = format!("kiln 1\npython \"3.11\"\nbase \"python:3.11-slim@{digest}\"\n");
    let c = kiln_compiler::compile("d.kdl", &text, &Options::default()).expect("compiles");
    let labels = &c.builds[0].config.config.labels;
    assert_eq!(
        labels
            .get("org.opencontainers.image.base.name")
            .map(String::as_str),
        Some("docker.io/library/python:3.11-slim")
    );
    assert_eq!(
        labels.get("org.opencontainers.image.base.digest"),
        Some(&digest)
    );
}

/// A recipe `PATH` that replaces kiln's and leaves out the venv warns;
/// one that extends it (`${PATH}`) does not.
#[test]
fn a_path_without_the_venv_warns() {
    let codes = |env: &str| {
        warning_codes(
            "p.kdl",
            &format!("kiln 1\npython \"3.11\"\nenv PATH=\"{env}\"\n"),
        )
    };
    assert_eq!(
        codes("/usr/bin:/bin"),
        ["p.kdl:3:5 kiln::path_without_venv"]
    );
    // Without the base's config, `$PATH` is a guess, and kiln says so.
    assert_eq!(
        codes("/opt/tools/bin:${PATH}"),
        ["p.kdl:3:5 kiln::base_config_unknown"]
    );
    assert!(codes("/opt/venv/bin:/usr/bin").is_empty());
    let opts = with_slim_base(&["PATH=/usr/local/bin:/usr/bin:/bin"]);
    let c = kiln_compiler::compile(
        "p.kdl",
        "kiln 1\npython \"3.11\"\nenv PATH=\"/opt/tools/bin:$PATH\"\n",
        &opts,
    )
    .expect("compiles");
    assert!(c.warnings.items.is_empty(), "{:?}", c.warnings.items);
}

/// JAX rows checked against PyPI: jax before 0.4.30 needs its `cpu` extra
/// for jaxlib; cp313 wheels start at 0.4.34; GPU wheels for arm64 at 0.5.
#[test]
fn jax_rows_follow_what_pypi_ships() {
    let plan = |text: &str, platform: &str| {
        let opts = Options {
            platforms: vec![Platform::parse(platform).expect("platform")],
            ..Options::default()
        };
        kiln_compiler::load("j.kdl", text)
            .expect("loads")
            .plan(&opts)
    };
    let packages = |version: &str| {
        framework_packages(&format!(
            "kiln 1\npython \"3.11\"\nframework \"jax\" \"{version}\"\n"
        ))
    };
    assert_eq!(packages("0.4.22"), ["jax[cpu]==0.4.22"]);
    assert_eq!(packages("0.4.29"), ["jax[cpu]==0.4.29"]);
    assert_eq!(packages("0.4.30"), ["jax==0.4.30"]);
    assert!(
        plan(
            "kiln 1\npython \"3.13\"\nframework \"jax\" \"0.4.33\"\n",
            "linux/amd64"
        )
        .is_err()
    );
    assert!(
        plan(
            "kiln 1\npython \"3.13\"\nframework \"jax\" \"0.4.34\"\n",
            "linux/amd64"
        )
        .is_ok()
    );
    let gpu = "kiln 1\npython \"3.11\"\nframework \"jax\" \"0.6.2\"\ncuda \"12.8\"\n";
    assert!(plan(gpu, "linux/arm64").is_ok());
    // The pip CUDA install covers aarch64 from 0.4.30 (installation guide).
    let arm_gpu = "kiln 1\npython \"3.11\"\nframework \"jax\" \"0.4.38\"\ncuda \"12.6\"\n";
    assert!(plan(arm_gpu, "linux/arm64").is_ok());
    let old_gpu = "kiln 1\npython \"3.11\"\nframework \"jax\" \"0.4.29\"\ncuda \"12.4\"\n";
    assert!(plan(old_gpu, "linux/arm64").is_err());
}

/// Past MAX_PACKAGE_LAYERS pins the image would have as many layers: the
/// recipe's pins install together and a lock installs as its file.
#[test]
fn hundreds_of_pins_do_not_make_hundreds_of_layers() {
    use kiln_compiler::plan::{MAX_PACKAGE_LAYERS, PipStep};
    let pins = |n: usize, prefix: &str| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}==1.0")).collect()
    };
    let steps = |text: &str, lock: Option<&[String]>| -> Vec<PipStep> {
        let mut opts = Options::default();
        if let Some(l) = lock {
            opts.context_files
                .insert("lock.txt".into(), Some(l.join("\n")));
        }
        let (plans, _) = kiln_compiler::load("m.kdl", text)
            .expect("loads")
            .plan(&opts)
            .expect("plans");
        plans[0].pip.clone()
    };
    let per_package = |steps: &[PipStep]| {
        steps
            .iter()
            .filter(|s| matches!(s, PipStep::Package { .. }))
            .count()
    };
    let few = pins(MAX_PACKAGE_LAYERS, "pkg");
    let quoted = |p: &[String]| {
        p.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let text = format!("kiln 1\npython \"3.11\"\npip {}\n", quoted(&few));
    assert_eq!(per_package(&steps(&text, None)), MAX_PACKAGE_LAYERS);
    let many = pins(MAX_PACKAGE_LAYERS + 1, "pkg");
    let text = format!("kiln 1\npython \"3.11\"\npip {}\n", quoted(&many));
    let s = steps(&text, None);
    assert_eq!(per_package(&s), 0);
    assert!(matches!(&s[..], [PipStep::Group { specs, .. }] if specs.len() == many.len()));

    // A lock that fits, next to recipe pins that push the total over.
    let lock = pins(40, "locked");
    let text = format!(
        "kiln 1\npython \"3.11\"\npip requirements=\"lock.txt\"\npip {}\n",
        quoted(&pins(30, "own"))
    );
    let s = steps(&text, Some(&lock));
    assert_eq!(per_package(&s), 0);
    assert!(
        s.iter()
            .any(|p| matches!(p, PipStep::Requirements { path, .. } if path == "lock.txt")),
        "{s:?}"
    );
    // A lock that fits alone: a layer per pin.
    let text = "kiln 1\npython \"3.11\"\npip requirements=\"lock.txt\"\n";
    assert_eq!(per_package(&steps(text, Some(&lock))), 40);
}

/// KDL 1's bare `true` in a KDL 2 recipe: the syntax error says why.
#[test]
fn a_kdl1_keyword_in_a_kdl2_recipe_is_explained() {
    let text = "kiln 1\npython \"3.11\"\nvariant \"cpu\" default=true\nenv A=#null\n";
    let errors = kiln_compiler::compile("k.kdl", text, &Options::default())
        .err()
        .expect("fails");
    let help = errors.items[0].help.clone().unwrap_or_default();
    assert!(help.contains("KDL 2 writes `#true`"), "{help}");
}

/// A `#` comment (Dockerfile, YAML habit): the help says KDL's is `//`;
/// a line that starts with a KDL keyword does not get that help.
#[test]
fn a_hash_comment_is_explained() {
    let help = |text: &str| {
        let errors = kiln_compiler::compile("h.kdl", text, &Options::default())
            .err()
            .expect("fails");
        errors.items[0].help.clone().unwrap_or_default()
    };
    assert!(
        help("kiln 1\npython \"3.11\"\n  # deps\npip \"six==1.16.0\"\n")
            .contains("KDL comments start with `//`")
    );
    assert!(!help("kiln 1\npython \"3.11\"\n#true\n").contains("KDL comments"));
    // After a node, too.
    assert!(
        help("kiln 1\npython \"3.11\"  # the runtime's\n").contains("KDL comments start with `//`")
    );
    assert!(help("kiln 1\nname #ture\npython \"3.11\"\n").contains("#true"));
}

/// A backslash escape KDL does not know (a Windows path, a regex): the
/// help names it and says how to write a backslash.
#[test]
fn an_unknown_escape_is_explained() {
    let errors = kiln_compiler::compile(
        "q.kdl",
        "kiln 1\nname \"a\\qb\"\npython \"3.11\"\n",
        &Options::default(),
    )
    .err()
    .expect("fails");
    let help = errors.items[0].help.clone().unwrap_or_default();
    assert!(help.contains("`\\q` is not a KDL escape"), "{help}");
}

/// A pin of one of NVIDIA's CUDA wheels next to a framework that brings
/// them warns on a GPU variant, not on a CPU one.
#[test]
fn a_pinned_cuda_wheel_next_to_the_framework_warns() {
    let codes = |cuda: &str| {
        warning_codes(
            "n.kdl",
            &format!(
                "kiln 1\npython \"3.11\"\nframework \"pytorch\" \"2.4.1\"\n{cuda}pip \"nvidia-cublas-cu12==12.1.3.1\" \"nvidia-ml-py==12.560.30\"\n"
            ),
        )
    };
    assert_eq!(
        codes("cuda \"12.4\"\n"),
        ["n.kdl:5:1 kiln::cuda_wheel_pinned"]
    );
    assert!(codes("").is_empty());
}

/// The image config names each layer kiln adds, after the base's history
/// (checked against the engine's layers in tests/engine.rs); with a base
/// whose history does not account for its layers, kiln adds none.
#[test]
fn the_config_history_names_kilns_layers_in_order() {
    let config = |history: &str| {
        kiln_compiler::ImageConfig::from_json(
            format!(
                r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/usr/local/bin:/usr/bin:/bin","PYTHON_VERSION=3.11.9"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}},"history":{history}}}"#,
                "1".repeat(64)
            )
            .as_bytes(),
        )
        .expect("config")
    };
    let opts = |history: &str| {
        let mut o = Options::default();
        o.images.insert(
            "docker.io/library/python:3.11-slim".into(),
            kiln_compiler::ResolvedImage {
                digest: None,
                config: config(history),
            },
        );
        o
    };
    let text = "kiln 1\npython \"3.11\"\nframework \"pytorch\" \"2.4.1\"\npip \"six==1.16.0\"\n\
                user \"app\" uid=1000\nworkdir \"/app\"\ncopy \"src\" \"src\"\n\
                run \"echo deps\"\nrun \"echo done\" after=\"copy\"\n";
    let names = |o: &Options| -> Vec<String> {
        let c = kiln_compiler::compile("h.kdl", text, o).expect("compiles");
        c.builds[0]
            .config
            .history
            .iter()
            .map(|h| h["created_by"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(
        names(&opts(
            r#"[{"created_by":"base"},{"created_by":"ENV X=1","empty_layer":true}]"#
        )),
        [
            "base",
            "ENV X=1",
            "kiln: python -m venv /opt/venv",
            "kiln: pip install torch==2.4.1",
            "kiln: pip install six==1.16.0",
            "kiln: user app (1000:1000)",
            "kiln: pip: dependencies the pins did not name",
            "kiln: workdir /app",
            "kiln: run echo deps",
            "kiln: copy src",
            "kiln: run echo done",
        ]
    );
    // Two entries for one layer: which is whose is unknown; none added.
    assert!(
        names(&opts(r#"[{"created_by":"a"},{"created_by":"b"}]"#))
            .iter()
            .all(|n| !n.starts_with("kiln: "))
    );
    assert!(names(&Options::default()).is_empty());
}

/// Local projects and archives in a requirements file travel into its
/// install step, which runs in the context's root where pip reads them; an
/// editable install, or a path out of the context, is an error at the
/// recipe's `pip requirements=` line.
#[test]
fn local_projects_in_requirements_files_install_from_the_context() {
    let text = "kiln 1\npython \"3.11\"\npip requirements=\"reqs/app.txt\"\n";
    let c = kiln_compiler::load("r.kdl", text).expect("loads");
    let mut opts = Options::default();
    opts.context_files.insert(
        "reqs/app.txt".into(),
        Some("flask\n./libs/tool[cli]\n-f wheels\n".into()),
    );
    let compiled = c.compile(&opts).expect("compiles");
    let json = kiln_compiler::llb::definition_json(&compiled.builds[0].definition).to_string();
    assert!(
        json.contains(r#"[\"reqs/app.txt\",\"libs/tool\",\"reqs/wheels\",\"wheels\"]"#),
        "the project and both places pip may find the links travel along: {json}"
    );
    assert!(
        json.contains(r#""cwd":"/kiln/context""#),
        "pip runs where relative paths mean the context: {json}"
    );

    // `.`: the whole context goes into the step.
    opts.context_files
        .insert("reqs/app.txt".into(), Some("flask\n.\n".into()));
    let compiled = c.compile(&opts).expect("compiles");
    let json = kiln_compiler::llb::definition_json(&compiled.builds[0].definition).to_string();
    assert!(
        json.contains(r#""source":{"attrs":{"local.sharedkeyhint":"kiln-requirements"}"#),
        "no include patterns: the whole context: {json}"
    );

    for (file, code, message) in [
        (
            "-e .\n",
            "kiln::editable_install",
            "`reqs/app.txt` line 1 installs `.` in editable mode (`-e`): an editable install points at the project's folder in the install step, which the image does not have",
        ),
        (
            "flask\n../outside\n",
            "kiln::outside_context",
            "`reqs/app.txt` line 2 reads `../outside`: `../outside` lies outside the build context",
        ),
        (
            "-e ..\n",
            "kiln::outside_context",
            "`reqs/app.txt` line 1 reads `..`: `..` lies outside the build context",
        ),
    ] {
        opts.context_files
            .insert("reqs/app.txt".into(), Some(file.into()));
        let errors = c.compile(&opts).err().expect("fails");
        let got = located(&errors);
        assert_eq!(got, [format!("r.kdl:3:1 {code} {message}")], "{file:?}");
    }
    // URLs, VCS and absolute paths (the builder's own files) are pip's.
    opts.context_files.insert(
        "reqs/app.txt".into(),
        Some("-e git+https://example.com/x.git#egg=x\n/opt/wheels/y.whl\n".into()),
    );
    c.compile(&opts).expect("compiles");
}

/// A base that sets `USER` and `WORKDIR` keeps them in the image, and
/// kiln goes by them as the image will: relative copy destinations land
/// in its workdir, checks after the copies run there as its user; the
/// recipe's own `workdir` and `user` win over them.
#[test]
fn a_bases_user_and_workdir_are_the_images_for_copies_and_checks() {
    let text = "kiln 1\npython \"3.11\"\nbase \"example.com/ml/base:1\"\ncopy \"m.py\" \"m.py\"\n\
                verify \"import m\" after=\"copy\"\n";
    let mut opts = Options::default();
    let config = kiln_compiler::ImageConfig::from_json(
        br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"User":"base","WorkingDir":"/workspace"},"rootfs":{"type":"layers","diff_ids":[]}}"#,
    )
    .expect("config");
    opts.images.insert(
        "example.com/ml/base:1".into(),
        kiln_compiler::ResolvedImage {
            digest: None,
            config,
        },
    );
    let c = kiln_compiler::load("r.kdl", text).expect("loads");
    let compiled = c.compile(&opts).expect("compiles");
    let build = &compiled.builds[0];
    let image = kiln_compiler::llb::definition_json(&build.definition).to_string();
    assert!(image.contains(r#""dest":"/workspace/m.py""#), "{image}");
    let checks =
        kiln_compiler::llb::definition_json(build.checks.as_ref().expect("checks")).to_string();
    assert!(
        checks.contains(r#""cwd":"/workspace""#) && checks.contains(r#""user":"base""#),
        "{checks}"
    );
    assert_eq!(build.config.config.user, "base");
    assert_eq!(build.config.config.working_dir, "/workspace");

    let own = text.replace(
        "copy \"m.py\"",
        "user \"app\"\nworkdir \"/app\"\ncopy \"m.py\"",
    );
    let c = kiln_compiler::load("r.kdl", &own).expect("loads");
    let compiled = c.compile(&opts).expect("compiles");
    let build = &compiled.builds[0];
    let image = kiln_compiler::llb::definition_json(&build.definition).to_string();
    assert!(image.contains(r#""dest":"/app/m.py""#), "{image}");
    let checks =
        kiln_compiler::llb::definition_json(build.checks.as_ref().expect("checks")).to_string();
    assert!(
        checks.contains(r#""cwd":"/app""#) && checks.contains(r#""user":"1000:1000""#),
        "{checks}"
    );
    assert_eq!(build.config.config.user, "1000:1000");
}

/// Errors of a recipe compiled with `opts`, as `file:line:col code message`.
fn error_lines(text: &str, opts: &Options) -> Vec<String> {
    match kiln_compiler::compile("a.kdl", text, opts) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .items
            .iter()
            .map(|d| format!("{} {} {}", e.location(d), d.code, d.message))
            .collect(),
    }
}

/// A default may read the arguments declared before it (a Dockerfile's
/// `ARG B=${A}`); anything else that would leave `${…}` in a value is an
/// error at the argument, never a build that silently drops what named it.
#[test]
fn build_arguments_read_earlier_ones_and_never_leave_a_reference_behind() {
    let chain = "kiln 1\narg \"TORCH\" default=\"2.4.1\"\narg \"FW\" default=\"${TORCH}\"\n\
                 arg \"PYMAJOR\" default=\"3\"\narg \"PY\" default=\"${PYMAJOR}.11\"\n\
                 python \"${PY}\"\nframework \"pytorch\" \"${FW}\"\n";
    assert_eq!(framework_packages(chain), ["torch==2.4.1"]);
    let mut opts = Options::default();
    opts.build_args.insert("TORCH".into(), "2.5.1".into());
    let (plans, _) = kiln_compiler::load("a.kdl", chain)
        .expect("loads")
        .plan(&opts)
        .expect("plans");
    assert_eq!(
        plans[0].framework.as_ref().expect("framework").packages,
        ["torch==2.5.1"]
    );

    let later = "kiln 1\narg \"A\" default=\"${B}\"\narg \"B\" default=\"x\"\nname \"${A}\"\npython \"3.11\"\n";
    assert_eq!(
        error_lines(later, &Options::default()),
        [
            "a.kdl:2:5 kiln::unknown_arg the default of `A` reads `${B}`, which names no build argument declared before it"
        ]
    );
    let mut opts = Options::default();
    opts.build_args.insert("PY".into(), "${PYMAJOR}".into());
    let errors = error_lines(chain, &opts);
    assert_eq!(
        errors[0],
        "a.kdl:5:5 kiln::invalid_value `--build-arg PY=${PYMAJOR}`: a value given on the command line is used as written, so its `${…}` would reach the recipe unexpanded"
    );

    // An index URL from an argument is checked once it has its value.
    let index = "kiln 1\narg \"IDX\" default=\"https://pypi.example.org/simple\"\npython \"3.11\"\npip index=\"${IDX}\"\n";
    assert!(error_lines(index, &Options::default()).is_empty());
    let mut opts = Options::default();
    opts.build_args
        .insert("IDX".into(), "https://u:p@pypi.example.org/simple".into());
    assert_eq!(
        error_lines(index, &opts),
        [
            "a.kdl:4:1 kiln::secret_in_recipe `${IDX}` gives the index URL credentials; they would end up in the image's build graph"
        ]
    );
    opts.build_args.insert("IDX".into(), "ftp://x".into());
    assert_eq!(
        error_lines(index, &opts),
        ["a.kdl:4:1 kiln::invalid_value `${IDX}` is `ftp://x` here: not an index URL"]
    );
}

/// A python patch release picks its slim image; wheels go by the minor
/// release.
#[test]
fn a_python_patch_release_takes_its_minor_releases_wheels() {
    let text = "kiln 1\npython \"3.11.4\"\nframework \"pytorch\" \"2.4.1\"\n";
    assert_eq!(framework_packages(text), ["torch==2.4.1"]);
    let (plans, _) = kiln_compiler::load("p.kdl", text)
        .expect("loads")
        .plan(&Options::default())
        .expect("plans");
    assert_eq!(
        plans[0].runtime.reference.familiar_name_tag(),
        "python:3.11.4-slim"
    );
}

/// `distro=` only picks the nvidia/cuda image of `from="base"`.
#[test]
fn a_distro_nothing_reads_warns() {
    assert_eq!(
        warning_codes(
            "d.kdl",
            "kiln 1\npython \"3.10\"\nframework \"pytorch\" \"2.4.1\"\ncuda \"12.4\" distro=\"ubuntu22.04\"\n"
        ),
        ["d.kdl:4:1 kiln::distro_unused"]
    );
    assert!(
        warning_codes(
            "d.kdl",
            "kiln 1\npython \"3.10\"\ncuda \"12.4\" from=\"base\" distro=\"ubuntu22.04\"\n"
        )
        .is_empty()
    );
}

/// What a range says of a plain release, and where kiln leaves it to pip.
#[test]
fn a_range_excludes_a_release_only_when_kiln_is_sure() {
    use kiln_compiler::model::excludes_release;
    for (spec, version, want) in [
        ("numpy>=2", "1.26.4", Some(">=2")),
        ("numpy<2", "1.26.4", None),
        ("numpy (>=1.20, <1.26)", "1.26.4", Some("<1.26")),
        ("numpy~=1.26.0", "1.26.4", None),
        ("numpy~=1.25.0", "1.26.4", Some("~=1.25.0")),
        ("numpy==1.26.*", "1.26.4", None),
        ("numpy!=1.26.4", "1.26.4", Some("!=1.26.4")),
        ("numpy==1.26", "1.26.0", None),
        ("numpy[x]>2", "2", Some(">2")),
        // Pre-releases, markers and URLs are pip's to judge.
        ("numpy>=2.0rc1", "1.26.4", None),
        ("numpy>=2", "2.0.0rc1", None),
        ("numpy>=2; python_version>'3.8'", "1.26.4", None),
        ("numpy", "1.26.4", None),
    ] {
        assert_eq!(
            excludes_release(spec, version).as_deref(),
            want,
            "{spec} vs {version}"
        );
    }
}

/// The conda environment file is read from the context like requirements
/// files: missing is an error at the `conda` line, and so is a python it
/// pins that is not the recipe's.
#[test]
fn the_conda_file_is_read_and_its_python_checked() {
    let text = "kiln 1\npython \"3.11\"\nconda \"env/environment.yml\"\n";
    let c = kiln_compiler::load("c.kdl", text).expect("loads");
    let mut opts = Options::default();
    assert_eq!(c.context_files_wanted(&opts), ["env/environment.yml"]);
    opts.context_files
        .insert("env/environment.yml".into(), None);
    assert_eq!(
        error_lines(text, &opts),
        [
            "a.kdl:3:7 kiln::missing_file conda environment file `env/environment.yml` is not in the build context"
        ]
    );
    for (file, ok) in [
        (
            "name: x\ndependencies:\n  - python=3.10\n  - numpy\n",
            false,
        ),
        ("dependencies:\n  - conda-forge::python==3.10.14\n", false),
        (
            "dependencies:\n  - \"python=3.11.*\"\n  - pip:\n    - requests\n",
            true,
        ),
        (
            "dependencies:\n  - python>=3.9\n  - python-dateutil=2.8\n",
            true,
        ),
        (
            "channels:\n  - python=3.10\ndependencies:\n  - numpy\n",
            true,
        ),
        // The `[version=…]` form, its quoted commas included.
        ("dependencies:\n  - python[version='>=3.8,<3.10']\n", false),
        ("dependencies:\n  - python[version='>=3.11,<3.12']\n", true),
        ("dependencies:\n  - python[version='>=3.8,<3.11']\n", false),
    ] {
        opts.context_files
            .insert("env/environment.yml".into(), Some(file.into()));
        let errors = error_lines(text, &opts);
        assert_eq!(errors.is_empty(), ok, "{file:?}: {errors:?}");
        if !ok {
            assert!(errors[0].contains("kiln::python_mismatch"), "{errors:?}");
        }
    }
    // No python named, or a bare `python`: conda picks its newest.
    for file in ["dependencies:\n  - numpy\n", "dependencies:\n  - python\n"] {
        opts.context_files
            .insert("env/environment.yml".into(), Some(file.into()));
        let compiled = c.compile(&opts).expect("compiles");
        let codes: Vec<&str> = compiled.warnings.items.iter().map(|d| d.code).collect();
        assert_eq!(codes, ["kiln::python_mismatch"], "{file:?}");
    }
}

/// With no framework version, a variant that its CUDA holds back to an
/// older release than the others get warns.
#[test]
fn an_unpinned_framework_held_back_by_a_variant_warns() {
    let text = "kiln 1\npython \"3.11\"\nframework \"pytorch\"\nvariant \"cpu\" default=#true\nvariant \"gpu\" {\n    cuda \"12.1\"\n}\n";
    let c = kiln_compiler::load("u.kdl", text).expect("loads");
    let mut opts = Options::default();
    assert!(
        c.compile(&opts)
            .expect("cpu compiles")
            .warnings
            .items
            .is_empty()
    );
    opts.target = Some("gpu".into());
    let compiled = c.compile(&opts).expect("gpu compiles");
    let codes: Vec<&str> = compiled.warnings.items.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["kiln::framework_unpinned"]);
}

/// PyTorch and JAX ship CPU wheels for linux/amd64 and linux/arm64 only.
#[test]
fn a_cpu_variant_for_a_platform_without_wheels_is_an_error() {
    for fw in [
        "framework \"pytorch\" \"2.4.1\"",
        "framework \"jax\" \"0.4.30\"",
    ] {
        let text = format!("kiln 1\npython \"3.11\"\n{fw}\n");
        for (platform, ok) in [
            ("linux/arm64", true),
            ("linux/riscv64", false),
            ("linux/arm/v7", false),
        ] {
            let mut opts = Options::default();
            opts.platforms = vec![kiln_compiler::Platform::parse(platform).expect("platform")];
            let errors = error_lines(&text, &opts);
            assert_eq!(errors.is_empty(), ok, "{fw} on {platform}: {errors:?}");
            if !ok {
                assert!(errors[0].contains("kiln::no_wheels"), "{errors:?}");
            }
        }
    }
}

/// The framework with extras, at its own release, stays for the extras'
/// packages (with a warning); at another release it is an error.
#[test]
fn the_framework_with_extras_at_its_release_is_kept_for_them() {
    let text = "kiln 1\npython \"3.11\"\nframework \"pytorch\" \"2.4.1\"\npip \"torch[opt-einsum]==2.4.1\"\n";
    let c = kiln_compiler::compile("e.kdl", text, &Options::default()).expect("compiles");
    let codes: Vec<&str> = c.warnings.items.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["kiln::framework_in_pip"]);
    let json = kiln_compiler::llb::definition_json(&c.builds[0].definition).to_string();
    assert!(json.contains("'torch[opt-einsum]==2.4.1'"), "{json}");
    let other = text.replace("[opt-einsum]==2.4.1", "[opt-einsum]==2.5.1");
    let errors = error_lines(&other, &Options::default());
    assert!(errors[0].contains("kiln::framework_in_pip"), "{errors:?}");
}

/// Versions in requirements are PEP 440's, in pip's spellings.
#[test]
fn requirement_versions_are_pep_440() {
    use kiln_compiler::model::{check_requirement, is_pep440};
    for ok in [
        "1",
        "1.26.4",
        "2.0rc1",
        "2.0.0-rc.1",
        "1.0.post1",
        "1.0-1",
        "1.0.dev3",
        "1.0a1.post2.dev3",
        "v1.0",
        "1!2.0",
        "2.4.1+cpu",
        "2.4.1+cu124.abc",
        "1.0.0.RC1",
        "2024.1",
        "1.0preview2",
    ] {
        assert!(is_pep440(ok, false), "{ok}");
    }
    for bad in [
        "1.bee", "1..2", ".1", "1.0+", "abc", "1.0-", "1.0.*", "1.0 2", "1.0rc1x",
    ] {
        assert!(!is_pep440(bad, false), "{bad}");
    }
    assert!(is_pep440("1.26.*", true));
    assert!(!is_pep440("1.26rc1.*", true));
    for (spec, ok) in [
        ("foo==1.bee", false),
        ("bar@", false),
        ("bar @ https://x/b.whl", true),
        ("numpy>=1.26,<2", true),
        ("foo<>1", false),
        ("numpy==${V}", true),
        ("tzdata===2024.1a", true),
        ("numpy==1.26.4;python_version<'3.12'", true),
        ("numpy ; sys_platform == 'linux'", true),
        ("numpy; rm -rf /", false),
        ("numpy;echo hi", false),
    ] {
        assert_eq!(
            check_requirement(spec).is_ok(),
            ok,
            "{spec}: {:?}",
            check_requirement(spec)
        );
    }
    assert_eq!(
        check_requirement("foo<>1"),
        Err("its version operator is not one of ==, !=, <=, >=, ~=, <, >, ===")
    );
    use kiln_compiler::model::normalize_requirement;
    for (written, read) in [
        ("numpy (==1.0)", "numpy==1.0"),
        ("scipy[dev] (>=1.13, <2)", "scipy[dev]>=1.13, <2"),
        (" six==1.16.0\n", "six==1.16.0"),
        (
            "numpy==1.26.4;python_version<'3.12'",
            "numpy==1.26.4; python_version<'3.12'",
        ),
        ("lib @ https://x/(y).whl", "lib @ https://x/(y).whl"),
    ] {
        assert_eq!(normalize_requirement(written), read, "{written}");
    }
}

/// `numpy (==1.0)` is `numpy==1.0`: its pin is 1.0, and a range that
/// leaves it out is the error it is for the `==` spelling.
#[test]
fn a_parenthesized_pin_is_read_as_the_pin() {
    let text = "kiln 1\npython \"3.11\"\npip \"numpy (==1.0)\" \"numpy>=2\"\n";
    let c = kiln_compiler::load("p.kdl", text).expect("loads");
    let err = c
        .compile(&Options::default())
        .expect_err("conflicting pins");
    let text = err.render_plain();
    assert!(
        text.contains("numpy is pinned to 1.0, which `numpy>=2` leaves out"),
        "{text}"
    );
}

/// A `--build-arg` the recipe does not declare warns (a misspelt name);
/// the ones kiln reads itself and BuildKit's predefined ones do not.
#[test]
fn an_unused_build_arg_warns() {
    let text = "kiln 1\narg \"TORCH\" default=\"2.4.1\"\npython \"3.11\"\n";
    let c = kiln_compiler::load("b.kdl", text).expect("loads");
    let mut opts = Options::default();
    for name in [
        "TORCH",
        "SOURCE_DATE_EPOCH",
        "VCS_REF",
        "https_proxy",
        "BUILDKIT_SYNTAX",
    ] {
        opts.build_args.insert(name.into(), "1".into());
    }
    assert!(
        c.compile(&opts)
            .expect("compiles")
            .warnings
            .items
            .is_empty()
    );
    opts.build_args.insert("TORHC".into(), "2.5.1".into());
    let w = c.compile(&opts).expect("compiles").warnings;
    assert_eq!(w.items.len(), 1);
    assert_eq!(w.items[0].code, "kiln::unused_build_arg");
    assert_eq!(
        w.items[0].help.as_deref(),
        Some("did you mean `--build-arg TORCH=…`?")
    );
}

/// A tree copied onto `/` for a user would hand it the system folders.
#[test]
fn a_copy_onto_root_for_a_user_warns() {
    assert_eq!(
        warning_codes(
            "o.kdl",
            "kiln 1\npython \"3.11\"\nuser \"app\"\ncopy \"overlay\" \"/\"\ncopy \"m.py\" \"/etc/m.py\"\n"
        ),
        ["o.kdl:4:1 kiln::copy_onto_root"]
    );
    assert!(warning_codes("o.kdl", "kiln 1\npython \"3.11\"\ncopy \"overlay\" \"/\"\n").is_empty());
    // Any spelling of `/`: `.` and `..` as the engine takes them, a
    // relative destination from the workdir.
    let warns = |workdir: &str, dest: &str| {
        let text = format!(
            "kiln 1\npython \"3.11\"\nuser \"app\"\n{workdir}copy \"overlay\" \"{dest}\"\n"
        );
        warning_codes("o.kdl", &text).len()
    };
    let srv = "workdir \"/srv\"\n";
    for (workdir, dest) in [
        ("", "/app/.."),
        ("", "."),
        ("", "./"),
        (srv, ".."),
        (srv, "../.."),
    ] {
        assert_eq!(warns(workdir, dest), 1, "{dest} from {workdir:?}");
    }
    for (workdir, dest) in [("", "app"), (srv, "."), ("", "/app/../etc")] {
        assert_eq!(warns(workdir, dest), 0, "{dest} from {workdir:?}");
    }
}

/// `${NAME:-WORD}` and `${NAME:+WORD}` read build arguments as a
/// Dockerfile's ARG does, in every string.
#[test]
fn argument_references_take_defaults_and_alternatives() {
    let text = "kiln 1\narg \"A\"\narg \"B\" default=\"${A:-dflt}\"\narg \"C\" default=\"${A:+set}\"\n\
                name \"n-${B}-${C}\"\npython \"3.11\"\npip \"numpy==${V:-1.26.4}\"\narg \"V\"\n";
    let title = |opts: &Options| {
        let (plans, _) = kiln_compiler::load("a.kdl", text)
            .expect("loads")
            .plan(opts)
            .expect("plans");
        plans[0].name.clone().unwrap_or_default()
    };
    assert_eq!(title(&Options::default()), "n-dflt-");
    let mut opts = Options::default();
    opts.build_args.insert("A".into(), "x".into());
    assert_eq!(title(&opts), "n-x-set");
}

/// Without MergeOp the pip steps run one after another; only a
/// requirements file's step mounts the context, so a context change does
/// not re-run the pins before it.
#[test]
fn without_mergeop_only_requirements_steps_mount_the_context() {
    let text = "kiln 1\npython \"3.11\"\npip \"six==1.16.0\"\npip requirements=\"r.txt\"\n";
    let mut opts = Options::default();
    opts.caps = kiln_compiler::EngineCaps::legacy();
    opts.context_files
        .insert("r.txt".into(), Some("requests\n.\n".into()));
    let c = kiln_compiler::compile("l.kdl", text, &opts).expect("compiles");
    let json = kiln_compiler::llb::definition_json(&c.builds[0].definition);
    let ops = json["ops"].as_array().expect("ops");
    let mounts_context = |name: &str| -> bool {
        let op = ops
            .iter()
            .find(|o| o["name"].as_str().is_some_and(|n| n.ends_with(name)))
            .unwrap_or_else(|| panic!("no op {name}: {json}"));
        op["exec"]["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m["target"] == "/kiln/context")
    };
    assert!(!mounts_context("pip install six==1.16.0"));
    assert!(mounts_context("pip install -r r.txt"));
}

/// uv and pip read a relative `--find-links` of a file in a folder from
/// different places: with uv that warns.
#[test]
fn uv_with_find_links_in_a_subfolder_file_warns() {
    for (installer, warns) in [("", false), ("installer \"uv\"\n", true)] {
        let text =
            format!("kiln 1\npython \"3.11\"\n{installer}pip requirements=\"reqs/offline.txt\"\n");
        let mut opts = Options::default();
        opts.context_files.insert(
            "reqs/offline.txt".into(),
            Some("--no-index\n--find-links=wheels\ntool\n".into()),
        );
        let c = kiln_compiler::compile("u.kdl", &text, &opts).expect("compiles");
        let codes: Vec<&str> = c.warnings.items.iter().map(|d| d.code).collect();
        assert_eq!(codes.contains(&"kiln::uv_find_links"), warns, "{codes:?}");
    }
}

/// Without MergeOp the two chains of checks (on the environment, on the
/// finished image) are joined by a mount, not a merge.
#[test]
fn without_mergeop_both_kinds_of_checks_join_without_a_merge() {
    let text = "kiln 1\npython \"3.11\"\ncopy \"app\" \"/app\"\nverify \"print(1)\"\nverify \"print(2)\" after=\"copy\"\n";
    let mut opts = Options::default();
    opts.caps = kiln_compiler::EngineCaps::legacy();
    let c = kiln_compiler::compile("v.kdl", text, &opts).expect("compiles");
    let checks = kiln_compiler::llb::definition_json(c.builds[0].checks.as_ref().expect("checks"))
        .to_string();
    assert!(!checks.contains("mergeop"), "{checks}");
    assert!(checks.contains(r#""target":"/kiln/checked""#), "{checks}");
    assert!(
        checks.contains("print(1)") && checks.contains("print(2)"),
        "{checks}"
    );
}

/// `--target` finds a variant whatever its case, as a Dockerfile's stage
/// names; two variants that differ only in case need the exact name.
#[test]
fn targets_match_without_regard_to_case_unless_ambiguous() {
    let variant = |text: &str, target: &str| {
        let opts = Options {
            target: Some(target.to_string()),
            ..Options::default()
        };
        kiln_compiler::compile("t.kdl", text, &opts)
            .map(|c| c.variant)
            .map_err(|d| d.items[0].code)
    };
    let text = "kiln 1\npython \"3.11\"\nvariant \"cpu\" default=#true\nvariant \"GPU\"\n";
    assert_eq!(variant(text, "gpu"), Ok("GPU".to_string()));
    assert_eq!(variant(text, "CPU"), Ok("cpu".to_string()));
    let both = "kiln 1\npython \"3.11\"\nvariant \"gpu\"\nvariant \"GPU\"\n";
    assert_eq!(variant(both, "GPU"), Ok("GPU".to_string()));
    assert_eq!(variant(both, "Gpu"), Err("kiln::unknown_target"));
}

/// `SOURCE_DATE_EPOCH` sets the image's creation time; a value that is not
/// whole seconds since 1970 (or lies past year 9999) fails the build.
#[test]
fn source_date_epoch_must_be_a_time() {
    let created = |epoch: &str| {
        let mut opts = Options::default();
        opts.build_args
            .insert("SOURCE_DATE_EPOCH".into(), epoch.to_string());
        kiln_compiler::compile("e.kdl", "kiln 1\npython \"3.11\"\n", &opts)
            .map(|c| c.builds[0].config.created.clone())
            .map_err(|d| d.items[0].code)
    };
    assert_eq!(
        created("1700000000"),
        Ok(Some("2023-11-14T22:13:20Z".to_string()))
    );
    assert_eq!(created(""), Ok(None));
    for bad in ["abc", "1.5", "-1", "99999999999999"] {
        assert_eq!(created(bad), Err("kiln::invalid_build_arg"), "{bad}");
    }
}

/// An engine that has the base for one platform may hand it out for
/// another: the image would hold programs for the wrong machine.
#[test]
fn a_base_built_for_another_platform_warns() {
    let codes = |platform: &str| {
        let opts = Options {
            platforms: vec![Platform::parse(platform).expect("platform")],
            ..with_slim_base(&["PATH=/usr/local/bin:/usr/bin:/bin"])
        };
        let c =
            kiln_compiler::compile("p.kdl", "kiln 1\npython \"3.11\"\n", &opts).expect("compiles");
        c.warnings
            .items
            .iter()
            .map(|d| format!("{} {}", c.warnings.location(d), d.code))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        codes("linux/arm64"),
        ["p.kdl:2:8 kiln::base_platform_mismatch"]
    );
    assert!(codes("linux/amd64").is_empty());
}

/// A build argument in a positional `label` value is reported at the value,
/// and the help lists the arguments the recipe declares.
#[test]
fn an_undeclared_argument_in_a_value_points_at_it_and_lists_the_declared_ones() {
    let text = "kiln 1\narg \"EXTRA\" default=\"x\"\narg \"TEAM\"\npython \"3.11\"\nlabel \"k2\" \"${LBL}\"\n";
    let diags = match kiln_compiler::compile("a.kdl", text, &Options::default()) {
        Ok(_) => panic!("compiled"),
        Err(d) => d,
    };
    let got: Vec<(String, String)> = diags
        .items
        .iter()
        .map(|d| {
            (
                format!("{} {}", diags.location(d), d.code),
                d.help.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(got[0].0, "a.kdl:5:13 kiln::unknown_arg", "{got:?}");
    assert!(got[0].1.contains("(declared: `EXTRA`, `TEAM`)"), "{got:?}");
    let none = "kiln 1\npython \"3.11\"\nworkdir \"${WD:-/app}\"\n";
    assert!(
        error_lines(none, &Options::default())[0].starts_with("a.kdl:3:10 kiln::unknown_arg"),
        "{:?}",
        error_lines(none, &Options::default())
    );
}

/// apt takes `name`, `name=version` and `name/release`; anything else in an
/// `apt` value is an error at it.
#[test]
fn apt_values_are_names_versions_or_releases() {
    let ok = "kiln 1\npython \"3.11\"\napt \"libgl1\" \"curl=7.88.1-10+deb12u5\" \"git/bookworm-backports\"\n";
    assert!(error_lines(ok, &Options::default()).is_empty());
    for bad in ["git/", "curl wget", "Git", "a/b c"] {
        let text = format!("kiln 1\npython \"3.11\"\napt \"{bad}\"\n");
        let errors = error_lines(&text, &Options::default());
        assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
        assert!(
            errors[0].contains("is not a Debian package name"),
            "{errors:?}"
        );
    }
}

/// A python with a patch (`3.11.4`) is served by a base whose tag says
/// `3.11` or `3.11.4`, not by one that says `3.11.2` or `3.10`.
#[test]
fn a_patch_python_matches_the_bases_that_can_carry_it() {
    let check = |python: &str, base: &str| {
        error_lines(
            &format!("kiln 1\npython \"{python}\"\nbase \"{base}\"\n"),
            &Options::default(),
        )
    };
    assert!(check("3.11.4", "python:3.11-slim").is_empty());
    assert!(check("3.11.4", "python:3.11.4-slim").is_empty());
    assert!(check("3.11", "python:3.11.4-slim-bookworm").is_empty());
    for (python, base) in [
        ("3.11.4", "python:3.11.2-slim"),
        ("3.11.4", "python:3.10-slim"),
    ] {
        let errors = check(python, base);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("kiln::python_mismatch"), "{errors:?}");
    }
}

/// A requirement of the framework's project is a warning where the
/// framework's release meets it (a bare name, a range that holds it, `==`
/// with a build label such as `+cpu`), inline or in a lock, and an error
/// where it does not, in a file installed as a file too, at the file's line.
#[test]
fn the_framework_in_pip_is_judged_by_whether_its_release_meets_it() {
    let compile = |pip: &str, file: Option<&str>| {
        let text = format!(
            "kiln 1\npython \"3.11\"\nframework \"pytorch\" \"2.4.1\"\n{pip}\npip \"six==1.16.0\"\n"
        );
        let mut opts = Options::default();
        if let Some(f) = file {
            opts.context_files.insert("r.txt".into(), Some(f.into()));
        }
        kiln_compiler::compile("f.kdl", &text, &opts)
    };
    let warned = |pip: &str, file: Option<&str>| {
        let c = compile(pip, file).unwrap_or_else(|e| panic!("{pip} {file:?}: {e:?}"));
        c.warnings
            .items
            .iter()
            .any(|w| w.code == "kiln::framework_in_pip")
    };
    for pip in [
        "pip \"torch\"",
        "pip \"torch>=2.0\"",
        "pip \"torch==2.4.1+cpu\"",
        "pip \"torch==2.4.1+cu121\"",
        "pip \"torch~=2.4.0\"",
    ] {
        assert!(warned(pip, None), "{pip} warns");
    }
    assert!(warned(
        "pip requirements=\"r.txt\"",
        Some("torch==2.4.1+cpu\nnumpy==1.26.4\n")
    ));
    for pip in [
        "pip \"torch>=2.5\"",
        "pip \"torch==2.5.1\"",
        "pip \"torch<2.4\"",
    ] {
        let e = compile(pip, None)
            .err()
            .unwrap_or_else(|| panic!("{pip} fails"));
        assert_eq!(e.items[0].code, "kiln::framework_in_pip", "{pip}");
    }
    // A loose file keeps its lines: one the release meets passes quietly
    // (pip finds the framework installed), another release is an error that
    // names the file's line.
    let loose = compile(
        "pip requirements=\"r.txt\"",
        Some("transformers>=4.40\ntorch>=2.0\n"),
    )
    .expect("compiles");
    assert!(
        !loose
            .warnings
            .items
            .iter()
            .any(|w| w.code == "kiln::framework_in_pip")
    );
    let e = compile(
        "pip requirements=\"r.txt\"",
        Some("transformers>=4.40\ntorch==2.5.1\n"),
    )
    .err()
    .expect("another release in a file fails");
    let got = located(&e);
    assert_eq!(
        got,
        [
            "f.kdl:4:1 kiln::framework_in_pip `r.txt` line 2 asks for `torch==2.5.1`, which `framework \"pytorch\" \"2.4.1\"` does not meet: pip would install it over the framework's build for this variant"
        ]
    );
    // A companion in a release that does not go with the framework's.
    let e = compile(
        "pip requirements=\"r.txt\"",
        Some("transformers>=4.40\ntorchvision>=0.20\n"),
    )
    .err()
    .expect("torchvision 0.20 goes with torch 2.5");
    assert_eq!(e.items[0].code, "kiln::incompatible");
    assert!(
        e.items[0].message.starts_with(
            "`r.txt` line 2 asks for `torchvision>=0.20`, which leaves out torchvision 0.19.1"
        ),
        "{}",
        e.items[0].message
    );
    assert!(compile("pip requirements=\"r.txt\"", Some("torchvision>=0.19\n")).is_ok());
}

/// The fix kiln offers for a `cmd` written as one string splits it as a
/// shell would (quotes taken off, each word a KDL string), and offers only a
/// shell where the string needs one.
#[test]
fn the_exec_form_help_splits_as_a_shell_would() {
    let help = |cmd: &str| {
        let text = format!("kiln 1\npython \"3.11\"\ncmd {cmd}\n");
        let c = kiln_compiler::compile("c.kdl", &text, &Options::default()).expect("compiles");
        let w = c
            .warnings
            .items
            .iter()
            .find(|w| w.code == "kiln::exec_form")
            .unwrap_or_else(|| panic!("{cmd}: no exec_form warning"));
        w.help.clone().unwrap_or_default()
    };
    assert!(help(r#""python -c 'print(1)'""#).contains(r#"`cmd "python" "-c" "print(1)"`"#));
    assert!(
        help(r#""/bin/sh -c \"exec gunicorn -w 4 app:app\"""#)
            .contains(r#"`cmd "/bin/sh" "-c" "exec gunicorn -w 4 app:app"`"#)
    );
    let port = help(r#""gunicorn -b 0.0.0.0:$PORT app:app""#);
    assert!(
        port.contains(r#"`cmd "sh" "-c" "exec gunicorn -b 0.0.0.0:$PORT app:app"`"#),
        "{port}"
    );
    assert!(!port.contains(r#""0.0.0.0:$PORT""#), "{port}");
    assert!(help(r#""exec uvicorn app:app""#).contains(r#"`cmd "uvicorn" "app:app"`"#));
    assert!(help(r#""a && b""#).contains(r#"`cmd "sh" "-c" "a && b"`"#));
}

/// A requirements file installed as a file that leaves out one of the
/// recipe's pins is an error at the `pip requirements=` line, naming the
/// file's line (pip would fail on the two after installing every pin).
#[test]
fn a_requirements_file_that_leaves_out_a_pin_is_an_error_at_its_line() {
    let compile = |file: &str| {
        let mut opts = Options::default();
        opts.context_files
            .insert("requirements.txt".into(), Some(file.into()));
        kiln_compiler::compile(
            "r.kdl",
            "kiln 1\npython \"3.11\"\npip \"numpy==1.26.4\"\npip requirements=\"requirements.txt\"\n",
            &opts,
        )
    };
    let e = compile("pandas>=2\nnumpy>=2\n")
        .err()
        .expect("the range leaves the pin out");
    let got = located(&e);
    assert_eq!(
        got,
        [
            "r.kdl:4:1 kiln::conflicting_pins `requirements.txt` line 2 asks for `numpy>=2`, which leaves out the recipe's pin numpy==1.26.4 (>=2)"
        ]
    );
    assert!(compile("pandas>=2\nnumpy>=1.26,<2\n").is_ok());
    assert!(compile("pandas>=2\nnumpy\n").is_ok());
}

/// A lock that pins a package twice: the error names both lines.
#[test]
fn a_package_pinned_twice_in_a_lock_names_both_lines() {
    let mut opts = Options::default();
    opts.context_files.insert(
        "lock.txt".into(),
        Some("numpy==1.26.4\nsix==1.16.0\nnumpy==2.0.2\n".into()),
    );
    let e = kiln_compiler::compile(
        "l.kdl",
        "kiln 1\npython \"3.11\"\npip requirements=\"lock.txt\"\n",
        &opts,
    )
    .err()
    .expect("fails");
    assert_eq!(
        format!("{} {}", e.location(&e.items[0]), e.items[0].message),
        "l.kdl:3:1 numpy is pinned twice: to 1.26.4 (`lock.txt` line 1) and to 2.0.2 (`lock.txt` line 3)"
    );
    assert!(
        e.items[0]
            .help
            .as_deref()
            .is_some_and(|h| h.contains("a lock names each package once")),
        "{:?}",
        e.items[0].help
    );
}

/// `healthcheck` in the image config, in each of its forms, and
/// `stopsignal` as Docker writes it.
#[test]
fn healthcheck_and_stopsignal_reach_the_config_as_docker_reads_them() {
    let config = |lines: &str| {
        let text = format!("kiln 1\npython \"3.11\"\n{lines}\n");
        let c = kiln_compiler::compile("h.kdl", &text, &Options::default())
            .unwrap_or_else(|e| panic!("{lines}: {e:?}"));
        let v: serde_json::Value =
            serde_json::from_slice(&c.builds[0].config.to_json()).expect("json");
        v["config"].clone()
    };
    let test = |line: &str| config(line)["Healthcheck"]["Test"].clone();
    assert_eq!(
        test(r#"healthcheck "curl" "-f" "http://localhost/h""#),
        serde_json::json!(["CMD", "curl", "-f", "http://localhost/h"])
    );
    assert_eq!(
        test(r#"healthcheck "CMD" "curl" "-f" "http://localhost/h""#),
        serde_json::json!(["CMD", "curl", "-f", "http://localhost/h"])
    );
    assert_eq!(
        test(r#"healthcheck "curl -f http://localhost/h || exit 1""#),
        serde_json::json!(["CMD-SHELL", "curl -f http://localhost/h || exit 1"])
    );
    assert_eq!(
        test(r#"healthcheck "CMD curl -f http://localhost/h""#),
        serde_json::json!(["CMD-SHELL", "curl -f http://localhost/h"])
    );
    assert_eq!(test(r#"healthcheck "none""#), serde_json::json!(["NONE"]));
    let c = config(r#"healthcheck "true" interval="1m30s" timeout="500ms" retries=2"#);
    assert_eq!(c["Healthcheck"]["Interval"], 90_000_000_000_u64);
    assert_eq!(c["Healthcheck"]["Timeout"], 500_000_000_u64);
    assert_eq!(c["Healthcheck"]["Retries"], 2);
    for (written, stored) in [
        ("SIGINT", "SIGINT"),
        ("sigterm", "SIGTERM"),
        ("QUIT", "SIGQUIT"),
        ("SIGRTMIN+3", "SIGRTMIN+3"),
        ("rtmin+15", "SIGRTMIN+15"),
        ("SIGRTMAX-14", "SIGRTMAX-14"),
        ("RTMAX", "SIGRTMAX"),
        ("CLD", "SIGCLD"),
        ("9", "9"),
    ] {
        assert_eq!(
            config(&format!("stopsignal \"{written}\""))["StopSignal"],
            stored,
            "{written}"
        );
    }
}

/// Credential-like `env` names warn where the value could be one (a build
/// argument's too), not where it says where one is or how long one is.
#[test]
fn credential_warnings_fire_on_values_not_on_their_whereabouts() {
    let warns = |env: &str| {
        let text = format!("kiln 1\narg \"T\" default=\"x\"\npython \"3.11\"\nenv {env}\n");
        let c = kiln_compiler::compile("c.kdl", &text, &Options::default()).expect("compiles");
        c.warnings
            .items
            .iter()
            .any(|w| w.code == "kiln::secret_in_env")
    };
    assert!(warns(r#"HF_TOKEN="hf_abcdefghijklmnop""#));
    assert!(warns(r#"HF_TOKEN="${T}""#));
    assert!(!warns(r#"PASSWORD_FILE="/run/secrets/db_password""#));
    assert!(!warns(r#"HF_TOKEN_PATH="/run/secrets/hf""#));
    assert!(!warns(r#"MAX_TOKEN="40960000""#));
    assert!(!warns(r#"TOKENIZERS_PARALLELISM="false""#));
}

/// Exec form runs no shell: a `$VAR` in any argument warns, with the
/// `sh -c` form to write instead.
#[test]
fn a_variable_in_an_exec_form_argument_warns() {
    let text = "kiln 1\npython \"3.11\"\ncmd \"gunicorn\" \"-b\" \"0.0.0.0:${PORT}\" \"app:app\"\n";
    let c = kiln_compiler::compile("v.kdl", text, &Options::default()).expect("compiles");
    let w = c
        .warnings
        .items
        .iter()
        .find(|w| w.code == "kiln::exec_form")
        .expect("a warning");
    assert_eq!(c.warnings.location(w), "v.kdl:3:21");
    assert!(
        w.help.as_deref().is_some_and(
            |h| h.contains(r#"`cmd "sh" "-c" "exec gunicorn -b 0.0.0.0:${PORT} app:app"`"#)
        ),
        "{:?}",
        w.help
    );
    let plain = "kiln 1\npython \"3.11\"\ncmd \"python\" \"-m\" \"app\" \"--price=$5\"\n";
    let c = kiln_compiler::compile("v.kdl", plain, &Options::default()).expect("compiles");
    assert!(c.warnings.items.iter().all(|w| w.code != "kiln::exec_form"));
}

/// A build argument named in a `run` command is the shell's variable there
/// (build arguments reach no step): it warns, unless an `env` sets it or it
/// is a proxy variable, which reaches `run` steps.
#[test]
fn a_build_argument_in_a_run_command_warns() {
    let codes = |lines: &str| {
        warning_codes(
            "a.kdl",
            &format!(
                "kiln 1\narg \"MODEL\" default=\"m\"\narg \"HTTPS_PROXY\"\npython \"3.11\"\n{lines}\n"
            ),
        )
    };
    assert_eq!(
        codes("run \"huggingface-cli download ${MODEL}\""),
        ["a.kdl:5:1 kiln::arg_in_run"]
    );
    assert_eq!(codes("run \"echo $MODEL\""), ["a.kdl:5:1 kiln::arg_in_run"]);
    assert!(codes("run \"echo $MODELS\"").is_empty());
    assert!(codes("env MODEL=\"${MODEL}\"\nrun \"echo ${MODEL}\"").is_empty());
    assert!(codes("run \"curl --proxy $HTTPS_PROXY https://x\"").is_empty());
}

/// A lock's pin of the framework, or of a companion, that does not go with
/// the `framework` line is reported at the lock's line; a lock saved with
/// a byte-order mark is still a lock.
#[test]
fn a_lock_pin_of_the_framework_names_its_line() {
    let recipe =
        "kiln 1\npython \"3.11\"\nframework \"pytorch\" \"2.4.1\"\npip requirements=\"req.lock\"\n";
    let mut opts = Options::default();
    opts.context_files.insert(
        "req.lock".into(),
        Some("# locked\nnumpy==1.26.4\ntorch==2.5.0\ntorchvision==0.18.0\n".into()),
    );
    let e = kiln_compiler::compile("l.kdl", recipe, &opts)
        .err()
        .expect("fails");
    let got: Vec<String> = e
        .items
        .iter()
        .map(|d| format!("{} {}", e.location(d), d.message))
        .collect();
    assert_eq!(
        got,
        [
            "l.kdl:4:1 `req.lock` line 3: `torch==2.5.0` is the framework: `framework \"pytorch\" \"2.4.1\"` installs it, built for this variant",
            "l.kdl:4:1 `req.lock` line 4: torchvision 0.18.0 does not go with pytorch 2.4.1",
        ]
    );
    opts.context_files.insert(
        "req.lock".into(),
        Some("\u{feff}numpy==1.26.4\nsix==1.16.0\n".into()),
    );
    let c = kiln_compiler::compile("l.kdl", recipe, &opts).expect("compiles");
    // Read as a lock, each pin is an install op of its own.
    let llb = String::from_utf8_lossy(&c.builds[0].bytes).to_string();
    assert!(llb.contains("six==1.16.0"), "the lock was not read as pins");
}

/// With a builder kiln cannot tell has the runtime's python at the same
/// path (an in-house runtime base), the checks run the environment's python
/// on the runtime: a venv linked to a python the runtime lacks fails the
/// build there, not in the user's `docker run`. Two official python images
/// need no such check.
#[test]
fn a_foreign_builder_gets_a_check_that_the_venv_runs_on_the_runtime() {
    let check = "does not run in the runtime base";
    let compile = |base: &str| {
        let text = format!(
            "kiln 1\npython \"3.11\"\nbase \"{base}\"\nbuilder \"python:3.11-bookworm\"\npip \"six==1.16.0\"\n"
        );
        let c = kiln_compiler::compile("b.kdl", &text, &Options::default()).expect("compiles");
        c.builds[0]
            .checks
            .as_ref()
            .map(|d| String::from_utf8_lossy(&prost::Message::encode_to_vec(d)).into_owned())
            .unwrap_or_default()
    };
    assert!(compile("registry.example.com/team/runtime:1").contains(check));
    assert!(!compile("python:3.11-slim").contains(check));
}

/// A workdir is cleaned as Docker cleans a WORKDIR: `/app/../srv/./x/` is
/// `/srv/x` in the image config.
#[test]
fn a_workdir_is_cleaned() {
    let text = "kiln 1\npython \"3.11\"\nworkdir \"/app/../srv/./x/\"\n";
    let c = kiln_compiler::compile("w.kdl", text, &Options::default()).expect("compiles");
    let config: serde_json::Value =
        serde_json::from_slice(&c.builds[0].config.to_json()).expect("json");
    assert_eq!(config["config"]["WorkingDir"], "/srv/x");
}

/// A conda file's python spec must admit the recipe's python (an error at
/// the `conda` line naming the file's line); one that admits newer ones too
/// warns, since conda takes the newest.
#[test]
fn a_conda_files_python_spec_is_held_to_the_recipes() {
    let recipe = "kiln 1\npython \"3.11\"\nconda \"environment.yml\"\n";
    let with = |yml: &str| {
        let mut opts = Options::default();
        opts.context_files
            .insert("environment.yml".into(), Some(yml.to_string()));
        kiln_compiler::compile("c.kdl", recipe, &opts)
    };
    let e = with("name: x\ndependencies:\n  - numpy\n  - python>=3.12\n")
        .err()
        .expect("fails");
    assert_eq!(
        located(&e),
        [
            "c.kdl:3:7 kiln::python_mismatch `environment.yml` line 4 asks for python>=3.12, which leaves out the recipe's python 3.11: the environment's python is the image's"
        ]
    );
    let warned = with("dependencies:\n  - python>=3.10\n").expect("compiles");
    assert!(
        warned.warnings.items.iter().any(|d| d
            .message
            .contains("admits pythons newer than the recipe's 3.11")),
        "{:?}",
        warned.warnings.items
    );
    let fine = with("dependencies:\n  - python=3.11\n").expect("compiles");
    assert!(
        fine.warnings
            .items
            .iter()
            .all(|d| d.code != "kiln::python_mismatch")
    );
}

/// Exec form with a variable warns, unless a shell's script holds it
/// (`sh -c "… $PORT"`, `bash -lc`): the shell reads it there. The words
/// after the script are its `$1`, … as written, and still warn.
#[test]
fn a_variable_in_exec_form_warns_unless_a_shell_script_reads_it() {
    assert_eq!(
        warning_codes(
            "e.kdl",
            "kiln 1\npython \"3.11\"\nenv PORT=\"8000\"\ncmd \"sh\" \"-c\" \"exec uvicorn app:app --port $PORT\"\nentrypoint \"/bin/bash\" \"-lc\" \"exec python serve.py --port ${PORT}\"\n"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        warning_codes(
            "e.kdl",
            "kiln 1\npython \"3.11\"\ncmd \"sh\" \"-c\" \"exec echo $1\" \"sh\" \"$PORT\"\n"
        ),
        vec!["e.kdl:3:35 kiln::exec_form"]
    );
    assert_eq!(
        warning_codes("e.kdl", "kiln 1\npython \"3.11\"\ncmd \"echo\" \"$PORT\"\n"),
        vec!["e.kdl:3:12 kiln::exec_form"]
    );
}

/// `pip freeze` pins of companions (`torchvision==0.20.1+cu124`): the
/// release must pair with the framework's; the label names a build, which
/// kiln picks per variant (a label that is not the variant's warns).
#[test]
fn a_companions_local_label_names_a_build_not_a_release() {
    let text = "kiln 1\npython \"3.11\"\nframework \"pytorch\" \"2.5.1\"\npip \"torchvision==0.20.1+cu124\" \"torchaudio==2.5.1+cpu\"\n";
    assert_eq!(
        framework_packages(text),
        ["torch==2.5.1", "torchvision==0.20.1", "torchaudio==2.5.1"]
    );
    assert_eq!(
        warning_codes("l.kdl", text),
        ["l.kdl:4:1 kiln::framework_in_pip"]
    );
    let wrong = "kiln 1\npython \"3.11\"\nframework \"pytorch\" \"2.5.1\"\npip \"torchvision==0.19.1+cu124\"\n";
    let errors = error_lines(wrong, &Options::default());
    assert!(
        errors[0].contains("torchvision 0.19.1+cu124 does not go with pytorch 2.5.1"),
        "{errors:?}"
    );
}
