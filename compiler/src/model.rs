//! Pass 2: KDL syntax → the typed, validated recipe model.
//!
//! Every node and property the language defines is decoded here, with its span,
//! and every mistake becomes a located diagnostic; decoding goes on after an
//! error so that one run reports all of them. The model still says only what
//! the recipe says: choosing images, wheels and layers is the `plan` pass.

use std::collections::BTreeMap;

use kdl::{KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use crate::diag::{Diagnostic, Diagnostics, nearest};
use crate::recipe::Syntax;

/// A value with the span of the recipe text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: SourceSpan,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: SourceSpan) -> Self {
        Spanned { value, span }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// The whole recipe: top-level settings and the variants that refine them.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub directive: Option<String>,
    pub format_version: u32,
    pub top: Settings,
    pub variants: Vec<Variant>,
    pub args: Vec<ArgDecl>,
}

/// A build argument the recipe declares (`arg "NAME" "default"`).
#[derive(Debug, Clone)]
pub struct ArgDecl {
    pub name: Spanned<String>,
    pub default: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Variant {
    pub name: Spanned<String>,
    pub default: bool,
    pub description: Option<String>,
    pub span: SourceSpan,
    pub settings: Settings,
}

/// What a recipe level (top, or one variant) says. `Option`s are set once per
/// level and a variant's value overrides the top's; lists add up.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub name: Option<Spanned<String>>,
    pub python: Option<Spanned<String>>,
    pub framework: Option<Spanned<FrameworkReq>>,
    pub base: Option<Spanned<String>>,
    pub builder: Option<Spanned<String>>,
    pub conda: Option<Spanned<String>>,
    pub installer: Option<Spanned<Installer>>,
    pub cuda: Option<Spanned<CudaReq>>,
    pub user: Option<Spanned<User>>,
    pub workdir: Option<Spanned<String>>,
    pub cmd: Option<Spanned<Vec<String>>>,
    pub entrypoint: Option<Spanned<Vec<String>>>,
    pub ca_bundle: Option<Spanned<String>>,
    pub apt: Vec<Spanned<Apt>>,
    pub pip: Vec<Spanned<Pip>>,
    pub env: Vec<Spanned<(String, String)>>,
    pub copy: Vec<Spanned<Copy>>,
    pub run: Vec<Spanned<Run>>,
    pub verify: Vec<Spanned<Verify>>,
    pub label: Vec<Spanned<(String, String)>>,
    pub expose: Vec<Spanned<String>>,
    pub healthcheck: Option<Spanned<Healthcheck>>,
    pub stop_signal: Option<Spanned<String>>,
    /// Set by `overlay`: the packages a variant's `pip` names, which replace
    /// the pins of the same packages in the top level's lock files (the
    /// span of each top-level `pip requirements=` line, and those names).
    pub pip_replaced: Vec<(miette::SourceSpan, Vec<String>)>,
}

