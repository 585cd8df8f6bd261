//! `kiln`: the command line over the compiler.
//!
//! `compile` writes the LLB Definition exactly as `buildctl build` reads it on
//! stdin; `check`, `explain` and `graph` are for people. The CLI talks to no
//! engine: base image configs are not resolved here (the frontend does that),
//! so `--base-config REF=FILE` can hand one in where it matters.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kiln_compiler::{
    Compilation, Diagnostics, EngineCaps, ImageConfig, Options, Platform, ResolvedImage,
};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Compile ML environment recipes into BuildKit LLB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the LLB Definition to stdout (pipe it to `buildctl build`).
    Compile {
        #[command(flatten)]
        build: BuildArgs,
        /// `llb`: protobuf bytes as buildctl reads them; `json`: readable.
        #[arg(long, value_enum, default_value_t = Format::Llb)]
        format: Format,
        /// Also write the image config (OCI JSON) to this file.
        #[arg(long, value_name = "FILE")]
        config_out: Option<PathBuf>,
        /// Write the checks graph (`verify` steps) instead of the image graph.
        #[arg(long)]
        checks: bool,
    },
    /// Report every problem in a recipe; exit 1 when there are errors.
    Check {
        #[command(flatten)]
        build: BuildArgs,
        /// Check every variant even when `--target` names one (without
        /// `--target`, every variant is checked).
        #[arg(long)]
        all_variants: bool,
    },
    /// Describe the resolved plan: bases, python, CUDA, indexes, stages, caches.
    Explain {
        #[command(flatten)]
        build: BuildArgs,
    },
    /// Write the LLB graph as Graphviz DOT.
    Graph {
        #[command(flatten)]
        build: BuildArgs,
    },
}

#[derive(Args)]
struct BuildArgs {
    /// The recipe file (`-` for stdin).
    recipe: PathBuf,
    /// The variant to build; the recipe's default when left out.
    #[arg(long)]
    target: Option<String>,
    /// Target platform(s), comma separated or repeated: linux/amd64,linux/arm64.
    #[arg(long, value_delimiter = ',')]
    platform: Vec<String>,
    /// A build argument, NAME=VALUE (repeatable).
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    build_arg: Vec<String>,
    /// An image label, NAME=VALUE (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    label: Vec<String>,
    /// Compile for an engine without MergeOp/DiffOp (BuildKit < 0.10).
    #[arg(long)]
    no_merge: bool,
    /// The local source name of the build context (`--local NAME=dir`).
    #[arg(long, default_value = "context")]
    context_name: String,
    /// Run build steps on the host network (engines started without a bridge).
    #[arg(long)]
    network_host: bool,
    /// A base image's OCI config JSON, as `REF=FILE`, so the image inherits it.
    #[arg(long, value_name = "REF=FILE")]
    base_config: Vec<String>,
    /// The build context directory, read for its `.dockerignore` (the
    /// recipe's `<recipe>.dockerignore` next to it comes first); default:
    /// the recipe's directory.
    #[arg(long, value_name = "DIR")]
    context: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Llb,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Print diagnostics (errors and warnings) with miette's renderer.
fn report(diags: &Diagnostics) {
    if diags.items.is_empty() {
        return;
    }
    let handler = miette::GraphicalReportHandler::new_themed(
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        },
    );
    let mut out = String::new();
    let r = diags.report();
    if handler.render_report(&mut out, &r).is_ok() {
        eprint!("{out}");
    } else {
        eprint!("{}", diags.render_plain());
    }
}

