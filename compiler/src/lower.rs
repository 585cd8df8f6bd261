//! Lowering a [`Plan`] into an LLB graph.
//!
//! For one variant, three branches share nothing until the end, so BuildKit
//! runs them in parallel: the runtime (base + apt packages + user), the
//! builder (builder base + build packages + venv + installs) and the app
//! (context files). Where the engine has MergeOp and DiffOp, every install is
//! its own layer (a DiffOp of its step) and the image is one MergeOp of the
//! runtime, those layers and the app; otherwise the venv and the app files are
//! copied onto the runtime one after another.

use miette::SourceSpan;

use crate::Options;
use crate::diag::SourceFile;
use crate::image::ImageConfig;
use crate::llb::{
    self, Exec, FileAction, FileActions, LocalOpts, Marshaled, Mount, OpMeta, Owner, Sharing,
    SourceRange, State,
};
use crate::model::{Installer, RunAfter};
use crate::plan::{Layering, PipStep, Plan, VENV};

/// Where the build context is mounted for steps that read files from it.
const CONTEXT_MOUNT: &str = "/kiln/context";
/// uv lives in its own venv in the builder, never in the image.
const UV_TOOL: &str = "/opt/kiln-uv";
/// The uv release kiln installs for `installer "uv"`.
const UV_REQUIREMENT: &str = "uv==0.9.7";
/// How many per-package install steps download at once (see
/// `Cx::in_download_slot`).
const DOWNLOAD_SLOTS: u64 = 3;
/// How install steps call pip: a shell function (`PIP_FUNCTION`) that uses
/// the environment's own pip (a venv seeds pip, and setuptools up to python
/// 3.11, as users expect of a venv), and the builder's pip pointed at the
/// environment when it has none (a conda environment without pip).
const PIP: &str = "kiln_pip";
const PIP_FUNCTION: &str = "kiln_pip() {
  if [ -x /opt/venv/bin/pip ]; then /opt/venv/bin/python -m pip \"$@\"
  else python3 -m pip --python /opt/venv/bin/python \"$@\"; fi
}
";
/// Installs run a second time after a failure: a download cut off half-way
/// (a read timeout behind a busy proxy) fails pip's install without a retry
/// of its own. Not where the output says the failure is one a second try
/// cannot fix (no such package or version, a conflict, a hash mismatch, a
/// wheel for another platform, a build that failed) and nothing in it
/// points at the network: that fails at once, with its message once. The
/// output is shown as it comes, and kept in /tmp (removed again) to be read.
const RETRY_FUNCTION: &str = "kiln_retry() {
  if ! command -v tee >/dev/null 2>&1 || ! command -v grep >/dev/null 2>&1; then
    \"$@\" && return 0
  else
    kiln_log=/tmp/kiln-install-$$.log
    { \"$@\" 2>&1 && kiln_rc=0 || kiln_rc=$?; echo \"$kiln_rc\" > \"$kiln_log.rc\"; } | tee \"$kiln_log\"
    kiln_rc=$(cat \"$kiln_log.rc\" 2>/dev/null || echo 1)
    if [ \"$kiln_rc\" = 0 ]; then rm -f \"$kiln_log\" \"$kiln_log.rc\"; return 0; fi
    if grep -q -E 'No matching distribution|ResolutionImpossible|conflicting dependencies|DO NOT MATCH THE HASHES|Hashes are required|Invalid requirement|not a supported wheel|requires a different Python|Could not open requirements file|subprocess-exited-with-error|No solution found|not found in the package registry|[Hh]ash mismatch' \"$kiln_log\" \\
      && ! grep -q -E 'Retrying \\(|[Tt]imed? ?out|TimeoutError|ConnectionError|Connection (broken|reset|refused|aborted)|ProtocolError|IncompleteRead|RemoteDisconnected|Max retries exceeded|name resolution|HTTP error 5|Service Unavailable|Bad Gateway|error sending request|network' \"$kiln_log\"; then
      rm -f \"$kiln_log\" \"$kiln_log.rc\"
      echo \"kiln: the install failed, and a second try would fail the same way\" >&2
      return \"$kiln_rc\"
    fi
    rm -f \"$kiln_log\" \"$kiln_log.rc\"
  fi
  echo \"kiln: the install failed; trying once more in 3 s\" >&2
  sleep 3
  \"$@\"
}
";
/// A standard venv: what `python -m venv` seeds for this python (pip, and
/// setuptools up to 3.11). A venv made `--without-pip` is 26 MB smaller, but
/// packages that import `pkg_resources` without declaring setuptools
/// (tensorflow-hub 0.15, among many) then fail, and `python -m pip` is gone.
const VENV_SCRIPT: &str = "python3 -m venv /opt/venv\n";

/// The venv step: first a check that the builder's python is the recipe's
/// `python` (a base whose tag and config do not say which python it has,
/// an in-house image, gets no other check), then the venv. Only major and
/// minor count: `3.11.4` picks a base tag, and any 3.11 meets it.
fn venv_script(python: &str, image: &str) -> String {
    format!(
        "if ! command -v python3 >/dev/null 2>&1; then echo \"kiln: error: {image} has no python3 on its PATH: the environment needs the image's python {want} (a python:{want}-slim image, or a Debian/Ubuntu base kiln installs python on)\" >&2; exit 1; fi
kiln_have=$(python3 -c 'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])') || exit 1
case \"$kiln_have.\" in
  {want}.*) ;;
  *) echo \"kiln: error: python3 in {image} is $kiln_have, but the recipe asks for python {want}: use an image with python {want}, or change the recipe's python line\" >&2; exit 1 ;;
esac
{VENV_SCRIPT}",
        // A version is digits and dots (the model checks it); nothing else
        // may reach the script.
        want = python
            .split('.')
            .take(2)
            .map(|part| part.chars().filter(char::is_ascii_digit).collect::<String>())
            .collect::<Vec<_>>()
            .join(".")
    )
}

/// After `conda env create`: the environment's python must be the
/// recipe's major.minor (the file may name none, or another): the image's
/// python is the environment's.
fn conda_python_check(python: &str, file: &str) -> String {
    let want = python
        .split('.')
        .take(2)
        .map(|part| {
            part.chars()
                .filter(char::is_ascii_digit)
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(".");
    let missing = quote(&format!(
        "kiln: error: the conda environment of {file} has no python: add `- python={want}` to its dependencies"
    ));
    let other = quote(&format!(
        "but the recipe asks for python {want}: write `- python={want}` in {file}, or change the recipe's python line"
    ));
    format!(
        "kiln_have=$({VENV}/bin/python -c 'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])' 2>/dev/null) || {{ echo {missing} >&2; exit 1; }}
case \"$kiln_have.\" in
  {want}.*) ;;
  *) echo \"kiln: error: the conda environment's python is $kiln_have,\" {other} >&2; exit 1 ;;
esac
"
    )
}

/// Whether an image's tag names a distro release whose python kiln's data
/// knows (`ubuntu:22.04`, `nvidia/cuda:…-ubuntu22.04`, `debian:bookworm`).
fn distro_python_known(image: &crate::image_ref::ImageRef) -> bool {
    let tag = image.tag.clone().unwrap_or_default();
    crate::compat::distro_of_image(&image.familiar_name(), &tag).is_some_and(|d| {
        crate::compat::CompatData::builtin()
            .distro_python(&d)
            .is_some()
    })
}

/// A python that can import pip's vendored `packaging`: the venv's when it
/// has its own pip, the builder's otherwise.
const KILN_PY: &str = "kiln_py() {
  if [ -x /opt/venv/bin/pip ]; then /opt/venv/bin/python \"$@\"; else python3 \"$@\"; fi
}
";
/// Whether the installed distributions (the venv and the pins on
/// PYTHONPATH) meet each other's requirements, markers and extras included:
/// a fast stand-in for `pip check` (no pip start-up) that only says "complete"
/// when it is sure; any doubt, or an error, sends the step to pip install,
/// which decides.
const PINS_CHECK: &str = r#"import glob, os, sys
from importlib.metadata import distributions
try:
    try:
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.utils import canonicalize_name
    except ImportError:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(":") if p]
    paths += glob.glob("/opt/venv/lib/python*/site-packages")
    installed = {}
    for d in distributions(path=paths):
        if d.metadata["Name"]:
            installed.setdefault(canonicalize_name(d.metadata["Name"]), d)
    todo, seen, problems = [(n, "") for n in installed], set(), []
    while todo:
        item = todo.pop()
        if item in seen:
            continue
        seen.add(item)
        dist = installed[item[0]]
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": item[1]}):
                continue
            dep = installed.get(canonicalize_name(req.name))
            if dep is None:
                problems.append("%s needs %s, which no pin names" % (dist.metadata["Name"], req))
            elif not req.specifier.contains(dep.version, prereleases=True):
                problems.append("%s needs %s, the pins have %s" % (dist.metadata["Name"], req, dep.version))
            else:
                todo.extend((canonicalize_name(req.name), e) for e in req.extras)
except Exception as e:
    problems = ["cannot check the pins here (%s)" % e]
