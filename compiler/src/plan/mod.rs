//! Pass 3: the resolved plan for one variant on one platform.
//!
//! Here the recipe's "what" becomes kiln's "how": which base and builder
//! images, whether python comes from the base or the distro, which wheel
//! index and extras serve the framework for the requested CUDA, how pip steps
//! are split into layers, what goes into the image config. Every choice keeps
//! a line of "why" for `kiln explain`. Compatibility facts come from
//! [`crate::compat`]; nothing here hard-codes a version.

mod base;
mod framework;

use std::collections::BTreeMap;

use miette::SourceSpan;

use crate::Options;
use crate::diag::{Diagnostic, Diagnostics, SourceFile, nearest};
use crate::image::{ImageConfig, ResolvedImage};
use crate::image_ref::ImageRef;
use crate::llb::Platform;
use crate::model::{self, CudaFrom, Installer, Recipe, Settings, Spanned, Stage};

pub use framework::FrameworkPlan;

/// Where the venv lives, in the builder and in the image.
pub const VENV: &str = "/opt/venv";
/// Default PATH when a base image's config is not known.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A base image choice.
#[derive(Debug, Clone)]
pub struct Base {
    /// As written or chosen (what the caller resolves).
    pub reference: ImageRef,
    /// Why this image.
    pub why: String,
    pub span: Option<SourceSpan>,
    /// The engine's answer for it, when the caller resolved it.
    pub resolved: Option<ResolvedImage>,
    /// The base has no python of its own: the distro's is installed.
    pub python_from_apt: bool,
}

impl Base {
    /// The reference to put in the LLB: pinned to the resolved digest.
    pub fn pinned(&self) -> ImageRef {
        match self.resolved.as_ref().and_then(|r| r.digest.as_deref()) {
            Some(d) if self.reference.digest.is_none() => self.reference.with_digest(d),
            _ => self.reference.clone(),
        }
    }

    /// The base's environment, or a default PATH when unresolved.
    pub fn env(&self) -> Vec<(String, String)> {
        match &self.resolved {
            Some(r) if !r.config.config.env.is_empty() => r.config.env_pairs(),
            _ => vec![("PATH".to_string(), DEFAULT_PATH.to_string())],
        }
    }
}

/// A pip (or uv) install step.
#[derive(Debug, Clone)]
pub enum PipStep {
    /// One exactly pinned package, installed alone with `--no-deps`, kept as
    /// its own layer (needs MergeOp/DiffOp).
    Package {
        spec: String,
        span: SourceSpan,
        /// `--hash` values from a hashed lock (pip then checks them).
        hashes: Vec<String>,
        /// The lock file the pin comes from; `None` for a recipe pin.
        lock: Option<String>,
        /// Its line in that file.
        lock_line: Option<usize>,
    },
    /// Requirements installed together, with their dependencies.
    Group {
        specs: Vec<String>,
        span: SourceSpan,
        /// Every `pip` line the specs come from (`span` is the first).
        spans: Vec<SourceSpan>,
    },
    /// A requirements file from the context, bind-mounted with the files
    /// it includes (`-r`, `-c`), when the caller read them.
    Requirements {
        path: String,
        includes: Vec<String>,
        /// The context paths its lines install from or find archives in
        /// (`.`, `./libs/tool`, `-f wheels`; `""` is the whole context):
        /// pip reads them relative to the context's root folder, where the
        /// install step then runs.
        sources: Vec<String>,
        span: SourceSpan,
    },
}

impl PipStep {
    pub fn span(&self) -> SourceSpan {
        match self {
            PipStep::Package { span, .. }
            | PipStep::Group { span, .. }
            | PipStep::Requirements { span, .. } => *span,
        }
    }

    /// Every recipe line the step installs for.
    pub fn spans(&self) -> Vec<SourceSpan> {
        match self {
            PipStep::Group { spans, .. } => spans.clone(),
            _ => vec![self.span()],
        }
    }
}

/// The distinct spans of `items`, in order.
fn distinct_spans(items: &[(String, SourceSpan)]) -> Vec<SourceSpan> {
    let mut out: Vec<SourceSpan> = Vec::new();
    for (_, s) in items {
        if !out.contains(s) {
            out.push(*s);
        }
    }
    out
}

/// How the venv's packages become layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layering {
    /// One layer per pinned package, merged (MergeOp + DiffOp).
    PerPackage,
    /// One step per group, sequential (engines without MergeOp).
    Grouped,
}

/// An extra package index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub url: String,
    /// Build secret holding a netrc file with the index's credentials.
    pub secret: Option<String>,
    /// Pip's `--index-url`, in PyPI's place (else an extra index).
    pub default: bool,
}

/// GPU facts of a variant.
#[derive(Debug, Clone)]
pub struct Gpu {
    pub cuda: String,
    pub cudnn: Option<String>,
    pub from: CudaFrom,
    /// The `cuda` node.
    pub span: SourceSpan,
    /// Its `cudnn=` value, else the node.
    pub cudnn_span: SourceSpan,
}

/// Everything lowering needs for one variant on one platform.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Context files planning wanted to read and the caller had not
    /// supplied (see [`Options::context_files`]).
    pub wanted_files: Vec<String>,
    pub variant: String,
    pub description: Option<String>,
    /// Several platforms are built: op names carry the platform.
    pub multi_platform: bool,
    pub platform: Platform,
    pub name: Option<String>,
    pub python: String,
    /// The recipe's `python` line (the venv's step points at it).
    pub python_span: Option<SourceSpan>,
    pub runtime: Base,
    pub builder: Base,
    pub gpu: Option<Gpu>,
    pub installer: Installer,
    pub framework: Option<FrameworkPlan>,
    pub apt_runtime: Vec<Spanned<Vec<String>>>,
    pub apt_build: Vec<Spanned<Vec<String>>>,
    pub pip: Vec<PipStep>,
    pub layering: Layering,
    pub indexes: Vec<Index>,
    pub ca_bundle: Option<String>,
    pub conda: Option<Spanned<String>>,
    pub user: Option<Spanned<model::User>>,
    pub workdir: Option<String>,
    /// Where the recipe sets `workdir` (the op that makes it points there).
    pub workdir_span: Option<SourceSpan>,
    pub copies: Vec<Spanned<model::Copy>>,
    pub runs: Vec<Spanned<model::Run>>,
    pub verify: Vec<Spanned<crate::model::Verify>>,
    pub config: ImageConfig,
    /// Lines for `kiln explain`: what was chosen and why.
    pub notes: Vec<String>,
}

impl Plan {
    /// Images the caller should resolve (configs, digests).
    pub fn base_images(&self) -> Vec<ImageRef> {
        let mut v = vec![self.runtime.reference.clone()];
        if let Some(conda) = self.conda_builder() {
            v.push(conda);
        } else if self.builder.reference != self.runtime.reference {
            v.push(self.builder.reference.clone());
        }
        v
    }

    /// kiln's miniconda builder, for a `conda` recipe that names no
    /// `builder`.
    pub fn conda_builder(&self) -> Option<ImageRef> {
        if self.conda.is_none() || self.builder.span.is_some() {
            return None;
        }
        ImageRef::parse(crate::lower::CONDA_BUILDER).ok()
    }

    /// The prefix of op names: `[gpu]`, `[gpu linux/arm64]`.
    pub fn tag(&self) -> String {
        if self.multi_platform {
            format!("[{} {}]", self.variant, self.platform)
        } else {
            format!("[{}]", self.variant)
        }
    }
}

