//! Pass 1: recipe text → spanned KDL syntax.
//!
//! Handles what is not KDL before the parser sees it: a byte-order mark, a `#!`
//! line and a `# syntax=` directive (blanked out byte for byte, so every span
//! and line number stays true), and guards the parser against inputs that are
//! too large or nested too deep to be a recipe.

use kdl::KdlDocument;
use miette::SourceSpan;

use crate::diag::{Diagnostic, Diagnostics, SourceFile};

/// Recipes are small; anything larger is a mistake (a wrong `-f`, a binary).
pub const MAX_RECIPE_BYTES: usize = 1 << 20;
/// Recipes nest one level (`variant { … }`); the parser recurses per level.
const MAX_NESTING: usize = 32;

/// A parsed recipe: its source and its KDL document.
#[derive(Debug, Clone)]
pub struct Syntax {
    pub source: SourceFile,
    /// The `syntax=` directive of the first line, if any, with its span.
    pub directive: Option<(String, SourceSpan)>,
    pub doc: KdlDocument,
}

/// Parse recipe text. `name` is how diagnostics name the file.
pub fn parse(name: &str, text: &str) -> Result<Syntax, Diagnostics> {
    let source = SourceFile::new(name, text);
    let mut diags = Diagnostics::new(source.clone());
    if text.len() > MAX_RECIPE_BYTES {
        diags.push(
            Diagnostic::error(
                "kiln::too_large",
                SourceSpan::new(0.into(), 0),
                format!(
                    "the recipe is {} bytes; kiln reads recipes up to {} bytes",
                    text.len(),
                    MAX_RECIPE_BYTES
                ),
            )
            .with_help("is this the right file? `-f` should name a kiln recipe"),
        );
        return Err(diags);
    }
    let (kdl_text, directive) = strip_directives(text);
    if let Some((offset, what)) = too_deep(&kdl_text) {
        diags.push(Diagnostic::error(
            "kiln::too_deep",
            SourceSpan::new(offset.into(), 1),
            format!("{what} deeper than {MAX_NESTING} levels here; a recipe needs one or two"),
        ));
        return Err(diags);
    }
    // The kdl parser is a dependency: a panic in it must not take the build
    // down, so it is caught and reported like any parse error.
    let parsed = std::panic::catch_unwind(|| KdlDocument::parse(&kdl_text));
    match parsed {
        Ok(Ok(doc)) => Ok(Syntax {
            source,
            directive,
            doc,
        }),
        Ok(Err(err)) => {
            // A KDL 1 raw string (`r"…"`, `r#"…"#`) in a document that is
            // otherwise KDL 2 (`#true`, `#"…"#`): the parser reads it as
            // neither and points at some other line. Say what it is, there.
            if let Some(at) = mixed_v1_raw_string(&kdl_text) {
                diags.push(
                    Diagnostic::error(
                        "kiln::kdl_syntax",
                        SourceSpan::new(at.into(), 1),
                        "`r\"…\"` is a KDL 1 raw string, in a recipe written in KDL 2 (`#true`, `#\"…\"#`)",
                    )
                    .with_label("KDL 1 raw string")
                    .with_help(
                        "KDL 2 writes raw strings `#\"…\"#` (`r#\"x\"#` becomes `#\"x\"#`); a recipe must be all KDL 1 or all KDL 2",
                    ),
                );
                return Err(diags);
            }
            for d in err.diagnostics {
                let message = d
                    .message
                    .clone()
                    .unwrap_or_else(|| "invalid KDL".to_string());
                let span = narrow_span(&kdl_text, d.span);
                let mut diag = Diagnostic::error("kiln::kdl_syntax", span, message)
                    .with_label(d.label.clone().unwrap_or_else(|| "here".to_string()));
                if let Some(help) = &d.help {
                    diag = diag.with_help(help.clone());
                }
                // KDL 1 keywords in a KDL 2 document (a file that mixes
                // both is read as neither).
                let start = span.offset().min(text.len());
                let word: String = text
                    .get(start..)
                    .unwrap_or("")
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                // A `#` comment, as in a Dockerfile or YAML: KDL reads `#`
                // as the start of a keyword (`#true`) and says only that the
                // node name is invalid.
                let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
                let line = text.get(line_start..).unwrap_or("");
                let line = line[..line.find('\n').unwrap_or(line.len())].trim_start();
                let keyword = ["#true", "#false", "#null", "#inf", "#-inf", "#nan"]
                    .iter()
                    .any(|k| line.starts_with(k));
                // A backslash escape KDL does not know (`\q`, a Windows
                // path): the parser says only that the string is not one.
                let span_text = text
                    .get(start..(start + span.len()).min(text.len()))
                    .unwrap_or("");
                if span_text.starts_with('"') {
                    let mut chars = span_text.chars().peekable();
                    while let Some(c) = chars.next() {
                        if c != '\\' {
                            continue;
                        }
                        match chars.next() {
                            Some(
                                'n' | 'r' | 't' | '\\' | '"' | 'b' | 'f' | 's' | 'u' | '/' | ' '
                                | '\t' | '\n',
                            ) => {}
                            Some(other) => {
                                diag.help = Some(format!(
                                    "`\\{other}` is not a KDL escape: write `\\\\` for a backslash, or a raw string `#\"…\"#` (KDL 2) / `r\"…\"` (KDL 1)"
                                ));
                                break;
                            }
                            None => {}
                        }
                    }
                }
                // The same after a node (`python "3.11"  # the runtime`):
                // the parser stops at the `#`, which starts no keyword.
                let at = text.get(start..).unwrap_or("");
                // (`#` then a space or the line's end: `#ture` is a typo of
                // a keyword, and KDL's own help lists the keywords.)
                let trailing =
                    at.starts_with('#') && at[1..].chars().next().is_none_or(char::is_whitespace);
                if (line.starts_with('#') && !keyword) || trailing {
                    diag.help = Some(
                        "KDL comments start with `//` (or `/* … */`), not `#`: write `// …`"
                            .to_string(),
                    );
                }
                if matches!(word.as_str(), "true" | "false" | "null") && d.help.is_none() {
                    diag = diag.with_help(format!(
                        "KDL 2 writes `#{word}`; bare `{word}` is KDL 1, and a recipe must be all KDL 1 or all KDL 2"
                    ));
                }
                diags.push(diag);
            }
            if !diags.has_errors() {
                diags.push(Diagnostic::error(
                    "kiln::kdl_syntax",
                    SourceSpan::new(0.into(), 0),
                    "the recipe is not valid KDL",
                ));
            }
            Err(diags)
        }
        Err(_) => {
            diags.push(Diagnostic::error(
                "kiln::kdl_syntax",
                SourceSpan::new(0.into(), 0),
                "the KDL parser failed on this recipe (a bug in the parser); please report it with the recipe",
            ));
            Err(diags)
        }
    }
}