for p in problems:
    print("kiln:", p)
sys.exit(1 if problems else 0)
"#;
/// Where the remaining-requirements step mounts each package step's venv
/// (with a separate builder; see `lower`).
const PINS_MOUNT: &str = "/kiln/pins";
/// Puts the mounted pins' site-packages on PYTHONPATH (see `lower`).
const PINS_PATH: &str = "kiln_pins=
for d in /kiln/pins/*/lib/python*/site-packages; do
  if [ -d \"$d\" ]; then kiln_pins=\"$kiln_pins${kiln_pins:+:}$d\"; fi
done
export PYTHONPATH=\"$kiln_pins\"
";

/// Where apt steps mount their cache (see `APT_DIRS`).
const APT_CACHE: &str = "/kiln/apt";
/// apt's package lists and downloaded archives, one folder per distro
/// release (from the image's os-release) in the cache mount: a Debian and an
/// Ubuntu stage never read each other's lists or `.deb` files, and releases
/// of one distro keep theirs apart. The image's own /var/cache/apt and
/// /var/lib/apt/lists are left as the base had them.
const APT_DIRS: &str = "kiln_release=$( (. /etc/os-release 2>/dev/null; echo \"${ID:-unknown}-${VERSION_CODENAME:-${VERSION_ID:-unknown}}\") | tr -cd 'A-Za-z0-9._-')
kiln_apt_dir=/kiln/apt/$kiln_release
mkdir -p \"$kiln_apt_dir/archives\" \"$kiln_apt_dir/lists\"
kiln_apt=\"-o Dir::Cache=$kiln_apt_dir -o Dir::State::lists=$kiln_apt_dir/lists\"
";

/// Where conda images (miniconda, miniforge) keep `conda`.
const CONDA_BIN: &str = "/opt/conda/bin";

/// The conda builder image for `conda` recipes.
pub const CONDA_BUILDER: &str = "continuumio/miniconda3:24.7.1-0";

/// A lowered plan: the image graph, its config and the checks graph.
#[derive(Debug, Clone)]
pub struct Lowered {
    pub image: Marshaled,
    pub config: ImageConfig,
    pub checks: Option<Marshaled>,
    /// The image up to its `copy` lines' op, for the caller to solve on its
    /// own (a missing source then fails there, where the caller can tell
    /// which line named it). `None` without `copy` lines.
    pub copies: Option<Marshaled>,
}

struct Cx<'a> {
    plan: &'a Plan,
    source: &'a SourceFile,
    opts: &'a Options,
}

