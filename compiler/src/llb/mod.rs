//! Pass 4: a small typed LLB builder, in the spirit of BuildKit's Go
//! `client/llb`.
//!
//! Values are immutable and cheap to clone ([`State`] is a shared pointer to
//! the op that produced it, plus an output index). Each op knows its inputs;
//! nothing outside this module builds protobuf structs. [`marshal`] walks the
//! graph once, encodes each op, names it by the sha256 of its bytes and wires
//! inputs by (digest, output index), so the same graph always gives the same
//! bytes.

mod json;
mod marshal;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kiln_proto::pb;

pub use json::definition_json;
pub use marshal::{Marshaled, SourceInfo, encode_op, marshal};

/// A target platform (`linux/amd64`, `linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let ok_part =
            |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match parts.as_slice() {
            [os, arch] if ok_part(os) && ok_part(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, v] if ok_part(os) && ok_part(arch) && ok_part(v) => {
                Ok(Platform::new(os, arch, Some(v)))
            }
            _ => Err(format!(
                "`{s}` is not a platform; write OS/ARCH[/VARIANT], e.g. linux/amd64"
            )),
        }
    }

    fn new(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        // Normalise the aliases the engine normalises (case included).
        let arch = arch.to_ascii_lowercase();
        let architecture = match arch.as_str() {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        let variant = variant.map(str::to_ascii_lowercase);
        let variant = match (architecture, variant.as_deref()) {
            ("arm64", Some("v8")) => None,
            (_, v) => v.map(str::to_string),
        };
        Platform {
            os: os.to_ascii_lowercase(),
            architecture: architecture.to_string(),
            variant,
        }
    }

    pub fn linux_amd64() -> Platform {
        Platform::new("linux", "amd64", None)
    }

    fn to_pb(&self) -> pb::Platform {
        pb::Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone().unwrap_or_default(),
            ..Default::default()
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A range of lines in the recipe (1-based, inclusive), for source maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceRange {
    pub start_line: u32,
    pub start_col: u32,
    pub end_line: u32,
    pub end_col: u32,
}

/// What every op carries besides its definition: a human name for progress
/// output, the recipe lines it comes from, and its progress group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpMeta {
    pub name: String,
    pub locations: Vec<SourceRange>,
    pub group: Option<(String, String)>,
}

impl OpMeta {
    pub fn named(name: impl Into<String>) -> OpMeta {
        OpMeta {
            name: name.into(),
            ..Default::default()
        }
    }

    pub fn at(mut self, range: Option<SourceRange>) -> OpMeta {
        self.locations.extend(range);
        self
    }

    pub fn group(mut self, id: &str, name: &str) -> OpMeta {
        self.group = Some((id.to_string(), name.to_string()));
        self
    }
}

/// One vertex: the op (inputs left empty until marshaling), its inputs in
/// order, the caps it needs and its metadata.
#[derive(Debug)]
struct Node {
    op: pb::Op,
    inputs: Vec<Output>,
    caps: BTreeSet<&'static str>,
    meta: OpMeta,
}

/// Dropping a node drops what it depends on: a chain thousands of steps
/// long would recurse once per step and overflow the stack. The inputs no
/// other node holds are taken apart here, one at a time.
impl Drop for Node {
    fn drop(&mut self) {
        let mut stack: Vec<Arc<Node>> = std::mem::take(&mut self.inputs)
            .into_iter()
            .map(|o| o.node)
            .collect();
        while let Some(node) = stack.pop() {
            if let Ok(mut node) = Arc::try_unwrap(node) {
                stack.extend(std::mem::take(&mut node.inputs).into_iter().map(|o| o.node));
            }
        }
    }
}

/// An output of a node.
#[derive(Debug, Clone)]
struct Output {
    node: Arc<Node>,
    index: i64,
}

/// A filesystem state: the output of an op, or scratch (empty).
#[derive(Debug, Clone)]
pub struct State {
    out: Option<Output>,
}

fn node(op: pb::Op, inputs: Vec<Output>, caps: &[&'static str], meta: OpMeta) -> Arc<Node> {
    Arc::new(Node {
        op,
        inputs,
        caps: caps.iter().copied().collect(),
        meta,
    })
}

fn constraints() -> Option<pb::WorkerConstraints> {
    Some(pb::WorkerConstraints::default())
}

impl State {
    pub fn scratch() -> State {
        State { out: None }
    }

    pub fn is_scratch(&self) -> bool {
        self.out.is_none()
    }

    fn from_node(n: Arc<Node>, index: i64) -> State {
        State {
            out: Some(Output { node: n, index }),
        }
    }

    /// `docker-image://REF`. `reference` must be fully qualified
    /// (`docker.io/library/python:3.11-slim[@sha256:…]`).
    pub fn image(reference: &str, platform: &Platform, meta: OpMeta) -> State {
        let op = pb::Op {
            op: Some(pb::op::Op::Source(pb::SourceOp {
                identifier: format!("docker-image://{reference}"),
                attrs: BTreeMap::new(),
            })),
            platform: Some(platform.to_pb()),
            constraints: constraints(),
            ..Default::default()
        };
        State::from_node(node(op, vec![], &["source.image"], meta), 0)
    }

    /// `local://NAME`: files the client sends, limited to `include` patterns.
    pub fn local(name: &str, opts: &LocalOpts, meta: OpMeta) -> State {
        let mut attrs = BTreeMap::new();
        let mut caps = vec!["source.local"];
        if !opts.include.is_empty() {
            attrs.insert("local.includepattern".to_string(), json_list(&opts.include));
            caps.push("source.local.includepatterns");
        }
        if !opts.exclude.is_empty() {
            attrs.insert(
                "local.excludepatterns".to_string(),
                json_list(&opts.exclude),
            );
            caps.push("source.local.excludepatterns");
        }
        if !opts.follow_paths.is_empty() {
            attrs.insert(
                "local.followpaths".to_string(),
                json_list(&opts.follow_paths),
            );
            caps.push("source.local.followpaths");
        }
        if let Some(hint) = &opts.shared_key_hint {
            attrs.insert("local.sharedkeyhint".to_string(), hint.clone());
            caps.push("source.local.sharedkeyhint");
        }
        let op = pb::Op {
            op: Some(pb::op::Op::Source(pb::SourceOp {
                identifier: format!("local://{name}"),
                attrs,
            })),
            constraints: constraints(),
            ..Default::default()
        };
        State::from_node(node(op, vec![], &caps, meta), 0)
    }

    /// Run a process with this state as its root filesystem.
    pub fn run(&self, exec: Exec) -> ExecResult {
        exec.build(self.clone())
    }

    /// Apply file actions to this state (one FileOp).
    pub fn file(&self, actions: FileActions, meta: OpMeta) -> State {
        actions.build(self.clone(), meta)
    }

    /// Layer `states` in order, later ones winning (MergeOp). Scratch inputs
    /// are dropped; one input is returned as is.
    pub fn merge(states: &[State], meta: OpMeta) -> State {
        let outs: Vec<Output> = states.iter().filter_map(|s| s.out.clone()).collect();
        match outs.len() {
            0 => State::scratch(),
            1 => State {
                out: outs.into_iter().next(),
            },
            _ => {
                let merge = pb::MergeOp {
                    inputs: (0..outs.len() as i64)
                        .map(|input| pb::MergeInput { input })
                        .collect(),
                };
                let op = pb::Op {
                    op: Some(pb::op::Op::Merge(merge)),
                    constraints: constraints(),
                    ..Default::default()
                };
                State::from_node(node(op, outs, &["mergeop"], meta), 0)
            }
        }
    }

    /// The changes that turn `lower` into `upper` (DiffOp).
    pub fn diff(lower: &State, upper: &State, meta: OpMeta) -> State {
        let mut inputs = Vec::new();
        let mut index_of = |s: &State| -> i64 {
            match &s.out {
                Some(o) => {
                    inputs.push(o.clone());
                    inputs.len() as i64 - 1
                }
                None => -1,
            }
        };
        let lower_index = index_of(lower);
        let upper_index = index_of(upper);
        let op = pb::Op {
            op: Some(pb::op::Op::Diff(pb::DiffOp {
                lower: Some(pb::LowerDiffInput { input: lower_index }),
                upper: Some(pb::UpperDiffInput { input: upper_index }),
            })),
            constraints: constraints(),
            ..Default::default()
        };
        State::from_node(node(op, inputs, &["diffop"], meta), 0)
    }

    /// The digest of the op that produced this state, if any (for tests and graphs).
    pub fn op_name(&self) -> Option<&str> {
        self.out.as_ref().map(|o| o.node.meta.name.as_str())
    }
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_string())
}

/// Options of a local source.
#[derive(Debug, Clone, Default)]
pub struct LocalOpts {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub follow_paths: Vec<String>,
    pub shared_key_hint: Option<String>,
}

/// Cache mount sharing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// A mount of an exec op other than its root.
#[derive(Debug, Clone)]
pub enum Mount {
    /// A state bound at `target`; read-only unless `readonly` is false, in
    /// which case its changes are an output of the exec.
    Bind {
        target: String,
        source: State,
        selector: Option<String>,
        readonly: bool,
    },
    /// A persistent cache directory shared across builds.
    Cache {
        target: String,
        id: String,
        sharing: Sharing,
    },
    /// A build secret as a file.
    Secret {
        target: String,
        id: String,
        uid: u32,
        gid: u32,
        mode: u32,
        optional: bool,
    },
    /// An empty in-memory filesystem.
    Tmpfs { target: String },
}

impl Mount {
    fn target(&self) -> &str {
        match self {
            Mount::Bind { target, .. }
            | Mount::Cache { target, .. }
            | Mount::Secret { target, .. }
            | Mount::Tmpfs { target } => target,
        }
    }
}

/// Network mode of an exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    #[default]
    Sandbox,
    Host,
    None,
}