fn read_recipe(path: &Path) -> Result<(String, String)> {
    let limit = kiln_compiler::recipe::MAX_RECIPE_BYTES;
    let from_stdin = path == Path::new("-");
    let shown = if from_stdin {
        "the recipe on stdin".to_string()
    } else {
        path.display().to_string()
    };
    // At most one byte over the limit (a pipe or /dev/zero never ends):
    // enough to know the input is too large.
    let mut bytes = Vec::new();
    let read = if from_stdin {
        std::io::Read::read_to_end(
            &mut std::io::Read::take(std::io::stdin(), limit as u64 + 1),
            &mut bytes,
        )
    } else {
        std::fs::File::open(path).and_then(|f| {
            std::io::Read::read_to_end(&mut std::io::Read::take(f, limit as u64 + 1), &mut bytes)
        })
    };
    read.with_context(|| format!("reading {shown}"))?;
    if bytes.len() > limit {
        bail!(
            "{shown} is over {limit} bytes; a recipe is at most {limit} bytes (is this the right file?)"
        );
    }
    let path = if from_stdin {
        Path::new("<stdin>")
    } else {
        path
    };
    if let Some((line, col)) = kiln_compiler::diag::invalid_utf8_position(&bytes) {
        bail!(
            "{}:{line}:{col}: not UTF-8 text (an invalid byte here); a recipe is a KDL text file",
            path.display()
        );
    }
    let text = String::from_utf8(bytes).context("reading the recipe")?;
    Ok((path.display().to_string(), text))
}

