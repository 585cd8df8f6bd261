//! The compatibility data: which framework releases ship wheels for which
//! python and CUDA versions, how pip gets each build, which nvidia/cuda image
//! tags exist and which python each distro installs.
//!
//! The facts live in `compiler/data/compat.kdl`, one row per release with the
//! upstream page it comes from; this module only reads them. Nothing here
//! names a version: a new release is a new row in the data file.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use kdl::{KdlDocument, KdlNode};

/// The data file, embedded so the compiler needs no files at run time.
pub const COMPAT_KDL: &str = include_str!("../data/compat.kdl");

/// The frameworks the `framework` node names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Framework {
    PyTorch,
    TensorFlow,
    Jax,
}

impl Framework {
    pub const ALL: [Framework; 3] = [Framework::PyTorch, Framework::TensorFlow, Framework::Jax];

    pub fn from_name(name: &str) -> Option<Framework> {
        match name {
            "pytorch" => Some(Framework::PyTorch),
            "tensorflow" => Some(Framework::TensorFlow),
            "jax" => Some(Framework::Jax),
            _ => None,
        }
    }

    /// The name as a recipe writes it.
    pub fn name(self) -> &'static str {
        match self {
            Framework::PyTorch => "pytorch",
            Framework::TensorFlow => "tensorflow",
            Framework::Jax => "jax",
        }
    }
}

/// How pip installs one build of a framework.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Install {
    /// Requirement specs, the framework first.
    pub packages: Vec<String>,
    /// Replaces PyPI for the step (PyTorch's per-build indexes).
    pub index_url: Option<String>,
    pub extra_index_url: Option<String>,
    pub find_links: Option<String>,
    /// Python that fails unless the installed build is the one asked for;
    /// `{version}` stands for the framework version.
    pub verify: Option<String>,
    /// The platform this install is for; any when `None`.
    pub platform: Option<String>,
}

/// A CUDA build of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaBuild {
    /// `12.4`
    pub cuda: String,
    /// The cuDNN the build comes with, `9.1.0`.
    pub cudnn: String,
    /// Platforms with wheels for this build; any when empty.
    pub platforms: Vec<String>,
    /// Pythons this build installs on, when fewer than the release's (an
    /// extra that pins a package without wheels for some): the release's
    /// when empty.
    pub pythons: Vec<String>,
    pub install: Install,
    /// The wheels do not bring CUDA: it must come from the base image.
    pub needs_cuda_base: bool,
}

/// A project released in lockstep with the framework (torchvision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Companion {
    pub name: String,
    /// The companion release that goes with this framework release.
    pub version: Option<String>,
}

/// One framework release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub version: String,
    pub pythons: Vec<String>,
    /// CPU installs, per platform (the first whose platform fits wins).
    pub cpu: Vec<Install>,
    pub cuda: Vec<CudaBuild>,
    pub companions: Vec<Companion>,
    /// The upstream page the row comes from.
    pub source: String,
}

impl Release {
    /// The CPU install for `platform` (`linux/amd64`).
    pub fn cpu_for(&self, platform: &str) -> Option<&Install> {
        self.cpu
            .iter()
            .find(|i| i.platform.as_deref().is_none_or(|p| p == platform))
    }
}

/// nvidia/cuda images of one CUDA version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaImages {
    pub cuda: String,
    /// The full version in tags, `12.4.1`.
    pub full: String,
    /// How tags name the cuDNN flavour: `cudnn`, `cudnn8`, `cudnn9`.
    pub cudnn_tag: String,
    pub distros: Vec<String>,
    /// Distros with the cuDNN flavour (`-cudnn-runtime-`); not every distro
    /// of a CUDA release has one (12.5.1 on ubuntu24.04 has none).
    pub cudnn_distros: Vec<String>,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distro {
    pub id: String,
    pub python: String,
    pub alias: Option<String>,
    pub source: String,
}

/// Which image flavour of nvidia/cuda.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaFlavor {
    Runtime,
    Devel,
}

/// All of the data file.
#[derive(Debug, Clone, Default)]
pub struct CompatData {
    pub slim: BTreeMap<String, (String, String)>,
    pub distros: Vec<Distro>,
    pub cuda: Vec<CudaImages>,
    pub releases: BTreeMap<Framework, Vec<Release>>,
}

/// A problem in the data file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compat.kdl line {line}: {message}")]
pub struct DataError {
    pub line: usize,
    pub message: String,
}

static BUILTIN: OnceLock<CompatData> = OnceLock::new();