/// A process to run.
#[derive(Debug, Clone)]
pub struct Exec {
    pub args: Vec<String>,
    /// Environment in order; later entries with the same name replace earlier.
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub user: Option<String>,
    pub mounts: Vec<Mount>,
    pub network: Network,
    /// Proxy variables the engine sets for the process, kept out of the
    /// op's cache key and of the image (BuildKit's `ProxyEnv`).
    pub proxy: Option<ProxyEnv>,
    /// Sandbox settings from the build client (`--add-host`, `--ulimit`,
    /// `--shm-size`), as a Dockerfile's RUN gets them.
    pub sandbox: Sandbox,
    pub platform: Platform,
    pub meta: OpMeta,
}

/// What a build client may set for every step's sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// NAME → IP in /etc/hosts.
    pub extra_hosts: Vec<(String, String)>,
    /// (name, soft, hard), `nofile` and the like.
    pub ulimits: Vec<(String, i64, i64)>,
    /// The size of /dev/shm, in bytes.
    pub shm_size: Option<i64>,
}

/// `HTTP_PROXY` and the like for a build's steps (the build arguments
/// BuildKit predefines), as the Dockerfile frontend passes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    pub http: String,
    pub https: String,
    pub ftp: String,
    pub no_proxy: String,
    pub all: String,
}