/// Plan the requested variant for `platform`. Problems go to `diags`;
/// `None` when there were errors.
pub fn plan(
    recipe: &Recipe,
    source: &SourceFile,
    opts: &Options,
    platform: &Platform,
    diags: &mut Diagnostics,
) -> Option<Plan> {
    let errors_before = diags.errors().count();
    let (variant_name, description, settings) = select_variant(recipe, opts, diags)?;
    let settings = substitute_args(recipe, &settings, opts, diags);
    let mut notes = Vec::new();
    let whole = SourceSpan::new(0.into(), 0);

    let python = match &settings.python {
        Some(p) => p.value.clone(),
        None => {
            // At the variant that lacks it, when others have one.
            let span = recipe
                .variants
                .iter()
                .find(|v| v.name.value == variant_name)
                .filter(|_| recipe.variants.iter().any(|v| v.settings.python.is_some()))
                .map_or(whole, |v| v.name.span);
            let d = Diagnostic::error(
                "kiln::missing_python",
                span,
                "the recipe does not say which python to use",
            )
            .with_help("add `python \"3.11\"` near the top");
            diags.push(d);
            return None;
        }
    };
    // An invalid python (reported where it was read or substituted) would
    // only add follow-on errors about wheels for it.
    if !model::is_version(&python, 2) || !model::python_supported(&python) {
        return None;
    }
    if platform.os != "linux" {
        diags.push(
            Diagnostic::error(
                "kiln::unsupported_platform",
                whole,
                format!("kiln builds Linux images; {platform} is not a Linux platform"),
            )
            .with_help("build for linux/amd64 or linux/arm64"),
        );
        return None;
    }
    {
        let data = crate::compat::CompatData::builtin();
        let mm: String = python.split('.').take(2).collect::<Vec<_>>().join(".");
        let known = data.pythons();
        if settings.base.is_none()
            && settings.conda.is_none()
            && data.slim_image(&mm).is_none()
            && let (Some(p), Some(newest)) = (&settings.python, known.last())
        {
            diags.push(
                Diagnostic::warning(
                    "kiln::unknown_python",
                    p.span,
                    format!(
                        "kiln knows python images up to {newest}; python:{mm}-slim may not exist"
                    ),
                )
                .with_help(format!("python versions kiln knows: {}", known.join(", "))),
            );
        }
    }

    let gpu = settings.cuda.as_ref().map(|c| Gpu {
        cuda: c.value.version.clone(),
        cudnn: c.value.cudnn.clone(),
        from: c.value.from,
        span: c.span,
        cudnn_span: c.value.cudnn_span.unwrap_or(c.span),
    });

    let framework = match &settings.framework {
        // An invalid version was reported where it was read or substituted.
        Some(f)
            if f.value
                .version
                .as_ref()
                .is_some_and(|v| !model::is_version(v, 1)) =>
        {
            None
        }
        // Wheels are built per python minor release (`3.11.4` is 3.11's).
        Some(f) => framework::resolve(
            f,
            &python.split('.').take(2).collect::<Vec<_>>().join("."),
            gpu.as_ref(),
            platform,
            &settings,
            diags,
            &mut notes,
        ),
        None => None,
    };

    let (runtime, builder) = base::choose(
        &settings,
        &python,
        gpu.as_ref(),
        opts,
        platform,
        diags,
        &mut notes,
    )?;

    // A GPU variant on the slim base with no framework: nothing brings the
    // CUDA libraries unless the recipe's own requirements do.
    if let Some(g) = &gpu
        && g.from == CudaFrom::Wheels
        && settings.framework.is_none()
        && settings.base.is_none()
        && !settings.pip.iter().any(|p| match &p.value {
            model::Pip::Packages(specs) => specs
                .iter()
                .any(|s| model::requirement_name(s).starts_with("nvidia-")),
            _ => false,
        })
    {
        diags.push(
            Diagnostic::warning(
                "kiln::no_cuda",
                g.span,
                format!(
                    "CUDA {} is asked for, but no framework installs its libraries: the variant runs on {} without CUDA",
                    g.cuda,
                    runtime.reference.familiar_name_tag()
                ),
            )
            .with_help(
                "add a `framework` (its GPU wheels bring CUDA), write `cuda … from=\"base\"` for the nvidia/cuda runtime image, or pip the CUDA wheels your packages load (nvidia-cuda-runtime-cu12, …)",
            ),
        );
    }

    // The classic mistake: a CUDA base image under a framework whose wheels
    // bring CUDA again. It builds and runs, at twice the size.
    if let Some(fw) = &framework
        && fw.wheels_bring_cuda
        && runtime.reference.familiar_name() == "nvidia/cuda"
    {
        let span = runtime
            .span
            .or(gpu.as_ref().map(|g| g.span))
            .unwrap_or(fw.span);
        let slim = format!("python:{python}-slim");
        diags.push(
            Diagnostic::warning(
                "kiln::cuda_twice",
                span,
                format!(
                    "`{}` carries the CUDA libraries, and the {} {} wheels install their own: the image holds CUDA twice",
                    runtime.reference.familiar_name_tag(),
                    fw.name,
                    fw.version
                ),
            )
            .with_help(if settings.base.is_none() && settings.builder.is_some() && runtime.span.is_none() && gpu.as_ref().is_some_and(|g| g.from != model::CudaFrom::Base) {
                format!(
                    "the runtime follows the builder's distro (its python is the venv's); a python:{python} builder runs the image on {slim} with CUDA from the wheels, once"
                )
            } else {
                format!(
                    "leave out `base` and `from=\"base\"` so the variant runs on {slim} with CUDA from the wheels, once; keep the nvidia/cuda base only if you need its CUDA tools at run time"
                )
            }),
        );
        notes.push("CUDA twice: the nvidia/cuda base and the framework's CUDA wheels both carry the CUDA libraries".to_string());
    }

    check_base_cuda(&runtime, gpu.as_ref(), framework.as_ref(), diags);
    if settings.builder.is_some() {
        check_builder_cuda(&builder, gpu.as_ref(), diags);
        if let Some(c) = &settings.conda {
            check_conda_builder(&builder, c, diags);
        }
    }

    let installer = settings
        .installer
        .as_ref()
        .map_or(Installer::Pip, |i| i.value);

    // Conda builds the environment in its own builder; pip nodes then go into it.
    let conda = settings.conda.clone();

    let mut apt_runtime = Vec::new();
    let mut apt_build = Vec::new();
    for a in &settings.apt {
        let item = Spanned::new(a.value.packages.clone(), a.span);
        match a.value.stage {
            Stage::Runtime => apt_runtime.push(item),
            Stage::Build => apt_build.push(item),
        }
    }

    let mut indexes = Vec::new();
    let mut pip_inline: Vec<(String, SourceSpan)> = Vec::new();
    let mut pip_files = Vec::new();
    // The lines of the files installed as files (not a layer per pin):
    // (file, line, spec, the recipe's `pip` span).
    let mut file_requirements: Vec<(String, usize, String, SourceSpan)> = Vec::new();
    let mut wanted_files = Vec::new();
    let mut lock_hashes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut lock_origin: BTreeMap<String, String> = BTreeMap::new();
    // Where each lock pin is: (file, line), for messages.
    let mut lock_lines: BTreeMap<String, (String, usize)> = BTreeMap::new();
    if let Some(c) = &conda {
        check_conda_file(c, &python, opts, diags, &mut wanted_files);
    }
    for p in &settings.pip {
        match &p.value {
            model::Pip::Packages(specs) => {
                for s in specs {
                    pip_inline.push((s.clone(), p.span));
                }
            }
            model::Pip::Requirements(path) => {
                let read = read_requirements(path, p.span, opts, diags, &mut wanted_files);
                if installer == Installer::Uv && !read.find_links_in_folder.is_empty() {
                    diags.push(
                        Diagnostic::warning(
                            "kiln::uv_find_links",
                            p.span,
                            format!(
                                "uv reads a relative `--find-links` from the context's root folder, where pip reads it from the requirements file's folder first: {}",
                                read.find_links_in_folder.join(", ")
                            ),
                        )
                        .with_help("write the folder relative to the context's root, or use pip"),
                    );
                }
                match read.lock {
                    // A lock's pins get a layer each, like the recipe's (not
                    // hundreds of them: see MAX_PACKAGE_LAYERS).
                    Some(pins)
                        if opts.caps.merge_diff
                            && conda.is_none()
                            && pins.len() <= MAX_PACKAGE_LAYERS =>
                    {
                        let replaced: Vec<String> = settings
                            .pip_replaced
                            .iter()
                            .filter(|(span, _)| *span == p.span)
                            .flat_map(|(_, names)| names.iter().cloned())
                            .collect();
                        for pin in pins {
                            // A variant's own pin of the package wins.
                            if replaced.contains(&model::requirement_name(&pin.spec)) {
                                continue;
                            }
                            if !pin.hashes.is_empty() {
                                lock_hashes.insert(pin.spec.clone(), pin.hashes);
                            }
                            lock_origin.insert(pin.spec.clone(), path.clone());
                            lock_lines.insert(pin.spec.clone(), (path.clone(), pin.line));
                            pip_inline.push((pin.spec, p.span));
                        }
                    }
                    lock => {
                        if let Some(pins) = lock
                            && opts.caps.merge_diff
                            && conda.is_none()
                        {
                            notes.push(format!(
                                "pip: the lock {path} has {} pins, more than {MAX_PACKAGE_LAYERS}: installed as its file, not as a layer each (images of hundreds of layers strain engines and runtimes)",
                                pins.len()
                            ));
                        }
                        file_requirements.extend(
                            read.requirements
                                .into_iter()
                                .map(|(file, line, spec)| (file, line, spec, p.span)),
                        );
                        pip_files.push(PipStep::Requirements {
                            path: path.clone(),
                            includes: read.includes,
                            sources: read.sources,
                            span: p.span,
                        })
                    }
                }
            }
            model::Pip::Index {
                url,
                secret,
                default,
            } => {
                if *default && let Some(first) = indexes.iter().find(|i: &&Index| i.default) {
                    diags.push(
                        Diagnostic::error(
                            "kiln::conflicting_indexes",
                            p.span,
                            format!(
                                "two indexes replace PyPI: `{}` and `{url}`; pip has one `--index-url`",
                                first.url
                            ),
                        )
                        .with_help("keep `default=#true` on one index; the others are extra indexes"),
                    );
                }
                indexes.push(Index {
                    url: url.clone(),
                    secret: secret.clone(),
                    default: *default,
                })
            }
        }
    }
    // One pin per package: two builds of numpy in two layers would leave
    // both versions' files in the venv. The same pin twice is kept once.
    let mut pinned: Vec<(String, String)> = Vec::new();
    let mut pinned_specs: Vec<String> = Vec::new();
    pip_inline.retain(|(spec, span)| {
        let Some((name, version)) = model::exact_pin(spec) else {
            return true;
        };
        match pinned.iter().position(|(n, _)| *n == name) {
            None => {
                pinned.push((name, version));
                pinned_specs.push(spec.clone());
                true
            }
            Some(at) => {
                let first = &pinned[at].1;
                if !model::same_version(first, &version) {
                    // Say where each pin is when a lock holds it.
                    let place = |s: &str| {
                        lock_lines
                            .get(s)
                            .map(|(file, line)| format!(" (`{file}` line {line})"))
                            .unwrap_or_default()
                    };
                    let (first_at, second_at) = (place(&pinned_specs[at]), place(spec));
                    let help = if first_at.is_empty() && second_at.is_empty() {
                        "keep one pin; a variant's `pip` replaces the top-level requirement of the same package"
                    } else {
                        "keep one pin: a lock names each package once (regenerate it), and a recipe's pin of a package the lock has goes in a variant, which replaces it"
                    };
                    diags.push(
                        Diagnostic::error(
                            "kiln::conflicting_pins",
                            *span,
                            format!(
                                "{name} is pinned twice: to {first}{first_at} and to {version}{second_at}"
                            ),
                        )
                        .with_help(help),
                    );
                }
                false
            }
        }
    });

    // A range of a pinned package that leaves out its pin: pip cannot
    // resolve the two.
    for (spec, span) in &pip_inline {
        if model::exact_pin(spec).is_some() {
            continue;
        }
        let name = model::requirement_name(spec);
        if let Some((_, version)) = pinned.iter().find(|(n, _)| *n == name)
            && let Some(clause) = model::excludes_release(spec, version)
        {
            diags.push(
                Diagnostic::error(
                    "kiln::conflicting_pins",
                    *span,
                    format!("{name} is pinned to {version}, which `{spec}` leaves out ({clause})"),
                )
                .with_help("keep the pin or the range; a variant's `pip` replaces the top-level requirement of the same package"),
            );
        }
    }

    // The same in a requirements file installed as a file: pip fails on
    // the two at the file's install, after every pin.
    for (file, line, spec, span) in &file_requirements {
        let name = model::requirement_name(spec);
        if let Some((_, version)) = pinned.iter().find(|(n, _)| *n == name) {
            let clash = match model::exact_pin(spec) {
                Some((_, v)) => (!model::same_version(&v, version)).then(|| format!("=={v}")),
                None => model::excludes_release(spec, version),
            };
            if let Some(clause) = clash {
                diags.push(
                    Diagnostic::error(
                        "kiln::conflicting_pins",
                        *span,
                        format!(
                            "`{file}` line {line} asks for `{spec}`, which leaves out the recipe's pin {name}=={version} ({clause})"
                        ),
                    )
                    .with_help("make the two agree: change the pin, or the file's line"),
                );
            }
        }
    }

    // Companions of the framework (torchvision next to torch) must come
    // from the framework's index: they move into its step.
    let mut framework = framework;
    if let Some(fw) = framework.as_mut() {
        // A requirements file installed as a file keeps its lines; one that
        // asks for another release of the framework would make pip put
        // PyPI's build over the one the framework step installed.
        for (file, line, spec, span) in &file_requirements {
            // A companion (torchvision) the file asks for in a release that
            // does not go with the framework's.
            let name = model::requirement_name(spec);
            if let Some(want) = fw.companion_version(&name) {
                let clash = match model::exact_pin(spec) {
                    Some((_, v)) => {
                        let release = v.split('+').next().unwrap_or(&v).to_string();
                        (!model::same_version(&release, want)).then(|| format!("=={v}"))
                    }
                    None => model::excludes_release(spec, want),
                };
                if let Some(clause) = clash {
                    diags.push(
                        Diagnostic::error(
                            "kiln::incompatible",
                            *span,
                            format!(
                                "`{file}` line {line} asks for `{spec}`, which leaves out {name} {want} ({clause}), the release that goes with {} {}",
                                fw.name, fw.version
                            ),
                        )
                        .with_help(format!("make the line hold {name} {want}, or name it in a `pip` line of the recipe, where kiln installs it with the framework")),
                    );
                }
            }
            if fw.is_itself(spec) && !fw.admits(spec) {
                diags.push(
                    Diagnostic::error(
                        "kiln::framework_in_pip",
                        *span,
                        format!(
                            "`{file}` line {line} asks for `{spec}`, which `framework \"{}\" \"{}\"` does not meet: pip would install it over the framework's build for this variant",
                            fw.name, fw.version
                        ),
                    )
                    .with_help(format!(
                        "remove the line, or make it hold {} {} (kiln installs the framework in its own step, built for the variant); to change the release, change the `framework` line",
                        fw.name, fw.version
                    )),
                );
            }
        }
        // Where a lock holds the pin: the file's line, for messages.
        let in_lock = |spec: &str| {
            lock_lines
                .get(spec)
                .map(|(file, line)| format!("`{file}` line {line}: "))
                .unwrap_or_default()
        };
        pip_inline.retain_mut(|(spec, span)| {
            // The framework itself: its step installs the build that fits
            // the variant (CPU, or the CUDA asked for), from the right index.
            // A pin of the same release adds nothing; any other would put a
            // second build over it.
            if fw.is_itself(spec) {
                // `torch[opt-einsum]==2.4.1`: the same release, for its
                // extras' packages. It stays, installed after the
                // framework's step, which it does not replace (pip takes
                // `2.4.1+cpu` for `==2.4.1`). Extras that choose a build
                // (`tensorflow[and-cuda]`, `jax[cuda12]`, `jax[cpu]`) are
                // the framework step's to choose, per variant: with only
                // those, the requirement is the plain framework.
                if let Some((before, after)) = spec.split_once('[')
                    && let Some((extras, rest)) = after.split_once(']')
                    && let kept = extras
                        .split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty() && !fw.is_build_extra(e))
                        .collect::<Vec<_>>()
                    && !kept.is_empty()
                {
                    let plain = format!("{}{}", before.trim(), rest.trim());
                    let same = model::exact_pin(&plain).is_some_and(|(_, v)| v == fw.version)
                        || rest.trim().is_empty();
                    if same {
                        let written = spec.clone();
                        *spec = format!("{}[{}]{}", before.trim(), kept.join(","), rest.trim());
                        diags.push(
                            Diagnostic::warning(
                                "kiln::framework_in_pip",
                                *span,
                                format!(
                                    "`{written}` is the framework: `framework \"{}\" \"{}\"` installs it, built for this variant; kiln keeps the requirement for its extras{}",
                                    fw.name,
                                    fw.version,
                                    if written == *spec {
                                        String::new()
                                    } else {
                                        format!(" (as `{spec}`: the variant's build is the framework step's)")
                                    }
                                ),
                            )
                            .with_help("to be plain, list the extras' packages in `pip` instead"),
                        );
                        return true;
                    }
                }
                let same = fw.admits(spec);
                let message = format!(
                    "{}`{spec}` is the framework: `framework \"{}\" \"{}\"` installs it, built for this variant",
                    in_lock(spec),
                    fw.name,
                    fw.version
                );
                diags.push(if same {
                    Diagnostic::warning("kiln::framework_in_pip", *span, message)
                        .with_help("remove it from `pip`; kiln installs the framework once, in its own step")
                } else {
                    Diagnostic::error("kiln::framework_in_pip", *span, message).with_help(format!(
                        "remove it from `pip`; to change the release, change the `framework` line (now {} {})",
                        fw.name, fw.version
                    ))
                });
                return false;
            }
            // A project that went with earlier releases only: pip takes
            // its last release, built against another framework release.
            if let Some((last_fw, last)) = fw.retired_companion(spec) {
                let name = model::requirement_name(spec);
                diags.push(
                    Diagnostic::warning(
                        "kiln::incompatible",
                        *span,
                        format!(
                            "{}kiln knows no {name} release that goes with {} {}: its last known, {last}, goes with {} {last_fw}, and pip would install it over this framework",
                            in_lock(spec),
                            fw.name,
                            fw.version,
                            fw.name
                        ),
                    )
                    .with_help(format!(
                        "drop {name}, or use {} {last_fw}, which it goes with",
                        fw.name
                    )),
                );
            }
            // A companion pinned to another framework release's version is
            // the wrong-build mistake again, one package over.
            // A local label (`+cu124`, `+cpu`, as `pip freeze` writes
            // them) names a build, which the framework step chooses per
            // variant: the release is what must pair.
            if let Some((name, version)) = model::exact_pin(spec)
                && let Some(want) = fw.companion_version(&name)
                && !model::same_version(version.split('+').next().unwrap_or(&version), want)
            {
                diags.push(
                    Diagnostic::error(
                        "kiln::incompatible",
                        *span,
                        format!(
                            "{}{name} {version} does not go with {} {}",
                            in_lock(spec),
                            fw.name,
                            fw.version
                        ),
                    )
                    .with_help(format!(
                        "{} {} pairs with {name} {want}: write \"{name}=={want}\"",
                        fw.name, fw.version
                    )),
                );
            }
            // A range of a companion that leaves out the release that goes
            // with the framework.
            let name = model::requirement_name(spec);
            if model::exact_pin(spec).is_none()
                && let Some(want) = fw.companion_version(&name)
                && let Some(clause) = model::excludes_release(spec, want)
            {
                diags.push(
                    Diagnostic::error(
                        "kiln::incompatible",
                        *span,
                        format!(
                            "`{spec}` leaves out {name} {want} ({clause}), the release that goes with {} {}",
                            fw.name, fw.version
                        ),
                    )
                    .with_help(format!("write \"{name}=={want}\", or change the framework release")),
                );
            }
            // Adopted without its label: the framework step installs the
            // variant's build from the variant's index.
            let unlabelled = match model::exact_pin(spec) {
                Some((name, version))
                    if fw.companion_version(&name).is_some()
                        && !spec.contains(['[', ';', '@']) =>
                {
                    let (release, label) = version.split_once('+').unwrap_or((&version, ""));
                    // The variant's build is the tail of its index
                    // (`…/whl/cu124`, `…/whl/cpu`).
                    let build = fw
                        .index_url
                        .as_deref()
                        .and_then(|u| u.trim_end_matches('/').rsplit('/').next());
                    if !label.is_empty()
                        && let Some(build) = build
                        && !label.eq_ignore_ascii_case(build)
                    {
                        diags.push(
                            Diagnostic::warning(
                                "kiln::framework_in_pip",
                                *span,
                                format!(
                                    "{}`{spec}` names the {label} build; this variant installs {name} {release} built as {build}, with {} {}",
                                    in_lock(spec),
                                    fw.name,
                                    fw.version
                                ),
                            )
                            .with_help(format!("write `{name}=={release}`: kiln picks each variant's build")),
                        );
                    }
                    format!("{name}=={release}")
                }
                _ => spec.clone(),
            };
            !fw.adopt_companion(&unlabelled)
        });
    }

    // NVIDIA's CUDA wheels are the framework's to choose on a GPU variant:
    // a pin of its own (often from a lock made elsewhere) puts a second
    // build of the CUDA libraries over the ones the framework installed.
    if let Some(fw) = framework.as_ref().filter(|f| f.wheels_bring_cuda)
        && let Some(g) = &gpu
    {
        for (spec, span) in &pip_inline {
            let name = model::requirement_name(spec);
            // (nvidia-cublas-cu12; not nvidia-ml-py, NVML's bindings.)
            let cuda_wheel = name.starts_with("nvidia-")
                && name
                    .rsplit_once("-cu")
                    .is_some_and(|(_, v)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
            if cuda_wheel && model::exact_pin(spec).is_some() {
                diags.push(
                    Diagnostic::warning(
                        "kiln::cuda_wheel_pinned",
                        *span,
                        format!(
                            "`{spec}` pins one of the CUDA wheels {} {} brings for CUDA {}: its own layer then goes over the framework's copy",
                            fw.name, fw.version, g.cuda
                        ),
                    )
                    .with_help(format!(
                        "leave the nvidia-* packages to the framework: remove the pin (or make the lock for CUDA {} without them)",
                        g.cuda
                    )),
                );
            }
        }
    }
    let all_pinned = !pip_inline.is_empty()
        && pip_inline
            .iter()
            .all(|(s, _)| model::exact_pin(s).is_some());
    let layering = if opts.caps.merge_diff && conda.is_none() {
        Layering::PerPackage
    } else {
        Layering::Grouped
    };
    let mut pip = Vec::new();
    match layering {
        Layering::PerPackage => {
            let (mut pinned, mut loose): (Vec<_>, Vec<_>) = pip_inline
                .into_iter()
                .partition(|(s, _)| model::exact_pin(s).is_some());
            if pinned.len() > MAX_PACKAGE_LAYERS {
                notes.push(format!(
                    "pip: {} pins, more than {MAX_PACKAGE_LAYERS}: installed together, not as a layer each (images of hundreds of layers strain engines and runtimes)",
                    pinned.len()
                ));
                // A lock's pins go back to its file (pip then checks its
                // hashes); the recipe's join the loose requirements.
                let mut locks: Vec<(String, SourceSpan)> = Vec::new();
                for (spec, span) in std::mem::take(&mut pinned) {
                    match lock_origin.get(&spec) {
                        Some(path) => {
                            if !locks.iter().any(|(p, _)| p == path) {
                                locks.push((path.clone(), span));
                            }
                        }
                        None => loose.push((spec, span)),
                    }
                }
                for (path, span) in locks {
                    pip_files.insert(
                        0,
                        PipStep::Requirements {
                            path,
                            includes: Vec::new(),
                            sources: Vec::new(),
                            span,
                        },
                    );
                }
            }
            let grouped = pinned.is_empty();
            for (spec, span) in pinned {
                pip.push(PipStep::Package {
                    hashes: lock_hashes.get(&spec).cloned().unwrap_or_default(),
                    lock: lock_origin.get(&spec).cloned(),
                    lock_line: lock_lines.get(&spec).map(|(_, line)| *line),
                    spec,
                    span,
                });
            }
            if !loose.is_empty() {
                let span = loose[0].1;
                let spans = distinct_spans(&loose);
                pip.push(PipStep::Group {
                    specs: loose.into_iter().map(|(s, _)| s).collect(),
                    span,
                    spans,
                });
            }
            if all_pinned && !grouped {
                notes.push("pip: every inline requirement is pinned with ==: one layer per package (MergeOp + DiffOp), so adding one re-installs one".to_string());
            } else if pip.iter().any(|p| matches!(p, PipStep::Package { .. })) {
                notes.push("pip: `==` pins get a layer each; the other requirements install together after them".to_string());
            }
        }
        Layering::Grouped => {
            if !pip_inline.is_empty() {
                let span = pip_inline[0].1;
                let spans = distinct_spans(&pip_inline);
                pip.push(PipStep::Group {
                    specs: pip_inline.into_iter().map(|(s, _)| s).collect(),
                    span,
                    spans,
                });
            }
            if !opts.caps.merge_diff {
                notes.push("engine without MergeOp/DiffOp: pip steps run one after another and the venv is copied into the image".to_string());
            }
        }
    }
    pip.extend(pip_files);

    let user = settings.user.clone();
    let workdir = settings.workdir.as_ref().map(|w| w.value.clone());
    // A tree copied onto `/` passes through the image's system folders; as
    // with Dockerfile `COPY --chown`, each folder of it that exists gets
    // the copied folder's mode and the user as owner.
    if let Some(u) = &user {
        for c in &settings.copy {
            if !c.value.root_owned
                && crate::lower::lands_on_root(&c.value.dest, workdir.as_deref())
                && !opts.context_path_files.contains(&c.value.src)
            {
                diags.push(
                    Diagnostic::warning(
                        "kiln::copy_onto_root",
                        c.span,
                        format!(
                            "`{}` is copied onto `/` for the user `{}`: where it is a folder, every folder of it the image already has (`etc`, `usr`, …) gets the copied folder's mode and `{}` as owner",
                            c.value.src, u.value.name, u.value.name
                        ),
                    )
                    .with_help("copy each file or folder to where it goes (`copy \"overlay/etc/app.conf\" \"/etc/app.conf\"`)"),
                );
            }
        }
    }

    let mut verify = settings.verify.clone();
    if let Some(fw) = &framework
        && let Some(v) = &fw.verify
    {
        verify.insert(
            0,
            Spanned::new(
                crate::model::Verify {
                    code: v.clone(),
                    after: crate::model::RunAfter::Deps,
                },
                fw.span,
            ),
        );
    }

    let multi_platform = opts.platforms().len() > 1;
    let config = image_config(
        recipe,
        &settings,
        &variant_name,
        &runtime,
        gpu.as_ref(),
        source,
        opts,
        platform,
        diags,
    );
    if gpu.is_some() {
        notes.push("GPU: the image declares NVIDIA_VISIBLE_DEVICES=all and NVIDIA_DRIVER_CAPABILITIES=compute,utility for the NVIDIA container runtime".to_string());
    }

    for c in &settings.copy {
        if opts.context_paths.get(&c.value.src) == Some(&false) {
            let pattern = crate::is_pattern(&c.value.src);
            let ignored = !pattern && crate::ignore::excluded(&opts.exclude, &c.value.src);
            diags.push(
                Diagnostic::error(
                    "kiln::missing_file",
                    c.span,
                    if pattern {
                        format!(
                            "copy pattern `{}` matches nothing in the build context",
                            c.value.src
                        )
                    } else if ignored {
                        format!(
                            "copy source `{}` is left out of the build context by .dockerignore",
                            c.value.src
                        )
                    } else {
                        format!("copy source `{}` is not in the build context", c.value.src)
                    },
                )
                .with_help(if pattern {
                    "a pattern matches files of the build context (the directory given to the build), after .dockerignore".to_string()
                } else if ignored {
                    "the context's .dockerignore leaves it out: re-include it there with `!`, or copy another path".to_string()
                } else {
                    "copy sources are relative to the build context (the directory given to the build, not the recipe's folder)".to_string()
                }),
            );
        }
    }

    if diags.errors().count() > errors_before {
        return None;
    }
    Some(Plan {
        wanted_files,
        variant: variant_name,
        description,
        multi_platform,
        platform: platform.clone(),
        name: settings.name.as_ref().map(|n| n.value.clone()),
        python,
        python_span: settings.python.as_ref().map(|p| p.span),
        runtime,
        builder,
        gpu,
        installer,
        framework,
        apt_runtime,
        apt_build,
        pip,
        layering,
        indexes,
        ca_bundle: settings.ca_bundle.as_ref().map(|c| c.value.clone()),
        conda,
        user,
        workdir,
        workdir_span: settings.workdir.as_ref().map(|w| w.span),
        copies: settings.copy.clone(),
        runs: settings.run.clone(),
        verify,
        config,
        notes,
    })
}

