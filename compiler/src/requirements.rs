//! pip requirements files, read as pip reads them, for two things: the
//! files a file pulls in (`-r`, `-c`), which must travel with it into the
//! install step, and whether a file is a lock (every line an exact pin),
//! whose packages then get a layer each like inline pins.

use crate::model;

/// One logical line of a requirements file (continuations joined, comment
/// removed), with the number of the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `-r FILE` / `--requirement FILE`, or `-c FILE` / `--constraint FILE`.
    Include {
        line: usize,
        option: &'static str,
        path: String,
    },
    /// A requirement, with the `--hash` values it carries.
    Requirement {
        line: usize,
        spec: String,
        hashes: Vec<String>,
        /// Per-requirement options other than `--hash`
        /// (`--config-settings`, `--global-option`).
        other_options: bool,
    },
    /// Any other option line (`--index-url`, `-e`, `--pre`, …).
    Option { line: usize, text: String },
}

/// A pinned package of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub spec: String,
    pub hashes: Vec<String>,
    /// The line of the file it is on (1-based).
    pub line: usize,
}

/// The logical lines of `text`, as pip's requirements parser sees them.
pub fn parse(text: &str) -> Vec<Entry> {
    // A byte-order mark (files saved by some Windows editors): pip reads
    // past it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut line) = match pending.take() {
            Some((start, mut acc)) => {
                acc.push_str(raw);
                (start, acc)
            }
            None => (i + 1, raw.to_string()),
        };
        if line.ends_with('\\') {
            line.pop();
            pending = Some((start, line));
            continue;
        }
        if let Some(entry) = entry(start, &strip_comment(&line)) {
            out.push(entry);
        }
    }
    if let Some((start, line)) = pending
        && let Some(entry) = entry(start, &strip_comment(&line))
    {
        out.push(entry);
    }
    out
}

/// pip drops `#` and what follows at the start of a line or after
/// whitespace (a `#` inside a URL fragment stays).
fn strip_comment(line: &str) -> String {
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_space {
            return line[..i].to_string();
        }
        prev_space = c.is_whitespace();
    }
    line.to_string()
}

fn entry(line: usize, text: &str) -> Option<Entry> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.starts_with('-') {
        let mut words = text.split_whitespace();
        let first = words.next().unwrap_or_default();
        let rest = || words.clone().collect::<Vec<_>>().join(" ");
        for (short, long, option) in [("-r", "--requirement", "-r"), ("-c", "--constraint", "-c")] {
            let value = if first == short || first == long {
                Some(rest())
            } else if let Some(v) = first.strip_prefix(&format!("{long}=")) {
                Some(v.to_string())
            } else if !first.starts_with("--") {
                first
                    .strip_prefix(short)
                    .map(|v| v.trim_start_matches('=').to_string())
            } else {
                None
            };
            if let Some(path) = value {
                return Some(Entry::Include {
                    line,
                    option,
                    path: path.trim().to_string(),
                });
            }
        }
        return Some(Entry::Option {
            line,
            text: text.to_string(),
        });
    }
    // A requirement runs up to its first option (` --hash=…`).
    let mut spec_words = Vec::new();
    let mut hashes = Vec::new();
    let mut other_options = false;
    let mut words = text.split_whitespace().peekable();
    while let Some(w) = words.peek() {
        if w.starts_with("--") {
            break;
        }
        spec_words.push(*w);
        words.next();
    }
    while let Some(w) = words.next() {
        if let Some(h) = w.strip_prefix("--hash=") {
            hashes.push(h.to_string());
        } else if w == "--hash" {
            if let Some(h) = words.next() {
                hashes.push(h.to_string());
            }
        } else if w.starts_with("--") {
            other_options = true;
        }
    }
    Some(Entry::Requirement {
        line,
        spec: spec_words.join(" "),
        hashes,
        other_options,
    })
}

