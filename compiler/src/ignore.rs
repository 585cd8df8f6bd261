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