/// The variant to build and its effective settings.
fn select_variant(
    recipe: &Recipe,
    opts: &Options,
    diags: &mut Diagnostics,
) -> Option<(String, Option<String>, Settings)> {
    match &opts.target {
        // As a Dockerfile's stage names, `--target` is matched without
        // regard to case, unless that names two variants.
        Some(t) => match recipe
            .variants
            .iter()
            .find(|v| &v.name.value == t)
            .or_else(|| {
                let mut same = recipe
                    .variants
                    .iter()
                    .filter(|v| v.name.value.eq_ignore_ascii_case(t));
                match (same.next(), same.next()) {
                    (Some(v), None) => Some(v),
                    _ => None,
                }
            }) {
            Some(v) => Some((
                v.name.value.clone(),
                v.description.clone(),
                recipe.top.overlay(&v.settings),
            )),
            None if recipe.variants.is_empty() && (t == "default" || t.is_empty()) => {
                Some(("default".to_string(), None, recipe.top.clone()))
            }
            None => {
                let names: Vec<&str> = recipe
                    .variants
                    .iter()
                    .map(|v| v.name.value.as_str())
                    .collect();
                let help = match nearest(t, names.iter().copied()) {
                    Some(n) => format!("did you mean `{n}`?"),
                    None if names.is_empty() => {
                        "this recipe declares no variants; build it without --target".to_string()
                    }
                    None => format!("the recipe's variants: {}", names.join(", ")),
                };
                // The mistake is on the command line; point at where the
                // recipe declares its variants.
                let span = recipe
                    .variants
                    .first()
                    .map_or(SourceSpan::new(0.into(), 0), |v| v.span);
                diags.push(
                    Diagnostic::error(
                        "kiln::unknown_target",
                        span,
                        format!("target `{t}` is not a variant of this recipe"),
                    )
                    .with_help(help),
                );
                None
            }
        },
        None => match recipe.default_variant() {
            Some(v) => Some((
                v.name.value.clone(),
                v.description.clone(),
                recipe.top.overlay(&v.settings),
            )),
            None => Some(("default".to_string(), None, recipe.top.clone())),
        },
    }
}

