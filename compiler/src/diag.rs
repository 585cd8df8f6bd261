//! Recipe diagnostics: every problem kiln finds in a recipe, with where it is and
//! what to write instead.
//!
//! One [`Diagnostics`] value carries all problems of one compile over one shared
//! named source, so a user fixes every mistake in one round. It renders through
//! miette (the CLI), and as plain `FILE:LINE:COL: error[code]: message` lines
//! (the frontend's build error, golden tests).

use std::fmt;
use std::sync::Arc;

use miette::{LabeledSpan, NamedSource, Severity, SourceSpan};

/// One problem in a recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Stable code, e.g. `kiln::unknown_node`.
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub span: SourceSpan,
    pub label: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(
        code: &'static str,
        span: impl Into<SourceSpan>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            span: span.into(),
            label: "here".to_string(),
            help: None,
        }
    }

    pub fn warning(
        code: &'static str,
        span: impl Into<SourceSpan>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, span, message)
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A recipe's text under its file name, shared by all its diagnostics.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<String>,
    /// Where each line starts, found once (a recipe's spans are many).
    line_starts: Arc<std::sync::OnceLock<Vec<usize>>>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        SourceFile {
            name: name.into(),
            text: Arc::new(text.into()),
            line_starts: Arc::default(),
        }
    }

    /// Byte offsets where lines start (the first is 0). Lines end where
    /// KDL says they do: CRLF, CR, LF, NEL, FF, LS or PS.
    fn line_starts(&self) -> &[usize] {
        self.line_starts.get_or_init(|| {
            let text = self.text.as_str();
            let mut starts = vec![0];
            let mut chars = text.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                if c == '\r' && chars.peek().is_some_and(|&(_, n)| n == '\n') {
                    chars.next();
                    starts.push(i + 2);
                } else if is_newline(c) {
                    starts.push(i + c.len_utf8());
                }
            }
            starts
        })
    }

    /// 1-based line and column (in characters) of a byte offset. Lines end
    /// where KDL says they do: CRLF, CR, LF, NEL, FF, LS or PS.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let text = self.text.as_str();
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let starts = self.line_starts();
        // The last line start at or before the offset; an offset between
        // the \r and \n of a CRLF is at the start of the next line.
        let mut line = starts.partition_point(|&s| s <= offset);
        let mut line_start = starts[line - 1];
        if before.ends_with('\r') && line_start < offset {
            line += 1;
            line_start = offset;
        }
        // A byte-order mark is no column an editor shows.
        let line_text = &before[line_start..];
        let line_text = line_text.strip_prefix('\u{feff}').unwrap_or(line_text);
        let col = line_text.chars().count() + 1;
        (line, col)
    }

    /// The text of the 1-based line `line`, without its line break.
    pub fn line_text(&self, line: usize) -> &str {
        let text = self.text.as_str();
        let (mut n, mut start) = (1, 0);
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if !is_newline(c) {
                continue;
            }
            if n == line {
                return &text[start..i];
            }
            let mut end = i + c.len_utf8();
            if c == '\r' && chars.peek().is_some_and(|&(_, n)| n == '\n') {
                chars.next();
                end += 1;
            }
            n += 1;
            start = end;
        }
        if n == line { &text[start..] } else { "" }
    }
}

/// KDL's newline characters (CRLF is handled by the callers).
fn is_newline(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{85}' | '\u{c}' | '\u{2028}' | '\u{2029}'
    )
}

/// All diagnostics of one compile over one source, errors and warnings.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub source: SourceFile,
    pub items: Vec<Diagnostic>,
    /// What [`Diagnostics::push`] has added (rebuilt when `items` was
    /// changed by hand).
    seen: std::collections::HashSet<u64>,
}

impl Diagnostics {
    pub fn new(source: SourceFile) -> Self {
        Diagnostics {
            source,
            items: Vec::new(),
            seen: Default::default(),
        }
    }