impl Cx<'_> {
    fn meta(&self, what: &str, span: Option<SourceSpan>) -> OpMeta {
        OpMeta::named(format!("{} {what}", self.plan.tag())).at(span.map(|s| self.range(s)))
    }

    /// As [`Cx::meta`], pointing at each of `spans` (the first heads it).
    fn meta_at_all(&self, what: &str, spans: &[SourceSpan]) -> OpMeta {
        spans
            .iter()
            .skip(1)
            .fold(self.meta(what, spans.first().copied()), |m, s| {
                m.at(Some(self.range(*s)))
            })
    }

    fn range(&self, span: SourceSpan) -> SourceRange {
        let (start_line, start_col) = self.source.line_col(span.offset());
        let end = span.offset() + span.len();
        let (end_line, end_col) = self.source.line_col(end);
        SourceRange {
            start_line: start_line as u32,
            start_col: start_col.saturating_sub(1) as u32,
            end_line: end_line as u32,
            end_col: end_col.saturating_sub(1) as u32,
        }
    }

    /// A `/bin/sh -c` step on the plan's platform, on the host network when
    /// the client asked for it (`--network=host` on engines that need it).
    fn shell(&self, script: &str, meta: OpMeta) -> Exec {
        let mut exec = Exec::shell(script, &self.plan.platform, meta);
        if self.opts.host_network {
            exec.network = llb::Network::Host;
        }
        exec.proxy = llb::ProxyEnv::from_build_args(&self.opts.build_args);
        exec.sandbox = self.sandbox();
        exec
    }

    /// The client's sandbox settings for a step.
    fn sandbox(&self) -> llb::Sandbox {
        llb::Sandbox {
            extra_hosts: self.opts.extra_hosts.clone(),
            ulimits: self.opts.ulimits.clone(),
            shm_size: self.opts.shm_size,
        }
    }

    /// A script of kiln's own (an install, the user, apt): as [`Cx::shell`],
    /// but a long one is handed to the shell in `KILN_STEP`, so a failure's
    /// last line (`process "/bin/sh -c …" did not complete successfully`,
    /// which quotes the whole command) stays one short line; the step's
    /// name, recipe line and log are shown above it.
    fn script(&self, script: &str, meta: OpMeta) -> Exec {
        // The step's name (without the variant's tag, so that equal steps
        // of two variants stay one) ends the line as a comment: engines
        // without source maps (BuildKit 0.8) name the failed step only so.
        let what: String = meta
            .name
            .strip_prefix(&format!("{} ", self.plan.tag()))
            .unwrap_or(&meta.name)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut exec = self.shell(script, meta);
        if script.lines().count() > 2 || script.len() > 200 {
            exec.args = vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("eval \"$KILN_STEP\" # kiln: {what}"),
            ];
            exec.env.push(("KILN_STEP".into(), script.to_string()));
        }
        exec
    }

    fn platform_id(&self) -> String {
        self.plan.platform.to_string().replace('/', "-")
    }

    /// Secrets and variables every install step gets.
    fn install_mounts(&self, exec: Exec) -> Exec {
        let mut exec = self.ca_mount(exec);
        for idx in &self.plan.indexes {
            if let Some(id) = &idx.secret {
                // Optional, so that the step says which secret is missing
                // and how to pass it (the engine's own error names only
                // the id, at whichever step mounts it first).
                exec = exec.mount(secret_mount(id, 0o400, true));
            }
        }
        exec
    }

    /// Shell code that points the usual TLS clients (OpenSSL's default
    /// paths, pip, requests, curl, conda, git) at the CA bundle when its
    /// secret is there: the secret is optional, and a path to a missing file
    /// would fail them.
    fn ca_exports(&self) -> Option<String> {
        self.plan.ca_bundle.as_ref().map(|id| {
            let p = secret_path(id);
            format!(
                "if [ -s {p} ]; then export SSL_CERT_FILE={p} PIP_CERT={p} REQUESTS_CA_BUNDLE={p} CURL_CA_BUNDLE={p} CONDA_SSL_VERIFY={p} GIT_SSL_CAINFO={p}; else echo {} >&2; fi",
                quote(&format!(
                    "kiln: warning: this build was not given the CA bundle secret `{id}` (--secret id={id},src=FILE); using the image's own CA certificates"
                ))
            )
        })
    }

    /// The CA bundle's secret, where the recipe has one (optional: a build
    /// without it runs with the image's own roots).
    fn ca_mount(&self, exec: Exec) -> Exec {
        match &self.plan.ca_bundle {
            Some(id) => exec.mount(secret_mount(id, 0o444, true)),
            None => exec,
        }
    }

    /// The shell prelude of install steps: trust the CA bundle when the
    /// secret is present, read index credentials from their netrc secret.
    fn install_prelude(&self) -> String {
        let mut s = String::from("set -eu\n");
        if let Some(ca) = self.ca_exports() {
            s.push_str(&ca);
            s.push('\n');
        }
        for idx in &self.plan.indexes {
            if let Some(id) = &idx.secret {
                let message = format!(
                    "kiln: error: this build was not given the secret `{id}`, the netrc file with the credentials of the pip index {}: pass it with --secret id={id},src=FILE",
                    idx.url
                );
                s.push_str(&format!(
                    "if [ ! -f {p} ]; then echo {} >&2; exit 1; fi\n",
                    quote(&message),
                    p = secret_path(id)
                ));
            }
        }
        if let Some(id) = self.plan.indexes.iter().find_map(|i| i.secret.as_ref()) {
            s.push_str(&format!("export NETRC={}\n", secret_path(id)));
        }
        s
    }

    fn pip_cache(&self, exec: Exec) -> Exec {
        let (target, id) = match self.plan.installer {
            Installer::Pip => (
                "/root/.cache/pip",
                format!("kiln-pip-{}", self.platform_id()),
            ),
            Installer::Uv => ("/root/.cache/uv", format!("kiln-uv-{}", self.platform_id())),
        };
        exec.mount(Mount::Cache {
            target: target.to_string(),
            id,
            sharing: Sharing::Shared,
        })
    }

    fn install_env(&self, base_env: &[(String, String)]) -> Vec<(String, String)> {
        let mut env = base_env.to_vec();
        let pairs: &[(&str, &str)] = match self.plan.installer {
            Installer::Pip => &[
                ("PIP_CACHE_DIR", "/root/.cache/pip"),
                ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
                ("PIP_NO_INPUT", "1"),
                ("PIP_ROOT_USER_ACTION", "ignore"),
                // Per-package steps download in parallel; pip's 15 s read
                // timeout fails them on a busy link. 30 s (uv's default)
                // rides that out, and a request that hangs (a proxy that
                // dropped it) costs 30 s before pip asks again, not minutes.
                ("PIP_DEFAULT_TIMEOUT", "30"),
            ],
            Installer::Uv => &[
                ("UV_CACHE_DIR", "/root/.cache/uv"),
                ("UV_LINK_MODE", "copy"),
                // pip writes bytecode at install time; so does uv with this,
                // so the image starts as fast whichever installer built it
                // (its user cannot write bytecode into /opt/venv later).
                ("UV_COMPILE_BYTECODE", "1"),
                ("UV_PYTHON_DOWNLOADS", "never"),
                ("UV_HTTP_TIMEOUT", "30"),
                ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
                ("PIP_ROOT_USER_ACTION", "ignore"),
            ],
        };
        env.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    /// Per-package steps are independent, so BuildKit runs them all at
    /// once; dozens of simultaneous downloads time out behind slow links and
    /// proxies. Each step takes the first free one of `DOWNLOAD_SLOTS` lock
    /// files in the (shared) installer cache mount for its download and
    /// install, so at most that many run at a time. The command is the same
    /// for every step (no slot is assigned at compile time), so a step's cache
    /// key never depends on the other steps.
    fn in_download_slot(&self, cmd: String) -> String {
        let cache = match self.plan.installer {
            Installer::Pip => "/root/.cache/pip",
            Installer::Uv => "/root/.cache/uv",
        };
        let slots = (0..DOWNLOAD_SLOTS)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "if command -v flock >/dev/null 2>&1; then
  while :; do
    for kiln_slot in {slots}; do
      exec 9>{cache}/.kiln-slot-$kiln_slot
      if flock -n 9; then break 2; fi
      exec 9>&-
    done
    sleep 0.2
  done
fi
{cmd}"
        )
    }

    /// The install command of one pin, alone (`--no-deps`). A hashed lock's
    /// pin goes through a one-line requirements file in the installer's
    /// cache mount (never in a layer), the only place pip reads `--hash`.
    ///
    /// The file is named as the lock and the pin is on its line there, so
    /// that pip's messages (a hash that does not match) point at the lock.
    fn pin_install(&self, spec: &str, hashes: &[String], lock: Option<(&str, usize)>) -> String {
        if hashes.is_empty() {
            return self.install_command(&[quote(spec)], true, None, None, None);
        }
        let cache = match self.plan.installer {
            Installer::Pip => "/root/.cache/pip",
            Installer::Uv => "/root/.cache/uv",
        };
        let line = std::iter::once(spec.to_string())
            .chain(hashes.iter().map(|h| format!("--hash={h}")))
            .collect::<Vec<_>>()
            .join(" ");
        let name: String = lock
            .and_then(|(path, _)| path.rsplit('/').next())
            .filter(|n| {
                !n.is_empty()
                    && !n.starts_with('.')
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            })
            .unwrap_or("requirements.txt")
            .to_string();
        let blank_lines = "\\n".repeat(lock.map_or(0, |(_, l)| l.saturating_sub(1)));
        format!(
            "kiln_req_dir=$(mktemp -d {cache}/.kiln-req.XXXXXX)\nkiln_req=\"$kiln_req_dir/{name}\"\nprintf '{blank_lines}%s\\n' {} > \"$kiln_req\"\n{}\nrm -rf \"$kiln_req_dir\"",
            quote(&line),
            self.install_command(
                &["-r".into(), "\"$kiln_req\"".into()],
                true,
                None,
                None,
                None
            )
        )
    }

    /// The install command line for `args` (already quoted).
    fn install_command(
        &self,
        args: &[String],
        no_deps: bool,
        index: Option<&str>,
        extra: Option<&str>,
        find_links: Option<&str>,
    ) -> String {
        let mut cmd = match self.plan.installer {
            Installer::Pip => format!("kiln_retry {PIP} install --no-warn-script-location"),
            Installer::Uv => {
                format!("kiln_retry {UV_TOOL}/bin/uv pip install --python {VENV}/bin/python")
            }
        };
        if no_deps {
            cmd.push_str(" --no-deps");
        }
        // The recipe's default index takes PyPI's place; where the step has
        // an index of its own (the framework's), it is an extra one, and
        // PyPI is not asked either way.
        let default = self.plan.indexes.iter().find(|i| i.default);
        match (index, default) {
            (Some(i), _) => cmd.push_str(&format!(" --index-url {}", quote(i))),
            (None, Some(d)) => cmd.push_str(&format!(" --index-url {}", quote(&d.url))),
            (None, None) => {}
        }
        if let Some(e) = extra {
            cmd.push_str(&format!(" --extra-index-url {}", quote(e)));
        }
        for idx in &self.plan.indexes {
            if idx.default && index.is_none() {
                continue;
            }
            cmd.push_str(&format!(" --extra-index-url {}", quote(&idx.url)));
        }
        if let Some(f) = find_links {
            cmd.push_str(&format!(" --find-links {}", quote(f)));
        }
        // uv takes each package from the first index that has it, extra
        // indexes first: a private mirror would serve PyPI's torch over
        // PyTorch's `+cpu` build. Best match across indexes is pip's way.
        if self.plan.installer == Installer::Uv && cmd.contains(" --extra-index-url ") {
            cmd.push_str(" --index-strategy unsafe-best-match");
        }
        for a in args {
            cmd.push(' ');
            cmd.push_str(a);
        }
        cmd
    }

    /// `pip check` (or uv's) on the environment.
    fn check_command(&self) -> String {
        match self.plan.installer {
            Installer::Pip => format!("{PIP} check"),
            Installer::Uv => format!("{UV_TOOL}/bin/uv pip check --python {VENV}/bin/python"),
        }
    }

    /// `cmd`, then a dependency check: pip reports a conflict its resolver
    /// left (a later requirement replacing what an earlier one needs) and
    /// still exits 0; the step says so where the build log shows it.
    fn checked(&self, cmd: String) -> String {
        format!(
            "{cmd}\nif ! {}; then echo 'kiln: warning: the environment has conflicting requirements (above)' >&2; fi",
            self.check_command()
        )
    }

    fn install_exec(&self, script: String, env: &[(String, String)], meta: OpMeta) -> Exec {
        let pip = match self.plan.installer {
            Installer::Pip => PIP_FUNCTION,
            Installer::Uv => "",
        };
        let exec = self
            .script(
                &format!("{}{RETRY_FUNCTION}{pip}{script}", self.install_prelude()),
                meta,
            )
            .env(&self.install_env(env));
        self.pip_cache(self.install_mounts(exec))
    }

    /// apt-get install with lists and archives on locked cache mounts and the
    /// docker-clean hook masked for the step, so nothing of apt's caches is
    /// left in the layer.
    fn apt_install(
        &self,
        state: &State,
        packages: &[String],
        env: &[(String, String)],
        meta: OpMeta,
    ) -> State {
        let quoted: Vec<String> = packages.iter().map(|p| quote(p)).collect();
        // apt's https method reads its CA file from its own option, not
        // from SSL_CERT_FILE (nvidia/cuda images have an https source).
        let apt_ca = match &self.plan.ca_bundle {
            Some(id) => {
                let p = secret_path(id);
                format!(
                    "if [ -s {p} ]; then kiln_apt=\"$kiln_apt -o Acquire::https::CAInfo={p}\"; fi\n"
                )
            }
            None => String::new(),
        };
        let script = format!(
            "{}{APT_DIRS}{apt_ca}apt-get $kiln_apt update -q\napt-get $kiln_apt install -y -q --no-install-recommends -o APT::Keep-Downloaded-Packages=true {}\n",
            self.install_prelude(),
            quoted.join(" ")
        );
        let mut env = env.to_vec();
        env.push(("DEBIAN_FRONTEND".into(), "noninteractive".into()));
        let empty = State::scratch().file(
            FileActions::new().then(FileAction::Mkfile {
                path: "/docker-clean".into(),
                mode: 0o644,
                data: Vec::new(),
                owner: None,
            }),
            OpMeta::named(format!(
                "{} apt: an empty docker-clean hook",
                self.plan.tag()
            )),
        );
        let pid = self.platform_id();
        let exec = self
            .script(&script, meta)
            .env(&env)
            .mount(Mount::Cache {
                target: APT_CACHE.into(),
                id: format!("kiln-apt-{pid}"),
                sharing: Sharing::Locked,
            })
            .mount(Mount::Bind {
                target: "/etc/apt/apt.conf.d/docker-clean".into(),
                source: empty,
                selector: Some("docker-clean".into()),
                readonly: true,
            });
        state.run(self.install_mounts(exec)).root()
    }

    fn context(&self, include: Vec<String>, hint: &str, what: &str) -> State {
        State::local(
            &self.opts.context_name,
            &LocalOpts {
                include,
                exclude: self.opts.exclude.clone(),
                shared_key_hint: Some(hint.to_string()),
                ..Default::default()
            },
            OpMeta::named(format!("{} context: {what}", self.plan.tag())),
        )
    }
}

