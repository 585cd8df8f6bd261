//! A fake engine: an `LLBBridge` server that answers like BuildKit for the
//! calls kiln makes, records them, and talks to the frontend over an
//! in-process pipe through the frontend's own stdio connector.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use kiln_frontend::{Environment, serve, transport};
use kiln_proto::apicaps::ApiCap;
use kiln_proto::gateway::llb_bridge_server::{LlbBridge, LlbBridgeServer};
use kiln_proto::gateway::{self as gw};
use kiln_proto::{pb, types};
use prost::Message;
use tonic::{Request, Response, Status};

/// Gateway caps of a current BuildKit, as far as kiln looks.
pub const MODERN_GATEWAY_CAPS: &[&str] = &[
    "solve.base",
    "resolveimage",
    "readfile",
    "return",
    "returnmap",
    "proto.refarray",
    "frontend.inputs",
    "gateway.solve.evaluate",
    "gateway.evaluate",
    "statfile",
    "gateway.warnings",
    "importcaches",
];

/// LLB caps of a current BuildKit.
pub const MODERN_LLB_CAPS: &[&str] = &[
    "source.image",
    "source.local",
    "source.local.includepatterns",
    "source.local.excludepatterns",
    "source.local.followpaths",
    "source.local.sharedkeyhint",
    "source.local.sessionid",
    "exec.meta.base",
    "exec.meta.network",
    "exec.mount.bind",
    "exec.mount.cache",
    "exec.mount.cache.sharing",
    "exec.mount.selector",
    "exec.mount.secret",
    "exec.mount.tmpfs",
    "file.base",
    "constraints",
    "platform",
    "meta.description",
    "meta.ignorecache",
    "meta.progress.group",
    "mergeop",
    "diffop",
];

/// What the fake engine saw.
#[derive(Debug, Default)]
pub struct Recorded {
    pub solves: Vec<gw::SolveRequest>,
    pub reads: Vec<(String, String)>,
    pub stats: Vec<(String, String)>,
    pub resolves: Vec<(String, String)>,
    pub warnings: Vec<gw::WarnRequest>,
    pub evaluated: Vec<String>,
    pub returns: Vec<gw::ReturnRequest>,
}

#[derive(Clone)]
pub struct FakeEngine {
    pub files: BTreeMap<String, Vec<u8>>,
    pub gateway_caps: Vec<String>,
    pub llb_caps: Vec<String>,
    /// Fail a solve whose definition contains this text, with this status.
    pub fail_solve: Option<(String, Status)>,
    /// Fail only the solves evaluated now (`fail_solve`'s text and status).
    pub fail_evaluated_only: bool,
    /// Fail resolving an image whose reference contains this text.
    pub fail_resolve: Option<(String, Status)>,
    /// Answer every resolve with this platform's config (an engine that
    /// has the image for one platform only).
    pub only_platform: Option<pb::Platform>,
    pub state: Arc<Mutex<Recorded>>,
}

fn caps(ids: &[String]) -> Vec<ApiCap> {
    ids.iter()
        .map(|id| ApiCap {
            id: id.clone(),
            enabled: true,
            ..Default::default()
        })
        .collect()
}

fn platform_text(p: Option<&pb::Platform>) -> String {
    match p {
        Some(p) if p.variant.is_empty() => format!("{}/{}", p.os, p.architecture),
        Some(p) => format!("{}/{}/{}", p.os, p.architecture, p.variant),
        None => String::new(),
    }
}

/// The config a registry would give for a python image on `p`.
fn image_config(p: Option<&pb::Platform>) -> Vec<u8> {
    let arch = p.map(|p| p.architecture.clone()).unwrap_or_default();
    serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": [
                "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
                "PYTHON_VERSION=3.11.9"
            ],
            "Cmd": ["python3"]
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:1111111111111111111111111111111111111111111111111111111111111111"]}
    })
    .to_string()
    .into_bytes()
}

/// The client session the fake engine's builds belong to.
pub const SESSION_ID: &str = "session-under-test";

pub const BASE_DIGEST: &str =
    "sha256:2222222222222222222222222222222222222222222222222222222222222222";

impl FakeEngine {
    pub fn new() -> FakeEngine {
        FakeEngine {
            files: BTreeMap::new(),
            gateway_caps: MODERN_GATEWAY_CAPS
                .iter()
                .map(|s| (*s).to_string())
                .collect(),
            llb_caps: MODERN_LLB_CAPS.iter().map(|s| (*s).to_string()).collect(),
            fail_solve: None,
            fail_evaluated_only: false,
            fail_resolve: None,
            only_platform: None,
            state: Arc::default(),
        }
    }

    /// Serve `name` (as the client's recipe file) from a fixture.
    pub fn with_fixture(mut self, name: &str, fixture: &str) -> FakeEngine {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(fixture);
        let data =
            std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
        self.files.insert(name.to_string(), data);
        self
    }

    pub fn with_file(mut self, name: &str, data: &[u8]) -> FakeEngine {
        self.files.insert(name.to_string(), data.to_vec());
        self
    }

