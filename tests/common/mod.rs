//! The harness of kiln's engine tests (`tests/engine.rs`): it builds recipes
//! through the kiln frontend image with `docker buildx build`, the way a user
//! does, and lets a test look at what came out: the build's progress (which
//! ops ran and which came from the cache), the image's config, its files, its
//! `docker save` tarball.
//!
//! It is not a BuildKit client: everything goes through the `docker` CLI, so
//! the tests exercise the same path as `docker buildx build -f env.kdl .`.
//!
//! The engine tests run only with `KILN_E2E=1` (`make test` sets it). Without
//! an engine that answers, a test skips, loudly, unless `CI` is set: then it
//! fails. The engines are the test bed of `scripts/`: docker 26 (BuildKit
//! 0.13) on the default socket and docker 20.10 (BuildKit 0.8, no MergeOp) on
//! `/var/run/kiln-old-docker.sock`; `KILN_E2E_DOCKER_HOST` and
//! `KILN_E2E_OLD_DOCKER_HOST` point the tests at others;
//! `KILN_E2E_VERBOSE=1` prints every build's ops with their fate and time;
//! `KILN_E2E_BUILD_FRONTEND=0` skips rebuilding the frontend image.

#![allow(dead_code)] // a module of each test file that includes it; each uses a part

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const FRONTEND_IMAGE: &str = "kiln/frontend:dev";
const NEW_ENGINE_HOST: &str = "unix:///var/run/docker.sock";
const OLD_ENGINE_HOST: &str = "unix:///var/run/kiln-old-docker.sock";
/// This machine's CA bundle: pip inside build steps needs it (a TLS
/// intercepting proxy), handed to builds as the `ca-bundle` secret.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The fixture base images the recipes under `tests/e2e/` name.
const FIXTURE_IMAGES: &[&str] = &[
    "python:3.11-slim",
    "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04",
];
/// A build that takes longer than this is stuck (a cold build of the
/// fixtures takes about a minute).
const BUILD_TIMEOUT_SECS: u64 = 540;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A directory of `tests/e2e/`.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/e2e").join(name)
}

/// `CI` set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE" | "False"))
}

/// 64 random bits as hex, from std's randomly seeded hasher.
pub fn nonce() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

// ------------------------------------------------------------------ engines

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EngineKind {
    /// docker 26.1.5, BuildKit 0.13, buildx 0.13.1 (`scripts/engine-up.sh`).
    New,
    /// docker 20.10, BuildKit 0.8: no MergeOp/DiffOp, only the `# syntax=`
    /// header (`scripts/old-engine-up.sh`).
    Old,
}

impl EngineKind {
    fn describe(self) -> &'static str {
        match self {
            EngineKind::New => "docker 26 engine",
            EngineKind::Old => "old (docker 20.10) engine",
        }
    }

    fn host_var(self) -> &'static str {
        match self {
            EngineKind::New => "KILN_E2E_DOCKER_HOST",
            EngineKind::Old => "KILN_E2E_OLD_DOCKER_HOST",
        }
    }

    fn default_host(self) -> &'static str {
        match self {
            EngineKind::New => NEW_ENGINE_HOST,
            EngineKind::Old => OLD_ENGINE_HOST,
        }
    }

    /// The engine's `DOCKER_HOST`: the test bed's socket unless overridden.
    fn host(self) -> String {
        std::env::var(self.host_var())
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| self.default_host().to_string())
    }

    fn up_script(self) -> &'static str {
        match self {
            EngineKind::New => "scripts/engine-up.sh",
            EngineKind::Old => "scripts/old-engine-up.sh",
        }
    }
}

/// A docker engine the tests build on, set up once per test process.
#[derive(Debug)]
pub struct Engine {
    pub kind: EngineKind,
    /// Its `DOCKER_HOST`.
    pub host: String,
    pub version: String,
    /// The image store: docker's graph drivers (overlay2) make BuildKit
    /// turn MergeOp and DiffOp off ("only enabled with containerd image
    /// store backend", moby builder-next); the containerd snapshotter
    /// store keeps them on.
    pub storage: String,
    pub containerd_store: bool,
    /// The engine has no bridge network: build steps need `--network=host`.
    pub needs_host_network: bool,
}

enum SetupError {
    /// The engine does not answer and could not be started.
    NoEngine(String),
    /// The engine answers but the test bed is broken (no buildx, the
    /// frontend image does not build, fixtures missing): always a failure.
    Broken(String),
}

static NEW: OnceLock<Result<Engine, SetupError>> = OnceLock::new();
static OLD: OnceLock<Result<Engine, SetupError>> = OnceLock::new();

