//! A readable JSON form of a marshaled `Definition` (`kiln compile --format
//! json`, golden snapshots). It is decoded from the bytes, so it shows what
//! the engine gets, with digests shortened to 12 hex digits.

use kiln_proto::pb;
use prost::Message;
use serde_json::{Map, Value, json};

fn short(d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    hex.chars().take(12).collect()
}

fn input_ref(i: &pb::Input) -> String {
    format!("{}:{}", short(&i.digest), i.index)
}

/// Render a definition. Ops that fail to decode are shown as errors, not
/// skipped, so a snapshot can never hide them.
pub fn definition_json(def: &pb::Definition) -> Value {
    use sha2::{Digest, Sha256};
    let mut ops = Vec::new();
    let mut terminal = Value::Null;
    for (i, bytes) in def.def.iter().enumerate() {
        let digest = format!("sha256:{:x}", Sha256::digest(bytes));
        let op = match pb::Op::decode(bytes.as_slice()) {
            Ok(op) => op,
            Err(e) => {
                ops.push(json!({"digest": short(&digest), "error": e.to_string()}));
                continue;
            }
        };
        if i + 1 == def.def.len() && op.op.is_none() {
            terminal = op
                .inputs
                .first()
                .map(|i| Value::String(input_ref(i)))
                .unwrap_or(Value::Null);
            continue;
        }
        let mut o = Map::new();
        o.insert("digest".into(), Value::String(short(&digest)));
        if let Some(md) = def.metadata.get(&digest) {
            if let Some(name) = md.description.get("llb.customname") {
                o.insert("name".into(), Value::String(name.clone()));
            }
            if let Some(g) = &md.progress_group {
                o.insert("group".into(), Value::String(g.name.clone()));
            }
            let caps: Vec<&String> = md.caps.keys().collect();
            o.insert("caps".into(), json!(caps));
        }
        if !op.inputs.is_empty() {
            o.insert(
                "inputs".into(),
                json!(op.inputs.iter().map(input_ref).collect::<Vec<_>>()),
            );
        }
        if let Some(p) = &op.platform {
            let mut s = format!("{}/{}", p.os, p.architecture);
            if !p.variant.is_empty() {
                s = format!("{s}/{}", p.variant);
            }
            o.insert("platform".into(), Value::String(s));
        }
        match &op.op {
            Some(pb::op::Op::Source(s)) => {
                let mut v = json!({"identifier": s.identifier});
                if !s.attrs.is_empty() {
                    v["attrs"] = json!(s.attrs);
                }
                o.insert("source".into(), v);
            }
            Some(pb::op::Op::Exec(e)) => {
                o.insert("exec".into(), exec_json(e));
            }
            Some(pb::op::Op::File(f)) => {
                o.insert(
                    "file".into(),
                    Value::Array(f.actions.iter().map(file_action_json).collect()),
                );
            }
            Some(pb::op::Op::Merge(m)) => {
                o.insert(
                    "merge".into(),
                    json!(m.inputs.iter().map(|i| i.input).collect::<Vec<_>>()),
                );
            }
            Some(pb::op::Op::Diff(d)) => {
                o.insert(
                    "diff".into(),
                    json!({
                        "lower": d.lower.as_ref().map_or(-1, |l| l.input),
                        "upper": d.upper.as_ref().map_or(-1, |u| u.input),
                    }),
                );
            }
            Some(other) => {
                o.insert("other".into(), Value::String(format!("{other:?}")));
            }
            None => {}
        }
        ops.push(Value::Object(o));
    }
    let mut out = json!({"ops": ops, "result": terminal});
    if let Some(src) = &def.source {
        let mut locs = Map::new();
        for (digest, l) in &src.locations {
            let ranges: Vec<String> = l
                .locations
                .iter()
                .flat_map(|loc| loc.ranges.iter())
                .map(|r| {
                    let s = r.start.unwrap_or_default();
                    let e = r.end.unwrap_or_default();
                    format!("{}:{}-{}:{}", s.line, s.character, e.line, e.character)
                })
                .collect();
            locs.insert(short(digest), json!(ranges));
        }
        out["source_map"] = json!({
            "files": src.infos.iter().map(|i| json!({"filename": i.filename, "language": i.language, "bytes": i.data.len()})).collect::<Vec<_>>(),
            "locations": locs,
        });
    }
    out
}

