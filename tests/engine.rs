//! End-to-end: recipes under `tests/e2e/` built through the kiln frontend
//! image with `docker buildx build`, as a user builds them, on the real
//! engines of `scripts/` (docker 26 with BuildKit 0.13; docker 20.10 with
//! BuildKit 0.8 for the fallback without MergeOp). Each test asserts what a
//! user relies on: the image runs, its python imports, its config, files and
//! user are the recipe's, caches and secrets stay out, the cache works as
//! kiln promises, errors are located.
//!
//! They run with `KILN_E2E=1` (`make test`); see `tests/common/mod.rs` for
//! skipping and the knobs.

mod common;

use std::path::Path;

use common::{Build, BuildResult, EngineKind, Image, TempDir, fixture, kiln, nonce, secret};

/// The recipe's pins, as `pip freeze` prints them.
const PINS: &[&str] = &["numpy==1.26.4", "six==1.16.0"];

fn ml_recipe() -> std::path::PathBuf {
    fixture("ml").join("kiln.kdl")
}

fn env_of(config: &serde_json::Value) -> Vec<String> {
    config["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect()
}

fn env_value(config: &serde_json::Value, key: &str) -> Option<String> {
    env_of(config)
        .into_iter()
        .find_map(|e| e.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// Config every variant of `tests/e2e/ml` has.
#[track_caller]
fn assert_common_config(image: &Image, variant: &str) -> serde_json::Value {
    let inspect = image.inspect();
    let config = &inspect["Config"];
    assert_eq!(config["User"], "1000:1000", "{config:#}");
    assert_eq!(config["WorkingDir"], "/app", "{config:#}");
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["python", "-m", "app.main"]),
        "{config:#}"
    );
    let path = env_value(config, "PATH").expect("PATH in the config");
    assert!(
        path.starts_with("/opt/venv/bin:"),
        "PATH must start with the venv: {path}"
    );
    assert_eq!(
        env_value(config, "VIRTUAL_ENV").as_deref(),
        Some("/opt/venv")
    );
    assert_eq!(env_value(config, "PYTHONUNBUFFERED").as_deref(), Some("1"));
    if variant == "cpu" {
        // `${LANG}` in the recipe's env is the base image's LANG: the
        // frontend hands the compiler the base's config.
        assert_eq!(
            env_value(config, "KILN_E2E_LANG").as_deref(),
            Some("lang=C.UTF-8"),
            "{config:#}"
        );
    }
    assert_eq!(
        env_value(config, "KILN_E2E_VARIANT").as_deref(),
        Some(variant),
        "a variant's env replaces the top-level value: {config:#}"
    );
    assert!(
        config["ExposedPorts"].get("8080/tcp").is_some(),
        "expose 8080: {config:#}"
    );
    // Docker's health check and stop signal, as `docker inspect` reads them.
    assert_eq!(
        config["Healthcheck"],
        serde_json::json!({
            "Test": ["CMD", "python", "-c", "import app.main"],
            "Interval": 30_000_000_000_u64,
            "Timeout": 5_000_000_000_u64,
            "StartPeriod": 90_000_000_000_u64,
            "Retries": 3
        }),
        "{config:#}"
    );
    assert_eq!(config["StopSignal"], "SIGINT", "{config:#}");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "kiln-e2e");
    assert_eq!(
        labels["org.opencontainers.image.description"],
        "kiln end-to-end fixture"
    );
    assert_eq!(labels["kiln.variant"], variant, "{labels:#}");
    inspect
}

/// Nothing of apt's or pip's caches (they live on cache mounts) and no
/// secret mount point content made it into the image.
#[track_caller]
fn assert_no_caches(image: &Image) {
    let leftovers = image.sh_as(
        Some("0"),
        "find /root/.cache /home/app/.cache /var/cache/apt /var/lib/apt/lists /run/secrets \
              -type f ! -name lock 2>/dev/null; true",
    );
    assert_eq!(
        leftovers.trim(),
        "",
        "apt/pip cache files or secrets in the image:\n{leftovers}"
    );
    // The runtime's apt packages are really there, installed from that cache.
    image.sh("test -x /usr/bin/tini");
}

/// The marked CA bundle, mounted into the install steps, is nowhere in
/// what the build produced: no layer, the config, the history, the LLB.
#[track_caller]
fn assert_no_secret(image: &Image, recipe: &Path, target: &str) {
    let marker = secret().marker.as_bytes();
    // A positive control: the same scan finds a string the app layer holds,
    // so a scan that reads nothing cannot pass.
    let control = b"kiln e2e greeting";
    let saved = image.save_and_search(&[marker, control]);
    assert!(
        saved.layers >= 2,
        "docker save: only {} layers found",
        saved.layers
    );
    assert!(
        !saved.found[1].is_empty(),
        "the scan did not find the app's greeting in any of {} files: it does not read the layers",
        saved.files
    );
    assert!(
        saved.found[0].is_empty(),
        "the secret's bytes are in the saved image: {:?}",
        saved.found[0]
    );
    let inspect = image.inspect().to_string();
    assert!(
        !inspect.contains(&secret().marker),
        "secret in the image config"
    );
    let history = image.history();
    assert!(!history.contains(&secret().marker), "secret in the history");
    for format in ["llb", "json"] {
        let o = kiln(&[
            "compile",
            "--format",
            format,
            "--target",
            target,
            recipe.to_str().expect("utf-8 path"),
        ]);
        assert!(
            o.status.success(),
            "kiln compile: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !common::contains(&o.stdout, marker),
            "secret in the LLB ({format})"
        );
        if format == "json" {
            // The secret reaches the steps as a secret mount, by id only.
            let json = String::from_utf8_lossy(&o.stdout);
            assert!(
                json.contains("ca-bundle"),
                "no ca-bundle secret mount in the LLB"
            );
        }
    }
}

/// Neither the build's output nor the image of `variant` holds the secret,
/// and no layer holds apt's or pip's caches.
#[track_caller]
fn assert_nothing_leaked(build: &BuildResult, image: &Image, variant: &str) {
    assert!(
        !build.all_text().contains(&secret().marker),
        "secret in the build output"
    );
    assert_no_caches(image);
    assert_no_secret(image, &ml_recipe(), variant);
}

#[track_caller]
fn assert_pip_freeze(image: &Image, pins: &[&str]) {
    let freeze = image.exec(&["pip", "freeze", "--all", "--exclude", "pip"]);
    let mut got: Vec<&str> = freeze
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("setuptools=="))
        .collect();
    got.sort_unstable();
    assert_eq!(got, pins, "pip freeze:\n{freeze}");
    image.exec(&["pip", "check"]);
}

// ----------------------------------------------------------------- CPU

#[test]
fn cpu_image_runs_imports_work_and_the_config_is_the_recipes() {
    let Some(engine) = common::engine(EngineKind::New, "cpu_image_runs") else {
        return;
    };
    let image = engine.image("cpu-runs");
    engine
        .build(
            &Build::new(ml_recipe(), fixture("ml"))
                .target("cpu")
                .tag(&image),
        )
        .expect_ok();

    // `docker run IMAGE`: the recipe's cmd, as the recipe's user.
    let out = image.run(&[]);
    assert!(
        out.contains(
            "kiln e2e greeting; variant cpu; numpy 1.26.4; six 1.16.0; python 3.11; prefix /opt/venv"
        ),
        "{out}"
    );
    let imports = image.exec(&[
        "python",
        "-c",
        "import numpy, six, sys; print(numpy.ones(3).sum(), six.PY3, sys.executable)",
    ]);
    assert_eq!(imports.trim(), "3.0 True /opt/venv/bin/python");
    // A standard venv: `python -m pip` works in the image.
    image.exec(&["python", "-m", "pip", "--version"]);
    assert_pip_freeze(&image, PINS);

    let inspect = assert_common_config(&image, "cpu");
    let config = &inspect["Config"];
    assert!(
        config["Entrypoint"].is_null()
            || config["Entrypoint"]
                .as_array()
                .is_some_and(|a| a.is_empty()),
        "no entrypoint on the slim base: {config:#}"
    );
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Architecture"], "amd64");
}