    /// Add a diagnostic; one already there (the same problem, found again
    /// for another platform or variant) is not added twice.
    pub fn push(&mut self, d: Diagnostic) {
        use std::hash::{Hash, Hasher};
        let key = |d: &Diagnostic| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                d.code,
                d.is_error(),
                &d.message,
                d.span.offset(),
                d.span.len(),
            )
                .hash(&mut h);
            h.finish()
        };
        // Diagnostics come in order of the recipe, so the same problem found
        // for another platform or variant is usually near the end; a set of
        // what is there keeps thousands of warnings linear.
        if self.seen.len() != self.items.len() {
            self.seen = self.items.iter().map(key).collect();
        }
        if self.seen.insert(key(&d)) {
            self.items.push(d);
        }
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| !d.is_error())
    }

    /// `FILE:LINE:COL` of a diagnostic.
    pub fn location(&self, d: &Diagnostic) -> String {
        let (line, col) = self.source.line_col(d.span.offset());
        format!("{}:{}:{}", self.source.name, line, col)
    }

    /// Plain text, one block per diagnostic: the location, the message, the
    /// recipe line with the span underlined, and the help line.
    pub fn render_plain(&self) -> String {
        let mut out = String::new();
        for d in self.in_order().into_iter().take(MAX_SHOWN) {
            let (line, col) = self.source.line_col(d.span.offset());
            let kind = if d.is_error() { "error" } else { "warning" };
            out.push_str(&format!(
                "{}:{}:{}: {}[{}]: {}\n",
                self.source.name, line, col, kind, d.code, d.message
            ));
            let text = self.source.line_text(line);
            let width = d
                .span
                .len()
                .max(1)
                .min(text.chars().count().saturating_sub(col - 1).max(1));
            out.push_str(&format!("  {line:>4} | {text}\n"));
            out.push_str(&format!(
                "       | {}{} {}\n",
                " ".repeat(col - 1),
                "^".repeat(width),
                d.label
            ));
            if let Some(help) = &d.help {
                out.push_str(&format!("       = help: {help}\n"));
            }
        }
        if let Some(more) = self.not_shown() {
            out.push_str(&more);
            out.push('\n');
        }
        out
    }

    /// The diagnostics in the recipe's order (the order they were found in
    /// for one place), as a reader goes through the file.
    pub fn in_order(&self) -> Vec<&Diagnostic> {
        let mut items: Vec<&Diagnostic> = self.items.iter().collect();
        items.sort_by_key(|d| d.span.offset());
        items
    }

    /// `… and N more problems` past the first [`MAX_SHOWN`].
    fn not_shown(&self) -> Option<String> {
        let more = self.items.len().saturating_sub(MAX_SHOWN);
        (more > 0)
            .then(|| format!("… and {more} more problem(s), not shown; fix the ones above first"))
    }

    /// A miette report value for fancy rendering.
    pub fn report(&self) -> Report {
        // miette counts a byte-order mark's bytes as columns: it is shown
        // the text without one, and the spans moved to match.
        let text = self.source.text.as_str();
        let bom = if text.starts_with('\u{feff}') {
            '\u{feff}'.len_utf8()
        } else {
            0
        };
        Report {
            source: CharColumns(
                NamedSource::new(
                    self.source.name.clone(),
                    if bom == 0 {
                        self.source.text.clone()
                    } else {
                        Arc::new(text[bom..].to_string())
                    },
                )
                .with_language("kdl"),
            ),
            items: self
                .in_order()
                .into_iter()
                .take(MAX_SHOWN)
                .map(|d| {
                    let mut moved = d.clone();
                    moved.span =
                        SourceSpan::new(d.span.offset().saturating_sub(bom).into(), d.span.len());
                    Item {
                        d: moved,
                        location: self.location(d),
                    }
                })
                .collect(),
            errors: self.errors().count(),
            warnings: self.warnings().count(),
            not_shown: self.not_shown(),
        }
    }
}

/// The most problems rendered: past a screenful they add nothing, and each
/// costs a pass over the recipe.
pub const MAX_SHOWN: usize = 50;

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_plain())
    }
}

impl std::error::Error for Diagnostics {}

/// The recipe as miette reads it, but with the snippet header's column
/// counted in characters, as kiln's own `FILE:LINE:COL` counts it (miette
/// counts bytes: `é` would be two columns).
#[derive(Debug)]
struct CharColumns(NamedSource<Arc<String>>);

impl miette::SourceCode for CharColumns {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let inner = self
            .0
            .read_span(span, context_lines_before, context_lines_after)?;
        if context_lines_before != 0 {
            // miette gives column 0 then: nothing to count.
            return Ok(inner);
        }
        let text = self.0.inner().as_str();
        let at = span.offset().min(text.len());
        let line_start = text[..at].rfind(['\n', '\r']).map_or(0, |i| i + 1);
        let Some(column) = text.get(line_start..at).map(|t| t.chars().count()) else {
            return Ok(inner);
        };
        let mut contents = miette::MietteSpanContents::new_named(
            self.0.name().to_string(),
            inner.data(),
            *inner.span(),
            inner.line(),
            column,
            inner.line_count(),
        );
        if let Some(language) = inner.language() {
            contents = contents.with_language(language);
        }
        Ok(Box::new(contents))
    }
}

