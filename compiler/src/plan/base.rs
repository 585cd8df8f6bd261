//! Choosing the runtime and builder base images.

use miette::SourceSpan;

use super::{Base, Gpu};
use crate::Options;
use crate::compat::{self, CudaFlavor};
use crate::diag::{Diagnostic, Diagnostics};
use crate::image_ref::ImageRef;
use crate::llb::Platform;
use crate::model::{CudaFrom, Settings};

/// Distros kiln knows to carry no glibc or no python usable by a venv.
const NO_GLIBC: &[&str] = &["alpine", "busybox"];

pub(super) fn choose(
    s: &Settings,
    python: &str,
    gpu: Option<&Gpu>,
    opts: &Options,
    platform: &Platform,
    diags: &mut Diagnostics,
    notes: &mut Vec<String>,
) -> Option<(Base, Base)> {
    let data = compat::CompatData::builtin();
    // `distro=` picks the nvidia/cuda image of `from="base"`; anywhere else
    // nothing reads it.
    if let Some(c) = &s.cuda
        && let Some(d) = &c.value.distro
        && (s.base.is_some() || gpu.is_none_or(|g| g.from != CudaFrom::Base))
    {
        let why = if s.base.is_some() {
            "the recipe's `base` is the image"
        } else {
            "CUDA comes as the framework's wheels on python slim, not from an nvidia/cuda image"
        };
        diags.push(
            Diagnostic::warning(
                "kiln::distro_unused",
                c.span,
                format!("`distro=\"{d}\"` has no effect here: {why}"),
            )
            .with_help(format!(
                "write `cuda \"{}\" from=\"base\" distro=\"{d}\"` for an nvidia/cuda {d} base, or drop `distro=`",
                c.value.version
            )),
        );
    }
    let runtime = if let Some(b) = &s.base {
        let reference = ImageRef::parse(&b.value).ok()?;
        if let Some(g) = gpu
            && g.from == CudaFrom::Base
        {
            notes.push(format!(
                "base: `{}` as written; `cuda from=\"base\"` does not replace an explicit base",
                b.value
            ));
        } else {
            notes.push(format!("base: `{}` as written in the recipe", b.value));
        }
        let mut base = described(
            reference,
            "the recipe's `base`",
            Some(b.span),
            opts,
            platform,
        );
        check_base(&mut base, python, b.span, s, true, diags, notes);
        base
    } else if let Some(g) = gpu.filter(|g| g.from == CudaFrom::Base) {
        // nvidia/cuda runtime image whose distro python is the recipe's.
        let distros = data.cuda_distros(&g.cuda);
        if distros.is_empty() {
            let known: Vec<String> = data.cuda_versions();
            diags.push(
                Diagnostic::error(
                    "kiln::unknown_cuda",
                    g.span,
                    format!("kiln knows no nvidia/cuda image for CUDA {}", g.cuda),
                )
                .with_help(format!("known CUDA versions: {}", known.join(", "))),
            );
            return None;
        }
        // `distro="jammy"` is `ubuntu22.04`.
        let wanted_distro = s
            .cuda
            .as_ref()
            .and_then(|c| c.value.distro.clone())
            .map(|d| {
                data.distros
                    .iter()
                    .find(|x| x.alias.as_deref() == Some(d.as_str()))
                    .map_or(d, |x| x.id.clone())
            });
        let chosen = match &wanted_distro {
            Some(d) => {
                if !distros.iter().any(|x| x == d) {
                    diags.push(
                        Diagnostic::error(
                            "kiln::unknown_cuda",
                            g.span,
                            format!("nvidia/cuda publishes no CUDA {} image for `{d}`", g.cuda),
                        )
                        .with_help(format!(
                            "CUDA {} images exist for: {}",
                            g.cuda,
                            distros.join(", ")
                        )),
                    );
                    return None;
                }
                d.clone()
            }
            None => match distros.iter().find(|d| {
                data.distro_python(d)
                    .is_some_and(|p| same_python(p, python))
            }) {
                Some(d) => d.clone(),
                None => {
                    let offered: Vec<String> = distros
                        .iter()
                        .map(|d| format!("{d} (python {})", data.distro_python(d).unwrap_or("?")))
                        .collect();
                    diags.push(
                        Diagnostic::error(
                            "kiln::python_mismatch",
                            g.span,
                            format!(
                                "no nvidia/cuda {} image has python {python} as its distro python",
                                g.cuda
                            ),
                        )
                        .with_help(format!(
                            "with `from=\"base\"` python comes from the distro: {}; change `python`, or drop `from=\"base\"` to use CUDA wheels on python:{python}-slim",
                            offered.join(", ")
                        )),
                    );
                    return None;
                }
            },
        };
        if let Some(distro_py) = data.distro_python(&chosen)
            && !same_python(distro_py, python)
        {
            diags.push(
                Diagnostic::error(
                    "kiln::python_mismatch",
                    g.span,
                    format!(
                        "{chosen} ships python {distro_py}, but the recipe asks for python {python}"
                    ),
                )
                .with_help(format!(
                    "write `python \"{distro_py}\"`, or pick another `distro=`"
                )),
            );
            return None;
        }
        // The image's cuDNN is its CUDA's (nvidia/cuda publishes one cuDNN
        // flavour per CUDA release): a `cudnn=` it does not meet is an error.
        if let (Some(want), Some(have)) = (&g.cudnn, data.cuda_image_cudnn(&g.cuda)) {
            let want_major = want.split('.').next().unwrap_or(want);
            if want_major != have {
                let others = data.cudas_with_cudnn(want_major);
                diags.push(
                    Diagnostic::error(
                        "kiln::cudnn_mismatch",
                        g.cudnn_span,
                        format!(
                            "nvidia/cuda's CUDA {} images carry cuDNN {have}, not the {want} this variant asks for",
                            g.cuda
                        ),
                    )
                    .with_help(if others.is_empty() {
                        format!("write `cudnn=\"{have}\"`, or leave out `cudnn=`")
                    } else {
                        format!(
                            "write `cudnn=\"{have}\"`, or a CUDA whose images carry cuDNN {want_major}: {}",
                            others.join(", ")
                        )
                    }),
                );
                return None;
            }
        }
        let cudnn = true;
        let Some(tag) = data.cuda_image(&g.cuda, &chosen, CudaFlavor::Runtime, cudnn) else {
            // nvidia/cuda does not publish a cuDNN flavour for every distro
            // of a CUDA release (12.5.1 has none on ubuntu24.04): name the
            // distros that have one, with their python, and the CUDA
            // releases that have one on this distro.
            let with_cudnn: Vec<String> = data
                .cuda_cudnn_distros(&g.cuda)
                .iter()
                .map(|d| format!("{d} (python {})", data.distro_python(d).unwrap_or("?")))
                .collect();
            let other_cudas: Vec<String> = data
                .cudas_with_cudnn_on(&chosen)
                .into_iter()
                .filter(|c| c.split('.').next() == g.cuda.split('.').next())
                .collect();
            let mut help = Vec::new();
            if !with_cudnn.is_empty() {
                help.push(format!(
                    "CUDA {} cuDNN images exist for {}: change `python` (or `distro=`) to one of them",
                    g.cuda,
                    with_cudnn.join(", ")
                ));
            }
            // A framework release is built for its own CUDA: another CUDA
            // would only trade this error for that one.
            if !other_cudas.is_empty() && s.framework.is_none() {
                help.push(format!(
                    "or use a CUDA with a cuDNN image on {chosen}: {}",
                    other_cudas.join(", ")
                ));
            }
            help.push(format!(
                "or drop `from=\"base\"` to use CUDA wheels on python:{python}-slim"
            ));
            diags.push(
                Diagnostic::error(
                    "kiln::unknown_cuda",
                    g.span,
                    format!(
                        "nvidia/cuda publishes no cuDNN runtime image for CUDA {} on {chosen} (only {}-runtime-{chosen}, without cuDNN)",
                        g.cuda,
                        data.cuda_images(&g.cuda)
                            .map_or(g.cuda.as_str(), |c| c.full.as_str())
                    ),
                )
                .with_help(help.join("; ")),
            );
            return None;
        };
        let reference = ImageRef::parse(&tag).ok()?;
        notes.push(format!(
            "base: {tag}, because `cuda \"{}\" from=\"base\"` and {chosen}'s python is {python}; python is installed from the distro",
            g.cuda
        ));
        let mut base = described(
            reference,
            "nvidia/cuda runtime for the variant's CUDA",
            None,
            opts,
            platform,
        );
        base.python_from_apt = true;
        base
    } else {
        let tag = data
            .slim_image(python)
            .unwrap_or_else(|| format!("python:{python}-slim"));
        let reference = ImageRef::parse(&tag).ok()?;
        let why = if gpu.is_some() {
            notes.push(if s.framework.is_some() {
                format!(
                    "base: {tag}; the GPU variant gets CUDA from the framework's wheels, so CUDA is installed once, by pip"
                )
            } else {
                format!(
                    "base: {tag}; the GPU variant has no framework: its CUDA libraries are only what the pip requirements install (NVIDIA's `nvidia-*` wheels)"
                )
            });
            "slim python; CUDA comes as wheels"
        } else {
            notes.push(format!("base: {tag} (no `base` given)"));
            "slim python for the recipe's python"
        };
        described(reference, why, None, opts, platform)
    };

    let builder = match &s.builder {
        Some(b) => {
            let reference = ImageRef::parse(&b.value).ok()?;
            notes.push(format!(
                "builder: `{}` as written; only /opt/venv reaches the image, so its python must be the runtime's ({python})",
                b.value
            ));
            let mut base = described(
                reference,
                "the recipe's `builder`",
                Some(b.span),
                opts,
                platform,
            );
            check_base(&mut base, python, b.span, s, false, diags, notes);
            base
        }
        None => {
            let mut b = runtime.clone();
            b.why = "the runtime base, so the venv's python is the image's".to_string();
            b
        }
    };
    // The venv's python is a link to its builder's interpreter: a distro
    // python (/usr/bin) in the builder needs it in the runtime too, and a
    // python image's (/usr/local/bin) likewise.
    let mut runtime = runtime;
    if let Some(b) = &s.builder
        && builder.python_from_apt != runtime.python_from_apt
    {
        let from_base = gpu.is_some_and(|g| g.from == CudaFrom::Base);
        if s.base.is_none() && !from_base && builder.python_from_apt {
            // The Dockerfile pattern: a devel builder, its runtime image.
            let mut reference = builder.reference.clone();
            if reference.familiar_name() == "nvidia/cuda"
                && let Some(tag) = &reference.tag
                && tag.contains("-devel")
            {
                reference.tag = Some(tag.replace("-devel", "-runtime"));
                reference.digest = None;
            }
            notes.retain(|n| !n.starts_with("base: "));
            notes.push(format!(
                "base: {}, on the builder's distro: the venv's python comes from the distro's packages in both",
                reference.familiar_name_tag()
            ));
            let mut base = described(
                reference,
                "the builder's distro, so the venv's python is there too",
                None,
                opts,
                platform,
            );
            base.python_from_apt = true;
            runtime = base;
        } else {
            let (bp, rp) = if builder.python_from_apt {
                (
                    "the distro's /usr/bin/python3",
                    "its own python in /usr/local/bin",
                )
            } else {
                (
                    "its own python in /usr/local/bin",
                    "the distro's /usr/bin/python3",
                )
            };
            diags.push(
                Diagnostic::error(
                    "kiln::python_mismatch",
                    b.span,
                    format!(
                        "the builder `{}` runs {bp}, but the runtime `{}` has {rp}: the venv links to its builder's python, which the image would not have",
                        b.value,
                        runtime.reference.familiar_name_tag()
                    ),
                )
                .with_help(format!(
                    "use a builder and a runtime of one kind: python:{python} with python:{python}-slim, or nvidia/cuda devel with its runtime image"
                )),
            );
            return None;
        }
    }
    Some((runtime, builder))
}

