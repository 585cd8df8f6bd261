//! Resolving `framework` + `python` + the variant's `cuda` into what to install.

use miette::SourceSpan;

use super::Gpu;
use crate::compat::{self, CompatData, Framework, Install};
use crate::diag::{Diagnostic, Diagnostics};
use crate::llb::Platform;
use crate::model::{self, FrameworkReq, Settings, Spanned};

/// The framework install step: what pip installs, from where, and how the
/// build checks it got the right build.
#[derive(Debug, Clone)]
pub struct FrameworkPlan {
    pub name: String,
    pub version: String,
    /// Requirement specs for pip, the framework first.
    pub packages: Vec<String>,
    /// Replaces PyPI for this step (PyTorch's per-CUDA indexes).
    pub index_url: Option<String>,
    pub extra_index_url: Option<String>,
    pub find_links: Option<String>,
    /// Python that fails unless the installed build is the one asked for.
    pub verify: Option<String>,
    /// Projects that must come from the framework's index (torchvision…).
    pub companions: Vec<String>,
    /// Companion releases that go with this framework release.
    pub companion_versions: Vec<(String, String)>,
    /// The GPU build's wheels bring the CUDA libraries themselves.
    pub wheels_bring_cuda: bool,
    pub span: SourceSpan,
}

impl FrameworkPlan {
    /// The companion release that goes with this one (`torchvision` →
    /// `0.19.1` for torch 2.4.1), when the data knows it.
    pub fn companion_version(&self, name: &str) -> Option<&str> {
        let name = model::requirement_name(name);
        self.companion_versions
            .iter()
            .find(|(n, _)| model::requirement_name(n) == name)
            .map(|(_, v)| v.as_str())
    }

    /// A project that went with earlier releases of this framework and
    /// with none kiln knows from this one on (torchaudio after 2.11): the
    /// last framework release it went with, and its own release there.
    pub fn retired_companion(&self, name: &str) -> Option<(String, String)> {
        let name = model::requirement_name(name);
        if self.companion_version(&name).is_some() {
            return None;
        }
        let fw = Framework::from_name(&self.name)?;
        CompatData::builtin()
            .releases(fw)
            .iter()
            .filter(|r| compat::version_cmp(&r.version, &self.version).is_lt())
            .rev()
            .find_map(|r| {
                r.companions
                    .iter()
                    .find(|c| model::requirement_name(&c.name) == name)
                    .and_then(|c| c.version.clone())
                    .map(|v| (r.version.clone(), v))
            })
    }

    /// The projects that are this framework itself (one of its builds), as
    /// pip names them: a `pip` requirement for one of them would install a
    /// second build over the one the framework step chose.
    pub fn is_itself(&self, spec: &str) -> bool {
        let name = model::requirement_name(spec);
        let family: &[&str] = match self.name.as_str() {
            "pytorch" => &["torch"],
            "tensorflow" => &[
                "tensorflow",
                "tensorflow-cpu",
                "tensorflow-gpu",
                "tensorflow-intel",
            ],
            "jax" => &["jax", "jaxlib"],
            _ => &[],
        };
        family.contains(&name.as_str())
            || self
                .packages
                .first()
                .is_some_and(|p| model::requirement_name(p) == name)
    }

    /// Whether an extra of the framework's project chooses its build (the
    /// CPU or a CUDA one), which the framework step does per variant:
    /// TensorFlow's `and-cuda`, JAX's `cpu`, `cuda12`, `cuda12_pip`,
    /// `cuda12_local`, `tpu`, `rocm`.
    pub fn is_build_extra(&self, extra: &str) -> bool {
        let extra = extra.trim().to_ascii_lowercase().replace('_', "-");
        match self.name.as_str() {
            "tensorflow" => extra == "and-cuda",
            "jax" => {
                ["cpu", "tpu", "cuda", "rocm"].contains(&extra.as_str())
                    || extra.starts_with("cuda")
                    || extra.starts_with("rocm")
            }
            _ => false,
        }
    }

