//! One frontend run, start to finish: read the recipe from the client's
//! files, answer a subrequest or compile it (after resolving its base images
//! with the engine), solve each platform's graph and checks, and assemble
//! the result. [`serve`] wraps it so that every run ends in a `Return`.

use std::collections::BTreeMap;

use kiln_compiler::llb::{LocalOpts, OpMeta, State, marshal};
use kiln_compiler::{Compilation, Diagnostics, Options, Platform, PlatformBuild, ResolvedImage};
use kiln_proto::gateway::{self, llb_bridge_client::LlbBridgeClient};
use kiln_proto::pb;
use prost::Message;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::engine::{Engine, gateway_cap, llb_cap};
use crate::export::{PlatformImage, image_result};
use crate::failure::{self, Failure};
use crate::locals::{Sessions, bind_to_session};
use crate::options::{Environment, FrontendOptions};
use crate::subrequests;

/// The recipe as read from the client's files.
#[derive(Debug, Clone)]
pub struct RecipeFile {
    pub name: String,
    pub text: String,
    /// Digest of the op that loaded it: warnings are attached to it.
    pub vertex: String,
}

/// The definition that brings the recipe file from the client: the
/// `dockerfile` local, limited to the one file. The shared-key hint lets the
/// engine reuse the transfer BuildKit's Dockerfile frontend already made
/// before it forwarded to kiln (`frontend/dockerui/config.go`).
pub fn recipe_source(local: &str, filename: &str) -> pb::Definition {
    file_source(
        local,
        filename,
        local,
        &format!("[internal] load recipe {filename}"),
    )
}

/// One file of a local source, as its own definition.
fn file_source(local: &str, filename: &str, hint: &str, name: &str) -> pb::Definition {
    let opts = LocalOpts {
        follow_paths: vec![filename.to_string()],
        shared_key_hint: Some(hint.to_string()),
        ..LocalOpts::default()
    };
    let state = State::local(local, &opts, OpMeta::named(name.to_string()));
    marshal(&state, None).definition
}

/// The context's ignore patterns, as Docker reads them: the recipe's own
/// `<recipe>.dockerignore` next to it, else `.dockerignore` at the root of
/// the context; no file (or one the engine cannot read) is no patterns.
pub async fn read_ignore(
    engine: &Engine,
    opts: &FrontendOptions,
    sessions: &Sessions,
) -> Vec<String> {
    let beside_recipe = format!("{}.dockerignore", opts.filename);
    let candidates = [
        (
            opts.dockerfile_local.as_str(),
            beside_recipe.as_str(),
            "dockerignore",
        ),
        (
            opts.context_local.as_str(),
            ".dockerignore",
            "context-dockerignore",
        ),
    ];
    for (local, file, hint) in candidates {
        let mut def = file_source(local, file, hint, &format!("[internal] load {file}"));
        bind_to_session(&mut def, sessions);
        let Ok(id) = engine.solve(def, false, &[]).await else {
            continue;
        };
        if let Ok(data) = engine.read_file(&id, file).await {
            return kiln_compiler::ignore::parse(&String::from_utf8_lossy(&data));
        }
    }
    Vec::new()
}

/// The most rounds of includes followed (`-r a.txt` in a file named by
/// `-r` …); each round reads every file the last one named.
const MAX_INCLUDE_ROUNDS: usize = 32;
/// Requirements files larger than this are not read (pip reads them; kiln
/// follows no includes in them and takes none for a lock).
const MAX_CONTEXT_FILE: usize = 4 << 20;