/// The image's health check (Docker's `Healthcheck` config): the test as
/// Docker writes it (`["CMD", …]`, `["CMD-SHELL", "…"]` or `["NONE"]`) and
/// its timings, in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub start_period: Option<u64>,
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameworkReq {
    pub name: String,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installer {
    Pip,
    Uv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaFrom {
    /// The framework's CUDA wheels on the slim python base (the default).
    Wheels,
    /// An nvidia/cuda runtime image as the base.
    Base,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaReq {
    pub version: String,
    pub cudnn: Option<String>,
    /// Where `cudnn=` was written (its errors point there).
    pub cudnn_span: Option<SourceSpan>,
    pub from: CudaFrom,
    pub distro: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Runtime,
    Build,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apt {
    pub packages: Vec<String>,
    pub stage: Stage,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pip {
    /// Requirement specifiers written in the recipe.
    Packages(Vec<String>),
    /// A requirements file from the build context.
    Requirements(String),
    /// An extra package index, optionally with credentials from a secret.
    Index {
        url: String,
        secret: Option<String>,
        /// `default=#true`: pip's `--index-url`, in PyPI's place.
        default: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Normalised path inside the build context.
    pub src: String,
    pub dest: String,
    /// `owner="root"`: the files stay root's (read-only to the user), where
    /// the default gives them to the recipe's user.
    pub root_owned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAfter {
    Deps,
    Copy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub command: String,
    pub after: RunAfter,
    /// A build secret mounted at `/run/secrets/ID` for this step only.
    pub secret: Option<String>,
}

/// A `verify` check: python run on the environment (runtime + installed
/// packages + `run` steps after deps), or on the finished image with the app
/// files when `after="copy"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    pub code: String,
    pub after: RunAfter,
}

/// Node names the language defines, for "did you mean".
pub const NODE_NAMES: &[&str] = &[
    "kiln",
    "name",
    "python",
    "framework",
    "base",
    "builder",
    "conda",
    "installer",
    "cuda",
    "apt",
    "pip",
    "ca-bundle",
    "variant",
    "user",
    "workdir",
    "env",
    "copy",
    "run",
    "verify",
    "cmd",
    "entrypoint",
    "label",
    "expose",
    "healthcheck",
    "stopsignal",
    "arg",
];

pub const FRAMEWORKS: &[&str] = &["pytorch", "tensorflow", "jax"];
pub const FORMAT_VERSION: u32 = 1;

/// Decode and validate a parsed recipe. Warnings come back with the model;
/// any error fails the whole decode, with every problem found.
pub fn decode(syntax: &Syntax) -> Result<(Recipe, Diagnostics), Diagnostics> {
    let mut cx = Decoder {
        diags: Diagnostics::new(syntax.source.clone()),
    };
    let recipe = cx.recipe(syntax);
    if cx.diags.has_errors() {
        Err(cx.diags)
    } else {
        Ok((recipe, cx.diags))
    }
}

struct Decoder {
    diags: Diagnostics,
}

/// Where a node sits: at top level, or inside `variant "NAME" { … }`.
#[derive(Clone, Copy)]
enum Level<'a> {
    Top,
    Variant(&'a str),
}

impl Decoder {
    fn err(
        &mut self,
        code: &'static str,
        span: SourceSpan,
        msg: impl Into<String>,
    ) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(code, span, msg));
        let last = self.diags.items.len() - 1;
        &mut self.diags.items[last]
    }

    fn recipe(&mut self, syntax: &Syntax) -> Recipe {
        let nodes = syntax.doc.nodes();
        let mut format_version = FORMAT_VERSION;
        match nodes.first() {
            Some(first) if first.name().value() == "kiln" => {
                format_version = self.format_version(first);
            }
            Some(first) => {
                let help = if nodes.iter().any(|n| n.name().value() == "kiln") {
                    "move `kiln 1` to the top of the recipe"
                } else {
                    "start the recipe with `kiln 1` (the recipe format version)"
                };
                self.err(
                    "kiln::missing_version",
                    head_span(first),
                    "a recipe starts with its format version, `kiln 1`",
                )
                .help = Some(help.to_string());
            }
            None => {
                self.err(
                    "kiln::missing_version",
                    SourceSpan::new(0.into(), 0),
                    "the recipe is empty",
                )
                .help = Some("a recipe starts with `kiln 1`; see docs/recipe.md".to_string());
            }
        }

        let mut top = Settings::default();
        let mut variants: Vec<Variant> = Vec::new();
        let mut args = Vec::new();
        // Nodes with `variant="x"` at top level, applied once all variants are known.
        let mut tagged: Vec<(Spanned<String>, &KdlNode)> = Vec::new();

        for (i, node) in nodes.iter().enumerate() {
            let name = node.name().value();
            match name {
                "kiln" => {
                    if i != 0 {
                        self.err(
                            "kiln::duplicate_node",
                            head_span(node),
                            "`kiln` is given more than once, or not first",
                        )
                        .help = Some("keep one `kiln 1`, as the first node".into());
                    }
                }
                "variant" => {
                    if let Some(v) = self.variant(node) {
                        if let Some(prev) = variants.iter().find(|p| p.name.value == v.name.value) {
                            let (line, _) = self.diags.source.line_col(prev.name.span.offset());
                            self.err(
                                "kiln::duplicate_variant",
                                v.name.span,
                                format!("variant `{}` is defined twice", v.name.value),
                            )
                            .help = Some(format!(
                                "it is first defined on line {line}; merge the two blocks"
                            ));
                        } else {
                            variants.push(v);
                        }
                    }
                }
                "arg" => {
                    if let Some(a) = self.arg(node) {
                        args.push(a);
                    }
                }
                _ => {
                    if let Some(tag) = self.variant_tag(node) {
                        tagged.push((tag, node));
                    } else {
                        self.setting(&mut top, node, Level::Top);
                    }
                }
            }
        }

        for (tag, node) in tagged {
            match variants.iter_mut().find(|v| v.name.value == tag.value) {
                Some(v) => {
                    let vname = v.name.value.clone();
                    let mut settings = std::mem::take(&mut v.settings);
                    self.setting(&mut settings, node, Level::Variant(&vname));
                    if let Some(v) = variants.iter_mut().find(|v| v.name.value == tag.value) {
                        v.settings = settings;
                    }
                }
                None => {
                    let names: Vec<&str> = variants.iter().map(|v| v.name.value.as_str()).collect();
                    let help = match nearest(&tag.value, names.iter().copied()) {
                        Some(n) => format!("did you mean `variant=\"{n}\"`?"),
                        None if names.is_empty() => {
                            format!("define it with `variant \"{}\" {{ … }}`", tag.value)
                        }
                        None => format!("defined variants: {}", names.join(", ")),
                    };
                    self.err(
                        "kiln::unknown_variant",
                        tag.span,
                        format!("no variant named `{}` is defined", tag.value),
                    )
                    .help = Some(help);
                }
            }
        }

        let defaults: Vec<&Variant> = variants.iter().filter(|v| v.default).collect();
        if defaults.len() > 1 {
            let first = defaults[0].name.value.clone();
            let span = defaults[1].span;
            self.err(
                "kiln::duplicate_default",
                span,
                format!("more than one variant is marked default (first: `{first}`)"),
            )
            .help = Some("mark exactly one variant `default=#true`".into());
        }

        // Declared args must be unique.
        let mut seen: BTreeMap<String, SourceSpan> = BTreeMap::new();
        for a in &args {
            if seen.insert(a.name.value.clone(), a.name.span).is_some() {
                self.err(
                    "kiln::duplicate_node",
                    a.name.span,
                    format!("build argument `{}` is declared twice", a.name.value),
                );
            }
        }

        Recipe {
            directive: syntax.directive.as_ref().map(|d| d.0.clone()),
            format_version,
            top,
            variants,
            args,
        }
    }

    fn format_version(&mut self, node: &KdlNode) -> u32 {
        self.no_children(node);
        self.allow_props(node, &[]);
        let args = positional(node);
        match args.as_slice() {
            [e] => match e.value() {
                KdlValue::Integer(1) => 1,
                KdlValue::Integer(n) => {
                    self.err(
                        "kiln::unsupported_version",
                        e.span(),
                        format!("recipe format {n} is not supported by this kiln"),
                    )
                    .help = Some("this kiln reads `kiln 1`".into());
                    FORMAT_VERSION
                }
                _ => {
                    self.err(
                        "kiln::wrong_type",
                        e.span(),
                        "the format version is a whole number",
                    )
                    .help = Some("write `kiln 1`".into());
                    FORMAT_VERSION
                }
            },
            _ => {
                self.err(
                    "kiln::wrong_arity",
                    head_span(node),
                    "`kiln` takes one value, the format version",
                )
                .help = Some("write `kiln 1`".into());
                FORMAT_VERSION
            }
        }
    }

    fn variant(&mut self, node: &KdlNode) -> Option<Variant> {
        self.allow_props(node, &["default", "description"]);
        let name = self.one_string(node, "variant name")?;
        if !valid_variant_name(&name.value) {
            self.err(
                "kiln::invalid_name",
                name.span,
                format!("`{}` is not a valid variant name", name.value),
            )
            .help = Some(
                "use letters, digits, `-`, `_` and `.`, starting with a letter or digit (it is a build target)"
                    .into(),
            );
        }
        let default = self.bool_prop(node, "default").unwrap_or(false);
        let description = self.string_prop(node, "description").map(|s| s.value);
        let mut settings = Settings::default();
        if let Some(children) = node.children() {
            for child in children.nodes() {
                match child.name().value() {
                    "kiln" | "variant" | "arg" => {
                        let what = child.name().value();
                        self.err(
                            "kiln::misplaced_node",
                            head_span(child),
                            format!("`{what}` belongs at the top level, not inside a variant"),
                        );
                    }
                    _ => {
                        if let Some(tag) = self.variant_tag(child) {
                            self.err(
                                "kiln::misplaced_node",
                                tag.span,
                                "`variant=` inside a variant block",
                            )
                            .help = Some(format!(
                                "nodes inside `variant \"{}\"` already apply to it only; remove the property",
                                name.value
                            ));
                        }
                        self.setting(&mut settings, child, Level::Variant(&name.value));
                    }
                }
            }
        }
        Some(Variant {
            name,
            default,
            description,
            span: head_span(node),
            settings,
        })
    }

    fn arg(&mut self, node: &KdlNode) -> Option<ArgDecl> {
        self.no_children(node);
        self.allow_props(node, &["default"]);
        let args = positional(node);
        let name = match args.first() {
            Some(e) => self.string(e, "build argument name")?,
            None => {
                self.err(
                    "kiln::wrong_arity",
                    head_span(node),
                    "`arg` needs a name: `arg \"NAME\" default=\"value\"`",
                );
                return None;
            }
        };
        if args.len() > 1 {
            self.err(
                "kiln::wrong_arity",
                args[1].span(),
                "`arg` takes one name; give its default as `default=\"…\"`",
            );
        }
        if !valid_arg_name(&name.value) {
            self.err(
                "kiln::invalid_name",
                name.span,
                format!("`{}` is not a valid build argument name", name.value),
            )
            .help = Some("use letters, digits and `_`, not starting with a digit".into());
        }
        let default = self.string_prop(node, "default").map(|s| s.value);
        Some(ArgDecl { name, default })
    }

    /// `variant="x"` on a node, removed from the node's allowed properties.
    fn variant_tag(&mut self, node: &KdlNode) -> Option<Spanned<String>> {
        let entry = node
            .entries()
            .iter()
            .find(|e| e.name().is_some_and(|n| n.value() == "variant"))?;
        self.string(entry, "variant name")
    }

    fn setting(&mut self, s: &mut Settings, node: &KdlNode, level: Level<'_>) {
        let name = node.name().value();
        if name != "variant" {
            self.no_children(node);
        }
        let span = head_span(node);
        match name {
            "name" => {
                self.allow_props(node, &["variant"]);
                if let Some(v) = self.one_string(node, "image name") {
                    self.set_once(&mut s.name, v, node, level);
                }
            }
            "python" => {
                self.allow_props(node, &["variant"]);
                if let Some(v) = self.one_string(node, "python version") {
                    if has_arg_ref(&v.value) {
                        // Checked once the build argument is substituted.
                    } else if !is_version(&v.value, 2) || v.value.split('.').count() > 3 {
                        self.err(
                            "kiln::invalid_version",
                            v.span,
                            format!("`{}` is not a python version", v.value),
                        )
                        .help = Some(
                            "write major.minor, e.g. `python \"3.11\"`, or major.minor.patch"
                                .into(),
                        );
                    } else if !python_supported(&v.value) {
                        // The venv, pip's wheels and the frameworks need a
                        // python 3 that pip still installs for.
                        self.err(
                            "kiln::unsupported_python",
                            v.span,
                            format!(
                                "python {} is not supported: kiln builds a python 3.8+ venv",
                                v.value
                            ),
                        )
                        .help = Some("pick python 3.8 or newer, e.g. `python \"3.11\"`".into());
                    }
                    self.set_once(&mut s.python, v, node, level);
                }
            }
            "framework" => {
                self.allow_props(node, &["variant"]);
                if let Some(f) = self.framework(node) {
                    self.set_once(&mut s.framework, Spanned::new(f, span), node, level);
                }
            }
            "base" | "builder" | "conda" | "workdir" | "ca-bundle" => {
                let value = if name == "ca-bundle" {
                    self.allow_props(node, &["variant", "secret"]);
                    if !positional(node).is_empty() {
                        self.err(
                            "kiln::wrong_arity",
                            positional(node)[0].span(),
                            "`ca-bundle` takes no value; name the build secret that holds the bundle",
                        )
                        .help = Some("write `ca-bundle secret=\"ca-bundle\"` and build with `--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt`".into());
                        return;
                    }
                    match self.string_prop(node, "secret") {
                        Some(v) if v.value.trim().is_empty() => {
                            self.err(
                                "kiln::empty_value",
                                v.span,
                                "`ca-bundle` needs the id of a build secret, not an empty string",
                            )
                            .help = Some("write `ca-bundle secret=\"ca-bundle\"`".into());
                            return;
                        }
                        Some(v) => match self.secret_id(&v) {
                            Some(_) => v,
                            None => return,
                        },
                        None => {
                            self.err(
                                "kiln::missing_property",
                                span,
                                "`ca-bundle` needs `secret=\"ID\"`, the build secret holding the CA bundle",
                            );
                            return;
                        }
                    }
                } else {
                    self.allow_props(node, &["variant"]);
                    match self.one_string(node, name) {
                        Some(v) => v,
                        None => return,
                    }
                };
                match name {
                    "base" => {
                        self.check_image_ref(&value);
                        self.set_once(&mut s.base, value, node, level);
                    }
                    "builder" => {
                        self.check_image_ref(&value);
                        self.set_once(&mut s.builder, value, node, level);
                    }
                    "conda" => {
                        if let Some(norm) =
                            self.check_context_path(&value, "conda environment file")
                        {
                            self.set_once(
                                &mut s.conda,
                                Spanned::new(norm, value.span),
                                node,
                                level,
                            );
                        }
                    }
                    "workdir" => {
                        if !value.value.starts_with('/') && !has_arg_ref(&value.value) {
                            self.err(
                                "kiln::invalid_path",
                                value.span,
                                format!("workdir `{}` is not an absolute path", value.value),
                            )
                            .help = Some(if value.value.starts_with(['$', '~']) {
                                let rest = value
                                    .value
                                    .trim_start_matches(['$', '~'])
                                    .trim_start_matches(|c: char| {
                                        c.is_ascii_alphanumeric()
                                            || c == '_'
                                            || c == '{'
                                            || c == '}'
                                    })
                                    .trim_start_matches('/');
                                let tail = if rest.is_empty() {
                                    String::new()
                                } else {
                                    format!("/{rest}")
                                };
                                format!(
                                    "kiln does not expand `$HOME` or `~` in paths; write the directory itself: `workdir \"/home/NAME{tail}\"` for `user \"NAME\"` (kiln makes its home there), `/root{tail}` for root"
                                )
                            } else {
                                format!(
                                    "write `workdir \"/{}\"`",
                                    value.value.trim_start_matches("./")
                                )
                            });
                        }
                        // `/app/../srv/./x/` is `/srv/x`, as Docker cleans
                        // a WORKDIR.
                        let mut value = value;
                        if value.value.starts_with('/') && !has_arg_ref(&value.value) {
                            let mut parts: Vec<&str> = Vec::new();
                            for part in value.value.split('/') {
                                match part {
                                    "" | "." => {}
                                    ".." => {
                                        parts.pop();
                                    }
                                    p => parts.push(p),
                                }
                            }
                            value.value = format!("/{}", parts.join("/"));
                        }
                        self.set_once(&mut s.workdir, value, node, level);
                    }
                    _ => self.set_once(&mut s.ca_bundle, value, node, level),
                }
            }
            "installer" => {
                self.allow_props(node, &["variant"]);
                if let Some(v) = self.one_string(node, "installer") {
                    let inst = match v.value.as_str() {
                        "pip" => Some(Installer::Pip),
                        "uv" => Some(Installer::Uv),
                        other => {
                            self.err(
                                "kiln::invalid_value",
                                v.span,
                                format!("unknown installer `{other}`"),
                            )
                            .help = Some("write `installer \"pip\"` or `installer \"uv\"`".into());
                            None
                        }
                    };
                    if let Some(inst) = inst {
                        self.set_once(&mut s.installer, Spanned::new(inst, v.span), node, level);
                    }
                }
            }
            "cuda" => {
                self.allow_props(node, &["variant", "cudnn", "from", "distro"]);
                if let Some(c) = self.cuda(node) {
                    self.set_once(&mut s.cuda, Spanned::new(c, span), node, level);
                }
            }
            "user" => {
                self.allow_props(node, &["variant", "uid", "gid"]);
                if let Some(u) = self.user(node) {
                    self.set_once(&mut s.user, Spanned::new(u, span), node, level);
                }
            }
            "cmd" | "entrypoint" => {
                self.allow_props(node, &["variant"]);
                let words = self.strings(node, name);
                if words.is_empty() && !positional(node).is_empty() {
                    return;
                }
                if words.is_empty() {
                    self.err(
                        "kiln::wrong_arity",
                        span,
                        format!("`{name}` needs the program and its arguments, e.g. `{name} \"python\" \"train.py\"`"),
                    );
                    return;
                }
                // Exec form, as written: one string with spaces in it is one
                // program name ("python train.py" is no file), which only
                // fails when the container starts. A Dockerfile's shell form
                // habit; warn where it is made.
                if let [only] = words.as_slice()
                    && only.trim().contains(char::is_whitespace)
                {
                    let at = positional(node).first().map_or(span, |e| e.span());
                    let help = exec_form_help(name, only.trim());
                    self.diags.push(
                        Diagnostic::warning(
                            "kiln::exec_form",
                            at,
                            format!(
                                "`{name}` is exec form: \"{only}\" is one program name with spaces in it, not a program and its arguments"
                            ),
                        )
                        .with_help(help),
                    );
                } else if let Some((i, word)) = words
                    .iter()
                    .enumerate()
                    .find(|(i, w)| Some(*i) != shell_script_index(&words) && names_a_variable(w))
                {
                    // No shell runs exec form: `$PORT` reaches the program
                    // as those five characters.
                    let at = positional(node).get(i).map_or(span, |e| e.span());
                    let script = words
                        .iter()
                        .map(|w| {
                            if w.is_empty()
                                || w.contains(|c: char| {
                                    c.is_whitespace() || "'\"\\|&;<>()*?[#~`".contains(c)
                                })
                            {
                                format!("'{}'", w.replace('\'', "'\\''"))
                            } else {
                                w.clone()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                    self.diags.push(
                        Diagnostic::warning(
                            "kiln::exec_form",
                            at,
                            format!(
                                "`{name}` is exec form, which no shell runs: `{word}` reaches the program as written, not as the variable's value"
                            ),
                        )
                        .with_help(if shell_script_index(&words).is_some() {
                            format!("the shell reads the variables of its script only; the words after the script reach it as `$0`, `$1`, … as written: move `{word}` into the script")
                        } else {
                            format!(
                                "for the value, let a shell run it: `{name} \"sh\" \"-c\" {}` (a build argument is not in the image's environment: `env NAME=\"${{NAME}}\"` puts it there)",
                                kdl_string(&format!("exec {script}"))
                            )
                        }),
                    );
                }
                let v = Spanned::new(words, span);
                if name == "cmd" {
                    self.set_once(&mut s.cmd, v, node, level);
                } else {
                    self.set_once(&mut s.entrypoint, v, node, level);
                }
            }
            "apt" => {
                self.allow_props(node, &["variant", "stage"]);
                let packages = self.strings(node, "apt package");
                if packages.is_empty() && !positional(node).is_empty() {
                    return;
                }
                if packages.is_empty() {
                    self.err(
                        "kiln::wrong_arity",
                        span,
                        "`apt` needs at least one package name",
                    );
                    return;
                }
                for p in &packages {
                    if !valid_apt_package(p) && !has_arg_ref(p) {
                        let e = find_arg(node, p).unwrap_or(span);
                        self.err(
                            "kiln::invalid_value",
                            e,
                            format!("`{p}` is not a Debian package name"),
                        )
                        .help = Some("one package per value; versions as `name=1.2-3`, releases as `name/bookworm-backports`".into());
                    }
                }
                let stage = match self.string_prop(node, "stage") {
                    None => Stage::Runtime,
                    Some(v) => {
                        match v.value.as_str() {
                            "runtime" => Stage::Runtime,
                            "build" | "builder" => Stage::Build,
                            other => {
                                self.err(
                                "kiln::invalid_value",
                                v.span,
                                format!("unknown stage `{other}`"),
                            )
                            .help = Some("write `stage=\"build\"` (builder only) or leave it out (runtime)".into());
                                Stage::Runtime
                            }
                        }
                    }
                };
                s.apt.push(Spanned::new(Apt { packages, stage }, span));
            }
            "pip" => {
                self.allow_props(
                    node,
                    &["variant", "requirements", "index", "secret", "default"],
                );
                self.pip(s, node);
            }
            "env" => {
                self.allow_props_any(node);
                let args = positional(node);
                let mut pairs = Vec::new();
                if !args.is_empty() {
                    if args.len() != 2 {
                        self.err(
                            "kiln::wrong_arity",
                            span,
                            "`env` takes NAME=\"value\" properties (or one name and one value)",
                        )
                        .help = Some("write `env PYTHONUNBUFFERED=\"1\"`".into());
                        return;
                    }
                    if let (Some(k), Some(v)) = (
                        self.string(args[0], "variable name"),
                        self.string(args[1], "value"),
                    ) {
                        // The pair spans the key and the value, as the
                        // property form's entry does: a problem found in the
                        // value later (a build argument) points at it too.
                        pairs.push((k, v.value, Some(span_to(args[0].span(), args[1].span()))));
                    }
                }
                for e in node.entries() {
                    let Some(key) = e.name() else { continue };
                    if key.value() == "variant" {
                        continue;
                    }
                    if let Some(v) = self.string(e, "environment value") {
                        pairs.push((
                            Spanned::new(key.value().to_string(), e.span()),
                            v.value,
                            None,
                        ));
                    }
                }
                // (Entries in error were reported already.)
                if pairs.is_empty() && !sets_anything(node) {
                    self.err("kiln::wrong_arity", span, "`env` sets nothing")
                        .help = Some("write `env NAME=\"value\"`".into());
                }
                for (k, v, pair) in pairs {
                    if !valid_env_name(&k.value) {
                        self.err(
                            "kiln::invalid_name",
                            k.span,
                            format!("`{}` is not an environment variable name", k.value),
                        );
                    } else if let Some(d) = env_warning(&k.value, &v, k.span) {
                        self.diags.push(d);
                    }
                    s.env
                        .push(Spanned::new((k.value, v), pair.unwrap_or(k.span)));
                }
            }
            "label" => {
                self.allow_props_any(node);
                let args = positional(node);
                let mut pairs = Vec::new();
                if !args.is_empty() {
                    if args.len() != 2 {
                        self.err(
                            "kiln::wrong_arity",
                            span,
                            "`label` takes a key and a value: `label \"org.example.team\" \"ml\"`",
                        );
                        return;
                    }
                    if let (Some(k), Some(v)) = (
                        self.string(args[0], "label key"),
                        self.string(args[1], "label value"),
                    ) {
                        // The pair spans the key and the value, as the
                        // property form's entry does: a problem found in the
                        // value later (a build argument) points at it too.
                        pairs.push((k, v.value, Some(span_to(args[0].span(), args[1].span()))));
                    }
                }
                for e in node.entries() {
                    let Some(key) = e.name() else { continue };
                    if key.value() == "variant" {
                        continue;
                    }
                    if let Some(v) = self.string(e, "label value") {
                        pairs.push((
                            Spanned::new(key.value().to_string(), e.span()),
                            v.value,
                            None,
                        ));
                    }
                }
                // (Entries in error were reported already.)
                if pairs.is_empty() && !sets_anything(node) {
                    self.err("kiln::wrong_arity", span, "`label` sets nothing");
                }
                for (k, v, pair) in pairs {
                    if k.value.trim().is_empty() {
                        self.err(
                            "kiln::empty_value",
                            k.span,
                            "a label needs a key, not an empty string",
                        )
                        .help = Some("write `label \"org.example.team\" \"ml\"`".into());
                        continue;
                    }
                    s.label
                        .push(Spanned::new((k.value, v), pair.unwrap_or(k.span)));
                }
            }
            "healthcheck" => {
                if let Some(h) = self.healthcheck(node) {
                    self.set_once(&mut s.healthcheck, Spanned::new(h, span), node, level);
                }
            }
            "stopsignal" => {
                self.allow_props(node, &["variant"]);
                if let Some(v) = self.one_string(node, "signal") {
                    if let Some(sig) = stop_signal(&v.value) {
                        self.set_once(&mut s.stop_signal, Spanned::new(sig, span), node, level);
                    } else {
                        self.err(
                            "kiln::invalid_value",
                            v.span,
                            format!("`{}` is not a signal", v.value),
                        )
                        .help = Some(
                            "write its name, `SIGINT`, `SIGTERM`, `SIGQUIT`, or its number".into(),
                        );
                    }
                }
            }
            "expose" => {
                self.allow_props(node, &["variant"]);
                let args = positional(node);
                if args.is_empty() {
                    self.err(
                        "kiln::wrong_arity",
                        span,
                        "`expose` needs a port, e.g. `expose 8080`",
                    );
                }
                for e in args {
                    let port = match e.value() {
                        KdlValue::Integer(n) => Some(n.to_string()),
                        // `9090/UDP` is `9090/udp`, as Docker reads it.
                        KdlValue::String(s) => Some(s.to_ascii_lowercase()),
                        _ => None,
                    };
                    match port.filter(|p| valid_port(p)) {
                        Some(p) => s.expose.push(Spanned::new(p, e.span())),
                        None => {
                            self.err(
                                "kiln::invalid_value",
                                e.span(),
                                "not a port: write a number 1–65535, optionally as \"8080/tcp\" or \"8080/udp\"",
                            );
                        }
                    }
                }
            }
            "copy" => {
                self.allow_props(node, &["variant", "owner"]);
                let root_owned = match self.string_prop(node, "owner") {
                    None => false,
                    Some(o) if o.value == "root" => true,
                    Some(o) if o.value == "user" => false,
                    Some(o) => {
                        self.err(
                            "kiln::invalid_value",
                            o.span,
                            format!("unknown `owner=\"{}\"`", o.value),
                        )
                        .help = Some("write `owner=\"root\"` to keep the files root's (the recipe's user can read, not change them), or leave it out for the user's".into());
                        return;
                    }
                };
                let args = positional(node);
                if args.len() != 2 {
                    self.err(
                        "kiln::wrong_arity",
                        span,
                        "`copy` takes a source in the build context and a destination",
                    )
                    .help = Some("write `copy \"src\" \"/app/src\"`".into());
                    return;
                }
                let (Some(src), Some(dest)) = (
                    self.string(args[0], "copy source"),
                    self.string(args[1], "copy destination"),
                ) else {
                    return;
                };
                if dest.value.trim().is_empty() {
                    self.err(
                        "kiln::empty_value",
                        dest.span,
                        "`copy` needs a destination, not an empty string",
                    )
                    .help = Some(
                        "write a path in the image: `/app/src`, or `.` for the workdir".into(),
                    );
                    return;
                }
                // `~/x` and `$HOME/x` would land under the workdir, literally.
                let d = dest.value.as_str();
                let home = d == "~"
                    || d.starts_with("~/")
                    || ["$HOME", "${HOME}"]
                        .iter()
                        .any(|h| d == *h || d.starts_with(&format!("{h}/")));
                if home {
                    let rest = d
                        .trim_start_matches("${HOME}")
                        .trim_start_matches("$HOME")
                        .trim_start_matches('~');
                    self.err(
                        "kiln::invalid_path",
                        dest.span,
                        format!(
                            "copy destination `{d}`: kiln does not expand `$HOME` or `~` in paths"
                        ),
                    )
                    .help = Some(format!(
                        "write the directory itself: `/home/NAME{rest}` for `user \"NAME\"` (kiln makes its home there), `/root{rest}` for root"
                    ));
                    return;
                }
                if let Some(norm) = self.check_context_path(&src, "copy source") {
                    s.copy.push(Spanned::new(
                        Copy {
                            src: norm,
                            dest: dest.value,
                            root_owned,
                        },
                        span,
                    ));
                }
            }
            "run" => {
                self.allow_props(node, &["variant", "after", "secret"]);
                let Some(cmd) = self.one_string(node, "shell command") else {
                    return;
                };
                let after = self.after_prop(node);
                let secret = match self.string_prop(node, "secret") {
                    Some(v) => match self.secret_id(&v) {
                        Some(id) => Some(id),
                        None => return,
                    },
                    None => None,
                };
                s.run.push(Spanned::new(
                    Run {
                        command: cmd.value,
                        after,
                        secret,
                    },
                    span,
                ));
            }
            "verify" => {
                self.allow_props(node, &["variant", "after"]);
                let after = self.after_prop(node);
                if let Some(code) = self.one_string(node, "python snippet") {
                    s.verify.push(Spanned::new(
                        Verify {
                            code: code.value,
                            after,
                        },
                        span,
                    ));
                }
            }
            "kiln" | "variant" | "arg" => {}
            other => {
                let lower = other.to_ascii_lowercase();
                let help = match (nearest(other, NODE_NAMES.iter().copied()), other) {
                    (_, "from" | "FROM") => Some("the base image is `base \"IMAGE\"`".to_string()),
                    _ if lower != other && NODE_NAMES.contains(&lower.as_str()) => {
                        Some(format!("kiln's nodes are lowercase: write `{lower}`"))
                    }
                    // A Dockerfile's instructions, as people bring them over.
                    _ if lower == "add" => Some(
                        "a Dockerfile's ADD of context files is `copy \"SRC\" \"DEST\"`; kiln fetches no URLs and unpacks no archives into the image (a `run` step can)".to_string(),
                    ),
                    _ if lower == "maintainer" => Some(
                        "write `label \"org.opencontainers.image.authors\" \"NAME\"`".to_string(),
                    ),
                    _ if lower == "shell" => Some(
                        "`run` steps run with `/bin/sh -c`; to use another shell, call it: `run \"bash -c '…'\"`".to_string(),
                    ),
                    _ if lower == "volume" => Some(
                        "kiln does not set a Dockerfile's VOLUME in the image; mount volumes where the image runs (docker run -v, compose, or the Kubernetes pod spec)".to_string(),
                    ),
                    _ if lower == "onbuild" => Some(
                        "kiln sets no ONBUILD triggers: a recipe is the whole image; put what a derived build should do in its own recipe".to_string(),
                    ),
                    (_, "torch" | "pytorch" | "tensorflow" | "jax") => Some(format!(
                        "frameworks are declared as `framework \"{}\" \"VERSION\"`",
                        if other == "torch" { "pytorch" } else { other }
                    )),
                    (Some(n), _) => Some(format!("did you mean `{n}`?")),
                    (None, _) => None,
                };
                let d = self.err(
                    "kiln::unknown_node",
                    node.name().span(),
                    format!("unknown node `{other}`"),
                );
                d.label = "not a kiln node".into();
                d.help = help
                    .or_else(|| Some("see docs/recipe.md for the nodes a recipe may use".into()));
            }
        }
    }

    fn framework(&mut self, node: &KdlNode) -> Option<FrameworkReq> {
        let args = positional(node);
        if args.is_empty() || args.len() > 2 {
            self.err(
                "kiln::wrong_arity",
                head_span(node),
                "`framework` takes a name and a version",
            )
            .help = Some("write `framework \"pytorch\" \"2.4.1\"`".into());
            return None;
        }
        let name = self.string(args[0], "framework name")?;
        let canonical = match name.value.to_ascii_lowercase().as_str() {
            "pytorch" | "torch" => "pytorch",
            "tensorflow" | "tf" => "tensorflow",
            "jax" => "jax",
            other => {
                let help = match nearest(other, FRAMEWORKS.iter().copied()) {
                    Some(n) => format!("did you mean `{n}`?"),
                    None => {
                        "kiln knows pytorch, tensorflow and jax; for anything else use `pip`".into()
                    }
                };
                self.err(
                    "kiln::unknown_framework",
                    name.span,
                    format!("unknown framework `{}`", name.value),
                )
                .help = Some(help);
                return None;
            }
        };
        let version = match args.get(1) {
            Some(e) => {
                let v = self.string(e, "framework version")?;
                if !has_arg_ref(&v.value) && !is_version(&v.value, 1) {
                    self.err(
                        "kiln::invalid_version",
                        v.span,
                        format!("`{}` is not a version", v.value),
                    )
                    .help = Some("write the release, e.g. \"2.4.1\"".into());
                }
                Some(v.value)
            }
            None => None,
        };
        Some(FrameworkReq {
            name: canonical.to_string(),
            version,
        })
    }

    fn cuda(&mut self, node: &KdlNode) -> Option<CudaReq> {
        let version = self.one_string(node, "CUDA version")?;
        if !has_arg_ref(&version.value) && !is_version(&version.value, 2) {
            self.err(
                "kiln::invalid_version",
                version.span,
                format!("`{}` is not a CUDA version", version.value),
            )
            .help = Some("write major.minor, e.g. `cuda \"12.4\"`".into());
        } else if !has_arg_ref(&version.value) && version.value.split('.').count() > 2 {
            let mm: Vec<&str> = version.value.split('.').take(2).collect();
            let mm = mm.join(".");
            self.err(
                "kiln::invalid_version",
                version.span,
                format!(
                    "`{}` is a CUDA patch release; kiln matches CUDA by major.minor",
                    version.value
                ),
            )
            .help = Some(format!(
                "write `cuda \"{mm}\"`: wheels are built per CUDA minor release, and kiln picks the nvidia/cuda {mm} image"
            ));
        }
        let cudnn = self.version_prop(node, "cudnn");
        let from = match self.string_prop(node, "from") {
            None => CudaFrom::Wheels,
            Some(v) => match v.value.as_str() {
                "wheels" => CudaFrom::Wheels,
                "base" => CudaFrom::Base,
                other => {
                    self.err(
                        "kiln::invalid_value",
                        v.span,
                        format!("unknown `from=\"{other}\"`"),
                    )
                    .help = Some("write `from=\"base\"` for an nvidia/cuda base image, or leave it out to use the framework's CUDA wheels".into());
                    CudaFrom::Wheels
                }
            },
        };
        let distro = self.string_prop(node, "distro").map(|s| s.value);
        Some(CudaReq {
            version: version.value,
            cudnn_span: cudnn.as_ref().map(|c| c.span),
            cudnn: cudnn.map(|c| c.value),
            from,
            distro,
        })
    }

    /// `healthcheck "curl" "-f" "http://localhost:8000/health"` (exec form),
    /// `healthcheck "curl -f http://localhost:8000/health || exit 1"` (one
    /// string: a shell runs it), `healthcheck "NONE"` (none, not even the
    /// base's); `interval=`, `timeout=`, `start-period=` as durations
    /// (`30s`, `1m30s`, `500ms`), `retries=`.
    fn healthcheck(&mut self, node: &KdlNode) -> Option<Healthcheck> {
        self.allow_props(
            node,
            &["variant", "interval", "timeout", "start-period", "retries"],
        );
        let words = self.strings(node, "health check argument");
        if words.is_empty() {
            if positional(node).is_empty() {
                self.err(
                    "kiln::wrong_arity",
                    head_span(node),
                    "`healthcheck` needs a command, e.g. `healthcheck \"curl\" \"-f\" \"http://localhost:8000/health\"`",
                );
            }
            return None;
        }
        let test = match words.as_slice() {
            [none] if none.eq_ignore_ascii_case("none") => vec!["NONE".to_string()],
            [none, ..] if none.eq_ignore_ascii_case("none") => {
                self.err(
                    "kiln::wrong_arity",
                    head_span(node),
                    "`healthcheck \"NONE\"` turns the check off and takes no command",
                );
                return None;
            }
            // Docker's own forms, as a Dockerfile's HEALTHCHECK writes them.
            [form, rest @ ..] if form == "CMD" || form == "CMD-SHELL" => {
                if rest.is_empty() || (form == "CMD-SHELL" && rest.len() != 1) {
                    let what = if form == "CMD" {
                        "the program and its arguments"
                    } else {
                        "one shell command"
                    };
                    self.err(
                        "kiln::wrong_arity",
                        head_span(node),
                        format!("`healthcheck \"{form}\"` needs {what}"),
                    );
                    return None;
                }
                words.clone()
            }
            [one] if one.trim().contains(char::is_whitespace) => {
                // `CMD curl -f …`, as a Dockerfile's line reads: the shell
                // gets the command.
                let command = one.trim();
                let command = command
                    .strip_prefix("CMD ")
                    .map(str::trim_start)
                    .unwrap_or(command);
                vec!["CMD-SHELL".to_string(), command.to_string()]
            }
            _ => std::iter::once("CMD".to_string()).chain(words).collect(),
        };
        let mut duration = |key: &str| -> Option<u64> {
            let v = self.string_prop(node, key)?;
            // Docker reads these as Go's `time.Duration` (at most about
            // 292 years) and refuses less than a millisecond.
            match parse_duration(&v.value) {
                Some(ns) if (1_000_000..=i64::MAX as u64).contains(&ns) => Some(ns),
                Some(_) => {
                    self.err(
                        "kiln::invalid_value",
                        v.span,
                        format!("`{}` is out of range: a health check's durations are 1ms or more, and under 292 years", v.value),
                    )
                    .help = Some(format!("write e.g. `{key}=\"30s\"`"));
                    None
                }
                None => {
                    self.err(
                        "kiln::invalid_value",
                        v.span,
                        format!("`{}` is not a duration", v.value),
                    )
                    .help = Some(format!(
                        "write e.g. `{key}=\"30s\"`, `\"1m30s\"` or `\"500ms\"`"
                    ));
                    None
                }
            }
        };
        let interval = duration("interval");
        let timeout = duration("timeout");
        let start_period = duration("start-period");
        let retries = node
            .entries()
            .iter()
            .find(|e| e.name().is_some_and(|n| n.value() == "retries"))
            .and_then(|e| match e.value() {
                KdlValue::Integer(n) if (0..=i128::from(u32::MAX)).contains(n) => {
                    u32::try_from(*n).ok()
                }
                _ => {
                    self.err(
                        "kiln::wrong_type",
                        value_span(e),
                        "`retries` is a whole number, e.g. `retries=3`",
                    );
                    None
                }
            });
        if test == ["NONE"]
            && (interval.or(timeout).or(start_period).is_some() || retries.is_some())
        {
            self.err(
                "kiln::conflicting_properties",
                head_span(node),
                "`healthcheck \"NONE\"` turns the check off: it takes no timings",
            );
        }
        Some(Healthcheck {
            test,
            interval,
            timeout,
            start_period,
            retries,
        })
    }

    fn user(&mut self, node: &KdlNode) -> Option<User> {
        let name = self.one_string(node, "user name")?;
        if has_arg_ref(&name.value) {
            self.err(
                "kiln::invalid_value",
                name.span,
                format!("`{}`: `user` takes no build arguments", name.value),
            )
            .help = Some(
                "write the name; the user is created when the image is built, and its uid= is what files are owned by".into(),
            );
        } else if !valid_user_name(&name.value) {
            self.err(
                "kiln::invalid_name",
                name.span,
                format!("`{}` is not a valid user name", name.value),
            )
            .help =
                Some("use lower-case letters, digits, `-` and `_`, starting with a letter".into());
        }
        if name.value == "root" {
            self.err(
                "kiln::invalid_value",
                name.span,
                "`user \"root\"` is the default; leave `user` out to run as root",
            );
        }
        let uid = self.u32_prop(node, "uid").unwrap_or(1000);
        let gid = self.u32_prop(node, "gid").unwrap_or(uid);
        if uid == 0 {
            self.err(
                "kiln::invalid_value",
                head_span(node),
                "uid 0 is root; pick a non-root uid such as 1000",
            );
        }
        Some(User {
            name: name.value,
            uid,
            gid,
        })
    }

    fn pip(&mut self, s: &mut Settings, node: &KdlNode) {
        let span = head_span(node);
        let packages = self.strings(node, "pip requirement");
        let requirements = self.string_prop(node, "requirements");
        let index = self.string_prop(node, "index");
        let secret = self.string_prop(node, "secret");
        let default = self.bool_prop(node, "default");
        if default.is_some() && index.is_none() {
            let at = node
                .entries()
                .iter()
                .find(|e| e.name().is_some_and(|n| n.value() == "default"))
                .map_or(span, |e| e.span());
            self.err(
                "kiln::conflicting_properties",
                at,
                "`default=` on `pip` makes an `index=` replace PyPI, and this `pip` names none",
            )
            .help = Some("write `pip index=\"https://…/simple\" default=#true`".into());
        }
        let kinds = usize::from(!packages.is_empty())
            + usize::from(requirements.is_some())
            + usize::from(index.is_some());
        // (With more than one kind, that is the error said below.)
        if let Some(sec) = &secret
            && index.is_none()
            && kinds <= 1
        {
            self.err(
                "kiln::conflicting_properties",
                sec.span,
                if kinds == 0 {
                    "`secret=` on `pip` gives credentials for an `index=`, and this `pip` names none"
                } else {
                    "`secret=` on `pip` gives credentials for an `index=`"
                },
            )
            .help = Some("write `pip index=\"https://…/simple\" secret=\"pip-index\"`".into());
            if kinds == 0 {
                return;
            }
        }
        if kinds == 0 {
            // (Empty strings were reported as such.)
            if positional(node).is_empty() {
                self.err("kiln::wrong_arity", span, "`pip` installs nothing")
                    .help = Some("write `pip \"numpy==1.26.4\"`, `pip requirements=\"requirements.txt\"` or `pip index=\"URL\"`".into());
            }
            return;
        }
        if kinds > 1 {
            self.err(
                "kiln::conflicting_properties",
                span,
                "one `pip` node is either packages, `requirements=` or `index=`",
            )
            .help = Some("split it into separate `pip` nodes".into());
            return;
        }
        if !packages.is_empty() {
            for p in &packages {
                // `pip "requirements.txt"`: pip would look for a project of
                // that name on the index and fail the build.
                let lower = p.to_ascii_lowercase();
                if (lower.ends_with(".txt") || lower.ends_with(".in"))
                    && !p.contains(|c: char| c.is_whitespace() || "=<>!~;[@".contains(c))
                {
                    let at = find_arg(node, p).unwrap_or(span);
                    self.err(
                        "kiln::invalid_requirement",
                        at,
                        format!("`{p}` is a file name, not a package: pip would look for a project called `{p}` on the index"),
                    )
                    .help = Some(format!("install the file's requirements with `pip requirements=\"{p}\"`"));
                    continue;
                }
                if let Some(shown) = url_credentials(p) {
                    let at = find_arg(node, p).unwrap_or(span);
                    self.err(
                        "kiln::secret_in_recipe",
                        at,
                        format!("`{shown}` has credentials in its URL: they would end up in the image's build graph and its install step's command line"),
                    )
                    .help = Some("leave them out of the URL and put them in a netrc file given as a build secret: `pip index=\"https://HOST/…\" secret=\"ID\"` mounts it for the install steps (pip reads it for any URL on that host)".into());
                    continue;
                }
                if let Err(why) = check_requirement(p) {
                    let at = find_arg(node, p).unwrap_or(span);
                    self.err(
                        "kiln::invalid_requirement",
                        at,
                        format!("`{p}` is not a pip requirement: {why}"),
                    )
                    .help = Some(if why.contains("URL without a project name") {
                        "pip installs `NAME @ URL` from the URL; the name is the project's (its `pyproject.toml`/`setup.py` name)".into()
                    } else {
                        "write one requirement per value, e.g. \"numpy==1.26.4\"; use `requirements=` for files".into()
                    });
                }
            }
            let packages = packages.iter().map(|p| normalize_requirement(p)).collect();
            s.pip.push(Spanned::new(Pip::Packages(packages), span));
        } else if let Some(r) = requirements {
            if let Some(norm) = self.check_context_path(&r, "requirements file") {
                s.pip.push(Spanned::new(Pip::Requirements(norm), span));
            }
        } else if let Some(i) = index {
            // A URL from a build argument is checked once it has its value.
            let url_like = (i.value.to_ascii_lowercase().starts_with("https://")
                || i.value.to_ascii_lowercase().starts_with("http://"))
                && !i.value.contains(char::is_whitespace);
            if !(url_like || has_arg_ref(&i.value)) {
                self.err(
                    "kiln::invalid_value",
                    i.span,
                    format!("`{}` is not an index URL", i.value),
                )
                .help = Some(
                    "write the index's full URL, e.g. `https://pypi.example.org/simple`".into(),
                );
            }
            if i.value.contains('@') {
                self.err(
                    "kiln::secret_in_recipe",
                    i.span,
                    "the index URL carries credentials; they would end up in the image's build graph",
                )
                .help = Some("put the credentials in a build secret and write `secret=\"ID\"`".into());
            }
            s.pip.push(Spanned::new(
                Pip::Index {
                    url: i.value,
                    secret: secret.and_then(|s| self.secret_id(&s)),
                    default: default.unwrap_or(false),
                },
                span,
            ));
        }
    }

    // ---- helpers -------------------------------------------------------

    fn set_once<T>(
        &mut self,
        slot: &mut Option<Spanned<T>>,
        value: Spanned<T>,
        node: &KdlNode,
        level: Level<'_>,
    ) {
        if let Some(prev) = slot {
            let (line, _) = self.diags.source.line_col(prev.span.offset());
            let name = node.name().value();
            let help = match level {
                Level::Top => format!(
                    "it is already set on line {line}; keep one, or set it per variant inside `variant \"NAME\" {{ … }}`"
                ),
                Level::Variant(v) => {
                    format!("variant `{v}` already sets it on line {line}; keep one")
                }
            };
            self.err(
                "kiln::duplicate_node",
                head_span(node),
                format!("`{name}` is given twice"),
            )
            .help = Some(help);
        } else {
            *slot = Some(value);
        }
    }

    fn no_children(&mut self, node: &KdlNode) {
        if let Some(c) = node.children() {
            self.err(
                "kiln::unexpected_block",
                c.span(),
                format!("`{}` takes no block", node.name().value()),
            );
        }
    }

    fn allow_props(&mut self, node: &KdlNode, allowed: &[&str]) {
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for e in node.entries() {
            let Some(key) = e.name() else { continue };
            let k = key.value();
            if !seen.insert(k) {
                self.err(
                    "kiln::duplicate_property",
                    e.span(),
                    format!("property `{k}` is given twice"),
                );
            }
            if !allowed.contains(&k) {
                let node_name = node.name().value();
                let help = match nearest(k, allowed.iter().copied()) {
                    Some(n) => format!("did you mean `{n}=`?"),
                    None if allowed.is_empty() => format!("`{node_name}` takes no properties"),
                    None if allowed.iter().all(|a| *a == "variant") => {
                        format!("`{node_name}` takes only `variant=`")
                    }
                    None => format!(
                        "`{node_name}` takes {}",
                        allowed
                            .iter()
                            .map(|a| format!("`{a}=`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                self.err(
                    "kiln::unknown_property",
                    e.span(),
                    format!("`{node_name}` has no property `{k}`"),
                )
                .help = Some(help);
            }
        }
    }

    /// Nodes whose properties are free-form (env, label): only duplicates are checked.
    fn allow_props_any(&mut self, node: &KdlNode) {
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for e in node.entries() {
            let Some(key) = e.name() else { continue };
            if !seen.insert(key.value()) {
                self.err(
                    "kiln::duplicate_property",
                    e.span(),
                    format!("`{}` is given twice", key.value()),
                );
            }
        }
    }

    fn one_string(&mut self, node: &KdlNode, what: &str) -> Option<Spanned<String>> {
        let args = positional(node);
        match args.as_slice() {
            [e] => {
                let v = self.string(e, what)?;
                if v.value.trim().is_empty() {
                    self.err(
                        "kiln::empty_value",
                        v.span,
                        format!(
                            "`{}` needs {}, not an empty string",
                            node.name().value(),
                            with_article(what)
                        ),
                    );
                    return None;
                }
                Some(v)
            }
            [] => {
                self.err(
                    "kiln::wrong_arity",
                    head_span(node),
                    format!("`{}` needs a value: the {what}", node.name().value()),
                );
                None
            }
            [_, extra, ..] => {
                self.err(
                    "kiln::wrong_arity",
                    extra.span(),
                    format!("`{}` takes one value, the {what}", node.name().value()),
                );
                None
            }
        }
    }

    /// The string values of `node`; an empty one is an error where `what`
    /// cannot be empty (a package), and only as the first word of a
    /// command (`cmd "python" ""` passes an empty argument).
    fn strings(&mut self, node: &KdlNode, what: &str) -> Vec<String> {
        let command = matches!(node.name().value(), "cmd" | "entrypoint");
        let mut out = Vec::new();
        for (i, e) in positional(node).into_iter().enumerate() {
            let Some(v) = self.string(e, what) else {
                continue;
            };
            if v.value.trim().is_empty() && (!command || i == 0) {
                let message = if command {
                    format!(
                        "`{}` needs a program to run, not an empty string",
                        node.name().value()
                    )
                } else {
                    format!("an empty string is not {}", with_article(what))
                };
                self.err("kiln::empty_value", v.span, message);
                continue;
            }
            out.push(v.value);
        }
        out
    }

    fn string(&mut self, e: &KdlEntry, what: &str) -> Option<Spanned<String>> {
        match e.value() {
            // No argument, path, variable or label can hold a NUL: the
            // engine would cut it there, or fail to run the step.
            KdlValue::String(s) if s.contains('\0') => {
                self.err(
                    "kiln::invalid_character",
                    value_span(e),
                    format!("the {what} contains a NUL character (`\\u{{0}}`)"),
                )
                .help = Some("remove it: no command, path, variable or label can hold one".into());
                None
            }
            KdlValue::String(s) => Some(Spanned::new(s.clone(), value_span(e))),
            KdlValue::Float(_) | KdlValue::Integer(_) => {
                let repr = e
                    .format()
                    .map(|f| f.value_repr.trim().to_string())
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| e.value().to_string());
                let (msg, help) = if what.contains("version") {
                    let as_number = e.value().to_string();
                    let note = if as_number != repr {
                        format!(" ({repr} as a number is {as_number})")
                    } else {
                        String::new()
                    };
                    (
                        format!("the {what} is written as a number{note}"),
                        format!("write versions as strings: \"{repr}\""),
                    )
                } else {
                    (
                        format!("expected a string for the {what}, found the number {repr}"),
                        format!("write \"{repr}\""),
                    )
                };
                let code = if what.contains("version") {
                    "kiln::version_not_string"
                } else {
                    "kiln::wrong_type"
                };
                self.err(code, value_span(e), msg).help = Some(help);
                None
            }
            KdlValue::Bool(b) => {
                self.err(
                    "kiln::wrong_type",
                    value_span(e),
                    format!("expected a string for the {what}, found #{b}"),
                );
                None
            }
            KdlValue::Null => {
                self.err(
                    "kiln::wrong_type",
                    value_span(e),
                    format!("expected a string for the {what}, found #null"),
                );
                None
            }
        }
    }

    fn prop<'n>(&self, node: &'n KdlNode, key: &str) -> Option<&'n KdlEntry> {
        node.entries()
            .iter()
            .find(|e| e.name().is_some_and(|n| n.value() == key))
    }

    fn string_prop(&mut self, node: &KdlNode, key: &str) -> Option<Spanned<String>> {
        let e = self.prop(node, key)?;
        self.string(e, key)
    }

    /// `after="deps"` (the default) or `after="copy"`, on `run` and `verify`.
    fn after_prop(&mut self, node: &KdlNode) -> RunAfter {
        match self.string_prop(node, "after") {
            None => RunAfter::Deps,
            Some(v) => match v.value.as_str() {
                "deps" => RunAfter::Deps,
                "copy" => RunAfter::Copy,
                other => {
                    self.err(
                        "kiln::invalid_value",
                        v.span,
                        format!("unknown `after=\"{other}\"`"),
                    )
                    .help = Some(
                        "write `after=\"copy\"` to run after the app files are copied, or leave it out"
                            .into(),
                    );
                    RunAfter::Deps
                }
            },
        }
    }

    fn version_prop(&mut self, node: &KdlNode, key: &str) -> Option<Spanned<String>> {
        let e = self.prop(node, key)?;
        let what = format!("{key} version");
        let v = self.string(e, &what)?;
        if !is_version(&v.value, 1) {
            self.err(
                "kiln::invalid_version",
                v.span,
                format!("`{}` is not a version", v.value),
            );
        }
        Some(v)
    }

    /// A build secret's id, as `--secret id=ID` names it: letters, digits,
    /// `.`, `_`, `-` (it becomes a path under /run/secrets, in shell code).
    fn secret_id(&mut self, v: &Spanned<String>) -> Option<String> {
        let id = v.value.trim();
        let ok = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && !id.starts_with('.');
        if ok {
            return Some(id.to_string());
        }
        self.err(
            "kiln::invalid_value",
            v.span,
            format!("`{}` is not a build secret id", v.value),
        )
        .help = Some(
            "a secret id is letters, digits, `.`, `_` and `-`, as in `--secret id=hf_token,src=FILE`"
                .into(),
        );
        None
    }

    fn bool_prop(&mut self, node: &KdlNode, key: &str) -> Option<bool> {
        let e = self.prop(node, key)?;
        match e.value() {
            KdlValue::Bool(b) => Some(*b),
            KdlValue::String(s) if s == "true" || s == "false" => {
                self.err(
                    "kiln::wrong_type",
                    value_span(e),
                    format!("`{key}` is a boolean, not a string"),
                )
                .help = Some(format!("write `{key}=#{s}`"));
                None
            }
            _ => {
                self.err(
                    "kiln::wrong_type",
                    value_span(e),
                    format!("`{key}` is a boolean"),
                )
                .help = Some(format!("write `{key}=#true` or `{key}=#false`"));
                None
            }
        }
    }

    /// A user or group id: 0 to 4294967294 (all ones, `(uid_t)-1`, means
    /// "no id" to the kernel, and `useradd`/`groupadd` refuse it).
    fn u32_prop(&mut self, node: &KdlNode, key: &str) -> Option<u32> {
        const MAX_ID: u32 = u32::MAX - 1;
        let e = self.prop(node, key)?;
        match e.value() {
            KdlValue::Integer(n) if (0..=i128::from(MAX_ID)).contains(n) => u32::try_from(*n).ok(),
            KdlValue::String(s) if s.parse::<u32>().is_ok() => {
                self.err(
                    "kiln::wrong_type",
                    value_span(e),
                    format!("`{key}` is a number, not a string"),
                )
                .help = Some(format!("write `{key}={s}`"));
                None
            }
            _ => {
                self.err(
                    "kiln::wrong_type",
                    value_span(e),
                    format!("`{key}` must be a whole number from 0 to {MAX_ID}"),
                );
                None
            }
        }
    }

    fn check_image_ref(&mut self, value: &Spanned<String>) {
        // With a build argument in it, it is checked once substituted.
        if has_arg_ref(&value.value) {
            return;
        }
        if let Err(why) = crate::image_ref::ImageRef::parse(&value.value) {
            self.err(
                "kiln::invalid_image",
                value.span,
                format!("`{}` is not an image reference: {why}", value.value),
            )
            .help = Some("write e.g. \"python:3.11-slim\" or \"nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04\"".into());
        }
    }

    /// A path inside the build context, normalised; an error when it leaves it.
    fn check_context_path(&mut self, value: &Spanned<String>, what: &str) -> Option<String> {
        if value.value.trim().is_empty() {
            self.err(
                "kiln::empty_value",
                value.span,
                format!("the {what} is an empty string"),
            )
            .help =
                Some("write a path in the build context, e.g. `requirements.txt` or `src`".into());
            return None;
        }
        if let Some((scheme, _)) = value.value.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        {
            self.err(
                "kiln::outside_context",
                value.span,
                format!("the {what} `{}` is a URL; kiln reads it from the build context only", value.value),
            )
            .help = Some("download it in a step (`run \"curl -fsSLo /models/model.bin URL\"`), or put the file in the context".into());
            return None;
        }
        match normalize_context_path(&value.value) {
            Ok(p) => Some(p),
            Err(why) => {
                self.err(
                    "kiln::outside_context",
                    value.span,
                    format!("the {what} `{}` {why}", value.value),
                )
                .help = Some("paths are relative to the build context (the `.` of `docker buildx build .`); move the file into it".into());
                None
            }
        }
    }
}

/// Normalise a context-relative path: `./src/../app` → `app`; `.` → `.`.
pub fn normalize_context_path(p: &str) -> Result<String, &'static str> {
    if p.is_empty() {
        return Err("is empty");
    }
    if p.starts_with('/') {
        return Err("is an absolute path, outside the build context");
    }
    if p.contains('\0') {
        return Err("contains a NUL byte");
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("leaves the build context (`..`)");
                }
            }
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        Ok(".".to_string())
    } else {
        Ok(parts.join("/"))
    }
}

fn positional(node: &KdlNode) -> Vec<&KdlEntry> {
    node.entries()
        .iter()
        .filter(|e| e.name().is_none())
        .collect()
}

/// The span of a value, without the leading whitespace kdl keeps in entry spans.
fn value_span(e: &KdlEntry) -> SourceSpan {
    // kdl's entry spans start at the entry itself, not at the whitespace
    // before it (tests/diagnostics pins the columns).
    e.span()
}

/// The first line of a node: its name and entries, not its block.
pub fn head_span(node: &KdlNode) -> SourceSpan {
    let start = node.name().span().offset();
    let end = node
        .entries()
        .iter()
        .map(|e| e.span().offset() + e.span().len())
        .max()
        .unwrap_or(start + node.name().span().len())
        .max(start + node.name().span().len());
    SourceSpan::new(start.into(), end - start)
}

fn find_arg(node: &KdlNode, value: &str) -> Option<SourceSpan> {
    positional(node)
        .into_iter()
        .find(|e| e.value().as_string() == Some(value))
        .map(value_span)
}

/// `3`, `3.11`, `2.4.1`, `12.4`, with at least `min_parts` numeric parts.
/// Whether a node has entries besides `variant=` (an `env` or `label`
/// with none sets nothing).
fn sets_anything(node: &KdlNode) -> bool {
    node.entries()
        .iter()
        .any(|e| e.name().is_none_or(|n| n.value() != "variant"))
}

/// Dotted numbers, `min_parts` to 4 of them, written canonically: no
/// leading zeros (`3.011` is not how any image tag or index spells 3.11).
pub fn is_version(v: &str, min_parts: usize) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() >= min_parts
        && parts.len() <= 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 6
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
        })
}

fn valid_variant_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn valid_arg_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with(|c: char| c.is_ascii_digit())
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_env_name(n: &str) -> bool {
    valid_arg_name(n)
}

fn valid_user_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 32
        && n.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

pub fn valid_apt_package(p: &str) -> bool {
    // `name`, `name=version`, or `name/release` (a suite or codename:
    // `python3/bookworm-backports`), as apt-get takes them.
    let (name, release) = match p.split_once('/') {
        Some((n, r)) => (n, Some(r)),
        None => (p.split('=').next().unwrap_or(""), None),
    };
    if let Some(r) = release
        && (r.is_empty()
            || !r
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.~_".contains(c)))
    {
        return false;
    }
    name.len() >= 2
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.:".contains(c))
        && !p.contains(char::is_whitespace)
}

fn valid_port(p: &str) -> bool {
    let (num, proto) = match p.split_once('/') {
        Some((n, pr)) => (n, Some(pr)),
        None => (p, None),
    };
    matches!(proto, None | Some("tcp") | Some("udp") | Some("sctp"))
        && num.parse::<u16>().is_ok_and(|n| n > 0)
}

/// A requirement whose URL carries credentials (`mylib @
/// https://user:token@host/…`, `https://TOKEN@github.com/…`), written with
/// the secret part masked (build logs are read); `None` without any (an SSH
/// user such as `git@github.com` is no secret).
pub fn url_credentials(r: &str) -> Option<String> {
    let (scheme, rest) = r.split_once("://")?;
    let scheme = scheme.rsplit(['@', ' ']).next().unwrap_or(scheme).trim();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let (userinfo, _) = authority.rsplit_once('@')?;
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:…"),
        None if scheme.ends_with("http") || scheme.ends_with("https") => "…".to_string(),
        None => return None,
    };
    Some(r.replacen(&format!("://{userinfo}@"), &format!("://{masked}@"), 1))
}

/// A requirement as kiln compares it, meaning the same to pip: without
/// surrounding whitespace, and with PEP 508's parenthesized version clauses
/// (`numpy (==1.26.4)`, `scipy[dev] (>=1.13)`) written without the
/// parentheses.
pub fn normalize_requirement(r: &str) -> String {
    let r = r.trim();
    if r.contains("://") || r.contains('@') {
        return r.to_string();
    }
    let (spec, marker) = match r.split_once(';') {
        Some((a, b)) => (a.trim_end(), Some(b.trim())),
        None => (r, None),
    };
    let name_end = spec
        .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .unwrap_or(spec.len());
    let mut head_end = name_end;
    let rest = &spec[name_end..];
    if rest.trim_start().starts_with('[')
        && let Some(close) = rest.find(']')
    {
        head_end = name_end + close + 1;
    }
    let (head, clauses) = spec.split_at(head_end);
    let clauses = clauses.trim();
    let spec = match clauses.strip_prefix('(').and_then(|c| c.strip_suffix(')')) {
        Some(inner) => format!("{}{}", head.trim_end(), inner.trim()),
        None => spec.to_string(),
    };
    match marker {
        Some(m) => format!("{spec}; {m}"),
        None => spec,
    }
}

/// A light check of a PEP 508 requirement: a project name, then extras,
/// version specifiers, a URL or markers. pip has the last word at build time;
/// this catches what is clearly not a requirement (shell syntax, flags, spaces
/// between two names).
pub fn check_requirement(r: &str) -> Result<(), &'static str> {
    // `${NAME}` is a build argument, substituted before pip sees it.
    let substituted = without_arg_refs(r.trim());
    let r = substituted.as_str();
    if r.is_empty() {
        return Err("it is empty");
    }
    if r.starts_with('-') {
        return Err("pip options are not requirements");
    }
    if r.contains(['\n', '`', '$']) {
        return Err("it contains shell syntax");
    }
    // `; marker` (PEP 508, with or without the space): a marker starts
    // with a word (its variables are checked below), a quote or `(`.
    if let Some((_, marker)) = r.split_once(';')
        && !marker
            .trim_start()
            .starts_with(|c: char| c.is_ascii_alphanumeric() || "_('\"".contains(c))
    {
        return Err("it contains shell syntax");
    }
    // A bare URL (`git+https://…`, `https://…/x.whl`): PEP 508 wants the
    // project's name first.
    let scheme = r.split("://").next().unwrap_or_default();
    if r.contains("://")
        && !scheme.contains(['@', ' ', '='])
        && (scheme.starts_with("git+")
            || scheme.starts_with("hg+")
            || scheme.starts_with("svn+")
            || scheme.starts_with("bzr+")
            || ["http", "https", "file"].contains(&scheme))
    {
        return Err(
            "it is a URL without a project name: write `NAME @ URL` (`mylib @ git+https://github.com/org/mylib.git@v1.2`)",
        );
    }
    let head = r.split([';', '@']).next().unwrap_or_default().trim();
    let head = head.split('[').next().unwrap_or_default();
    let archive = [".whl", ".tar.gz", ".tgz", ".tar.bz2", ".zip"]
        .iter()
        .any(|x| head.ends_with(x));
    if !r.contains("://") && (head == "." || head.starts_with('.') || head.contains('/') || archive)
    {
        return Err(
            "it is a path; list local projects and archives in a requirements file (`pip requirements=\"requirements.txt\"`), which kiln installs from the build context",
        );
    }
    let name_end = r
        .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .unwrap_or(r.len());
    if name_end == 0 {
        return Err("it does not start with a project name");
    }
    check_requirement_rest(r[name_end..].trim_start())
}