#[test]
fn cpu_image_files_user_and_permissions() {
    let Some(engine) = common::engine(EngineKind::New, "cpu_image_files") else {
        return;
    };
    let image = engine.image("cpu-files");
    engine
        .build(
            &Build::new(ml_recipe(), fixture("ml"))
                .target("cpu")
                .tag(&image),
        )
        .expect_ok();

    assert_eq!(
        image.sh("id").trim(),
        "uid=1000(app) gid=1000(app) groups=1000(app)"
    );
    assert_eq!(image.sh("pwd").trim(), "/app");
    assert_eq!(image.sh("echo $HOME").trim(), "/home/app");
    // The workdir and the copied files belong to the user; modes are kept.
    let stat = image.sh(
        "stat -c '%n %U:%G %a' /app /app/app /app/app/main.py /app/app/greeting.txt /app/app/tool.sh /home/app",
    );
    assert_eq!(
        stat.lines().collect::<Vec<_>>(),
        [
            "/app app:app 755",
            "/app/app app:app 755",
            "/app/app/main.py app:app 644",
            "/app/app/greeting.txt app:app 644",
            "/app/app/tool.sh app:app 755",
            "/home/app app:app 755",
        ],
        "{stat}"
    );
    assert_eq!(image.sh("/app/app/tool.sh").trim(), "tool ok as app");
    // Only what `copy` names is sent from the context.
    let listing = image.sh("cd /app && find . | sort");
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        [
            ".",
            "./app",
            "./app/__init__.py",
            "./app/greeting.txt",
            "./app/main.py",
            "./app/tool.sh"
        ],
        "{listing}"
    );
    assert_eq!(
        image.sh("cat /app/app/greeting.txt"),
        std::fs::read_to_string(fixture("ml/app/greeting.txt")).expect("fixture")
    );
    // The environment is the venv, owned by root: the app cannot change it.
    assert_eq!(image.sh("stat -c %U /opt/venv/bin/python").trim(), "root");
    assert!(
        !image
            .run_with(&["--entrypoint", "/bin/sh"], &["-c", "touch /opt/venv/x"])
            .ok
    );
}

/// Copies into folders the base has (`/etc`, `/tmp`, `/srv`) or reaches
/// through a link (`/bin` is `usr/bin` on Debian): the base's folders keep
/// their owner and mode, the link stays a link (the file lands where it
/// points, as a Dockerfile's COPY puts it), and only what kiln creates
/// belongs to the user.
#[test]
fn app_files_leave_the_bases_folders_and_links_as_they_were() {
    let Some(engine) = common::engine(EngineKind::New, "app_files_on_base") else {
        return;
    };
    let ctx = TempDir::new("app-files-on-base");
    std::fs::write(
        ctx.path().join("kiln.kdl"),
        "// syntax=kiln/frontend:dev\nkiln 1\npython \"3.11\"\nuser \"app\" uid=1000\n\
         workdir \"/srv/app\"\ncopy \"m.py\" \"m.py\"\ncopy \"m.py\" \"/etc/myapp/conf.py\"\n\
         copy \"m.py\" \"/tmp/seed.py\"\ncopy \"tool.sh\" \"/bin/tool.sh\" owner=\"root\"\n",
    )
    .expect("write");
    std::fs::write(ctx.path().join("m.py"), "print('m')\n").expect("write");
    std::fs::write(ctx.path().join("tool.sh"), "#!/bin/sh\necho tool\n").expect("write");
    std::fs::set_permissions(
        ctx.path().join("tool.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let image = engine.image("app-files-on-base");
    engine
        .build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()).tag(&image))
        .expect_ok();
    let stat = image.sh(
        "stat -c '%n %U:%G %a %F' /etc /usr /usr/bin /srv /tmp /srv/app /srv/app/m.py /etc/myapp/conf.py /tmp/seed.py /bin /usr/bin/tool.sh",
    );
    assert_eq!(
        stat.lines().collect::<Vec<_>>(),
        [
            "/etc root:root 755 directory",
            "/usr root:root 755 directory",
            "/usr/bin root:root 755 directory",
            "/srv root:root 755 directory",
            "/tmp root:root 1777 directory",
            "/srv/app app:app 755 directory",
            "/srv/app/m.py app:app 644 regular file",
            "/etc/myapp/conf.py app:app 644 regular file",
            "/tmp/seed.py app:app 644 regular file",
            "/bin root:root 777 symbolic link",
            // `owner="root"`: the user runs it, and cannot change it.
            "/usr/bin/tool.sh root:root 755 regular file",
        ],
        "{stat}"
    );
    assert_eq!(
        image.sh("/usr/bin/tool.sh && /bin/sh -c 'echo sh'"),
        "tool\nsh\n"
    );
    assert!(
        image.sh("touch /tmp/mine && echo ok").contains("ok"),
        "the user writes to /tmp"
    );
}

/// A `run` step runs in the workdir, which kiln makes first (the user's),
/// not the engine for the step (root's).
#[test]
fn a_run_step_leaves_the_workdir_to_the_user() {
    let Some(engine) = common::engine(EngineKind::New, "run_workdir_owner") else {
        return;
    };
    let ctx = TempDir::new("run-workdir");
    std::fs::write(
        ctx.path().join("kiln.kdl"),
        "// syntax=kiln/frontend:dev\nkiln 1\npython \"3.11\"\nuser \"app\" uid=1000\n\
         workdir \"/app/work\"\nrun \"pwd > /tmp/run-cwd\"\ncopy \"m.py\" \"m.py\"\n\
         verify \"open('probe', 'w').write('x')\" after=\"copy\"\n",
    )
    .expect("write");
    std::fs::write(ctx.path().join("m.py"), "print('m')\n").expect("write");
    let image = engine.image("run-workdir");
    engine
        .build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()).tag(&image))
        .expect_ok();
    assert_eq!(
        image
            .sh("cat /tmp/run-cwd; stat -c '%n %U:%G' /app /app/work /app/work/m.py")
            .trim(),
        "/app/work\n/app app:app\n/app/work app:app\n/app/work/m.py app:app"
    );
}

/// ubuntu:24.04 (and so nvidia/cuda's ubuntu24.04 images) ships a user
/// `ubuntu` with uid and gid 1000, the recipe's default: `useradd -u 1000`
/// then fails. kiln renames that account instead.
#[test]
fn a_base_that_has_the_users_uid_gets_it_renamed() {
    let Some(engine) = common::engine(EngineKind::New, "uid_taken") else {
        return;
    };
    let base = built_base(
        engine,
        &format!("kiln-e2e-base:uid-{}", nonce()),
        "FROM python:3.11-slim\nRUN groupadd -g 1000 ubuntu && useradd -m -u 1000 -g 1000 ubuntu\n",
        &[],
    );
    let image = built_recipe(
        engine,
        "uid-taken",
        &format!(
            "// syntax=kiln/frontend:dev\nkiln 1\npython \"3.11\"\nbase \"{}\"\nuser \"app\" uid=1000\nworkdir \"/app\"\ncmd \"id\"\n",
            base.tag
        ),
        &[],
    );
    assert_eq!(
        image.run(&[]).trim(),
        "uid=1000(app) gid=1000(app) groups=1000(app)"
    );
    assert_eq!(
        image
            .sh("echo $HOME; stat -c '%U %G' /app /home/app; ls /home")
            .trim(),
        "/home/app\napp app\napp app\napp"
    );
}

/// A notebook-style base: its uid 1000 account's home is its WORKDIR,
/// with files in it. The account is renamed, but its home stays, so the
/// image's workdir still holds the base's files.
#[test]
fn a_renamed_account_keeps_a_home_the_bases_workdir_is_in() {
    let Some(engine) = common::engine(EngineKind::New, "uid_taken_home") else {
        return;
    };
    let base = built_base(
        engine,
        &format!("kiln-e2e-base:jovyan-{}", nonce()),
        "FROM python:3.11-slim\nRUN useradd -m -u 1000 jovyan && echo hi > /home/jovyan/settings.cfg\nUSER jovyan\nWORKDIR /home/jovyan\n",
        &[],
    );
    let image = built_recipe(
        engine,
        "uid-taken-home",
        &format!(
            "// syntax=kiln/frontend:dev\nkiln 1\npython \"3.11\"\nbase \"{}\"\nuser \"app\" uid=1000\ncopy \"m.py\" \"m.py\"\n",
            base.tag
        ),
        &[("m.py", "print('m')\n")],
    );
    assert_eq!(
        image
            .sh("id -un; pwd; echo $HOME; ls; stat -c '%U' settings.cfg")
            .trim(),
        "app\n/home/jovyan\n/home/jovyan\nm.py\nsettings.cfg\nroot"
    );
}

#[test]
fn cpu_image_holds_no_cache_and_no_secret() {
    let Some(engine) = common::engine(EngineKind::New, "cpu_image_no_cache_no_secret") else {
        return;
    };
    let image = engine.image("cpu-secret");
    // --no-cache: the install steps really run, with the marked bundle mounted.
    let build = engine.build(
        &Build::new(ml_recipe(), fixture("ml"))
            .target("cpu")
            .tag(&image)
            .no_cache(),
    );
    build.expect_ok();
    assert!(
        !build.named("] pip install ").is_empty()
            && build.named("] pip install ").iter().all(|v| v.executed()),
        "--no-cache must run the installs:\n{}",
        build.summary()
    );
    assert_nothing_leaked(&build, &image, "cpu");
}

// ----------------------------------------------------------------- GPU