/// Read the context files the compiler asks for (requirements files and
/// what they include), as the build's steps will see them: through the
/// context's local source, `.dockerignore` applied. A file the context
/// lacks is `None`; one the engine cannot hand over is left out (taken on
/// trust), as is the whole lot on an engine error.
pub async fn read_context_files(
    engine: &Engine,
    compilation: &Compilation,
    copts: &mut Options,
    sessions: &Sessions,
) {
    for _ in 0..MAX_INCLUDE_ROUNDS {
        let wanted = compilation.context_files_wanted(copts);
        if wanted.is_empty() {
            return;
        }
        let state = State::local(
            &copts.context_name,
            &LocalOpts {
                include: wanted.clone(),
                exclude: copts.exclude.clone(),
                shared_key_hint: Some("kiln-read-requirements".to_string()),
                ..LocalOpts::default()
            },
            OpMeta::named("[internal] load requirements files".to_string()),
        );
        let mut def = marshal(&state, None).definition;
        bind_to_session(&mut def, sessions);
        let Ok(id) = engine.solve(def, false, &[]).await else {
            return;
        };
        let mut progress = false;
        for file in wanted {
            match engine.read_file(&id, &file).await {
                Ok(data) if data.len() <= MAX_CONTEXT_FILE => {
                    copts
                        .context_files
                        .insert(file, Some(String::from_utf8_lossy(&data).into_owned()));
                    progress = true;
                }
                // Too large to read here: pip reads it; no includes are
                // followed and it is not taken for a lock.
                Ok(_) => {
                    copts.context_files.insert(file, Some(String::new()));
                    progress = true;
                }
                Err(status) if crate::engine::not_found(&status) => {
                    copts.context_files.insert(file, None);
                    progress = true;
                }
                Err(status) => {
                    eprintln!("kiln-frontend: reading {file} from the context: {status}");
                }
            }
        }
        if !progress {
            return;
        }
    }
}

/// What the frontend needs to tell which `copy` line named a source the
/// context lacks, once a copy has failed.
#[derive(Clone)]
struct CopyProbe {
    compilation: Compilation,
    /// The options the builds were compiled with.
    opts: Options,
    sessions: Sessions,
}

impl CopyProbe {
    /// The recipe's errors at each `copy` line whose source the context
    /// lacks (or `.dockerignore` leaves out); `None` when it has them all,
    /// so the failure was another.
    async fn missing_sources(&self, engine: &Engine) -> Option<Diagnostics> {
        let wanted = self.compilation.context_paths_wanted(&self.opts);
        if wanted.is_empty() {
            return None;
        }
        let mut exclude = self.opts.exclude.clone();
        // A folder is looked up, not sent again: only its own entry. Not
        // where a `!` pattern may bring back something under an ignored
        // path (the folder then exists because of it).
        if !exclude.iter().any(|p| p.starts_with('!')) {
            exclude.extend(wanted.iter().map(|p| format!("{p}/**")));
        }
        let state = State::local(
            &self.opts.context_name,
            &LocalOpts {
                include: wanted.clone(),
                exclude,
                shared_key_hint: Some("kiln-copy-sources".to_string()),
                ..LocalOpts::default()
            },
            OpMeta::named("[internal] look up copy sources".to_string()),
        );
        let mut def = marshal(&state, None).definition;
        bind_to_session(&mut def, &self.sessions);
        let id = engine.solve(def, false, &[]).await.ok()?;
        let mut opts = self.opts.clone();
        for path in wanted {
            let present = match kiln_compiler::copy_pattern(&path) {
                // What was sent is what the pattern matched (and
                // .dockerignore kept): anything in its folder.
                Some((folder, name)) => !engine
                    .read_dir(&id, if folder.is_empty() { "." } else { folder }, name)
                    .await
                    .ok()?
                    .is_empty(),
                None => engine.exists(&id, &path).await.ok()?,
            };
            opts.context_paths.insert(path, present);
        }
        self.compilation.compile(&opts).err()
    }
}

/// Whether an engine's error may be a copy's missing source (BuildKit:
/// `failed to calculate checksum of ref …: "/app": not found`).
fn may_be_missing_source(status: &tonic::Status) -> bool {
    crate::engine::not_found(status) || status.message().contains("not found")
}

/// The digest of the op a definition ends with (the terminal op's input).
fn head_digest(def: &pb::Definition) -> String {
    def.def
        .last()
        .and_then(|bytes| pb::Op::decode(bytes.as_slice()).ok())
        .and_then(|op| op.inputs.into_iter().next())
        .map(|input| input.digest)
        .unwrap_or_default()
}