/// What follows a requirement's name (PEP 508): `[extras]`, version
/// clauses (`>=1.2, <2`, or in parentheses), `; marker`, or `@ url`.
fn check_requirement_rest(rest: &str) -> Result<(), &'static str> {
    let mut rest = rest;
    if let Some(r) = rest.strip_prefix('[') {
        let Some(end) = r.find(']') else {
            return Err("its `[extras]` are not closed");
        };
        let ok = r[..end].split(',').all(|e| {
            let e = e.trim();
            !e.is_empty()
                && e.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
        if !ok {
            return Err("`[extras]` are names separated by commas");
        }
        rest = r[end + 1..].trim_start();
    }
    if let Some(url) = rest.strip_prefix('@') {
        return if url.trim().is_empty() {
            Err("`@` needs a URL after it")
        } else {
            Ok(())
        };
    }
    let (spec, marker) = match rest.split_once(';') {
        Some((a, b)) => (a.trim(), Some(b.trim())),
        None => (rest.trim(), None),
    };
    let spec = match spec.strip_prefix('(') {
        Some(inner) => match inner.strip_suffix(')') {
            Some(inner) => inner.trim(),
            None => return Err("its `(` is not closed"),
        },
        None => spec,
    };
    if !spec.is_empty() {
        for clause in spec.split(',') {
            let clause = clause.trim();
            let op_len = clause
                .find(|c: char| !"=<>!~".contains(c))
                .unwrap_or(clause.len());
            let (op, version) = (&clause[..op_len], clause[op_len..].trim());
            if op.is_empty() {
                return Err("write one requirement per value");
            }
            if !["==", "===", "!=", "<=", ">=", "~=", "<", ">"].contains(&op) {
                return Err(if op == "=" {
                    "its version operator is not one of ==, !=, <=, >=, ~=, <, >, ===; `=` alone is not pip's"
                } else {
                    "its version operator is not one of ==, !=, <=, >=, ~=, <, >, ==="
                });
            }
            if version.is_empty() {
                return Err("a version specifier needs a version after its operator");
            }
            if !version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".*+!-_".contains(c))
            {
                return Err("write one requirement per value");
            }
            // `===` compares strings; the rest take PEP 440 versions (`.*`
            // only after == and !=).
            let wildcard = matches!(op, "==" | "!=");
            if op != "===" && !is_pep440(version, wildcard) {
                return Err(
                    "its version is not a PEP 440 version (e.g. 1.26.4, 2.0rc1, 1.0.post1)",
                );
            }
        }
    }
    match marker {
        Some(m) => check_marker(m),
        None => Ok(()),
    }
}