#[test]
fn gpu_image_on_the_cuda_base_runs_with_its_config() {
    let Some(engine) = common::engine(EngineKind::New, "gpu_image") else {
        return;
    };
    let image = engine.image("gpu");
    let build = engine.build(
        &Build::new(ml_recipe(), fixture("ml"))
            .target("gpu")
            .tag(&image)
            .no_cache(),
    );
    build.expect_ok();
    assert!(
        !build.named("nvidia/cuda").is_empty(),
        "the gpu variant runs on the nvidia/cuda base:\n{}",
        build.summary()
    );

    // The base's entrypoint (the CUDA banner) is kept, then the recipe's cmd.
    let out = image.run(&[]);
    assert!(out.contains("CUDA Version 12.4.1"), "{out}");
    assert!(
        out.contains("kiln e2e greeting; variant gpu; numpy 1.26.4; six 1.16.0;"),
        "{out}"
    );
    assert!(out.contains("prefix /opt/venv"), "{out}");
    let imports = image.sh("python -c 'import numpy, six; print(numpy.ones(3).sum())'");
    assert_eq!(imports.trim(), "3.0");
    assert_pip_freeze(&image, PINS);

    let inspect = assert_common_config(&image, "gpu");
    let config = &inspect["Config"];
    // kiln keeps the base's config: its env and entrypoint.
    assert_eq!(env_value(config, "CUDA_VERSION").as_deref(), Some("12.4.1"));
    // `$LD_LIBRARY_PATH` in the recipe's env is the base's value.
    assert_eq!(
        env_value(config, "LD_LIBRARY_PATH").as_deref(),
        Some("/opt/kiln-e2e/lib:/usr/local/nvidia/lib:/usr/local/nvidia/lib64"),
        "{config:#}"
    );
    assert_eq!(
        env_value(config, "NVIDIA_VISIBLE_DEVICES").as_deref(),
        Some("all")
    );
    assert_eq!(
        env_value(config, "NVIDIA_DRIVER_CAPABILITIES").as_deref(),
        Some("compute,utility")
    );
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/opt/nvidia/nvidia_entrypoint.sh"]),
        "{config:#}"
    );
    assert_eq!(image.sh("id -un").trim(), "app");
    assert_eq!(image.sh("pwd").trim(), "/app");

    assert_nothing_leaked(&build, &image, "gpu");
}

// ----------------------------------------------------------------- cache

#[test]
fn a_second_build_is_fully_cached() {
    let Some(engine) = common::engine(EngineKind::New, "second_build_cached") else {
        return;
    };
    let image = engine.image("cached");
    let build = Build::new(ml_recipe(), fixture("ml"))
        .target("cpu")
        .tag(&image);
    engine.build(&build).expect_ok();
    let second = engine.build(&build);
    second.expect_ok();
    assert!(
        second.executed().is_empty(),
        "the second build ran ops:\n{}",
        second.summary()
    );
    // Every op of the image (sources aside) is reported, and as cached.
    let ops = second.recipe_ops();
    assert!(
        ops.len() >= 6,
        "too few ops reported:\n{}",
        second.summary()
    );
    assert!(
        ops.iter().all(|v| v.cached),
        "the second build should report every op as cached:\n{}",
        second.summary()
    );
}

#[test]
fn the_contexts_dockerignore_keeps_files_out_of_the_build() {
    let Some(engine) = common::engine(EngineKind::New, "dockerignore") else {
        return;
    };
    let ctx = TempDir::with_fixture("ml");
    std::fs::write(
        ctx.path().join(".dockerignore"),
        "# scratch files\napp/*.local\n!app/keep.local\n",
    )
    .expect("write");
    let notes = ctx.path().join("app/notes.local");
    std::fs::write(&notes, "not for the image\n").expect("write");
    std::fs::write(ctx.path().join("app/keep.local"), "kept\n").expect("write");
    let recipe = ctx.path().join("kiln.kdl");
    let image = engine.image("dockerignore");
    let build = Build::new(&recipe, ctx.path()).target("cpu").tag(&image);
    engine.build(&build).expect_ok();
    let files = image.sh("ls /app/app");
    assert!(files.contains("main.py"), "{files}");
    assert!(
        files.contains("keep.local"),
        "a `!` pattern re-includes: {files}"
    );
    assert!(
        !files.contains("notes.local"),
        "an ignored file was copied: {files}"
    );

    // An edit to an ignored file is no change to the build.
    std::fs::write(&notes, format!("edited {}\n", nonce())).expect("write");
    let rebuilt = engine.build(&build);
    rebuilt.expect_ok();
    let ran = rebuilt.executed_names();
    assert!(
        !ran.iter().any(|n| n.contains("copy app")),
        "an ignored file's edit copied the app again:\n{}",
        rebuilt.summary()
    );
}

#[test]
fn a_context_change_rebuilds_only_the_app_branch() {
    let Some(engine) = common::engine(EngineKind::New, "context_change") else {
        return;
    };
    let ctx = TempDir::with_fixture("ml");
    let recipe = ctx.path().join("kiln.kdl");
    let image = engine.image("context");
    let build = Build::new(&recipe, ctx.path()).target("cpu").tag(&image);
    engine.build(&build).expect_ok();

    // A change no earlier run made, so its result cannot be in the cache.
    let token = nonce();
    let greeting = ctx.path().join("app/greeting.txt");
    std::fs::write(&greeting, format!("kiln e2e greeting {token}\n")).expect("write");
    let rebuilt = engine.build(&build);
    rebuilt.expect_ok();
    let ran = rebuilt.executed_names();
    assert!(
        ran.iter().any(|n| n.contains("copy app")),
        "the app files were not copied again:\n{}",
        rebuilt.summary()
    );
    for step in [
        "apt-get",
        "pip install",
        "python -m venv",
        "user app",
        "pip: ",
    ] {
        assert!(
            !ran.iter().any(|n| n.contains(step)),
            "`{step}` ran again after a context change:\n{}",
            rebuilt.summary()
        );
    }
    let out = image.run(&[]);
    assert!(
        out.contains(&format!("kiln e2e greeting {token}; variant cpu")),
        "{out}"
    );
}

/// A per-run copy of a fixture base: `from` plus one file that names the
/// run. BuildKit keys an image by its layers (the chain of diff IDs, not the
/// config), so a new layer is what makes builds on it share no op with
/// earlier runs: every step runs again, with the cache mounts as they are.
/// (`--no-cache` would run them too, but BuildKit then gives each step
/// fresh, empty cache mounts.)
fn fresh_base(engine: &'static common::Engine, from: &str) -> Image {
    let tag = format!("kiln-e2e-base:{}", nonce());
    let run = format!("{tag}\n");
    built_base(
        engine,
        &tag,
        &format!("FROM {from}\nCOPY run /etc/kiln-e2e-run\n"),
        &[("run", &run)],
    )
}

/// An image `docker build` makes from `dockerfile` (with `files` beside
/// it), tagged `tag`: a base for a recipe to build on.
fn built_base(
    engine: &'static common::Engine,
    tag: &str,
    dockerfile: &str,
    files: &[(&str, &str)],
) -> Image {
    let dir = TempDir::new("base");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let o = engine
        .docker()
        .args(["build", "-q", "-t", tag])
        .arg(dir.path())
        .output()
        .expect("docker build");
    assert!(
        o.status.success(),
        "docker build of {tag}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Image {
        engine,
        tag: tag.to_string(),
    }
}

/// Build `recipe` (with `files` beside it in its context) through the
/// frontend into a new image named after `test`; the build must succeed.
fn built_recipe(
    engine: &'static common::Engine,
    test: &str,
    recipe: &str,
    files: &[(&str, &str)],
) -> Image {
    let ctx = TempDir::new("ctx");
    std::fs::write(ctx.path().join("kiln.kdl"), recipe).expect("write");
    for (name, text) in files {
        std::fs::write(ctx.path().join(name), text).expect("write");
    }
    let image = engine.image(test);
    engine
        .build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()).tag(&image))
        .expect_ok();
    image
}

/// A copy of `tests/e2e/ml` whose recipe ends with `extra`.
fn ml_context_with(extra: &str) -> TempDir {
    let ctx = TempDir::with_fixture("ml");
    let recipe = ctx.path().join("kiln.kdl");
    let text = std::fs::read_to_string(&recipe).expect("recipe");
    std::fs::write(&recipe, format!("{text}\n{extra}\n")).expect("write");
    ctx
}