/// The pins of a lock: `Some` when every line of the file is an exact
/// `name==version` pin (hashes allowed, on every line or on none), with no
/// options, includes or environment variables, so that installing each pin
/// alone with `--no-deps` installs what `pip install -r` would. `None`
/// otherwise: pip then installs the file as a whole.
pub fn lock_pins(entries: &[Entry]) -> Option<Vec<Pin>> {
    let mut pins = Vec::new();
    for e in entries {
        match e {
            Entry::Requirement {
                spec,
                hashes,
                other_options: false,
                line,
            } if !spec.contains('$') && model::exact_pin(spec).is_some() => pins.push(Pin {
                spec: spec.clone(),
                hashes: hashes.clone(),
                line: *line,
            }),
            _ => return None,
        }
    }
    let hashed = pins.iter().filter(|p| !p.hashes.is_empty()).count();
    (!pins.is_empty() && (hashed == 0 || hashed == pins.len())).then_some(pins)
}

/// Where a file included from `from` (a path in the context) lies in the
/// context: `Ok(None)` for a URL (pip fetches it), `Err` for a path outside
/// the context.
pub fn include_path(from: &str, path: &str) -> Result<Option<String>, String> {
    if path.contains("://") {
        return Ok(None);
    }
    if path.trim().is_empty() {
        return Err("the option names no file".to_string());
    }
    let path = path.strip_prefix("file:").unwrap_or(path);
    if path.starts_with('/') {
        return Err(format!(
            "`{path}` is an absolute path; kiln sends the install step files of the build context only"
        ));
    }
    let joined = context_path(from, path)?;
    if joined.is_empty() {
        return Err(format!("`{path}` is not a file"));
    }
    Ok(Some(joined))
}

/// `path` (relative) taken from the folder of `from` (a path in the
/// context; `""` for the context's root folder itself): the path in the
/// context, `""` for its root, `Err` when it leaves the context.
fn context_path(from: &str, path: &str) -> Result<String, String> {
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("`{path}` lies outside the build context"));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// A line that has pip read packages from the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// `-e PATH` / `--editable PATH`: a project installed in place.
    Editable { line: usize, path: String },
    /// A project folder or an archive (`.`, `./libs/tool`,
    /// `dist/tool-1.0-py3-none-any.whl`), which pip reads relative to the
    /// folder it runs in.
    Path { line: usize, path: String },
    /// `-f PATH` / `--find-links PATH`: a folder of archives, which pip
    /// reads relative to the requirements file when it is there, else to
    /// the folder it runs in.
    FindLinks { line: usize, path: String },
}

/// The lines of a requirements file that name relative local paths. URLs
/// (VCS ones included) and absolute paths (which may name files of the
/// builder image) are left out: pip reads those where it runs.
pub fn local_paths(entries: &[Entry]) -> Vec<Local> {
    let remote = |p: &str| p.contains("://") || p.starts_with('/') || p.starts_with("file:");
    let mut out = Vec::new();
    for e in entries {
        match e {
            Entry::Requirement { line, spec, .. } => {
                // Markers (`; python_version …`) and extras (`[gpu]`) aside.
                let first = spec
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .next()
                    .unwrap_or_default();
                if first.is_empty() || remote(first) || spec.contains(" @ ") || first.contains('@')
                {
                    continue;
                }
                let path = match first.find('[') {
                    Some(i) if first.ends_with(']') => &first[..i],
                    _ => first,
                };
                let archive = [".whl", ".tar.gz", ".tgz", ".tar.bz2", ".zip"]
                    .iter()
                    .any(|x| path.ends_with(x));
                if path.starts_with('.') || path.contains('/') || archive {
                    out.push(Local::Path {
                        line: *line,
                        path: path.to_string(),
                    });
                }
            }
            Entry::Option { line, text } => {
                let mut words = text.split_whitespace();
                let first = words.next().unwrap_or_default();
                let value = |short: &str, long: &str| -> Option<String> {
                    if first == short || first == long {
                        Some(words.clone().next().unwrap_or_default().to_string())
                    } else if let Some(v) = first.strip_prefix(&format!("{long}=")) {
                        Some(v.to_string())
                    } else if !first.starts_with("--") {
                        first.strip_prefix(short).map(|v| v.to_string())
                    } else {
                        None
                    }
                };
                if let Some(path) = value("-e", "--editable") {
                    if !path.is_empty() && !remote(&path) {
                        out.push(Local::Editable { line: *line, path });
                    }
                } else if let Some(path) = value("-f", "--find-links")
                    && !path.is_empty()
                    && !remote(&path)
                {
                    out.push(Local::FindLinks { line: *line, path });
                }
            }
            Entry::Include { .. } => {}
        }
    }
    out
}

