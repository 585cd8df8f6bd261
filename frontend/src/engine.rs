//! The engine as kiln uses it: the `LLBBridge` calls of one build, gated on
//! the capabilities the engine announced in `Ping`.

use std::collections::{BTreeMap, BTreeSet};

use kiln_compiler::{EngineCaps, ImageConfig, Platform, ResolvedImage};
use kiln_proto::apicaps::ApiCap;
use kiln_proto::gateway::llb_bridge_client::LlbBridgeClient;
use kiln_proto::gateway::{self, PingRequest, PongResponse};
use kiln_proto::pb;
use tonic::transport::Channel;

use crate::failure::Failure;
use crate::options::{CacheImport, ResolveMode};

/// Gateway capabilities (`frontend/gateway/pb/caps.go`).
pub mod gateway_cap {
    pub const RETURN: &str = "return";
    pub const RETURN_MAP: &str = "returnmap";
    pub const PROTO_REF_ARRAY: &str = "proto.refarray";
    pub const FRONTEND_INPUTS: &str = "frontend.inputs";
    pub const SOLVE_EVALUATE: &str = "gateway.solve.evaluate";
    pub const EVALUATE: &str = "gateway.evaluate";
    pub const STAT_FILE: &str = "statfile";
    pub const WARNINGS: &str = "gateway.warnings";
    pub const SOURCE_META_RESOLVER: &str = "source.metaresolver";
    pub const IMPORT_CACHES: &str = "importcaches";
}

/// LLB capabilities (`solver/pb/caps.go`).
pub mod llb_cap {
    pub const MERGE_OP: &str = "mergeop";
    pub const DIFF_OP: &str = "diffop";
    pub const IGNORE_CACHE: &str = "meta.ignorecache";
}

/// What an engine that answers `Ping` with no caps at all supports: the
/// frozen lists of the Go client (`grpcclient.defaultCaps`,
/// `defaultLLBCaps`), from before caps were reported.
const DEFAULT_GATEWAY_CAPS: &[&str] = &[
    "solve.base",
    "solve.inlinereturn",
    "resolveimage",
    "readfile",
];
const DEFAULT_LLB_CAPS: &[&str] = &[
    "source.image",
    "source.local",
    "source.local.unique",
    "source.local.sessionid",
    "source.local.includepatterns",
    "source.local.followpaths",
    "source.local.excludepatterns",
    "source.local.sharedkeyhint",
    "source.git",
    "source.git.keepgitdir",
    "source.git.fullurl",
    "source.http",
    "source.http.checksum",
    "source.http.perm",
    "soruce.http.uidgid",
    "source.buildop.llbfilename",
    "exec.meta.base",
    "exec.meta.proxyenv",
    "exec.mount.bind",
    "exec.mount.cache",
    "exec.mount.cache.sharing",
    "exec.mount.selector",
    "exec.mount.tmpfs",
    "exec.mount.secret",
    "constraints",
    "platform",
    "meta.ignorecache",
    "meta.description",
    "meta.exportcache",
];

/// The capabilities an engine announced (only the enabled ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    pub gateway: BTreeSet<String>,
    pub llb: BTreeSet<String>,
}

fn enabled(caps: &[ApiCap], defaults: &[&str]) -> BTreeSet<String> {
    if caps.is_empty() {
        return defaults.iter().map(|c| (*c).to_string()).collect();
    }
    caps.iter()
        .filter(|c| c.enabled)
        .map(|c| c.id.clone())
        .collect()
}

impl Caps {
    pub fn from_pong(pong: &PongResponse) -> Caps {
        Caps {
            gateway: enabled(&pong.frontend_api_caps, DEFAULT_GATEWAY_CAPS),
            llb: enabled(&pong.llb_caps, DEFAULT_LLB_CAPS),
        }
    }

    pub fn has_gateway(&self, id: &str) -> bool {
        self.gateway.contains(id)
    }

    pub fn has_llb(&self, id: &str) -> bool {
        self.llb.contains(id)
    }