#[test]
fn adding_one_pinned_dependency_runs_only_its_install() {
    let Some(engine) = common::engine(EngineKind::New, "add_one_pin") else {
        return;
    };
    let base = fresh_base(engine, "python:3.11-slim");
    let ctx = ml_context_with(&format!("base \"{}\" variant=\"cpu\"", base.tag));
    let recipe = ctx.path().join("kiln.kdl");
    let image = engine.image("add-pin");
    let build = Build::new(&recipe, ctx.path()).target("cpu").tag(&image);
    let first = engine.build(&build);
    first.expect_ok();
    assert!(
        !first.named("] layer: ").is_empty(),
        "kiln did not build per-package layers (MergeOp + DiffOp) on this engine; \
         docker {} with the {} store{}:\n{}",
        engine.version,
        engine.storage,
        if engine.containerd_store {
            ""
        } else {
            " disables MergeOp/DiffOp (moby: \"only enabled with containerd image store \
             backend\"): start dockerd with features.containerd-snapshotter=true"
        },
        first.summary()
    );
    let installs = first.named("] pip install ");
    assert_eq!(
        installs.len(),
        2,
        "one install op per pin:\n{}",
        first.summary()
    );
    assert!(installs.iter().all(|v| v.executed()), "{}", first.summary());

    let text = std::fs::read_to_string(&recipe).expect("recipe");
    std::fs::write(&recipe, format!("{text}pip \"idna==3.7\"\n")).expect("write");
    let second = engine.build(&build);
    second.expect_ok();
    let ran = second.executed_names();
    let installs: Vec<&&str> = ran.iter().filter(|n| n.contains("pip install")).collect();
    assert_eq!(
        installs,
        [&"[cpu] pip install idna==3.7"],
        "adding one pin must run exactly its install:\n{}",
        second.summary()
    );
    for step in ["apt-get", "python -m venv", "user app", "copy app"] {
        assert!(
            !ran.iter().any(|n| n.contains(step)),
            "`{step}` ran again after adding a pin:\n{}",
            second.summary()
        );
    }
    // The step that checks the pins are complete installed nothing.
    for v in second.named("pip: dependencies the pins did not name") {
        assert!(
            !v.log.contains("Successfully installed"),
            "the pins are complete, yet pip installed more:\n{}",
            v.log
        );
    }
    assert_pip_freeze(&image, &["idna==3.7", "numpy==1.26.4", "six==1.16.0"]);
}

/// Pins that leave out a dependency (python-dateutil needs six): the last
/// step sees the pinned packages (here, with the builder as the runtime
/// base, installed in the join it runs on), installs only what is missing,
/// and the pins are not installed twice.
#[test]
fn pins_that_leave_out_a_dependency_get_it_and_only_it() {
    let Some(engine) = common::engine(EngineKind::New, "incomplete_pins") else {
        return;
    };
    let ctx = TempDir::new("incomplete-pins");
    std::fs::write(
        ctx.path().join("kiln.kdl"),
        "// syntax=kiln/frontend:dev\nkiln 1\npython \"3.11\"\npip \"python-dateutil==2.9.0.post0\"\n\
         ca-bundle secret=\"ca-bundle\"\n\
         verify \"import dateutil.tz, six; print(dateutil.__version__)\"\n",
    )
    .expect("write");
    let image = engine.image("incomplete-pins");
    // Without --no-cache a second run on the same engine finds the last
    // step cached, and a cached step has no log to read.
    let build = engine.build(
        &Build::new(ctx.path().join("kiln.kdl"), ctx.path())
            .tag(&image)
            .no_cache(),
    );
    build.expect_ok();
    let last = build.named("pip: dependencies the pins did not name");
    assert_eq!(last.len(), 1, "{}", build.summary());
    let log = &last[0].log;
    // The builder is the runtime base: the step runs on the join of the
    // runtime and the pins, so pip finds the pin in the venv.
    assert!(
        log.contains(
            "Requirement already satisfied: python-dateutil==2.9.0.post0 in /opt/venv/lib/"
        ),
        "the last step must see the pin installed:\n{log}"
    );
    assert!(log.contains("Successfully installed six-"), "{log}");
    assert!(
        !log.contains("Successfully installed python-dateutil"),
        "{log}"
    );
    let freeze = image.exec(&["pip", "freeze", "--all"]);
    assert!(freeze.contains("python-dateutil==2.9.0.post0"), "{freeze}");
    assert!(freeze.contains("six=="), "{freeze}");
    // The last step's layer holds six, not a second copy of dateutil
    // (about 800 kB with its bytecode).
    let history = image.history();
    let last_layer = history
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|h| {
            h["CreatedBy"]
                .as_str()
                .is_some_and(|c| c == "kiln: pip: dependencies the pins did not name")
        })
        .unwrap_or_else(|| panic!("no layer of the last pip step in the history:\n{history}"));
    let size = last_layer["Size"].as_str().unwrap_or_default().to_string();
    let kb = parse_size_kb(&size).unwrap_or_else(|| panic!("layer size {size:?}"));
    assert!(kb < 300.0, "the last step's layer is {size}:\n{history}");
    image.exec(&["pip", "check"]);
}

/// `docker history` sizes ("45.1kB", "2.73MB", "0B") in kB.
fn parse_size_kb(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let scale = match unit {
        "B" => 0.001,
        "kB" => 1.0,
        "MB" => 1000.0,
        "GB" => 1_000_000.0,
        _ => return None,
    };
    Some(n * scale)
}

// ----------------------------------------------------------------- errors

/// Build the fixture recipe `name`, which must fail; its output must say
/// each of `wanted` (locations, messages, recipe lines).
fn assert_build_fails_saying(name: &str, wanted: &[&str]) {
    let Some(engine) = common::engine(EngineKind::New, name) else {
        return;
    };
    let build = engine.build(&Build::new(fixture(name).join("kiln.kdl"), fixture(name)));
    assert!(
        !build.ok,
        "{name} built, but it must fail:\n{}",
        build.report()
    );
    let text = build.all_text();
    for w in wanted {
        assert!(
            text.contains(w),
            "the error does not say {w:?}:\n{}",
            build.report()
        );
    }
}

/// Build the fixture recipe `name`, which must fail without saying `not`.
fn assert_build_fails_without_saying(name: &str, not: &str) {
    let Some(engine) = common::engine(EngineKind::New, name) else {
        return;
    };
    let build = engine.build(&Build::new(fixture(name).join("kiln.kdl"), fixture(name)));
    assert!(!build.ok, "{name} built, but it must fail");
    assert!(
        !build.all_text().contains(not),
        "the output says {not:?}:\n{}",
        build.report()
    );
}

#[test]
fn a_bad_recipe_fails_with_its_location() {
    assert_build_fails_saying(
        "bad",
        &[
            "kiln.kdl:9:1",
            "unknown node `frameworkk`",
            "did you mean `framework`?",
        ],
    );
}

/// A base whose tag and config do not say which python it has (an in-house
/// image): the build stops at the recipe's `python` line when the image's
/// python is another one, instead of building a venv of the wrong python.
#[test]
fn a_base_with_another_python_fails_at_the_python_line() {
    let Some(engine) = common::engine(EngineKind::New, "other_python") else {
        return;
    };
    // The fixture's python is 3.11; this tag and config name none.
    let base = built_base(
        engine,
        &format!("kiln-e2e-base:inhouse-{}", nonce()),
        "FROM python:3.11-slim\nENV PYTHON_VERSION=\n",
        &[],
    );
    let ctx = TempDir::new("other-python");
    std::fs::write(
        ctx.path().join("kiln.kdl"),
        format!(
            "// syntax=kiln/frontend:dev\nkiln 1\nname \"other-python\"\npython \"3.10\"\n\
             base \"{}\"\npip \"six==1.16.0\"\nca-bundle secret=\"ca-bundle\"\n",
            base.tag
        ),
    )
    .expect("write");
    let build = engine.build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()));
    assert!(!build.ok, "it built:\n{}", build.report());
    let text = build.all_text();
    for wanted in [
        format!("python3 in {} is 3.11.", base.tag),
        "but the recipe asks for python 3.10".to_string(),
        ">>> python \"3.10\"".to_string(),
    ] {
        assert!(
            text.contains(&wanted),
            "the error does not say {wanted:?}:\n{}",
            build.report()
        );
    }
    assert!(
        build.named("pip install six").iter().all(|v| !v.executed()),
        "pip ran after the venv step failed:\n{}",
        build.summary()
    );
}

/// A builder other than the runtime base makes the venv, whose python is
/// a link to the builder's: on an in-house runtime base without that
/// python the build fails in the checks, saying so, instead of giving an
/// image whose every `python` fails; with no builder, the venv step says
/// the base has no python3.
#[test]
fn a_runtime_base_without_the_builders_python_fails_the_build() {
    let Some(engine) = common::engine(EngineKind::New, "runtime_without_python") else {
        return;
    };
    let base = built_base(
        engine,
        &format!("kiln-e2e-base:nopython-{}", nonce()),
        "FROM python:3.11-slim\nRUN rm -f /usr/bin/python3* /usr/local/bin/python3*\n",
        &[],
    );
    for (builder, wanted) in [
        (
            "builder \"python:3.11-slim\"\n",
            "made in the builder python:3.11-slim, does not run in the runtime base",
        ),
        ("", "has no python3 on its PATH"),
    ] {
        let ctx = TempDir::new("no-python");
        std::fs::write(
            ctx.path().join("kiln.kdl"),
            format!(
                "// syntax=kiln/frontend:dev\nkiln 1\nname \"no-python\"\npython \"3.11\"\n\
                 base \"{}\"\n{builder}pip \"six==1.16.0\"\nca-bundle secret=\"ca-bundle\"\n",
                base.tag
            ),
        )
        .expect("write");
        let build = engine.build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()));
        assert!(!build.ok, "it built:\n{}", build.report());
        assert!(
            build.all_text().contains(wanted),
            "the error does not say {wanted:?}:\n{}",
            build.report()
        );
    }
}