/// The engine for a test, or `None` when the test is to be skipped (it has
/// printed why). Panics where skipping would hide a failure: `CI` set, or a
/// test bed that answers but is broken.
pub fn engine(kind: EngineKind, test: &str) -> Option<&'static Engine> {
    if std::env::var("KILN_E2E").as_deref() != Ok("1") {
        loud(&format!(
            "*** {test}: SKIPPED: set KILN_E2E=1 (make test does) to run the engine tests ***\n"
        ));
        return None;
    }
    let cell = match kind {
        EngineKind::New => &NEW,
        EngineKind::Old => &OLD,
    };
    match cell.get_or_init(|| setup(kind)) {
        Ok(engine) => Some(engine),
        Err(SetupError::NoEngine(why)) => {
            if in_ci() {
                panic!(
                    "{test}: CI is set, and the {} cannot start: {why}",
                    kind.describe()
                );
            }
            loud(&format!(
                "{bar}\n*** {test}: SKIPPED: the {} cannot start: {why}\n*** (with CI set this fails)\n{bar}\n",
                kind.describe(),
                bar = "*".repeat(78)
            ));
            None
        }
        Err(SetupError::Broken(why)) => {
            panic!("{test}: the {} test bed is broken: {why}", kind.describe())
        }
    }
}

/// Straight to stderr, past the test harness's output capture (which takes
/// only `print!`/`eprint!`), so a skip shows even when the test passes.
fn loud(message: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(message.as_bytes());
}

/// Run a command to completion, its output captured.
fn output(cmd: &mut Command) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null()).output()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn both(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn docker_at(host: &str) -> Command {
    let mut c = Command::new("docker");
    c.env("DOCKER_HOST", host).env_remove("DOCKER_CONTEXT");
    c
}

/// `docker version` of the server, if one answers within 30 s.
fn server_version(host: &str) -> Option<String> {
    let o = output(
        Command::new("timeout")
            .args(["30", "docker", "version", "--format", "{{.Server.Version}}"])
            .env("DOCKER_HOST", host)
            .env_remove("DOCKER_CONTEXT"),
    )
    .ok()?;
    let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && !v.is_empty()).then_some(v)
}

fn setup(kind: EngineKind) -> Result<Engine, SetupError> {
    let t0 = Instant::now();
    let host = kind.host();
    if output(Command::new("docker").arg("--version")).is_err() {
        return Err(SetupError::NoEngine("no `docker` CLI on PATH".into()));
    }
    let version = match server_version(&host) {
        Some(v) => v,
        None if host != kind.default_host() => {
            return Err(SetupError::NoEngine(format!(
                "no engine answers at {host} (set by {})",
                kind.host_var()
            )));
        }
        None => {
            // Not running: start it the way `make test` does, once.
            let script = repo().join(kind.up_script());
            eprintln!(
                "e2e: no engine answers at {host}; running {}",
                kind.up_script()
            );
            let started = output(Command::new("bash").arg(&script).current_dir(repo()));
            let log = match &started {
                Ok(o) => tail(&both(o), 15),
                Err(e) => format!("cannot run {}: {e}", script.display()),
            };
            server_version(&host).ok_or_else(|| {
                SetupError::NoEngine(format!(
                    "no engine answers at {host}, and {} did not start one:\n{log}",
                    kind.up_script()
                ))
            })?
        }
    };
    let bx = output(docker_at(&host).args(["buildx", "version"]))
        .map_err(|e| SetupError::Broken(format!("docker buildx: {e}")))?;
    if !bx.status.success() {
        return Err(SetupError::Broken(format!(
            "`docker buildx version` fails: {}",
            both(&bx)
        )));
    }
    let info =
        output(docker_at(&host).args(["info", "--format", "{{.Driver}} {{json .DriverStatus}}"]))
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
    let storage = info.split_whitespace().next().unwrap_or("?").to_string();
    let containerd_store = info.contains("io.containerd.snapshotter");
    let bridges =
        output(docker_at(&host).args(["network", "ls", "--filter", "driver=bridge", "-q"]))
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
    let engine = Engine {
        kind,
        host,
        version,
        storage,
        containerd_store,
        needs_host_network: bridges.is_empty(),
    };
    engine.ensure_frontend_image()?;
    engine.ensure_fixtures()?;
    eprintln!(
        "e2e: {} ready in {:.1}s: docker {} at {}, storage {}{}{}",
        kind.describe(),
        t0.elapsed().as_secs_f64(),
        engine.version,
        engine.host,
        engine.storage,
        if engine.containerd_store {
            " (containerd image store: MergeOp/DiffOp on)"
        } else {
            " (graph driver: BuildKit turns MergeOp/DiffOp off)"
        },
        if engine.needs_host_network {
            ", no bridge network: builds use --network=host"
        } else {
            ""
        }
    );
    engine.remove_leftover_images();
    Ok(engine)
}