    /// Whether `spec`, a requirement of this framework's project, is met by
    /// the framework's release: a bare name, `==` the release (a local
    /// label such as `+cpu` or `+cu121` names a build, and the framework
    /// step picks the variant's), or a range that holds it. A URL is a
    /// build of its own.
    pub fn admits(&self, spec: &str) -> bool {
        let spec = spec.trim();
        if spec.contains('@') {
            return false;
        }
        // Extras do not change the release: `tensorflow[and-cuda]==2.15.0`.
        let plain = match spec.split_once('[') {
            Some((before, after)) => match after.split_once(']') {
                Some((_, rest)) => format!("{before}{rest}"),
                None => spec.to_string(),
            },
            None => spec.to_string(),
        };
        if let Some((_, v)) = model::exact_pin(&plain) {
            let release = v.split('+').next().unwrap_or(&v);
            // The release, or the post release this variant's framework
            // step installs for it (2.15.0.post1 for 2.15.0's `and-cuda`);
            // another post release is another release (PEP 440).
            let installed = self
                .packages
                .first()
                .and_then(|p| p.split_once("=="))
                .map(|(_, v)| v.trim().to_string());
            return model::same_version(release, &self.version)
                || installed.is_some_and(|i| model::same_version(release, &i));
        }
        model::excludes_release(spec, &self.version).is_none()
    }

    /// Take `spec` into the framework step if it names a companion project.
    pub fn adopt_companion(&mut self, spec: &str) -> bool {
        let name = model::requirement_name(spec);
        if self
            .companions
            .iter()
            .any(|c| model::requirement_name(c) == name)
        {
            self.packages.push(spec.to_string());
            true
        } else {
            false
        }
    }
}