impl ProxyEnv {
    /// The proxy build arguments (any case: `HTTPS_PROXY`, `https_proxy`)
    /// among `args`; `None` when there are none.
    pub fn from_build_args<'a>(
        args: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Option<ProxyEnv> {
        let mut p = ProxyEnv::default();
        let mut any = false;
        for (k, v) in args {
            let slot = match k.to_ascii_lowercase().as_str() {
                "http_proxy" => &mut p.http,
                "https_proxy" => &mut p.https,
                "ftp_proxy" => &mut p.ftp,
                "no_proxy" => &mut p.no_proxy,
                "all_proxy" => &mut p.all,
                _ => continue,
            };
            *slot = v.clone();
            any = true;
        }
        any.then_some(p)
    }
}

impl Exec {
    /// `sh -c SCRIPT` with the given environment.
    pub fn shell(script: &str, platform: &Platform, meta: OpMeta) -> Exec {
        Exec {
            args: vec!["/bin/sh".into(), "-c".into(), script.to_string()],
            env: Vec::new(),
            cwd: "/".into(),
            user: None,
            mounts: Vec::new(),
            network: Network::Sandbox,
            proxy: None,
            sandbox: Sandbox::default(),
            platform: platform.clone(),
            meta,
        }
    }

    pub fn env(mut self, env: &[(String, String)]) -> Exec {
        self.env.extend(env.iter().cloned());
        self
    }