impl Engine {
    /// Remove the images earlier runs left (see the note at [`Image`]),
    /// before this run builds anything.
    fn remove_leftover_images(&self) {
        for reference in ["kiln-e2e/*", "kiln-e2e-base"] {
            let Ok(o) = output(self.docker().args([
                "images",
                "--quiet",
                "--filter",
                &format!("reference={reference}"),
            ])) else {
                continue;
            };
            let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = output(self.docker().args(["image", "rm", "-f"]).args(&ids));
            }
        }
    }

    /// `docker` aimed at this engine.
    pub fn docker(&self) -> Command {
        docker_at(&self.host)
    }

    fn has_image(&self, name: &str) -> bool {
        output(
            self.docker()
                .args(["image", "inspect", "--format", "{{.Id}}", name]),
        )
        .is_ok_and(|o| o.status.success())
    }

    /// Build the frontend image from this checkout (`frontend/build-image.sh`:
    /// cargo is incremental and docker caches, so an up-to-date image costs a
    /// few seconds), so the tests never run a stale frontend.
    /// `KILN_E2E_BUILD_FRONTEND=0` uses whatever image is there.
    fn ensure_frontend_image(&self) -> Result<(), SetupError> {
        let rebuild = std::env::var("KILN_E2E_BUILD_FRONTEND").as_deref() != Ok("0");
        if !rebuild && self.has_image(FRONTEND_IMAGE) {
            return Ok(());
        }
        let t0 = Instant::now();
        let o = output(
            Command::new("bash")
                .arg(repo().join("frontend/build-image.sh"))
                .arg(FRONTEND_IMAGE)
                .current_dir(repo())
                .env("DOCKER_HOST", &self.host)
                .env_remove("DOCKER_CONTEXT"),
        )
        .map_err(|e| SetupError::Broken(format!("cannot run frontend/build-image.sh: {e}")))?;
        if !o.status.success() || !self.has_image(FRONTEND_IMAGE) {
            return Err(SetupError::Broken(format!(
                "frontend/build-image.sh failed:\n{}",
                tail(&both(&o), 30)
            )));
        }
        eprintln!(
            "e2e: {FRONTEND_IMAGE} built on {} in {:.1}s",
            self.host,
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn ensure_fixtures(&self) -> Result<(), SetupError> {
        if FIXTURE_IMAGES.iter().all(|i| self.has_image(i)) {
            return Ok(());
        }
        let o = output(
            Command::new("bash")
                .arg(repo().join("scripts/fixtures.sh"))
                .current_dir(repo())
                .env("DOCKER_HOST", &self.host)
                .env_remove("DOCKER_CONTEXT"),
        )
        .map_err(|e| SetupError::Broken(format!("cannot run scripts/fixtures.sh: {e}")))?;
        let missing: Vec<&str> = FIXTURE_IMAGES
            .iter()
            .copied()
            .filter(|i| !self.has_image(i))
            .collect();
        if !o.status.success() || !missing.is_empty() {
            return Err(SetupError::Broken(format!(
                "scripts/fixtures.sh did not provide {}:\n{}",
                missing.join(", "),
                tail(&both(&o), 20)
            )));
        }
        Ok(())
    }

    /// An image name for one test, removed from the engine when dropped.
    pub fn image(&'static self, test: &str) -> Image {
        Image {
            engine: self,
            tag: format!("kiln-e2e/{test}:{}-{}", std::process::id(), nonce()),
        }
    }

    /// Build, holding the harness's build lock: the machine has two cores,
    /// and builds that overlap only make each other slow (and their timings
    /// meaningless). Other engine work (run, inspect, save) may overlap.
    pub fn build(&self, build: &Build) -> BuildResult {
        let _serial = build_lock();
        let first = self.build_unlocked(build);
        // docker 26's containerd image store now and then loses a shared
        // layer's snapshot while it unpacks the exported image ("failed to
        // prepare extraction snapshot … parent snapshot … does not exist"):
        // the engine's race, not the build's. The build is done again once;
        // what the first try executed still counts as executed.
        let lost = |r: &BuildResult| {
            !r.ok
                && r.all_text()
                    .contains("failed to prepare extraction snapshot")
        };
        if !lost(&first) {
            return first;
        }
        eprintln!(
            "e2e: the engine lost a snapshot unpacking the image (its race); building again:\n{}",
            first.text.trim()
        );
        let mut again = self.build_unlocked(build);
        for v in &mut again.vertices {
            if first
                .vertices
                .iter()
                .any(|f| f.digest == v.digest && f.executed())
            {
                v.cached = false;
                v.completed = true;
            }
        }
        again
    }

    /// Build without the lock: for a test that overlaps builds on purpose
    /// (it holds [`build_lock`] itself).
    pub fn build_unlocked(&self, build: &Build) -> BuildResult {
        let mut args: Vec<String> = vec![
            "--kill-after=15".into(),
            BUILD_TIMEOUT_SECS.to_string(),
            "docker".into(),
            "buildx".into(),
            "build".into(),
            "--builder".into(),
            "default".into(),
            "--progress=rawjson".into(),
            "-f".into(),
            build.recipe.display().to_string(),
            "--secret".into(),
            format!("id=ca-bundle,src={}", build.secret.display()),
        ];
        if let Some(t) = &build.target {
            args.extend(["--target".into(), t.clone()]);
        }
        if let Some(t) = &build.tag {
            args.extend(["-t".into(), t.clone()]);
        }
        if build.no_cache {
            args.push("--no-cache".into());
        }
        for (k, v) in &build.build_args {
            args.extend(["--build-arg".into(), format!("{k}={v}")]);
        }
        args.extend(build.flags.iter().cloned());
        if self.needs_host_network {
            args.push("--network=host".into());
        }
        args.push(build.context.display().to_string());
        let command = format!("DOCKER_HOST={} timeout {}", self.host, args.join(" "));
        let t0 = Instant::now();
        let o = output(
            Command::new("timeout")
                .args(&args)
                .env("DOCKER_HOST", &self.host)
                .env_remove("DOCKER_CONTEXT")
                .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1"),
        )
        .expect("run docker buildx build");
        let elapsed = t0.elapsed();
        let mut result = BuildResult::parse(&String::from_utf8_lossy(&o.stderr));
        result.sources = ops_without_inputs(build, self.kind == EngineKind::Old);
        result.ok = o.status.success();
        result.code = o.status.code();
        result.elapsed = elapsed;
        result.command = command;
        result.stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        eprintln!(
            "e2e: build {} {}{}: {} in {:.1}s ({} ops executed, {} cached)",
            build
                .recipe
                .strip_prefix(repo())
                .unwrap_or(&build.recipe)
                .display(),
            build.target.as_deref().unwrap_or("(default)"),
            if build.no_cache { " --no-cache" } else { "" },
            if result.ok { "ok" } else { "FAILED" },
            elapsed.as_secs_f64(),
            result.executed().len(),
            result.cached().len()
        );
        if std::env::var("KILN_E2E_VERBOSE").as_deref() == Ok("1") {
            eprint!("{}", result.summary());
        }
        result
    }
}

/// The names of the ops without inputs in the recipe's LLB, as `kiln
/// compile` makes it for the build's target (empty when it does not compile).
fn ops_without_inputs(build: &Build, no_merge: bool) -> BTreeSet<String> {
    let recipe = build.recipe.display().to_string();
    let mut args = vec!["compile", "--format", "json", recipe.as_str()];
    if let Some(t) = &build.target {
        args.extend(["--target", t.as_str()]);
    }
    if no_merge {
        args.push("--no-merge");
    }
    let o = kiln(&args);
    let Ok(json) = serde_json::from_slice::<Value>(&o.stdout) else {
        return BTreeSet::new();
    };
    json["definition"]["ops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|op| op["inputs"].as_array().is_none_or(|i| i.is_empty()))
        .filter_map(|op| op["name"].as_str().map(str::to_string))
        .collect()
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The lock every [`Engine::build`] takes. A test that panicked while
/// holding it leaves it poisoned; the next test does not care.
pub fn build_lock() -> MutexGuard<'static, ()> {
    BUILD_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ------------------------------------------------------------------ secret

/// The CA bundle with a random marker line: handed to every build as the
/// `ca-bundle` secret, so a test can look for the marker wherever the
/// secret must never be (layers, config, history, LLB).
pub struct MarkedSecret {
    pub path: PathBuf,
    pub marker: String,
}

pub fn secret() -> &'static MarkedSecret {
    static SECRET: OnceLock<MarkedSecret> = OnceLock::new();
    SECRET.get_or_init(|| {
        sweep_stale_temp_dirs();
        let marker = format!("kiln-e2e-secret-{}{}", nonce(), nonce());
        let mut bundle =
            std::fs::read(CA_BUNDLE).unwrap_or_else(|e| panic!("read {CA_BUNDLE}: {e}"));
        bundle.extend_from_slice(format!("\n# {marker}\n").as_bytes());
        let dir = std::env::temp_dir().join(format!("kiln-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // The file name carries no part of the marker.
        let path = dir.join("ca-bundle.crt");
        std::fs::write(&path, bundle).expect("write the secret");
        MarkedSecret { path, marker }
    })
}

/// Remove the temporary directories of earlier test processes that are
/// gone (`kiln-e2e-PID…`): the secret's directory outlives its process.
fn sweep_stale_temp_dirs() {
    for entry in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("kiln-e2e-") else {
            continue;
        };
        let (pid, tail) = rest.split_once('-').unwrap_or((rest, ""));
        let ours = !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && (tail.is_empty() || tail.contains('-'));
        if ours && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

// ------------------------------------------------------------------ builds

/// One `docker buildx build` of a recipe.
#[derive(Clone, Debug)]
pub struct Build {
    pub recipe: PathBuf,
    pub context: PathBuf,
    pub target: Option<String>,
    pub tag: Option<String>,
    pub no_cache: bool,
    pub secret: PathBuf,
    /// `--build-arg NAME=VALUE`, in order.
    pub build_args: Vec<(String, String)>,
    /// Other `docker buildx build` flags, as given.
    pub flags: Vec<String>,
}

impl Build {
    /// `-f RECIPE CONTEXT`, with the marked CA bundle as the `ca-bundle`
    /// secret.
    pub fn new(recipe: impl Into<PathBuf>, context: impl Into<PathBuf>) -> Build {
        Build {
            recipe: recipe.into(),
            context: context.into(),
            target: None,
            tag: None,
            no_cache: false,
            secret: secret().path.clone(),
            build_args: Vec::new(),
            flags: Vec::new(),
        }
    }

    /// Another `docker buildx build` flag (`--add-host=h:1.2.3.4`).
    pub fn flag(mut self, flag: &str) -> Build {
        self.flags.push(flag.to_string());
        self
    }

    pub fn build_arg(mut self, name: &str, value: &str) -> Build {
        self.build_args.push((name.to_string(), value.to_string()));
        self
    }

    pub fn target(mut self, target: &str) -> Build {
        self.target = Some(target.to_string());
        self
    }

    pub fn tag(mut self, image: &Image) -> Build {
        self.tag = Some(image.tag.clone());
        self
    }

    /// `--no-cache`: every op runs again (cache mounts keep their contents).
    pub fn no_cache(mut self) -> Build {
        self.no_cache = true;
        self
    }
}

/// One vertex of the build's progress, folded over all its updates.
#[derive(Clone, Debug, Default)]
pub struct Vertex {
    pub digest: String,
    pub name: String,
    pub started: bool,
    pub completed: bool,
    pub cached: bool,
    pub error: Option<String>,
    /// stdout and stderr of the step.
    pub log: String,
    /// Seconds from its first start to its last completion.
    pub seconds: Option<f64>,
    first_start: Option<f64>,
}

impl Vertex {
    /// It ran in this build (not from the cache).
    pub fn executed(&self) -> bool {
        self.completed && !self.cached
    }

    /// One of the recipe's ops: kiln names them `[variant] …`; BuildKit's
    /// own and the frontend's bookkeeping are `[internal] …` or unbracketed.
    pub fn is_recipe_op(&self) -> bool {
        self.name.starts_with('[') && !self.name.starts_with("[internal]")
    }

    /// A local source (context files): transferred on every build, never
    /// "cached"; what depends on it is.
    pub fn is_context_source(&self) -> bool {
        self.name.contains("] context:")
    }
}

/// What `docker buildx build --progress=rawjson` said.
#[derive(Debug, Default)]
pub struct BuildResult {
    pub ok: bool,
    pub code: Option<i32>,
    pub elapsed: Duration,
    pub command: String,
    pub stdout: String,
    /// Vertices in the order they first appeared.
    pub vertices: Vec<Vertex>,
    /// What stderr held besides the progress JSON (buildx's `ERROR: …`).
    pub text: String,
    /// Names of the recipe's ops that have no inputs (image and local
    /// sources, files made from scratch). BuildKit reports computing their
    /// cache keys (resolving an image, hashing an op) as a run, even when
    /// every op that uses them comes from the cache, so they do not count as
    /// executed.
    pub sources: BTreeSet<String>,
}

impl BuildResult {
    /// Fold the stream of progress objects (`client.SolveStatus` as JSON,
    /// pretty-printed one after the other, text lines between them).
    pub fn parse(stderr: &str) -> BuildResult {
        let mut result = BuildResult::default();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut pos = 0;
        while pos < stderr.len() {
            let rest = &stderr[pos..];
            let lead = rest.len() - rest.trim_start().len();
            if rest[lead..].starts_with('{') {
                let mut values =
                    serde_json::Deserializer::from_str(&rest[lead..]).into_iter::<Value>();
                if let Some(Ok(status)) = values.next() {
                    result.fold(&status, &mut index);
                    pos += lead + values.byte_offset();
                    continue;
                }
            }
            let end = rest.find('\n').map_or(rest.len(), |i| i + 1);
            result.text.push_str(&rest[..end]);
            pos += end;
        }
        result
    }

    fn fold(&mut self, status: &Value, index: &mut BTreeMap<String, usize>) {
        let mut vertex = |digest: &str| -> usize {
            *index.entry(digest.to_string()).or_insert_with(|| {
                self.vertices.push(Vertex {
                    digest: digest.to_string(),
                    ..Vertex::default()
                });
                self.vertices.len() - 1
            })
        };
        let mut updates = Vec::new();
        for v in status["vertexes"].as_array().into_iter().flatten() {
            let Some(digest) = v["digest"].as_str() else {
                continue;
            };
            updates.push((vertex(digest), v.clone()));
        }
        let mut logs = Vec::new();
        for l in status["logs"].as_array().into_iter().flatten() {
            let Some(digest) = l["vertex"].as_str() else {
                continue;
            };
            let data = l["data"].as_str().map(base64_decode).unwrap_or_default();
            logs.push((vertex(digest), data));
        }
        for (i, v) in updates {
            let vx = &mut self.vertices[i];
            if let Some(name) = v["name"].as_str() {
                vx.name = name.to_string();
            }
            vx.started |= v["started"].is_string();
            vx.completed |= v["completed"].is_string();
            let start = v["started"].as_str().and_then(seconds_of_day);
            if vx.first_start.is_none() {
                vx.first_start = start;
            }
            if let (Some(s), Some(c)) = (
                vx.first_start,
                v["completed"].as_str().and_then(seconds_of_day),
            ) {
                vx.seconds = Some((c - s).rem_euclid(86_400.0));
            }
            vx.cached |= v["cached"].as_bool().unwrap_or(false);
            if let Some(e) = v["error"].as_str().filter(|e| !e.is_empty()) {
                vx.error = Some(e.to_string());
            }
        }
        for (i, data) in logs {
            self.vertices[i]
                .log
                .push_str(&String::from_utf8_lossy(&data));
        }
    }

    /// The recipe's ops that take inputs: the ones whose fate (run or
    /// cached) says something (see [`Self::sources`]).
    pub fn recipe_ops(&self) -> Vec<&Vertex> {
        self.vertices
            .iter()
            .filter(|v| {
                v.is_recipe_op() && !v.is_context_source() && !self.sources.contains(&v.name)
            })
            .collect()
    }

    /// Recipe ops that ran.
    pub fn executed(&self) -> Vec<&Vertex> {
        self.recipe_ops()
            .into_iter()
            .filter(|v| v.executed())
            .collect()
    }

    /// Recipe ops that came from the cache.
    pub fn cached(&self) -> Vec<&Vertex> {
        self.vertices
            .iter()
            .filter(|v| v.is_recipe_op() && v.cached)
            .collect()
    }

    pub fn executed_names(&self) -> Vec<&str> {
        self.executed()
            .into_iter()
            .map(|v| v.name.as_str())
            .collect()
    }

    /// Vertices whose name contains `part`.
    pub fn named<'a>(&'a self, part: &str) -> Vec<&'a Vertex> {
        self.vertices
            .iter()
            .filter(|v| v.name.contains(part))
            .collect()
    }

    /// Every vertex, one line each, with its fate: for assertion messages.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for v in &self.vertices {
            let fate = if v.error.is_some() {
                "ERROR "
            } else if v.cached {
                "CACHED"
            } else if v.completed {
                "RAN   "
            } else if v.started {
                "...   "
            } else {
                "-     "
            };
            let source = if self.sources.contains(&v.name) {
                " (no inputs)"
            } else {
                ""
            };
            let took = v.seconds.map(|t| format!(" {t:.1}s")).unwrap_or_default();
            let _ = writeln!(s, "  {fate} {}{source}{took}", v.name);
        }
        s
    }

    /// Everything a person needs to see why a build failed.
    pub fn report(&self) -> String {
        let mut s = format!(
            "$ {}\nexit {:?} after {:.1}s\nvertices:\n{}",
            self.command,
            self.code,
            self.elapsed.as_secs_f64(),
            self.summary()
        );
        for v in self.vertices.iter().filter(|v| v.error.is_some()) {
            let _ = writeln!(
                s,
                "--- {} failed: {}\n{}",
                v.name,
                v.error.as_deref().unwrap_or(""),
                tail(&v.log, 25)
            );
        }
        let _ = writeln!(s, "--- buildx said:\n{}", tail(&self.text, 30));
        s
    }

    /// Panic with the report unless the build succeeded.
    #[track_caller]
    pub fn expect_ok(&self) -> &BuildResult {
        assert!(self.ok, "the build failed:\n{}", self.report());
        self
    }

    /// Everything the build printed, logs and errors included.
    pub fn all_text(&self) -> String {
        let mut s = self.text.clone();
        for v in &self.vertices {
            s.push_str(&v.log);
            if let Some(e) = &v.error {
                s.push_str(e);
                s.push('\n');
            }
        }
        s
    }
}

/// `2026-11-24T02:18:36.312816781Z` → seconds since midnight (builds are
/// short; a midnight in between is handled by the caller's `rem_euclid`).
fn seconds_of_day(ts: &str) -> Option<f64> {
    let time = ts.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.splitn(3, ':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Standard base64 (what Go's encoding/json makes of `[]byte`).
fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

// ------------------------------------------------------------------ images

/// An image tag on one engine, removed (`docker rmi`) when dropped.
pub struct Image {
    pub engine: &'static Engine,
    pub tag: String,
}

// Test images are not removed when a test ends: with the containerd image
// store, removing an image while another build unpacks one that shares its
// layers fails that build ("parent snapshot ... does not exist: not found").
// The next run removes them before its first build
// (`Engine::remove_leftover_images`).

/// What a `docker run` printed.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Image {
    /// `docker run --rm --network=none [docker args] IMAGE [args]`.
    pub fn run_with(&self, docker_args: &[&str], args: &[&str]) -> Run {
        let o = output(
            self.engine
                .docker()
                .args(["run", "--rm", "--network=none"])
                .args(docker_args)
                .arg(&self.tag)
                .args(args),
        )
        .expect("docker run");
        Run {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Run with the image's entrypoint and cmd (or `args` for cmd); panics
    /// on failure; stdout.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> String {
        let r = self.run_with(&[], args);
        assert!(
            r.ok,
            "docker run {} {args:?} failed:\n{}{}",
            self.tag, r.stdout, r.stderr
        );
        r.stdout
    }

    /// `ARGS[0] ARGS[1..]` with the entrypoint bypassed (the CUDA base's
    /// prints a banner), as the image's user; panics on failure; stdout.
    #[track_caller]
    pub fn exec(&self, args: &[&str]) -> String {
        let (program, rest) = args.split_first().expect("a command");
        let r = self.run_with(&["--entrypoint", program], rest);
        assert!(
            r.ok,
            "in {}: {args:?} failed:\n{}{}",
            self.tag, r.stdout, r.stderr
        );
        r.stdout
    }

    /// `/bin/sh -c SCRIPT` as the image's user, entrypoint bypassed; stdout.
    #[track_caller]
    pub fn sh(&self, script: &str) -> String {
        self.sh_as(None, script)
    }

    /// `/bin/sh -c SCRIPT` as `user` (None: the image's); stdout.
    #[track_caller]
    pub fn sh_as(&self, user: Option<&str>, script: &str) -> String {
        let mut docker_args = vec!["--entrypoint", "/bin/sh"];
        if let Some(u) = user {
            docker_args.extend(["--user", u]);
        }
        let r = self.run_with(&docker_args, &["-c", script]);
        assert!(
            r.ok,
            "in {}: sh -c {script:?} failed:\n{}{}",
            self.tag, r.stdout, r.stderr
        );
        r.stdout
    }

    /// `docker image inspect`, the one object.
    pub fn inspect(&self) -> Value {
        let o = output(self.engine.docker().args(["image", "inspect", &self.tag]))
            .expect("docker image inspect");
        assert!(
            o.status.success(),
            "docker image inspect {}: {}",
            self.tag,
            both(&o)
        );
        let v: Value = serde_json::from_slice(&o.stdout).expect("inspect JSON");
        v[0].clone()
    }

    /// `docker history --no-trunc` with every field.
    pub fn history(&self) -> String {
        let o = output(self.engine.docker().args([
            "history",
            "--no-trunc",
            "--format",
            "{{json .}}",
            &self.tag,
        ]))
        .expect("docker history");
        assert!(
            o.status.success(),
            "docker history {}: {}",
            self.tag,
            both(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `docker save` the image and look for each needle in every file of
    /// the tarball, compressed layers decompressed: for each needle, the
    /// tarball paths that contain it.
    pub fn save_and_search(&self, needles: &[&[u8]]) -> SavedImage {
        let dir = TempDir::new("save");
        let tar = dir.path().join("image.tar");
        let o = output(
            self.engine
                .docker()
                .args(["save", "-o"])
                .arg(&tar)
                .arg(&self.tag),
        )
        .expect("docker save");
        assert!(o.status.success(), "docker save {}: {}", self.tag, both(&o));
        let root = dir.path().join("x");
        std::fs::create_dir_all(&root).expect("mkdir");
        let o = output(
            Command::new("tar")
                .arg("-xf")
                .arg(&tar)
                .arg("-C")
                .arg(&root),
        )
        .expect("tar");
        assert!(o.status.success(), "tar -xf: {}", both(&o));
        let mut saved = SavedImage {
            found: vec![Vec::new(); needles.len()],
            files: 0,
            layers: 0,
        };
        for file in walk(&root) {
            let rel = file
                .strip_prefix(&root)
                .unwrap_or(&file)
                .display()
                .to_string();
            let mut bytes = Vec::new();
            std::fs::File::open(&file)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            let decoder = if bytes.starts_with(&[0x1f, 0x8b]) {
                Some("gzip")
            } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                Some("zstd")
            } else {
                None
            };
            if let Some(tool) = decoder {
                let o = output(Command::new(tool).arg("-dc").arg(&file))
                    .unwrap_or_else(|e| panic!("{tool} -dc: {e}"));
                assert!(o.status.success(), "{tool} -dc {rel}: {}", both(&o));
                bytes = o.stdout;
            }
            // A layer: a tar (ustar magic at 257) or a docker-archive layer.tar.
            if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
                saved.layers += 1;
            }
            saved.files += 1;
            for (i, needle) in needles.iter().enumerate() {
                if contains(&bytes, needle) {
                    saved.found[i].push(rel.clone());
                }
            }
        }
        saved
    }
}

pub struct SavedImage {
    /// Per needle: the files of the `docker save` tarball holding it.
    pub found: Vec<Vec<String>>,
    pub files: usize,
    /// Files that are (decompressed) tar archives: the layers.
    pub layers: usize,
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => files.push(p),
                _ => {}
            }
        }
    }
    files.sort();
    files
}

