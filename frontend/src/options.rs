//! What the build client asked for, as the engine hands it to a gateway
//! frontend: `BUILDKIT_FRONTEND_OPT_<n>=<key>=<value>` variables (one per
//! option), `BUILDKIT_WORKERS` (JSON) and `BUILDKIT_SESSION_ID`.
//!
//! Keys follow BuildKit's Dockerfile frontend (`frontend/dockerui/config.go`,
//! `context.go`), so `docker buildx build` flags mean the same thing here.

use std::collections::BTreeMap;

use kiln_compiler::Platform;
use serde::Deserialize;

/// The prefix of each option variable (`frontend/gateway/gateway.go`).
pub const OPT_PREFIX: &str = "BUILDKIT_FRONTEND_OPT_";

/// The recipe file read when the client names none.
pub const DEFAULT_FILENAME: &str = "kiln.kdl";
/// Local source names the client's directories arrive under.
pub const DEFAULT_CONTEXT_LOCAL: &str = "context";
pub const DEFAULT_DOCKERFILE_LOCAL: &str = "dockerfile";

/// An option the client sent that kiln cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("option `platform`: {0}")]
    Platform(String),
    #[error("option `{key}`: `{value}` is not a boolean (write true or false)")]
    NotBool { key: String, value: String },
    #[error("option `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("conflicting options: several platforms were requested but multi-platform is false")]
    MultiPlatformConflict,
}

/// A remote cache to import, as `--cache-from` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CacheImport {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Attrs", default)]
    pub attrs: BTreeMap<String, String>,
}

/// How base image references resolve (`image-resolve-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResolveMode {
    /// Use a local image when the engine has one, else pull.
    #[default]
    Default,
    /// Always ask the registry (`--pull`).
    Pull,
    /// Only use what the engine has.
    Local,
}

impl ResolveMode {
    /// The string BuildKit's resolvers take.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolveMode::Default => "default",
            ResolveMode::Pull => "pull",
            ResolveMode::Local => "local",
        }
    }
}

/// The parsed options of one frontend run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendOptions {
    /// The recipe's path inside the `dockerfile` local (`-f env.kdl`).
    pub filename: String,
    /// Local source holding the recipe (`dockerfilekey`).
    pub dockerfile_local: String,
    /// True when the client named the recipe's local explicitly; then a
    /// frontend input of the same name does not replace it.
    pub dockerfile_local_forced: bool,
    /// Local source holding the build context (`contextkey`).
    pub context_local: String,
    /// The variant to build (`--target`).
    pub target: Option<String>,
    /// Target platforms (`--platform`); empty means the engine's default.
    pub platforms: Vec<Platform>,
    /// Return a per-platform result even for one platform.
    pub multi_platform: bool,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// A subrequest (`--call`, `--print`) instead of a build.
    pub request_id: Option<String>,
    /// `--no-cache`: every op ignores the cache.
    pub no_cache: bool,
    /// `--no-cache-filter NAMES`: the variants named ignore the cache (a
    /// Dockerfile's stages; names of no variant are ignored, as there).
    pub no_cache_targets: Vec<String>,
    pub resolve_mode: ResolveMode,
    pub cache_imports: Vec<CacheImport>,
    /// `context:NAME` options (named contexts). Recipes cannot refer to
    /// named contexts yet; they are accepted and ignored.
    pub named_contexts: Vec<String>,
    /// `--add-host NAME=IP`s for every step.
    pub extra_hosts: Vec<(String, String)>,
    /// `--ulimit`s: (name, soft, hard).
    pub ulimits: Vec<(String, i64, i64)>,
    /// `--shm-size` in bytes.
    pub shm_size: Option<i64>,
    /// `local-sessionid:NAME`: the client session serving local NAME, when
    /// it is not the build's own (buildx with several clients).
    pub local_sessions: BTreeMap<String, String>,
    /// `force-network-mode=host` (the client's `--network=host`): build
    /// steps run on the host network, for engines without a bridge.
    pub host_network: bool,
}

impl Default for FrontendOptions {
    fn default() -> Self {
        FrontendOptions {
            filename: DEFAULT_FILENAME.to_string(),
            dockerfile_local: DEFAULT_DOCKERFILE_LOCAL.to_string(),
            dockerfile_local_forced: false,
            context_local: DEFAULT_CONTEXT_LOCAL.to_string(),
            target: None,
            platforms: Vec::new(),
            multi_platform: false,
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            request_id: None,
            no_cache: false,
            no_cache_targets: Vec::new(),
            resolve_mode: ResolveMode::Default,
            cache_imports: Vec::new(),
            named_contexts: Vec::new(),
            extra_hosts: Vec::new(),
            ulimits: Vec::new(),
            shm_size: None,
            local_sessions: BTreeMap::new(),
            host_network: false,
        }
    }
}