/// Blank out what KDL cannot read at the top of a recipe, keeping every byte
/// offset: a BOM, a `#!` line, and a `# syntax=` line. Returns the text for the
/// KDL parser and the `syntax=` directive (from `#` or `//` form).
fn strip_directives(text: &str) -> (String, Option<(String, SourceSpan)>) {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut offset = 0;
    if let Some(r) = rest.strip_prefix('\u{feff}') {
        out.push_str(&" ".repeat('\u{feff}'.len_utf8()));
        offset += '\u{feff}'.len_utf8();
        rest = r;
    }
    let mut directive = None;
    let mut first = true;
    loop {
        let line_end = rest.find('\n').unwrap_or(rest.len());
        let line = &rest[..line_end];
        let trimmed = line.trim_start();
        let lead = line.len() - trimmed.len();
        let is_shebang = first && trimmed.starts_with("#!");
        let hash_directive = trimmed
            .strip_prefix('#')
            .filter(|_| !is_shebang)
            .and_then(parse_syntax_value);
        let slash_directive = trimmed.strip_prefix("//").and_then(parse_syntax_value);
        if is_shebang {
            out.push_str(&blank(line));
        } else if let Some(value) = hash_directive.clone().or(slash_directive) {
            if directive.is_none() {
                let start = offset + lead;
                directive = Some((value, SourceSpan::new(start.into(), trimmed.len())));
            }
            if hash_directive.is_some() {
                out.push_str(&blank(line));
            } else {
                out.push_str(line);
            }
        } else {
            break;
        }
        first = false;
        offset += line_end;
        rest = &rest[line_end..];
        if let Some(r) = rest.strip_prefix('\n') {
            out.push('\n');
            offset += 1;
            rest = r;
        } else {
            break;
        }
    }
    out.push_str(rest);
    (out, directive)
}

/// The parser reports some errors (a property without a value: `uid=`)
/// with a span from the start of the document to where it stopped. Such a
/// span says nothing: the error is where it ends, at its last character.
fn narrow_span(text: &str, span: SourceSpan) -> SourceSpan {
    let start = span.offset().min(text.len());
    let end = (start + span.len()).min(text.len());
    let Some(covered) = text.get(start..end) else {
        return span;
    };
    if start != 0 || !covered.trim_end().contains('\n') {
        return span;
    }
    let trimmed = covered.trim_end();
    match trimmed.char_indices().next_back() {
        Some((i, c)) => SourceSpan::new((start + i).into(), c.len_utf8()),
        None => span,
    }
}