fn key_values(items: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let Some((k, v)) = item.split_once('=') else {
            bail!("{what} `{item}` is not NAME=VALUE");
        };
        if k.is_empty() {
            bail!("{what} `{item}` has an empty name");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// A `--base-config` for an image no variant of the recipe uses is most
/// often a reference written differently from the recipe's; say so.
fn warn_unused_base_configs(c: &kiln_compiler::Compilation, opts: &Options, b: &BuildArgs) {
    if b.base_config.is_empty() {
        return;
    }
    let mut targets: Vec<Option<String>> = vec![None];
    targets.extend(c.recipe.variants.iter().map(|v| Some(v.name.value.clone())));
    let mut used: Vec<String> = Vec::new();
    for t in targets {
        let o = Options {
            target: t,
            ..opts.clone()
        };
        if let Ok(images) = c.images_to_resolve(&o) {
            used.extend(images.into_iter().map(|(r, _)| r));
        }
    }
    for (reference, _) in key_values(&b.base_config, "--base-config").unwrap_or_default() {
        let Ok(r) = kiln_compiler::image_ref::ImageRef::parse(&reference) else {
            continue;
        };
        let mut by_tag = r.clone();
        by_tag.digest = None;
        if !used.contains(&r.to_string()) && !used.contains(&by_tag.to_string()) {
            used.sort();
            used.dedup();
            eprintln!(
                "kiln: warning: --base-config {reference}: the recipe uses no such image (it uses {})",
                used.join(", ")
            );
        }
    }
}

fn options(b: &BuildArgs) -> Result<Options> {
    if !b.platform.is_empty() && b.platform.iter().all(|p| p.trim().is_empty()) {
        bail!("--platform names no platform; write e.g. --platform linux/amd64");
    }
    if b.context_name.is_empty()
        || !b
            .context_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        bail!(
            "--context-name {:?}: a local source name is letters, digits, `.`, `_` and `-` (buildctl's `--local NAME=DIR`)",
            b.context_name
        );
    }
    if let Some(dir) = &b.context
        && !dir.is_dir()
    {
        bail!("--context {}: not a directory", dir.display());
    }
    let mut platforms = Vec::new();
    for p in b.platform.iter().filter(|p| !p.trim().is_empty()) {
        platforms.push(Platform::parse(p).map_err(|e| anyhow::anyhow!("--platform {p}: {e}"))?);
    }
    let mut images = BTreeMap::new();
    for (reference, file) in key_values(&b.base_config, "--base-config")? {
        let r = kiln_compiler::image_ref::ImageRef::parse(&reference)
            .map_err(|e| anyhow::anyhow!("--base-config {reference}: {e}"))?;
        let bytes = std::fs::read(&file).with_context(|| format!("reading {file}"))?;
        let config = ImageConfig::from_json(&bytes)
            .with_context(|| format!("{file} is not an OCI image config"))?;
        let resolved = ResolvedImage {
            digest: r.digest.clone(),
            config,
        };
        // The compiler looks a base up by the reference the recipe writes
        // (`python:3.11-slim`); `REF:TAG@sha256:…` also answers for that tag
        // and pins the digest, as the frontend's resolution does.
        if r.tag.is_some() && r.digest.is_some() {
            let mut by_tag = r.clone();
            by_tag.digest = None;
            images.insert(by_tag.to_string(), resolved.clone());
        }
        images.insert(r.to_string(), resolved);
    }
    Ok(Options {
        target: b.target.clone(),
        platforms,
        build_args: key_values(&b.build_arg, "--build-arg")?,
        labels: key_values(&b.label, "--label")?,
        caps: if b.no_merge {
            EngineCaps::legacy()
        } else {
            EngineCaps::modern()
        },
        images,
        context_name: b.context_name.clone(),
        host_network: b.network_host,
        exclude: ignore_patterns(b)?,
        context_files: BTreeMap::new(),
        ..Options::default()
    })
}

/// The build context directory: `--context`, else the recipe's directory
/// (the working directory for a recipe from stdin).
fn context_dir(b: &BuildArgs) -> PathBuf {
    match &b.context {
        Some(c) => c.clone(),
        None if b.recipe.as_os_str() == "-" => PathBuf::from("."),
        None => b
            .recipe
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default(),
    }
}

/// The most rounds of requirements includes followed (see the frontend's).
const MAX_INCLUDE_ROUNDS: usize = 32;
/// A requirements file kiln reads is at most this large (see the frontend's).
const MAX_CONTEXT_FILE: u64 = 4 << 20;

/// Read the context files the compiler asks for (requirements files and
/// what they include) from the context directory, as the frontend reads
/// them from the build's context, `.dockerignore` applied.
fn read_context_files(c: &Compilation, opts: &mut Options, b: &BuildArgs) -> Result<()> {
    let dir = context_dir(b);
    let ignored = |file: &str| kiln_compiler::ignore::excluded(&opts.exclude, file);
    for _ in 0..MAX_INCLUDE_ROUNDS {
        let wanted = c.context_files_wanted(opts);
        if wanted.is_empty() {
            break;
        }
        for file in wanted {
            // What .dockerignore leaves out, the engine never sends.
            if ignored(&file) {
                opts.context_files.insert(file, None);
                continue;
            }
            // Symbolic links resolve inside the context, as the engine
            // resolves them in the context it was sent: a link that leads
            // out of it finds nothing there.
            let Some(path) = resolve_in_context(&dir, &file)? else {
                opts.context_files.insert(file, None);
                continue;
            };
            let text = match std::fs::metadata(&path) {
                // Too large to read here (as in the frontend): pip reads it;
                // no includes are followed and it is not taken for a lock.
                Ok(m) if m.is_file() && m.len() > MAX_CONTEXT_FILE => Some(String::new()),
                Ok(m) if m.is_file() => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
                Ok(_) => None,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) =>
                {
                    None
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            opts.context_files.insert(file, text);
        }
    }
    Ok(())
}

/// Look up the `copy` sources in the context directory, so `check` and the
/// other commands report a missing one at its line (the engine would only
/// fail the copy). A path `.dockerignore` leaves out counts as missing where
/// no `!` pattern could bring it back.
fn look_up_copy_sources(c: &Compilation, opts: &mut Options, b: &BuildArgs) -> Result<()> {
    let dir = context_dir(b);
    let reincludes = opts.exclude.iter().any(|p| p.starts_with('!'));
    for src in c.context_paths_wanted(opts) {
        if let Some((folder, _)) = kiln_compiler::copy_pattern(&src) {
            // A pattern: something in its folder that it matches and that
            // .dockerignore does not leave out.
            let folder_path = if folder.is_empty() {
                Some(if dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    dir.clone()
                })
            } else {
                resolve_in_context(&dir, folder)?
            };
            let present = match folder_path {
                Some(path) => std::fs::read_dir(&path).is_ok_and(|entries| {
                    entries.flatten().any(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let rel = if folder.is_empty() {
                            name
                        } else {
                            format!("{folder}/{name}")
                        };
                        kiln_compiler::ignore::excluded(std::slice::from_ref(&src), &rel)
                            && !kiln_compiler::ignore::excluded(&opts.exclude, &rel)
                    })
                }),
                None => false,
            };
            opts.context_paths.insert(src, present);
            continue;
        }
        let present = match resolve_in_context(&dir, &src)? {
            None => false,
            Some(path) => match path.symlink_metadata() {
                Err(_) => false,
                // Left out by .dockerignore: a file is gone; a folder may
                // still be sent for what a `!` pattern takes back in it.
                Ok(meta) if kiln_compiler::ignore::excluded(&opts.exclude, &src) => {
                    reincludes && meta.is_dir()
                }
                Ok(_) => {
                    if path.metadata().is_ok_and(|m| m.is_file()) {
                        opts.context_path_files.insert(src.clone());
                    }
                    true
                }
            },
        };
        opts.context_paths.insert(src, present);
    }
    Ok(())
}