/// miette view of [`Diagnostics`]: one top diagnostic whose related items
/// are the individual problems, all over one named source.
#[derive(Debug)]
pub struct Report {
    source: CharColumns,
    items: Vec<Item>,
    errors: usize,
    warnings: usize,
    not_shown: Option<String>,
}

#[derive(Debug)]
struct Item {
    d: Diagnostic,
    location: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.errors, self.warnings) {
            (0, w) => write!(f, "recipe has {w} warning(s)"),
            (e, 0) => write!(f, "recipe has {e} error(s)"),
            (e, w) => write!(f, "recipe has {e} error(s) and {w} warning(s)"),
        }
    }
}

impl std::error::Error for Report {}

impl miette::Diagnostic for Report {
    fn severity(&self) -> Option<Severity> {
        Some(if self.errors > 0 {
            Severity::Error
        } else {
            Severity::Warning
        })
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        Some(Box::new(
            self.items.iter().map(|i| i as &dyn miette::Diagnostic),
        ))
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.not_shown
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.d.message)
    }
}

impl std::error::Error for Item {}

impl miette::Diagnostic for Item {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.d.code))
    }

    fn severity(&self) -> Option<Severity> {
        Some(self.d.severity)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.d
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some(self.d.label.clone()),
            self.d.span,
        ))))
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate nearest to `word`, when it is near enough to be a typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let length = word.chars().count();
    let limit = (length / 3).max(2);
    let lower = word.to_lowercase();
    // The same word in another case is the best guess (`B` for `b`). Only
    // names of a name's length get a distance (it costs the product of
    // the two lengths): a typo is not 60,000 characters long.
    candidates
        .into_iter()
        .map(|c| {
            let other = c.chars().count();
            let distance = if c.to_lowercase() == lower {
                0
            } else if length > 64 || other > 64 || other.abs_diff(length) > limit {
                usize::MAX
            } else {
                edit_distance(word, c).max(1)
            };
            (distance, c)
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_prefers_the_same_word_in_another_case() {
        assert_eq!(nearest("B", ["a", "b"]), Some("b"));
        assert_eq!(nearest("GPU", ["cpu", "gpu"]), Some("gpu"));
        assert_eq!(nearest("gpx", ["cpu", "gpu"]), Some("gpu"));
    }

    #[test]
    fn rendering_stops_after_a_screenful_and_says_how_many_are_left() {
        let text = "x\n".repeat(200);
        let mut diags = Diagnostics::new(SourceFile::new("r.kdl", text));
        for i in 0..120 {
            diags.push(Diagnostic::error(
                "kiln::test",
                SourceSpan::from((i * 2, 1)),
                "bad",
            ));
        }
        let plain = diags.render_plain();
        assert_eq!(plain.matches("error[kiln::test]").count(), MAX_SHOWN);
        assert!(plain.ends_with("… and 70 more problem(s), not shown; fix the ones above first\n"));
        assert_eq!(diags.report().to_string(), "recipe has 120 error(s)");
    }

    #[test]
    fn the_snippet_header_counts_characters_as_the_location_does() {
        let text = "kiln 1\nlabel \"é日本語\" \"x\"; python 3.10\n";
        let mut diags = Diagnostics::new(SourceFile::new("r.kdl", text));
        let at = text.find("3.10").expect("3.10");
        diags.push(Diagnostic::error(
            "kiln::test",
            SourceSpan::from((at, 4)),
            "bad",
        ));
        let mut out = String::new();
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .render_report(&mut out, &diags.report())
            .expect("renders");
        let location = diags.location(&diags.items[0]);
        assert_eq!(location, "r.kdl:2:26");
        assert!(out.contains("[r.kdl:2:26]"), "{out}");
    }

    #[test]
    fn problems_are_shown_in_the_recipes_order() {
        let mut diags = Diagnostics::new(SourceFile::new("r.kdl", "a\nb\nc\n"));
        diags.push(Diagnostic::error(
            "kiln::test",
            SourceSpan::from((4, 1)),
            "third",
        ));
        diags.push(Diagnostic::warning(
            "kiln::test",
            SourceSpan::from((0, 1)),
            "first",
        ));
        diags.push(Diagnostic::error(
            "kiln::test",
            SourceSpan::from((2, 1)),
            "second",
        ));
        let plain = diags.render_plain();
        let at = |m: &str| plain.find(m).expect(m);
        assert!(
            at("first") < at("second") && at("second") < at("third"),
            "{plain}"
        );
    }

    #[test]
    fn lines_end_at_every_kdl_newline() {
        let src = SourceFile::new("r.kdl", "kiln 1\rpython \"3.11\"\r\nname \"x\"\u{2028}bad");
        let off = src.text.find("bad").expect("bad");
        assert_eq!(src.line_col(off), (4, 1));
        assert_eq!(
            src.line_col(src.text.find("name").expect("name") + 5),
            (3, 6)
        );
        assert_eq!(src.line_text(2), "python \"3.11\"");
        assert_eq!(src.line_text(4), "bad");
        assert_eq!(src.line_text(5), "");
    }

    /// The line index agrees with a plain scan of the text before each
    /// offset, at every offset of a text with every kind of line break.
    #[test]
    fn line_col_agrees_with_a_scan_at_every_offset() {
        let text = "\u{feff}kiln 1\r\npython \"3.11\"\r\rname \"é\"\u{2028}a\u{85}\u{c}b\n\r\n";
        let src = SourceFile::new("r.kdl", text);
        for offset in 0..=text.len() + 1 {
            let mut o = offset.min(text.len());
            while !text.is_char_boundary(o) {
                o -= 1;
            }
            let before = &text[..o];
            let (mut line, mut start) = (1, 0);
            let mut chars = before.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                if c == '\r' && chars.peek().is_some_and(|&(_, n)| n == '\n') {
                    chars.next();
                    line += 1;
                    start = i + 2;
                } else if is_newline(c) {
                    line += 1;
                    start = i + c.len_utf8();
                }
            }
            let rest = &before[start..];
            let col = rest
                .strip_prefix('\u{feff}')
                .unwrap_or(rest)
                .chars()
                .count()
                + 1;
            assert_eq!(src.line_col(offset), (line, col), "offset {offset}");
        }
    }

    #[test]
    fn line_col_counts_characters_not_bytes() {
        let src = SourceFile::new("r.kdl", "// é\nkiln 1\n  python 3.10\n");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(6), (2, 1));
        // "é" is two bytes but one column.
        assert_eq!(src.line_col(5), (1, 5));
        assert_eq!(src.line_col(15), (3, 3));
        assert_eq!(src.line_text(3), "  python 3.10");
        // Offsets past the end or inside a character do not panic.
        assert_eq!(src.line_col(4).0, 1);
        assert_eq!(src.line_col(999).0, 4);
        let bom = SourceFile::new("r.kdl", "\u{feff}kiln 2\n");
        assert_eq!(bom.line_col(3 + 5), (1, 6));
    }

    #[test]
    fn nearest_suggests_typos_only() {
        let names = ["framework", "python", "pip"];
        assert_eq!(nearest("frameworkk", names), Some("framework"));
        assert_eq!(nearest("pyhton", names), Some("python"));
        assert_eq!(nearest("zzzzzzzz", names), None);
    }

    #[test]
    fn plain_rendering_names_file_line_col() {
        let mut ds = Diagnostics::new(SourceFile::new("env.kdl", "kiln 1\nfrob 2\n"));
        ds.push(
            Diagnostic::error(
                "kiln::unknown_node",
                SourceSpan::new(7.into(), 4),
                "unknown node `frob`",
            )
            .with_help("remove it"),
        );
        let text = ds.render_plain();
        assert!(text.starts_with("env.kdl:2:1: error[kiln::unknown_node]: unknown node `frob`\n"));
        assert!(text.contains("   2 | frob 2\n"));
        assert!(text.contains("| ^^^^ here\n"));
        assert!(text.contains("= help: remove it"));
    }
}

/// Where the first byte that is not UTF-8 is in a file that should be
/// text: `(line, column)`, 1-based, the column in bytes.
pub fn invalid_utf8_position(bytes: &[u8]) -> Option<(usize, usize)> {
    let offset = std::str::from_utf8(bytes).err()?.valid_up_to();
    let before = &bytes[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    Some((line, offset - line_start + 1))
}

#[cfg(test)]
mod utf8_tests {
    #[test]
    fn the_first_invalid_byte_is_located_by_line_and_column() {
        assert_eq!(
            super::invalid_utf8_position(b"kiln 1\nname \"a\xffb\"\n"),
            Some((2, 8))
        );
        assert_eq!(super::invalid_utf8_position(b"\xfe"), Some((1, 1)));
        assert_eq!(
            super::invalid_utf8_position("kiln 1\n\u{e9}".as_bytes()),
            None
        );
    }
}