/// A `user` the base already has under another uid (Debian's www-data is
/// 33): the build stops at once, giving the uid and gid that would use it,
/// instead of asking for the gid first and the uid after.
#[test]
fn a_user_the_base_has_with_another_uid_names_both_ids() {
    let Some(engine) = common::engine(EngineKind::New, "user_taken") else {
        return;
    };
    let ctx = TempDir::new("user-taken");
    std::fs::write(
        ctx.path().join("kiln.kdl"),
        "// syntax=kiln/frontend:dev\nkiln 1\nname \"user-taken\"\npython \"3.11\"\nuser \"www-data\" uid=1000\n",
    )
    .expect("write");
    let build = engine.build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()));
    assert!(!build.ok, "it built:\n{}", build.report());
    let wanted = "the base already has a user www-data with uid 33 and gid 33, not uid 1000: write user \"www-data\" uid=33 gid=33";
    assert!(
        build.all_text().contains(wanted),
        "the error does not say {wanted:?}:\n{}",
        build.report()
    );
}

/// `run … secret="ID"`: the step reads the secret at /run/secrets/ID (a
/// model hub's token), and its bytes reach no layer, the config or the
/// history; a build not given the secret fails at the `run` line.
#[test]
fn a_run_step_reads_its_secret_and_the_image_keeps_none_of_it() {
    let Some(engine) = common::engine(EngineKind::New, "run_secret") else {
        return;
    };
    let ctx = TempDir::new("run-secret");
    let token = format!("hf_kiln_e2e_token_{}{}", nonce(), nonce());
    let token_file = ctx.path().join("token.txt");
    std::fs::write(&token_file, &token).expect("write");
    // The context holds only the recipe: the token file is outside it.
    let recipe_dir = ctx.path().join("ctx");
    std::fs::create_dir_all(&recipe_dir).expect("mkdir");
    // BuildKit leaves a secret's bytes out of the step's cache key (as for
    // a Dockerfile's RUN --mount=type=secret): the step is new each run.
    std::fs::write(
        recipe_dir.join("kiln.kdl"),
        format!(
            "// syntax=kiln/frontend:dev\nkiln 1\nname \"run-secret\"\npython \"3.11\"\n\
             user \"app\" uid=1000\nworkdir \"/app\"\n\
             run \"mkdir -p /opt/model && HF_TOKEN=$(cat /run/secrets/hf_token) && \
             printf '%s' \\\"$HF_TOKEN\\\" | sha256sum | cut -c1-64 > /opt/model/token.sha256 && \
             echo 'kiln e2e greeting {}' > /opt/model/README\" secret=\"hf_token\"\n",
            nonce()
        ),
    )
    .expect("write");
    let image = engine.image("run-secret");
    let secret_flag = format!("id=hf_token,src={}", token_file.display());
    let build = engine.build(
        &Build::new(recipe_dir.join("kiln.kdl"), &recipe_dir)
            .tag(&image)
            .flag("--secret")
            .flag(&secret_flag),
    );
    build.expect_ok();
    // The step saw the token: the image has its digest, not its bytes.
    let sha = image.sh("cat /opt/model/token.sha256");
    let want = {
        let o = std::process::Command::new("sha256sum")
            .arg(&token_file)
            .output()
            .expect("sha256sum");
        String::from_utf8_lossy(&o.stdout)[..64].to_string()
    };
    assert_eq!(sha.trim(), want, "the step did not read the secret");
    let saved = image.save_and_search(&[token.as_bytes(), b"kiln e2e greeting"]);
    assert!(
        !saved.found[1].is_empty(),
        "the scan did not find the step's README in any of {} files",
        saved.files
    );
    assert!(
        saved.found[0].is_empty(),
        "the token is in the saved image: {:?}",
        saved.found[0]
    );
    assert!(!image.inspect().to_string().contains(&token));
    assert!(!image.history().contains(&token));
    assert!(!build.all_text().contains(&token));
    assert_eq!(
        image.sh("ls -A /run/secrets 2>/dev/null | wc -l").trim(),
        "0",
        "a secret file stayed in the image"
    );

    // Without the secret: an error at the `run` line that names it.
    let failed = engine.build(&Build::new(recipe_dir.join("kiln.kdl"), &recipe_dir).no_cache());
    assert!(!failed.ok, "built without its secret:\n{}", failed.report());
    let text = failed.all_text();
    assert!(text.contains("hf_token"), "{}", failed.report());
    assert!(
        text.contains(">>> run \"mkdir -p /opt/model"),
        "{}",
        failed.report()
    );
}

/// App files in the recipe's own top-level workdir do not hang on the
/// runtime's apt packages or user: adding an apt package copies nothing
/// again, and the app layer keeps its digest (a push would skip it).
#[test]
fn an_apt_change_leaves_the_app_layer_as_it_was() {
    let Some(engine) = common::engine(EngineKind::New, "apt_change_app_layer") else {
        return;
    };
    let ctx = TempDir::new("apt-change");
    std::fs::create_dir_all(ctx.path().join("models")).expect("mkdir");
    // A fresh file, so that the first build copies it.
    std::fs::write(
        ctx.path().join("models/weights.bin"),
        format!("kiln e2e weights {}\n", nonce()),
    )
    .expect("write");
    std::fs::write(ctx.path().join("serve.py"), "print('serving')\n").expect("write");
    let recipe = |apt: &str| {
        format!(
            "// syntax=kiln/frontend:dev\nkiln 1\nname \"apt-change\"\npython \"3.11\"\n{apt}\
             ca-bundle secret=\"ca-bundle\"\nuser \"app\" uid=1000\nworkdir \"/app\"\n\
             copy \"models\" \"models\"\ncopy \"serve.py\" \"serve.py\"\ncmd \"python\" \"serve.py\"\n"
        )
    };
    let image = engine.image("apt-change");
    let layers = |image: &Image| -> Vec<String> {
        image.inspect()["RootFS"]["Layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l.as_str().unwrap_or_default().to_string())
            .collect()
    };
    std::fs::write(ctx.path().join("kiln.kdl"), recipe("")).expect("write");
    let first = engine.build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()).tag(&image));
    first.expect_ok();
    assert!(
        !first.named("copy models").is_empty()
            && first.named("copy models").iter().all(|v| v.executed()),
        "the first build copied nothing:\n{}",
        first.summary()
    );
    let before = layers(&image);
    assert_eq!(
        image
            .sh("stat -c '%n %U:%G %a' / /app /app/models /app/models/weights.bin /app/serve.py")
            .lines()
            .collect::<Vec<_>>(),
        [
            "/ root:root 755",
            "/app app:app 755",
            "/app/models app:app 755",
            "/app/models/weights.bin app:app 644",
            "/app/serve.py app:app 644",
        ]
    );
    assert_eq!(image.run(&[]).trim(), "serving");

    std::fs::write(ctx.path().join("kiln.kdl"), recipe("apt \"tini\"\n")).expect("write");
    let build = engine.build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()).tag(&image));
    build.expect_ok();
    // (The apt step may come from the cache of an earlier run.)
    assert!(
        !build.named("apt-get install tini").is_empty(),
        "no apt step:\n{}",
        build.summary()
    );
    assert!(
        !build.named("copy models").is_empty()
            && build.named("copy models").iter().all(|v| !v.executed()),
        "the app files were copied again:\n{}",
        build.summary()
    );
    let after = layers(&image);
    assert_eq!(
        before.last(),
        after.last(),
        "the app layer changed: {before:?} -> {after:?}"
    );
    assert_eq!(after.len(), before.len() + 1, "{before:?} -> {after:?}");
    image.exec(&["tini", "--version"]);
    assert_eq!(image.run(&[]).trim(), "serving");
}

// ----------------------------------------------------------------- parallel