/// A PEP 440 version as pip accepts it (case-insensitive, with its
/// alternative spellings): `[v][N!]N(.N)*[{a|b|rc|alpha|beta|c|pre|preview}[N]]
/// [.post[N]|-N][.dev[N]][+local]`, and a trailing `.*` where `wildcard`.
pub fn is_pep440(v: &str, wildcard: bool) -> bool {
    let v = v.trim().to_ascii_lowercase();
    let mut s = v.strip_prefix('v').unwrap_or(&v);
    if wildcard && let Some(prefix) = s.strip_suffix(".*") {
        // A prefix match takes a release (and an epoch) only.
        let release = prefix.split_once('!').map_or(prefix, |(e, r)| {
            if e.chars().all(|c| c.is_ascii_digit()) && !e.is_empty() {
                r
            } else {
                "x"
            }
        });
        return !release.is_empty()
            && release
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    }
    let (main, local) = match s.split_once('+') {
        Some((m, l)) => (m, Some(l)),
        None => (s, None),
    };
    if let Some(l) = local
        && (l.is_empty()
            || !l
                .split(['.', '-', '_'])
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric())))
    {
        return false;
    }
    s = main;
    if let Some((epoch, rest)) = s.split_once('!') {
        if epoch.is_empty() || !epoch.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
        s = rest;
    }
    // The release: digits and dots.
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (release, mut rest) = s.split_at(end);
    let release = match release.strip_suffix('.') {
        // `1.0.post1`: the dot belongs to what follows.
        Some(r) if !rest.is_empty() => {
            rest = &s[end - 1..];
            r
        }
        _ => release,
    };
    if release.is_empty() || !release.split('.').all(|p| !p.is_empty()) {
        return false;
    }
    let sep = |r: &str| r.strip_prefix(['.', '-', '_']).unwrap_or(r).to_string();
    let number = |r: &str| -> String {
        let r = r.strip_prefix(['.', '-', '_']).unwrap_or(r);
        r.trim_start_matches(|c: char| c.is_ascii_digit())
            .to_string()
    };
    let mut rest = rest.to_string();
    // Pre-release.
    let after_sep = sep(&rest);
    for tag in ["alpha", "beta", "preview", "pre", "rc", "a", "b", "c"] {
        if let Some(r) = after_sep.strip_prefix(tag) {
            rest = number(r);
            break;
        }
    }
    // Post-release: `.post1`, `-1`.
    let after_sep = sep(&rest);
    let mut matched = false;
    for tag in ["post", "rev", "r"] {
        if let Some(r) = after_sep.strip_prefix(tag) {
            rest = number(r);
            matched = true;
            break;
        }
    }
    if !matched
        && let Some(r) = rest.strip_prefix('-')
        && r.starts_with(|c: char| c.is_ascii_digit())
    {
        rest = r
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .to_string();
    }
    // Development release.
    let after_sep = sep(&rest);
    if let Some(r) = after_sep.strip_prefix("dev") {
        rest = number(r);
    }
    rest.is_empty()
}

