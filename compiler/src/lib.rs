//! kiln's compiler: a KDL recipe for an ML container environment in, a
//! BuildKit LLB `Definition` and an OCI image config out.
//!
//! It is a pipeline of pure passes, one module each: [`recipe`] (text →
//! spanned KDL), [`model`] (typed, validated recipe), [`plan`] (bases, wheels,
//! CUDA, stages and caches resolved for one variant and platform), [`lower`]
//! (the LLB graph, built with [`llb`]) and [`llb::marshal`] (bytes). It does no
//! IO, reads no environment and starts no task: its caller hands it the recipe
//! text, the options, and what the engine answered (capabilities, base image
//! configs). The CLI and the BuildKit frontend are such callers.

pub mod compat;
pub mod diag;
pub mod explain;
pub mod graph;
pub mod ignore;
pub mod image;
pub mod image_ref;
pub mod llb;
pub mod lower;
pub mod model;
pub mod plan;
pub mod recipe;
pub mod requirements;

use std::collections::BTreeMap;

pub use diag::{Diagnostic, Diagnostics, SourceFile};
pub use image::{ImageConfig, ResolvedImage};
pub use llb::Platform;
pub use model::Recipe;

/// What the engine can do, as far as the lowering cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineCaps {
    /// MergeOp and DiffOp (BuildKit 0.10+): independent layers joined at the end.
    pub merge_diff: bool,
    /// Source maps in the Definition, so engine errors show recipe lines.
    pub source_maps: bool,
}

impl EngineCaps {
    /// A current BuildKit.
    pub fn modern() -> Self {
        EngineCaps {
            merge_diff: true,
            source_maps: true,
        }
    }

    /// BuildKit before 0.10 (docker 20.10): no MergeOp/DiffOp.
    pub fn legacy() -> Self {
        EngineCaps {
            merge_diff: false,
            source_maps: true,
        }
    }
}

impl Default for EngineCaps {
    fn default() -> Self {
        EngineCaps::modern()
    }
}

/// Everything a compile depends on besides the recipe text.
#[derive(Debug, Clone)]
pub struct Options {
    /// The variant to build (`--target`); the recipe's default when `None`.
    pub target: Option<String>,
    /// Target platforms; `linux/amd64` when empty.
    pub platforms: Vec<Platform>,
    /// `--build-arg NAME=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// `--label NAME=VALUE` from the build client, applied last.
    pub labels: BTreeMap<String, String>,
    pub caps: EngineCaps,
    /// Base image configs the caller resolved, keyed by the reference as the
    /// plan names it (see [`Compilation::images_to_resolve`]).
    pub images: BTreeMap<String, ResolvedImage>,
    /// Base image configs for one platform each, as an engine resolves
    /// them for a multi-platform build; they come before [`Options::images`]
    /// for the platform they name.
    pub platform_images: BTreeMap<(String, Platform), ResolvedImage>,
    /// Name of the local source holding the build context.
    pub context_name: String,
    /// Run build steps on the host network (the client's `--network=host`,
    /// which BuildKit hands frontends as `force-network-mode=host`).
    pub host_network: bool,
    /// The client's `--add-host NAME=IP`s, in every step's /etc/hosts.
    pub extra_hosts: Vec<(String, String)>,
    /// The client's `--ulimit`s: (name, soft, hard), for every step.
    pub ulimits: Vec<(String, i64, i64)>,
    /// The client's `--shm-size` in bytes: every step's /dev/shm.
    pub shm_size: Option<i64>,
    /// What of the context no build step reads: the context's
    /// `.dockerignore` patterns (see [`ignore::parse`]).
    pub exclude: Vec<String>,
    /// Files of the build context the caller read for the compiler, by
    /// their path in the context (`reqs/prod.txt`): `None` where the
    /// context has no such file (or `.dockerignore` leaves it out). The
    /// compiler asks for them with [`Compilation::context_files_wanted`]:
    /// requirements files, to send the files they include (`-r`, `-c`)
    /// along and to give a lock's pins a layer each. A file not supplied
    /// is taken on trust.
    pub context_files: BTreeMap<String, Option<String>>,
    /// `copy` sources the caller looked up in the build context (see
    /// [`Compilation::context_paths_wanted`]): `false` where the context
    /// has no such file or folder (or `.dockerignore` leaves it out), an
    /// error at the `copy` line. A path not supplied is taken on trust (the
    /// engine then reports it when it copies).
    pub context_paths: BTreeMap<String, bool>,
    /// Those of [`Options::context_paths`] the caller found to be files (a
    /// file copied onto `/` touches no folder of the image).
    pub context_path_files: std::collections::BTreeSet<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: None,
            platforms: Vec::new(),
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            caps: EngineCaps::default(),
            images: BTreeMap::new(),
            platform_images: BTreeMap::new(),
            context_name: "context".to_string(),
            host_network: false,
            extra_hosts: Vec::new(),
            ulimits: Vec::new(),
            shm_size: None,
            exclude: Vec::new(),
            context_files: BTreeMap::new(),
            context_paths: BTreeMap::new(),
            context_path_files: Default::default(),
        }
    }
}