    /// What the compiler may use.
    pub fn engine_caps(&self) -> EngineCaps {
        EngineCaps {
            merge_diff: self.has_llb(llb_cap::MERGE_OP) && self.has_llb(llb_cap::DIFF_OP),
            // Source maps are plain fields of the Definition: an engine that
            // does not know them ignores them, so there is no cap to check.
            source_maps: true,
        }
    }

    /// LLB caps a definition's ops declare that the engine lacks.
    pub fn missing_llb(&self, def: &pb::Definition) -> BTreeSet<String> {
        def.metadata
            .values()
            .flat_map(|md| md.caps.iter())
            .filter(|(cap, on)| **on && !self.has_llb(cap))
            .map(|(cap, _)| cap.clone())
            .collect()
    }
}

/// An `LLBBridge` client and what its engine can do.
#[derive(Debug, Clone)]
pub struct Engine {
    client: LlbBridgeClient<Channel>,
    pub caps: Caps,
    /// The first worker's first platform, from `Ping`.
    pub worker_platform: Option<Platform>,
}

/// Whether an engine's error says a path is not there (a `ReadFile`,
/// `StatFile` or `ReadDir` of a path the result lacks).
pub fn not_found(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::NotFound || status.message().contains("no such file")
}

pub fn platform_to_pb(p: &Platform) -> pb::Platform {
    pb::Platform {
        architecture: p.architecture.clone(),
        os: p.os.clone(),
        variant: p.variant.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// The id of the single ref a solve returned, in any of the engine's forms.
fn ref_id(resp: gateway::SolveResponse) -> Option<String> {
    use gateway::result::Result as R;
    match resp.result.and_then(|r| r.result) {
        Some(R::Ref(r)) => Some(r.id),
        Some(R::RefDeprecated(id)) => Some(id),
        Some(R::Refs(_) | R::RefsDeprecated(_)) => None,
        None => Some(resp.r#ref),
    }
}

impl Engine {
    /// Ask the engine what it supports.
    pub async fn connect(mut client: LlbBridgeClient<Channel>) -> Result<Engine, Failure> {
        let pong = client
            .ping(PingRequest {})
            .await
            .map_err(|s| Failure::engine("asking the engine for its capabilities (Ping)", s))?
            .into_inner();
        let worker_platform = pong
            .workers
            .first()
            .and_then(|w| w.platforms.first())
            .and_then(|p| crate::options::platform_of(&p.os, &p.architecture, &p.variant));
        Ok(Engine {
            client,
            caps: Caps::from_pong(&pong),
            worker_platform,
        })
    }

    /// A client for one call (the channel is shared; clones are cheap).
    fn client(&self) -> LlbBridgeClient<Channel> {
        self.client.clone()
    }

    /// Solve a definition and return the id of its result. Solving is lazy
    /// unless `evaluate` is set: the engine builds when the result is read,
    /// exported, or evaluated.
    pub async fn solve(
        &self,
        definition: pb::Definition,
        evaluate: bool,
        cache_imports: &[CacheImport],
    ) -> Result<String, tonic::Status> {
        let request = gateway::SolveRequest {
            definition: Some(definition),
            allow_result_return: true,
            allow_result_array_ref: true,
            evaluate: evaluate && self.caps.has_gateway(gateway_cap::SOLVE_EVALUATE),
            cache_imports: if self.caps.has_gateway(gateway_cap::IMPORT_CACHES) {
                cache_imports
                    .iter()
                    .map(|c| gateway::CacheOptionsEntry {
                        r#type: c.kind.clone(),
                        attrs: c.attrs.clone(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        let response = self.client().solve(request).await?.into_inner();
        let id = ref_id(response).ok_or_else(|| {
            tonic::Status::internal("the engine answered a solve with several results")
        })?;
        if evaluate && !self.caps.has_gateway(gateway_cap::SOLVE_EVALUATE) {
            self.force(&id).await?;
        }
        Ok(id)
    }

    /// Build a lazily solved result now, on engines without evaluate-on-solve.
    async fn force(&self, id: &str) -> Result<(), tonic::Status> {
        if self.caps.has_gateway(gateway_cap::EVALUATE) {
            self.client()
                .evaluate(gateway::EvaluateRequest {
                    r#ref: id.to_string(),
                })
                .await?;
        } else if self.caps.has_gateway(gateway_cap::STAT_FILE) {
            self.client()
                .stat_file(gateway::StatFileRequest {
                    r#ref: id.to_string(),
                    path: ".".to_string(),
                    ..Default::default()
                })
                .await?;
        } else {
            // Engines from before BuildKit 0.6 have neither; the checks then
            // run only if something reads their result.
            eprintln!(
                "kiln-frontend: this engine cannot evaluate a result on request; checks may not run"
            );
        }
        Ok(())
    }

    pub async fn read_file(&self, id: &str, path: &str) -> Result<Vec<u8>, tonic::Status> {
        let response = self
            .client()
            .read_file(gateway::ReadFileRequest {
                r#ref: id.to_string(),
                file_path: path.to_string(),
                ..Default::default()
            })
            .await?;
        Ok(response.into_inner().data)
    }

    /// The names in the folder `dir` of the result `id` that match
    /// `pattern`; none where the folder is not there.
    pub async fn read_dir(
        &self,
        id: &str,
        dir: &str,
        pattern: &str,
    ) -> Result<Vec<String>, tonic::Status> {
        match self
            .client()
            .read_dir(gateway::ReadDirRequest {
                r#ref: id.to_string(),
                dir_path: dir.to_string(),
                include_pattern: pattern.to_string(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => Ok(r.into_inner().entries.into_iter().map(|e| e.path).collect()),
            Err(status) if not_found(&status) => Ok(Vec::new()),
            Err(status) => Err(status),
        }
    }

    /// Whether `path` is in the result `id` (a file, folder or link).
    pub async fn exists(&self, id: &str, path: &str) -> Result<bool, tonic::Status> {
        match self
            .client()
            .stat_file(gateway::StatFileRequest {
                r#ref: id.to_string(),
                path: path.to_string(),
                ..Default::default()
            })
            .await
        {
            Ok(_) => Ok(true),
            Err(status) if not_found(&status) => Ok(false),
            Err(status) => Err(status),
        }
    }

    /// Definitions the caller of this frontend passed in (a forwarding
    /// frontend's build context or recipe), when the engine supports inputs.
    pub async fn inputs(&self) -> Result<BTreeMap<String, pb::Definition>, tonic::Status> {
        if !self.caps.has_gateway(gateway_cap::FRONTEND_INPUTS) {
            return Ok(BTreeMap::new());
        }
        Ok(self
            .client()
            .inputs(gateway::InputsRequest {})
            .await?
            .into_inner()
            .definitions)
    }

    /// A base image's manifest digest and config for one platform.
    pub async fn resolve_image(
        &self,
        reference: &str,
        platform: &Platform,
        mode: ResolveMode,
    ) -> Result<ResolvedImage, Failure> {
        let log_name = format!("[internal] load metadata for {reference}");
        let context = format!("resolving base image {reference} for {platform}");
        let (digest, config) = if self.caps.has_gateway(gateway_cap::SOURCE_META_RESOLVER) {
            let response = self
                .client()
                .resolve_source_meta(gateway::ResolveSourceMetaRequest {
                    source: Some(pb::SourceOp {
                        identifier: format!("docker-image://{reference}"),
                        attrs: BTreeMap::new(),
                    }),
                    platform: Some(platform_to_pb(platform)),
                    log_name,
                    resolve_mode: mode.as_str().to_string(),
                    image: Some(gateway::ResolveSourceImageRequest::default()),
                    ..Default::default()
                })
                .await
                .map_err(|s| Failure::engine(&context, s))?
                .into_inner();
            let image = response.image.ok_or_else(|| {
                Failure::Internal(format!("{context}: the engine returned no image metadata"))
            })?;
            (image.digest, image.config)
        } else {
            let response = self
                .client()
                .resolve_image_config(gateway::ResolveImageConfigRequest {
                    r#ref: reference.to_string(),
                    platform: Some(platform_to_pb(platform)),
                    resolve_mode: mode.as_str().to_string(),
                    log_name,
                    ..Default::default()
                })
                .await
                .map_err(|s| Failure::engine(&context, s))?
                .into_inner();
            (response.digest, response.config)
        };
        let config = ImageConfig::from_json(&config).map_err(|e| {
            Failure::Internal(format!(
                "{context}: the image config is not valid JSON: {e}"
            ))
        })?;
        Ok(ResolvedImage {
            digest: Some(digest).filter(|d| !d.is_empty()),
            config,
        })
    }

    /// Show a warning in the client's build output, attached to `vertex`.
    /// Best effort: an engine without the cap, or a failed call, only costs
    /// the warning its place in the progress display (it is on stderr too).
    pub async fn warn(
        &self,
        vertex: &str,
        message: &str,
        info: Option<pb::SourceInfo>,
        ranges: Vec<pb::Range>,
    ) {
        if !self.caps.has_gateway(gateway_cap::WARNINGS) || vertex.is_empty() {
            return;
        }
        let request = gateway::WarnRequest {
            digest: vertex.to_string(),
            level: 1,
            short: message.as_bytes().to_vec(),
            info,
            ranges,
            ..Default::default()
        };
        if let Err(status) = self.client().warn(request).await {
            eprintln!(
                "kiln-frontend: could not send a warning to the engine: {}",
                status.message()
            );
        }
    }

    /// The last call: the build's result, or why there is none.
    pub async fn finish(
        &self,
        outcome: &Result<gateway::Result, Failure>,
    ) -> Result<(), tonic::Status> {
        let request = match outcome {
            Ok(result) => gateway::ReturnRequest {
                result: Some(result.clone()),
                error: None,
            },
            Err(failure) => gateway::ReturnRequest {
                // The engine reads `result` even with an error set; send an
                // empty one rather than none.
                result: Some(gateway::Result::default()),
                error: Some(failure.to_rpc_status()),
            },
        };
        self.client().r#return(request).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(id: &str, enabled: bool) -> ApiCap {
        ApiCap {
            id: id.to_string(),
            enabled,
            ..Default::default()
        }
    }

    #[test]
    fn merge_diff_needs_both_ops() {
        let mut pong = PongResponse {
            llb_caps: vec![cap("mergeop", true), cap("diffop", false)],
            ..Default::default()
        };
        assert!(!Caps::from_pong(&pong).engine_caps().merge_diff);
        pong.llb_caps[1].enabled = true;
        assert!(Caps::from_pong(&pong).engine_caps().merge_diff);
    }

    #[test]
    fn an_engine_that_reports_no_caps_gets_the_frozen_defaults() {
        let caps = Caps::from_pong(&PongResponse::default());
        assert!(caps.has_gateway("readfile"));
        assert!(!caps.has_gateway(gateway_cap::RETURN));
        assert!(caps.has_llb("source.local.followpaths"));
        assert!(!caps.engine_caps().merge_diff);
    }

    #[test]
    fn missing_caps_are_listed() {
        let caps = Caps::from_pong(&PongResponse {
            llb_caps: vec![cap("source.image", true), cap("mergeop", false)],
            ..Default::default()
        });
        let mut md = pb::OpMetadata::default();
        md.caps.insert("source.image".into(), true);
        md.caps.insert("mergeop".into(), true);
        let def = pb::Definition {
            metadata: BTreeMap::from([("sha256:a".to_string(), md)]),
            ..Default::default()
        };
        assert_eq!(
            caps.missing_llb(&def),
            BTreeSet::from(["mergeop".to_string()])
        );
    }
}