/// Read the recipe: from a frontend input named like the recipe's local
/// when a forwarding frontend passed one, else from the local itself.
pub async fn read_recipe(
    engine: &Engine,
    opts: &FrontendOptions,
    sessions: &Sessions,
) -> Result<RecipeFile, Failure> {
    let mut definition = None;
    if !opts.dockerfile_local_forced {
        let mut inputs = engine
            .inputs()
            .await
            .map_err(|s| Failure::engine("asking the engine for the frontend's inputs", s))?;
        definition = inputs.remove(&opts.dockerfile_local);
    }
    let definition = definition.unwrap_or_else(|| {
        let mut def = recipe_source(&opts.dockerfile_local, &opts.filename);
        bind_to_session(&mut def, sessions);
        def
    });
    let vertex = head_digest(&definition);
    let where_ = format!(
        "the recipe `{}` in the build's `{}` files",
        opts.filename, opts.dockerfile_local
    );
    let id = engine
        .solve(definition, false, &[])
        .await
        .map_err(|s| Failure::engine(format!("loading {where_}"), s))?;
    let data = engine
        .read_file(&id, &opts.filename)
        .await
        .map_err(|s| Failure::engine(format!("reading {where_} (pass another file with -f)"), s))?;
    if let Some((line, col)) = kiln_compiler::diag::invalid_utf8_position(&data) {
        return Err(Failure::Input(format!(
            "{}:{line}:{col}: {where_} is not UTF-8 text (an invalid byte here)",
            opts.filename
        )));
    }
    let text = String::from_utf8(data)
        .map_err(|e| Failure::Input(format!("{where_} is not UTF-8 text ({e})")))?;
    Ok(RecipeFile {
        name: opts.filename.clone(),
        text,
        vertex,
    })
}

/// Compiler options from the client's options and the engine's caps.
pub fn compile_options(
    opts: &FrontendOptions,
    engine: &Engine,
    default_platform: Option<&Platform>,
) -> Options {
    let platforms = if opts.platforms.is_empty() {
        vec![
            default_platform
                .or(engine.worker_platform.as_ref())
                .cloned()
                .unwrap_or_else(Platform::linux_amd64),
        ]
    } else {
        opts.platforms.clone()
    };
    Options {
        target: opts.target.clone(),
        platforms,
        build_args: opts.build_args.clone(),
        labels: opts.labels.clone(),
        caps: engine.caps.engine_caps(),
        images: BTreeMap::new(),
        platform_images: BTreeMap::new(),
        context_name: opts.context_local.clone(),
        host_network: opts.host_network,
        extra_hosts: opts.extra_hosts.clone(),
        ulimits: opts.ulimits.clone(),
        shm_size: opts.shm_size,
        exclude: Vec::new(),
        context_files: BTreeMap::new(),
        // Not looked up here: the engine reports a missing copy source at
        // its `copy` line when it copies.
        context_paths: BTreeMap::new(),
        context_path_files: Default::default(),
    }
}

type ResolvedImages = BTreeMap<(String, Platform), ResolvedImage>;

/// Resolve every (reference, platform) pair at once.
async fn resolve_images(
    engine: &Engine,
    wanted: Vec<(String, Platform)>,
    opts: &FrontendOptions,
) -> Result<ResolvedImages, (String, Option<Platform>, Failure)> {
    let mut tasks = JoinSet::new();
    for (reference, platform) in wanted {
        let engine = engine.clone();
        let mode = opts.resolve_mode;
        tasks.spawn(async move {
            match engine.resolve_image(&reference, &platform, mode).await {
                Ok(r) => Ok(((reference, platform), r)),
                Err(f) => Err((reference, Some(platform), f)),
            }
        });
    }
    let mut out = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (key, image) = joined.map_err(|e| {
            (
                String::new(),
                None,
                Failure::Internal(format!("resolving base images: {e}")),
            )
        })??;
        out.insert(key, image);
    }
    Ok(out)
}

/// Print warnings to stderr and, where the engine shows them, to the client.
async fn report_warnings(engine: &Engine, recipe: &RecipeFile, warnings: &Diagnostics) {
    // Each platform's plan says the same things about the recipe: once each.
    let mut said = std::collections::BTreeSet::new();
    for d in warnings.warnings() {
        if !said.insert((d.span.offset(), d.span.len(), d.message.clone())) {
            continue;
        }
        let location = warnings.location(d);
        let mut message = format!("{location}: {}", d.message);
        if let Some(help) = &d.help {
            message.push_str(&format!(" ({help})"));
        }
        eprintln!("kiln-frontend: warning: {message}");
        engine
            .warn(
                &recipe.vertex,
                &message,
                Some(failure::source_info(warnings)),
                vec![failure::range(warnings, d)],
            )
            .await;
    }
}

/// `--no-cache`: every op of the definition ignores the build cache.
pub fn ignore_cache(def: &mut pb::Definition) {
    for md in def.metadata.values_mut() {
        md.ignore_cache = true;
        md.caps.insert(llb_cap::IGNORE_CACHE.to_string(), true);
    }
}

