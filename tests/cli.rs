//! The `kiln` CLI as a user runs it: exit codes, what goes to stdout and
//! stderr, and that `compile` writes a Definition buildctl can read.

use std::path::PathBuf;
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("kiln runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn compile_writes_a_definition_whose_last_op_is_the_terminal() {
    let o = kiln(&["compile", "examples/sklearn-service/kiln.kdl"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A protobuf `pb.Definition`: field 1 (def, bytes) repeated; decode it
    // through the JSON form's command instead of linking prost here.
    assert!(!o.stdout.is_empty());
    assert_eq!(o.stdout[0], 0x0a, "starts with field 1, wire type 2 (def)");
    // The recipe has a `verify`: the image graph leaves it out, and says so.
    assert!(
        stderr(&o).contains("`verify` checks are not in this graph")
            && stderr(&o).contains("kiln compile --checks"),
        "{}",
        stderr(&o)
    );
    let checks = kiln(&["compile", "--checks", "examples/sklearn-service/kiln.kdl"]);
    assert!(checks.status.success(), "{}", stderr(&checks));
    assert!(!stderr(&checks).contains("not in this graph"));
    let json = kiln(&[
        "compile",
        "--format",
        "json",
        "examples/sklearn-service/kiln.kdl",
    ]);
    assert!(json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(v["variant"], "cpu");
    assert_eq!(v["config"]["config"]["User"], "1000:1000");
    let ops = v["definition"]["ops"].as_array().expect("ops");
    assert!(ops.iter().any(|op| {
        op["name"]
            .as_str()
            .is_some_and(|n| n.contains("pip install scikit-learn==1.5.1"))
    }));
}

#[test]
fn compile_is_deterministic_across_processes() {
    let a = kiln(&[
        "compile",
        "examples/tf-gpu-training/kiln.kdl",
        "--target",
        "gpu",
    ]);
    let b = kiln(&[
        "compile",
        "examples/tf-gpu-training/kiln.kdl",
        "--target",
        "gpu",
    ]);
    assert!(a.status.success() && b.status.success());
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn config_out_holds_the_image_config() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let cfg: PathBuf = dir.join("config.json");
    let o = kiln(&[
        "compile",
        "examples/pytorch-cuda/kiln.kdl",
        "--config-out",
        cfg.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg).expect("written")).expect("json");
    assert_eq!(v["config"]["WorkingDir"], "/workspace");
    assert_eq!(
        v["config"]["Entrypoint"],
        serde_json::json!(["python", "train.py"])
    );
    let env: Vec<&str> = v["config"]["Env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=all"));
    assert!(env.iter().any(|e| e.starts_with("PATH=/opt/venv/bin:")));
    let _ = std::fs::remove_dir_all(dir);
}

/// `--config-out` writes through a symlink (the link stays), refuses a
/// directory, and leaves no temporary file behind either way.
#[test]
fn config_out_follows_links_and_leaves_nothing_behind() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-cfglink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("real.json"), "old").expect("write");
    std::os::unix::fs::symlink("real.json", dir.join("link.json")).expect("symlink");
    let link = dir.join("link.json");
    let o = kiln(&[
        "compile",
        "examples/sklearn-service/kiln.kdl",
        "--config-out",
        link.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink()
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("real.json")).expect("read")).expect("json");
    assert_eq!(v["config"]["User"], "1000:1000");

    let sub = dir.join("sub");
    let o = kiln(&[
        "compile",
        "examples/sklearn-service/kiln.kdl",
        "--config-out",
        sub.to_str().expect("utf8"),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    assert_eq!(names, ["link.json", "real.json", "sub"]);
    let _ = std::fs::remove_dir_all(dir);
}

/// A compile that cannot write its LLB leaves no `--config-out` file for a
/// next step to take as this run's.
#[test]
fn config_out_is_not_written_when_the_llb_is_not() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-cfgfull-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let config = dir.join("c.json");
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "compile",
            "examples/sklearn-service/kiln.kdl",
            "--config-out",
            config.to_str().expect("utf8"),
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::fs::File::create("/dev/full").expect("/dev/full"))
        .output()
        .expect("kiln runs");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("writing to stdout"), "{}", stderr(&o));
    assert!(!config.exists(), "the config was written");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn base_config_with_a_digest_pins_the_tag_the_recipe_names() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-base-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let base: PathBuf = dir.join("base.json");
    std::fs::write(
        &base,
        r#"{"architecture":"amd64","os":"linux","created":"2020-01-02T03:04:05Z","config":{"Env":["PATH=/usr/local/bin:/usr/bin:/bin","LANG=C.UTF-8"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
    )
    .expect("write");
    let digest = format!("sha256:{}", "ab".repeat(32));
    let arg = format!(
        "docker.io/library/python:3.11-slim@{digest}={}",
        base.to_str().expect("utf8")
    );
    let o = kiln(&[
        "compile",
        "--format",
        "json",
        "examples/sklearn-service/kiln.kdl",
        "--base-config",
        &arg,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!(
            "docker-image://docker.io/library/python:3.11-slim@{digest}"
        )),
        "the base is pinned: {text}"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let env = v["config"]["config"]["Env"].as_array().expect("env");
    assert!(env.iter().any(|e| e == "LANG=C.UTF-8"), "{env:?}");
    assert_eq!(
        v["config"]["config"]["Labels"]["org.opencontainers.image.base.digest"],
        digest.as_str()
    );
    // The base's creation time is not the image's (the exporter stamps it).
    assert!(v["config"].get("created").is_none(), "{}", v["config"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_reports_located_errors_and_exits_1() {
    let o = kiln(&["check", "compiler/tests/diagnostics/many_errors.kdl"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("many_errors.kdl:2:8"), "{e}");
    assert!(e.contains("many_errors.kdl:3:1"), "{e}");
    assert!(e.contains("did you mean `framework`?"), "{e}");
    assert!(o.stdout.is_empty(), "errors never reach stdout");
}

/// Without `--target`, `check` checks every variant: an impossible gpu
/// variant fails it although cpu is the default. A problem of every
/// variant is reported once; one of some variants names them.
#[test]
fn check_checks_every_variant_and_names_the_ones_a_problem_concerns() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-variants-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let recipe = dir.join("kiln.kdl");
    std::fs::write(
        &recipe,
        "kiln 1\npython \"3.11\"\nframework \"pytorch\" \"2.4.1\"\npip \"numpy==1.26.4\" \"numpy==2.0.0\"\nvariant \"cpu\" default=#true\nvariant \"gpu\" {\n    cuda \"10.2\"\n}\nvariant \"gpu2\" {\n    cuda \"12.4\"\n}\n",
    )
    .expect("write");
    let path = recipe.to_str().expect("utf8");
    let o = kiln(&["check", path]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.matches("numpy is pinned twice").count(), 1, "{e}");
    assert!(
        e.contains("kiln.kdl:7:5: [variant gpu] pytorch 2.4.1 has no build for CUDA 10.2"),
        "{e}"
    );
    // Naming the default target checks only it.
    let fixed = std::fs::read_to_string(&recipe)
        .expect("read")
        .replace("\"numpy==2.0.0\"", "");
    std::fs::write(&recipe, fixed).expect("write");
    let o = kiln(&["check", path, "--target", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = kiln(&["check", path]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("variant gpu2 ok"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn compile_of_a_bad_recipe_writes_nothing_to_stdout() {
    let o = kiln(&["compile", "compiler/tests/diagnostics/unknown_node.kdl"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("unknown node `frameworkk`"));
}

#[test]
fn check_all_variants_and_explain_and_graph() {
    let o = kiln(&[
        "check",
        "--all-variants",
        "examples/tf-gpu-training/kiln.kdl",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("variant gpu ok"));
    let o = kiln(&[
        "explain",
        "examples/tf-gpu-training/kiln.kdl",
        "--target",
        "gpu",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("tensorflow[and-cuda]==2.16.1"), "{text}");
    assert!(text.contains("CUDA 12.3"), "{text}");
    assert!(text.contains("python:3.11-slim"), "{text}");
    // No framework version: the gpu variant gets the newest release with a
    // build for its CUDA.
    let o = kiln(&[
        "explain",
        "compiler/tests/diagnostics/unversioned_framework.kdl",
        "--target",
        "gpu",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(
            "pytorch 2.6.0 is the newest release kiln knows for python 3.11 and CUDA 12.4"
        ),
        "{text}"
    );
    let o = kiln(&["graph", "examples/sklearn-service/kiln.kdl"]);
    let dot = String::from_utf8_lossy(&o.stdout);
    assert!(dot.starts_with("digraph "), "{dot}");
    assert!(dot.contains("->"));
    assert!(dot.contains("shape=invtrapezium"), "a MergeOp node");
}

#[test]
fn usage_errors_are_clear() {
    let o = kiln(&["compile", "no/such/recipe.kdl"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no/such/recipe.kdl"));
    let o = kiln(&[
        "compile",
        "--platform",
        "linux/amd64,linux/arm64",
        "examples/sklearn-service/kiln.kdl",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("one --platform"));
    assert!(o.stdout.is_empty());
    let o = kiln(&[
        "compile",
        "--build-arg",
        "NOVALUE",
        "examples/sklearn-service/kiln.kdl",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("NAME=VALUE"));
}

#[test]
fn no_merge_compiles_for_old_engines() {
    let o = kiln(&[
        "compile",
        "--format",
        "json",
        "--no-merge",
        "examples/sklearn-service/kiln.kdl",
    ]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains("\"merge\""));
    assert!(!text.contains("\"diff\""));
    assert!(text.contains("copy /opt/venv from the builder"));
}

#[test]
fn compile_reads_the_contexts_dockerignore() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-ignore-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let recipe = dir.join("kiln.kdl");
    std::fs::create_dir_all(dir.join("app")).expect("app");
    std::fs::write(&recipe, "kiln 1\npython \"3.11\"\ncopy \"app\" \"/app\"\n").expect("write");
    let excludes = |o: &Output| -> Vec<Vec<String>> {
        assert!(o.status.success(), "{}", stderr(o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        v["definition"]["ops"]
            .as_array()
            .expect("ops")
            .iter()
            .filter(|op| op["source"]["identifier"] == "local://context")
            .map(|op| {
                op["source"]["attrs"]["local.excludepatterns"]
                    .as_str()
                    .map(|s| serde_json::from_str(s).expect("a JSON list"))
                    .unwrap_or_default()
            })
            .collect()
    };
    let compile = || {
        kiln(&[
            "compile",
            "--format",
            "json",
            recipe.to_str().expect("utf8"),
        ])
    };
    assert_eq!(excludes(&compile()), vec![Vec::<String>::new()]);
    // The context's (here: the recipe's directory) .dockerignore, cleaned.
    std::fs::write(
        dir.join(".dockerignore"),
        "# scratch\n/app/*.local\n!app/keep.local\n",
    )
    .expect("write");
    assert_eq!(
        excludes(&compile()),
        vec![vec![
            "app/*.local".to_string(),
            "!app/keep.local".to_string()
        ]]
    );
    // The recipe's own ignore file comes first, as Docker's does.
    std::fs::write(dir.join("kiln.kdl.dockerignore"), "data\n").expect("write");
    assert_eq!(excludes(&compile()), vec![vec!["data".to_string()]]);
    let _ = std::fs::remove_dir_all(dir);
}

/// A `copy` source the context lacks, or one its .dockerignore leaves out,
/// is an error at the `copy` line (the engine would only fail the copy).
#[test]
fn copy_sources_missing_from_the_context_are_located_errors() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-copy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).expect("tmp");
    std::fs::write(dir.join("secret.env"), "X=1\n").expect("write");
    let recipe = dir.join("kiln.kdl");
    let check = |text: &str| {
        std::fs::write(&recipe, text).expect("write");
        kiln(&["check", recipe.to_str().expect("utf8")])
    };
    let ok =
        check("kiln 1\npython \"3.11\"\ncopy \"src\" \"/app/src\"\ncopy \"*.env\" \"/app/\"\n");
    assert!(ok.status.success(), "{}", stderr(&ok));
    let missing = check(
        "kiln 1\npython \"3.11\"\ncopy \"src\" \"/app/src\"\ncopy \"nonexistent\" \"/app/x\"\n",
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing)
            .contains("kiln.kdl:4:1: copy source `nonexistent` is not in the build context"),
        "{}",
        stderr(&missing)
    );
    // A pattern that matches nothing, at the root or in a folder; one that
    // matches passes.
    std::fs::write(dir.join("src").join("a.py"), "").expect("write");
    let patterns = check(
        "kiln 1\npython \"3.11\"\ncopy \"src/*.py\" \"/app/\"\ncopy \"src/*.rs\" \"/app/\"\ncopy \"*.md\" \"/app/\"\n",
    );
    assert_eq!(patterns.status.code(), Some(1));
    let said = stderr(&patterns);
    assert!(
        said.contains("kiln.kdl:4:1: copy pattern `src/*.rs` matches nothing in the build context")
            && said
                .contains("kiln.kdl:5:1: copy pattern `*.md` matches nothing in the build context")
            && !said.contains("`src/*.py`"),
        "{said}"
    );
    std::fs::write(dir.join(".dockerignore"), "*.env\n").expect("write");
    // What .dockerignore leaves out is not matched.
    let unmatched = check("kiln 1\npython \"3.11\"\ncopy \"*.env\" \"/app/\"\n");
    assert!(
        stderr(&unmatched).contains("copy pattern `*.env` matches nothing"),
        "{}",
        stderr(&unmatched)
    );
    let ignored = check("kiln 1\npython \"3.11\"\ncopy \"secret.env\" \"/app/\"\n");
    assert_eq!(ignored.status.code(), Some(1));
    assert!(
        stderr(&ignored)
            .contains("copy source `secret.env` is left out of the build context by .dockerignore")
            && stderr(&ignored).contains(".dockerignore leaves it out"),
        "{}",
        stderr(&ignored)
    );
    // A `!` pattern elsewhere in the file does not bring a left-out file
    // back; a folder it re-includes something in is still sent.
    std::fs::create_dir_all(dir.join("data")).expect("mkdir");
    std::fs::write(dir.join("data").join("big.bin"), "x").expect("write");
    std::fs::write(dir.join("data").join("keep.bin"), "x").expect("write");
    std::fs::write(
        dir.join(".dockerignore"),
        "*.env\ndata/*.bin\n!data/keep.bin\n",
    )
    .expect("write");
    let reincluded = check(
        "kiln 1\npython \"3.11\"\ncopy \"secret.env\" \"/app/\"\ncopy \"data/big.bin\" \"/app/\"\n\
         copy \"data/keep.bin\" \"/app/\"\ncopy \"data\" \"/app/data\"\n",
    );
    let said = stderr(&reincluded);
    assert_eq!(reincluded.status.code(), Some(1), "{said}");
    assert!(
        said.contains(
            "kiln.kdl:3:1: copy source `secret.env` is left out of the build context by .dockerignore"
        ) && said.contains(
            "kiln.kdl:4:1: copy source `data/big.bin` is left out of the build context by .dockerignore"
        )
            && !said.contains("kiln.kdl:5:1")
            && !said.contains("kiln.kdl:6:1"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The CLI reads the requirements files from the context directory (the
/// recipe's, or `--context`): includes are followed, and a lock's pins get
/// an install op each; a missing include is a located error.
#[test]
fn requirements_files_are_read_from_the_context() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-reqs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("reqs")).expect("tmp");
    let recipe = dir.join("kiln.kdl");
    std::fs::write(
        &recipe,
        "kiln 1\npython \"3.11\"\npip requirements=\"lock.txt\"\npip requirements=\"reqs/app.txt\"\n",
    )
    .expect("write");
    std::fs::write(dir.join("lock.txt"), "six==1.16.0\nidna==3.7\n").expect("write");
    std::fs::write(dir.join("reqs/app.txt"), "-r base.txt\nflask\n").expect("write");
    let r = recipe.to_str().expect("utf8");

    let check = kiln(&["check", r]);
    assert!(!check.status.success(), "reqs/base.txt is missing");
    assert!(
        stderr(&check).contains(
            "kiln.kdl:4:1: `reqs/app.txt` line 1 reads `-r base.txt`, and `reqs/base.txt` is not in the build context"
        ),
        "{}",
        stderr(&check)
    );

    std::fs::write(dir.join("reqs/base.txt"), "requests\n").expect("write");
    let explain = kiln(&["explain", r]);
    let out = String::from_utf8_lossy(&explain.stdout).into_owned();
    assert!(explain.status.success(), "{}", stderr(&explain));
    assert!(
        out.contains("six==1.16.0 (from the lock lock.txt): its own layer"),
        "{out}"
    );
    assert!(
        out.contains("-r reqs/app.txt (bind-mounted from the context with reqs/base.txt"),
        "{out}"
    );
    // What .dockerignore leaves out is not in the context.
    std::fs::write(dir.join(".dockerignore"), "reqs/base*\n").expect("write");
    let ignored = kiln(&["check", r]);
    assert!(!ignored.status.success());
    assert!(
        stderr(&ignored).contains("`reqs/base.txt` is not in the build context"),
        "{}",
        stderr(&ignored)
    );
    std::fs::remove_file(dir.join(".dockerignore")).expect("rm");
    // Elsewhere with --context: the files are read there.
    let other = std::env::temp_dir().join(format!("kiln-cli-reqs-other-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&other);
    std::fs::create_dir_all(&other).expect("tmp");
    let elsewhere = kiln(&["check", "--context", other.to_str().expect("utf8"), r]);
    assert!(!elsewhere.status.success());
    assert!(
        stderr(&elsewhere).contains("requirements file `lock.txt` is not in the build context"),
        "{}",
        stderr(&elsewhere)
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

/// An endless or huge input is refused after reading one byte more than a
/// recipe may have, from a file or from stdin.
#[test]
fn oversized_input_is_refused_without_reading_it_all() {
    let o = kiln(&["check", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/dev/zero is over 1048576 bytes"),
        "{}",
        stderr(&o)
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["check", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kiln runs");
    let mut stdin = child.stdin.take().expect("stdin");
    // kiln stops reading and exits; the writer then sees a broken pipe.
    let _ = std::io::Write::write_all(&mut stdin, &vec![b' '; 3 << 20]);
    drop(stdin);
    let o = child.wait_with_output().expect("waits");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("the recipe on stdin is over 1048576 bytes"),
        "{}",
        stderr(&o)
    );
}

/// `--base-config` takes a JSON object, and says when the recipe uses no
/// image by that reference (a reference written differently).
#[test]
fn base_configs_are_objects_and_unused_ones_are_named() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-base-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tmp");
    let recipe = dir.join("kiln.kdl");
    std::fs::write(&recipe, "kiln 1\npython \"3.11\"\n").expect("write");
    std::fs::write(dir.join("arr.json"), "[]").expect("write");
    std::fs::write(
        dir.join("ok.json"),
        r#"{"architecture":"amd64","os":"linux","config":{}}"#,
    )
    .expect("write");
    let r = recipe.to_str().expect("utf8");
    let arg = |name: &str, file: &str| format!("{name}={}", dir.join(file).display());

    let array = kiln(&[
        "check",
        "--base-config",
        &arg("python:3.11-slim", "arr.json"),
        r,
    ]);
    assert_eq!(array.status.code(), Some(2));
    assert!(
        stderr(&array).contains("an image config is a JSON object"),
        "{}",
        stderr(&array)
    );

    let other = kiln(&[
        "check",
        "--base-config",
        &arg("python:3.12-slim", "ok.json"),
        r,
    ]);
    assert!(other.status.success());
    assert!(
        stderr(&other).contains(
            "--base-config python:3.12-slim: the recipe uses no such image (it uses docker.io/library/python:3.11-slim)"
        ),
        "{}",
        stderr(&other)
    );
    let used = kiln(&[
        "check",
        "--base-config",
        &arg("python:3.11-slim", "ok.json"),
        r,
    ]);
    assert!(
        !stderr(&used).contains("no such image"),
        "{}",
        stderr(&used)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn context_links_resolve_inside_the_context_as_the_engine_resolves_them() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-ctxlink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(ctx.join("sub")).expect("mkdir");
    std::fs::write(dir.join("outside.txt"), "outsidepkg==1.0\n").expect("write");
    std::fs::write(ctx.join("lock.txt"), "six==1.16.0\n").expect("write");
    let recipe = ctx.join("kiln.kdl");
    let check = |req: &str| {
        std::fs::write(
            &recipe,
            format!("kiln 1\npython \"3.11\"\npip requirements=\"{req}\"\n"),
        )
        .expect("write");
        kiln(&["explain", recipe.to_str().expect("utf8")])
    };
    // A link out of the context (relative or absolute) finds nothing there.
    std::os::unix::fs::symlink("../../outside.txt", ctx.join("sub/out.txt")).expect("symlink");
    std::os::unix::fs::symlink(dir.join("outside.txt"), ctx.join("abs.txt")).expect("symlink");
    for req in ["sub/out.txt", "abs.txt"] {
        let o = check(req);
        assert_eq!(o.status.code(), Some(1), "{req}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!(
                "requirements file `{req}` is not in the build context"
            )),
            "{req}: {}",
            stderr(&o)
        );
        assert!(!String::from_utf8_lossy(&o.stdout).contains("outsidepkg"));
    }
    // Links inside it are followed; an absolute target starts at its root.
    std::os::unix::fs::symlink("../lock.txt", ctx.join("sub/lock.txt")).expect("symlink");
    std::os::unix::fs::symlink("/lock.txt", ctx.join("rooted.txt")).expect("symlink");
    for req in ["sub/lock.txt", "rooted.txt"] {
        let o = check(req);
        assert!(o.status.success(), "{req}: {}", stderr(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("six==1.16.0"),
            "{req}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn config_out_never_overwrites_the_recipe() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-cfgself-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let recipe = dir.join("kiln.kdl");
    std::fs::write(&recipe, "kiln 1\npython \"3.11\"\n").expect("write");
    std::os::unix::fs::symlink("kiln.kdl", dir.join("link.kdl")).expect("symlink");
    for out in ["kiln.kdl", "link.kdl"] {
        let o = kiln(&[
            "compile",
            recipe.to_str().expect("utf8"),
            "--config-out",
            dir.join(out).to_str().expect("utf8"),
        ]);
        assert_eq!(o.status.code(), Some(2), "{out}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("is the recipe itself"),
            "{}",
            stderr(&o)
        );
        assert!(o.stdout.is_empty());
    }
    assert_eq!(
        std::fs::read_to_string(&recipe).expect("read"),
        "kiln 1\npython \"3.11\"\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn options_that_name_nothing_are_refused() {
    let recipe = "examples/sklearn-service/kiln.kdl";
    for (args, says) in [
        (vec!["--platform", ","], "--platform names no platform"),
        (
            vec!["--context", "/nonexistent-kiln-ctx"],
            "not a directory",
        ),
        (vec!["--context-name", "a b"], "a local source name is"),
        (vec!["--context-name", ""], "a local source name is"),
    ] {
        let mut all = vec!["check", recipe];
        all.extend(args.iter().copied());
        let o = kiln(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn a_recipe_that_is_not_utf8_is_refused_at_its_first_bad_byte() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-utf8-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let recipe = dir.join("u.kdl");
    std::fs::write(&recipe, b"kiln 1\nname \"a\xffb\"\n").expect("write");
    let o = kiln(&["check", recipe.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("u.kdl:2:8: not UTF-8 text"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `check` reports every missing context file in one run: a missing
/// requirements file does not hide the missing `copy` sources.
#[test]
fn check_reports_every_missing_context_file() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-missing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let recipe = dir.join("kiln.kdl");
    std::fs::write(
        &recipe,
        "kiln 1\npython \"3.11\"\npip requirements=\"nope.txt\"\ncopy \"src\" \"/app/src\"\n",
    )
    .expect("write");
    let o = kiln(&["check", recipe.to_str().expect("utf8")]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("kiln.kdl:3:1: requirements file `nope.txt` is not in the build context"),
        "{err}"
    );
    assert!(
        err.contains("kiln.kdl:4:1: copy source `src` is not in the build context"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A local project or archive a requirements file installs, missing from
/// the context, is an error that names the file's line (pip would stop on
/// it in the install step); one that is there is fine.
#[test]
fn a_missing_local_project_in_a_requirements_file_is_named() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-localreq-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("libs/proj")).expect("mkdir");
    std::fs::write(dir.join("libs/proj/pyproject.toml"), "").expect("write");
    std::fs::write(
        dir.join("kiln.kdl"),
        "kiln 1\npython \"3.11\"\npip requirements=\"requirements.txt\"\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("requirements.txt"),
        "./libs/proj\ndist/x-1.0-py3-none-any.whl\n",
    )
    .expect("write");
    let recipe = dir.join("kiln.kdl");
    let o = kiln(&["check", recipe.to_str().expect("utf8")]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("kiln.kdl:3:1: `requirements.txt` line 2 installs `dist/x-1.0-py3-none-any.whl`, which is not in the build context"),
        "{err}"
    );
    assert!(!err.contains("libs/proj`, which"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A file copied onto `/` for a user touches no folder of the image: no
/// warning; a folder copied there does warn.
#[test]
fn only_a_folder_copied_onto_root_warns() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-ontoroot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("overlay/etc")).expect("mkdir");
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\n").expect("write");
    let recipe = dir.join("kiln.kdl");
    for (src, warns) in [("run.sh", false), ("overlay", true)] {
        std::fs::write(
            &recipe,
            format!("kiln 1\npython \"3.11\"\nuser \"app\"\ncopy \"{src}\" \"/\"\n"),
        )
        .expect("write");
        let o = kiln(&["check", recipe.to_str().expect("utf8")]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            stderr(&o).contains("copy_onto_root"),
            warns,
            "{src}: {}",
            stderr(&o)
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