impl CompatData {
    /// The embedded data. A broken data file is caught by the tests; should
    /// one ship anyway, kiln knows no releases rather than panicking.
    pub fn builtin() -> &'static CompatData {
        BUILTIN.get_or_init(|| CompatData::parse(COMPAT_KDL).unwrap_or_default())
    }

    pub fn parse(text: &str) -> Result<CompatData, DataError> {
        let doc = KdlDocument::parse(text).map_err(|e| DataError {
            line: e
                .diagnostics
                .first()
                .map_or(0, |d| line_of(text, d.span.offset())),
            message: format!("not valid KDL: {e}"),
        })?;
        let mut data = CompatData::default();
        for node in doc.nodes() {
            let line = line_of(text, node.span().offset());
            let err = |message: String| DataError { line, message };
            match node.name().value() {
                "kiln-compat" => {}
                "python" => {
                    let v = arg(node, 0).ok_or_else(|| err("python needs a version".into()))?;
                    let slim =
                        prop(node, "slim").ok_or_else(|| err("python needs slim=".into()))?;
                    let source = source_of(node).map_err(err)?;
                    data.slim.insert(v, (slim, source));
                }
                "distro" => data.distros.push(Distro {
                    id: arg(node, 0).ok_or_else(|| err("distro needs an id".into()))?,
                    python: prop(node, "python")
                        .ok_or_else(|| err("distro needs python=".into()))?,
                    alias: prop(node, "alias"),
                    source: source_of(node).map_err(err)?,
                }),
                "cuda" => {
                    let distros = words(
                        &prop(node, "distros").ok_or_else(|| err("cuda needs distros=".into()))?,
                    );
                    let cudnn_distros = prop(node, "cudnn-distros")
                        .map(|d| words(&d))
                        .unwrap_or_else(|| distros.clone());
                    if let Some(d) = cudnn_distros.iter().find(|d| !distros.contains(d)) {
                        return Err(err(format!("cudnn-distros names `{d}`, not in distros=")));
                    }
                    data.cuda.push(CudaImages {
                        cuda: arg(node, 0).ok_or_else(|| err("cuda needs a version".into()))?,
                        full: prop(node, "full").ok_or_else(|| err("cuda needs full=".into()))?,
                        cudnn_tag: prop(node, "cudnn")
                            .ok_or_else(|| err("cuda needs cudnn=".into()))?,
                        distros,
                        cudnn_distros,
                        source: source_of(node).map_err(err)?,
                    })
                }
                "framework" => {
                    let name = arg(node, 0).unwrap_or_default();
                    let fw = Framework::from_name(&name)
                        .ok_or_else(|| err(format!("unknown framework `{name}`")))?;
                    let releases = parse_framework(text, node)?;
                    data.releases.entry(fw).or_default().extend(releases);
                }
                other => return Err(err(format!("unknown node `{other}`"))),
            }
        }
        for list in data.releases.values_mut() {
            list.sort_by(|a, b| version_cmp(&a.version, &b.version));
        }
        Ok(data)
    }

    /// Releases of `fw`, oldest first.
    pub fn releases(&self, fw: Framework) -> &[Release] {
        self.releases.get(&fw).map_or(&[], Vec::as_slice)
    }

    /// The release `version` names; trailing `.0`s do not count, as in
    /// PEP 440 (`2.14.0.0` is `2.14.0`).
    pub fn release(&self, fw: Framework, version: &str) -> Option<&Release> {
        fn trimmed(v: &str) -> &str {
            let mut v = v;
            while let Some(shorter) = v.strip_suffix(".0") {
                if !shorter.contains('.') {
                    break;
                }
                v = shorter;
            }
            v
        }
        self.releases(fw)
            .iter()
            .find(|r| r.version == version)
            .or_else(|| {
                self.releases(fw)
                    .iter()
                    .find(|r| trimmed(&r.version) == trimmed(version))
            })
    }

    /// The newest known release of `version`'s major line (2.x for 2.9.0).
    pub fn newest_in_line(&self, fw: Framework, version: &str) -> Option<&Release> {
        let major = version.split('.').next().unwrap_or(version);
        let same_major = |r: &&Release| r.version.split('.').next() == Some(major);
        // JAX lives in 0.x: its line is the minor.
        if major == "0" {
            let minor: Vec<&str> = version.split('.').take(2).collect();
            let line = minor.join(".");
            if let Some(r) = self
                .releases(fw)
                .iter()
                .rfind(|r| r.version.starts_with(&format!("{line}.")))
            {
                return Some(r);
            }
        }
        self.releases(fw).iter().rfind(same_major)
    }

    /// The nvidia/cuda images of a CUDA major.minor.
    pub fn cuda_images(&self, cuda: &str) -> Option<&CudaImages> {
        self.cuda.iter().find(|c| c.cuda == cuda)
    }

    /// Distros with an nvidia/cuda image for `cuda`.
    pub fn cuda_distros(&self, cuda: &str) -> Vec<String> {
        self.cuda_images(cuda)
            .map(|c| c.distros.clone())
            .unwrap_or_default()
    }

    /// Distros with an nvidia/cuda cuDNN image for `cuda`.
    pub fn cuda_cudnn_distros(&self, cuda: &str) -> Vec<String> {
        self.cuda_images(cuda)
            .map(|c| c.cudnn_distros.clone())
            .unwrap_or_default()
    }

    /// CUDA versions with an nvidia/cuda cuDNN image on `distro`.
    pub fn cudas_with_cudnn_on(&self, distro: &str) -> Vec<String> {
        self.cuda
            .iter()
            .filter(|c| c.cudnn_distros.iter().any(|d| d == distro))
            .map(|c| c.cuda.clone())
            .collect()
    }

    /// CUDA versions with nvidia/cuda images.
    pub fn cuda_versions(&self) -> Vec<String> {
        self.cuda.iter().map(|c| c.cuda.clone()).collect()
    }

    /// The python3 a distro installs (`ubuntu22.04` → `3.10`).
    pub fn distro_python(&self, distro: &str) -> Option<&str> {
        self.distros
            .iter()
            .find(|d| d.id == distro || d.alias.as_deref() == Some(distro))
            .map(|d| d.python.as_str())
    }

    /// `nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04`.
    pub fn cuda_image(
        &self,
        cuda: &str,
        distro: &str,
        flavor: CudaFlavor,
        cudnn: bool,
    ) -> Option<String> {
        let c = self.cuda_images(cuda)?;
        let published = if cudnn { &c.cudnn_distros } else { &c.distros };
        if !published.iter().any(|d| d == distro) {
            return None;
        }
        let kind = match flavor {
            CudaFlavor::Runtime => "runtime",
            CudaFlavor::Devel => "devel",
        };
        Some(if cudnn {
            format!("nvidia/cuda:{}-{}-{kind}-{distro}", c.full, c.cudnn_tag)
        } else {
            format!("nvidia/cuda:{}-{kind}-{distro}", c.full)
        })
    }

    /// The cuDNN major release the `cudnn` images of a CUDA carry: the
    /// number in their tag (`cudnn8`, `cudnn9`); the unnumbered `cudnn`
    /// tags (CUDA 12.4 and newer) carry cuDNN 9 (the supported-tags page
    /// cited in the data).
    pub fn cuda_image_cudnn(&self, cuda: &str) -> Option<String> {
        let c = self.cuda_images(cuda)?;
        Some(cudnn_of_tag_part(&c.cudnn_tag).unwrap_or_else(|| "9".to_string()))
    }

    /// CUDA versions whose nvidia/cuda `cudnn` images carry cuDNN `major`.
    pub fn cudas_with_cudnn(&self, major: &str) -> Vec<String> {
        self.cuda
            .iter()
            .filter(|c| self.cuda_image_cudnn(&c.cuda).as_deref() == Some(major))
            .map(|c| c.cuda.clone())
            .collect()
    }

    /// `python:3.11-slim`.
    pub fn slim_image(&self, python: &str) -> Option<String> {
        self.slim.get(python).map(|(image, _)| image.clone())
    }

    /// Python versions with an official slim image.
    pub fn pythons(&self) -> Vec<String> {
        let mut v: Vec<String> = self.slim.keys().cloned().collect();
        v.sort_by(|a, b| version_cmp(a, b));
        v
    }
}

