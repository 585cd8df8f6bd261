//! Container image references, normalised the way the engine resolves them
//! (`python:3.11-slim` → `docker.io/library/python:3.11-slim`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageRef {
    /// Registry host, `docker.io` when none is written.
    pub domain: String,
    /// Repository path, with `library/` for official Docker Hub images.
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:…` when the reference pins a digest.
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, &'static str> {
        if s.is_empty() {
            return Err("it is empty");
        }
        if s.len() > 512 {
            return Err("it is too long");
        }
        if s.contains("://") {
            return Err("write the image name without a scheme");
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("it contains whitespace");
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or("a digest is written @sha256:<64 hex digits>")?;
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                {
                    return Err("a digest is written @sha256:<64 lower-case hex digits>");
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err("the tag may use letters, digits, `_`, `.` and `-`");
            }
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let domain = if parts.len() > 1
            && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
        {
            parts.remove(0).to_string()
        } else {
            "docker.io".to_string()
        };
        if parts.is_empty() || parts.iter().any(|p| !valid_path_component(p)) {
            return Err(
                "the repository name may use lower-case letters, digits and `.`, `_`, `-` between them",
            );
        }
        let mut path = parts.join("/");
        if domain == "docker.io" && parts.len() == 1 {
            path = format!("library/{path}");
        }
        Ok(ImageRef {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The short repository name without `library/` and docker.io, e.g. `python`.
    pub fn familiar_name(&self) -> String {
        if self.domain == "docker.io" {
            self.path
                .strip_prefix("library/")
                .unwrap_or(&self.path)
                .to_string()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// `python:3.11-slim`, `nvidia/cuda:12.4.1-runtime-ubuntu22.04`: what a
    /// person writes, for op names.
    pub fn familiar_name_tag(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.familiar_name()),
            None => self.familiar_name(),
        }
    }

    /// The same image pinned to `digest`.
    pub fn with_digest(&self, digest: &str) -> ImageRef {
        ImageRef {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }
}

fn valid_path_component(p: &str) -> bool {
    !p.is_empty()
        && p.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && p.bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// The fully qualified form BuildKit uses in `docker-image://` identifiers.
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => write!(f, ":{t}@{d}"),
            (Some(t), None) => write!(f, ":{t}"),
            (None, Some(d)) => write!(f, "@{d}"),
            (None, None) => write!(f, ":latest"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_the_engine() {
        let r = ImageRef::parse("python:3.11-slim").expect("valid");
        assert_eq!(r.to_string(), "docker.io/library/python:3.11-slim");
        assert_eq!(r.familiar_name(), "python");
        let r = ImageRef::parse("nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04").expect("valid");
        assert_eq!(
            r.to_string(),
            "docker.io/nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04"
        );
        let r = ImageRef::parse("localhost:5000/team/base").expect("valid");
        assert_eq!(r.to_string(), "localhost:5000/team/base:latest");
        let d = format!("busybox@sha256:{}", "a".repeat(64));
        assert_eq!(
            ImageRef::parse(&d).expect("valid").to_string(),
            format!("docker.io/library/busybox@sha256:{}", "a".repeat(64))
        );
    }

    #[test]
    fn rejects_what_is_not_a_reference() {
        for bad in [
            "",
            "Python:3",
            "python:",
            "a b",
            "docker://x",
            "x@sha256:12",
            "x:t@md5:aa",
            "/x",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