/// Where a local path of a requirements file at `file` lies in the context,
/// for pip running in the context's root folder: `""` for the root, `Err`
/// when it leaves the context. A `--find-links` folder may be either
/// relative to the file or to the root (pip takes the first that exists),
/// so both candidates that stay inside come back.
pub fn local_context_paths(file: &str, local: &Local) -> Result<Vec<String>, String> {
    match local {
        Local::Editable { path, .. } | Local::Path { path, .. } => {
            context_path("", path).map(|p| vec![p])
        }
        Local::FindLinks { path, .. } => {
            let mut out: Vec<String> = [context_path(file, path), context_path("", path)]
                .into_iter()
                .filter_map(Result::ok)
                .collect();
            out.dedup();
            if out.is_empty() {
                return Err(format!("`{path}` lies outside the build context"));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_as_pip_reads_them() {
        let text = "# a lock\nnumpy==1.26.4  # via pandas\n-r base.txt\n--requirement=dev/extra.txt\n-cconstraints.txt\n\
            pandas==2.2.2 \\\n    --hash=sha256:aa \\\n    --hash sha256:bb\n--index-url https://x/simple\nhttps://h/p.whl#egg=p\n";
        let entries = parse(text);
        assert_eq!(
            entries,
            [
                Entry::Requirement {
                    line: 2,
                    spec: "numpy==1.26.4".into(),
                    hashes: vec![],
                    other_options: false
                },
                Entry::Include {
                    line: 3,
                    option: "-r",
                    path: "base.txt".into()
                },
                Entry::Include {
                    line: 4,
                    option: "-r",
                    path: "dev/extra.txt".into()
                },
                Entry::Include {
                    line: 5,
                    option: "-c",
                    path: "constraints.txt".into()
                },
                Entry::Requirement {
                    line: 6,
                    spec: "pandas==2.2.2".into(),
                    hashes: vec!["sha256:aa".into(), "sha256:bb".into()],
                    other_options: false
                },
                Entry::Option {
                    line: 9,
                    text: "--index-url https://x/simple".into()
                },
                Entry::Requirement {
                    line: 10,
                    spec: "https://h/p.whl#egg=p".into(),
                    hashes: vec![],
                    other_options: false
                },
            ]
        );
    }

    #[test]
    fn only_exact_pins_make_a_lock() {
        let lock = parse("numpy==1.26.4\n    # via pandas\npandas==2.2.2\n");
        assert_eq!(
            lock_pins(&lock).map(|p| p.len()),
            Some(2),
            "a pip-compile lock"
        );
        for not_lock in [
            "numpy>=1.26\n",
            "numpy==1.26.4\n-r base.txt\n",
            "--extra-index-url https://x\nnumpy==1.26.4\n",
            "numpy==1.26.4 ; python_version < \"3.12\"\n",
            "numpy==${NUMPY}\n",
            "numpy==1.26.4 --hash=sha256:aa\npandas==2.2.2\n",
            "-e .\n",
            "",
        ] {
            assert_eq!(lock_pins(&parse(not_lock)), None, "{not_lock:?}");
        }
        let hashed = parse("numpy==1.26.4 --hash=sha256:aa\npandas==2.2.2 --hash=sha256:bb\n");
        assert_eq!(
            lock_pins(&hashed).expect("lock")[1],
            Pin {
                spec: "pandas==2.2.2".into(),
                hashes: vec!["sha256:bb".into()],
                line: 2,
            }
        );
    }

    #[test]
    fn odd_input_parses_without_a_panic() {
        let odd = [
            "\\",
            "\\\n",
            "-r",
            "--requirement=",
            "-c\t",
            "#",
            "x \\\nnumpy==1",
            "é==1 --hash",
            "--hash=sha256:a",
            "-rfile",
            "-\u{2028}r x",
            "numpy==1 \\\n--hash=a \\",
            "\r\n\r\n",
            "-e",
            "--",
            "==",
            "a==1\u{0}",
            "-e",
            "-f",
            "--find-links=",
            "[x]",
            "./[",
            ". ; x",
        ];
        for text in odd {
            let entries = parse(text);
            let _ = lock_pins(&entries);
            for local in local_paths(&entries) {
                let _ = local_context_paths("r/x.txt", &local);
            }
            for e in &entries {
                if let Entry::Include { path, .. } = e {
                    let _ = include_path("r/x.txt", path);
                }
            }
        }
    }

    #[test]
    fn local_paths_are_found_as_pip_reads_them() {
        let text = "-e .\n--editable=libs/a\n./libs/b[gpu] ; python_version > \"3\"\n\
            dist/c-1.0-py3-none-any.whl\nd.tar.gz\n-f wheels\n--find-links=../w\n\
            zope.interface==6.0\nnumpy\n-e git+https://x/y.git#egg=y\ne @ file:///w/e.whl\n\
            /opt/wheels/f.whl\n--find-links https://x/links\n--index-url https://x\n";
        let locals = local_paths(&parse(text));
        assert_eq!(
            locals,
            [
                Local::Editable {
                    line: 1,
                    path: ".".into()
                },
                Local::Editable {
                    line: 2,
                    path: "libs/a".into()
                },
                Local::Path {
                    line: 3,
                    path: "./libs/b".into()
                },
                Local::Path {
                    line: 4,
                    path: "dist/c-1.0-py3-none-any.whl".into()
                },
                Local::Path {
                    line: 5,
                    path: "d.tar.gz".into()
                },
                Local::FindLinks {
                    line: 6,
                    path: "wheels".into()
                },
                Local::FindLinks {
                    line: 7,
                    path: "../w".into()
                },
            ]
        );
        assert_eq!(
            local_context_paths("r.txt", &locals[0]),
            Ok(vec![String::new()])
        );
        assert_eq!(
            local_context_paths("r.txt", &locals[2]),
            Ok(vec!["libs/b".to_string()])
        );
        assert_eq!(
            local_context_paths("reqs/r.txt", &locals[5]),
            Ok(vec!["reqs/wheels".to_string(), "wheels".to_string()])
        );
        assert_eq!(
            local_context_paths("reqs/r.txt", &locals[6]),
            Ok(vec!["w".to_string()])
        );
        assert!(local_context_paths("r.txt", &locals[6]).is_err());
        let up = Local::Path {
            line: 1,
            path: "../x".into(),
        };
        assert!(local_context_paths("reqs/r.txt", &up).is_err());
    }

    #[test]
    fn included_paths_are_relative_to_the_including_file() {
        assert_eq!(
            include_path("reqs/prod.txt", "base.txt"),
            Ok(Some("reqs/base.txt".into()))
        );
        assert_eq!(
            include_path("reqs/prod.txt", "../common/./c.txt"),
            Ok(Some("common/c.txt".into()))
        );
        assert_eq!(include_path("prod.txt", "https://x/r.txt"), Ok(None));
        assert!(include_path("prod.txt", "../r.txt").is_err());
        assert!(include_path("prod.txt", "/etc/r.txt").is_err());
        assert!(include_path("reqs/prod.txt", "").is_err());
    }
}