/// The distro an image is built on, from its name and tag:
/// `nvidia/cuda:12.4.1-runtime-ubuntu22.04` → `ubuntu22.04`,
/// `ubuntu:22.04` → `ubuntu22.04`, `debian:bookworm-slim` → `debian12`.
pub fn distro_of_image(name: &str, tag: &str) -> Option<String> {
    let data = CompatData::builtin();
    let last = name.rsplit('/').next().unwrap_or(name);
    match last {
        "ubuntu" | "debian" => {
            // `ubuntu:22.04`, `ubuntu:jammy-20240911`, `debian:bookworm-slim`,
            // `debian:12`; a release the data does not know (`ubuntu:25.04`,
            // `debian:testing`, `ubuntu:latest`) is still a distro image
            // without python, named as written.
            let v = tag.split('-').next().unwrap_or(tag);
            let known = data
                .distros
                .iter()
                .find(|d| d.alias.as_deref() == Some(v) || d.id == format!("{last}{v}"))
                .map(|d| d.id.clone());
            let release = v
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            let moving = [
                "",
                "latest",
                "rolling",
                "devel",
                "stable",
                "oldstable",
                "oldoldstable",
                "testing",
                "unstable",
                "sid",
            ];
            known.or_else(|| {
                if release {
                    Some(format!("{last}{v}"))
                } else if moving.contains(&v) {
                    Some(if tag.is_empty() {
                        last.to_string()
                    } else {
                        format!("{last}:{tag}")
                    })
                } else {
                    None
                }
            })
        }
        _ => data
            .distros
            .iter()
            .find(|d| {
                tag.ends_with(&d.id)
                    || tag.ends_with(&format!("-{}", d.alias.as_deref().unwrap_or("\0")))
            })
            .map(|d| d.id.clone()),
    }
}