/// The declared build arguments' values: `--build-arg` (as written),
/// else the default, in which `${NAME}` takes the value of an argument
/// declared before it (as a Dockerfile's `ARG B=${A}`). A default that
/// names another, or a `--build-arg` value holding `${…}` (which would
/// reach the recipe unexpanded), is an error at the argument, when `diags`
/// is given; the argument then has no value.
pub(crate) fn arg_values(
    recipe: &Recipe,
    opts: &Options,
    mut diags: Option<&mut Diagnostics>,
) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut declared: Vec<String> = Vec::new();
    for a in &recipe.args {
        let name = &a.name.value;
        let value = match (opts.build_args.get(name), &a.default) {
            (Some(v), _) if model::has_arg_ref(v) => {
                if let Some(d) = diags.as_deref_mut() {
                    d.push(
                        Diagnostic::error(
                            "kiln::invalid_value",
                            a.name.span,
                            format!(
                                "`--build-arg {name}={v}`: a value given on the command line is used as written, so its `${{…}}` would reach the recipe unexpanded"
                            ),
                        )
                        .with_help("pass the value itself"),
                    );
                }
                None
            }
            (Some(v), _) => Some(v.clone()),
            (None, Some(default)) => match expand(default, &values, &declared) {
                Ok(v) => Some(v),
                Err(why) => {
                    if let Some(d) = diags.as_deref_mut() {
                        let diag = match why {
                            Unexpanded::Undeclared(other) if &other == name => Diagnostic::error(
                                "kiln::unknown_arg",
                                a.name.span,
                                format!("the default of `{name}` reads `${{{name}}}`, itself"),
                            )
                            .with_help(
                                "a default reads only the arguments declared before it: give a value, or read another argument",
                            ),
                            Unexpanded::Undeclared(other) => Diagnostic::error(
                                "kiln::unknown_arg",
                                a.name.span,
                                format!(
                                    "the default of `{name}` reads `${{{other}}}`, which names no build argument declared before it"
                                ),
                            )
                            .with_help(format!(
                                "declare `{other}` above `{name}` (a default reads only the arguments before it)"
                            )),
                            malformed => {
                                let (message, help) = malformed.describe();
                                Diagnostic::error(
                                    "kiln::bad_substitution",
                                    a.name.span,
                                    format!("the default of `{name}`: {message}"),
                                )
                                .with_help(help)
                            }
                        };
                        d.push(diag);
                    }
                    None
                }
            },
            (None, None) => None,
        };
        if let Some(v) = value {
            values.insert(name.clone(), v);
        }
        declared.push(name.clone());
    }
    values
}