/// Collect `BUILDKIT_FRONTEND_OPT_<n>=<key>=<value>` variables into a map.
/// A variable without a second `=` is a key with an empty value, as in the
/// Go client.
pub fn raw_options<I, K, V>(vars: I) -> BTreeMap<String, String>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut out = BTreeMap::new();
    for (name, value) in vars {
        if !name.as_ref().starts_with(OPT_PREFIX) {
            continue;
        }
        let (key, value) = value
            .as_ref()
            .split_once('=')
            .unwrap_or((value.as_ref(), ""));
        out.insert(key.to_string(), value.to_string());
    }
    out
}

fn parse_bool(key: &str, value: &str) -> Result<bool, OptionError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(OptionError::NotBool {
            key: key.to_string(),
            value: value.to_string(),
        }),
    }
}

fn with_prefix(raw: &BTreeMap<String, String>, prefix: &str) -> BTreeMap<String, String> {
    raw.iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(prefix)
                .map(|name| (name.to_string(), v.clone()))
        })
        .filter(|(name, _)| !name.is_empty())
        .collect()
}

impl FrontendOptions {
    /// Interpret the raw option map. Unknown keys are ignored, as BuildKit's
    /// own frontends do: clients send options meant for other frontends.
    pub fn parse(raw: &BTreeMap<String, String>) -> Result<FrontendOptions, OptionError> {
        let mut o = FrontendOptions::default();
        if let Some(v) = raw.get("filename").filter(|v| !v.is_empty()) {
            o.filename = v.clone();
        }
        if let Some(v) = raw.get("dockerfilekey").filter(|v| !v.is_empty()) {
            o.dockerfile_local = v.clone();
            o.dockerfile_local_forced = true;
        }
        if let Some(v) = raw.get("contextkey").filter(|v| !v.is_empty()) {
            o.context_local = v.clone();
        }
        o.target = raw.get("target").filter(|v| !v.is_empty()).cloned();
        if let Some(v) = raw.get("platform") {
            for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let platform = Platform::parse(p).map_err(OptionError::Platform)?;
                if !o.platforms.contains(&platform) {
                    o.platforms.push(platform);
                }
            }
        }
        o.build_args = with_prefix(raw, "build-arg:");
        o.labels = with_prefix(raw, "label:");

        o.multi_platform = o.platforms.len() > 1;
        let multi = raw
            .get("build-arg:BUILDKIT_MULTI_PLATFORM")
            .filter(|v| !v.is_empty())
            .map(|v| ("build-arg:BUILDKIT_MULTI_PLATFORM", v))
            .or_else(|| {
                raw.get("multi-platform")
                    .filter(|v| !v.is_empty())
                    .map(|v| ("multi-platform", v))
            });
        if let Some((key, v)) = multi {
            let b = parse_bool(key, v)?;
            if !b && o.multi_platform {
                return Err(OptionError::MultiPlatformConflict);
            }
            o.multi_platform = b;
        }

        o.request_id = raw.get("requestid").filter(|v| !v.is_empty()).cloned();
        // `no-cache` with no value means everything; a list names stages,
        // which for kiln are the variants.
        match raw.get("no-cache") {
            None => {}
            Some(v) if v.trim().is_empty() => o.no_cache = true,
            Some(v) => {
                o.no_cache_targets = v
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect();
            }
        }
        o.resolve_mode = match raw.get("image-resolve-mode").map(String::as_str) {
            None | Some("") | Some("default") => ResolveMode::Default,
            Some("pull") => ResolveMode::Pull,
            Some("local") => ResolveMode::Local,
            Some(other) => {
                return Err(OptionError::Invalid {
                    key: "image-resolve-mode".to_string(),
                    message: format!("`{other}` is not one of default, pull, local"),
                });
            }
        };