/// Fail early, with a clear message, when a graph needs LLB features the
/// engine lacks (the engine would refuse it with a terser one).
fn check_caps(engine: &Engine, def: &pb::Definition) -> Result<(), Failure> {
    let missing = engine.caps.missing_llb(def);
    if missing.is_empty() {
        return Ok(());
    }
    Err(Failure::Unsupported(format!(
        "this BuildKit lacks {} that this build needs; upgrade the engine (BuildKit 0.10+, docker 23+)",
        missing
            .into_iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Solve each platform's image (lazily: the exporter builds it) and its
/// checks (now, so a failing `verify` fails the build), all at once.
async fn solve_builds(
    engine: &Engine,
    builds: Vec<PlatformBuild>,
    opts: &FrontendOptions,
    probe: &CopyProbe,
) -> Result<Vec<PlatformImage>, Failure> {
    let sessions = &probe.sessions;
    let mut tasks = JoinSet::new();
    let count = builds.len();
    for (index, build) in builds.into_iter().enumerate() {
        let mut image = build.definition;
        let mut checks = build.checks;
        let mut copies = build.copies;
        bind_to_session(&mut image, sessions);
        for d in checks.iter_mut().chain(copies.iter_mut()) {
            bind_to_session(d, sessions);
        }
        // Variant names match without regard to case, as `--target` does.
        if opts.no_cache
            || opts
                .no_cache_targets
                .iter()
                .any(|t| t.eq_ignore_ascii_case(&build.plan.variant))
        {
            ignore_cache(&mut image);
            for d in checks.iter_mut().chain(copies.iter_mut()) {
                ignore_cache(d);
            }
        }
        check_caps(engine, &image)?;
        if let Some(c) = &checks {
            check_caps(engine, c)?;
        }
        let config = build.config.to_json();
        let platform = build.platform;
        let cache = opts.cache_imports.clone();

        let e = engine.clone();
        tasks.spawn(async move {
            let id = e
                .solve(image, false, &cache)
                .await
                .map_err(|s| Failure::engine("", s))?;
            Ok::<_, Failure>((
                index,
                Some(PlatformImage {
                    platform,
                    ref_id: id,
                    config,
                }),
            ))
        });
        if let Some(checks) = checks {
            let e = engine.clone();
            let cache = opts.cache_imports.clone();
            tasks.spawn(async move {
                e.solve(checks, true, &cache)
                    .await
                    .map_err(|s| Failure::engine("", s))?;
                Ok((index, None))
            });
        }
        // The copies, evaluated now (the image needs them anyway): the
        // engine would report a missing source at every `copy` line of the
        // op; kiln looks the sources up and names the line.
        if let Some(copies) = copies {
            let e = engine.clone();
            let cache = opts.cache_imports.clone();
            let probe = probe.clone();
            tasks.spawn(async move {
                match e.solve(copies, true, &cache).await {
                    Ok(_) => Ok((index, None)),
                    Err(status) => {
                        if may_be_missing_source(&status)
                            && let Some(diags) = probe.missing_sources(&e).await
                        {
                            return Err(Failure::Recipe(diags));
                        }
                        Err(Failure::engine("", status))
                    }
                }
            });
        }
    }
    let mut images: Vec<Option<PlatformImage>> = vec![None; count];
    while let Some(joined) = tasks.join_next().await {
        let (index, image) = joined.map_err(|e| Failure::Internal(format!("solving: {e}")))??;
        if let Some(image) = image {
            images[index] = Some(image);
        }
    }
    images
        .into_iter()
        .map(|i| {
            i.ok_or_else(|| Failure::Internal("a platform's build was not solved".to_string()))
        })
        .collect()
}

/// The whole run after `Ping`: a result for `Return`, or why not.
pub async fn build(engine: &Engine, env: &Environment) -> Result<gateway::Result, Failure> {
    let opts = FrontendOptions::parse(&env.options)?;
    if let Some(id) = &opts.request_id {
        if id == subrequests::DESCRIBE {
            return subrequests::describe_result();
        }
        if !subrequests::is_supported(id) {
            return Err(subrequests::unsupported(id));
        }
    }

    let sessions = if engine.caps.has_llb(crate::locals::SESSION_CAP) {
        Sessions {
            default: env.session_id.clone(),
            by_local: opts.local_sessions.clone(),
        }
    } else {
        Sessions::default()
    };
    let recipe = read_recipe(engine, &opts, &sessions).await?;
    if !opts.named_contexts.is_empty() {
        // Said where the user sees it: the build does not do what the
        // flag asks (a Dockerfile would swap a `FROM` for it).
        let message = format!(
            "--build-context is not supported by kiln recipes; ignoring {} (set the image with `base`/`builder`, or a build argument in it)",
            opts.named_contexts.join(", ")
        );
        eprintln!("kiln-frontend: warning: {message}");
        engine
            .warn(&recipe.vertex, &message, None, Vec::new())
            .await;
    }
    let compilation = kiln_compiler::load(&recipe.name, &recipe.text).map_err(Failure::Recipe)?;
    let mut copts = compile_options(&opts, engine, env.default_platform.as_ref());
    if let Some(id) = &opts.request_id {
        return subrequests::answer_for(id, &compilation, &copts);
    }

    let wanted = compilation
        .images_to_resolve(&copts)
        .map_err(Failure::Recipe)?;
    let mut with_files = copts.clone();
    let (resolved, ()) = tokio::join!(resolve_images(engine, wanted, &opts), async {
        with_files.exclude = read_ignore(engine, &opts, &sessions).await;
        read_context_files(engine, &compilation, &mut with_files, &sessions).await;
    });
    let several = copts.platforms().len() > 1;
    let resolved = resolved.map_err(|(reference, platform, failure)| match failure {
        // The engine's reason, at the recipe line that chose the image.
        Failure::Engine { status, .. } => {
            let reason = match platform {
                Some(p) if several => format!("for {p}: {}", status.message()),
                _ => status.message().to_string(),
            };
            Failure::Recipe(compilation.unresolvable_image(&copts, &reference, &reason))
        }
        other => other,
    })?;
    copts = with_files;
    copts.images.clear();
    copts.platform_images = resolved;
    // Every platform at once, each plan with its own platform's base
    // image configs.
    let compiled = compilation.compile(&copts).map_err(Failure::Recipe)?;
    report_warnings(engine, &recipe, &compiled.warnings).await;

    let probe = CopyProbe {
        compilation,
        opts: copts,
        sessions,
    };
    let images = solve_builds(engine, compiled.builds, &opts, &probe).await?;
    image_result(&images, opts.multi_platform, &engine.caps)
}

/// Run [`build`] and hand its outcome to the engine with `Return`. A panic
/// in the build is caught and returned as an error too, so the client never
/// sees a frontend that exited without saying why. Returns the process's
/// exit status.
pub async fn serve(client: LlbBridgeClient<Channel>, env: Environment) -> i32 {
    let engine = match Engine::connect(client.clone()).await {
        Ok(engine) => engine,
        Err(failure) => {
            eprintln!("kiln-frontend: {failure}");
            return 1;
        }
    };
    if !engine.caps.has_gateway(gateway_cap::RETURN) {
        eprintln!(
            "kiln-frontend: this engine has no `Return` call (BuildKit before 0.6); kiln needs a newer BuildKit"
        );
        return 1;
    }

    let task = {
        let engine = engine.clone();
        tokio::spawn(async move { build(&engine, &env).await })
    };
    let outcome = match task.await {
        Ok(outcome) => outcome,
        Err(e) => Err(Failure::Internal(format!(
            "kiln-frontend stopped unexpectedly ({e}); this is a bug in kiln, please report it"
        ))),
    };
    if let Err(failure) = &outcome {
        eprintln!("kiln-frontend: {failure}");
    }
    if let Err(status) = engine.finish(&outcome).await {
        eprintln!("kiln-frontend: could not return the result to the engine: {status}");
        return 1;
    }
    i32::from(outcome.is_err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_source_reads_one_file_from_the_dockerfile_local() {
        let def = recipe_source("dockerfile", "env.kdl");
        let head = head_digest(&def);
        assert!(head.starts_with("sha256:"), "{head}");
        let op = pb::Op::decode(def.def[0].as_slice()).expect("op");
        match op.op {
            Some(pb::op::Op::Source(src)) => {
                assert_eq!(src.identifier, "local://dockerfile");
                assert_eq!(src.attrs["local.followpaths"], r#"["env.kdl"]"#);
                assert_eq!(src.attrs["local.sharedkeyhint"], "dockerfile");
            }
            other => panic!("unexpected op {other:?}"),
        }
        assert_eq!(
            def.metadata[&head].description["llb.customname"],
            "[internal] load recipe env.kdl"
        );
    }

    #[test]
    fn no_cache_marks_every_op() {
        let mut def = recipe_source("dockerfile", "env.kdl");
        ignore_cache(&mut def);
        assert!(def.metadata.values().all(|m| m.ignore_cache));
    }
}