#[test]
fn two_variants_built_in_parallel_share_the_caches_without_corruption() {
    let Some(engine) = common::engine(EngineKind::New, "parallel_variants") else {
        return;
    };
    // Fresh bases, so that every step of both variants runs, at once. (On
    // a `base` of its own the gpu variant takes python from that base
    // instead of installing the distro's with apt: the cuda base's own
    // plan is the gpu test's.)
    let cpu_base = fresh_base(engine, "python:3.11-slim");
    let gpu_base = fresh_base(engine, "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04");
    let ctx = ml_context_with(&format!(
        "base \"{}\" variant=\"cpu\"\nbase \"{}\" variant=\"gpu\"",
        cpu_base.tag, gpu_base.tag
    ));
    let recipe = ctx.path().join("kiln.kdl");
    // The gpu base's python is the fixture's (3.11), and kiln checks the
    // recipe's against it: the gpu variant says so here.
    let text = std::fs::read_to_string(&recipe).expect("recipe");
    assert!(text.contains("    python \"3.10\"\n"), "{text}");
    std::fs::write(
        &recipe,
        text.replace("    python \"3.10\"\n", "    python \"3.11\"\n"),
    )
    .expect("write");
    let cpu = engine.image("par-cpu");
    let gpu = engine.image("par-gpu");
    let builds = [
        Build::new(&recipe, ctx.path()).target("cpu").tag(&cpu),
        Build::new(&recipe, ctx.path()).target("gpu").tag(&gpu),
    ];
    // Both at once, on purpose: their apt and pip steps share the cache
    // mounts (kiln-apt locked, kiln-pip shared).
    let results: Vec<BuildResult> = {
        let _serial = common::build_lock();
        std::thread::scope(|s| {
            let handles: Vec<_> = builds
                .iter()
                .map(|b| s.spawn(|| engine.build_unlocked(b)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("build thread"))
                .collect()
        })
    };
    for r in &results {
        r.expect_ok();
        let installs = r.named("] pip install ");
        assert!(
            !installs.is_empty() && installs.iter().all(|v| v.executed()),
            "on a fresh base every install runs:\n{}",
            r.summary()
        );
    }
    for (image, variant) in [(&cpu, "cpu"), (&gpu, "gpu")] {
        let out = image.run(&[]);
        assert!(
            out.contains(&format!(
                "kiln e2e greeting; variant {variant}; numpy 1.26.4; six 1.16.0;"
            )),
            "{out}"
        );
        assert_pip_freeze(image, PINS);
        // Every installed file matches the hash pip recorded for it.
        let verified = image.sh(VERIFY_RECORDS);
        assert!(verified.contains("files verified"), "{verified}");
        image.sh("test -x /usr/bin/tini");
        assert_no_caches(image);
    }
}

/// Check every file of every installed distribution against its RECORD.
/// Bytecode aside: pip compiles it at install time, over any a wheel ships
/// (numpy 1.26.4 ships one .pyc).
const VERIFY_RECORDS: &str = r#"python - <<'EOF'
import base64, hashlib, importlib.metadata as md, sys
n = bad = 0
for dist in md.distributions():
    for f in dist.files or []:
        if not f.hash or f.suffix == ".pyc":
            continue
        data = f.locate().read_bytes()
        digest = base64.urlsafe_b64encode(hashlib.new(f.hash.mode, data).digest()).rstrip(b"=").decode()
        n += 1
        if digest != f.hash.value:
            bad += 1
            print("MISMATCH", dist.metadata["Name"], f)
if bad or not n:
    sys.exit(f"{bad} of {n} files differ from their RECORD")
print(n, "files verified")
EOF"#;

// ----------------------------------------------------------------- old engine

#[test]
fn the_old_engine_builds_the_fallback_with_the_same_environment() {
    let Some(old) = common::engine(EngineKind::Old, "old_engine_fallback") else {
        return;
    };
    let Some(new) = common::engine(EngineKind::New, "old_engine_fallback") else {
        return;
    };
    // BuildKit 0.8 knows only the `# syntax=` header: the same recipe with
    // that first line.
    let recipe = fixture("ml").join("kiln-old-engine.kdl");
    let hash_form = std::fs::read_to_string(&recipe).expect("recipe");
    let slash_form = std::fs::read_to_string(ml_recipe()).expect("recipe");
    assert_eq!(
        hash_form.split_once('\n').map(|x| x.1),
        slash_form.split_once('\n').map(|x| x.1),
        "kiln-old-engine.kdl must be kiln.kdl with a `# syntax=` first line"
    );
    assert!(hash_form.starts_with("# syntax=kiln/frontend:dev\n"));

    let fallback = old.image("old-cpu");
    let built = old.build(
        &Build::new(&recipe, fixture("ml"))
            .target("cpu")
            .tag(&fallback),
    );
    built.expect_ok();
    assert!(
        built.named("] layer: ").is_empty() && built.named("] join ").is_empty(),
        "BuildKit 0.8 has no MergeOp/DiffOp; kiln must copy instead:\n{}",
        built.summary()
    );
    let out = fallback.run(&[]);
    assert!(
        out.contains(
            "kiln e2e greeting; variant cpu; numpy 1.26.4; six 1.16.0; python 3.11; prefix /opt/venv"
        ),
        "{out}"
    );
    assert_common_config(&fallback, "cpu");
    // The fallback's layers have names too: the venv is one copied layer.
    let layers = history_layers(&fallback);
    assert_eq!(
        kiln_names(&layers),
        [
            "kiln: copy app",
            "kiln: copy /opt/venv from the builder",
            "kiln: user app (1000:1000)",
            "kiln: apt-get install tini",
        ],
        "{layers:?}"
    );
    assert_eq!(
        fallback.sh("id").trim(),
        "uid=1000(app) gid=1000(app) groups=1000(app)"
    );
    assert_no_caches(&fallback);

    let merged = new.image("old-vs-new");
    let built = new.build(
        &Build::new(ml_recipe(), fixture("ml"))
            .target("cpu")
            .tag(&merged),
    );
    built.expect_ok();
    assert!(
        !built.named("] layer: ").is_empty(),
        "the docker {} engine ({} store) did not use MergeOp/DiffOp, so there is nothing to \
         compare the fallback with{}:\n{}",
        new.version,
        new.storage,
        if new.containerd_store {
            ""
        } else {
            "; BuildKit turns them off on docker's graph drivers: start dockerd with \
             features.containerd-snapshotter=true"
        },
        built.summary()
    );

    // Per-package layers joined by MergeOp and the sequential copies give
    // the same environment: the same distributions, the same files.
    let freeze = |i: &Image| i.exec(&["pip", "freeze", "--all"]);
    assert_eq!(freeze(&merged), freeze(&fallback));
    assert_eq!(venv_listing(&merged), venv_listing(&fallback));
    assert_eq!(
        merged.sh("cd /app && find . -printf '%p %U %m\\n' | sort"),
        fallback.sh("cd /app && find . -printf '%p %U %m\\n' | sort")
    );
}

/// /opt/venv: every path with its type, owner, mode and link target, and a
/// checksum of each regular file (bytecode aside: it embeds timestamps).
fn venv_listing(image: &Image) -> String {
    let listing = image.sh(
        "cd /opt/venv && find . -printf '%y %U:%G %m %p %l\\n' | sort && \
         find . -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum",
    );
    assert!(
        listing.lines().count() > 500,
        "a venv with numpy: {listing}"
    );
    listing
}

// ------------------------------------------------------------ engine errors

#[test]
fn a_failing_pip_step_shows_its_recipe_line() {
    // The op carries a source map into the recipe, so the engine's error
    // shows the recipe line (buildx prints `kiln.kdl:9` and the line).
    // A package that does not exist fails at once: a second try would fail
    // the same way, so none is made.
    assert_build_fails_saying(
        "pipfail",
        &[
            "kiln.kdl:9",
            "pip \"kiln-e2e-no-such-package-7f3a==0.0.1\"",
            "No matching distribution found",
            "kiln: the install failed, and a second try would fail the same way",
        ],
    );
    assert_build_fails_without_saying("pipfail", "trying once more");
}

// ---------------------------------------------------------------- bake

#[test]
fn bake_builds_the_cpu_and_gpu_variants_of_one_recipe_in_parallel() {
    let Some(engine) = common::engine(EngineKind::New, "bake") else {
        return;
    };
    let n = nonce();
    let cpu = engine.image(&format!("bake-cpu-{n}"));
    let gpu = engine.image(&format!("bake-gpu-{n}"));
    // The example bake file, pointed at the suite's small recipe (the
    // example's own recipe downloads a few hundred MB of wheels).
    let bake_file = common::repo().join("examples/docker-bake.hcl");
    let context = fixture("ml");
    let _serial = common::build_lock();
    let out = engine
        .docker()
        .current_dir(common::repo())
        .args(["buildx", "bake", "--builder", "default", "--progress=plain"])
        .arg("-f")
        .arg(&bake_file)
        .args(["--set", &format!("*.context={}", context.display())])
        .args(["--set", "*.dockerfile=kiln.kdl"])
        .args(["--set", &format!("cpu.tags={}", cpu.tag)])
        .args(["--set", &format!("gpu.tags={}", gpu.tag)])
        .args([
            "--set",
            &format!("*.secrets=id=ca-bundle,src={}", secret().path.display()),
        ])
        .output()
        .expect("docker buildx bake runs");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "bake failed:\n{log}");
    // One bake, both targets: the ops of both variants are in its log.
    assert!(log.contains("[cpu] "), "{log}");
    assert!(log.contains("[gpu] "), "{log}");
    for (image, variant) in [(&cpu, "cpu"), (&gpu, "gpu")] {
        let out = image.run(&[]);
        assert!(
            out.contains(&format!("variant {variant};")),
            "{variant}: {out}"
        );
        let freeze = image.exec(&["pip", "freeze"]);
        for pin in PINS {
            assert!(
                freeze.contains(pin),
                "{variant}: {pin} missing from {freeze}"
            );
        }
    }
    let gpu_env = gpu.inspect()["Config"]["Env"].to_string();
    assert!(gpu_env.contains("NVIDIA_VISIBLE_DEVICES=all"), "{gpu_env}");
}