impl Options {
    /// The config (and digest) the caller resolved for `reference`: for
    /// `platform`, else for any.
    pub fn resolved_image(
        &self,
        reference: &image_ref::ImageRef,
        platform: &Platform,
    ) -> Option<&ResolvedImage> {
        let key = reference.to_string();
        self.platform_images
            .get(&(key.clone(), platform.clone()))
            .or_else(|| self.images.get(&key))
    }

    pub fn platforms(&self) -> Vec<Platform> {
        if self.platforms.is_empty() {
            vec![Platform::linux_amd64()]
        } else {
            // `linux/amd64,linux/amd64` is one build.
            let mut out: Vec<Platform> = Vec::new();
            for p in &self.platforms {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
            out
        }
    }
}

/// One platform's build: the Definition the engine solves and the image config.
#[derive(Debug, Clone)]
pub struct PlatformBuild {
    pub platform: Platform,
    pub definition: kiln_proto::pb::Definition,
    /// `definition`, encoded.
    pub bytes: Vec<u8>,
    pub config: ImageConfig,
    /// Checks (`verify`) to solve next to the image; their results are
    /// discarded, a failure fails the build. `None` when the recipe has none.
    pub checks: Option<kiln_proto::pb::Definition>,
    /// The image up to the op of its `copy` lines, to solve on its own:
    /// where that fails, [`Options::context_paths`] from the context tell
    /// which line named a missing source. `None` without `copy` lines.
    pub copies: Option<kiln_proto::pb::Definition>,
    pub plan: plan::Plan,
}

/// Whether a `copy` source is a pattern (`*`, `?`, `[…]`), as the engine
/// takes it.
pub fn is_pattern(src: &str) -> bool {
    src.contains(['*', '?', '['])
}

/// A `copy` pattern whose wildcards are in its last part only, as (the
/// folder it lists, relative to the context, `""` for the root; the last
/// part): `src/*.py` is `("src", "*.py")`. `None` for a plain path or
/// wildcards in a folder.
pub fn copy_pattern(src: &str) -> Option<(&str, &str)> {
    let src = src.trim_end_matches('/');
    let (dir, name) = src.rsplit_once('/').unwrap_or(("", src));
    (is_pattern(name) && !is_pattern(dir)).then_some((dir.trim_start_matches("./"), name))
}

/// The compiled result for one variant on every requested platform.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub variant: String,
    pub builds: Vec<PlatformBuild>,
    /// Warnings (errors never reach here).
    pub warnings: Diagnostics,
}

/// Build arguments kiln reads without an `arg` (labels, reproducible
/// dates).
const CONSUMED_ARGS: &[&str] = &["SOURCE_DATE_EPOCH", "VCS_URL", "VCS_REF"];
/// Build arguments every build may be given (BuildKit's predefined ones).
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
];

