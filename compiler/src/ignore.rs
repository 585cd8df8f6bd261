//! `.dockerignore` files: what of the build context a build never reads.
//!
//! The format is Docker's: one pattern per line (Go `filepath.Match` syntax
//! plus `**`), `#` at the start of a line begins a comment, `!` re-includes
//! what an earlier pattern excluded, and paths are relative to the context
//! (a leading `/` is dropped). kiln hands the cleaned patterns to the
//! context's local source as its exclude patterns, so ignored files are not
//! even transferred.

/// The patterns of an ignore file, cleaned, in order.
pub fn parse(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (invert, pattern) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        let mut pattern = if pattern.is_empty() {
            String::new()
        } else {
            clean(pattern)
        };
        if pattern.len() > 1 && pattern.starts_with('/') {
            pattern.remove(0);
        }
        out.push(if invert {
            format!("!{pattern}")
        } else {
            pattern
        });
    }
    out
}

/// Whether the cleaned `patterns` (from [`parse`]) leave `path` (relative
/// to the context) out of the context, as the engine decides when it sends
/// it: the last pattern that matches the path, or one of its parent
/// directories, wins; a `!` pattern keeps it.
pub fn excluded(patterns: &[String], path: &str) -> bool {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let mut out = false;
    for p in patterns {
        let (keep, pattern) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p.as_str()),
        };
        let pat: Vec<&str> = pattern.split('/').filter(|x| !x.is_empty()).collect();
        if pat.is_empty() {
            continue;
        }
        if (1..=parts.len()).any(|n| segments_match(&pat, &parts[..n])) {
            out = !keep;
        }
    }
    out
}

/// `pat` against the path `parts`, segment by segment; `**` stands for any
/// number of segments.
fn segments_match(pat: &[&str], parts: &[&str]) -> bool {
    match pat.split_first() {
        None => parts.is_empty(),
        Some((&"**", rest)) => (0..=parts.len()).any(|i| segments_match(rest, &parts[i..])),
        Some((first, rest)) => {
            !parts.is_empty()
                && glob(first.as_bytes(), parts[0].as_bytes())
                && segments_match(rest, &parts[1..])
        }
    }
}

/// Go's `filepath.Match` within one segment: `*`, `?`, `[…]` (with `^`
/// negation and ranges) and `\` escapes.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((b'[', rest)) => {
            let Some((&c, tail)) = s.split_first() else {
                return false;
            };
            let (negate, mut class) = match rest.split_first() {
                Some((b'^', r)) => (true, r),
                _ => (false, rest),
            };
            let mut hit = false;
            let mut first = true;
            loop {
                match class.split_first() {
                    None => return false,
                    Some((b']', r)) if !first => {
                        class = r;
                        break;
                    }
                    Some((&lo, r)) => {
                        let (lo, r) = match (lo, r.split_first()) {
                            (b'\\', Some((&e, r2))) => (e, r2),
                            _ => (lo, r),
                        };
                        if let (Some((b'-', r2)), true) =
                            (r.split_first(), r.len() > 1 && r[1] != b']')
                        {
                            let (hi, r3) = (r2[0], &r2[1..]);
                            hit |= lo <= c && c <= hi;
                            class = r3;
                        } else {
                            hit |= lo == c;
                            class = r;
                        }
                    }
                }
                first = false;
            }
            hit != negate && glob(class, tail)
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            !s.is_empty() && s[0] == rest[0] && glob(&rest[1..], &s[1..])
        }
        Some((&c, rest)) => !s.is_empty() && s[0] == c && glob(rest, &s[1..]),
    }
}

/// A path in shortest form: repeated and trailing slashes, `.` and inner
/// `..` removed; `..` that would climb above a rooted path is dropped.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_follows_dockers_rules() {
        let p = parse("# ignore\n*.lock\ndata/\n!data/keep.txt\n**/*.pyc\nreq[0-9].txt\n");
        assert!(excluded(&p, "poetry.lock"));
        assert!(!excluded(&p, "sub/poetry.lock"), "`*` stays in one segment");
        assert!(
            excluded(&p, "data/x/y.txt"),
            "a directory takes its contents"
        );
        assert!(!excluded(&p, "data/keep.txt"), "`!` keeps it");
        assert!(excluded(&p, "a/b/c.pyc"));
        assert!(excluded(&p, "c.pyc"), "`**` may be no directory at all");
        assert!(excluded(&p, "req1.txt"));
        assert!(!excluded(&p, "reqs.txt"));
        assert!(!excluded(&p, "requirements.txt"));
        assert!(excluded(&parse("[^a]*.txt\n"), "b.txt"));
        assert!(!excluded(&parse("[^a]*.txt\n"), "a.txt"));
        assert!(excluded(&parse("/reqs\n"), "reqs/prod.txt"));
    }

    #[test]
    fn reads_patterns_as_docker_does() {
        let text = "\u{feff}# build outputs\n.git\n  /data/**  \n\n*.pyc\n!keep.pyc\n! /notes//x/../y.md\n #not a comment\nbuild/./out/\n/\n";
        assert_eq!(
            parse(text),
            vec![
                ".git",
                "data/**",
                "*.pyc",
                "!keep.pyc",
                "!notes/y.md",
                "#not a comment",
                "build/out",
                "/",
            ]
        );
    }

    #[test]
    fn cleans_paths() {
        assert_eq!(clean("a/../../b"), "../b");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("./"), ".");
        assert_eq!(clean("a//b/./c/"), "a/b/c");
    }
}