/// Requirements files as projects lay them out: a hashed lock (one layer
/// per pin, pip checking each hash) and a file that includes others with
/// `-r` and `-c`, which travel into the install step with it. A wrong hash
/// fails the build, and so does a hashed lock that misses a dependency.
#[test]
fn requirements_files_bring_their_includes_and_a_hashed_lock_gets_a_layer_per_pin() {
    let Some(engine) = common::engine(EngineKind::New, "requirements_files") else {
        return;
    };
    let six = "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254";
    let idna = "82fee1fc78add43492d3a1898bfa6d8a904cc97d8427f683ed8e798d07761aa0";
    let ctx = TempDir::new("requirements-files");
    let write = |path: &str, text: &str| {
        let p = ctx.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    write(
        "kiln.kdl",
        "// syntax=kiln/frontend:dev\nkiln 1\npython \"3.11\"\nca-bundle secret=\"ca-bundle\"\n\
         pip requirements=\"requirements.lock\"\npip requirements=\"reqs/app.txt\"\n\
         verify \"import six, idna, certifi\"\n",
    );
    write(
        "requirements.lock",
        &format!(
            "# a lock, as pip-compile --generate-hashes writes it\nsix==1.16.0 \\\n    --hash=sha256:{six}\n    # via app\nidna==3.7 \\\n    --hash=sha256:{idna}\n"
        ),
    );
    write("reqs/app.txt", "-r base.txt\n-c ../constraints.txt\n");
    write("reqs/base.txt", "certifi\n");
    write("constraints.txt", "certifi==2024.7.4\n");
    let image = engine.image("requirements-files");
    let build = engine.build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()).tag(&image));
    build.expect_ok();
    for pin in ["six==1.16.0", "idna==3.7"] {
        assert_eq!(
            build.named(&format!("] pip install {pin}")).len(),
            1,
            "the lock's {pin} gets its own install op:\n{}",
            build.summary()
        );
        assert_eq!(
            build.named(&format!("] layer: {pin}")).len(),
            1,
            "{}",
            build.summary()
        );
    }
    assert_pip_freeze(&image, &["certifi==2024.7.4", "idna==3.7", "six==1.16.0"]);

    // A hash the downloaded wheel does not have: pip refuses it.
    write(
        "requirements.lock",
        &format!(
            "six==1.16.0 --hash=sha256:{}\nidna==3.7 --hash=sha256:{idna}\n",
            "0".repeat(64)
        ),
    );
    let bad = engine.build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()));
    assert!(!bad.ok, "a wrong hash built:\n{}", bad.report());
    assert!(
        bad.all_text().contains("DO NOT MATCH THE HASHES"),
        "{}",
        bad.report()
    );

    // A hashed lock that misses a pin's dependencies: pip's --require-hashes
    // would refuse it, and so does kiln, rather than install them unhashed.
    write(
        "requirements.lock",
        "requests==2.32.3 \\\n    --hash=sha256:70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02654d061d6dcc6\n",
    );
    let incomplete = engine.build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()));
    assert!(
        !incomplete.ok,
        "an incomplete hashed lock built:\n{}",
        incomplete.report()
    );
    let text = incomplete.all_text();
    assert!(
        text.contains("requests needs")
            && text.contains("requirements.lock has hashes, so it must pin every package"),
        "{}",
        incomplete.report()
    );
    assert!(
        !text.contains("Successfully installed certifi"),
        "{}",
        incomplete.report()
    );
}

/// A context with a local project (`./libs/greet`, built by setuptools)
/// that its requirements file installs, next to a package from PyPI.
fn local_project_context(name: &str, syntax: &str) -> TempDir {
    let ctx = TempDir::new(name);
    let write = |path: &str, text: &str| {
        let p = ctx.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    write(
        "kiln.kdl",
        &format!(
            "{syntax}\nkiln 1\npython \"3.11\"\nca-bundle secret=\"ca-bundle\"\n\
             pip requirements=\"requirements.txt\"\nverify \"import greet, six; assert greet.hello() == 'hi'\"\n"
        ),
    );
    write("requirements.txt", "six==1.16.0\n./libs/greet\n");
    write(
        "libs/greet/pyproject.toml",
        "[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n\n\
         [project]\nname = \"greet\"\nversion = \"0.1.0\"\n",
    );
    write(
        "libs/greet/greet/__init__.py",
        "def hello():\n    return \"hi\"\n",
    );
    ctx
}

/// A requirements file that installs a project from the context: the
/// project's folder travels into the install step, which runs in the
/// context's root, so pip finds `./libs/greet` as it would in a shell
/// there, and builds it (its build writes into the folder).
#[test]
fn a_local_project_in_a_requirements_file_is_installed_from_the_context() {
    let Some(engine) = common::engine(EngineKind::New, "local_project") else {
        return;
    };
    let ctx = local_project_context("local-project", "// syntax=kiln/frontend:dev");
    let image = engine.image("local-project");
    engine
        .build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()).tag(&image))
        .expect_ok();
    assert_eq!(
        image
            .run(&["python", "-c", "import greet; print(greet.hello())"])
            .trim(),
        "hi"
    );
    let show = image.exec(&["pip", "show", "greet"]);
    assert!(show.contains("Version: 0.1.0"), "{show}");
    let files = image.exec(&[
        "sh",
        "-c",
        "ls /opt/venv/lib/python3.11/site-packages/greet; test ! -e /kiln/context && echo no-context",
    ]);
    assert!(
        files.contains("__init__.py") && files.contains("no-context"),
        "the package is in the venv and the context is not in the image: {files}"
    );
}

/// The same on BuildKit 0.8 (no MergeOp): the sequential pip steps.
#[test]
fn the_old_engine_installs_a_local_project_from_the_context() {
    let Some(old) = common::engine(EngineKind::Old, "old_local_project") else {
        return;
    };
    let ctx = local_project_context("old-local-project", "# syntax=kiln/frontend:dev");
    let image = old.image("old-local-project");
    old.build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()).tag(&image))
        .expect_ok();
    assert_eq!(
        image
            .run(&["python", "-c", "import greet; print(greet.hello())"])
            .trim(),
        "hi"
    );
}

#[test]
fn a_user_on_a_system_accounts_uid_fails_rather_than_renaming_it() {
    assert_build_fails_saying(
        "systemuid",
        &[
            "uid 65534 is the base's system account nobody",
            "give the user another uid",
        ],
    );
}

#[test]
fn a_copy_pattern_that_matches_nothing_fails_at_its_line() {
    assert_build_fails_saying("nomatch", &["kiln.kdl:9", "copy \"*.py\""]);
}

#[test]
fn missing_copy_sources_fail_each_at_its_own_line() {
    let name = "missingcopy";
    let Some(engine) = common::engine(EngineKind::New, name) else {
        return;
    };
    let build = engine.build(&Build::new(fixture(name).join("kiln.kdl"), fixture(name)));
    assert!(!build.ok, "built, but it must fail:\n{}", build.report());
    let text = build.all_text();
    for w in [
        "kiln.kdl:11:1: error[kiln::missing_file]: copy source `model.bin` is not in the build context",
        "kiln.kdl:12:1: error[kiln::missing_file]: copy source `conf` is not in the build context",
        "kiln.kdl:13:1: error[kiln::missing_file]: copy pattern `*.py` matches nothing in the build context",
    ] {
        assert!(
            text.contains(w),
            "the error does not say {w:?}:\n{}",
            build.report()
        );
    }
    assert!(
        !text.contains("copy source `kiln.kdl`"),
        "the copy whose source is there is blamed too:\n{}",
        build.report()
    );
}