pub(super) fn resolve(
    req: &Spanned<FrameworkReq>,
    python: &str,
    gpu: Option<&Gpu>,
    platform: &Platform,
    settings: &Settings,
    diags: &mut Diagnostics,
    notes: &mut Vec<String>,
) -> Option<FrameworkPlan> {
    let data = CompatData::builtin();
    let fw = Framework::from_name(&req.value.name)?;
    let span = req.span;
    let label = fw.name();

    let release = match &req.value.version {
        // `2.4` is `2.4.0` to pip (`torch==2.4` installs 2.4.0), and so to
        // kiln.
        Some(v) => match data.release(fw, v).or_else(|| {
            (v.split('.').count() == 2)
                .then(|| data.release(fw, &format!("{v}.0")))
                .flatten()
        }) {
            Some(r) => ReleaseChoice::Known(r),
            None => {
                let newest = data.releases(fw).last().map(|r| r.version.clone());
                let is_newer = newest
                    .as_deref()
                    .is_some_and(|n| compat::version_cmp(v, n) == std::cmp::Ordering::Greater);
                if is_newer {
                    ReleaseChoice::Newer(v.clone())
                } else {
                    let near = nearest_versions(data, fw, v);
                    diags.push(
                        Diagnostic::error(
                            "kiln::unknown_release",
                            span,
                            format!("{label} {v} is not a release kiln knows"),
                        )
                        .with_help(format!(
                            "known {label} releases near it: {}",
                            near.join(", ")
                        )),
                    );
                    return None;
                }
            }
        },
        None => {
            // The newest release that fits this variant: its python, its
            // CUDA (with a build for this platform), or CPU wheels for it.
            // Wheels are per OS and architecture: linux/amd64/v3 runs the
            // x86_64 ones.
            let platform_name = format!("{}/{}", platform.os, platform.architecture);
            let for_python: Vec<_> = data
                .releases(fw)
                .iter()
                .filter(|r| r.pythons.iter().any(|p| p == python))
                .collect();
            let fits = |r: &&compat::Release| match gpu {
                None => r.cpu_for(&platform_name).is_some(),
                Some(g) => r
                    .cuda
                    .iter()
                    .any(|b| b.cuda == g.cuda && b.platforms.contains(&platform_name)),
            };
            match for_python.iter().rfind(|r| fits(r)) {
                Some(r) => {
                    let what = match gpu {
                        Some(g) => format!("python {python} and CUDA {}", g.cuda),
                        None => format!("python {python}"),
                    };
                    notes.push(format!(
                        "framework: no version given; {label} {} is the newest release kiln knows for {what} on {platform_name}",
                        r.version
                    ));
                    // Held back by this variant's CUDA or platform: other
                    // variants of the recipe may get a newer release.
                    if let Some(newest) = for_python.last()
                        && newest.version != r.version
                    {
                        diags.push(
                            Diagnostic::warning(
                                "kiln::framework_unpinned",
                                span,
                                format!(
                                    "no {label} version: this variant gets {label} {}, the newest with {what} on {platform_name}, while {} is newer; variants without that limit get another release",
                                    r.version, newest.version
                                ),
                            )
                            .with_help(format!(
                                "pin one release for every variant: `framework \"{}\" \"{}\"`",
                                req.value.name, r.version
                            )),
                        );
                    }
                    ReleaseChoice::Known(r)
                }
                None if for_python.is_empty() => {
                    let mut pythons: Vec<&String> = data
                        .releases(fw)
                        .iter()
                        .flat_map(|r| r.pythons.iter())
                        .collect();
                    pythons.sort_by(|a, b| compat::version_cmp(a, b));
                    pythons.dedup();
                    let pythons: Vec<String> = pythons.into_iter().cloned().collect();
                    diags.push(
                        Diagnostic::error(
                            "kiln::incompatible",
                            span,
                            format!("no {label} release kiln knows supports python {python}"),
                        )
                        .with_help(format!(
                            "{label} releases kiln knows support python {}",
                            compact(&pythons)
                        )),
                    );
                    return None;
                }
                None => {
                    let (what, at, offered): (String, SourceSpan, Vec<String>) = match gpu {
                        Some(g) => {
                            let mut cudas: Vec<String> = for_python
                                .iter()
                                .flat_map(|r| r.cuda.iter())
                                .filter(|b| b.platforms.contains(&platform_name))
                                .map(|b| b.cuda.clone())
                                .collect();
                            cudas.sort_by(|a, b| compat::version_cmp(a, b));
                            cudas.dedup();
                            (format!("CUDA {} on {platform_name}", g.cuda), g.span, cudas)
                        }
                        None => (format!("CPU wheels for {platform_name}"), span, Vec::new()),
                    };
                    let help = if offered.is_empty() {
                        format!("no {label} release kiln knows has them for python {python}")
                    } else {
                        format!(
                            "{label} releases for python {python} are built for CUDA {}",
                            offered.join(", ")
                        )
                    };
                    diags.push(
                        Diagnostic::error(
                            "kiln::incompatible",
                            at,
                            format!("no {label} release kiln knows has {what} for python {python}"),
                        )
                        .with_help(help),
                    );
                    return None;
                }
            }
        }
    };

    let (release, version, known) = match release {
        ReleaseChoice::Known(r) => (r, r.version.clone(), true),
        ReleaseChoice::Newer(v) => {
            // Newer than the data: build with the newest known rule of its line.
            let rule = data
                .newest_in_line(fw, &v)
                .or_else(|| data.releases(fw).last())?;
            diags.push(
                Diagnostic::warning(
                    "kiln::newer_than_data",
                    span,
                    format!(
                        "{label} {v} is newer than kiln's compatibility data (newest known: {}); using the install rule of {}",
                        rule.version, rule.version
                    ),
                )
                .with_help("name the wheel index with `pip index=\"…\"` if it moved; add the release to compiler/data/compat.kdl"),
            );
            // The rule's python versions are the best guess kiln has: a
            // newer release rarely brings back a python its line dropped.
            if !rule.pythons.iter().any(|p| p == python) {
                diags.push(
                    Diagnostic::warning(
                        "kiln::newer_than_data",
                        span,
                        format!(
                            "{label} {} has wheels for python {} only; {label} {v} may have none for python {python}",
                            rule.version,
                            rule.pythons.join(", ")
                        ),
                    )
                    .with_help(format!(
                        "check the release's files on PyPI for python {python}, or use a python {} has wheels for",
                        rule.version
                    )),
                );
            }
            (rule, v, false)
        }
    };

    if known && !release.pythons.iter().any(|p| p == python) {
        let others: Vec<String> = data
            .releases(fw)
            .iter()
            .filter(|r| r.pythons.iter().any(|p| p == python))
            .map(|r| r.version.clone())
            .collect();
        let help = if others.is_empty() {
            format!(
                "{label} {version} supports python {}",
                release.pythons.join(", ")
            )
        } else {
            format!(
                "{label} {version} supports python {}; for python {python} use {label} {}",
                release.pythons.join(", "),
                compact(&others)
            )
        };
        diags.push(
            Diagnostic::error(
                "kiln::incompatible",
                span,
                format!("{label} {version} has no wheels for python {python}"),
            )
            .with_help(help),
        );
        return None;
    }

    let platform_name = format!("{}/{}", platform.os, platform.architecture);
    let mut wheels_bring_cuda = false;
    let mut synthesized: Option<compat::CudaBuild> = None;
    let (install, verify): (&Install, Option<String>) = match gpu {
        None => {
            let Some(cpu) = release.cpu_for(&platform_name) else {
                diags.push(
                    Diagnostic::error(
                        "kiln::no_wheels",
                        span,
                        format!("{label} {version} ships no wheels for {platform_name}"),
                    )
                    .with_help({
                        let has: Vec<&str> = release
                            .cpu
                            .iter()
                            .filter_map(|i| i.platform.as_deref())
                            .collect();
                        if has.is_empty() {
                            "build this variant for linux/amd64".to_string()
                        } else {
                            format!("build this variant for {}", has.join(" or "))
                        }
                    }),
                );
                return None;
            };
            (cpu, cpu.verify.clone())
        }
        Some(g) => {
            // A release newer than the data may be built for a CUDA the
            // data's newest rule is not: its build for the newest CUDA,
            // renamed, is the best guess (PyTorch's `whl/cu130`, JAX's
            // `cuda13`), with a warning saying so.
            if !known && !release.cuda.iter().any(|b| b.cuda == g.cuda) {
                let template = release
                    .cuda
                    .iter()
                    .filter(|b| major(&b.cuda) == major(&g.cuda))
                    .chain(release.cuda.iter())
                    .max_by(|a, b| compat::version_cmp(&a.cuda, &b.cuda));
                if let Some(t) = template {
                    let from_tag = format!("cu{}", t.cuda.replace('.', ""));
                    let to_tag = format!("cu{}", g.cuda.replace('.', ""));
                    let from_major = format!("cuda{}", major(&t.cuda));
                    let to_major = format!("cuda{}", major(&g.cuda));
                    let rename = |x: &str| {
                        x.replace(&from_tag, &to_tag)
                            .replace(&from_major, &to_major)
                            .replace(&format!("'{}'", t.cuda), &format!("'{}'", g.cuda))
                            .replace(&format!("\"{}\"", t.cuda), &format!("\"{}\"", g.cuda))
                    };
                    let mut b = t.clone();
                    b.cuda = g.cuda.clone();
                    b.cudnn = String::new();
                    b.install.packages = b.install.packages.iter().map(|p| rename(p)).collect();
                    b.install.index_url = b.install.index_url.as_deref().map(rename);
                    b.install.extra_index_url = b.install.extra_index_url.as_deref().map(rename);
                    b.install.find_links = b.install.find_links.as_deref().map(rename);
                    b.install.verify = b
                        .install
                        .verify
                        .as_deref()
                        .map(|v| rename(v).replace(&t.cuda, &g.cuda));
                    diags.push(
                        Diagnostic::warning(
                            "kiln::newer_than_data",
                            g.span,
                            format!(
                                "kiln's data has no CUDA {} build of {label}; assuming {label} {version} has one where its CUDA {} build is, renamed ({})",
                                g.cuda,
                                t.cuda,
                                b.install.index_url.clone().unwrap_or_else(|| b
                                    .install
                                    .packages
                                    .join(" ")
                                    .replace(&release.version, &version))
                            ),
                        )
                        .with_help("if the build lives elsewhere, name it with `pip index=\"…\"`"),
                    );
                    synthesized = Some(b);
                }
            }
            let Some(build) = release
                .cuda
                .iter()
                .find(|b| b.cuda == g.cuda)
                .or(synthesized.as_ref())
            else {
                let offered: Vec<&str> = release.cuda.iter().map(|b| b.cuda.as_str()).collect();
                let with_cuda: Vec<String> = data
                    .releases(fw)
                    .iter()
                    .filter(|r| r.cuda.iter().any(|b| b.cuda == g.cuda))
                    .map(|r| r.version.clone())
                    .collect();
                let mut help = if offered.is_empty() {
                    format!("{label} {version} has no CUDA builds")
                } else {
                    format!("{label} {version} is built for CUDA {}", offered.join(", "))
                };
                if !with_cuda.is_empty() {
                    help.push_str(&format!(
                        "; CUDA {} builds exist for {label} {}",
                        g.cuda,
                        compact(&with_cuda)
                    ));
                }
                diags.push(
                    Diagnostic::error(
                        "kiln::incompatible",
                        g.span,
                        format!("{label} {version} has no build for CUDA {}", g.cuda),
                    )
                    .with_help(help),
                );
                return None;
            };
            if let Some(want) = &g.cudnn
                && !build.cudnn.is_empty()
                && !version_prefix(want, &build.cudnn)
            {
                diags.push(
                    Diagnostic::error(
                        "kiln::incompatible",
                        g.cudnn_span,
                        format!(
                            "{label} {version} for CUDA {} comes with cuDNN {}, not {want}",
                            g.cuda, build.cudnn
                        ),
                    )
                    .with_help(format!(
                        "write `cudnn=\"{}\"` or leave `cudnn` out",
                        major(&build.cudnn)
                    )),
                );
                return None;
            }
            if build.needs_cuda_base && g.from != model::CudaFrom::Base && settings.base.is_none() {
                diags.push(
                    Diagnostic::error(
                        "kiln::needs_cuda_base",
                        g.span,
                        format!("{label} {version}'s wheels do not bring CUDA {}: it must come from the base image", g.cuda),
                    )
                    .with_help(format!(
                        "write `cuda \"{}\" from=\"base\"` (an nvidia/cuda runtime base), or use a {label} release whose wheels bring CUDA",
                        g.cuda
                    )),
                );
                return None;
            }
            if !build.pythons.is_empty() && !build.pythons.iter().any(|p| p == python) {
                // Newer releases built for a CUDA of the same major whose
                // GPU build installs on this python.
                let others: Vec<String> = data
                    .releases(fw)
                    .iter()
                    .filter(|r| compat::version_cmp(&r.version, &version).is_gt())
                    .filter(|r| r.pythons.iter().any(|p| p == python))
                    .filter(|r| {
                        r.cuda.iter().any(|b| {
                            major(&b.cuda) == major(&g.cuda)
                                && (b.pythons.is_empty() || b.pythons.iter().any(|p| p == python))
                        })
                    })
                    .map(|r| r.version.clone())
                    .collect();
                let mut help = format!(
                    "write `python \"{}\"`",
                    build.pythons.last().map_or("", String::as_str)
                );
                if let Some(first) = data.releases(fw).iter().find(|r| {
                    compat::version_cmp(&r.version, &version).is_gt()
                        && r.pythons.iter().any(|p| p == python)
                        && r.cuda
                            .iter()
                            .any(|b| b.pythons.is_empty() || b.pythons.iter().any(|p| p == python))
                }) && others.is_empty()
                {
                    help.push_str(&format!(
                        ", or {label} {} (its GPU build installs on python {python})",
                        first.version
                    ));
                } else if !others.is_empty() {
                    help.push_str(&format!(", or {label} {}", compact(&others)));
                }
                diags.push(
                    Diagnostic::error(
                        "kiln::incompatible",
                        g.span,
                        format!(
                            "{label} {version}'s CUDA {} build (`{}`) does not install on python {python}: it has wheels for python {} only",
                            g.cuda,
                            build.install.packages.join(" "),
                            build.pythons.join(", ")
                        ),
                    )
                    .with_help(help),
                );
                return None;
            }
            if !build.platforms.is_empty() && !build.platforms.iter().any(|p| p == &platform_name) {
                diags.push(
                    Diagnostic::error(
                        "kiln::no_gpu_wheels",
                        g.span,
                        format!(
                            "{label} {version} ships no CUDA {} wheels for {platform_name}",
                            g.cuda
                        ),
                    )
                    .with_help(format!(
                        "CUDA {} wheels exist for: {}; build the GPU variant for those platforms only",
                        g.cuda,
                        build.platforms.join(", ")
                    )),
                );
                return None;
            }
            wheels_bring_cuda = !build.needs_cuda_base;
            (&build.install, build.install.verify.clone())
        }
    };

    let mut packages: Vec<String> = install
        .packages
        .iter()
        .map(|p| p.replace(&release.version, &version))
        .collect();
    // A recipe-level index for the framework replaces the data's when the
    // release is newer than the data and the recipe names one.
    let mut index_url = install.index_url.clone();
    if !known
        && let Some(url) = settings.pip.iter().find_map(|p| match &p.value {
            model::Pip::Index { url, .. } => Some(url.clone()),
            _ => None,
        })
    {
        index_url = Some(url);
    }
    packages.dedup();
    // tensorflow-cpu is TensorFlow under another name, and packages that
    // require `tensorflow` by name make pip install the full one next to
    // it, over the same files: with one of those in the recipe the CPU
    // variant installs `tensorflow` (it runs on a CPU too), once.
    if gpu.is_none()
        && let Some(dependent) = settings.pip.iter().find_map(|p| match &p.value {
            model::Pip::Packages(specs) => specs.iter().find_map(|s| {
                let name = model::requirement_name(s);
                TENSORFLOW_DEPENDENTS
                    .contains(&name.as_str())
                    .then_some(name)
            }),
            _ => None,
        })
    {
        let cpu_name = "tensorflow-cpu==";
        if packages.iter().any(|p| p.starts_with(cpu_name)) {
            for p in packages.iter_mut() {
                if let Some(rest) = p.strip_prefix(cpu_name) {
                    *p = format!("tensorflow=={rest}");
                }
            }
            notes.push(format!(
                "framework: `tensorflow` rather than `tensorflow-cpu`, because {dependent} requires `tensorflow` by name (pip would install both, over the same files)"
            ));
        }
    }
    let why = match (gpu, &index_url) {
        (Some(g), Some(idx)) => format!("{label} {version} for CUDA {} from {idx}", g.cuda),
        (Some(g), None) => format!(
            "{label} {version} for CUDA {} as `{}` from PyPI",
            g.cuda,
            packages.join(" ")
        ),
        (None, Some(idx)) => format!("{label} {version} CPU build from {idx}"),
        (None, None) => format!("{label} {version} as `{}` from PyPI", packages.join(" ")),
    };
    notes.push(format!(
        "framework: {why}; installed in its own step before other requirements"
    ));
    // A build the data pins to a post release of the release (TensorFlow
    // 2.15.0's `and-cuda` extra is installable only as 2.15.0.post1).
    if let Some(pinned) = packages
        .first()
        .and_then(|p| p.split_once("==").map(|(_, v)| v.to_string()))
        && pinned != version
        && pinned.starts_with(&format!("{version}.post"))
    {
        notes.push(format!(
            "framework: {pinned} is {label} {version} republished with fixed requirements; this build of {version} installs only as {pinned} (the compatibility data cites why)"
        ));
    }
    let verify = verify.map(|v| v.replace("{version}", &version));
    if let Some(v) = &verify {
        notes.push(format!("verify: `{v}` checks the installed build"));
    }
    Some(FrameworkPlan {
        name: label.to_string(),
        version: version.to_string(),
        packages,
        index_url,
        extra_index_url: install.extra_index_url.clone(),
        find_links: install.find_links.clone(),
        verify,
        companions: release.companions.iter().map(|c| c.name.clone()).collect(),
        wheels_bring_cuda,
        companion_versions: if known {
            release
                .companions
                .iter()
                .filter_map(|c| c.version.clone().map(|v| (c.name.clone(), v)))
                .collect()
        } else {
            Vec::new()
        },
        span,
    })
}