// ------------------------------------------------------------------ files

/// A temporary directory, deleted when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "kiln-e2e-{}-{what}-{}",
            std::process::id(),
            nonce()
        ));
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A copy of a `tests/e2e/` fixture directory (file modes kept).
    pub fn with_fixture(name: &str) -> TempDir {
        let dir = TempDir::new(name);
        copy_dir(&fixture(name), dir.path());
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("mkdir {}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dst.display()));
        }
    }
}

/// The `kiln` CLI of this checkout.
pub fn kiln(args: &[&str]) -> Output {
    output(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .current_dir(repo())
            .env("NO_COLOR", "1"),
    )
    .expect("run kiln")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64_decode("aGVsbG8gd29ybGQK"), b"hello world\n");
        assert_eq!(base64_decode("YQ=="), b"a");
    }

    #[test]
    fn progress_folds_vertex_updates() {
        let stderr = r#"{
  "vertexes": [
    { "digest": "sha256:a", "name": "[cpu] pip install six==1.16.0", "started": "2026-11-24T01:00:00.5Z" }
  ]
}
{
  "vertexes": [
    { "digest": "sha256:a", "name": "[cpu] pip install six==1.16.0", "started": "2026-11-24T01:00:00.5Z", "completed": "2026-11-24T01:00:02Z" },
    { "digest": "sha256:b", "name": "[cpu] copy app", "cached": true, "completed": "2026-11-24T01:00:02Z" }
  ],
  "logs": [ { "vertex": "sha256:a", "stream": 1, "data": "aGVsbG8K" } ]
}
ERROR: something
"#;
        let r = BuildResult::parse(stderr);
        assert_eq!(r.vertices.len(), 2);
        assert_eq!(r.executed_names(), ["[cpu] pip install six==1.16.0"]);
        assert_eq!(r.cached().len(), 1);
        assert_eq!(r.vertices[0].log, "hello\n");
        assert_eq!(r.vertices[0].seconds, Some(1.5));
        assert_eq!(r.text.trim(), "ERROR: something");
    }
}