fn exec_json(e: &pb::ExecOp) -> Value {
    let meta = e.meta.clone().unwrap_or_default();
    let mounts: Vec<Value> = e
        .mounts
        .iter()
        .map(|m| {
            let kind = pb::MountType::try_from(m.mount_type)
                .map(|t| t.as_str_name().to_ascii_lowercase())
                .unwrap_or_else(|_| m.mount_type.to_string());
            let mut v = json!({"type": kind, "target": m.dest});
            if m.input >= 0 {
                v["input"] = json!(m.input);
            }
            if m.output >= 0 {
                v["output"] = json!(m.output);
            }
            if m.readonly {
                v["readonly"] = json!(true);
            }
            if !m.selector.is_empty() {
                v["selector"] = json!(m.selector);
            }
            if let Some(c) = &m.cache_opt {
                let sharing = pb::CacheSharingOpt::try_from(c.sharing)
                    .map(|s| s.as_str_name().to_ascii_lowercase())
                    .unwrap_or_default();
                v["cache"] = json!({"id": c.id, "sharing": sharing});
            }
            if let Some(t) = m.tmpfs_opt.as_ref().filter(|t| t.size > 0) {
                v["size"] = json!(t.size);
            }
            if let Some(s) = &m.secret_opt {
                v["secret"] = json!({"id": s.id, "uid": s.uid, "gid": s.gid, "mode": format!("{:o}", s.mode), "optional": s.optional});
            }
            v
        })
        .collect();
    let mut v = json!({
        "args": meta.args,
        "env": meta.env,
        "cwd": meta.cwd,
        "mounts": mounts,
    });
    if !meta.user.is_empty() {
        v["user"] = json!(meta.user);
    }
    if !meta.extra_hosts.is_empty() {
        v["extra_hosts"] = json!(
            meta.extra_hosts
                .iter()
                .map(|h| format!("{}={}", h.host, h.ip))
                .collect::<Vec<_>>()
        );
    }
    if !meta.ulimit.is_empty() {
        v["ulimit"] = json!(
            meta.ulimit
                .iter()
                .map(|u| format!("{}={}:{}", u.name, u.soft, u.hard))
                .collect::<Vec<_>>()
        );
    }
    if let Some(p) = &meta.proxy_env {
        let mut proxy = serde_json::Map::new();
        for (k, val) in [
            ("http_proxy", &p.http_proxy),
            ("https_proxy", &p.https_proxy),
            ("ftp_proxy", &p.ftp_proxy),
            ("no_proxy", &p.no_proxy),
            ("all_proxy", &p.all_proxy),
        ] {
            if !val.is_empty() {
                proxy.insert(k.into(), json!(val));
            }
        }
        v["proxy_env"] = Value::Object(proxy);
    }
    if e.network != 0 {
        v["network"] = json!(
            pb::NetMode::try_from(e.network)
                .map(|n| n.as_str_name().to_ascii_lowercase())
                .unwrap_or_default()
        );
    }
    v
}

fn chown_json(c: &Option<pb::ChownOpt>) -> Value {
    let id = |u: &Option<pb::UserOpt>| match u.as_ref().and_then(|u| u.user.as_ref()) {
        Some(pb::user_opt::User::ById(id)) => json!(id),
        Some(pb::user_opt::User::ByName(n)) => json!(n.name),
        None => Value::Null,
    };
    match c {
        Some(c) => json!(format!("{}:{}", id(&c.user), id(&c.group))),
        None => Value::Null,
    }
}

fn file_action_json(a: &pb::FileAction) -> Value {
    let mut v = json!({"input": a.input, "secondary": a.secondary_input, "output": a.output});
    match &a.action {
        Some(pb::file_action::Action::Copy(c)) => {
            let mut copy = json!({"src": c.src, "dest": c.dest});
            if c.owner.is_some() {
                copy["owner"] = chown_json(&c.owner);
            }
            if c.dir_copy_contents {
                copy["contents"] = json!(true);
            }
            if c.create_dest_path {
                copy["parents"] = json!(true);
            }
            if !c.include_patterns.is_empty() {
                copy["include"] = json!(c.include_patterns);
            }
            v["copy"] = copy;
        }
        Some(pb::file_action::Action::Mkdir(m)) => {
            let mut mk =
                json!({"path": m.path, "mode": format!("{:o}", m.mode), "parents": m.make_parents});
            if m.owner.is_some() {
                mk["owner"] = chown_json(&m.owner);
            }
            v["mkdir"] = mk;
        }
        Some(pb::file_action::Action::Mkfile(m)) => {
            let mut mk = json!({"path": m.path, "mode": format!("{:o}", m.mode), "data": String::from_utf8_lossy(&m.data)});
            if m.owner.is_some() {
                mk["owner"] = chown_json(&m.owner);
            }
            v["mkfile"] = mk;
        }
        Some(pb::file_action::Action::Rm(r)) => {
            v["rm"] = json!({"path": r.path, "allow_not_found": r.allow_not_found, "wildcard": r.allow_wildcard});
        }
        Some(pb::file_action::Action::Symlink(s)) => {
            v["symlink"] = json!({"old": s.oldpath, "new": s.newpath});
        }
        None => {}
    }
    v
}