enum ReleaseChoice<'a> {
    Known(&'a compat::Release),
    Newer(String),
}

fn nearest_versions(data: &CompatData, fw: Framework, v: &str) -> Vec<String> {
    let mut all: Vec<&str> = data
        .releases(fw)
        .iter()
        .map(|r| r.version.as_str())
        .collect();
    all.sort_by(|a, b| {
        distance(a, v)
            .cmp(&distance(b, v))
            .then(compat::version_cmp(a, b))
    });
    let mut near: Vec<String> = all.into_iter().take(3).map(str::to_string).collect();
    near.sort_by(|a, b| compat::version_cmp(a, b));
    near
}

fn distance(a: &str, b: &str) -> u64 {
    let key = |v: &str| -> u64 {
        v.split('.')
            .take(3)
            .chain(std::iter::repeat("0"))
            .take(3)
            .fold(0u64, |acc, p| {
                acc * 1000 + p.parse::<u64>().unwrap_or(0).min(999)
            })
    };
    key(a).abs_diff(key(b))
}

/// `["2.1.0","2.1.1","2.2.0"]` → "2.1.0–2.2.0" when long.
fn compact(versions: &[String]) -> String {
    match versions {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a}, {b}"),
        [first, .., last] => format!("{first} … {last}"),
    }
}

fn major(v: &str) -> &str {
    v.split('.').next().unwrap_or(v)
}

/// "9" matches "9.1.0"; "8.9" matches "8.9.7"; "9.1" does not match "9.3".
fn version_prefix(want: &str, have: &str) -> bool {
    let w: Vec<&str> = want.split('.').collect();
    let h: Vec<&str> = have.split('.').collect();
    w.len() <= h.len() && w.iter().zip(&h).all(|(a, b)| a == b)
}

/// Packages that require `tensorflow` by name (PyPI `Requires-Dist`,
/// checked 2026-11: https://pypi.org/pypi/<name>/json), so that next to
/// `tensorflow-cpu` pip installs the full `tensorflow` as well.
const TENSORFLOW_DEPENDENTS: &[&str] = &[
    "tf-keras",
    "tensorflow-text",
    "tensorflow-decision-forests",
    "tf-models-official",
    "tensorflow-recommenders",
    "tensorflow-ranking",
    "tensorflow-serving-api",
    "tensorflow-transform",
];