/// Where `file` (a context-relative path) is in the context directory
/// `dir`, following symbolic links the way the engine follows them in a
/// build's context: an absolute link target starts again at the context's
/// root and `..` stops there, so no path leaves the context. `None` when a
/// link loops or a component is missing (the file is then not in the
/// context, as the engine would find).
fn resolve_in_context(dir: &Path, file: &str) -> Result<Option<PathBuf>> {
    use std::path::Component;
    // Components still to walk, last first, and the resolved part so far.
    let mut todo: Vec<std::ffi::OsString> = Path::new(file)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        resolved.push(part);
        let here: PathBuf = std::iter::once(dir.as_os_str())
            .chain(resolved.iter().map(|p| p.as_os_str()))
            .collect();
        let meta = match std::fs::symlink_metadata(&here) {
            Ok(m) => m,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", here.display())),
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > 40 {
            return Ok(None);
        }
        let target = std::fs::read_link(&here)
            .with_context(|| format!("reading the link {}", here.display()))?;
        resolved.pop();
        if target.is_absolute() {
            resolved.clear();
        }
        for c in target.components().rev() {
            match c {
                Component::Normal(n) => todo.push(n.to_os_string()),
                Component::ParentDir => todo.push("..".into()),
                _ => {}
            }
        }
    }
    Ok(Some(
        std::iter::once(dir.as_os_str())
            .chain(resolved.iter().map(|p| p.as_os_str()))
            .collect(),
    ))
}