/// An environment marker's names must be PEP 508's: a misspelt one makes
/// pip reject the requirement.
fn check_marker(m: &str) -> Result<(), &'static str> {
    const NAMES: &[&str] = &[
        "python_version",
        "python_full_version",
        "os_name",
        "sys_platform",
        "platform_release",
        "platform_system",
        "platform_version",
        "platform_machine",
        "platform_python_implementation",
        "implementation_name",
        "implementation_version",
        "extra",
        "and",
        "or",
        "in",
        "not",
        // Accepted by pip for old packages.
        "os.name",
        "sys.platform",
        "platform.version",
        "platform.machine",
        "platform.python_implementation",
        "python_implementation",
    ];
    if m.is_empty() {
        return Err("its `;` is followed by no marker");
    }
    let mut chars = m.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '"' || c == '\'' {
            // A quoted value: skip to its end.
            if !chars.by_ref().any(|(_, d)| d == c) {
                return Err("a quoted value in its marker is not closed");
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == '.' {
                    end = j + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            if !NAMES.contains(&&m[i..end]) {
                return Err(
                    "its marker names a variable PEP 508 does not have (e.g. python_version, sys_platform)",
                );
            }
        } else if !(c.is_whitespace() || "()<>=!~".contains(c)) {
            return Err("its marker is not a PEP 508 marker");
        }
    }
    Ok(())
}

