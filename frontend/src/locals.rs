//! Tie every `local://` source of a definition to the client session that
//! owns those files.
//!
//! A local source with no `local.session` attribute has the same digest in
//! every build that names the same local with the same options. BuildKit
//! merges identical vertices across the builds it runs at once, so two users
//! building `-f env.kdl` at the same moment can read each other's recipe and
//! build context. BuildKit's own frontends set the session id on each local
//! for this reason (`frontend/dockerui/config.go`: `llb.SessionID`); the Go
//! client falls back to a `local.unique` id (`client/llb/source.go`).
//!
//! The compiler builds graphs without knowing the session, so the frontend
//! adds the attribute here and re-digests the ops it changed and every op
//! downstream of them.

use std::collections::BTreeMap;

use kiln_proto::pb;
use prost::Message;
use sha2::{Digest, Sha256};

pub const SESSION_ATTR: &str = "local.session";
pub const SESSION_CAP: &str = "source.local.sessionid";

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Which session serves each local: `local-sessionid:NAME` options name one
/// per local (buildx with several clients), the build's own session is the
/// default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sessions {
    pub default: Option<String>,
    pub by_local: BTreeMap<String, String>,
}

impl Sessions {
    pub fn for_local(&self, name: &str) -> Option<&str> {
        self.by_local
            .get(name)
            .or(self.default.as_ref())
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.default.as_deref().is_none_or(str::is_empty) && self.by_local.is_empty()
    }
}

/// Set `local.session` on each local source that lacks it. Ops are in
/// dependency order, so one pass renames inputs before their users are
/// re-encoded. Unchanged ops keep their bytes and digests.
pub fn bind_to_session(def: &mut pb::Definition, sessions: &Sessions) {
    if sessions.is_empty() {
        return;
    }
    let mut renamed: BTreeMap<String, String> = BTreeMap::new();
    let mut patched_sources: Vec<String> = Vec::new();
    for bytes in &mut def.def {
        let Ok(mut op) = pb::Op::decode(bytes.as_slice()) else {
            continue;
        };
        let mut changed = false;
        for input in &mut op.inputs {
            if let Some(new) = renamed.get(&input.digest) {
                input.digest = new.clone();
                changed = true;
            }
        }
        let mut is_patched_source = false;
        if let Some(pb::op::Op::Source(src)) = &mut op.op {
            if let Some(name) = src.identifier.strip_prefix("local://") {
                if let Some(session) = sessions.for_local(name) {
                    if !src.attrs.contains_key(SESSION_ATTR) {
                        src.attrs
                            .insert(SESSION_ATTR.to_string(), session.to_string());
                        changed = true;
                        is_patched_source = true;
                    }
                }
            }
        }
        if !changed {
            continue;
        }
        let old = digest(bytes);
        *bytes = kiln_compiler::llb::encode_op(&op);
        let new = digest(bytes);
        if is_patched_source {
            patched_sources.push(new.clone());
        }
        renamed.insert(old, new);
    }
    if renamed.is_empty() {
        return;
    }
    let rekey = |key: String| renamed.get(&key).cloned().unwrap_or(key);
    def.metadata = std::mem::take(&mut def.metadata)
        .into_iter()
        .map(|(k, v)| (rekey(k), v))
        .collect();
    for d in patched_sources {
        def.metadata
            .entry(d)
            .or_default()
            .caps
            .insert(SESSION_CAP.to_string(), true);
    }
    if let Some(source) = def.source.as_mut() {
        source.locations = std::mem::take(&mut source.locations)
            .into_iter()
            .map(|(k, v)| (rekey(k), v))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_compiler::Platform;
    use kiln_compiler::llb::{Exec, LocalOpts, Mount, OpMeta, State, marshal};

    fn ops(def: &pb::Definition) -> Vec<pb::Op> {
        def.def
            .iter()
            .map(|b| pb::Op::decode(b.as_slice()).expect("op"))
            .collect()
    }

    fn sessions(default: &str) -> Sessions {
        Sessions {
            default: Some(default.to_string()),
            by_local: BTreeMap::new(),
        }
    }

    /// Every input names an op of the definition, by its actual digest.
    fn assert_consistent(def: &pb::Definition) {
        let digests: Vec<String> = def.def.iter().map(|b| digest(b)).collect();
        for op in ops(def) {
            for input in op.inputs {
                assert!(
                    digests.contains(&input.digest),
                    "dangling input {}",
                    input.digest
                );
            }
        }
        for key in def.metadata.keys() {
            assert!(digests.contains(key), "metadata for a missing op {key}");
        }
    }

    fn graph() -> pb::Definition {
        let ctx = State::local("context", &LocalOpts::default(), OpMeta::named("ctx"));
        let platform = Platform::linux_amd64();
        let base = State::image(
            "docker.io/library/busybox:latest",
            &platform,
            OpMeta::named("base"),
        );
        let exec = Exec::shell("true", &platform, OpMeta::named("run")).mount(Mount::Bind {
            target: "/src".into(),
            source: ctx,
            selector: None,
            readonly: true,
        });
        marshal(&base.run(exec).root(), None).definition
    }

    #[test]
    fn locals_get_the_session_and_the_graph_stays_wired() {
        let before = graph();
        let mut def = before.clone();
        bind_to_session(&mut def, &sessions("s-123"));
        assert_consistent(&def);

        let local = ops(&def)
            .into_iter()
            .find_map(|op| match op.op {
                Some(pb::op::Op::Source(s)) if s.identifier == "local://context" => Some(s),
                _ => None,
            })
            .expect("the local");
        assert_eq!(local.attrs[SESSION_ATTR], "s-123");

        // The image source is untouched; the exec and terminal are re-digested.
        let same: Vec<_> = def.def.iter().filter(|b| before.def.contains(b)).collect();
        assert_eq!(same.len(), 1, "only the image op keeps its bytes");
        assert_eq!(def.metadata.len(), before.metadata.len());
        assert!(
            def.metadata
                .values()
                .any(|m| m.caps.contains_key(SESSION_CAP))
        );
    }

    #[test]
    fn a_per_local_session_wins_and_no_session_changes_nothing() {
        let mut def = graph();
        let s = Sessions {
            default: Some("main".into()),
            by_local: BTreeMap::from([("context".to_string(), "other".to_string())]),
        };
        bind_to_session(&mut def, &s);
        let attrs: Vec<String> = ops(&def)
            .into_iter()
            .filter_map(|op| match op.op {
                Some(pb::op::Op::Source(s)) => s.attrs.get(SESSION_ATTR).cloned(),
                _ => None,
            })
            .collect();
        assert_eq!(attrs, ["other"]);

        let before = graph();
        let mut def = before.clone();
        bind_to_session(&mut def, &Sessions::default());
        assert_eq!(def, before);
    }
}