fn described(
    reference: ImageRef,
    why: &str,
    span: Option<SourceSpan>,
    opts: &Options,
    platform: &Platform,
) -> Base {
    let resolved = opts.resolved_image(&reference, platform).cloned();
    Base {
        reference,
        why: why.to_string(),
        span,
        resolved,
        python_from_apt: false,
    }
}

/// Checks an explicit base: no glibc → error; a distro image without python
/// → python from the distro, which must match the recipe's.
fn check_base(
    base: &mut Base,
    python: &str,
    span: SourceSpan,
    s: &Settings,
    runtime: bool,
    diags: &mut Diagnostics,
    notes: &mut Vec<String>,
) {
    let data = compat::CompatData::builtin();
    let name = base.reference.familiar_name();
    let tag = base.reference.tag.clone().unwrap_or_default();
    let last = name.rsplit('/').next().unwrap_or(&name).to_string();
    let shown = base.reference.familiar_name_tag();
    if name == "scratch" || name.starts_with("gcr.io/distroless/") {
        let what = if name == "scratch" {
            format!("`{name}` is the empty image: no python, no glibc, no shell")
        } else {
            format!("`{shown}` has no shell and no package manager")
        };
        diags.push(
            Diagnostic::error(
                "kiln::no_shell",
                span,
                format!("{what}, and kiln's build steps (the venv, the user, apt) run in a shell on it"),
            )
            .with_help(format!(
                "leave out `base` (kiln uses python:{python}-slim) or pick a Debian or Ubuntu based image"
            )),
        );
        return;
    }
    if NO_GLIBC.contains(&last.as_str()) || tag.contains("alpine") || tag.contains("musl") {
        let what = if s.conda.is_some() {
            "a conda environment"
        } else {
            "the venv's python and wheels"
        };
        diags.push(
            Diagnostic::error(
                "kiln::no_glibc",
                span,
                format!("`{shown}` has no glibc, so {what} cannot run on it"),
            )
            .with_help("pick a glibc base such as python:3.11-slim or debian:bookworm-slim; manylinux wheels and conda need glibc"),
        );
        return;
    }
    // kiln installs system packages with apt-get: an RPM (or other) distro
    // has none. The packages that run on this image: the runtime's, and the
    // build stage's where the runtime base is also the builder.
    let apt_here: Vec<&crate::model::Spanned<crate::model::Apt>> = s
        .apt
        .iter()
        .filter(|a| match a.value.stage {
            crate::model::Stage::Runtime => runtime,
            crate::model::Stage::Build => !runtime || s.builder.is_none(),
        })
        .collect();
    if let Some(first) = apt_here.first()
        && let Some(family) = non_apt_distro(&name, &tag)
    {
        diags.push(
            Diagnostic::error(
                "kiln::no_apt",
                first.span,
                format!(
                    "`{shown}` is {family}, without apt-get, and kiln installs `apt` packages with apt-get"
                ),
            )
            .with_help(
                "pick a Debian or Ubuntu based image (python:…-slim, nvidia/cuda:…-ubuntu22.04), or install the packages in an image of your own and name it as `base`",
            ),
        );
        return;
    }
    // Python from the image's tag when it says so (python:3.10-slim-bullseye).
    if last == "python" {
        let tag_py: String = tag.split('-').next().unwrap_or("").to_string();
        let parts: Vec<&str> = tag_py.split('.').collect();
        if parts.len() >= 2 && parts.iter().all(|p| p.parse::<u32>().is_ok()) {
            let tag_mm = parts[..2].join(".");
            if !same_python(&tag_py, python) {
                diags.push(
                    Diagnostic::error(
                        "kiln::python_mismatch",
                        span,
                        format!("`{shown}` carries python {tag_py}, but the recipe asks for python {python}"),
                    )
                    .with_help(format!("write `python \"{tag_mm}\"`, or a python:{python}-… base")),
                );
            }
        }
        return;
    }
    // An image built on the official python images says its python in
    // PYTHON_VERSION (3.11.2): the venv's python is that one.
    if let Some(v) = base
        .resolved
        .as_ref()
        .and_then(|r| r.config.env("PYTHON_VERSION"))
    {
        let have: Vec<&str> = v.split('.').take(2).collect();
        if have.len() == 2 && !same_python(v, python) {
            let have = have.join(".");
            diags.push(
                Diagnostic::error(
                    "kiln::python_mismatch",
                    span,
                    format!(
                        "`{shown}` carries python {v} (its PYTHON_VERSION), but the recipe asks for python {python}"
                    ),
                )
                .with_help(format!(
                    "write `python \"{have}\"`, or pick a base with python {python}"
                )),
            );
        }
        return;
    }
    // Distro images (nvidia/cuda, ubuntu, debian) bring no python: install the distro's.
    let distro = compat::distro_of_image(&name, &tag);
    if let Some(distro) = distro {
        base.python_from_apt = true;
        match data.distro_python(&distro) {
            Some(py) if !same_python(py, python) => {
                diags.push(
                    Diagnostic::error(
                        "kiln::python_mismatch",
                        span,
                        format!("`{shown}` is {distro}, whose python is {py}, but the recipe asks for python {python}"),
                    )
                    .with_help(format!("write `python \"{py}\"`, or pick a base whose distro ships python {python}")),
                );
            }
            Some(_) => notes.push(format!(
                "python: {python} from {distro}'s packages (the base has none)"
            )),
            None => notes.push(format!(
                "python: from {distro}'s packages (kiln does not know its version)"
            )),
        }
    }
}