/// Where a KDL 1 raw string (`r"…"`, `r#"…"#`) starts in a document that
/// also has KDL 2-only syntax (`#true`, `#false`, `#null`, a `#"…"#` raw
/// string), skipping strings and comments; `None` when it has not both.
fn mixed_v1_raw_string(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut v1 = None;
    let mut v2 = false;
    let mut i = 0;
    while i < b.len() {
        if let Some((kind, end)) = string_at(b, i) {
            match kind {
                Str::RawV1 => {
                    v1.get_or_insert(i);
                }
                Str::RawV2 => v2 = true,
                Str::Quoted => {}
            }
            i = end;
            continue;
        }
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => match block_comment_end(b, i) {
                Ok(end) => i = end,
                Err(_) => return None,
            },
            b'#' if (i == 0 || !is_ident(b[i - 1])) => {
                let after = &text[i + 1..];
                if ["true", "false", "null", "inf", "-inf", "nan"]
                    .iter()
                    .any(|k| after.starts_with(k))
                {
                    v2 = true;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    v1.filter(|_| v2)
}

/// A byte of a KDL identifier (enough to tell `r"` from `bar"`).
fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')
}

/// The kinds of KDL string [`string_at`] tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Str {
    /// `"…"`, with `\` escapes.
    Quoted,
    /// KDL 1's raw string: `r"…"`, `r#"…"#`.
    RawV1,
    /// KDL 2's raw string: `#"…"#`.
    RawV2,
}

/// The string that starts at `i`, if one does: its kind and the index past
/// its end (the text's end when it is not closed). A raw string has no
/// escapes and ends at `"` and as many `#` as it opened with.
fn string_at(b: &[u8], i: usize) -> Option<(Str, usize)> {
    let (kind, from) = match b[i] {
        b'"' => {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' {
                    j += 1;
                }
                j += 1;
            }
            return Some((Str::Quoted, (j + 1).min(b.len())));
        }
        b'r' if i == 0 || !is_ident(b[i - 1]) => (Str::RawV1, i + 1),
        b'#' => (Str::RawV2, i),
        _ => return None,
    };
    let hashes = b[from..].iter().take_while(|&&c| c == b'#').count();
    if b.get(from + hashes) != Some(&b'"') || (kind == Str::RawV2 && hashes == 0) {
        return None;
    }
    let mut j = from + hashes + 1;
    while j < b.len() {
        if b[j] == b'"'
            && b[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == b'#')
                .count()
                == hashes
        {
            return Some((kind, j + 1 + hashes));
        }
        j += 1;
    }
    Some((kind, b.len()))
}

/// Past the block comment (`/* … */`, nesting) that starts at `i`; `Err`
/// with the offset where it nests deeper than [`MAX_NESTING`].
fn block_comment_end(b: &[u8], mut i: usize) -> Result<usize, usize> {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            if depth > MAX_NESTING {
                return Err(i);
            }
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                break;
            }
        } else {
            i += 1;
        }
    }
    Ok(i)
}