/// Lower one plan.
pub fn lower(plan: &Plan, source: &SourceFile, opts: &Options) -> Lowered {
    let cx = Cx { plan, source, opts };
    let platform = &plan.platform;
    let merge = plan.layering == Layering::PerPackage && opts.caps.merge_diff;

    // ---- runtime branch -------------------------------------------------
    let rt_env = plan.runtime.env();
    let mut rt = State::image(
        &plan.runtime.pinned().to_string(),
        platform,
        cx.meta(
            &format!("base {}", plan.runtime.reference.familiar_name_tag()),
            plan.runtime.span,
        ),
    );
    let rt_base = rt.clone();
    // What each layer kiln adds is, in the order of the image's layers (see
    // `history`): the runtime's steps, the environment's, and so on.
    let mut rt_names: Vec<String> = Vec::new();
    let mut rt_packages: Vec<String> = Vec::new();
    let mut rt_spans = Vec::new();
    if plan.runtime.python_from_apt {
        rt_packages.push("python3".into());
    }
    for a in &plan.apt_runtime {
        rt_packages.extend(a.value.iter().cloned());
        rt_spans.push(a.span);
    }
    if !rt_packages.is_empty() {
        let meta = cx.meta(
            &format!("apt-get install {}", rt_packages.join(" ")),
            rt_spans.first().copied(),
        );
        let meta = rt_spans
            .iter()
            .skip(1)
            .fold(meta, |m, s| m.at(Some(cx.range(*s))));
        rt = cx.apt_install(&rt, &rt_packages, &rt_env, meta);
        rt_names.push(format!("apt-get install {}", rt_packages.join(" ")));
    }
    if let Some(u) = &plan.user {
        // The base's workdir, where the recipe keeps it (see `user_script`).
        let base_workdir = plan
            .runtime
            .resolved
            .as_ref()
            .filter(|_| plan.workdir.is_none())
            .map(|r| r.config.config.working_dir.clone())
            .filter(|w| !w.is_empty() && w != "/");
        let script = user_script(
            &u.value.name,
            u.value.uid,
            u.value.gid,
            base_workdir.as_deref(),
        );
        let what = format!("user {} ({}:{})", u.value.name, u.value.uid, u.value.gid);
        let meta = cx.meta(&what, Some(u.span));
        rt = rt.run(cx.script(&script, meta).env(&rt_env)).root();
        rt_names.push(what);
    }

    // ---- builder branch -------------------------------------------------
    let conda = plan.conda.as_ref();
    // kiln's miniconda builder, pinned to the digest the caller resolved,
    // with its environment.
    let conda_builder = plan.conda_builder().map(|r| {
        let resolved = opts.resolved_image(&r, &plan.platform);
        (r, resolved)
    });
    let mut b_env = match &conda_builder {
        Some((_, Some(i))) if !i.config.config.env.is_empty() => i.config.env_pairs(),
        Some(_) => vec![("PATH".to_string(), crate::plan::DEFAULT_PATH.to_string())],
        None => plan.builder.env(),
    };
    // Conda images keep `conda` in /opt/conda/bin, on their PATH; where
    // the builder's config is not known, the step still finds it there.
    if conda.is_some() {
        for (k, v) in b_env.iter_mut() {
            if k == "PATH" && !v.split(':').any(|p| p == CONDA_BIN) {
                *v = format!("{CONDA_BIN}:{v}");
            }
        }
    }
    let builder_ref = match &conda_builder {
        Some((r, resolved)) => match resolved.and_then(|i| i.digest.as_deref()) {
            Some(d) if r.digest.is_none() => r.with_digest(d).to_string(),
            _ => r.to_string(),
        },
        None => plan.builder.pinned().to_string(),
    };
    let builder_name = builder_ref
        .rsplit('/')
        .next()
        .unwrap_or(&builder_ref)
        .to_string();
    let same_base = builder_ref == plan.runtime.pinned().to_string();
    // The same image as the runtime base is the same vertex (one name).
    let mut b = if same_base {
        rt_base.clone()
    } else {
        // kiln's miniconda builder is the `conda` line's doing: a failure
        // to pull it points there.
        State::image(
            &builder_ref,
            platform,
            cx.meta(
                &format!("builder {builder_name}"),
                plan.builder.span.or(conda.map(|c| c.span)),
            ),
        )
    };
    let mut b_packages: Vec<String> = Vec::new();
    let mut b_spans = Vec::new();
    if plan.builder.python_from_apt && conda.is_none() {
        b_packages.extend(["python3".to_string(), "python3-venv".to_string()]);
    }
    for a in &plan.apt_build {
        b_packages.extend(a.value.iter().cloned());
        b_spans.push(a.span);
    }
    if !b_packages.is_empty() {
        let meta = cx.meta(
            &format!("builder: apt-get install {}", b_packages.join(" ")),
            b_spans.first().copied(),
        );
        b = cx.apt_install(&b, &b_packages, &b_env, meta);
    }
    if plan.installer == Installer::Uv {
        // uv comes from PyPI, or from the index that takes its place.
        let default_index = plan.indexes.iter().find(|i| i.default);
        let script = format!(
            "python3 -m venv {UV_TOOL}\n{UV_TOOL}/bin/python -m pip install --disable-pip-version-check{} {}\n",
            default_index
                .map(|i| format!(" --index-url {}", quote(&i.url)))
                .unwrap_or_default(),
            quote(UV_REQUIREMENT)
        );
        let prelude = if default_index.is_some() {
            cx.install_prelude()
        } else {
            format!(
                "set -eu\n{}",
                cx.ca_exports().map(|c| c + "\n").unwrap_or_default()
            )
        };
        let exec = cx
            .script(
                &format!("{prelude}{script}"),
                cx.meta("install uv (builder only)", None),
            )
            .env(&b_env)
            .env(&[("PIP_CACHE_DIR".into(), "/root/.cache/pip".into())])
            .mount(Mount::Cache {
                target: "/root/.cache/pip".into(),
                id: format!("kiln-pip-{}", cx.platform_id()),
                sharing: Sharing::Shared,
            });
        // From PyPI: the CA bundle, not an index's credentials.
        b = b
            .run(if default_index.is_some() {
                cx.install_mounts(exec)
            } else {
                cx.ca_mount(exec)
            })
            .root();
    }
    let b_ready = b.clone();
    // When the builder is the runtime base itself (same image, nothing
    // added for the build), the environment's chain (base, venv, framework)
    // is a chain of the runtime too: the joins then start from it and add
    // the runtime's own steps on top, so the engine mounts that chain as it
    // is and hard-links only the other layers into a join a check runs on
    // (a framework's gigabytes among what it does not link).
    let env_first = merge
        && conda.is_none()
        && plan.installer == Installer::Pip
        && b_packages.is_empty()
        && same_base;
    // Whether the last pip step may run on the join of runtime and pins
    // (see below): not with runtime apt packages, which it would see there
    // (a compiler, a `-dev` package) where the pins' steps do not, so that a
    // requirement would build or fail depending on how it is written. Every
    // pip step sees the builder alone: its base and `stage="build"` packages.
    let pins_on_join = env_first && rt_packages.is_empty();

    // The environment: a venv, or a conda environment at the same path.
    let env_state = match conda {
        Some(file) => {
            let ctx = cx.context(vec![file.value.clone()], "kiln-conda", &file.value);
            let script = format!(
                "conda env create --quiet -p {VENV} -f {}\n{}",
                quote(&format!("{CONTEXT_MOUNT}/{}", file.value)),
                conda_python_check(&plan.python, &file.value)
            );
            let exec = cx
                .script(
                    &format!("{}{script}", cx.install_prelude()),
                    cx.meta(
                        &format!("conda env create -f {}", file.value),
                        Some(file.span),
                    ),
                )
                .env(&b_env)
                // The file's `pip:` section runs pip, which reads the
                // recipe's indexes from its environment.
                .env(&conda_pip_env(&plan.indexes))
                .mount(Mount::Cache {
                    target: "/opt/conda/pkgs".into(),
                    id: format!("kiln-conda-pkgs-{}", cx.platform_id()),
                    sharing: Sharing::Locked,
                })
                .mount(Mount::Bind {
                    target: CONTEXT_MOUNT.into(),
                    source: ctx,
                    selector: None,
                    readonly: true,
                });
            b_ready.run(cx.install_mounts(exec)).root()
        }
        None => b_ready
            .run(
                cx.script(
                    &if plan.builder.python_from_apt && distro_python_known(&plan.builder.reference)
                    {
                        // The distro's python, installed by apt: its version
                        // is the distro's, which the plan checked against the
                        // recipe's (the image's tag names the release).
                        VENV_SCRIPT.to_string()
                    } else {
                        // Any other image, `ubuntu:latest` and
                        // `debian:testing` included, whose tag does not say.
                        venv_script(&plan.python, &plan.builder.reference.familiar_name_tag())
                    },
                    cx.meta(&format!("python -m venv {VENV}"), plan.python_span),
                )
                .env(&b_env),
            )
            .root(),
    };
    let mut layers: Vec<State> = vec![State::diff(
        &b_ready,
        &env_state,
        cx.meta("layer: environment", None),
    )];
    let mut layer_names: Vec<String> = vec![match conda {
        Some(file) => format!("conda env create -f {}", file.value),
        None => format!("python -m venv {VENV}"),
    }];

    // The framework, alone, before anything else.
    let mut deps = env_state.clone();
    // How many of `layers` the chain up to `deps` holds (see `env_first`).
    let mut chained = layers.len();
    if let Some(fw) = &plan.framework {
        let args: Vec<String> = fw.packages.iter().map(|p| quote(p)).collect();
        let cmd = cx.install_command(
            &args,
            false,
            fw.index_url.as_deref(),
            fw.extra_index_url.as_deref(),
            fw.find_links.as_deref(),
        );
        let what = match (&plan.gpu, &fw.index_url) {
            (Some(g), _) => format!("pip install {} (CUDA {})", fw.packages.join(" "), g.cuda),
            (None, _) => format!("pip install {}", fw.packages.join(" ")),
        };
        let next = deps
            .run(cx.install_exec(cmd, &b_env, cx.meta(&what, Some(fw.span))))
            .root();
        layers.push(State::diff(
            &deps,
            &next,
            cx.meta(&format!("layer: {}", fw.name), None),
        ));
        layer_names.push(what);
        deps = next;
        chained = layers.len();
    }
    let env_chain = deps.clone();
    // What the runtime branch added to its base (apt packages, the user), as
    // one layer: where the environment's chain starts from the runtime base
    // (`env_first`) the joins take it after the environment's layers.
    let rt_steps = (!rt_packages.is_empty() || plan.user.is_some())
        .then(|| State::diff(&rt_base, &rt, cx.meta("layer: runtime steps", None)));
    // The last pip step's layer, and (with `env_first`) its result, which
    // is then the whole environment: see below.
    let mut remaining: Option<State> = None;
    let mut remaining_name: Option<String> = None;
    let mut remaining_on_join: Option<State> = None;

    // Every later install names the framework again: pip's resolver only
    // honours the constraints of the packages it is asked for, so without
    // this a dependency of a later requirement may replace what the
    // framework needs (protobuf 5+ under TensorFlow) or another release of
    // it. Already installed, the framework itself is not downloaded again.
    // (A package that requires `tensorflow` by name would still bring it
    // next to `tensorflow-cpu`: planning installs `tensorflow` for those.)
    // Requirements that depend on the framework's companions (timm pulls
    // torchvision) must find them where the framework came from: PyPI's
    // torchvision is another CUDA build. pip prefers the index's
    // `+cpu`/`+cu118` builds, the higher version for the same release.
    let fw_extra: Option<String> = plan.framework.as_ref().and_then(|f| f.index_url.clone());
    let fw_pins: Vec<String> = plan
        .framework
        .iter()
        .flat_map(|fw| fw.packages.iter().map(|p| quote(p)))
        .collect();

    // The requirements files, with what they include and the local
    // projects and archives they install from (which pip reads relative to
    // the folder it runs in: the steps then run in the context's root).
    let sources: Vec<String> = plan
        .pip
        .iter()
        .flat_map(|p| match p {
            PipStep::Requirements { sources, .. } => sources.clone(),
            _ => Vec::new(),
        })
        .collect();
    let req_ctx = {
        let mut files: Vec<String> = plan
            .pip
            .iter()
            .flat_map(|p| match p {
                PipStep::Requirements { path, includes, .. } => std::iter::once(path.clone())
                    .chain(includes.clone())
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        files.extend(sources.iter().cloned());
        // `.`: the whole context (no include patterns).
        if sources.iter().any(|s| s.is_empty()) {
            files.clear();
            files.push(String::new());
        }
        (!files.is_empty()).then(|| {
            let include = files.into_iter().filter(|f| !f.is_empty()).collect();
            cx.context(include, "kiln-requirements", "requirements")
        })
    };
    let with_requirements = |mut exec: Exec| match &req_ctx {
        Some(ctx) => {
            if !sources.is_empty() {
                exec.cwd = CONTEXT_MOUNT.into();
            }
            exec.mount(Mount::Bind {
                target: CONTEXT_MOUNT.into(),
                source: ctx.clone(),
                selector: None,
                // A project's build writes into its folder (`build/`,
                // `*.egg-info`): a scratch copy the step then drops.
                readonly: sources.is_empty(),
            })
        }
        None => exec,
    };

    if merge {
        // One op per pinned package on the same state, each kept as a diff.
        let mut package_layers = Vec::new();
        let mut package_states = Vec::new();
        for step in &plan.pip {
            if let PipStep::Package {
                spec,
                span,
                hashes,
                lock,
                lock_line,
            } = step
            {
                let origin = lock.as_deref().zip(*lock_line);
                let cmd = cx.in_download_slot(cx.pin_install(spec, hashes, origin));
                let next = deps
                    .run(cx.install_exec(
                        cmd,
                        &b_env,
                        cx.meta(&format!("pip install {spec}"), Some(*span)),
                    ))
                    .root();
                package_layers.push(State::diff(
                    &deps,
                    &next,
                    cx.meta(&format!("layer: {spec}"), Some(*span)),
                ));
                package_states.push(next);
            }
        }
        // Then one step with dependencies for everything: it installs what the
        // pins left out, the loose requirements and the requirements files.
        let mut args = Vec::new();
        // The step points at the lines it installs: the loose requirements
        // and files, or, when all are pins, every pip line (it checks them).
        let mut pin_spans: Vec<SourceSpan> = Vec::new();
        let mut loose_spans: Vec<SourceSpan> = Vec::new();
        for step in &plan.pip {
            let spans = match step {
                PipStep::Package { spec, .. } => {
                    args.push(quote(spec));
                    &mut pin_spans
                }
                PipStep::Group { specs, .. } => {
                    args.extend(specs.iter().map(|s| quote(s)));
                    &mut loose_spans
                }
                PipStep::Requirements { path, .. } => {
                    args.push("-r".into());
                    args.push(quote(&format!("{CONTEXT_MOUNT}/{path}")));
                    &mut loose_spans
                }
            };
            for sp in step.spans() {
                if !spans.contains(&sp) {
                    spans.push(sp);
                }
            }
        }
        let step_spans = if loose_spans.is_empty() {
            pin_spans
        } else {
            loose_spans
        };
        layers.extend(package_layers.iter().cloned());
        layer_names.extend(plan.pip.iter().filter_map(|p| match p {
            PipStep::Package { spec, .. } => Some(format!("pip install {spec}")),
            _ => None,
        }));
        if !args.is_empty() {
            // pip sees the pinned packages where they are: each package
            // step's venv mounted read-only and put on PYTHONPATH, so its
            // check and resolver count them as installed, and it installs
            // only what is missing into the venv. No MergeOp of the pins is
            // materialized for this step. The install steps, not their
            // layers: mounting a DiffOp's result with a selector made
            // BuildKit 0.13 (docker 26) fail the step's cache key ("failed
            // to walk …/opt") when the layer came from cache and its install
            // step did not, although the layers would save the first add
            // after a cold build about 1 s of loading cached steps. uv looks
            // at the venv alone, so it gets the pins merged into its root.
            //
            // Where the environment's chain starts from the runtime base
            // and the runtime adds no apt packages (`pins_on_join`), the
            // step runs on the join of runtime and pins
            // instead: pip sees the pins installed where they are in the
            // image, nothing is mounted (a mounted cached install step must
            // be loaded, about 0.1 s each, one after another, right after a
            // cold build), and the checks run on its result, so that join
            // is the only one materialized.
            let pins_join = || {
                let mut parts = vec![deps.clone()];
                parts.extend(package_layers.iter().cloned());
                parts.extend(rt_steps.iter().cloned());
                State::merge(&parts, cx.meta("join runtime + environment", None))
            };
            let (base, pins_path) = match plan.installer {
                Installer::Pip if pins_on_join => (pins_join(), ""),
                Installer::Pip => (deps.clone(), PINS_PATH),
                Installer::Uv => (
                    State::merge(
                        &std::iter::once(deps.clone())
                            .chain(package_layers.iter().cloned())
                            .collect::<Vec<_>>(),
                        cx.meta("pip: the pinned packages together", None),
                    ),
                    "",
                ),
            };
            let with_fw: Vec<String> = fw_pins.iter().cloned().chain(args).collect();
            let install = cx.install_command(&with_fw, false, None, fw_extra.as_deref(), None);
            let only_pins = plan
                .pip
                .iter()
                .all(|p| matches!(p, PipStep::Package { .. }));
            // With every requirement pinned the pins are usually complete (a
            // lock): then this step only checks, installs nothing and takes a
            // second; it installs what a pin's dependencies need otherwise.
            let install = cx.checked(install);
            // A hashed lock is pip's `--require-hashes` mode: every package
            // pinned, with its hash. Its missing dependencies are then an
            // error, never installed unhashed by this step.
            let mut hashed_locks: Vec<&str> = plan
                .pip
                .iter()
                .filter_map(|p| match p {
                    PipStep::Package { hashes, lock, .. } if !hashes.is_empty() => lock.as_deref(),
                    _ => None,
                })
                .collect();
            hashed_locks.dedup();
            let hash_gate = (!hashed_locks.is_empty()).then(|| {
                let message = format!(
                    "kiln: error: {} has hashes, so it must pin every package the environment needs, each with its hash (pip's --require-hashes); it misses the dependencies above: regenerate it with them (pip-compile --generate-hashes, uv pip compile --generate-hashes)",
                    hashed_locks.join(", ")
                );
                format!(
                    "{KILN_PY}if ! kiln_py -c {}; then echo {} >&2; exit 1; fi\n",
                    quote(PINS_CHECK),
                    quote(&message)
                )
            });
            let (cmd, what) = if let (true, Some(gate)) = (only_pins, &hash_gate) {
                (
                    format!("{gate}echo 'kiln: the pins are complete'"),
                    "pip: dependencies the pins did not name".to_string(),
                )
            } else if let Some(gate) = &hash_gate {
                (
                    format!("{gate}{install}"),
                    "pip install: remaining requirements".to_string(),
                )
            } else if only_pins {
                (
                    format!(
                        "{KILN_PY}if kiln_py -c {}; then echo 'kiln: the pins are complete'; else\n{install}\nfi",
                        quote(PINS_CHECK)
                    ),
                    "pip: dependencies the pins did not name".to_string(),
                )
            } else {
                (install, "pip install: remaining requirements".to_string())
            };
            let meta = cx.meta_at_all(&what, &step_spans);
            let mut exec =
                with_requirements(cx.install_exec(format!("{pins_path}{cmd}"), &b_env, meta));
            remaining_name = Some(what.clone());
            if plan.installer == Installer::Pip && !pins_on_join {
                for (i, state) in package_states.iter().enumerate() {
                    exec = exec.mount(Mount::Bind {
                        target: format!("{PINS_MOUNT}/{i}"),
                        source: state.clone(),
                        selector: Some(VENV.to_string()),
                        readonly: true,
                    });
                }
            }
            let done = base.run(exec).root();
            remaining = Some(State::diff(
                &base,
                &done,
                cx.meta("layer: remaining requirements", None),
            ));
            if pins_on_join {
                remaining_on_join = Some(done);
            }
        }
    } else {
        for (i, step) in plan.pip.iter().enumerate() {
            let (args, what) = match step {
                PipStep::Package { spec, .. } => (vec![quote(spec)], format!("pip install {spec}")),
                PipStep::Group { specs, .. } => (
                    specs.iter().map(|s| quote(s)).collect(),
                    format!("pip install {}", specs.join(" ")),
                ),
                PipStep::Requirements { path, .. } => (
                    vec!["-r".to_string(), quote(&format!("{CONTEXT_MOUNT}/{path}"))],
                    format!("pip install -r {path}"),
                ),
            };
            let with_fw: Vec<String> = fw_pins.iter().cloned().chain(args).collect();
            let mut cmd = cx.install_command(&with_fw, false, None, fw_extra.as_deref(), None);
            if i + 1 == plan.pip.len() {
                cmd = cx.checked(cmd);
            }
            // Only a requirements file's step reads the context: a pin's
            // step does not run again when the context changes.
            let exec = cx.install_exec(cmd, &b_env, cx.meta_at_all(&what, &step.spans()));
            let exec = match step {
                PipStep::Requirements { .. } => with_requirements(exec),
                _ => exec,
            };
            deps = deps.run(exec).root();
        }
    }

    // ---- app branch -------------------------------------------------------
    let owner = plan.user.as_ref().map(|u| Owner {
        uid: u.value.uid,
        gid: u.value.gid,
    });
    // The recipe's `workdir` is created; relative paths, `run` steps and
    // checks after the copies go by the image's, which may be the base's.
    let workdir = image_workdir(plan);
    let mut app_actions = FileActions::new();
    if let Some(w) = &plan.workdir {
        app_actions = app_actions.then(FileAction::Mkdir {
            path: w.clone(),
            mode: 0o755,
            parents: true,
            owner,
        });
    }
    let sources: Vec<String> = plan.copies.iter().map(|c| c.value.src.clone()).collect();
    let app_ctx = if sources.is_empty() {
        None
    } else {
        let include = if sources.iter().any(|s| s == ".") {
            Vec::new()
        } else {
            sources.clone()
        };
        Some(cx.context(include, "kiln-app", "app files"))
    };
    let mut copy_spans = Vec::new();
    if let Some(ctx) = &app_ctx {
        for c in &plan.copies {
            let src = if c.value.src == "." {
                "/".to_string()
            } else {
                format!("/{}", c.value.src)
            };
            app_actions = app_actions.then(FileAction::Copy {
                from: ctx.clone(),
                src,
                dest: resolve_dest(&c.value.dest, workdir.as_deref()),
                owner: if c.value.root_owned { None } else { owner },
                contents: true,
                create_parents: true,
                include: Vec::new(),
            });
            copy_spans.push(c.span);
        }
    }
    let app_meta_name = if copy_spans.is_empty() {
        format!("workdir {}", workdir.clone().unwrap_or_default())
    } else {
        format!("copy {}", sources.join(" "))
    };
    // The op points at every `copy` line it copies for (a missing source
    // is what fails most; the client shows one snippet from the lowest line
    // marked, so the workdir line would head it), else at the `workdir`
    // line when it makes the workdir. The frontend solves the op on its own
    // (`Lowered::copies`) and, when it fails, names the line whose source
    // the context lacks.
    let app_spans: Vec<SourceSpan> = if copy_spans.is_empty() {
        plan.workdir_span
            .filter(|_| plan.workdir.is_some())
            .into_iter()
            .collect()
    } else {
        copy_spans.clone()
    };
    let app_meta = cx.meta_at_all(&app_meta_name, &app_spans);

    // ---- join -------------------------------------------------------------
    let image_env = plan.config.env_pairs();
    // A `run` step is the user's command as written; with a `ca-bundle` it
    // trusts the bundle as kiln's install steps do (a `curl` or `pip` of its
    // own behind a TLS-intercepting proxy), through `KILN_CA` so the command
    // stays readable in the step's name and in a failure's last line.
    let ca = cx.ca_exports();
    let run_step = |state: State, r: &crate::model::Spanned<crate::model::Run>| -> State {
        let command = match &ca {
            Some(_) => format!("eval \"$KILN_CA\"; {}", r.value.command),
            None => r.value.command.clone(),
        };
        let mut exec = cx
            .shell(
                &command,
                cx.meta(
                    &format!("run {}", first_line(&r.value.command)),
                    Some(r.span),
                ),
            )
            .env(&image_env);
        // The step's own secret (a model hub's token): required, so that a
        // build without it fails at this line, naming the id; the CA
        // bundle's, if it is that one, is then required here too.
        let own_is_ca = r.value.secret.is_some() && r.value.secret == cx.plan.ca_bundle;
        if let Some(ca) = &ca {
            exec = exec.env(&[("KILN_CA".to_string(), ca.clone())]);
            if !own_is_ca {
                exec = cx.ca_mount(exec);
            }
        }
        if let Some(id) = &r.value.secret {
            exec = exec.mount(secret_mount(id, 0o400, false));
        }
        exec.cwd = workdir.clone().unwrap_or_else(|| "/".to_string());
        state.run(exec).root()
    };
    let after_deps: Vec<_> = plan
        .runs
        .iter()
        .filter(|r| r.value.after == RunAfter::Deps)
        .collect();
    // The parts of a join, in order: the runtime, then the environment's
    // layers; or, where the environment's chain starts from the runtime base
    // (`env_first`), that chain, the other layers, then what the runtime
    // branch added to its base (apt packages, the user).
    let join_parts = || -> Vec<State> {
        let mut parts = if env_first {
            let mut parts = vec![env_chain.clone()];
            parts.extend(layers.iter().skip(chained).cloned());
            parts.extend(rt_steps.iter().cloned());
            parts
        } else {
            let mut parts = vec![rt.clone()];
            parts.extend(layers.iter().cloned());
            parts
        };
        parts.extend(remaining.iter().cloned());
        parts
    };
    // The environment: runtime + installed packages + `run` steps after deps.
    // Checks that need only the environment run on it, so an app edit
    // re-runs none of them.
    let environment = if let Some(done) = &remaining_on_join {
        // The last pip step ran on the join of runtime and pins: its result
        // holds the same files as the join of every layer.
        done.clone()
    } else if merge {
        State::merge(&join_parts(), cx.meta("join runtime + environment", None))
    } else {
        rt.file(
            FileActions::new().then(FileAction::Copy {
                from: deps.clone(),
                src: VENV.into(),
                dest: VENV.into(),
                owner: None,
                contents: true,
                create_parents: true,
                include: Vec::new(),
            }),
            cx.meta(&format!("copy {VENV} from the builder"), None),
        )
    };
    // `run` steps run in the workdir: the recipe's is made first, the
    // user's, or the engine would make it (root's) for the step.
    let workdir_first = !after_deps.is_empty() && plan.workdir.is_some();
    let environment = match &plan.workdir {
        Some(w) if workdir_first => environment.file(
            FileActions::new().then(FileAction::Mkdir {
                path: w.clone(),
                mode: 0o755,
                parents: true,
                owner,
            }),
            cx.meta(&format!("workdir {w}"), plan.workdir_span),
        ),
        _ => environment,
    };
    let environment = after_deps
        .iter()
        .fold(environment, |state, r| run_step(state, r));
    // The app files are copied onto the filesystem they will sit on, never
    // laid out on an empty one: a folder of theirs would then replace the
    // base's (its owner and mode: `/tmp`'s sticky bit, `/etc` handed to the
    // user) and a path through a link (`/bin` to `usr/bin`) would become a
    // folder hiding the link's target. The runtime has every folder of the
    // base and of apt; as a layer (a DiffOp over it) the files keep their
    // own branch, so a pip change never re-copies them. Where something
    // below them comes from elsewhere (a `run` step, a destination in the
    // venv) they are copied onto the environment itself.
    let on_environment = app_on_environment(plan);
    // Files that all land in a top-level workdir of the recipe's (`/app`),
    // which kiln makes itself, need no folder of apt's or of the user
    // step's: they are copied onto the runtime base alone, so that a change
    // to the apt packages or the user copies them no more (the layer, a
    // model's weights perhaps, keeps its digest and is not pushed again).
    let app_onto = if app_in_own_workdir(plan) {
        &rt_base
    } else {
        &rt
    };
    let has_app = !app_actions.is_empty();
    let copied = has_app.then(|| {
        if merge && !on_environment {
            app_onto.file(app_actions.clone(), app_meta.clone())
        } else {
            environment.file(app_actions.clone(), app_meta.clone())
        }
    });
    let app = copied
        .as_ref()
        .filter(|_| merge && !on_environment)
        .map(|copied| State::diff(app_onto, copied, cx.meta("layer: app files", None)));
    let mut image = match &app {
        // Nothing between the environment and the app files: one MergeOp of
        // every layer, rather than a merge of a merge.
        Some(app) if merge => {
            let mut parts = join_parts();
            parts.push(app.clone());
            State::merge(
                &parts,
                cx.meta("join runtime + environment + app files", None),
            )
        }
        _ => copied.clone().unwrap_or_else(|| environment.clone()),
    };
    for r in plan.runs.iter().filter(|r| r.value.after == RunAfter::Copy) {
        image = run_step(image, r);
    }

    // The image's layers above its base, in order, as the joins above lay
    // them out: each DiffOp keeps the layers of the steps it spans, a
    // MergeOp stacks its inputs' layers, a FileOp or an exec adds one.
    let mut names: Vec<String> = Vec::new();
    if merge {
        if env_first {
            names.extend(layer_names.iter().cloned());
            names.extend(rt_names.iter().cloned());
        } else {
            names.extend(rt_names.iter().cloned());
            names.extend(layer_names.iter().cloned());
        }
        names.extend(remaining_name.iter().cloned());
    } else {
        names.extend(rt_names.iter().cloned());
        names.push(format!("copy {VENV} from the builder"));
    }
    let run_name = |r: &crate::model::Spanned<crate::model::Run>| {
        format!("run {}", first_line(&r.value.command))
    };
    if let Some(w) = plan.workdir.as_ref().filter(|_| workdir_first) {
        names.push(format!("workdir {w}"));
    }
    names.extend(after_deps.iter().map(|r| run_name(r)));
    if has_app {
        names.push(app_meta_name.clone());
    }
    names.extend(
        plan.runs
            .iter()
            .filter(|r| r.value.after == RunAfter::Copy)
            .map(run_name),
    );

    // ---- checks -------------------------------------------------------------
    // A venv's python is a link to its builder's interpreter: with a
    // builder other than the runtime base, the runtime must have that
    // interpreter at the same path, or every `python` in the image fails.
    // Said at build time, since kiln cannot know an in-house image's
    // python.
    // Two official python images of one python, or two distro images with
    // the distro's python, have it at the same path.
    let same_python_path = (plan.builder.reference.familiar_name() == "python"
        && plan.runtime.reference.familiar_name() == "python")
        || (plan.builder.python_from_apt && plan.runtime.python_from_apt);
    // A check: python (or a shell) run as the image's user (the recipe's,
    // else the base's), with no network and a tmpfs /tmp, writing no
    // bytecode; its result is not the image's.
    let mut check_env = image_env.clone();
    check_env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
    let check_exec = |args: Vec<String>, cwd: &str, meta: OpMeta| Exec {
        args,
        env: check_env.clone(),
        cwd: cwd.to_string(),
        user: (!plan.config.config.user.is_empty()).then(|| plan.config.config.user.clone()),
        mounts: vec![Mount::Tmpfs {
            target: "/tmp".into(),
        }],
        network: llb::Network::None,
        proxy: None,
        sandbox: cx.sandbox(),
        platform: platform.clone(),
        meta,
    };
    let venv_check = (conda.is_none()
        && !same_python_path
        && plan.builder.reference.to_string() != plan.runtime.reference.to_string())
    .then(|| {
        let builder = plan.builder.reference.familiar_name_tag();
        let runtime = plan.runtime.reference.familiar_name_tag();
        let script = format!(
            "if ! {VENV}/bin/python -c '' >/dev/null 2>&1; then echo \"kiln: error: the environment's python ($(readlink -f {VENV}/bin/python)), made in the builder {builder}, does not run in the runtime base {runtime}: the runtime needs the builder's python at the same path (a builder built from the runtime base, or no builder)\" >&2; exit 1; fi"
        );
        check_exec(
            vec!["/bin/sh".into(), "-c".into(), script],
            "/",
            cx.meta(
                "check: the environment's python runs on the runtime base",
                plan.builder.span,
            ),
        )
    });
    let checks = if plan.verify.is_empty() && venv_check.is_none() {
        None
    } else {
        // Whether checks run on the environment (not only on the image).
        let on_environment_checks =
            !plan.verify.iter().all(|v| v.value.after == RunAfter::Copy) || venv_check.is_some();
        let environment = match venv_check {
            Some(exec) => environment.run(exec).root(),
            None => environment,
        };
        let check = |state: State,
                     v: &crate::model::Spanned<crate::model::Verify>,
                     cwd: &str,
                     after: Option<&State>| {
            let mut exec = check_exec(
                vec!["python".into(), "-c".into(), v.value.code.clone()],
                cwd,
                cx.meta(
                    &format!("verify: {}", first_line(&v.value.code)),
                    Some(v.span),
                ),
            );
            // Another chain of checks this one must wait for (engines
            // without MergeOp, which joins them otherwise).
            if let Some(a) = after {
                exec.mounts.push(Mount::Bind {
                    target: "/kiln/checked".into(),
                    source: a.clone(),
                    selector: None,
                    readonly: true,
                });
            }
            state.run(exec).root()
        };
        // Environment checks run from `/` (the workdir comes with the app
        // files); checks after="copy" run in the finished image's workdir.
        let on_env: Vec<_> = plan
            .verify
            .iter()
            .filter(|v| v.value.after == RunAfter::Deps)
            .collect();
        let mut state = on_env
            .iter()
            .fold(environment, |state, v| check(state, v, "/", None));
        let on_image: Vec<_> = plan
            .verify
            .iter()
            .filter(|v| v.value.after == RunAfter::Copy)
            .collect();
        if !on_image.is_empty() {
            let mut s2 = image.clone();
            let cwd = workdir.clone().unwrap_or_else(|| "/".to_string());
            // Both chains must pass: a merge of their results makes the
            // engine solve them together; without MergeOp the first check
            // on the image waits for the others (their result mounted).
            let wait = (!merge && on_environment_checks).then(|| state.clone());
            for (i, v) in on_image.into_iter().enumerate() {
                s2 = check(s2, v, &cwd, if i == 0 { wait.as_ref() } else { None });
            }
            state = if !on_environment_checks || !merge {
                s2
            } else {
                State::merge(&[state, s2], cx.meta("checks", None))
            };
        }
        Some(llb::marshal(&state, source_info(cx.source, opts).as_ref()))
    };

    let info = source_info(source, opts);
    Lowered {
        image: llb::marshal(&image, info.as_ref()),
        config: with_history(&plan.config, plan, &names),
        checks,
        copies: copied
            .filter(|_| !plan.copies.is_empty())
            .map(|c| llb::marshal(&c, info.as_ref())),
    }
}

/// The image config with a history entry per layer kiln adds (`docker
/// history` then names the step, not "mount / from exec /bin/sh -c …"),
/// after the base's own entries. Only where the base's history accounts
/// for each of its layers: the exporter matches entries to layers from the
/// bottom and fills in what is missing at the top, so entries past an
/// unknown base would name the wrong layers.
fn with_history(config: &ImageConfig, plan: &Plan, names: &[String]) -> ImageConfig {
    let mut c = config.clone();
    let Some(base) = plan.runtime.resolved.as_ref() else {
        return c;
    };
    let base_layers = base
        .config
        .history
        .iter()
        .filter(|h| {
            !h.get("empty_layer")
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
        })
        .count();
    if base.config.history.is_empty() || base_layers != base.config.rootfs.diff_ids.len() {
        return c;
    }
    c.history = base.config.history.clone();
    c.history.extend(names.iter().map(|n| {
        serde_json::json!({
            "created_by": format!("kiln: {n}"),
            "comment": "kiln",
        })
    }));
    c
}

fn source_info(source: &SourceFile, opts: &Options) -> Option<llb::SourceInfo> {
    opts.caps.source_maps.then(|| llb::SourceInfo {
        filename: source.name.clone(),
        data: source.text.as_bytes().to_vec(),
        language: "kdl".to_string(),
    })
}

fn secret_path(id: &str) -> String {
    format!("/run/secrets/{id}")
}

/// The build secret `id` at its path under /run/secrets, root's.
fn secret_mount(id: &str, mode: u32, optional: bool) -> Mount {
    Mount::Secret {
        target: secret_path(id),
        id: id.to_string(),
        uid: 0,
        gid: 0,
        mode,
        optional,
    }
}

/// POSIX shell single-quoting, only where needed.
pub fn quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/=+@%^".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > 60 {
        format!("{}…", line.chars().take(60).collect::<String>())
    } else if s.lines().count() > 1 {
        format!("{line} …")
    } else {
        line.to_string()
    }
}