/// `cudnn8` → `8`; `None` for a part that names no cuDNN release.
pub fn cudnn_of_tag_part(part: &str) -> Option<String> {
    let n = part.strip_prefix("cudnn")?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then(|| n.to_string())
}

/// Compares dotted versions numerically (`2.10` after `2.9`); a part that is
/// not a number compares as text.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let mut pa = a.split('.');
    let mut pb = b.split('.');
    loop {
        match (pa.next(), pb.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    _ => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// `12.4` → `124`, `11.8` → `118`.
fn nodot(cuda: &str) -> String {
    cuda.replace('.', "")
}

fn fill(template: &str, version: Option<&str>, cuda: Option<&str>) -> String {
    let mut s = template.to_string();
    if let Some(v) = version {
        s = s.replace("{version}", v);
    }
    if let Some(c) = cuda {
        s = s
            .replace("{cuda_nodot}", &nodot(c))
            .replace("{cuda_major}", c.split('.').next().unwrap_or(c))
            .replace("{cuda}", c);
    }
    s
}

/// An `Install` template from a `cpu` / `gpu` / `cuda` node's properties,
/// over `base`.
fn install_props(node: &KdlNode, base: &Install) -> Install {
    let mut i = base.clone();
    if let Some(p) = prop(node, "packages") {
        i.packages = words(&p);
    }
    if let Some(v) = prop(node, "index") {
        i.index_url = Some(v);
    }
    if let Some(v) = prop(node, "extra-index") {
        i.extra_index_url = Some(v);
    }
    if let Some(v) = prop(node, "find-links") {
        i.find_links = Some(v);
    }
    if let Some(v) = prop(node, "verify") {
        i.verify = Some(v);
    }
    if let Some(v) = prop(node, "platform") {
        i.platform = Some(v);
    }
    i
}

/// `{version}` in packages becomes the release; `{cuda…}` everywhere
/// becomes the build's CUDA. `{version}` stays in `verify`.
fn instantiate(t: &Install, version: &str, cuda: Option<&str>) -> Install {
    Install {
        packages: t
            .packages
            .iter()
            .map(|p| fill(p, Some(version), cuda))
            .collect(),
        index_url: t.index_url.as_deref().map(|s| fill(s, Some(version), cuda)),
        extra_index_url: t
            .extra_index_url
            .as_deref()
            .map(|s| fill(s, Some(version), cuda)),
        find_links: t
            .find_links
            .as_deref()
            .map(|s| fill(s, Some(version), cuda)),
        verify: t.verify.as_deref().map(|s| fill(s, None, cuda)),
        platform: t.platform.clone(),
    }
}

fn parse_framework(text: &str, node: &KdlNode) -> Result<Vec<Release>, DataError> {
    let mut cpu_templates: Vec<Install> = Vec::new();
    let mut gpu_template = Install::default();
    let mut gpu_platforms: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let children = node.children().map(|d| d.nodes()).unwrap_or(&[]);
    for child in children {
        let line = line_of(text, child.span().offset());
        let err = |message: String| DataError { line, message };
        match child.name().value() {
            "cpu" => cpu_templates.push(install_props(child, &Install::default())),
            "gpu" => {
                gpu_template = install_props(child, &Install::default());
                gpu_platforms = prop(child, "platforms")
                    .map(|p| words(&p))
                    .unwrap_or_default();
            }
            "release" => {
                let versions: Vec<String> = child
                    .entries()
                    .iter()
                    .filter(|e| e.name().is_none())
                    .filter_map(|e| e.value().as_string().map(str::to_string))
                    .collect();
                if versions.is_empty() {
                    return Err(err("release needs at least one version".into()));
                }
                let pythons = words(
                    &prop(child, "python").ok_or_else(|| err("release needs python=".into()))?,
                );
                let source = source_of(child).map_err(err)?;
                let mut gpu = gpu_template.clone();
                // A release's `cpu` changes the framework's CPU rules for it
                // (jax before 0.4.30 needs `jax[cpu]` for jaxlib).
                let mut cpu = cpu_templates.clone();
                let mut builds: Vec<(&KdlNode, usize)> = Vec::new();
                let mut companions: Vec<&KdlNode> = Vec::new();
                for g in child.children().map(|d| d.nodes()).unwrap_or(&[]) {
                    let gline = line_of(text, g.span().offset());
                    match g.name().value() {
                        "gpu" => gpu = install_props(g, &gpu),
                        "cpu" => {
                            cpu = cpu.iter().map(|t| install_props(g, t)).collect();
                        }
                        "cuda" => builds.push((g, gline)),
                        "companion" => companions.push(g),
                        other => {
                            return Err(DataError {
                                line: gline,
                                message: format!("unknown node `{other}` in a release"),
                            });
                        }
                    }
                }
                for version in &versions {
                    let mut cuda = Vec::new();
                    for (b, bline) in &builds {
                        let berr = |message: String| DataError {
                            line: *bline,
                            message,
                        };
                        let c = arg(b, 0).ok_or_else(|| berr("cuda needs a version".into()))?;
                        let cudnn =
                            prop(b, "cudnn").ok_or_else(|| berr("cuda needs cudnn=".into()))?;
                        let template = install_props(b, &gpu);
                        let platforms = prop(b, "platforms")
                            .map(|p| words(&p))
                            .unwrap_or_else(|| gpu_platforms.clone());
                        cuda.push(CudaBuild {
                            install: instantiate(&template, version, Some(&c)),
                            cuda: c,
                            cudnn,
                            platforms,
                            pythons: prop(b, "python").map(|p| words(&p)).unwrap_or_default(),
                            needs_cuda_base: b
                                .get("needs-cuda-base")
                                .and_then(|v| v.as_bool())
                                .unwrap_or(false),
                        });
                    }
                    let companions = companions
                        .iter()
                        .map(|c| Companion {
                            name: arg(c, 0).unwrap_or_default(),
                            version: c
                                .entries()
                                .iter()
                                .filter(|e| e.name().is_none())
                                .skip(1)
                                .filter_map(|e| e.value().as_string())
                                .find_map(|pair| {
                                    let (fv, cv) = pair.split_once('=')?;
                                    (fv == version).then(|| cv.to_string())
                                }),
                        })
                        .collect();
                    out.push(Release {
                        version: version.clone(),
                        pythons: pythons.clone(),
                        cpu: cpu.iter().map(|t| instantiate(t, version, None)).collect(),
                        cuda,
                        companions,
                        source: source.clone(),
                    });
                }
            }
            other => return Err(err(format!("unknown node `{other}` in a framework"))),
        }
    }
    Ok(out)
}

fn arg(node: &KdlNode, i: usize) -> Option<String> {
    node.entries()
        .iter()
        .filter(|e| e.name().is_none())
        .nth(i)
        .and_then(|e| e.value().as_string())
        .map(str::to_string)
}

fn prop(node: &KdlNode, key: &str) -> Option<String> {
    node.get(key)
        .and_then(|v| v.as_string())
        .map(str::to_string)
}

fn source_of(node: &KdlNode) -> Result<String, String> {
    match prop(node, "source") {
        Some(s) if s.starts_with("https://") => Ok(s),
        Some(s) => Err(format!("source `{s}` is not an https link")),
        None => Err(format!(
            "`{}` has no source=\"https://…\"",
            node.name().value()
        )),
    }
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> CompatData {
        match CompatData::parse(COMPAT_KDL) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_data_file_parses_and_every_row_is_sound() {
        let d = data();
        for fw in Framework::ALL {
            let releases = d.releases(fw);
            assert!(!releases.is_empty(), "{fw:?} has releases");
            for r in releases {
                assert!(
                    r.source.starts_with("https://"),
                    "{} {} cites a source",
                    fw.name(),
                    r.version
                );
                assert!(
                    !r.pythons.is_empty(),
                    "{} {} lists pythons",
                    fw.name(),
                    r.version
                );
                for p in &r.pythons {
                    assert!(
                        d.slim_image(p).is_some(),
                        "python {p} of {} {} has a slim image row",
                        fw.name(),
                        r.version
                    );
                }
                assert!(
                    r.cpu_for("linux/amd64").is_some(),
                    "{} {} installs on amd64",
                    fw.name(),
                    r.version
                );
                for i in r.cpu.iter().chain(r.cuda.iter().map(|b| &b.install)) {
                    assert!(!i.packages.is_empty());
                    let all = format!("{:?}", i);
                    assert!(
                        !all.contains("{cuda"),
                        "{} {}: unfilled template in {all}",
                        fw.name(),
                        r.version
                    );
                    assert!(
                        i.packages[0].contains(&r.version),
                        "{} {}: first package {} pins the release",
                        fw.name(),
                        r.version,
                        i.packages[0]
                    );
                }
                for b in &r.cuda {
                    assert!(
                        b.cuda.split('.').all(|p| p.parse::<u32>().is_ok()),
                        "CUDA {}",
                        b.cuda
                    );
                    assert!(
                        b.cudnn.split('.').all(|p| p.parse::<u32>().is_ok()),
                        "cuDNN {}",
                        b.cudnn
                    );
                }
            }
            let mut versions: Vec<&str> = releases.iter().map(|r| r.version.as_str()).collect();
            versions.dedup();
            assert_eq!(
                versions.len(),
                releases.len(),
                "{fw:?} lists a release twice"
            );
        }
        for c in &d.cuda {
            assert!(c.full.starts_with(&format!("{}.", c.cuda)));
            for distro in &c.distros {
                assert!(
                    d.distro_python(distro).is_some(),
                    "distro {distro} has a python row"
                );
            }
        }
    }

    #[test]
    fn covers_the_promised_ranges() {
        let d = data();
        for v in [
            "2.1.0", "2.2.2", "2.3.1", "2.4.1", "2.5.1", "2.6.0", "2.7.1", "2.8.0",
        ] {
            assert!(d.release(Framework::PyTorch, v).is_some(), "pytorch {v}");
        }
        for v in [
            "2.13.1", "2.14.1", "2.15.1", "2.16.1", "2.17.0", "2.18.0", "2.19.0",
        ] {
            assert!(
                d.release(Framework::TensorFlow, v).is_some(),
                "tensorflow {v}"
            );
        }
        for v in ["0.4.20", "0.4.30", "0.4.38", "0.5.0", "0.6.0"] {
            assert!(d.release(Framework::Jax, v).is_some(), "jax {v}");
        }
        // Newer than the promise: what a recipe written today names.
        for v in ["2.9.1", "2.10.0", "2.11.0", "2.12.1", "2.13.0", "2.14.1"] {
            assert!(d.release(Framework::PyTorch, v).is_some(), "pytorch {v}");
        }
        for v in ["2.20.0", "2.21.0"] {
            assert!(
                d.release(Framework::TensorFlow, v).is_some(),
                "tensorflow {v}"
            );
        }
        for v in ["0.7.2", "0.8.3", "0.9.0.1", "0.10.2", "0.11.2", "0.12.0.1"] {
            assert!(d.release(Framework::Jax, v).is_some(), "jax {v}");
        }
        for c in [
            "11.8", "12.1", "12.2", "12.3", "12.4", "12.5", "12.6", "12.8", "12.9", "13.0", "13.1",
            "13.2",
        ] {
            assert!(!d.cuda_distros(c).is_empty(), "nvidia/cuda images for {c}");
        }
    }

    #[test]
    fn pytorch_builds_name_their_index_and_check_their_cuda() {
        let d = data();
        let r = d.release(Framework::PyTorch, "2.4.1").expect("known");
        let b = r.cuda.iter().find(|b| b.cuda == "12.4").expect("cu124");
        assert_eq!(
            b.install.index_url.as_deref(),
            Some("https://download.pytorch.org/whl/cu124")
        );
        assert_eq!(b.install.packages, vec!["torch==2.4.1"]);
        assert!(
            b.install
                .verify
                .as_deref()
                .is_some_and(|v| v.contains("torch.version.cuda == '12.4'"))
        );
        let cpu = r.cpu_for("linux/amd64").expect("cpu");
        assert_eq!(
            cpu.index_url.as_deref(),
            Some("https://download.pytorch.org/whl/cpu")
        );
        assert_eq!(
            r.companions
                .iter()
                .find(|c| c.name == "torchvision")
                .and_then(|c| c.version.as_deref()),
            Some("0.19.1")
        );
    }

    #[test]
    fn tensorflow_cpu_depends_on_the_platform() {
        let d = data();
        let r = d.release(Framework::TensorFlow, "2.16.1").expect("known");
        assert_eq!(
            r.cpu_for("linux/amd64").map(|i| i.packages[0].as_str()),
            Some("tensorflow-cpu==2.16.1")
        );
        assert_eq!(
            r.cpu_for("linux/arm64").map(|i| i.packages[0].as_str()),
            Some("tensorflow==2.16.1")
        );
        let b = &r.cuda[0];
        assert_eq!(b.install.packages, vec!["tensorflow[and-cuda]==2.16.1"]);
        let old = d.release(Framework::TensorFlow, "2.13.1").expect("known");
        assert!(old.cuda[0].needs_cuda_base);
    }

    #[test]
    fn jaxlib_cuda_builds_are_checked_by_their_distribution_version() {
        // jaxlib.version.__version__ never carries the `+cuda12` label of a
        // find-links jaxlib; the installed distribution's version does.
        let d = data();
        for v in ["0.4.20", "0.4.25"] {
            let r = d.release(Framework::Jax, v).expect("known");
            for b in &r.cuda {
                let verify = b.install.verify.as_deref().unwrap_or_default();
                let major = b.cuda.split('.').next().unwrap_or_default();
                assert!(
                    verify.contains("md.version('jaxlib')")
                        && verify.contains(&format!("'+cuda{major}' in v")),
                    "jax {v} CUDA {}: {verify}",
                    b.cuda
                );
                assert!(!verify.contains("jaxlib.version"), "{verify}");
            }
        }
        // From 0.4.26 the CUDA build is the plugin and its PJRT package.
        let r = d.release(Framework::Jax, "0.4.35").expect("known");
        let verify = r.cuda[0].install.verify.as_deref().unwrap_or_default();
        assert!(
            verify.contains("md.version('jax-cuda12-plugin')")
                && verify.contains("md.version('jax-cuda12-pjrt')"),
            "{verify}"
        );
    }

    #[test]
    fn arm64_cuda_wheels_where_upstream_ships_them() {
        let d = data();
        let platforms = |fw: Framework, v: &str, cuda: &str| -> Vec<String> {
            d.release(fw, v)
                .expect("known")
                .cuda
                .iter()
                .find(|b| b.cuda == cuda)
                .expect("build")
                .platforms
                .clone()
        };
        let both = ["linux/amd64", "linux/arm64"];
        // PyTorch's cu128 index has aarch64 wheels from 2.7 (GH200/GB200).
        for v in ["2.7.0", "2.7.1", "2.8.0", "2.9.1", "2.10.0"] {
            assert_eq!(platforms(Framework::PyTorch, v, "12.8"), both, "torch {v}");
        }
        // Its other CUDA builds before 2.12 stay x86_64 only.
        assert_eq!(
            platforms(Framework::PyTorch, "2.7.1", "12.6"),
            ["linux/amd64"]
        );
        assert_eq!(
            platforms(Framework::PyTorch, "2.9.1", "13.0"),
            ["linux/amd64"]
        );
        // JAX: the pip CUDA install covers aarch64 from 0.4.30.
        for v in ["0.4.30", "0.4.33", "0.4.35", "0.4.38"] {
            assert_eq!(platforms(Framework::Jax, v, "12.4"), both, "jax {v}");
        }
        assert_eq!(platforms(Framework::Jax, "0.4.29", "12.4"), ["linux/amd64"]);
    }

    #[test]
    fn jax_cuda_minors_follow_the_extras_lower_bounds() {
        let d = data();
        let cudas = |v: &str| -> Vec<String> {
            d.release(Framework::Jax, v)
                .expect("known")
                .cuda
                .iter()
                .map(|b| b.cuda.clone())
                .collect()
        };
        // cuda12_pip: nvidia-cuda-runtime-cu12>=12.2.140 up to 0.4.23,
        // >=12.3.101 for 0.4.24/0.4.25 (CUDA 12.2 dropped in jaxlib 0.4.24).
        assert_eq!(cudas("0.4.23"), ["11.8", "12.2", "12.3"]);
        assert_eq!(cudas("0.4.24"), ["11.8", "12.3"]);
        assert_eq!(cudas("0.4.25"), ["11.8", "12.3"]);
        // From 0.4.26: any CUDA 12.1 or newer.
        for v in ["0.4.26", "0.4.31", "0.4.38", "0.5.0", "0.7.1", "0.12.0"] {
            let c = cudas(v);
            assert_eq!(c.first().map(String::as_str), Some("12.1"), "jax {v}");
            assert!(c.iter().any(|x| x == "12.2"), "jax {v}");
        }
    }

    #[test]
    fn tensorflow_gpu_installs_that_pip_can_resolve() {
        let d = data();
        // tensorflow[and-cuda]==2.15.0 pins tensorrt-libs==8.6.1, absent
        // from PyPI; 2.15.0.post1 drops it.
        let r = d.release(Framework::TensorFlow, "2.15.0").expect("known");
        assert_eq!(
            r.cuda[0].install.packages,
            ["tensorflow[and-cuda]==2.15.0.post1"]
        );
        assert_eq!(
            r.cpu_for("linux/amd64").map(|i| i.packages[0].as_str()),
            Some("tensorflow-cpu==2.15.0")
        );
        let r = d.release(Framework::TensorFlow, "2.15.1").expect("known");
        assert_eq!(r.cuda[0].install.packages, ["tensorflow[and-cuda]==2.15.1"]);
        // 2.14's extra pins tensorrt==8.5.3.1: no python 3.11 wheels.
        let r = d.release(Framework::TensorFlow, "2.14.1").expect("known");
        assert_eq!(r.cuda[0].pythons, ["3.9", "3.10"]);
        assert!(r.pythons.iter().any(|p| p == "3.11"), "CPU keeps 3.11");
    }

    #[test]
    fn images_and_distros() {
        let d = data();
        assert_eq!(
            d.cuda_image("12.4", "ubuntu22.04", CudaFlavor::Runtime, true)
                .as_deref(),
            Some("nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04")
        );
        assert_eq!(
            d.cuda_image("11.8", "ubuntu22.04", CudaFlavor::Devel, true)
                .as_deref(),
            Some("nvidia/cuda:11.8.0-cudnn8-devel-ubuntu22.04")
        );
        assert_eq!(
            d.cuda_image("12.4", "ubuntu24.04", CudaFlavor::Runtime, true),
            None
        );
        // 12.5.1 has ubuntu24.04 images, but none with cuDNN.
        assert_eq!(
            d.cuda_image("12.5", "ubuntu24.04", CudaFlavor::Runtime, true),
            None
        );
        assert_eq!(
            d.cuda_image("12.5", "ubuntu24.04", CudaFlavor::Runtime, false)
                .as_deref(),
            Some("nvidia/cuda:12.5.1-runtime-ubuntu24.04")
        );
        assert_eq!(
            d.cuda_image("12.6", "ubuntu24.04", CudaFlavor::Runtime, true)
                .as_deref(),
            Some("nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04")
        );
        assert_eq!(d.distro_python("ubuntu22.04"), Some("3.10"));
        assert_eq!(d.distro_python("bookworm"), Some("3.11"));
        assert_eq!(
            distro_of_image("nvidia/cuda", "12.4.1-cudnn-runtime-ubuntu22.04").as_deref(),
            Some("ubuntu22.04")
        );
        assert_eq!(
            distro_of_image("ubuntu", "24.04").as_deref(),
            Some("ubuntu24.04")
        );
        assert_eq!(
            distro_of_image("debian", "bookworm-slim").as_deref(),
            Some("debian12")
        );
        assert_eq!(distro_of_image("python", "3.11-slim"), None);
        // Ubuntu's codenames, as Debian's; releases the data does not know
        // and moving tags are still distro images (python from apt).
        for (name, tag, distro) in [
            ("ubuntu", "jammy", "ubuntu22.04"),
            ("ubuntu", "noble-20240801", "ubuntu24.04"),
            ("ubuntu", "25.04", "ubuntu25.04"),
            ("ubuntu", "", "ubuntu"),
            ("ubuntu", "latest", "ubuntu:latest"),
            ("debian", "stable-slim", "debian:stable-slim"),
        ] {
            assert_eq!(
                distro_of_image(name, tag).as_deref(),
                Some(distro),
                "{name}:{tag}"
            );
        }
        assert_eq!(distro_of_image("ubuntu", "my-build"), None);
        assert_eq!(
            d.release(Framework::PyTorch, "2.4.1.0")
                .map(|r| r.version.as_str()),
            Some("2.4.1")
        );
        assert!(d.release(Framework::PyTorch, "2.4.10").is_none());
        assert_eq!(d.cuda_image_cudnn("12.1").as_deref(), Some("8"));
        assert_eq!(d.cuda_image_cudnn("12.3").as_deref(), Some("9"));
        assert_eq!(d.cuda_image_cudnn("12.4").as_deref(), Some("9"));
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert_eq!(version_cmp("2.10.0", "2.9.1"), Ordering::Greater);
        assert_eq!(version_cmp("0.4.38", "0.5.0"), Ordering::Less);
        assert_eq!(version_cmp("2.4", "2.4.0"), Ordering::Less);
        let d = data();
        assert_eq!(
            d.newest_in_line(Framework::PyTorch, "2.16.0")
                .map(|r| r.version.as_str()),
            Some("2.14.1")
        );
        assert_eq!(
            d.newest_in_line(Framework::Jax, "0.4.99")
                .map(|r| r.version.as_str()),
            Some("0.4.38")
        );
    }

    #[test]
    fn broken_data_is_a_located_error() {
        let e = CompatData::parse("kiln-compat 1\npython \"3.11\"\n").expect_err("slim missing");
        assert_eq!(e.line, 2);
        let e =
            CompatData::parse("distro \"x\" python=\"3\" source=\"http://x\"\n").expect_err("http");
        assert!(e.message.contains("https"));
    }
}
