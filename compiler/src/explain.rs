//! `kiln explain`: the resolved plan in words — what kiln chose and why.

use std::fmt::Write as _;

use crate::lower::CONDA_BUILDER;
use crate::model::{Installer, RunAfter};
use crate::plan::{Layering, PipStep, Plan, VENV};

/// Explain one plan (one variant on one platform).
pub fn explain(plan: &Plan) -> String {
    let mut o = String::new();
    let _ = write!(o, "variant {} for {}", plan.variant, plan.platform);
    if let Some(d) = &plan.description {
        let _ = write!(o, " — {d}");
    }
    o.push('\n');
    if let Some(n) = &plan.name {
        let _ = writeln!(o, "  image title: {n}");
    }
    let _ = writeln!(o, "  python: {}", plan.python);
    match &plan.gpu {
        Some(g) => {
            let _ = writeln!(
                o,
                "  GPU: CUDA {}{}, {}",
                g.cuda,
                g.cudnn
                    .as_ref()
                    .map(|c| format!(", cuDNN {c}"))
                    .unwrap_or_default(),
                match (g.from, &plan.framework) {
                    (crate::model::CudaFrom::Base, _) => "CUDA libraries from the base image",
                    (crate::model::CudaFrom::Wheels, Some(_)) =>
                        "CUDA libraries from the framework's wheels",
                    (crate::model::CudaFrom::Wheels, None) =>
                        "CUDA libraries only from what the pip requirements install (no framework)",
                }
            );
        }
        None => o.push_str("  CPU only\n"),
    }

    o.push_str("\nbases\n");
    let base_line = |o: &mut String, role: &str, b: &crate::plan::Base| {
        let _ = write!(
            o,
            "  {role}: {} ({})",
            b.reference.familiar_name_tag(),
            b.why
        );
        if let Some(d) = b.resolved.as_ref().and_then(|r| r.digest.as_ref()) {
            let _ = write!(o, ", pinned to {d}");
        }
        if b.python_from_apt {
            o.push_str(", python from the distro's packages");
        }
        o.push('\n');
    };
    base_line(&mut o, "runtime", &plan.runtime);
    if plan.conda.is_some() && plan.builder.span.is_none() {
        let _ = writeln!(
            o,
            "  builder: {CONDA_BUILDER} (conda environments are built in miniconda)"
        );
    } else {
        base_line(&mut o, "builder", &plan.builder);
    }

    o.push_str("\nstages (built in parallel, joined at the end)\n");
    // As lowering installs them: the distro's python first, where the
    // runtime takes it from apt.
    let mut rt: Vec<String> = Vec::new();
    if plan.runtime.python_from_apt {
        rt.push("python3".into());
    }
    for a in &plan.apt_runtime {
        rt.extend(a.value.iter().cloned());
    }
    let _ = writeln!(
        o,
        "  1. runtime: the base{}{}",
        if rt.is_empty() {
            String::new()
        } else {
            format!(" + apt {}", rt.join(" "))
        },
        plan.user
            .as_ref()
            .map(|u| format!(" + user {} ({}:{})", u.value.name, u.value.uid, u.value.gid))
            .unwrap_or_default()
    );
    let mut bp: Vec<String> = Vec::new();
    if plan.builder.python_from_apt && plan.conda.is_none() {
        bp.extend(["python3".to_string(), "python3-venv".to_string()]);
    }
    for a in &plan.apt_build {
        bp.extend(a.value.iter().cloned());
    }
    let installer = match plan.installer {
        Installer::Pip => "pip",
        Installer::Uv => "uv",
    };
    let env_kind = match &plan.conda {
        Some(f) => format!("conda environment from {} at {VENV}", f.value),
        None => format!("venv at {VENV}"),
    };
    let installs = if plan.conda.is_some() && plan.pip.is_empty() && plan.framework.is_none() {
        String::new()
    } else {
        format!(", packages installed with {installer}")
    };
    let _ = writeln!(
        o,
        "  2. builder: {}{env_kind}{installs}",
        if bp.is_empty() {
            String::new()
        } else {
            format!("apt {} (builder only), ", bp.join(" "))
        }
    );
    if let Some(fw) = &plan.framework {
        let _ = write!(
            o,
            "     a. {} {}: {}",
            fw.name,
            fw.version,
            fw.packages.join(" ")
        );
        if let Some(i) = &fw.index_url {
            let _ = write!(o, " from {i}");
        }
        if let Some(i) = &fw.extra_index_url {
            let _ = write!(o, " (extra index {i})");
        }
        if let Some(f) = &fw.find_links {
            let _ = write!(o, " (find-links {f})");
        }
        o.push_str(", its own layer\n");
    }
    for step in &plan.pip {
        let line = match step {
            PipStep::Package {
                spec, lock, hashes, ..
            } => {
                let from = match (lock, hashes.is_empty()) {
                    (Some(l), true) => format!(" (from the lock {l})"),
                    (Some(l), false) => format!(" (from the lock {l}, hashes checked)"),
                    (None, _) => String::new(),
                };
                match plan.layering {
                    Layering::PerPackage => {
                        format!("{spec}{from}: its own layer (--no-deps, merged)")
                    }
                    Layering::Grouped => format!("{spec}{from}"),
                }
            }
            PipStep::Group { specs, .. } => format!("{}: installed together", specs.join(" ")),
            PipStep::Requirements {
                path,
                includes,
                sources,
                ..
            } => {
                let mut line = if includes.is_empty() {
                    format!("-r {path} (bind-mounted from the context, not copied)")
                } else {
                    format!(
                        "-r {path} (bind-mounted from the context with {}, not copied)",
                        includes.join(", ")
                    )
                };
                if !sources.is_empty() {
                    let what: Vec<&str> = sources
                        .iter()
                        .map(|s| if s.is_empty() { "the whole context" } else { s })
                        .collect();
                    line.push_str(&format!(
                        "; installs from {} (run in the context's root; re-runs when they change)",
                        what.join(", ")
                    ));
                }
                line
            }
        };
        let _ = writeln!(o, "     - {line}");
    }
    for i in &plan.indexes {
        let _ = writeln!(
            o,
            "     {} {}{}",
            if i.default {
                "index (in PyPI's place)"
            } else {
                "extra index"
            },
            i.url,
            i.secret
                .as_ref()
                .map(|s| format!(" (credentials from secret `{s}`)"))
                .unwrap_or_default()
        );
    }
    let copies: Vec<String> = plan
        .copies
        .iter()
        .map(|c| {
            let workdir = crate::lower::image_workdir(plan);
            format!(
                "{} → {}{}",
                c.value.src,
                crate::lower::resolve_dest(&c.value.dest, workdir.as_deref()),
                if c.value.root_owned { " (root's)" } else { "" }
            )
        })
        .collect();
    if copies.is_empty() {
        o.push_str("  3. app: nothing copied from the context\n");
    } else {
        let _ = writeln!(
            o,
            "  3. app: {} (only these paths are sent from the context)",
            copies.join(", ")
        );
    }
    let join = match plan.layering {
        Layering::PerPackage if !copies.is_empty() && crate::lower::app_on_environment(plan) => {
            "one MergeOp of the runtime and one layer per install; the app files copied onto it (a `run` step or the venv is below them)"
        }
        Layering::PerPackage => {
            "one MergeOp of the runtime, one layer per install and the app files"
        }
        Layering::Grouped => {
            "the venv and the app files copied onto the runtime, one after another"
        }
    };
    let _ = writeln!(o, "  join: {join}");
    for r in &plan.runs {
        let when = match r.value.after {
            RunAfter::Deps => "after the dependencies",
            RunAfter::Copy => "after the app files",
        };
        let _ = writeln!(
            o,
            "  run ({when}): {}{}",
            r.value.command.lines().next().unwrap_or(""),
            r.value
                .secret
                .as_ref()
                .map(|id| format!(" (secret `{id}` at /run/secrets/{id}, required)"))
                .unwrap_or_default()
        );
    }

    o.push_str("\ncaches and secrets (never in a layer)\n");
    let cache = match plan.installer {
        Installer::Pip => "/root/.cache/pip",
        Installer::Uv => "/root/.cache/uv",
    };
    let pid = plan.platform.to_string().replace('/', "-");
    if !installs.is_empty() {
        let _ = writeln!(
            o,
            "  {installer} cache: {cache} (cache mount kiln-{installer}-{pid}, shared)"
        );
    }
    if !plan.apt_runtime.is_empty() || !plan.apt_build.is_empty() || plan.runtime.python_from_apt {
        let _ = writeln!(
            o,
            "  apt: archives and package lists in /kiln/apt/<distro-release> (cache mount kiln-apt-{pid}, locked); none in the image"
        );
    }
    if plan.conda.is_some() {
        let _ = writeln!(
            o,
            "  conda packages: /opt/conda/pkgs (cache mount kiln-conda-pkgs-{pid}, locked)"
        );
    }
    match &plan.ca_bundle {
        Some(id) => {
            let _ = writeln!(
                o,
                "  CA bundle: secret `{id}`, mounted into install and `run` steps only"
            );
        }
        None => o.push_str("  no CA bundle secret\n"),
    }

    o.push_str("\nimage\n");
    let c = &plan.config.config;
    match &plan.user {
        Some(u) => {
            let _ = writeln!(o, "  user: {} ({})", c.user, u.value.name);
        }
        None if !c.user.is_empty() => {
            let _ = writeln!(o, "  user: {}", c.user);
        }
        None => {}
    }
    if !c.working_dir.is_empty() {
        let _ = writeln!(o, "  workdir: {}", c.working_dir);
    }
    for e in &c.env {
        // One line each: a value's line breaks and tabs are shown escaped.
        let e = e
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
            .replace('\t', "\\t");
        let _ = writeln!(o, "  env {e}");
    }
    if let Some(ep) = &c.entrypoint {
        let _ = writeln!(o, "  entrypoint: {ep:?}");
    }
    if let Some(cmd) = &c.cmd {
        let _ = writeln!(o, "  cmd: {cmd:?}");
    }
    for p in c.exposed_ports.keys() {
        let _ = writeln!(o, "  expose {p}");
    }
    if let Some(h) = c.other.get("Healthcheck") {
        let _ = writeln!(o, "  healthcheck: {h}");
    }
    if let Some(sig) = c.other.get("StopSignal").and_then(|v| v.as_str()) {
        let _ = writeln!(o, "  stop signal: {sig}");
    }
    for (k, v) in &c.labels {
        let _ = writeln!(o, "  label {k}={v}");
    }
    if !plan.verify.is_empty() {
        o.push_str("\nchecks (run during the build, not part of the image)\n");
        for v in &plan.verify {
            let on = match v.value.after {
                crate::model::RunAfter::Deps => "on the environment",
                crate::model::RunAfter::Copy => "on the image with the app files",
            };
            let _ = writeln!(o, "  python -c {:?}  ({on})", v.value.code);
        }
    }
    if !plan.notes.is_empty() {
        o.push_str("\nwhy\n");
        for n in &plan.notes {
            let _ = writeln!(o, "  - {n}");
        }
    }
    o
}