/// A loaded recipe, ready to be planned and compiled with options.
#[derive(Debug, Clone)]
pub struct Compilation {
    pub source: SourceFile,
    pub recipe: Recipe,
    pub warnings: Diagnostics,
}

/// Parse and validate a recipe.
pub fn load(filename: &str, text: &str) -> Result<Compilation, Diagnostics> {
    let syntax = recipe::parse(filename, text)?;
    let (recipe, warnings) = model::decode(&syntax)?;
    Ok(Compilation {
        source: syntax.source,
        recipe,
        warnings,
    })
}

impl Compilation {
    /// The declared build arguments' values for this build: `--build-arg`
    /// where given, else the default (with the arguments before it
    /// substituted). An argument with neither, or whose value is in error
    /// (which planning reports), is left out.
    pub fn arg_values(&self, opts: &Options) -> BTreeMap<String, String> {
        plan::arg_values(&self.recipe, opts, None)
    }

    /// Plan the requested variant for every platform.
    pub fn plan(&self, opts: &Options) -> Result<(Vec<plan::Plan>, Diagnostics), Diagnostics> {
        let mut diags = self.warnings.clone();
        let mut plans = Vec::new();
        for platform in opts.platforms() {
            match plan::plan(&self.recipe, &self.source, opts, &platform, &mut diags) {
                Some(p) => plans.push(p),
                None => continue,
            }
        }
        if diags.has_errors() {
            return Err(diags);
        }
        // A `--build-arg` nothing reads is most often a misspelt name.
        let declared: Vec<&str> = self
            .recipe
            .args
            .iter()
            .map(|a| a.name.value.as_str())
            .collect();
        for name in opts.build_args.keys() {
            let known = declared.contains(&name.as_str())
                || name.starts_with("BUILDKIT_")
                || CONSUMED_ARGS.contains(&name.as_str())
                || PROXY_ARGS.contains(&name.to_ascii_uppercase().as_str());
            if !known {
                let help = match diag::nearest(name, declared.iter().copied()) {
                    Some(d) => format!("did you mean `--build-arg {d}=…`?"),
                    None => {
                        format!("declare it with `arg \"{name}\"` and use it as `${{{name}}}`")
                    }
                };
                diags.push(
                    Diagnostic::warning(
                        "kiln::unused_build_arg",
                        miette::SourceSpan::new(0.into(), 0),
                        format!("`--build-arg {name}` is not used: the recipe declares no `arg \"{name}\"`"),
                    )
                    .with_help(help),
                );
            }
        }
        Ok((plans, diags))
    }