    pub fn mount(mut self, m: Mount) -> Exec {
        self.mounts.push(m);
        self
    }

    fn build(self, root: State) -> ExecResult {
        let mut inputs: Vec<Output> = Vec::new();
        let mut caps: BTreeSet<&'static str> = ["exec.meta.base"].into_iter().collect();
        let mut input_index = |s: &State| -> i64 {
            match &s.out {
                None => -1,
                Some(o) => {
                    let pos = inputs
                        .iter()
                        .position(|i| Arc::ptr_eq(&i.node, &o.node) && i.index == o.index);
                    match pos {
                        Some(p) => p as i64,
                        None => {
                            inputs.push(o.clone());
                            inputs.len() as i64 - 1
                        }
                    }
                }
            }
        };
        let root_input = input_index(&root);
        let mut mounts = vec![pb::Mount {
            input: root_input,
            dest: "/".into(),
            output: 0,
            ..Default::default()
        }];
        let mut others = self.mounts.clone();
        // BuildKit sorts mounts by target; do the same so equal execs marshal equally.
        others.sort_by(|a, b| a.target().cmp(b.target()));
        let mut outputs: Vec<String> = vec!["/".into()];
        for m in &others {
            let pm = match m {
                Mount::Bind {
                    target,
                    source,
                    selector,
                    readonly,
                } => {
                    caps.insert("exec.mount.bind");
                    if selector.is_some() {
                        caps.insert("exec.mount.selector");
                    }
                    let output = if *readonly {
                        -1
                    } else {
                        outputs.push(target.clone());
                        outputs.len() as i64 - 1
                    };
                    pb::Mount {
                        input: input_index(source),
                        selector: selector.clone().unwrap_or_default(),
                        dest: target.clone(),
                        output,
                        readonly: *readonly,
                        mount_type: pb::MountType::Bind as i32,
                        ..Default::default()
                    }
                }
                Mount::Cache {
                    target,
                    id,
                    sharing,
                } => {
                    caps.insert("exec.mount.cache");
                    caps.insert("exec.mount.cache.sharing");
                    pb::Mount {
                        input: -1,
                        dest: target.clone(),
                        output: -1,
                        mount_type: pb::MountType::Cache as i32,
                        cache_opt: Some(pb::CacheOpt {
                            id: id.clone(),
                            sharing: match sharing {
                                Sharing::Shared => pb::CacheSharingOpt::Shared,
                                Sharing::Private => pb::CacheSharingOpt::Private,
                                Sharing::Locked => pb::CacheSharingOpt::Locked,
                            } as i32,
                        }),
                        ..Default::default()
                    }
                }
                Mount::Secret {
                    target,
                    id,
                    uid,
                    gid,
                    mode,
                    optional,
                } => {
                    caps.insert("exec.mount.secret");
                    pb::Mount {
                        input: -1,
                        dest: target.clone(),
                        output: -1,
                        mount_type: pb::MountType::Secret as i32,
                        secret_opt: Some(pb::SecretOpt {
                            id: id.clone(),
                            uid: *uid,
                            gid: *gid,
                            mode: *mode,
                            optional: *optional,
                        }),
                        ..Default::default()
                    }
                }
                Mount::Tmpfs { target } => {
                    caps.insert("exec.mount.tmpfs");
                    pb::Mount {
                        input: -1,
                        dest: target.clone(),
                        output: -1,
                        mount_type: pb::MountType::Tmpfs as i32,
                        tmpfs_opt: Some(pb::TmpfsOpt::default()),
                        ..Default::default()
                    }
                }
            };
            mounts.push(pm);
        }
        // Resolve env in order, later wins, keeping first position.
        let mut env: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.env {
            match env.iter_mut().find(|(ek, _)| ek == k) {
                Some(slot) => slot.1 = v.clone(),
                None => env.push((k.clone(), v.clone())),
            }
        }
        if self.network != Network::Sandbox {
            caps.insert("exec.meta.network");
        }
        // A process without a network has no use for a proxy.
        let proxy_env = match (&self.proxy, self.network) {
            (Some(p), Network::Sandbox | Network::Host) => {
                caps.insert("exec.meta.proxyenv");
                Some(pb::ProxyEnv {
                    http_proxy: p.http.clone(),
                    https_proxy: p.https.clone(),
                    ftp_proxy: p.ftp.clone(),
                    no_proxy: p.no_proxy.clone(),
                    all_proxy: p.all.clone(),
                })
            }
            _ => None,
        };
        if !self.sandbox.ulimits.is_empty() {
            caps.insert("exec.meta.ulimit");
        }
        if let Some(size) = self.sandbox.shm_size {
            caps.insert("exec.mount.tmpfs");
            caps.insert("exec.mount.tmpfs.size");
            mounts.push(pb::Mount {
                input: -1,
                dest: "/dev/shm".into(),
                output: -1,
                mount_type: pb::MountType::Tmpfs as i32,
                tmpfs_opt: Some(pb::TmpfsOpt { size }),
                ..Default::default()
            });
        }
        let meta = pb::Meta {
            args: self.args.clone(),
            env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: self.cwd.clone(),
            user: self.user.clone().unwrap_or_default(),
            proxy_env,
            extra_hosts: self
                .sandbox
                .extra_hosts
                .iter()
                .map(|(host, ip)| pb::HostIp {
                    host: host.clone(),
                    ip: ip.clone(),
                })
                .collect(),
            ulimit: self
                .sandbox
                .ulimits
                .iter()
                .map(|(name, soft, hard)| pb::Ulimit {
                    name: name.clone(),
                    soft: *soft,
                    hard: *hard,
                })
                .collect(),
            remove_mount_stubs_recursive: true,
            ..Default::default()
        };
        let exec = pb::ExecOp {
            meta: Some(meta),
            mounts,
            network: match self.network {
                Network::Sandbox => pb::NetMode::Unset,
                Network::Host => pb::NetMode::Host,
                Network::None => pb::NetMode::None,
            } as i32,
            ..Default::default()
        };
        let op = pb::Op {
            op: Some(pb::op::Op::Exec(exec)),
            platform: Some(self.platform.to_pb()),
            constraints: constraints(),
            ..Default::default()
        };
        let caps: Vec<&'static str> = caps.into_iter().collect();
        ExecResult {
            node: node(op, inputs, &caps, self.meta),
            outputs,
        }
    }
}