/// pip's variables for the recipe's indexes (for the pip that conda runs).
fn conda_pip_env(indexes: &[crate::plan::Index]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(d) = indexes.iter().find(|i| i.default) {
        env.push(("PIP_INDEX_URL".to_string(), d.url.clone()));
    }
    let extra: Vec<&str> = indexes
        .iter()
        .filter(|i| !i.default)
        .map(|i| i.url.as_str())
        .collect();
    if !extra.is_empty() {
        env.push(("PIP_EXTRA_INDEX_URL".to_string(), extra.join(" ")));
    }
    env
}

/// The image's workdir: the recipe's, else the base's.
pub(crate) fn image_workdir(plan: &Plan) -> Option<String> {
    (!plan.config.config.working_dir.is_empty()).then(|| plan.config.config.working_dir.clone())
}

/// Whether the app files are copied onto the environment rather than kept
/// as a layer over the runtime: something below them comes from elsewhere
/// (a `run` step after the dependencies, a destination in the venv).
pub(crate) fn app_on_environment(plan: &Plan) -> bool {
    let workdir = image_workdir(plan);
    plan.runs.iter().any(|r| r.value.after == RunAfter::Deps)
        || plan
            .copies
            .iter()
            .map(|c| resolve_dest(&c.value.dest, workdir.as_deref()))
            .chain(workdir.iter().cloned())
            .any(|d| d == VENV || d.starts_with(&format!("{VENV}/")))
}