/// `syntax=VALUE` after a comment marker, as BuildKit's directive parser reads it.
fn parse_syntax_value(after_marker: &str) -> Option<String> {
    let s = after_marker.trim();
    let (key, value) = s.split_once('=')?;
    if !key.trim().eq_ignore_ascii_case("syntax") {
        return None;
    }
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// Spaces for every byte of `line`, keeping a trailing `\r`.
fn blank(line: &str) -> String {
    let mut s = " ".repeat(line.trim_end_matches('\r').len());
    if line.ends_with('\r') {
        s.push('\r');
    }
    s
}

/// Where a recipe nests deeper than [`MAX_NESTING`], and how: blocks,
/// block comments (they nest in KDL), or a run of prefixes (`/-`
/// slashdashes, `(type)` annotations, stray `}`). The KDL parser recurses
/// on each of them, and a stack overflow cannot be caught: it would abort
/// kiln (and the frontend) on a few kilobytes of input. Strings and line
/// comments are skipped.
fn too_deep(text: &str) -> Option<(usize, &'static str)> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    // Prefixes since the last other token, and `}` that closed no block.
    let mut prefixes = 0usize;
    let mut stray = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let mut prefix = false;
        // A string, raw or not: nothing in it opens or closes anything.
        if let Some((_, end)) = string_at(bytes, i) {
            i = end;
            prefixes = 0;
            continue;
        }
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                match block_comment_end(bytes, i) {
                    Ok(end) => i = end,
                    Err(at) => return Some((at, "block comments `/* */` nest")),
                }
                // Comments are whitespace: they neither start nor end a run.
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'-') => {
                prefix = true;
                i += 1;
            }
            b'(' => {
                prefix = true;
                while i < bytes.len() && bytes[i] != b')' {
                    i += 1;
                }
            }
            b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some((i, "blocks `{ }` nest"));
                }
            }
            b'}' if depth == 0 => {
                stray += 1;
                if stray > MAX_NESTING {
                    return Some((i, "`}` that close no block repeat"));
                }
            }
            b'}' => depth -= 1,
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        if prefix {
            prefixes += 1;
            if prefixes > MAX_NESTING {
                return Some((start, "`/-` slashdashes or `(type)` annotations chain"));
            }
        } else {
            prefixes = 0;
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_directive_is_blanked_keeping_offsets() {
        let text = "# syntax=kiln/frontend:dev\nkiln 1\n";
        let syntax = parse("r.kdl", text).expect("parses");
        assert_eq!(
            syntax.directive.as_ref().map(|d| d.0.as_str()),
            Some("kiln/frontend:dev")
        );
        let node = &syntax.doc.nodes()[0];
        assert_eq!(node.name().value(), "kiln");
        assert_eq!(node.span().offset(), text.find("kiln 1").unwrap_or(0));
    }

    #[test]
    fn slash_directive_is_read() {
        let text = "\u{feff}#!/usr/bin/env kiln\n// syntax = kiln/frontend:1\nkiln 1\n";
        let syntax = parse("r.kdl", text).expect("parses");
        assert_eq!(
            syntax.directive.map(|d| d.0),
            Some("kiln/frontend:1".to_string())
        );
    }

    #[test]
    fn kdl_errors_keep_their_spans() {
        let err = parse("r.kdl", "kiln 1\nbad \"open\n").expect_err("fails");
        let first = err.errors().next().expect("an error");
        assert_eq!(err.source.line_col(first.span.offset()).0, 2);
    }

    #[test]
    fn a_property_without_a_value_is_reported_where_it_is() {
        let text = "kiln 1\npython \"3.10\"\nuser \"app\" uid=\nworkdir \"/app\"\n";
        let err = parse("r.kdl", text).expect_err("fails");
        let first = err.errors().next().expect("an error");
        assert_eq!(err.source.line_col(first.span.offset()), (3, 15));
    }

    #[test]
    fn a_kdl1_raw_string_in_a_kdl2_recipe_is_named_at_its_line() {
        let text = "kiln 1\nvariant \"cpu\" default=#true\nenv A=r#\"x\"#\n";
        let err = parse("r.kdl", text).expect_err("fails");
        let first = err.errors().next().expect("an error");
        assert_eq!(err.source.line_col(first.span.offset()), (3, 7));
        assert!(err.render_plain().contains("KDL 1 raw string"));
        // Inside a string or a comment, `r"` is text; all-KDL-1 is read.
        assert_eq!(mixed_v1_raw_string("a \"r\\\"x\" #true // r\"y\"\n"), None);
        assert_eq!(mixed_v1_raw_string("a r\"x\" #\"r\"y\"# b=#null"), Some(2));
        parse("r.kdl", "kiln 1\nrun r\"echo \\a\" default=true\n").expect("KDL 1 parses");
    }

    #[test]
    fn deep_nesting_and_huge_input_are_errors_not_crashes() {
        let deep = format!("kiln 1\n{}{}", "a {".repeat(10_000), "}".repeat(10_000));
        let err = parse("r.kdl", &deep).expect_err("too deep");
        assert!(err.render_plain().contains("kiln::too_deep"));
        // Each of these overflowed the parser's stack (an abort, not a
        // panic) at a few thousand repeats.
        for bomb in [
            "/*".repeat(4000),
            format!("{}x", "/-".repeat(3000)),
            format!("x {}\"a\"", "/-".repeat(3000)),
            "}".repeat(20_000),
            format!("x {}\"a\"", "(a)".repeat(40_000)),
            // A raw string holding a backslash is no escape of its quote.
            format!("name #\"\\\"#\n{}", "a{".repeat(2000)),
            format!("name r#\"\\\"#\n{}", "a{".repeat(2000)),
        ] {
            let err = parse("r.kdl", &format!("kiln 1\n{bomb}\n")).expect_err("too deep");
            assert!(
                err.render_plain().contains("kiln::too_deep"),
                "{}",
                err.render_plain()
            );
        }
        // Ordinary comments, slashdashes and annotations are fine.
        let text =
            "kiln 1\n/* a /* nested */ comment */\n/-pip \"x\"\npython (v)\"3.11\" /- \"y\"\n";
        parse("r.kdl", text).expect("parses");
        let huge = "// x\n".repeat(MAX_RECIPE_BYTES);
        let err = parse("r.kdl", &huge).expect_err("too large");
        assert!(err.render_plain().contains("kiln::too_large"));
    }
}