    /// The context files to read and put in [`Options::context_files`]
    /// before [`Compilation::compile`]; read them and ask again (a file may
    /// include others) until the answer is empty. Errors end the asking:
    /// compile reports them.
    pub fn context_files_wanted(&self, opts: &Options) -> Vec<String> {
        let Ok((plans, _)) = self.plan(opts) else {
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::new();
        for f in plans.into_iter().flat_map(|p| p.wanted_files) {
            if !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }

    /// The `copy` sources the caller may look up in the build context for
    /// [`Options::context_paths`] (`true` where the context has the path,
    /// or something a pattern matches): plain paths, and patterns with
    /// their wildcards in the last part only ([`copy_pattern`]), of every
    /// variant built, each once; not the whole context.
    pub fn context_paths_wanted(&self, opts: &Options) -> Vec<String> {
        // A recipe that does not plan (a missing requirements file) still
        // has its `copy` lines checked, so one run reports every missing
        // file: those that read no build argument, from every variant.
        let mut out: Vec<String> = Vec::new();
        let copies: Vec<model::Spanned<model::Copy>> = match self.plan(opts) {
            Ok((plans, _)) => {
                // The local projects and archives requirements files name.
                for step in plans.iter().flat_map(|p| &p.pip) {
                    if let plan::PipStep::Requirements { sources, .. } = step {
                        for src in sources {
                            if !out.contains(src) {
                                out.push(src.clone());
                            }
                        }
                    }
                }
                plans.iter().flat_map(|p| p.copies.clone()).collect()
            }
            Err(_) => std::iter::once(&self.recipe.top)
                .chain(self.recipe.variants.iter().map(|v| &v.settings))
                .flat_map(|s| s.copy.iter().cloned())
                .filter(|c| !model::has_arg_ref(&c.value.src))
                .collect(),
        };
        for c in &copies {
            let src = &c.value.src;
            let wanted = !is_pattern(src) || copy_pattern(src).is_some();
            if src != "." && wanted && !out.contains(src) {
                out.push(src.clone());
            }
        }
        out
    }

    /// The base images whose configs the caller should resolve before
    /// [`Compilation::compile`], so the image inherits their environment.
    pub fn images_to_resolve(
        &self,
        opts: &Options,
    ) -> Result<Vec<(String, Platform)>, Diagnostics> {
        let (plans, _) = self.plan(opts)?;
        let mut out: Vec<(String, Platform)> = Vec::new();
        for p in &plans {
            for r in p.base_images() {
                let item = (r.to_string(), p.platform.clone());
                if !out.contains(&item) {
                    out.push(item);
                }
            }
        }
        Ok(out)
    }

    /// An error for a base image the engine could not resolve, at the
    /// recipe line that chose it (`base`, `builder`, or the `python` or
    /// `cuda` a default comes from), with the engine's reason.
    pub fn unresolvable_image(&self, opts: &Options, reference: &str, reason: &str) -> Diagnostics {
        // A base the recipe names is at its line; one kiln chose for the
        // python (`python:3.11-slim`) is at the `python` line.
        let span = self.plan(opts).ok().and_then(|(plans, _)| {
            plans.iter().find_map(|p| {
                [&p.runtime, &p.builder]
                    .into_iter()
                    .find(|b| b.reference.to_string() == reference)
                    .and_then(|b| b.span.or(p.python_span))
                    .or_else(|| {
                        // kiln's miniconda builder: the `conda` line's.
                        p.conda
                            .as_ref()
                            .filter(|_| {
                                crate::image_ref::ImageRef::parse(lower::CONDA_BUILDER)
                                    .is_ok_and(|r| r.to_string() == reference)
                            })
                            .map(|c| c.span)
                    })
            })
        });
        let mut diags = Diagnostics::new(self.source.clone());
        diags.push(
            Diagnostic::error(
                "kiln::unresolvable_image",
                span.unwrap_or_else(|| miette::SourceSpan::new(0.into(), 0)),
                format!("cannot resolve the base image `{reference}`: {reason}"),
            )
            .with_help(
                "check the image's name and tag, that the engine can reach its registry (or has it locally), and your credentials for it",
            ),
        );
        diags
    }

    /// Compile the requested variant for every platform.
    pub fn compile(&self, opts: &Options) -> Result<Compiled, Diagnostics> {
        let (plans, warnings) = self.plan(opts)?;
        let variant = plans.first().map(|p| p.variant.clone()).unwrap_or_default();
        let builds = plans
            .into_iter()
            .map(|p| {
                let lowered = lower::lower(&p, &self.source, opts);
                PlatformBuild {
                    platform: p.platform.clone(),
                    definition: lowered.image.definition,
                    bytes: lowered.image.bytes,
                    config: lowered.config,
                    checks: lowered.checks.map(|c| c.definition),
                    copies: lowered.copies.map(|c| c.definition),
                    plan: p,
                }
            })
            .collect();
        Ok(Compiled {
            variant,
            builds,
            warnings,
        })
    }
}

/// Load and compile in one call.
pub fn compile(filename: &str, text: &str, opts: &Options) -> Result<Compiled, Diagnostics> {
    load(filename, text)?.compile(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_platform_named_twice_is_built_once() {
        let amd = Platform::parse("linux/amd64").expect("platform");
        let arm = Platform::parse("linux/arm64").expect("platform");
        let opts = Options {
            platforms: vec![amd.clone(), arm.clone(), amd.clone()],
            ..Options::default()
        };
        assert_eq!(opts.platforms(), [amd, arm]);
    }
}