        if let Some(v) = raw.get("cache-imports").filter(|v| !v.is_empty()) {
            o.cache_imports = serde_json::from_str(v).map_err(|e| OptionError::Invalid {
                key: "cache-imports".to_string(),
                message: format!("not a JSON list of cache entries: {e}"),
            })?;
        }
        if let Some(v) = raw.get("cache-from").filter(|v| !v.is_empty()) {
            for r in v.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                o.cache_imports.push(CacheImport {
                    kind: "registry".to_string(),
                    attrs: BTreeMap::from([("ref".to_string(), r.to_string())]),
                });
            }
        }
        if let Some(v) = raw.get("add-hosts") {
            o.extra_hosts = parse_add_hosts(v)?;
        }
        if let Some(v) = raw.get("ulimit") {
            o.ulimits = parse_ulimits(v)?;
        }
        o.shm_size = match raw.get("shm-size").map(|v| v.trim()) {
            None | Some("") | Some("0") => None,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(OptionError::Invalid {
                        key: "shm-size".to_string(),
                        message: format!("`{v}` is not a size in bytes"),
                    });
                }
            },
        };
        o.named_contexts = with_prefix(raw, "context:").into_keys().collect();
        o.local_sessions = with_prefix(raw, "local-sessionid:");
        o.host_network = match raw.get("force-network-mode").map(String::as_str) {
            None | Some("") | Some("default") | Some("sandbox") => false,
            Some("host") => true,
            Some(other) => {
                return Err(OptionError::Invalid {
                    key: "force-network-mode".to_string(),
                    message: format!(
                        "`{other}` is not supported; kiln builds with the default network or `host`"
                    ),
                });
            }
        };
        Ok(o)
    }
}

/// `add-hosts` as buildx sends `--add-host`s: `NAME=IP` (or `NAME:IP`
/// with an IPv4 address), comma separated.
fn parse_add_hosts(v: &str) -> Result<Vec<(String, String)>, OptionError> {
    let invalid = |message: String| OptionError::Invalid {
        key: "add-hosts".to_string(),
        message,
    };
    let mut out = Vec::new();
    for field in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (host, ip) = field
            .split_once('=')
            .or_else(|| field.split_once(':'))
            .ok_or_else(|| invalid(format!("`{field}` is not NAME=IP")))?;
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || ip.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(format!("`{field}` is not NAME=IP")));
        }
        out.push((host.to_ascii_lowercase(), ip.to_string()));
    }
    Ok(out)
}

/// `ulimit` as buildx sends `--ulimit`s: `NAME=SOFT[:HARD]`, comma
/// separated (`-1` is unlimited).
fn parse_ulimits(v: &str) -> Result<Vec<(String, i64, i64)>, OptionError> {
    const NAMES: &[&str] = &[
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
        "as",
    ];
    let invalid = |field: &str| OptionError::Invalid {
        key: "ulimit".to_string(),
        message: format!("`{field}` is not NAME=SOFT[:HARD] with a known limit name"),
    };
    let mut out = Vec::new();
    for field in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (name, values) = field.split_once('=').ok_or_else(|| invalid(field))?;
        if !NAMES.contains(&name) {
            return Err(invalid(field));
        }
        let (soft, hard) = values.split_once(':').unwrap_or((values, values));
        let (Ok(soft), Ok(hard)) = (soft.parse::<i64>(), hard.parse::<i64>()) else {
            return Err(invalid(field));
        };
        out.push((name.to_string(), soft, hard));
    }
    Ok(out)
}

/// One worker as `BUILDKIT_WORKERS` lists it (Go's `client.WorkerInfo`,
/// encoded without JSON tags, hence the capitalised keys).
#[derive(Debug, Clone, Deserialize)]
struct WorkerInfo {
    #[serde(rename = "Platforms", default)]
    platforms: Option<Vec<OciPlatform>>,
}

/// An OCI platform as JSON (`ocispecs.Platform`).
#[derive(Debug, Clone, Deserialize)]
struct OciPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

/// Turn an OS/architecture/variant triple into a [`Platform`].
pub fn platform_of(os: &str, arch: &str, variant: &str) -> Option<Platform> {
    let text = if variant.is_empty() {
        format!("{os}/{arch}")
    } else {
        format!("{os}/{arch}/{variant}")
    };
    Platform::parse(&text).ok()
}

/// The first worker's first platform: where a build with no `--platform`
/// runs (BuildKit's Dockerfile frontend defaults the same way).
pub fn default_platform_from_workers(json: &str) -> Option<Platform> {
    let workers: Vec<WorkerInfo> = serde_json::from_str(json).ok()?;
    let p = workers.first()?.platforms.as_ref()?.first()?.clone();
    platform_of(&p.os, &p.architecture, p.variant.as_deref().unwrap_or(""))
}

