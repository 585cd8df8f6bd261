//! No input makes kiln panic: every recipe either compiles or comes back as
//! diagnostics that point inside the text. Truncations and byte mutations of
//! the examples, odd Unicode, wrong types on every node, huge and deep input.

use std::path::Path;

use kiln_compiler::{Diagnostics, Options, Platform};

fn examples() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).expect("examples/") {
        let p = e.expect("entry").path().join("kiln.kdl");
        if p.is_file() {
            v.push(std::fs::read_to_string(p).expect("readable"));
        }
    }
    v.sort();
    v
}

/// Compile with a few option sets; check any diagnostics point into the text.
fn survive(text: &str) {
    let opts = [
        Options::default(),
        Options {
            target: Some("gpu".into()),
            ..Options::default()
        },
        Options {
            platforms: vec![
                Platform::parse("linux/amd64").expect("p"),
                Platform::parse("linux/arm64").expect("p"),
            ],
            ..Options::default()
        },
    ];
    for o in &opts {
        let r = std::panic::catch_unwind(|| kiln_compiler::compile("fuzz.kdl", text, o));
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(d)) => check_spans(&d, text),
            Err(_) => panic!("kiln panicked on:\n{text}"),
        }
    }
}

fn check_spans(d: &Diagnostics, text: &str) {
    assert!(d.has_errors(), "a failed compile carries an error");
    for item in &d.items {
        assert!(
            item.span.offset() + item.span.len() <= text.len().max(1),
            "span {:?} of `{}` lies outside the {}-byte recipe",
            item.span,
            item.message,
            text.len()
        );
        let _ = d.render_plain();
    }
}

/// A small deterministic generator (no dependency, same cases every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn every_truncation_of_every_example() {
    for text in examples() {
        let mut cut = 0;
        while cut < text.len() {
            if text.is_char_boundary(cut) {
                survive(&text[..cut]);
            }
            cut += 7;
        }
    }
}

#[test]
fn random_mutations() {
    let pieces: &[&str] = &[
        "\"",
        "{",
        "}",
        ";",
        "=",
        "#true",
        "#null",
        "-1",
        "1e309",
        "0x7fffffffffffffff",
        "\u{202e}",
        "\u{200b}",
        "é",
        "🐍",
        "\\",
        "/*",
        "*/",
        "variant=\"gpu\"",
        "cuda \"12.4\"",
        "\n",
        "r#\"",
        "\"#",
        "(type)",
        "null",
        "framework \"jax\"",
        "python \"3.99\"",
        "base \"\"",
        "copy \"/\" \"/\"",
        "user \"root\" uid=0",
    ];
    let mut rng = Lcg(0x6b696c6e);
    for text in examples() {
        for _ in 0..300 {
            let mut t = text.clone();
            for _ in 0..1 + rng.below(4) {
                let mut at = rng.below(t.len());
                while !t.is_char_boundary(at) {
                    at -= 1;
                }
                match rng.below(3) {
                    0 => t.insert_str(at, pieces[rng.below(pieces.len())]),
                    1 => {
                        let mut end = (at + 1 + rng.below(12)).min(t.len());
                        while !t.is_char_boundary(end) {
                            end -= 1;
                        }
                        t.replace_range(at..end, "");
                    }
                    _ => {
                        let mut end = (at + 1 + rng.below(6)).min(t.len());
                        while !t.is_char_boundary(end) {
                            end -= 1;
                        }
                        let p = pieces[rng.below(pieces.len())];
                        t.replace_range(at..end, p);
                    }
                }
            }
            survive(&t);
        }
    }
}

#[test]
fn wrong_types_on_every_node() {
    let values = [
        "1", "1.5", "#true", "#null", "\"\"", "\"x y\"", "-3", "(t)\"v\"", "k=1", "k=\"v\"",
    ];
    for node in kiln_compiler::model::NODE_NAMES {
        for v in values {
            survive(&format!("kiln 1\npython \"3.11\"\n{node} {v}\n"));
            survive(&format!(
                "kiln 1\npython \"3.11\"\n{node} {v} {v} variant={v}\n"
            ));
            survive(&format!(
                "kiln 1\npython \"3.11\"\n{node} {{ {node} {v}; }}\n"
            ));
            survive(&format!(
                "kiln 1\npython \"3.11\"\nvariant \"a\" {{ {node} {v}; }}\n"
            ));
        }
        survive(&format!("kiln 1\npython \"3.11\"\n{node}\n"));
    }
}

#[test]
fn odd_unicode_huge_and_deep_input() {
    survive("");
    survive("\u{feff}");
    survive("\u{feff}// syntax=kiln/frontend:dev\nkiln 1\npython \"3.11\"\n");
    survive("# syntax=kiln/frontend:dev\r\nkiln 1\r\npython \"3.11\"\r\n");
    survive("kiln 1\npython \"3.11\"\nname \"\u{202e}evil\u{200b}\"\nenv \"🐍\"=\"x\"\n");
    survive("kiln 1\npython \"3.11\"\nworkdir \"/app/\u{0}\"\n");
    survive("kiln 1\npython \"3.11\"\ncopy \"é/ü\" \"/app/日本\"\n");
    survive("kiln 1\npython \"3.11\"\nuser \"app\" uid=99999999999999999999999\n");
    survive(&"{".repeat(10_000));
    survive(&format!(
        "kiln 1\npython \"3.11\"\n{}",
        "variant \"v\" {\n".repeat(200)
    ));
    let huge = format!(
        "kiln 1\npython \"3.11\"\n{}",
        "pip \"six==1.16.0\"\n".repeat(80_000)
    );
    let d = kiln_compiler::compile("huge.kdl", &huge, &Options::default()).expect_err("too large");
    assert!(d.items.iter().any(|i| i.code == "kiln::too_large"));
    let many = format!(
        "kiln 1\npython \"3.11\"\npip {}\n",
        (0..2000)
            .map(|i| format!("\"p{i}==1.0\""))
            .collect::<Vec<_>>()
            .join(" ")
    );
    survive(&many);
}
