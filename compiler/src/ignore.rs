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
    wildcard(
        pat,
        parts,
        |p| *p == "**",
        |p, part| glob(p.as_bytes(), part.as_bytes()),
    )
}

/// One token of a segment pattern.
enum Tok {
    Star,
    Any,
    Lit(u8),
    Class {
        negate: bool,
        ranges: Vec<(u8, u8)>,
    },
    /// An unclosed `[`: Go's `filepath.Match` fails the whole pattern.
    Bad,
}

fn tokens(mut p: &[u8]) -> Vec<Tok> {
    let mut out = Vec::new();
    while let Some((&c, rest)) = p.split_first() {
        p = rest;
        out.push(match c {
            b'*' => Tok::Star,
            b'?' => Tok::Any,
            b'\\' if !p.is_empty() => {
                let t = Tok::Lit(p[0]);
                p = &p[1..];
                t
            }
            b'[' => {
                let (negate, mut class) = match p.split_first() {
                    Some((b'^', r)) => (true, r),
                    _ => (false, p),
                };
                let mut ranges = Vec::new();
                let mut first = true;
                let closed = loop {
                    match class.split_first() {
                        None => break false,
                        Some((b']', r)) if !first => {
                            class = r;
                            break true;
                        }
                        Some((&lo, r)) => {
                            let (lo, r) = match (lo, r.split_first()) {
                                (b'\\', Some((&e, r2))) => (e, r2),
                                _ => (lo, r),
                            };
                            if r.len() > 1 && r[0] == b'-' && r[1] != b']' {
                                ranges.push((lo, r[1]));
                                class = &r[2..];
                            } else {
                                ranges.push((lo, lo));
                                class = r;
                            }
                        }
                    }
                    first = false;
                };
                if !closed {
                    return vec![Tok::Bad];
                }
                p = class;
                Tok::Class { negate, ranges }
            }
            c => Tok::Lit(c),
        });
    }
    out
}

/// Go's `filepath.Match` within one segment: `*`, `?`, `[…]` (with `^`
/// negation and ranges) and `\` escapes.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let toks = tokens(p);
    wildcard(
        &toks,
        s,
        |t| matches!(t, Tok::Star),
        |t, &c| match t {
            Tok::Any => true,
            Tok::Lit(x) => *x == c,
            Tok::Class { negate, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negate
            }
            Tok::Star | Tok::Bad => false,
        },
    )
}

/// Wildcard matching without backtracking blow-up: `is_star` tokens match
/// any run of items, the others one item each. On a mismatch only the last
/// star takes one more item, so a match costs at most pattern × input
/// steps, however many stars the pattern has (a recursive matcher takes
/// exponential time on `*a*a*a*…*b`).
fn wildcard<T, S>(
    pat: &[T],
    items: &[S],
    is_star: impl Fn(&T) -> bool,
    one: impl Fn(&T, &S) -> bool,
) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < items.len() {
        if p < pat.len() && is_star(&pat[p]) {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && one(&pat[p], &items[i]) {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(is_star)
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
        assert!(excluded(&parse("a\\*b\n"), "a*b"));
        assert!(!excluded(&parse("a\\*b\n"), "axb"));
        assert!(excluded(&parse("[a-c-]x\n"), "-x"));
        assert!(
            !excluded(&parse("[ab\n"), "a"),
            "an unclosed class matches nothing"
        );
        assert!(excluded(&parse("*a*b*\n"), "xxaxxbxx"));
        assert!(!excluded(&parse("*a*b\n"), "xxbxxa"));
    }

    /// Many wildcards against a long name or a deep path take time in
    /// proportion to pattern × input (an exponential matcher would not
    /// finish these).
    #[test]
    fn wildcards_do_not_backtrack_exponentially() {
        let name = "a".repeat(200);
        assert!(!excluded(&parse(&format!("{}b\n", "*a".repeat(40))), &name));
        assert!(excluded(&parse(&format!("{}a\n", "*a".repeat(40))), &name));
        let deep = vec!["a"; 60].join("/");
        assert!(!excluded(
            &parse(&format!("{}b\n", "**/".repeat(30))),
            &deep
        ));
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