/// Whether every app file lands in the recipe's workdir and that workdir
/// is a top-level folder (`/app`, `/workspace`): kiln makes it, with the
/// user as owner, and no step of the runtime's makes a folder above it.
pub(crate) fn app_in_own_workdir(plan: &Plan) -> bool {
    let Some(w) = plan.workdir.as_deref() else {
        return false;
    };
    let w = w.trim_end_matches('/');
    // The system's own folders are the base's and apt's: not these.
    let system = [
        "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media",
        "/mnt", "/proc", "/root", "/run", "/sbin", "/sys", "/tmp", "/usr", "/var",
    ];
    let top_level = w.len() > 1 && !w[1..].contains('/') && !system.contains(&w);
    top_level
        && !plan.copies.is_empty()
        && plan.copies.iter().all(|c| {
            let d = resolve_dest(&c.value.dest, Some(w));
            !d.split('/').any(|p| p == "..") && (d == w || d.starts_with(&format!("{w}/")))
        })
}

/// A copy destination: absolute as is, relative to the workdir otherwise.
pub(crate) fn resolve_dest(dest: &str, workdir: Option<&str>) -> String {
    if dest.starts_with('/') {
        dest.to_string()
    } else {
        let base = workdir.unwrap_or("/");
        format!(
            "{}/{}",
            base.trim_end_matches('/'),
            dest.trim_start_matches("./")
        )
    }
}