/// `numpy==${V}` → `numpy==0`: build argument references stand for a value.
fn without_arg_refs(r: &str) -> String {
    let mut out = String::with_capacity(r.len());
    let mut rest = r;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(end)
                if end > 0
                    && after[..end]
                        .split(":-")
                        .next()
                        .and_then(|n| n.split(":+").next())
                        .is_some_and(|n| {
                            !n.is_empty()
                                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        }) =>
            {
                out.push_str(&rest[..i]);
                out.push('0');
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[..i + 2]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether a value names a build argument (`${NAME}`), substituted later.
pub fn has_arg_ref(v: &str) -> bool {
    v.contains("${") && !v.contains("$${")
}

/// Python 3.8 or newer (`3.11`, `3.9.18`): what current pip and the
/// frameworks' wheels still support.
pub fn python_supported(v: &str) -> bool {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    matches!((parts.next(), parts.next()), (Some(Some(3)), Some(Some(m))) if m >= 8)
}

/// The project name of a requirement, normalised as pip does (PEP 503).
pub fn requirement_name(r: &str) -> String {
    let r = r.trim();
    let end = r
        .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .unwrap_or(r.len());
    let mut out = String::new();
    let mut last_sep = false;
    for c in r[..end].chars() {
        if "-_.".contains(c) {
            if !last_sep {
                out.push('-');
            }
            last_sep = true;
        } else {
            out.push(c.to_ascii_lowercase());
            last_sep = false;
        }
    }
    out
}

/// `name==version` exactly (no wildcard), the form per-package layers need.
/// Whether two versions are the same release under PEP 440's equality:
/// `1.16` is `1.16.0`, `01.2` is `1.2`, case and a leading `v` do not
/// count.
/// Whether `spec`'s version clauses certainly leave out `version` (a
/// plain release like `1.26.4`): `Some(clause)` with the clause that does.
/// `None` when they allow it, or when kiln cannot tell (a marker, a URL,
/// pre-releases, local versions): pip decides those.
pub fn excludes_release(spec: &str, version: &str) -> Option<String> {
    fn release(v: &str) -> Option<Vec<u64>> {
        let v = v.trim();
        let v = v.strip_prefix('v').unwrap_or(v);
        v.split('.').map(|p| p.parse::<u64>().ok()).collect()
    }
    fn cmp(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
        let n = a.len().max(b.len());
        (0..n)
            .map(|i| {
                a.get(i)
                    .copied()
                    .unwrap_or(0)
                    .cmp(&b.get(i).copied().unwrap_or(0))
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }
    let have = release(version)?;
    if spec.contains([';', '@']) {
        return None;
    }
    let name_end = spec
        .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .unwrap_or(spec.len());
    let mut rest = spec[name_end..].trim_start();
    if let Some(r) = rest.strip_prefix('[') {
        rest = r.split_once(']').map(|(_, after)| after)?.trim_start();
    }
    let rest = rest.trim_start_matches('(').trim_end_matches(')');
    for clause in rest.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let op_len = clause
            .find(|c: char| !"=<>!~".contains(c))
            .unwrap_or(clause.len());
        let (op, v) = (&clause[..op_len], clause[op_len..].trim());
        let allowed = if let Some(prefix) = v.strip_suffix(".*") {
            let want = release(prefix)?;
            let matches = have.len() >= want.len() && have[..want.len()] == want[..];
            match op {
                "==" => matches,
                "!=" => !matches,
                _ => return None,
            }
        } else {
            let want = release(v)?;
            let o = cmp(&have, &want);
            match op {
                "==" | "===" => o.is_eq(),
                "!=" => o.is_ne(),
                "<" => o.is_lt(),
                "<=" => o.is_le(),
                ">" => o.is_gt(),
                ">=" => o.is_ge(),
                "~=" if want.len() >= 2 => {
                    o.is_ge()
                        && have.len() >= want.len() - 1
                        && have[..want.len() - 1] == want[..want.len() - 1]
                }
                _ => return None,
            }
        };
        if !allowed {
            return Some(clause.to_string());
        }
    }
    None
}

pub fn same_version(a: &str, b: &str) -> bool {
    fn norm(v: &str) -> (Vec<u64>, String) {
        let v = v.trim().to_ascii_lowercase();
        let v = v.strip_prefix('v').unwrap_or(&v);
        let end = v
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(v.len());
        let (release, rest) = v.split_at(end);
        let (release, rest) = match release.strip_suffix('.') {
            Some(r) => (r, format!(".{rest}")),
            None => (release, rest.to_string()),
        };
        let mut parts: Vec<u64> = release
            .split('.')
            .map(|p| p.parse().unwrap_or(u64::MAX))
            .collect();
        while parts.len() > 1 && parts.last() == Some(&0) {
            parts.pop();
        }
        (parts, rest)
    }
    norm(a) == norm(b)
}

/// Variables of pip's and uv's that set where packages come from: in an
/// `env` they reach the image and `run` steps, not kiln's install steps.
const INSTALLER_SOURCE_VARS: &[&str] = &[
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_NO_INDEX",
    "PIP_CONSTRAINT",
    "PIP_TRUSTED_HOST",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_INDEX",
    "UV_DEFAULT_INDEX",
    "UV_FIND_LINKS",
];

/// A warning for an `env` variable that does not do what it seems to: an
/// installer setting kiln's installs do not read, or a credential, which
/// the image's config would show to anyone who has the image.
fn env_warning(name: &str, value: &str, span: SourceSpan) -> Option<Diagnostic> {
    let upper = name.to_ascii_uppercase();
    if INSTALLER_SOURCE_VARS.contains(&upper.as_str()) {
        return Some(
            Diagnostic::warning(
                "kiln::env_not_for_installs",
                span,
                format!("`{name}` is set in the image and its `run` steps, not in kiln's install steps, which do not read it"),
            )
            .with_help("name an index with `pip index=\"URL\"` (`default=#true` puts it in PyPI's place; credentials: `secret=`), or put `--index-url`/`--find-links` lines in a requirements file"),
        );
    }
    // Whole words of the name (`TOKENIZERS_PARALLELISM` is none), and a
    // value that could be one (`HF_HUB_DISABLE_IMPLICIT_TOKEN=1` is not). A
    // `${NAME}` from a build argument ends up in the config all the same.
    let words: Vec<&str> = upper.split('_').collect();
    // Where the credential is, or something about it: not the credential
    // (`PASSWORD_FILE=/run/secrets/db`, `TOKEN_LIMIT=4096`).
    let about = words.last().is_some_and(|w| {
        matches!(
            *w,
            "FILE"
                | "PATH"
                | "DIR"
                | "LIMIT"
                | "LEN"
                | "LENGTH"
                | "SIZE"
                | "COUNT"
                | "URL"
                | "URI"
                | "HOST"
                | "PORT"
                | "TYPE"
                | "NAME"
                | "ID"
                | "HEADER"
                | "ENV"
        )
    });
    let credential = !about
        && words.iter().any(|w| {
            matches!(
                *w,
                "TOKEN"
                    | "SECRET"
                    | "PASSWORD"
                    | "PASSWD"
                    | "APIKEY"
                    | "CREDENTIAL"
                    | "CREDENTIALS"
            )
        })
        || words
            .windows(2)
            .any(|p| p[1] == "KEY" && matches!(p[0], "API" | "ACCESS" | "PRIVATE" | "SECRET"));
    let value = value.trim();
    // A `${NAME}` (a build argument's value) lands in the config too.
    let flag = !value.contains('$')
        && (value.len() < 8
            || value.parse::<f64>().is_ok()
            || ["true", "false", "yes", "no", "none", "null"]
                .contains(&value.to_ascii_lowercase().as_str()));
    (credential && !flag).then(|| {
        Diagnostic::warning(
            "kiln::secret_in_env",
            span,
            format!("`{name}` looks like a credential: an `env` value is in the image's config, where anyone with the image reads it"),
        )
        .with_help("give it to the container when it runs (docker run -e, a Kubernetes secret); for a build step, `run \"…\" secret=\"ID\"` reads a build secret that stays out of the image")
    })
}

/// A signal as Docker's `StopSignal` takes it: a Linux signal's name (any
/// case, with or without `SIG`; `SIGRTMIN+3`) or number (1-64), written
/// `SIGNAME` or as the number.
fn stop_signal(s: &str) -> Option<String> {
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
    ];
    let s = s.trim();
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n).then(|| n.to_string());
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    // Docker's names for the real-time signals: RTMIN, RTMIN+1 … RTMIN+15,
    // RTMAX-14 … RTMAX-1, RTMAX; it refuses to run an image with another.
    let realtime = |base: &str, sign: char, most: u32| {
        name.strip_prefix(base).is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix(sign)
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                    .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| (1..=most).contains(&n)))
        })
    };
    (NAMES.contains(&name) || realtime("RTMIN", '+', 15) || realtime("RTMAX", '-', 14))
        .then(|| format!("SIG{name}"))
}