/// The outputs of an exec: its root and its writable bind mounts.
#[derive(Debug, Clone)]
pub struct ExecResult {
    node: Arc<Node>,
    outputs: Vec<String>,
}

impl ExecResult {
    pub fn root(&self) -> State {
        State::from_node(self.node.clone(), 0)
    }

    /// The state of the writable mount at `target`, if the exec has one.
    pub fn mount(&self, target: &str) -> Option<State> {
        self.outputs
            .iter()
            .position(|t| t == target)
            .map(|i| State::from_node(self.node.clone(), i as i64))
    }
}

/// Owner of created or copied files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    fn to_pb(self) -> pb::ChownOpt {
        pb::ChownOpt {
            user: Some(pb::UserOpt {
                user: Some(pb::user_opt::User::ById(self.uid)),
            }),
            group: Some(pb::UserOpt {
                user: Some(pb::user_opt::User::ById(self.gid)),
            }),
        }
    }
}

/// One file action.
#[derive(Debug, Clone)]
pub enum FileAction {
    Copy {
        from: State,
        src: String,
        dest: String,
        owner: Option<Owner>,
        /// Copy a directory's contents (like `COPY dir/ dest/`), not the directory itself.
        contents: bool,
        create_parents: bool,
        include: Vec<String>,
    },
    Mkdir {
        path: String,
        mode: u32,
        parents: bool,
        owner: Option<Owner>,
    },
    Mkfile {
        path: String,
        mode: u32,
        data: Vec<u8>,
        owner: Option<Owner>,
    },
    Rm {
        path: String,
        allow_not_found: bool,
        wildcard: bool,
    },
}