/// Whether a copy to `dest` lands on `/` itself (`/`, `/app/..`, `.` with
/// no workdir), `.` and `..` taken as the engine takes them.
pub(crate) fn lands_on_root(dest: &str, workdir: Option<&str>) -> bool {
    let mut depth = 0usize;
    for part in resolve_dest(dest, workdir).split('/') {
        match part {
            "" | "." => {}
            ".." => depth = depth.saturating_sub(1),
            _ => depth += 1,
        }
    }
    depth == 0
}

/// Create the user and group, with a home, on any glibc base: with
/// useradd when the base has it, by editing passwd/group files when not.
fn user_script(name: &str, uid: u32, gid: u32, base_workdir: Option<&str>) -> String {
    // A regular account on the uid (ubuntu:24.04's `ubuntu` on 1000) is
    // renamed; a system account (`nobody`, `www-data`) is not kiln's to take.
    // Its home moves to /home/NAME, unless the image keeps a base workdir
    // in it (a notebook image's /home/jovyan): then it stays where it is.
    let keeps_home = match base_workdir {
        Some(w) => format!(
            "    old_home=$(getent passwd \"$old\" | cut -d: -f6)
    case {w} in \"$old_home\"|\"$old_home\"/*) kiln_move= ;; *) kiln_move=1 ;; esac
",
            w = quote(w)
        ),
        None => "    kiln_move=1
"
        .to_string(),
    };
    let take_over = if !(1000..60000).contains(&uid) {
        format!(
            "    echo \"kiln: uid {uid} is the base's system account $old, which kiln does not take over; give the user another uid\" >&2
    exit 1
"
        )
    } else {
        format!(
            "{keeps_home}    if [ -n \"$kiln_move\" ]; then
      usermod -l {name} -d /home/{name} -m \"$old\"
      if [ ! -d /home/{name} ]; then mkdir -p /home/{name} && chown {uid}:{gid} /home/{name}; fi
    else
      usermod -l {name} \"$old\"
    fi
    if [ \"$(getent group \"$old\" | cut -d: -f3)\" = {gid} ]; then groupmod -n {name} \"$old\"; fi
    echo \"kiln: the base's account $old had uid {uid}; it is now {name}\"
"
        )
    };
    format!(
        "set -eu
if command -v useradd >/dev/null 2>&1; then
  old=$(getent passwd {uid} | cut -d: -f1) || old=
  if [ -n \"$old\" ] && [ \"$old\" != {name} ] && ! getent passwd {name} >/dev/null; then
{take_over}  fi
  if getent passwd {name} >/dev/null && [ \"$(id -u {name})\" != {uid} ]; then
    echo \"kiln: the base already has a user {name} with uid $(id -u {name}) and gid $(id -g {name}), not uid {uid}: write user \\\"{name}\\\" uid=$(id -u {name}) gid=$(id -g {name}) to use it, or another name\" >&2
    exit 1
  fi
  if ! getent group {gid} >/dev/null; then
    kiln_gid=$(getent group {name} | cut -d: -f3)
    if [ -n \"$kiln_gid\" ]; then
      echo \"kiln: the base already has a group {name} with gid $kiln_gid, not {gid}; give the user gid=$kiln_gid, or another name\" >&2
      exit 1
    fi
    groupadd -g {gid} {name}
  else
    kiln_group=$(getent group {gid} | cut -d: -f1)
    if [ \"$kiln_group\" != {name} ]; then
      echo \"kiln: gid {gid} is the base's group $kiln_group; {name} joins it (give the user another gid= for a group of its own)\"
    fi
  fi
  getent passwd {name} >/dev/null || useradd -l -m -u {uid} -g {gid} -s /bin/sh {name}
  if [ \"$(id -u {name})\" != {uid} ]; then
    echo \"kiln: the base already has a user {name} with uid $(id -u {name}), not {uid}\" >&2
    exit 1
  fi
  [ \"$(id -g {name})\" = {gid} ] || usermod -g {gid} {name}
else
  grep -q '^{name}:' /etc/group || echo '{name}:x:{gid}:' >> /etc/group
  grep -q '^{name}:' /etc/passwd || echo '{name}:x:{uid}:{gid}::/home/{name}:/bin/sh' >> /etc/passwd
  mkdir -p /home/{name} && chown {uid}:{gid} /home/{name}
fi
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_is_shell_safe() {
        assert_eq!(quote("numpy==1.26.4"), "numpy==1.26.4");
        assert_eq!(quote("numpy>=1.2"), "'numpy>=1.2'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(
            quote("tensorflow[and-cuda]==2.16.1"),
            "'tensorflow[and-cuda]==2.16.1'"
        );
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn copy_destinations_follow_the_workdir() {
        assert_eq!(resolve_dest("/x", Some("/app")), "/x");
        assert_eq!(resolve_dest("src", Some("/app")), "/app/src");
        assert_eq!(resolve_dest("./src/", Some("/app/")), "/app/src/");
        assert_eq!(resolve_dest("a", None), "/a");
    }
}