/// A Go duration as Docker reads one (`1m30s`, `500ms`, `2h`), in
/// nanoseconds.
fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let ns = number * scale;
        if !ns.is_finite() || ns > u64::MAX as f64 {
            return None;
        }
        total = total.checked_add(ns as u64)?;
    }
    Some(total)
}

/// Whether `word` names a shell variable (`$PORT`, `${PORT:-8000}`).
/// In exec-form words that start a shell with a script (`sh -c SCRIPT`,
/// `/bin/bash -lc SCRIPT`), the index of the script: the shell reads its
/// variables. The words after it are the script's `$0`, `$1`, …, as written.
fn shell_script_index(words: &[String]) -> Option<usize> {
    let program = words.first()?.rsplit('/').next().unwrap_or_default();
    if !["sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "busybox"].contains(&program) {
        return None;
    }
    let mut i = 1;
    if program == "busybox" {
        // `busybox sh -c SCRIPT`.
        (words.get(1).map(String::as_str) == Some("sh")).then_some(())?;
        i = 2;
    }
    while let Some(w) = words.get(i) {
        let flags = w
            .strip_prefix('-')
            .filter(|f| !f.is_empty() && !f.starts_with('-'))?;
        if flags.contains('c') {
            return (i + 1 < words.len()).then_some(i + 1);
        }
        i += 1;
    }
    None
}