/// `${NAME}` in string values takes the build argument's value (or the
/// declared default). Only declared arguments are substituted.
fn substitute_args(
    recipe: &Recipe,
    s: &Settings,
    opts: &Options,
    diags: &mut Diagnostics,
) -> Settings {
    let values = arg_values(recipe, opts, Some(diags));
    let declared: Vec<String> = recipe.args.iter().map(|a| a.name.value.clone()).collect();
    let mut sub = |text: &str, span: SourceSpan| -> String {
        match expand(text, &values, &declared) {
            Ok(t) => t,
            Err(Unexpanded::Malformed(bad)) => {
                let (message, help) = Unexpanded::Malformed(bad.clone()).describe();
                let at = {
                    let src = diags.source.text.as_str();
                    let (start, len) = (span.offset(), span.len());
                    src.get(start..start + len)
                        .filter(|t| t.matches(bad.as_str()).count() == 1)
                        .and_then(|t| t.find(bad.as_str()))
                        .map_or(span, |i| SourceSpan::new((start + i).into(), bad.len()))
                };
                diags
                    .push(Diagnostic::error("kiln::bad_substitution", at, message).with_help(help));
                text.to_string()
            }
            Err(Unexpanded::Undeclared(name)) => {
                let listed = if declared.is_empty() {
                    "the recipe declares none".to_string()
                } else {
                    format!(
                        "declared: {}",
                        declared
                            .iter()
                            .map(|d| format!("`{d}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let help = match nearest(&name, declared.iter().map(String::as_str)) {
                    Some(n) => format!("did you mean `${{{n}}}`? ({listed})"),
                    None => format!(
                        "declare it with `arg \"{name}\"` (and pass `--build-arg {name}=…`), or write `$${{{name}}}` for a literal ({listed})"
                    ),
                };
                // At the reference itself where the span (a node's, for
                // list values) holds it once.
                let reference = format!("${{{name}");
                let at = {
                    let src = diags.source.text.as_str();
                    let (start, len) = (span.offset(), span.len());
                    src.get(start..start + len)
                        .filter(|t| t.matches(&reference).count() == 1)
                        .and_then(|t| t.find(&reference))
                        .map_or(span, |i| {
                            let end = src[start + i..]
                                .find('}')
                                .map_or(reference.len(), |e| e + 1);
                            SourceSpan::new((start + i).into(), end)
                        })
                };
                diags.push(
                    Diagnostic::error(
                        "kiln::unknown_arg",
                        at,
                        format!(
                            "`${{{name}}}` names no declared build argument, or it has no value"
                        ),
                    )
                    .with_help(help),
                );
                text.to_string()
            }
        }
    };
    let mut out = s.clone();
    let fix = |v: &mut Option<Spanned<String>>, sub: &mut dyn FnMut(&str, SourceSpan) -> String| {
        if let Some(x) = v {
            x.value = sub(&x.value, x.span);
        }
    };
    fix(&mut out.base, &mut sub);
    fix(&mut out.builder, &mut sub);
    fix(&mut out.workdir, &mut sub);
    fix(&mut out.name, &mut sub);
    fix(&mut out.conda, &mut sub);
    for c in &mut out.copy {
        let span = c.span;
        c.value.src = sub(&c.value.src, span);
        c.value.dest = sub(&c.value.dest, span);
    }
    // What came from an argument is checked as the literal would have
    // been, once it has its value.
    let mut bad_values: Vec<(SourceSpan, String, String)> = Vec::new();
    for (written, now) in [(&s.base, &out.base), (&s.builder, &out.builder)] {
        if let (Some(w), Some(n)) = (written, now)
            && model::has_arg_ref(&w.value)
            && !model::has_arg_ref(&n.value)
            && let Err(why) = crate::image_ref::ImageRef::parse(&n.value)
        {
            bad_values.push((
                n.span,
                w.value.clone(),
                format!("not an image reference: {why}"),
            ));
        }
    }
    // Context paths must stay in the context once substituted.
    let mut context_paths: Vec<(SourceSpan, &String, &mut String)> = Vec::new();
    if let (Some(w), Some(n)) = (&s.conda, &mut out.conda) {
        context_paths.push((n.span, &w.value, &mut n.value));
    }
    for (w, n) in s.copy.iter().zip(out.copy.iter_mut()) {
        context_paths.push((n.span, &w.value.src, &mut n.value.src));
    }
    for (w, n) in s.pip.iter().zip(out.pip.iter_mut()) {
        if let (model::Pip::Requirements(wp), model::Pip::Requirements(np)) =
            (&w.value, &mut n.value)
        {
            let now = sub(wp, n.span);
            *np = now;
            context_paths.push((n.span, wp, np));
        }
    }
    for (span, written, now) in context_paths {
        if !model::has_arg_ref(written) || model::has_arg_ref(now) {
            continue;
        }
        match model::normalize_context_path(now) {
            Ok(p) => *now = p,
            Err(why) => bad_values.push((
                span,
                written.clone(),
                format!("not a path in the build context: {why}"),
            )),
        }
    }
    if let (Some(w), Some(n)) = (&s.workdir, &out.workdir)
        && model::has_arg_ref(&w.value)
        && !model::has_arg_ref(&n.value)
        && !n.value.starts_with('/')
    {
        bad_values.push((n.span, w.value.clone(), "not an absolute path".to_string()));
    }
    // Versions may come from build arguments too (a CI matrix); they are
    // checked here, once they have their values.
    let mut bad_versions = Vec::new();
    if let Some(p) = &mut out.python
        && model::has_arg_ref(&p.value)
    {
        let written = p.value.clone();
        p.value = sub(&written, p.span);
        if !model::is_version(&p.value, 2)
            || p.value.split('.').count() > 3
            || !model::python_supported(&p.value)
        {
            bad_versions.push((p.span, written, p.value.clone(), "a python 3.8+ version"));
        }
    }
    if let Some(f) = &mut out.framework
        && let Some(v) = f.value.version.as_mut()
        && model::has_arg_ref(v)
    {
        let written = v.clone();
        *v = sub(&written, f.span);
        if !model::is_version(v, 1) {
            bad_versions.push((f.span, written, v.clone(), "a framework version"));
        }
    }
    if let Some(c) = &mut out.cuda
        && model::has_arg_ref(&c.value.version)
    {
        let written = c.value.version.clone();
        c.value.version = sub(&written, c.span);
        if !model::is_version(&c.value.version, 2) {
            bad_versions.push((c.span, written, c.value.version.clone(), "a CUDA version"));
        } else if c.value.version.split('.').count() > 2 {
            // As the literal: kiln matches CUDA by major.minor.
            bad_versions.push((
                c.span,
                written,
                c.value.version.clone(),
                "a CUDA major.minor version (kiln matches CUDA by major.minor: `12.4`, not `12.4.1`)",
            ));
            // Said once: the rest of the plan reads the major.minor.
            let mm: Vec<&str> = c.value.version.split('.').take(2).collect();
            c.value.version = mm.join(".");
        }
    }
    for a in &mut out.apt {
        let span = a.span;
        let mut packages = Vec::new();
        for p in &a.value.packages {
            if !model::has_arg_ref(p) {
                packages.push(p.clone());
                continue;
            }
            let now = sub(p, span);
            if model::has_arg_ref(&now) {
                packages.push(now);
                continue;
            }
            // One argument may name several packages (`apt "${EXTRA}"`).
            let names: Vec<&str> = now.split_whitespace().collect();
            if names.is_empty() {
                continue;
            }
            for n in names {
                if !model::valid_apt_package(n) {
                    bad_values.push((
                        span,
                        p.clone(),
                        format!("`{n}` is not a Debian package name"),
                    ));
                }
                packages.push(n.to_string());
            }
        }
        a.value.packages = packages;
    }
    let mut url_credentials: Vec<(SourceSpan, String)> = Vec::new();
    let mut requirement_credentials: Vec<(SourceSpan, String)> = Vec::new();
    for p in &mut out.pip {
        let span = p.span;
        match &mut p.value {
            model::Pip::Packages(specs) => {
                let mut now = Vec::new();
                for x in specs.iter() {
                    let v = sub(x, span);
                    if model::has_arg_ref(x) && !model::has_arg_ref(&v) {
                        if model::url_credentials(&v).is_some() {
                            requirement_credentials.push((span, x.clone()));
                        } else if let Err(why) = model::check_requirement(&v) {
                            bad_values.push((
                                span,
                                x.clone(),
                                format!("not a pip requirement: {why}"),
                            ));
                        }
                    }
                    now.push(v);
                }
                *specs = now;
            }
            model::Pip::Index { url, .. } => {
                let written = url.clone();
                *url = sub(&written, span);
                if model::has_arg_ref(&written) && !model::has_arg_ref(url) {
                    if !(url.to_ascii_lowercase().starts_with("https://")
                        || url.to_ascii_lowercase().starts_with("http://"))
                    {
                        bad_values.push((span, written.clone(), "not an index URL".to_string()));
                    }
                    if url.contains('@') {
                        url_credentials.push((span, written.clone()));
                    }
                }
            }
            model::Pip::Requirements(_) => {}
        }
    }
    // `env` values are expanded in `image_config`, where the image's
    // environment is known as well as the arguments.
    for l in &mut out.label {
        let span = l.span;
        l.value.1 = sub(&l.value.1, span);
    }
    for (span, written) in requirement_credentials {
        diags.push(
            Diagnostic::error(
                "kiln::secret_in_recipe",
                span,
                format!("`{written}` puts credentials in its URL: they would end up in the image's build graph and its install step's command line"),
            )
            .with_help("a build argument's value is no secret: give the credentials as a netrc build secret (`pip index=\"https://HOST/…\" secret=\"ID\"`)"),
        );
    }
    for (span, written) in url_credentials {
        diags.push(
            Diagnostic::error(
                "kiln::secret_in_recipe",
                span,
                format!("`{written}` gives the index URL credentials; they would end up in the image's build graph"),
            )
            .with_help("put the credentials in a build secret and write `secret=\"ID\"`"),
        );
    }
    bad_values.sort_by_key(|(span, _, _)| span.offset());
    for (span, written, why) in bad_values {
        diags.push(
            Diagnostic::error(
                "kiln::invalid_value",
                span,
                format!(
                    "`{written}` is `{}` here: {why}",
                    expand(&written, &values, &declared).unwrap_or_default()
                ),
            )
            .with_help("check the --build-arg value or the argument's default"),
        );
    }
    // (A name that is no argument was reported by `sub` already.)
    for (span, written, value, what) in bad_versions {
        if model::has_arg_ref(&value) {
            continue;
        }
        let message = if value.is_empty() {
            format!("`{written}` has no value here, and {what} is needed")
        } else {
            format!("`{written}` is `{value}` here, which is not {what}")
        };
        diags.push(
            Diagnostic::error("kiln::invalid_version", span, message)
                .with_help("pass a version with --build-arg, or give the argument a default"),
        );
    }
    out
}

/// Expand `${NAME}`; `$${` is a literal `${`. Err(name) for an unknown name.
/// Why a `${…}` could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unexpanded {
    /// `${NAME}` names no declared argument.
    Undeclared(String),
    /// A `${` form kiln does not read (`${X:?e}`, `${X-e}`, `${}`), or one
    /// without its `}`: the text from `${` on.
    Malformed(String),
}

impl Unexpanded {
    /// The message and the help for a value that reads it.
    fn describe(&self) -> (String, String) {
        match self {
            Unexpanded::Undeclared(name) => (
                format!("`${{{name}}}` names no declared build argument, or it has no value"),
                String::new(),
            ),
            Unexpanded::Malformed(text) if !text.contains('}') => (
                format!("`{text}` has no closing `}}`"),
                "write `${NAME}`, or `$${` for a literal `${`".to_string(),
            ),
            Unexpanded::Malformed(text) => (
                format!("`{text}` is not a substitution kiln reads"),
                "kiln reads `${NAME}`, `${NAME:-WORD}` (WORD where NAME is unset or empty) and `${NAME:+WORD}` (WORD where it is set); `$${` is a literal `${`".to_string(),
            ),
        }
    }
}

fn expand(
    text: &str,
    values: &BTreeMap<String, String>,
    declared: &[String],
) -> Result<String, Unexpanded> {
    expand_nested(text, values, declared, 0)
}

/// How deep `${A:-${B:-…}}` defaults may nest.
const MAX_SUBSTITUTION_DEPTH: usize = 8;

fn expand_nested(
    text: &str,
    values: &BTreeMap<String, String>,
    declared: &[String],
    depth: usize,
) -> Result<String, Unexpanded> {
    if depth > MAX_SUBSTITUTION_DEPTH {
        let shown: String = text.chars().take(40).collect();
        return Err(Unexpanded::Malformed(format!(
            "{shown}…}} (defaults nested more than {MAX_SUBSTITUTION_DEPTH} deep)"
        )));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i]);
            out.push('{');
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = closing_brace(after) else {
            return Err(Unexpanded::Malformed(rest[i..].to_string()));
        };
        let inner = &after[..end];
        // `${NAME}`, `${NAME:-WORD}` (WORD when NAME is unset or empty),
        // `${NAME:+WORD}` (WORD when it is set), as a Dockerfile's ARG.
        let (name, modifier) = split_substitution(inner);
        let is_name =
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !is_name {
            return Err(Unexpanded::Malformed(rest[i..i + 2 + end + 1].to_string()));
        } else if !declared.iter().any(|d| d == name) {
            return Err(Unexpanded::Undeclared(name.to_string()));
        } else {
            let value = values.get(name).map(String::as_str).unwrap_or("");
            match modifier {
                None => out.push_str(value),
                Some((":-", word)) if value.is_empty() => {
                    out.push_str(&expand_nested(word, values, declared, depth + 1)?)
                }
                Some((":+", word)) if !value.is_empty() => {
                    out.push_str(&expand_nested(word, values, declared, depth + 1)?)
                }
                Some((":-", _)) => out.push_str(value),
                Some(_) => {}
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// An `env` value as a Dockerfile's `ENV` reads it: `$NAME` and `${NAME}`
/// take a declared build argument's value, else the variable's value in the
/// image's environment so far (the base image's, kiln's own, the recipe's
/// earlier `env`); `${NAME:-WORD}` gives WORD where NAME is unset or empty,
/// `${NAME:+WORD}` WORD where it is set; `$$` is a `$`. Also returns the
/// names that were unset (they expand to nothing, as in a Dockerfile).
fn expand_env(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Expanded {
    let mut e = Expanded {
        value: String::new(),
        unset: Vec::new(),
        malformed: None,
    };
    e.value = expand_env_word(text, lookup, 0, &mut e);
    e
}

/// [`expand_env`] of one word: the value, or a `${…:-WORD}` default at
/// `depth` (defaults are read as values are, so they nest).
fn expand_env_word(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
    e: &mut Expanded,
) -> String {
    fn is_name(s: &str) -> bool {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    }
    let get = |name: &str, e: &mut Expanded| -> Option<String> {
        let v = lookup(name);
        if v.is_none() && !e.unset.iter().any(|u| u == name) {
            e.unset.push(name.to_string());
        }
        v
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        // `\$` is a `$`, as a Dockerfile's ENV reads it.
        if rest[..i].ends_with('\\') {
            out.push_str(&rest[..i - 1]);
            out.push('$');
            rest = &rest[i + 1..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{')
            && let Some(end) = closing_brace(body)
        {
            let inner = &body[..end];
            let written = &rest[i..i + 2 + end + 1];
            let (name, op) = split_substitution(inner);
            if !is_name(name) {
                e.malformed.get_or_insert_with(|| written.to_string());
                out.push_str(written);
            } else if op.is_some() && depth >= MAX_SUBSTITUTION_DEPTH {
                let shown: String = written.chars().take(40).collect();
                e.malformed.get_or_insert_with(|| {
                    format!("{shown}…}} (defaults nested more than {MAX_SUBSTITUTION_DEPTH} deep)")
                });
                out.push_str(written);
            } else {
                let set = lookup(name).filter(|v| !v.is_empty());
                match (op, set) {
                    (None, _) => out.push_str(&get(name, e).unwrap_or_default()),
                    (Some((":-", _)), Some(v)) => out.push_str(&v),
                    (Some((":-", word)), None) | (Some((_, word)), Some(_)) => {
                        out.push_str(&expand_env_word(word, lookup, depth + 1, e))
                    }
                    (Some(_), None) => {}
                }
            }
            rest = &body[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..len];
            if is_name(name) {
                out.push_str(&get(name, e).unwrap_or_default());
                rest = &after[len..];
            } else {
                if after.starts_with('{') {
                    // `${` with no closing `}`.
                    e.malformed.get_or_insert_with(|| rest[i..].to_string());
                }
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// What a `${…}` holds: the name, and the `:-`/`:+` with its word. Text
/// that is neither comes back whole as the name (no name: malformed).
fn split_substitution(inner: &str) -> (&str, Option<(&str, &str)>) {
    let n = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, tail) = inner.split_at(n);
    match tail.get(..2) {
        _ if tail.is_empty() => (name, None),
        Some(op @ (":-" | ":+")) => (name, Some((op, &tail[2..]))),
        _ => (inner, None),
    }
}

/// The `}` that closes a `${`, past any `${…}` nested in a default: its
/// index in `body` (the text after the `${`).
fn closing_brace(body: &str) -> Option<usize> {
    let mut open = 0usize;
    for (j, c) in body.char_indices() {
        match c {
            '{' => open += 1,
            '}' if open == 0 => return Some(j),
            '}' => open -= 1,
            _ => {}
        }
    }
    None
}

/// An `env` value expanded.
struct Expanded {
    value: String,
    /// Variables it read that have no value (they expand to nothing).
    unset: Vec<String>,
    /// The first `${…}` that is no form kiln reads (or has no closing `}`),
    /// as written: kept as text.
    malformed: Option<String>,
}

/// The image config: the base's, with the venv first on PATH, the GPU
/// runtime variables, the recipe's env, user, workdir, command and labels.
#[allow(clippy::too_many_arguments)]
fn image_config(
    recipe: &Recipe,
    s: &Settings,
    variant: &str,
    runtime: &Base,
    gpu: Option<&Gpu>,
    source: &SourceFile,
    opts: &Options,
    platform: &Platform,
    diags: &mut Diagnostics,
) -> ImageConfig {
    let mut c = runtime
        .resolved
        .as_ref()
        .map(|r| r.config.clone())
        .unwrap_or_default();
    // An engine that has the base for one platform only may hand it out
    // for any (a local single-platform image): the image would then say
    // arm64 and hold amd64 programs. Said here, as newer Dockerfile
    // frontends say it (InvalidBaseImagePlatform).
    if runtime.resolved.is_some()
        && !c.architecture.is_empty()
        && c.architecture != platform.architecture
    {
        diags.push(
            Diagnostic::warning(
                "kiln::base_platform_mismatch",
                runtime.span.or(s.python.as_ref().map(|p| p.span)).unwrap_or_else(|| SourceSpan::new(0.into(), 0)),
                format!(
                    "the base image `{}` the engine gave for {platform} is built for {}/{}: the image's programs would not run on {platform}",
                    runtime.reference, c.os, c.architecture
                ),
            )
            .with_help(format!(
                "use a base that has a {platform} build (a multi-platform image in a registry), or build for {}/{} only",
                c.os, c.architecture
            )),
        );
    }
    c.architecture = platform.architecture.clone();
    c.os = platform.os.clone();
    c.variant = platform.variant.clone();
    c.rootfs = Default::default();
    // The base's creation time is not the image's: without
    // SOURCE_DATE_EPOCH (below) the exporter stamps the newest layer's time.
    c.created = None;
    let base_path = c.env("PATH").unwrap_or(DEFAULT_PATH).to_string();
    let venv_bin = format!("{VENV}/bin");
    let path = if base_path.split(':').any(|p| p == venv_bin) {
        base_path
    } else {
        format!("{venv_bin}:{base_path}")
    };
    c.set_env("PATH", &path);
    c.set_env("VIRTUAL_ENV", VENV);
    if gpu.is_some() {
        if c.env("NVIDIA_VISIBLE_DEVICES").is_none() {
            c.set_env("NVIDIA_VISIBLE_DEVICES", "all");
        }
        if c.env("NVIDIA_DRIVER_CAPABILITIES").is_none() {
            c.set_env("NVIDIA_DRIVER_CAPABILITIES", "compute,utility");
        }
    }
    let args = arg_values(recipe, opts, None);
    let declared: Vec<&str> = recipe.args.iter().map(|a| a.name.value.as_str()).collect();
    // The environment by name (the last of a name wins, as `env` reads it),
    // so a recipe with thousands of `env` entries stays linear.
    let mut env_index: std::collections::HashMap<String, usize> = c
        .config
        .env
        .iter()
        .enumerate()
        .filter_map(|(i, kv)| kv.split_once('=').map(|(k, _)| (k.to_string(), i)))
        .collect();
    for e in &s.env {
        let Expanded {
            value,
            unset,
            malformed,
        } = {
            let lookup = |name: &str| -> Option<String> {
                if declared.contains(&name) {
                    return Some(args.get(name).cloned().unwrap_or_default());
                }
                env_index
                    .get(name)
                    .and_then(|&i| c.config.env[i].split_once('='))
                    .map(|(_, v)| v.to_string())
            };
            expand_env(&e.value.1, &lookup)
        };
        // Without the base's config (`kiln compile` with no --base-config)
        // its variables are unknown, not unset: the value written may not
        // be the one a build through the frontend gets, and kiln says so.
        // `$PATH` has a value without the config too (kiln's venv on the
        // usual default), which may not be the base's (nvidia/cuda's and
        // conda's add their own folders).
        let raw = &e.value.1;
        if let Some(bad) = malformed {
            let (message, help) = Unexpanded::Malformed(bad).describe();
            diags.push(
                Diagnostic::error(
                    "kiln::bad_substitution",
                    e.span,
                    format!("env {}: {message}", e.value.0),
                )
                .with_help(help.replace("$${` is a literal `${", "$$` is a literal `$")),
            );
        }
        if runtime.resolved.is_none() && reads_variable(raw, "PATH") {
            diags.push(
                Diagnostic::warning(
                    "kiln::base_config_unknown",
                    e.span,
                    format!(
                        "`$PATH` comes from the base image `{}`, whose config kiln has not read: taken as `{path}` here",
                        runtime.reference
                    ),
                )
                .with_help(format!(
                    "pass `--base-config {}=CONFIG.json` (the image's config, e.g. from `docker image inspect`), or build through the frontend, which reads it",
                    runtime.reference
                )),
            );
        }
        if runtime.resolved.is_none() && !unset.is_empty() {
            let names: Vec<String> = unset.iter().map(|n| format!("`${n}`")).collect();
            diags.push(
                Diagnostic::warning(
                    "kiln::base_config_unknown",
                    e.span,
                    format!(
                        "{} may come from the base image `{}`, whose config kiln has not read: taken as empty here",
                        names.join(", "),
                        runtime.reference
                    ),
                )
                .with_help(format!(
                    "pass `--base-config {}=CONFIG.json` (the image's config, e.g. from `docker image inspect`), or build through the frontend, which reads it",
                    runtime.reference
                )),
            );
        }
        if runtime.resolved.is_some() {
            for name in unset {
                let help = match nearest(&name, declared.iter().copied()) {
                    Some(n) => format!("did you mean the build argument `${{{n}}}`?"),
                    None => {
                        "set it in an earlier `env`, or write `$$` for a literal `$`".to_string()
                    }
                };
                diags.push(
                    Diagnostic::warning(
                        "kiln::unset_variable",
                        e.span,
                        format!(
                            "`${name}` is not set in the image's environment (the base image's ENV, kiln's, the recipe's earlier `env`) nor a build argument: it expands to nothing"
                        ),
                    )
                    .with_help(help),
                );
            }
        }
        if e.value.0 == "PATH" && !value.split(':').any(|p| p == venv_bin) {
            diags.push(
                Diagnostic::warning(
                    "kiln::path_without_venv",
                    e.span,
                    format!(
                        "this `PATH` leaves out {venv_bin}: `python` and the environment's scripts in the image are then not the venv's"
                    ),
                )
                .with_help(format!(
                    "add to the PATH instead of replacing it: `env PATH=\"/your/bin:${{PATH}}\"` (or name {venv_bin} in it)"
                )),
            );
        }
        let entry = format!("{}={value}", e.value.0);
        match env_index.get(&e.value.0) {
            Some(&i) => c.config.env[i] = entry,
            None => {
                env_index.insert(e.value.0.clone(), c.config.env.len());
                c.config.env.push(entry);
            }
        }
    }
    // A `run` step's command is the shell's, as written: a build argument
    // named in it is a shell variable there, empty unless the image's
    // environment has it (build arguments reach no step).
    for r in &s.run {
        let command = &r.value.command;
        let named: Vec<&str> = declared
            .iter()
            .copied()
            .filter(|name| {
                // The proxy variables do reach `run` steps.
                let proxy = matches!(
                    name.to_ascii_uppercase().as_str(),
                    "HTTP_PROXY" | "HTTPS_PROXY" | "FTP_PROXY" | "NO_PROXY" | "ALL_PROXY"
                );
                !proxy && !env_index.contains_key(*name) && shell_reads_unset(command, name)
            })
            .collect();
        if let Some(name) = named.first() {
            let shown: Vec<String> = named.iter().map(|n| format!("`${n}`")).collect();
            diags.push(
                Diagnostic::warning(
                    "kiln::arg_in_run",
                    r.span,
                    format!(
                        "{} in this `run` {} the shell's, not the build argument's: build arguments reach no step, and the image's environment does not set {}, so {} empty here",
                        shown.join(", "),
                        if named.len() == 1 { "is" } else { "are" },
                        if named.len() == 1 { "it" } else { "them" },
                        if named.len() == 1 { "it is" } else { "they are" },
                    ),
                )
                .with_help(format!(
                    "to pass the value, add `env {name}=\"${{{name}}}\"` (it stays in the image's environment); for a token, use `run \"…\" secret=\"ID\"`, which stays out of the image"
                )),
            );
        }
    }
    if let Some(u) = &s.user {
        // Numeric, as `uid:gid`: the same account as the name (the user
        // step creates it with these ids), but checkable without the image's
        // /etc/passwd, which Kubernetes' `runAsNonRoot` needs.
        c.config.user = format!("{}:{}", u.value.uid, u.value.gid);
    }
    if let Some(w) = &s.workdir {
        c.config.working_dir = w.value.clone();
    }
    match (&s.entrypoint, &s.cmd) {
        (Some(ep), cmd) => {
            c.config.entrypoint = Some(ep.value.clone());
            c.config.cmd = cmd.as_ref().map(|x| x.value.clone());
        }
        (None, Some(cmd)) => c.config.cmd = Some(cmd.value.clone()),
        (None, None) => {}
    }
    if let Some(h) = &s.healthcheck {
        let h = &h.value;
        let mut check = serde_json::Map::new();
        check.insert("Test".into(), serde_json::json!(h.test));
        for (key, v) in [
            ("Interval", h.interval),
            ("Timeout", h.timeout),
            ("StartPeriod", h.start_period),
        ] {
            if let Some(ns) = v {
                check.insert(key.into(), serde_json::json!(ns));
            }
        }
        if let Some(r) = h.retries {
            check.insert("Retries".into(), serde_json::json!(r));
        }
        c.config
            .other
            .insert("Healthcheck".into(), serde_json::Value::Object(check));
    }
    if let Some(sig) = &s.stop_signal {
        c.config
            .other
            .insert("StopSignal".into(), serde_json::json!(sig.value));
    }
    for p in &s.expose {
        let port = if p.value.contains('/') {
            p.value.clone()
        } else {
            format!("{}/tcp", p.value)
        };
        c.config.exposed_ports.insert(port, serde_json::json!({}));
    }
    // Labels: base's, then kiln's, then the recipe's, then the client's.
    let labels = &mut c.config.labels;
    if let Some(n) = &s.name {
        labels.insert("org.opencontainers.image.title".into(), n.value.clone());
    }
    // Seconds since 1970 up to the end of year 9999 (what RFC 3339 can
    // write); anything else is refused, as BuildKit refuses it.
    const LAST_EPOCH: i64 = 253_402_300_799;
    match opts.build_args.get("SOURCE_DATE_EPOCH").map(|e| e.trim()) {
        None | Some("") => {}
        Some(e) => match e.parse::<i64>() {
            Ok(epoch) if (0..=LAST_EPOCH).contains(&epoch) => {
                let ts = rfc3339(epoch);
                labels.insert("org.opencontainers.image.created".into(), ts.clone());
                c.created = Some(ts);
            }
            _ => diags.push(
                Diagnostic::error(
                    "kiln::invalid_build_arg",
                    SourceSpan::new(0.into(), 0),
                    format!("`--build-arg SOURCE_DATE_EPOCH={e}` is not a time: it takes whole seconds since 1970-01-01 UTC"),
                )
                .with_help("pass e.g. `--build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)`"),
            ),
        },
    }
    if let Some(url) = opts.build_args.get("VCS_URL") {
        labels.insert("org.opencontainers.image.source".into(), url.clone());
    }
    if let Some(rev) = opts.build_args.get("VCS_REF") {
        labels.insert("org.opencontainers.image.revision".into(), rev.clone());
    }
    // The base as resolved, or as the recipe pinned it (`…@sha256:…`).
    if runtime.resolved.is_some() || runtime.reference.digest.is_some() {
        let base = runtime.pinned();
        let mut name = runtime.reference.clone();
        name.digest = None;
        labels.insert(
            "org.opencontainers.image.base.name".into(),
            name.to_string(),
        );
        if let Some(d) = &base.digest {
            labels.insert("org.opencontainers.image.base.digest".into(), d.clone());
        }
    }
    use sha2::{Digest, Sha256};
    labels.insert(
        "kiln.recipe.digest".into(),
        format!("sha256:{:x}", Sha256::digest(source.text.as_bytes())),
    );
    if !recipe.variants.is_empty() {
        labels.insert("kiln.variant".into(), variant.to_string());
    }
    for l in &s.label {
        labels.insert(l.value.0.clone(), l.value.1.clone());
    }
    for (k, v) in &opts.labels {
        labels.insert(k.clone(), v.clone());
    }
    c
}

/// Seconds since the epoch as RFC 3339 UTC, without a date library.
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn env_values_expand_like_a_dockerfile_env() {
        let vars: BTreeMap<&str, &str> =
            [("PATH", "/opt/venv/bin:/usr/bin"), ("A", "x"), ("E", "")]
                .into_iter()
                .collect();
        let lookup = |n: &str| vars.get(n).map(|v| v.to_string());
        let x = |t: &str| {
            let e = expand_env(t, &lookup);
            (e.value, e.unset)
        };
        assert_eq!(
            x("/usr/local/cuda/bin:$PATH").0,
            "/usr/local/cuda/bin:/opt/venv/bin:/usr/bin"
        );
        assert_eq!(x("${A}/$A/${A}b/$Ab").0, "x/x/xb/");
        assert_eq!(x("\\$A \\${A} $$A a\\b").0, "$A ${A} $A a\\b");
        assert_eq!(x("$Ab").1, vec!["Ab".to_string()]);
        assert_eq!(
            x("${E:-d} ${NO:-d} ${A:-d} ${A:+s} ${E:+s}|${NO:+s}").0,
            "d d x s |"
        );
        assert_eq!(x("${NO:-d}").1, Vec::<String>::new());
        assert_eq!(
            x("$$A $${A} 5$ $1 ${not a name} ${open").0,
            "$A ${A} 5$ $1 ${not a name} ${open"
        );
        let (v, unset) = x("/cuda/lib64:$LD_LIBRARY_PATH:$LD_LIBRARY_PATH");
        assert_eq!(v, "/cuda/lib64::");
        assert_eq!(unset, vec!["LD_LIBRARY_PATH".to_string()]);
        // Defaults are read as values are: they nest, and name variables.
        assert_eq!(
            x("${HF:-${NO:-/root/.cache}/hf} ${NO:-${A}} ${NO:-$A} ${A:+x${NO:-z}}").0,
            "/root/.cache/hf x x xz"
        );
        assert_eq!(x("pre${NO:-${A:-y}}post ${NO:+${A}}|").0, "prexpost |");
        let (v, unset) = x("${NO:-$MISSING}");
        assert_eq!((v.as_str(), unset), ("", vec!["MISSING".to_string()]));
        let nested = |n: usize| format!("{}d{}", "${NO:-".repeat(n), "}".repeat(n));
        let eight = expand_env(&nested(8), &lookup);
        assert_eq!((eight.value.as_str(), eight.malformed), ("d", None));
        assert!(expand_env(&nested(9), &lookup).malformed.is_some());
        for bad in ["${A:?e}", "${A-e}", "${}", "${NO:-${A:?e}}"] {
            assert!(expand_env(bad, &lookup).malformed.is_some(), "{bad}");
        }
    }

    #[test]
    fn conda_python_specs_are_read_in_their_spellings() {
        for (file, spec) in [
            ("dependencies:\n  - python=3.10\n", "=3.10"),
            (
                "name: x\ndependencies:\n  - conda-forge::python>=3.10,<3.11\n",
                ">=3.10,<3.11",
            ),
            (
                "dependencies:\n  - python-dateutil\n  - \"python 3.11.*\"\n",
                "3.11.*",
            ),
            ("dependencies:\n  - python[version='>=3.12']\n", ">=3.12"),
            (
                "dependencies:\n  - python[version='>=3.8,<3.10']\n",
                ">=3.8,<3.10",
            ),
            (
                "dependencies:\n  - \"python[build=*_cpython, version='>=3.10,<3.11']\"\n",
                ">=3.10,<3.11",
            ),
            ("dependencies:\n  - python\n", ""),
            ("dependencies: [numpy, python=3.9]\n", "=3.9"),
        ] {
            assert_eq!(
                conda_python(file).map(|(_, s)| s).as_deref(),
                Some(spec),
                "{file}"
            );
        }
        assert_eq!(conda_python("dependencies:\n  - numpy\n"), None);
        for (spec, python, admits) in [
            ("=3.10", "3.10", true),
            ("=3.10", "3.11", false),
            ("3.11.*", "3.11.4", true),
            (">=3.12", "3.11", false),
            (">=3.10,<3.11", "3.11", false),
            (">=3.10,<3.12", "3.11", true),
            ("<3.11.5", "3.11", true),
            ("3.10|3.11", "3.11", true),
            ("", "3.11", true),
        ] {
            assert_eq!(conda_spec_admits(spec, python), admits, "{spec} {python}");
        }
    }

    #[test]
    fn a_run_reads_a_variable_only_where_the_shell_expands_it_unset() {
        for (script, reads) in [
            ("echo $MODEL", true),
            ("echo \"${MODEL:-x}\"", true),
            ("echo $MODELS", false),
            ("echo $${MODEL}", false),
            ("echo '$MODEL'", false),
            ("echo \\$MODEL", false),
            ("MODEL=x; echo $MODEL", false),
            ("export MODEL=x && echo $MODEL", false),
            ("for MODEL in a b; do echo $MODEL; done", false),
            ("echo \"it's $MODEL\"", true),
            ("OTHER_MODEL=x; echo $MODEL", true),
        ] {
            assert_eq!(shell_reads_unset(script, "MODEL"), reads, "{script}");
        }
    }

    #[test]
    fn expand_substitutes_declared_args_only() {
        let mut v = BTreeMap::new();
        v.insert("V".to_string(), "1.2".to_string());
        let declared = vec!["V".to_string(), "EMPTY".to_string()];
        assert_eq!(expand("x==${V}", &v, &declared), Ok("x==1.2".to_string()));
        assert_eq!(expand("a${EMPTY}b", &v, &declared), Ok("ab".to_string()));
        assert_eq!(expand("$${V}", &v, &declared), Ok("${V}".to_string()));
        assert_eq!(
            expand("${NOPE}", &v, &declared),
            Err(Unexpanded::Undeclared("NOPE".to_string()))
        );
        for bad in ["${V", "${V-e}", "${V:?e}", "${}", "${V:0:1}", "x${V%c}"] {
            assert!(
                matches!(expand(bad, &v, &declared), Err(Unexpanded::Malformed(_))),
                "{bad}"
            );
        }
        assert_eq!(expand("$HOME/x", &v, &declared), Ok("$HOME/x".to_string()));
    }
}

/// The line that includes a requirements file: the including file, its
/// line number, the option (`-r`, `-c`) and the path as written.
type IncludedBy = (String, usize, &'static str, String);

/// The most pins that get a layer each: past that, the image's layer count
/// (the kernel stacks at most 500 overlay layers; docker's graph drivers
/// stop at 125) matters more than what one more pin re-installs.
pub const MAX_PACKAGE_LAYERS: usize = 64;

/// The conda environment file, as the caller read it from the context:
/// missing is an error at the recipe's `conda` line, and so is a python
/// pinned there that is not the recipe's (the environment's python is the
/// image's). Not read: taken on trust, asked for.
fn check_conda_file(
    c: &Spanned<String>,
    python: &str,
    opts: &Options,
    diags: &mut Diagnostics,
    wanted: &mut Vec<String>,
) {
    match opts.context_files.get(&c.value) {
        None => wanted.push(c.value.clone()),
        Some(None) => diags.push(
            Diagnostic::error(
                "kiln::missing_file",
                c.span,
                format!("conda environment file `{}` is not in the build context", c.value),
            )
            .with_help("the path is relative to the build context; check it, and that .dockerignore does not exclude the file"),
        ),
        Some(Some(text)) if text.contains(['\0', '\u{fffd}']) => diags.push(
            Diagnostic::error(
                "kiln::invalid_file",
                c.span,
                format!(
                    "conda environment file `{}` is not a text file (it has bytes that are not UTF-8)",
                    c.value
                ),
            )
            .with_help("name the environment's YAML file (`environment.yml`)"),
        ),
        Some(Some(text)) => {
            let Some((line, spec)) = conda_python(text) else {
                let minor = python.split('.').take(2).collect::<Vec<_>>().join(".");
                diags.push(
                    Diagnostic::warning(
                        "kiln::python_mismatch",
                        c.span,
                        format!("`{}` names no python: conda picks the newest it can, and the build fails unless that is the recipe's {python}", c.value),
                    )
                    .with_help(format!("add `- python={minor}` to its dependencies")),
                );
                return;
            };
            let minor = python.split('.').take(2).collect::<Vec<_>>().join(".");
            let newer = {
                let mut parts = python.split('.');
                let major = parts.next().unwrap_or("3");
                let minor: u32 = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
                format!("{major}.{}", minor + 1)
            };
            let asks = format!(
                "`{}` line {line} asks for python{}{spec}",
                c.value,
                if spec.starts_with(|c: char| c.is_ascii_digit()) { " " } else { "" }
            );
            if !conda_spec_admits(&spec, python) {
                diags.push(
                    Diagnostic::error(
                        "kiln::python_mismatch",
                        c.span,
                        format!("{asks}, which leaves out the recipe's python {python}: the environment's python is the image's"),
                    )
                    .with_help(format!(
                        "make the line admit python {minor} (`- python={minor}`), or change the recipe's python line",
                    )),
                );
            } else if conda_spec_admits(&spec, &newer) {
                diags.push(
                    Diagnostic::warning(
                        "kiln::python_mismatch",
                        c.span,
                        format!("{asks}, which admits pythons newer than the recipe's {python}: conda picks the newest it can, and the build fails unless that is the recipe's"),
                    )
                    .with_help(format!("write `- python={minor}` in `{}`", c.value)),
                );
            }
        }
    }
}

/// The python a conda environment file asks for, as its match spec
/// writes it after the name (`=3.10`, `>=3.10,<3.11`, `3.11|3.12`, the
/// `[version=…]` form's value), with the file's line; `None` when it
/// names no python (conda then picks its newest).
fn conda_python(text: &str) -> Option<(usize, String)> {
    let spec_of = |item: &str| -> Option<String> {
        let item = item.trim().trim_matches(['"', '\'']);
        let item = item.rsplit("::").next().unwrap_or(item);
        let rest = item.strip_prefix("python")?;
        // `python-dateutil`, `python_abi`: other packages.
        if rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return None;
        }
        let rest = rest.trim();
        if let Some(bracket) = rest.strip_prefix('[') {
            return Some(bracket_version(bracket).unwrap_or_default());
        }
        // `python 3.10.*` (a space before the version, conda's own form).
        Some(rest.split_whitespace().collect::<Vec<_>>().join(""))
    };
    let mut in_deps = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.split(" #").next().unwrap_or_default().trim_end();
        if !line.starts_with([' ', '-', '\t']) {
            let top = line.trim();
            in_deps = top == "dependencies:";
            // `dependencies: [python=3.10, numpy]`, YAML's flow style.
            if let Some(flow) = top
                .strip_prefix("dependencies:")
                .map(str::trim)
                .and_then(|f| f.strip_prefix('['))
            {
                let flow = flow.trim_end().trim_end_matches(']');
                if let Some(spec) = flow.split(", ").find_map(spec_of) {
                    return Some((i + 1, spec));
                }
            }
            continue;
        }
        let Some(item) = line.trim().strip_prefix('-') else {
            continue;
        };
        if in_deps && let Some(spec) = spec_of(item) {
            return Some((i + 1, spec));
        }
    }
    None
}

/// The `version=` of a match spec's `[key=value, …]` (the text after the
/// `[`); values may be quoted, and a quoted one holds commas
/// (`[version='>=3.8,<3.10', build=*_cpython]`).
fn bracket_version(text: &str) -> Option<String> {
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if rest.is_empty() || rest.starts_with(']') {
            return None;
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let (value, next) = match after.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let close = after[1..].find(q)? + 1;
                (&after[1..close], &after[close + 1..])
            }
            _ => {
                let end = after.find([',', ']']).unwrap_or(after.len());
                (after[..end].trim(), &after[end..])
            }
        };
        if key == "version" {
            return Some(value.trim().to_string());
        }
        rest = next;
    }
}

/// Whether a conda match spec's version part (`=3.10`, `>=3.10,<3.11`,
/// `3.11|3.12`, `3.10.*`) admits some python of the recipe's major.minor.
/// Clauses kiln cannot read admit it (conda has the last word).
fn conda_spec_admits(spec: &str, python: &str) -> bool {
    let mm = |v: &str| -> Option<(u32, u32, bool)> {
        let v = v.trim().trim_end_matches(".*").trim_end_matches('*');
        let mut parts = v.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        // Whether a patch above .0 is named (`<3.11.5` admits 3.11.0).
        let patch = parts
            .next()
            .is_some_and(|p| p.parse::<u32>().is_ok_and(|n| n > 0));
        Some((major, minor, patch))
    };
    let Some((want_major, want_minor, _)) = mm(python) else {
        return true;
    };
    let want = (want_major, want_minor);
    let clause_admits = |clause: &str| -> bool {
        let clause = clause.trim();
        let op_len = clause
            .find(|c: char| !"=<>!~".contains(c))
            .unwrap_or(clause.len());
        let (op, version) = clause.split_at(op_len);
        let Some((major, minor, patch)) = mm(version) else {
            return true;
        };
        let have = (major, minor);
        match op {
            "" | "=" | "==" => have == want,
            ">=" | ">" => want >= have,
            "<=" => want <= have,
            "<" => want < have || (want == have && patch),
            _ => true,
        }
    };
    spec.is_empty() || spec.split('|').any(|alt| alt.split(',').all(clause_admits))
}

/// The most files one requirements file may include, transitively.
const MAX_REQUIREMENT_FILES: usize = 256;

/// What kiln learnt of a requirements file from the caller's copy of the
/// context (see [`Options::context_files`]).
struct ReadRequirements {
    /// The files it includes (`-r`, `-c`), transitively, in the context.
    includes: Vec<String>,
    /// Its pins, when it is a lock.
    lock: Option<Vec<crate::requirements::Pin>>,
    /// The context paths its lines (and its includes') install from.
    sources: Vec<String>,
    /// `--find-links` lines of files in a folder of the context, which pip
    /// and uv read from different folders.
    find_links_in_folder: Vec<String>,
    /// Every requirement of the file and its includes: (file, line, spec).
    requirements: Vec<(String, usize, String)>,
}

/// Whether shell text reads the variable `name`: `${NAME}`, `${NAME:-…}`,
/// or `$NAME` not followed by more of a name.
fn reads_variable(text: &str, name: &str) -> bool {
    text.contains(&format!("${{{name}}}"))
        || text.contains(&format!("${{{name}:"))
        || text.match_indices(&format!("${name}")).any(|(i, m)| {
            !text[i + m.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Whether a shell script expands `$NAME`/`${NAME…}` without setting it
/// first: text in single quotes, `\$` and `$$` expand nothing, and a script
/// that assigns the name (`NAME=…`, `export NAME=…`, `for NAME in`,
/// `read NAME`) has its own value.
fn shell_reads_unset(script: &str, name: &str) -> bool {
    let b = script.as_bytes();
    let word_start = |i: usize| i == 0 || b" \t\n;&|(`".contains(&b[i - 1]);
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    let mut in_double = false;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'\'' if !in_double => {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            }
            b'"' => {
                in_double = !in_double;
                i += 1;
            }
            b'$' if b.get(i + 1) == Some(&b'$') => i += 2,
            b'$' => {
                let rest = &script[i + 1..];
                let braced = rest.strip_prefix('{');
                let body = braced.unwrap_or(rest);
                if let Some(after) = body.strip_prefix(name)
                    && !after.bytes().next().is_some_and(ident)
                {
                    return true;
                }
                i += 1;
            }
            _ if !in_double && word_start(i) && script[i..].starts_with(name) => {
                let after = &script[i + name.len()..];
                if after.starts_with('=') {
                    return false;
                }
                i += name.len();
            }
            _ if !in_double && word_start(i) => {
                // `for NAME in`, `read [-r] NAME`, `export NAME=`.
                let rest = &script[i..];
                let words: Vec<&str> = rest
                    .split([';', '\n', '&', '|'])
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                let sets = match words.first() {
                    Some(&"for") => words.get(1) == Some(&name),
                    Some(&"read") => words[1..].contains(&name),
                    Some(&"export" | &"local" | &"declare" | &"readonly") => words[1..]
                        .iter()
                        .any(|w| w.split('=').next() == Some(name) && w.contains('=')),
                    _ => false,
                };
                if sets {
                    return false;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    false
}

/// Follow a requirements file's includes through the files the caller
/// read. A file the caller did not read is taken on trust (the engine
/// reports it); one it found missing, or an include that leaves the
/// context, is an error at the recipe's `requirements` line.
fn read_requirements(
    path: &str,
    span: SourceSpan,
    opts: &Options,
    diags: &mut Diagnostics,
    wanted: &mut Vec<String>,
) -> ReadRequirements {
    use crate::requirements::{
        Entry, Local, include_path, local_context_paths, local_paths, lock_pins, parse,
    };
    let mut out = ReadRequirements {
        includes: Vec::new(),
        lock: None,
        sources: Vec::new(),
        find_links_in_folder: Vec::new(),
        requirements: Vec::new(),
    };
    let mut todo: Vec<(String, Option<IncludedBy>)> = vec![(path.to_string(), None)];
    let mut seen = vec![path.to_string()];
    while !todo.is_empty() {
        // Includes through a link to their own folder (`-r a/reqs.txt` with
        // `a -> .`) name new paths for the same files without end.
        if seen.len() > MAX_REQUIREMENT_FILES {
            diags.push(
                Diagnostic::error(
                    "kiln::too_many_includes",
                    span,
                    format!(
                        "`{path}` includes more than {MAX_REQUIREMENT_FILES} requirements files (`-r`, `-c`): a loop through a symbolic link to a folder?"
                    ),
                )
                .with_help("name each included file by one path, without links that lead back to a folder on the way"),
            );
            break;
        }
        // In the order the files name them (a queue), for stable messages.
        let (file, from) = todo.remove(0);
        let text = match opts.context_files.get(&file) {
            None => {
                wanted.push(file);
                continue;
            }
            Some(Some(text)) => text,
            Some(None) => {
                let (message, help) = match &from {
                    None if crate::ignore::excluded(&opts.exclude, &file) => (
                        format!("requirements file `{file}` is left out of the build context by .dockerignore"),
                        "re-include it in .dockerignore with `!` (kiln bind-mounts it into the install step; it never reaches a layer)".to_string(),
                    ),
                    None => (
                        format!("requirements file `{file}` is not in the build context"),
                        "the path is relative to the build context; check it, and that .dockerignore does not exclude the file".to_string(),
                    ),
                    Some((parent, line, option, written)) => (
                        format!(
                            "`{parent}` line {line} reads `{option} {written}`, and `{file}` is not in the build context"
                        ),
                        format!(
                            "pip reads `{written}` relative to `{parent}`; add the file, or fix the line (and check .dockerignore)"
                        ),
                    ),
                };
                diags.push(Diagnostic::error("kiln::missing_file", span, message).with_help(help));
                continue;
            }
        };
        let entries = parse(text);
        if from.is_none() {
            out.lock = lock_pins(&entries);
        }
        for e in &entries {
            if let Entry::Requirement { line, spec, .. } = e {
                out.requirements.push((file.clone(), *line, spec.clone()));
            }
        }
        for local in local_paths(&entries) {
            match &local {
                Local::Editable { line, path }
                    if local_context_paths(&file, &local).is_ok() =>
                {
                    diags.push(
                    Diagnostic::error(
                        "kiln::editable_install",
                        span,
                        format!(
                            "`{file}` line {line} installs `{path}` in editable mode (`-e`): an editable install points at the project's folder in the install step, which the image does not have"
                        ),
                    )
                    .with_help(format!(
                        "write `{path}` without `-e`: kiln installs the project from the build context as a package (its install step runs again when the project's files change)"
                    )),
                    )
                }
                Local::Editable { line, path }
                | Local::Path { line, path }
                | Local::FindLinks { line, path } => {
                    if matches!(local, Local::FindLinks { .. }) && file.contains('/') {
                        out.find_links_in_folder
                            .push(format!("`{file}` line {line} (`{path}`)"));
                    }
                    match local_context_paths(&file, &local) {
                        Ok(paths) => {
                            // A project or archive the caller looked up in
                            // the context and did not find (pip would stop
                            // on it in the install step).
                            if !matches!(local, Local::FindLinks { .. })
                                && let [only] = paths.as_slice()
                                && opts.context_paths.get(only) == Some(&false)
                            {
                                diags.push(
                                    Diagnostic::error(
                                        "kiln::missing_file",
                                        span,
                                        format!("`{file}` line {line} installs `{path}`, which is not in the build context"),
                                    )
                                    .with_help("add it to the context (and not to .dockerignore), or fix the line; pip reads it relative to the context's root"),
                                );
                            }
                            for p in paths {
                                if !out.sources.contains(&p) {
                                    out.sources.push(p);
                                }
                            }
                        }
                        Err(why) => diags.push(
                            Diagnostic::error(
                                "kiln::outside_context",
                                span,
                                format!("`{file}` line {line} reads `{path}`: {why}"),
                            )
                            .with_help("pip runs in the build context's root folder; name local projects and archives with paths inside the context, relative to it"),
                        ),
                    }
                }
            }
        }
        for e in &entries {
            let Entry::Include {
                line,
                option,
                path: written,
            } = e
            else {
                continue;
            };
            match include_path(&file, written) {
                Ok(None) => {}
                Ok(Some(target)) => {
                    if !seen.contains(&target) {
                        seen.push(target.clone());
                        out.includes.push(target.clone());
                        todo.push((target, Some((file.clone(), *line, *option, written.clone()))));
                    }
                }
                Err(why) => diags.push(
                    Diagnostic::error(
                        "kiln::outside_context",
                        span,
                        format!("`{file}` line {line} reads `{}`: {why}", format!("{option} {written}").trim_end()),
                    )
                    .with_help("keep the files a requirements file includes inside the build context, with paths relative to it"),
                ),
            }
        }
    }
    out.includes.sort();
    out.sources.sort();
    out
}

/// What kiln can tell of the CUDA an image carries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ImageCuda {
    /// This CUDA (major.minor).
    Version(String),
    /// Some CUDA, version unknown (tensorflow/tensorflow:…-gpu).
    Some,
    /// None: an official python, Debian or Ubuntu image.
    None,
    /// Nothing known (a private image, not resolved).
    Unknown,
}

/// The CUDA `base` carries: its config's `CUDA_VERSION` (set by the
/// nvidia/cuda images and those built on them) when the caller resolved
/// it, else what the well-known images' tags say.
fn image_cuda(base: &Base) -> ImageCuda {
    let major_minor = |v: &str| -> Option<String> {
        let parts: Vec<&str> = v.split('.').take(2).collect();
        (parts.len() == 2
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.parse::<u32>().is_ok()))
        .then(|| parts.join("."))
    };
    if let Some(v) = base
        .resolved
        .as_ref()
        .and_then(|r| r.config.env("CUDA_VERSION"))
        .and_then(major_minor)
    {
        return ImageCuda::Version(v);
    }
    let name = base.reference.familiar_name();
    let tag = base.reference.tag.clone().unwrap_or_default();
    match name.as_str() {
        "nvidia/cuda" | "nvcr.io/nvidia/cuda" => major_minor(tag.split('-').next().unwrap_or(""))
            .map_or(ImageCuda::Some, ImageCuda::Version),
        "pytorch/pytorch" => match tag.split('-').find_map(|p| p.strip_prefix("cuda")) {
            Some(v) => major_minor(v).map_or(ImageCuda::Some, ImageCuda::Version),
            None if tag.is_empty() || tag == "latest" => ImageCuda::Some,
            None => ImageCuda::Unknown,
        },
        "tensorflow/tensorflow" => {
            if tag.contains("gpu") {
                // `2.16.1-gpu`: the CUDA that release is built for.
                tf_gpu_release(&tag)
                    .and_then(|r| r.cuda.first())
                    .map_or(ImageCuda::Some, |b| ImageCuda::Version(b.cuda.clone()))
            } else {
                ImageCuda::None
            }
        }
        "python"
        | "debian"
        | "ubuntu"
        | "buildpack-deps"
        | "continuumio/miniconda3"
        | "condaforge/miniforge3"
        | "mambaorg/micromamba" => ImageCuda::None,
        _ => ImageCuda::Unknown,
    }
}

/// The release of a `tensorflow/tensorflow:2.16.1-gpu` tag, when kiln's
/// data knows it.
fn tf_gpu_release(tag: &str) -> Option<&'static crate::compat::Release> {
    let version = tag.split('-').next().unwrap_or("");
    crate::compat::CompatData::builtin().release(crate::compat::Framework::TensorFlow, version)
}

/// What kiln can tell of the cuDNN an image carries: `Some(Some("9"))`,
/// `Some(None)` for an image known to carry none, `None` when it cannot
/// tell. From the config (`NV_CUDNN_VERSION`, set by nvidia/cuda's cuDNN
/// images) when the caller resolved it, else from well-known tags.
fn image_cudnn(base: &Base) -> Option<Option<String>> {
    if let Some(config) = base.resolved.as_ref().map(|r| &r.config)
        && config.env("CUDA_VERSION").is_some()
    {
        let v = config
            .env("NV_CUDNN_VERSION")
            .or_else(|| config.env("CUDNN_VERSION"));
        return Some(v.map(|v| v.split('.').next().unwrap_or(v).to_string()));
    }
    let name = base.reference.familiar_name();
    let tag = base.reference.tag.clone().unwrap_or_default();
    let parts: Vec<&str> = tag.split('-').collect();
    match name.as_str() {
        "nvidia/cuda" | "nvcr.io/nvidia/cuda" => {
            if let Some(n) = parts
                .iter()
                .find_map(|p| crate::compat::cudnn_of_tag_part(p))
            {
                return Some(Some(n));
            }
            if parts.contains(&"cudnn") {
                let cuda: Vec<&str> = parts.first()?.split('.').take(2).collect();
                return crate::compat::CompatData::builtin()
                    .cuda_image_cudnn(&cuda.join("."))
                    .map(Some);
            }
            // `12.4.1-runtime-ubuntu22.04`, `-base-`, `-devel-`: no cuDNN.
            parts
                .iter()
                .any(|p| matches!(*p, "runtime" | "devel" | "base"))
                .then_some(None)
        }
        "pytorch/pytorch" => parts
            .iter()
            .find_map(|p| crate::compat::cudnn_of_tag_part(p))
            .map(Some),
        "tensorflow/tensorflow" if tag.contains("gpu") => tf_gpu_release(&tag)
            .and_then(|r| r.cuda.first())
            .map(|b| Some(b.cudnn.split('.').next().unwrap_or("").to_string())),
        _ => None,
    }
}

/// An explicit `base` against the variant's CUDA and framework: where the
/// CUDA must come from the base (`from="base"`, or a framework whose wheels
/// do not bring it), the base must carry that CUDA; a CPU variant on a
/// CUDA base wastes it; a framework image under the same framework holds
/// the framework twice.
/// A `builder` with another CUDA than the variant's: what it compiles
/// (nvcc, CUDA extensions) would target a CUDA the image does not run.
/// `conda` runs `conda env create` in the builder: an explicit `builder`
/// that kiln knows has no `conda` (the official python, Debian, Ubuntu and
/// nvidia/cuda images; micromamba's image has `micromamba` only) would fail
/// there with "conda: not found".
fn check_conda_builder(builder: &Base, conda: &Spanned<String>, diags: &mut Diagnostics) {
    let Some(span) = builder.span else {
        return;
    };
    let name = builder.reference.familiar_name();
    let without_conda = matches!(
        name.as_str(),
        "python"
            | "debian"
            | "ubuntu"
            | "buildpack-deps"
            | "nvidia/cuda"
            | "nvcr.io/nvidia/cuda"
            | "tensorflow/tensorflow"
            | "mambaorg/micromamba"
    );
    if without_conda {
        diags.push(
            Diagnostic::error(
                "kiln::builder_without_conda",
                span,
                format!(
                    "`conda \"{}\"` builds the environment in the builder, and `{}` has no `conda`",
                    conda.value,
                    builder.reference.familiar_name_tag()
                ),
            )
            .with_help(format!(
                "leave out `builder` (kiln then uses {}), or name an image with conda in it (continuumio/miniconda3, condaforge/miniforge3)",
                crate::lower::CONDA_BUILDER
            )),
        );
    }
}

fn check_builder_cuda(builder: &Base, gpu: Option<&Gpu>, diags: &mut Diagnostics) {
    let (Some(span), Some(g)) = (builder.span, gpu) else {
        return;
    };
    let wanted: Vec<&str> = g.cuda.split('.').collect();
    if let ImageCuda::Version(v) = image_cuda(builder)
        && v.split('.').zip(&wanted).any(|(have, want)| have != *want)
    {
        diags.push(
            Diagnostic::error(
                "kiln::cuda_mismatch",
                span,
                format!(
                    "the builder `{}` carries CUDA {v}, but the variant builds for CUDA {}: what it compiles would target another CUDA than the image's",
                    builder.reference.familiar_name_tag(),
                    g.cuda
                ),
            )
            .with_help(format!(
                "use a CUDA {} devel image as `builder` (nvidia/cuda:{}.x-cudnn-devel-…), or write `cuda \"{v}\"`",
                g.cuda, g.cuda
            )),
        );
    }
}

fn check_base_cuda(
    runtime: &Base,
    gpu: Option<&Gpu>,
    framework: Option<&FrameworkPlan>,
    diags: &mut Diagnostics,
) {
    let Some(base_span) = runtime.span else {
        return;
    };
    let image = runtime.reference.familiar_name_tag();
    let cuda = image_cuda(runtime);
    if let Some(g) = gpu {
        let from_base = g.from == CudaFrom::Base || framework.is_some_and(|f| !f.wheels_bring_cuda);
        if from_base {
            let wanted: Vec<&str> = g.cuda.split('.').collect();
            match &cuda {
                ImageCuda::Version(v)
                    if v.split('.').zip(&wanted).any(|(have, want)| have != *want) =>
                {
                    diags.push(
                        Diagnostic::error(
                            "kiln::cuda_mismatch",
                            g.span,
                            format!(
                                "the variant's CUDA {} comes from the base, but `{image}` carries CUDA {v}",
                                g.cuda
                            ),
                        )
                        .with_label("not the base's CUDA")
                        .with_help(format!(
                            "write `cuda \"{v}\"`, or use a base with CUDA {} (leave out `base` and kiln picks the nvidia/cuda image)",
                            g.cuda
                        )),
                    );
                }
                _ if g.cudnn.is_some() && !matches!(cuda, ImageCuda::None) => {
                    let want = g.cudnn.as_deref().unwrap_or("");
                    let want_major = want.split('.').next().unwrap_or(want);
                    let have = image_cudnn(runtime);
                    let wrong = match &have {
                        Some(Some(n)) => n != want_major,
                        Some(None) => true,
                        None => false,
                    };
                    if wrong {
                        let carries = match &have {
                            Some(Some(n)) => format!("cuDNN {n}"),
                            _ => "no cuDNN".to_string(),
                        };
                        diags.push(
                            Diagnostic::error(
                                "kiln::cudnn_mismatch",
                                g.cudnn_span,
                                format!(
                                    "the variant asks for cuDNN {want}, which comes from the base here, but `{image}` carries {carries}"
                                ),
                            )
                            .with_label("not the base's cuDNN")
                            .with_help(match &have {
                                Some(Some(n)) => format!("write `cudnn=\"{n}\"`, or use a base with cuDNN {want_major}"),
                                _ => "use a `cudnn` image as `base` (nvidia/cuda:…-cudnn-runtime-…), or leave out `cudnn=`".to_string(),
                            }),
                        );
                    }
                }
                ImageCuda::None => {
                    diags.push(
                        Diagnostic::error(
                            "kiln::no_cuda_in_base",
                            base_span,
                            format!(
                                "`{image}` carries no CUDA, and the variant's CUDA {} must come from the base",
                                g.cuda
                            ),
                        )
                        .with_help(format!(
                            "use an nvidia/cuda {} runtime image as `base`, or leave out `base` and kiln picks it",
                            g.cuda
                        )),
                    );
                }
                _ => {}
            }
        }
    } else if let Some(fw) = framework
        && matches!(cuda, ImageCuda::Version(_) | ImageCuda::Some)
    {
        diags.push(
            Diagnostic::warning(
                "kiln::cuda_unused",
                base_span,
                format!(
                    "`{image}` carries CUDA, but this variant names no `cuda`: {} {} is installed as its CPU build, and the image carries CUDA for nothing",
                    fw.name, fw.version
                ),
            )
            .with_help("add `cuda \"X.Y\"` (the base's CUDA) for a GPU build, or leave out `base` for a CPU image on python slim"),
        );
    }
    if let Some(fw) = framework {
        let image_name = runtime.reference.familiar_name();
        let same = matches!(
            (fw.name.as_str(), image_name.as_str()),
            ("tensorflow", "tensorflow/tensorflow") | ("pytorch", "pytorch/pytorch")
        );
        if same {
            diags.push(
                Diagnostic::warning(
                    "kiln::framework_twice",
                    base_span,
                    format!(
                        "`{image}` has {} installed already, outside the venv; `framework` installs {} {} again in /opt/venv: the image holds it twice",
                        fw.name, fw.name, fw.version
                    ),
                )
                .with_help(format!(
                    "leave out `base`: kiln installs {} built for the variant's CUDA on python slim, once",
                    fw.name
                )),
            );
        }
    }
}