/// A conda recipe on kiln's default miniconda builder (the fixture
/// look-alike, whose `conda` is a stand-in: no conda channel is reachable
/// here): the step finds `conda` on the builder's PATH, the environment is
/// copied onto the slim runtime and runs there as the user, and nothing of
/// conda reaches the image.
#[test]
fn a_conda_environment_is_built_in_the_miniconda_builder_and_runs_on_the_runtime() {
    let name = "conda";
    let Some(engine) = common::engine(EngineKind::New, name) else {
        return;
    };
    let image = engine.image(name);
    let build =
        engine.build(&Build::new(fixture(name).join("kiln.kdl"), fixture(name)).tag(&image));
    build.expect_ok();
    for step in [
        "[default] builder miniconda3:24.7.1-0@sha256:",
        "[default] conda env create -f environment.yml",
        "[default] verify: import six",
    ] {
        assert!(
            !build.named(step).is_empty(),
            "no {step:?}:\n{}",
            build.summary()
        );
    }
    assert_eq!(image.run(&[]).trim(), "/opt/venv 1.16.0");
    assert_eq!(image.sh("id -un").trim(), "app");
    assert_eq!(
        image
            .sh("ls /opt/conda 2>/dev/null | wc -l; command -v conda || echo none")
            .trim(),
        "0\nnone"
    );
}

/// BuildKit 0.8 (no MergeOp, `# syntax=` only): the frontend reads the
/// requirements files through the context there too, and the included file
/// reaches the install step.
#[test]
fn the_old_engine_reads_requirements_files_and_their_includes() {
    let Some(old) = common::engine(EngineKind::Old, "old_engine_requirements") else {
        return;
    };
    let ctx = TempDir::new("old-requirements");
    std::fs::create_dir_all(ctx.path().join("reqs")).expect("mkdir");
    std::fs::write(
        ctx.path().join("kiln.kdl"),
        "# syntax=kiln/frontend:dev\nkiln 1\npython \"3.11\"\nca-bundle secret=\"ca-bundle\"\n\
         pip requirements=\"reqs/app.txt\"\nverify \"import six; assert six.__version__ == '1.16.0'\"\n",
    )
    .expect("write");
    std::fs::write(ctx.path().join("reqs/app.txt"), "-r base.txt\n").expect("write");
    std::fs::write(ctx.path().join("reqs/base.txt"), "six==1.16.0\n").expect("write");
    let image = old.image("old-requirements");
    old.build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()).tag(&image))
        .expect_ok();
    assert!(image.exec(&["pip", "freeze"]).contains("six==1.16.0"));
}

/// BuildKit 0.8 (no MergeOp): a check on the environment and one on the
/// finished image both run, and both must pass.
#[test]
fn the_old_engine_runs_both_kinds_of_checks() {
    let Some(old) = common::engine(EngineKind::Old, "old_engine_checks") else {
        return;
    };
    let ctx = TempDir::new("old-checks");
    std::fs::create_dir_all(ctx.path().join("app")).expect("mkdir");
    std::fs::write(ctx.path().join("app/m.py"), "X = 1\n").expect("write");
    let recipe = |after_copy: &str| {
        format!(
            "# syntax=kiln/frontend:dev\nkiln 1\npython \"3.11\"\nworkdir \"/app\"\ncopy \"app\" \"/app\"\n\
             verify \"import sys; print('env check', sys.prefix)\"\nverify \"{after_copy}\" after=\"copy\"\n"
        )
    };
    std::fs::write(
        ctx.path().join("kiln.kdl"),
        recipe("import m; assert m.X == 1"),
    )
    .expect("write");
    old.build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()))
        .expect_ok();
    std::fs::write(
        ctx.path().join("kiln.kdl"),
        recipe("import m; assert m.X == 2"),
    )
    .expect("write");
    let failed = old.build(&Build::new(ctx.path().join("kiln.kdl"), ctx.path()));
    assert!(
        !failed.ok,
        "the failing check after the copy passed:\n{}",
        failed.report()
    );
}

/// `docker history` names kiln's steps, each on its own layer: the sizes
/// show the names sit on the right layers (numpy's is megabytes, six's and
/// the app's are small).
/// `docker history`: (created by, size in kB), top layer first.
fn history_layers(image: &Image) -> Vec<(String, f64)> {
    image
        .history()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|h| {
            let size = h["Size"].as_str().unwrap_or_default().to_string();
            (
                h["CreatedBy"].as_str().unwrap_or_default().to_string(),
                parse_size_kb(&size).unwrap_or_else(|| panic!("size {size:?}")),
            )
        })
        .collect()
}

fn kiln_names(layers: &[(String, f64)]) -> Vec<&str> {
    layers
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| n.starts_with("kiln: "))
        .collect()
}

#[test]
fn the_image_history_names_each_layer_by_its_step() {
    let Some(engine) = common::engine(EngineKind::New, "history") else {
        return;
    };
    let image = engine.image("history");
    engine
        .build(
            &Build::new(ml_recipe(), fixture("ml"))
                .target("cpu")
                .tag(&image),
        )
        .expect_ok();
    let layers = history_layers(&image);
    let names = kiln_names(&layers);
    assert_eq!(
        names,
        [
            "kiln: copy app",
            "kiln: pip: dependencies the pins did not name",
            "kiln: user app (1000:1000)",
            "kiln: apt-get install tini",
            "kiln: pip install numpy==1.26.4",
            "kiln: pip install six==1.16.0",
            "kiln: python -m venv /opt/venv",
        ],
        "{layers:?}"
    );
    let size = |name: &str| {
        layers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, kb)| *kb)
            .unwrap_or_default()
    };
    assert!(
        size("kiln: pip install numpy==1.26.4") > 10_000.0,
        "{layers:?}"
    );
    assert!(
        size("kiln: pip install six==1.16.0") < 1_000.0,
        "{layers:?}"
    );
    assert!(
        size("kiln: python -m venv /opt/venv") > 5_000.0,
        "{layers:?}"
    );
    assert!(size("kiln: copy app") < 100.0, "{layers:?}");

    // A separate builder (the GPU variant installs python with apt in
    // both): the runtime's steps come first, then the environment's.
    let gpu = engine.image("history-gpu");
    engine
        .build(
            &Build::new(ml_recipe(), fixture("ml"))
                .target("gpu")
                .tag(&gpu),
        )
        .expect_ok();
    let layers = history_layers(&gpu);
    assert_eq!(
        kiln_names(&layers),
        [
            "kiln: copy app",
            "kiln: pip: dependencies the pins did not name",
            "kiln: pip install numpy==1.26.4",
            "kiln: pip install six==1.16.0",
            "kiln: python -m venv /opt/venv",
            "kiln: user app (1000:1000)",
            "kiln: apt-get install python3 tini",
        ],
        "{layers:?}"
    );
    let numpy = layers
        .iter()
        .find(|(n, _)| n == "kiln: pip install numpy==1.26.4")
        .map(|(_, kb)| *kb)
        .unwrap_or_default();
    assert!(numpy > 10_000.0, "{layers:?}");
}

/// `--build-arg HTTPS_PROXY=…` (any case), as with a Dockerfile: the steps
/// that reach the network see the proxy; the image's config does not.
/// `--add-host`, `--shm-size` and `--ulimit` reach the steps as well.
#[test]
fn proxy_build_args_reach_the_steps_and_not_the_image() {
    let Some(engine) = common::engine(EngineKind::New, "proxy_args") else {
        return;
    };
    let ctx = TempDir::new("ctx");
    // The nonce makes the step new: a proxy is not part of its cache key.
    std::fs::write(
        ctx.path().join("kiln.kdl"),
        format!(
            "// syntax=kiln/frontend:dev\nkiln 1\npython \"3.11\"\nrun \"echo {} $HTTPS_PROXY $no_proxy; getent hosts pypi.internal | tr -s ' '; echo shm $(($(stat -f -c '%b*%S' /dev/shm))); echo nofile $(ulimit -n)\"\n",
            nonce()
        ),
    )
    .expect("write");
    let image = engine.image("proxy-args");
    let build = engine.build(
        &Build::new(ctx.path().join("kiln.kdl"), ctx.path())
            .tag(&image)
            .build_arg("HTTPS_PROXY", "http://proxy.invalid:3128")
            .build_arg("no_proxy", "pypi.internal")
            .flag("--add-host=pypi.internal:10.1.2.3")
            .flag("--shm-size=256m")
            .flag("--ulimit=nofile=1024:1024"),
    );
    build.expect_ok();
    let run = build.named("run echo");
    assert_eq!(run.len(), 1, "{}", build.summary());
    assert!(
        run[0]
            .log
            .contains("http://proxy.invalid:3128 pypi.internal"),
        "{}",
        run[0].log
    );
    // The sandbox flags too: the host, /dev/shm's size, the open-files limit.
    for said in ["10.1.2.3 pypi.internal", "shm 268435456", "nofile 1024"] {
        assert!(run[0].log.contains(said), "{said}: {}", run[0].log);
    }
    let env = image.inspect()["Config"]["Env"].to_string();
    assert!(!env.to_ascii_lowercase().contains("proxy"), "{env}");
}