    pub fn recorded(&self) -> MutexGuard<'_, Recorded> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[tonic::async_trait]
impl LlbBridge for FakeEngine {
    async fn ping(
        &self,
        _: Request<gw::PingRequest>,
    ) -> Result<Response<gw::PongResponse>, Status> {
        Ok(Response::new(gw::PongResponse {
            frontend_api_caps: caps(&self.gateway_caps),
            llb_caps: caps(&self.llb_caps),
            workers: vec![types::WorkerRecord {
                id: "fake".into(),
                platforms: vec![pb::Platform {
                    os: "linux".into(),
                    architecture: "amd64".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }))
    }

    async fn solve(
        &self,
        request: Request<gw::SolveRequest>,
    ) -> Result<Response<gw::SolveResponse>, Status> {
        let request = request.into_inner();
        let bytes = request
            .definition
            .as_ref()
            .map(Message::encode_to_vec)
            .unwrap_or_default();
        if let Some((needle, status)) = &self.fail_solve {
            if (request.evaluate || !self.fail_evaluated_only)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                return Err(status.clone());
            }
        }
        let mut state = self.recorded();
        state.solves.push(request.clone());
        let id = format!("ref-{}", state.solves.len());
        if request.evaluate {
            state.evaluated.push(id.clone());
        }
        Ok(Response::new(gw::SolveResponse {
            result: Some(gw::Result {
                result: Some(gw::result::Result::Ref(gw::Ref {
                    id,
                    def: request.definition,
                })),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn read_file(
        &self,
        request: Request<gw::ReadFileRequest>,
    ) -> Result<Response<gw::ReadFileResponse>, Status> {
        let request = request.into_inner();
        self.recorded()
            .reads
            .push((request.r#ref.clone(), request.file_path.clone()));
        match self.files.get(&request.file_path) {
            Some(data) => Ok(Response::new(gw::ReadFileResponse { data: data.clone() })),
            None => Err(Status::unknown(format!(
                "open /tmp/buildkit-mount123/{}: no such file or directory",
                request.file_path
            ))),
        }
    }

    async fn inputs(
        &self,
        _: Request<gw::InputsRequest>,
    ) -> Result<Response<gw::InputsResponse>, Status> {
        Ok(Response::new(gw::InputsResponse::default()))
    }

    async fn resolve_image_config(
        &self,
        request: Request<gw::ResolveImageConfigRequest>,
    ) -> Result<Response<gw::ResolveImageConfigResponse>, Status> {
        let request = request.into_inner();
        self.recorded().resolves.push((
            request.r#ref.clone(),
            platform_text(request.platform.as_ref()),
        ));
        if let Some((text, status)) = &self.fail_resolve {
            if request.r#ref.contains(text.as_str()) {
                return Err(status.clone());
            }
        }
        Ok(Response::new(gw::ResolveImageConfigResponse {
            digest: BASE_DIGEST.into(),
            config: image_config(self.only_platform.as_ref().or(request.platform.as_ref())),
            r#ref: request.r#ref,
        }))
    }

    async fn resolve_source_meta(
        &self,
        request: Request<gw::ResolveSourceMetaRequest>,
    ) -> Result<Response<gw::ResolveSourceMetaResponse>, Status> {
        let request = request.into_inner();
        let identifier = request
            .source
            .as_ref()
            .map(|s| s.identifier.clone())
            .unwrap_or_default();
        let reference = identifier
            .strip_prefix("docker-image://")
            .unwrap_or(&identifier)
            .to_string();
        self.recorded().resolves.push((
            format!("meta:{reference}"),
            platform_text(request.platform.as_ref()),
        ));
        if let Some((text, status)) = &self.fail_resolve {
            if reference.contains(text.as_str()) {
                return Err(status.clone());
            }
        }
        Ok(Response::new(gw::ResolveSourceMetaResponse {
            source: request.source,
            image: Some(gw::ResolveSourceImageResponse {
                digest: BASE_DIGEST.into(),
                config: image_config(self.only_platform.as_ref().or(request.platform.as_ref())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    /// The files in `dir` whose names match the pattern (`*` and `?`).
    async fn read_dir(
        &self,
        request: Request<gw::ReadDirRequest>,
    ) -> Result<Response<gw::ReadDirResponse>, Status> {
        let request = request.into_inner();
        let dir = request.dir_path.trim_matches('/');
        let prefix = if dir.is_empty() || dir == "." {
            String::new()
        } else {
            format!("{dir}/")
        };
        let entries = self
            .files
            .keys()
            .filter_map(|f| f.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .filter(|name| {
                request.include_pattern.is_empty()
                    || kiln_compiler::ignore::excluded(
                        std::slice::from_ref(&request.include_pattern),
                        name,
                    )
            })
            .map(|name| kiln_proto::fsutil::Stat {
                path: name.to_string(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(gw::ReadDirResponse { entries }))
    }

    /// A path is there when it is one of the files, or a folder of one.
    async fn stat_file(
        &self,
        request: Request<gw::StatFileRequest>,
    ) -> Result<Response<gw::StatFileResponse>, Status> {
        let request = request.into_inner();
        self.recorded()
            .stats
            .push((request.r#ref.clone(), request.path.clone()));
        let path = request.path.trim_start_matches('/');
        let folder = format!("{path}/");
        if self
            .files
            .keys()
            .any(|f| f == path || f.starts_with(&folder))
        {
            Ok(Response::new(gw::StatFileResponse {
                stat: Some(kiln_proto::fsutil::Stat {
                    path: path.to_string(),
                    ..Default::default()
                }),
            }))
        } else {
            Err(Status::unknown(format!(
                "lstat /tmp/buildkit-mount123/{path}: no such file or directory"
            )))
        }
    }

    async fn evaluate(
        &self,
        request: Request<gw::EvaluateRequest>,
    ) -> Result<Response<gw::EvaluateResponse>, Status> {
        self.recorded().evaluated.push(request.into_inner().r#ref);
        Ok(Response::new(gw::EvaluateResponse {}))
    }

    async fn warn(
        &self,
        request: Request<gw::WarnRequest>,
    ) -> Result<Response<gw::WarnResponse>, Status> {
        self.recorded().warnings.push(request.into_inner());
        Ok(Response::new(gw::WarnResponse {}))
    }

    async fn r#return(
        &self,
        request: Request<gw::ReturnRequest>,
    ) -> Result<Response<gw::ReturnResponse>, Status> {
        self.recorded().returns.push(request.into_inner());
        Ok(Response::new(gw::ReturnResponse {}))
    }
}

/// Serve `engine` on one end of an in-process pipe and run the frontend on
/// the other end, as the engine would run it: options as
/// `BUILDKIT_FRONTEND_OPT_<n>` variables. Returns the exit status.
pub async fn run_frontend(engine: &FakeEngine, opts: &[(&str, &str)]) -> i32 {
    let mut vars: Vec<(String, String)> = opts
        .iter()
        .enumerate()
        .map(|(i, (k, v))| (format!("BUILDKIT_FRONTEND_OPT_{i}"), format!("{k}={v}")))
        .collect();
    vars.push(("BUILDKIT_SESSION_ID".into(), SESSION_ID.into()));
    vars.push((
        "BUILDKIT_WORKERS".into(),
        r#"[{"ID":"fake","Platforms":[{"architecture":"amd64","os":"linux"}]}]"#.into(),
    ));
    let env = Environment::from_vars(vars);

    let (frontend_side, engine_side) = tokio::io::duplex(1 << 16);
    // Keep the incoming stream open after the one connection: a server whose
    // listener ends stops serving.
    let incoming = tokio_stream::StreamExt::chain(
        tokio_stream::iter([Ok::<_, io::Error>(engine_side)]),
        tokio_stream::pending(),
    );
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LlbBridgeServer::new(engine.clone()))
            .serve_with_incoming(incoming),
    );

    // Two halves, as stdin and stdout are two pipes.
    let (reader, writer) = tokio::io::split(frontend_side);
    let code = match transport::connect(reader, writer).await {
        Ok(client) => serve(client, env).await,
        Err(e) => panic!("connect: {e}"),
    };
    server.abort();
    code
}

/// The one `Return` the frontend made.
pub fn the_return(engine: &FakeEngine) -> gw::ReturnRequest {
    let state = engine.recorded();
    assert_eq!(
        state.returns.len(),
        1,
        "exactly one Return: {:?}",
        state.returns
    );
    state.returns[0].clone()
}

/// A JSON metadata value of a `Return`'s result.
pub fn metadata_json(ret: &gw::ReturnRequest, key: &str) -> serde_json::Value {
    let result = ret.result.as_ref().expect("a result");
    let bytes = result.metadata.get(key).unwrap_or_else(|| {
        panic!(
            "no {key} in {:?}",
            result.metadata.keys().collect::<Vec<_>>()
        )
    });
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{key} is not JSON: {e}"))
}

/// The text metadata value of a `Return`'s result.
pub fn metadata_text(ret: &gw::ReturnRequest, key: &str) -> String {
    let result = ret.result.as_ref().expect("a result");
    String::from_utf8(result.metadata.get(key).cloned().unwrap_or_default()).expect("utf-8")
}

/// The source ops of a definition.
pub fn sources(def: &pb::Definition) -> Vec<pb::SourceOp> {
    def.def
        .iter()
        .filter_map(|b| pb::Op::decode(b.as_slice()).ok())
        .filter_map(|op| match op.op {
            Some(pb::op::Op::Source(s)) => Some(s),
            _ => None,
        })
        .collect()
}

/// The source identifiers of a definition's ops.
pub fn source_ids(def: &pb::Definition) -> Vec<String> {
    def.def
        .iter()
        .filter_map(|b| pb::Op::decode(b.as_slice()).ok())
        .filter_map(|op| match op.op {
            Some(pb::op::Op::Source(s)) => Some(s.identifier),
            _ => None,
        })
        .collect()
}