/// The distro family of an image known not to use apt (RPM-based and
/// others), from its name or, for nvidia/cuda, its tag.
fn non_apt_distro(name: &str, tag: &str) -> Option<&'static str> {
    let last = name.rsplit('/').next().unwrap_or(name);
    let by_name = [
        ("fedora", "Fedora"),
        ("centos", "CentOS"),
        ("rockylinux", "Rocky Linux"),
        ("almalinux", "AlmaLinux"),
        ("amazonlinux", "Amazon Linux"),
        ("oraclelinux", "Oracle Linux"),
        ("archlinux", "Arch Linux"),
        ("ubi8", "Red Hat UBI"),
        ("ubi9", "Red Hat UBI"),
        ("ubi10", "Red Hat UBI"),
        ("ubi8-minimal", "Red Hat UBI"),
        ("ubi9-minimal", "Red Hat UBI"),
        ("leap", "openSUSE"),
        ("tumbleweed", "openSUSE"),
    ];
    if let Some((_, family)) = by_name.iter().find(|(n, _)| *n == last) {
        return Some(family);
    }
    if name == "nvidia/cuda" || name == "nvcr.io/nvidia/cuda" {
        let tag = tag.to_ascii_lowercase();
        for (marker, family) in [
            ("rockylinux", "Rocky Linux"),
            ("ubi", "Red Hat UBI"),
            ("centos", "CentOS"),
            ("oraclelinux", "Oracle Linux"),
            ("amzn", "Amazon Linux"),
        ] {
            if tag.contains(marker) {
                return Some(family);
            }
        }
    }
    None
}

/// Whether an image's python (`3.11`, or `3.11.2` from PYTHON_VERSION or a
/// tag) is the recipe's (`3.11`, or `3.11.4` with a patch): equal in every
/// part both give, so `python:3.11-slim` serves `3.11.4` and `3.11.4-slim`
/// serves `3.11`.
fn same_python(have: &str, want: &str) -> bool {
    have.split('.').zip(want.split('.')).all(|(a, b)| a == b)
}