/// Everything the engine put in the environment for this run.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub options: BTreeMap<String, String>,
    pub default_platform: Option<Platform>,
    pub session_id: Option<String>,
}

impl Environment {
    /// Read from name/value pairs (`std::env::vars()` in the binary).
    pub fn from_vars<I, K, V>(vars: I) -> Environment
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        Environment {
            options: raw_options(vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            default_platform: get("BUILDKIT_WORKERS")
                .and_then(|w| default_platform_from_workers(&w)),
            session_id: get("BUILDKIT_SESSION_ID"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Result<FrontendOptions, OptionError> {
        let vars = pairs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| (format!("{OPT_PREFIX}{i}"), format!("{k}={v}")));
        FrontendOptions::parse(&raw_options(vars))
    }

    #[test]
    fn env_variables_become_an_option_map() {
        let raw = raw_options([
            ("BUILDKIT_FRONTEND_OPT_0", "filename=env.kdl"),
            ("BUILDKIT_FRONTEND_OPT_1", "build-arg:URL=http://x/?a=b"),
            ("BUILDKIT_FRONTEND_OPT_2", "no-cache"),
            ("BUILDKIT_SESSION_ID", "abc"),
            ("PATH", "/bin"),
        ]);
        assert_eq!(raw.len(), 3);
        assert_eq!(raw["filename"], "env.kdl");
        // Only the first `=` splits key from value.
        assert_eq!(raw["build-arg:URL"], "http://x/?a=b");
        assert_eq!(raw["no-cache"], "");
    }

    #[test]
    fn no_cache_filter_names_variants() {
        let o = opts(&[("no-cache", "gpu, bogus")]).expect("parses");
        assert!(!o.no_cache);
        assert_eq!(o.no_cache_targets, ["gpu", "bogus"]);
    }

    #[test]
    fn defaults_when_the_client_says_nothing() {
        let o = opts(&[]).expect("parses");
        assert_eq!(o, FrontendOptions::default());
        assert_eq!(o.filename, "kiln.kdl");
        assert_eq!(o.dockerfile_local, "dockerfile");
        assert_eq!(o.context_local, "context");
        assert!(!o.no_cache && !o.multi_platform && o.platforms.is_empty());
    }

    #[test]
    fn buildx_flags_map_to_options() {
        let o = opts(&[
            ("filename", "env.kdl"),
            ("target", "gpu"),
            ("platform", "linux/amd64, linux/arm64"),
            ("build-arg:TORCH", "2.4.1"),
            ("label:team", "ml"),
            ("contextkey", "ctx"),
            ("dockerfilekey", "recipe"),
            ("no-cache", ""),
            ("image-resolve-mode", "pull"),
            ("context:base", "docker-image://x"),
            ("cache-from", "reg/cache:a,reg/cache:b"),
            ("attest:sbom", ""),
            ("frontend.caps", "moby.buildkit.frontend.subrequests"),
            ("local-sessionid:context", "s2"),
        ])
        .expect("parses");
        assert_eq!(o.filename, "env.kdl");
        assert_eq!(o.target.as_deref(), Some("gpu"));
        let platforms: Vec<String> = o.platforms.iter().map(ToString::to_string).collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
        assert!(o.multi_platform);
        assert_eq!(o.build_args["TORCH"], "2.4.1");
        assert_eq!(o.labels["team"], "ml");
        assert_eq!(o.context_local, "ctx");
        assert_eq!(
            (o.dockerfile_local.as_str(), o.dockerfile_local_forced),
            ("recipe", true)
        );
        assert!(o.no_cache);
        assert!(o.no_cache_targets.is_empty());
        assert_eq!(o.resolve_mode, ResolveMode::Pull);
        assert_eq!(o.named_contexts, ["base"]);
        assert_eq!(o.local_sessions["context"], "s2");
        assert_eq!(o.cache_imports.len(), 2);
        assert_eq!(o.cache_imports[1].attrs["ref"], "reg/cache:b");
    }

    #[test]
    fn cache_imports_json_is_read() {
        let o = opts(&[(
            "cache-imports",
            r#"[{"Type":"registry","Attrs":{"ref":"reg/c"}},{"Type":"gha"}]"#,
        )])
        .expect("parses");
        assert_eq!(o.cache_imports[0].kind, "registry");
        assert_eq!(o.cache_imports[0].attrs["ref"], "reg/c");
        assert!(o.cache_imports[1].attrs.is_empty());
    }

    #[test]
    fn subrequests_and_empty_values() {
        let o = opts(&[("requestid", "frontend.targets"), ("target", "")]).expect("parses");
        assert_eq!(o.request_id.as_deref(), Some("frontend.targets"));
        assert_eq!(o.target, None);
    }

    #[test]
    fn multi_platform_can_be_forced_for_one_platform() {
        let o = opts(&[("platform", "linux/arm64"), ("multi-platform", "true")]).expect("parses");
        assert!(o.multi_platform);
        let o = opts(&[("build-arg:BUILDKIT_MULTI_PLATFORM", "1")]).expect("parses");
        assert!(o.multi_platform);
        assert_eq!(
            opts(&[
                ("platform", "linux/amd64,linux/arm64"),
                ("multi-platform", "false")
            ]),
            Err(OptionError::MultiPlatformConflict)
        );
    }

    #[test]
    fn bad_values_are_errors_that_name_the_option() {
        let e = opts(&[("platform", "linux")]).expect_err("bad platform");
        assert!(
            e.to_string()
                .starts_with("option `platform`: `linux` is not a platform"),
            "{e}"
        );
        let e = opts(&[("multi-platform", "maybe")]).expect_err("bad bool");
        assert!(e.to_string().contains("`maybe` is not a boolean"), "{e}");
        let e = opts(&[("image-resolve-mode", "sometimes")]).expect_err("bad mode");
        assert!(e.to_string().contains("image-resolve-mode"), "{e}");
        let e = opts(&[("cache-imports", "{")]).expect_err("bad json");
        assert!(e.to_string().contains("cache-imports"), "{e}");
    }

    #[test]
    fn host_network_follows_force_network_mode() {
        assert!(!opts(&[]).expect("parses").host_network);
        assert!(
            opts(&[("force-network-mode", "host")])
                .expect("parses")
                .host_network
        );
        assert!(
            !opts(&[("force-network-mode", "sandbox")])
                .expect("parses")
                .host_network
        );
        let e = opts(&[("force-network-mode", "bridge2")]).expect_err("unknown");
        assert!(e.to_string().contains("force-network-mode"), "{e}");
    }

    #[test]
    fn workers_give_the_default_platform() {
        let json = r#"[{"ID":"w1","Labels":{},"Platforms":[{"architecture":"arm64","os":"linux","variant":"v8"},{"architecture":"amd64","os":"linux"}]}]"#;
        let p = default_platform_from_workers(json).expect("a platform");
        assert_eq!(p.to_string(), "linux/arm64");
        assert_eq!(default_platform_from_workers("not json"), None);
        assert_eq!(default_platform_from_workers("[]"), None);
        assert_eq!(
            default_platform_from_workers(r#"[{"ID":"w","Platforms":null}]"#),
            None
        );

        let env = Environment::from_vars([
            ("BUILDKIT_WORKERS", json),
            ("BUILDKIT_SESSION_ID", "s1"),
            ("BUILDKIT_FRONTEND_OPT_0", "target=cpu"),
        ]);
        assert_eq!(
            env.default_platform.map(|p| p.to_string()).as_deref(),
            Some("linux/arm64")
        );
        assert_eq!(env.session_id.as_deref(), Some("s1"));
        assert_eq!(env.options["target"], "cpu");
    }

    #[test]
    fn sandbox_options_as_buildx_sends_them() {
        let o = opts(&[
            ("add-hosts", "Pypi.internal=10.0.0.5,old:10.0.0.6,v6=::1"),
            ("ulimit", "nofile=1024:2048,nproc=-1"),
            ("shm-size", "268435456"),
        ])
        .expect("parses");
        assert_eq!(
            o.extra_hosts,
            [
                ("pypi.internal".to_string(), "10.0.0.5".to_string()),
                ("old".to_string(), "10.0.0.6".to_string()),
                ("v6".to_string(), "::1".to_string())
            ]
        );
        assert_eq!(
            o.ulimits,
            [
                ("nofile".to_string(), 1024, 2048),
                ("nproc".to_string(), -1, -1)
            ]
        );
        assert_eq!(o.shm_size, Some(268_435_456));
        assert_eq!(opts(&[("shm-size", "0")]).expect("parses").shm_size, None);
        for (k, v) in [
            ("add-hosts", "noip"),
            ("add-hosts", "h=not-an-ip"),
            ("ulimit", "files=10"),
            ("ulimit", "nofile=x"),
            ("shm-size", "1g"),
        ] {
            let e = opts(&[(k, v)]).expect_err(v);
            assert!(e.to_string().contains(k), "{e}");
        }
    }
}