/// The patterns of the ignore file a build of this recipe would use, as the
/// frontend finds it: `<recipe>.dockerignore` beside the recipe, else the
/// context's `.dockerignore`.
fn ignore_patterns(b: &BuildArgs) -> Result<Vec<String>> {
    let from_stdin = b.recipe.as_os_str() == "-";
    let recipe_dir = || {
        b.recipe
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default()
    };
    let mut candidates = Vec::new();
    if !from_stdin && let Some(name) = b.recipe.file_name() {
        let mut beside = name.to_os_string();
        beside.push(".dockerignore");
        candidates.push(recipe_dir().join(beside));
    }
    candidates.push(context_dir(b).join(".dockerignore"));
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) => {
                return Ok(kiln_compiler::ignore::parse(&String::from_utf8_lossy(
                    &bytes,
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(Vec::new())
}

/// Load the recipe; `None` when it has errors (reported on stderr).
fn load(b: &BuildArgs) -> Result<Option<Compilation>> {
    let (name, text) = read_recipe(&b.recipe)?;
    Ok(match kiln_compiler::load(&name, &text) {
        Ok(c) => Some(c),
        Err(d) => {
            report(&d);
            None
        }
    })
}

/// Write `bytes` to stdout in one go: nothing half-written on error.
fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).context("writing to stdout")?;
    out.flush().context("writing to stdout")
}

/// Write a file through a temporary sibling, so a failure leaves no partial file.
/// Write an output file whole or not at all: a regular file (or a new one)
/// is written next to itself and renamed into place; a symlink is followed;
/// a FIFO, a device (`/dev/stdout`) or a process substitution is written
/// through, since replacing it would break whoever reads it.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let target = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(_) => path.to_path_buf(),
    };
    match std::fs::metadata(&target) {
        Ok(m) if m.is_dir() => bail!("{} is a directory", path.display()),
        Ok(m) if !m.is_file() => {
            return std::fs::write(&target, bytes)
                .with_context(|| format!("writing {}", path.display()));
        }
        _ => {}
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = target.with_file_name(format!(".{name}.{}.kiln-tmp", std::process::id()));
    let written = std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, &target))
        .with_context(|| format!("writing {}", path.display()));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Compile {
            build,
            format,
            config_out,
            checks,
        } => {
            let mut opts = options(&build)?;
            if let Some(path) = &config_out
                && build.recipe.as_os_str() != "-"
                && std::fs::canonicalize(path)
                    .ok()
                    .is_some_and(|p| std::fs::canonicalize(&build.recipe).is_ok_and(|r| r == p))
            {
                bail!(
                    "--config-out {} is the recipe itself; name another file",
                    path.display()
                );
            }
            let Some(c) = load(&build)? else {
                return Ok(ExitCode::FAILURE);
            };
            warn_unused_base_configs(&c, &opts, &build);
            read_context_files(&c, &mut opts, &build)?;
            look_up_copy_sources(&c, &mut opts, &build)?;
            let compiled = match c.compile(&opts) {
                Ok(x) => x,
                Err(d) => {
                    report(&d);
                    return Ok(ExitCode::FAILURE);
                }
            };
            report(&compiled.warnings);
            if format == Format::Llb && compiled.builds.len() != 1 {
                bail!(
                    "`--format llb` writes one Definition, for one platform; got {} platforms (use --format json, or one --platform)",
                    compiled.builds.len()
                );
            }
            let mut output = Vec::new();
            match format {
                Format::Llb => {
                    let b = &compiled.builds[0];
                    if checks {
                        let Some(def) = &b.checks else {
                            bail!("the recipe has no `verify` checks for this variant");
                        };
                        output = prost::Message::encode_to_vec(def);
                    } else {
                        output.clone_from(&b.bytes);
                        if b.checks.is_some() {
                            // The frontend solves both graphs; a caller of
                            // raw LLB must build the checks itself.
                            eprintln!(
                                "kiln: note: the recipe's `verify` checks are not in this graph, which is the image's: build `kiln compile --checks` too (with the same --local and --secret), or the image is exported unchecked"
                            );
                        }
                    }
                }
                Format::Json => {
                    if checks && compiled.builds.iter().all(|b| b.checks.is_none()) {
                        bail!("the recipe has no `verify` checks for this variant");
                    }
                    let mut all = Vec::new();
                    for b in &compiled.builds {
                        let def = if checks {
                            b.checks.as_ref()
                        } else {
                            Some(&b.definition)
                        };
                        all.push(serde_json::json!({
                            "variant": compiled.variant,
                            "platform": b.platform.to_string(),
                            "definition": def.map(kiln_compiler::llb::definition_json),
                            "config": serde_json::from_slice::<serde_json::Value>(&b.config.to_json())?,
                        }));
                    }
                    let v = if all.len() == 1 {
                        all.remove(0)
                    } else {
                        serde_json::Value::Array(all)
                    };
                    output = serde_json::to_vec_pretty(&v)?;
                    output.push(b'\n');
                }
            }
            if let Some(path) = &config_out {
                let json = match compiled.builds.as_slice() {
                    [one] => one.config.to_json(),
                    many => {
                        let map: BTreeMap<String, serde_json::Value> = many
                            .iter()
                            .map(|b| {
                                let v = serde_json::from_slice(&b.config.to_json())
                                    .unwrap_or(serde_json::Value::Null);
                                (b.platform.to_string(), v)
                            })
                            .collect();
                        serde_json::to_vec(&map)?
                    }
                };
                // After the LLB: a run that could not write it leaves no
                // config behind for a next step to pick up.
                write_stdout(&output)?;
                write_file(path, &json)?;
            } else {
                write_stdout(&output)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            build,
            all_variants,
        } => {
            let mut opts = options(&build)?;
            let Some(c) = load(&build)? else {
                return Ok(ExitCode::FAILURE);
            };
            warn_unused_base_configs(&c, &opts, &build);
            read_context_files(&c, &mut opts, &build)?;
            look_up_copy_sources(&c, &mut opts, &build)?;
            // Every variant, unless `--target` names one: a broken gpu
            // variant must not pass because cpu is the default.
            let mut targets: Vec<Option<String>> = vec![opts.target.clone()];
            if (all_variants || opts.target.is_none()) && !c.recipe.variants.is_empty() {
                targets = c
                    .recipe
                    .variants
                    .iter()
                    .map(|v| Some(v.name.value.clone()))
                    .collect();
            }
            let many = targets.len() > 1;
            let mut failed = false;
            // Each problem once, with the variants it concerns when that is
            // not all of them.
            let mut found: Vec<(kiln_compiler::diag::Diagnostic, Vec<String>)> = Vec::new();
            // Where each problem is in `found` (thousands of warnings stay
            // linear).
            type Key = (&'static str, bool, String, usize, usize);
            let mut index: std::collections::HashMap<Key, usize> = Default::default();
            let mut oks = Vec::new();
            let mut add = |d: &kiln_compiler::diag::Diagnostic, variant: &str| {
                let key = (
                    d.code,
                    d.is_error(),
                    d.message.clone(),
                    d.span.offset(),
                    d.span.len(),
                );
                match index.get(&key) {
                    Some(&at) => found[at].1.push(variant.to_string()),
                    None => {
                        index.insert(key, found.len());
                        found.push((d.clone(), vec![variant.to_string()]));
                    }
                }
            };
            for t in &targets {
                let mut o = Options {
                    target: t.clone(),
                    ..opts.clone()
                };
                read_context_files(&c, &mut o, &build)?;
                look_up_copy_sources(&c, &mut o, &build)?;
                let name = t.clone().unwrap_or_else(|| "default".to_string());
                match c.compile(&o) {
                    Ok(compiled) => {
                        compiled.warnings.items.iter().for_each(|d| add(d, &name));
                        oks.push(format!(
                            "{}: variant {} ok ({})",
                            c.source.name,
                            compiled.variant,
                            compiled
                                .builds
                                .iter()
                                .map(|b| b.platform.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    Err(d) => {
                        d.items.iter().for_each(|x| add(x, &name));
                        failed = true;
                    }
                }
            }
            let mut all = kiln_compiler::diag::Diagnostics::new(c.source.clone());
            for (mut d, vs) in found {
                if many && vs.len() < targets.len() {
                    let which = if vs.len() == 1 { "variant" } else { "variants" };
                    d.message = format!("[{which} {}] {}", vs.join(", "), d.message);
                }
                all.push(d);
            }
            report(&all);
            for ok in oks {
                eprintln!("{ok}");
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Explain { build } => {
            let mut opts = options(&build)?;
            let Some(c) = load(&build)? else {
                return Ok(ExitCode::FAILURE);
            };
            warn_unused_base_configs(&c, &opts, &build);
            read_context_files(&c, &mut opts, &build)?;
            look_up_copy_sources(&c, &mut opts, &build)?;
            match c.plan(&opts) {
                Ok((plans, warnings)) => {
                    report(&warnings);
                    let text: Vec<String> =
                        plans.iter().map(kiln_compiler::explain::explain).collect();
                    write_stdout(text.join("\n").as_bytes())?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(d) => {
                    report(&d);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Graph { build } => {
            let mut opts = options(&build)?;
            let Some(c) = load(&build)? else {
                return Ok(ExitCode::FAILURE);
            };
            warn_unused_base_configs(&c, &opts, &build);
            read_context_files(&c, &mut opts, &build)?;
            look_up_copy_sources(&c, &mut opts, &build)?;
            match c.compile(&opts) {
                Ok(compiled) => {
                    report(&compiled.warnings);
                    let mut out = String::new();
                    for b in &compiled.builds {
                        out.push_str(&kiln_compiler::graph::dot(
                            &b.definition,
                            &format!("{} {}", compiled.variant, b.platform),
                        ));
                    }
                    write_stdout(out.as_bytes())?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(d) => {
                    report(&d);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