fn names_a_variable(word: &str) -> bool {
    word.match_indices('$').any(|(i, _)| {
        word[i + 1..]
            .chars()
            .next()
            .is_some_and(|c| c == '{' || c == '_' || c.is_ascii_alphabetic())
    })
}

/// A KDL string literal of `s`.
fn kdl_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `line` split into words as `sh` would split it, with its quotes taken
/// off, when it has no quote left open and nothing only a shell does
/// (`$VAR`, pipes, redirections, globs, `;`, `&&`): `None` otherwise.
fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '$' | '`' => return None,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\') => w.push(c),
                            c => {
                                w.push('\\');
                                w.push(c);
                            }
                        },
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).push(chars.next()?),
            '$' | '`' | '|' | '&' | ';' | '<' | '>' | '(' | ')' | '*' | '?' | '[' | '#' => {
                return None;
            }
            '~' if word.is_none() => return None,
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Some(words)
}

/// The fix for a `cmd`/`entrypoint` written as one string with spaces: its
/// words as exec form, where a shell would only have split them; a shell
/// (`sh -c`), where the string needs one (`$PORT`, `&&`, a pipe).
fn exec_form_help(name: &str, line: &str) -> String {
    let shell = |script: &str| format!("`{name} \"sh\" \"-c\" {}`", kdl_string(script));
    // `FOO=1 python app.py` sets a variable for the program, and a line
    // break ends a command: both are the shell's.
    let assigns = line.split_whitespace().next().is_some_and(|w| {
        w.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    });
    let words = if assigns || line.contains(['\n', '\r']) {
        None
    } else {
        shell_words(line)
    };
    match words {
        Some(words)
            if words.len() >= 3
                && matches!(words[0].as_str(), "sh" | "/bin/sh" | "bash" | "/bin/bash")
                && words[1] == "-c" =>
        {
            // Already a shell: its script is one argument.
            let rest: Vec<String> = words.iter().map(|w| kdl_string(w)).collect();
            format!(
                "write each argument as its own string: `{name} {}`",
                rest.join(" ")
            )
        }
        Some(words) => {
            // `exec` is the shell's; exec form runs the program itself.
            let program = match words.first().map(String::as_str) {
                Some("exec") if words.len() > 1 => &words[1..],
                _ => &words[..],
            };
            let split: Vec<String> = program.iter().map(|w| kdl_string(w)).collect();
            format!(
                "write each argument as its own string: `{name} {}`; for a shell, {}",
                split.join(" "),
                shell(line)
            )
        }
        None => {
            // `exec` only where the line is one command (with `&&`, `;` or a
            // pipe it would end the script early).
            let script = if line.starts_with("exec ")
                || assigns
                || line.contains(['|', '&', ';', '\n', '\r'])
            {
                line.to_string()
            } else {
                format!("exec {line}")
            };
            format!(
                "it needs a shell (a variable, an operator, a glob), which exec form does not run: write {}",
                shell(&script)
            )
        }
    }
}

pub fn exact_pin(r: &str) -> Option<(String, String)> {
    let r = r.trim();
    if r.contains([';', '@', '[', ',']) {
        return None;
    }
    let (name, version) = r.split_once("==")?;
    let version = version.trim();
    if version.is_empty() || version.contains(['*', '=', '<', '>', '!', '~', ' ']) {
        return None;
    }
    let name = requirement_name(name);
    (!name.is_empty()).then(|| (name, version.to_string()))
}

impl Settings {
    /// This level's settings overlaid by a variant's: the variant's single
    /// values win, lists add up (env and labels by key, later wins; pip
    /// requirements by package, see `overlay_pip`).
    pub fn overlay(&self, v: &Settings) -> Settings {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            b.clone().or_else(|| a.clone())
        }
        fn cat<T: Clone>(a: &[T], b: &[T]) -> Vec<T> {
            a.iter().chain(b).cloned().collect()
        }
        Settings {
            name: pick(&self.name, &v.name),
            python: pick(&self.python, &v.python),
            framework: pick(&self.framework, &v.framework),
            base: pick(&self.base, &v.base),
            builder: pick(&self.builder, &v.builder),
            conda: pick(&self.conda, &v.conda),
            installer: pick(&self.installer, &v.installer),
            cuda: pick(&self.cuda, &v.cuda),
            user: pick(&self.user, &v.user),
            workdir: pick(&self.workdir, &v.workdir),
            cmd: pick(&self.cmd, &v.cmd),
            entrypoint: pick(&self.entrypoint, &v.entrypoint),
            ca_bundle: pick(&self.ca_bundle, &v.ca_bundle),
            apt: cat(&self.apt, &v.apt),
            pip: overlay_pip(&self.pip, &v.pip),
            pip_replaced: {
                let names = variant_pip_names(&v.pip);
                if names.is_empty() {
                    Vec::new()
                } else {
                    self.pip
                        .iter()
                        .filter(|p| matches!(p.value, Pip::Requirements(_)))
                        .map(|p| (p.span, names.clone()))
                        .collect()
                }
            },
            env: cat(&self.env, &v.env),
            copy: cat(&self.copy, &v.copy),
            run: cat(&self.run, &v.run),
            verify: cat(&self.verify, &v.verify),
            label: cat(&self.label, &v.label),
            expose: cat(&self.expose, &v.expose),
            healthcheck: pick(&self.healthcheck, &v.healthcheck),
            stop_signal: pick(&self.stop_signal, &v.stop_signal),
        }
    }
}

/// The top-level `pip` entries, then the variant's; a requirement the
/// variant names replaces the top-level requirement of the same package
/// (`pip "numpy==2.0.2"` in a variant over a top-level `numpy==1.26.4`).
fn overlay_pip(top: &[Spanned<Pip>], variant: &[Spanned<Pip>]) -> Vec<Spanned<Pip>> {
    let names = variant_pip_names(variant);
    let mut out: Vec<Spanned<Pip>> = top
        .iter()
        .filter_map(|p| match &p.value {
            Pip::Packages(specs) => {
                let kept: Vec<String> = specs
                    .iter()
                    .filter(|s| !names.contains(&requirement_name(s)))
                    .cloned()
                    .collect();
                (!kept.is_empty()).then(|| Spanned::new(Pip::Packages(kept), p.span))
            }
            _ => Some(p.clone()),
        })
        .collect();
    out.extend(variant.iter().cloned());
    out
}

/// The packages a level's inline `pip` requirements name.
fn variant_pip_names(pip: &[Spanned<Pip>]) -> Vec<String> {
    pip.iter()
        .filter_map(|p| match &p.value {
            Pip::Packages(specs) => Some(specs),
            _ => None,
        })
        .flatten()
        .map(|s| requirement_name(s))
        .collect()
}

impl Recipe {
    /// The variant a build without `--target` gets: the one marked default,
    /// else the first declared; `None` when the recipe declares none.
    pub fn default_variant(&self) -> Option<&Variant> {
        self.variants
            .iter()
            .find(|v| v.default)
            .or_else(|| self.variants.first())
    }
}

/// `an apt package`, `a pip requirement`.
fn with_article(what: &str) -> String {
    let article = if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {what}")
}

/// The span from the start of `a` to the end of `b`.
fn span_to(a: miette::SourceSpan, b: miette::SourceSpan) -> miette::SourceSpan {
    let start = a.offset().min(b.offset());
    let end = (a.offset() + a.len()).max(b.offset() + b.len());
    miette::SourceSpan::new(start.into(), end - start)
}