/// A sequence of file actions applied in order (one FileOp).
#[derive(Debug, Clone, Default)]
pub struct FileActions {
    actions: Vec<FileAction>,
}

impl FileActions {
    pub fn new() -> Self {
        FileActions::default()
    }

    pub fn then(mut self, a: FileAction) -> Self {
        self.actions.push(a);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    fn build(self, base: State, meta: OpMeta) -> State {
        if self.actions.is_empty() {
            return base;
        }
        let mut inputs: Vec<Output> = Vec::new();
        let mut add = |s: &State| -> i64 {
            match &s.out {
                None => -1,
                Some(o) => match inputs
                    .iter()
                    .position(|i| Arc::ptr_eq(&i.node, &o.node) && i.index == o.index)
                {
                    Some(p) => p as i64,
                    None => {
                        inputs.push(o.clone());
                        inputs.len() as i64 - 1
                    }
                },
            }
        };
        let base_index = add(&base);
        let secondary: Vec<i64> = self
            .actions
            .iter()
            .map(|a| match a {
                FileAction::Copy { from, .. } => add(from),
                _ => -1,
            })
            .collect();
        let n_inputs = inputs.len() as i64;
        let count = self.actions.len();
        let mut caps: BTreeSet<&'static str> = ["file.base"].into_iter().collect();
        let mut pb_actions = Vec::with_capacity(count);
        for (i, (a, sec)) in self.actions.into_iter().zip(secondary).enumerate() {
            // The first action works on the base; each next one on the
            // previous action's result, referenced past the real inputs.
            let input = if i == 0 {
                base_index
            } else {
                n_inputs + i as i64 - 1
            };
            let output = if i + 1 == count { 0 } else { -1 };
            let action = match a {
                FileAction::Copy {
                    src,
                    dest,
                    owner,
                    contents,
                    create_parents,
                    include,
                    ..
                } => {
                    if !include.is_empty() {
                        caps.insert("file.copy.includeexcludepatterns");
                    }
                    pb::file_action::Action::Copy(pb::FileActionCopy {
                        src,
                        dest,
                        owner: owner.map(Owner::to_pb),
                        mode: -1,
                        follow_symlink: true,
                        dir_copy_contents: contents,
                        create_dest_path: create_parents,
                        allow_wildcard: true,
                        allow_empty_wildcard: false,
                        timestamp: -1,
                        include_patterns: include,
                        ..Default::default()
                    })
                }
                FileAction::Mkdir {
                    path,
                    mode,
                    parents,
                    owner,
                } => pb::file_action::Action::Mkdir(pb::FileActionMkDir {
                    path,
                    mode: mode as i32,
                    make_parents: parents,
                    owner: owner.map(Owner::to_pb),
                    timestamp: -1,
                }),
                FileAction::Mkfile {
                    path,
                    mode,
                    data,
                    owner,
                } => pb::file_action::Action::Mkfile(pb::FileActionMkFile {
                    path,
                    mode: mode as i32,
                    data,
                    owner: owner.map(Owner::to_pb),
                    timestamp: -1,
                }),
                FileAction::Rm {
                    path,
                    allow_not_found,
                    wildcard,
                } => {
                    if wildcard {
                        caps.insert("file.rm.wildcard");
                    }
                    pb::file_action::Action::Rm(pb::FileActionRm {
                        path,
                        allow_not_found,
                        allow_wildcard: wildcard,
                    })
                }
            };
            pb_actions.push(pb::FileAction {
                input,
                secondary_input: sec,
                output,
                action: Some(action),
            });
        }
        let op = pb::Op {
            op: Some(pb::op::Op::File(pb::FileOp {
                actions: pb_actions,
            })),
            constraints: constraints(),
            ..Default::default()
        };
        let caps: Vec<&'static str> = caps.into_iter().collect();
        State::from_node(node(op, inputs, &caps, meta), 0)
    }
}

#[cfg(test)]
mod tests;
