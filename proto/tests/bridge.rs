//! The generated LLBBridge client talks to the generated server in process,
//! with no socket: the client takes any tower service, and the server is one.
//! This is also the pattern for a fake engine in frontend tests.

use kiln_proto::gateway::llb_bridge_client::LlbBridgeClient;
use kiln_proto::gateway::llb_bridge_server::{LlbBridge, LlbBridgeServer, SERVICE_NAME};
use kiln_proto::gateway::{self, PingRequest, PongResponse, ReadFileRequest, ReadFileResponse};
use kiln_proto::{apicaps, pb};
use tonic::{Request, Response, Status};

/// Answers Ping and ReadFile; every other method is Unimplemented.
struct FakeEngine;

#[tonic::async_trait]
impl LlbBridge for FakeEngine {
    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PongResponse>, Status> {
        Ok(Response::new(PongResponse {
            llb_caps: vec![apicaps::ApiCap {
                id: "mergeop".into(),
                enabled: true,
                ..Default::default()
            }],
            ..Default::default()
        }))
    }

    async fn read_file(
        &self,
        request: Request<ReadFileRequest>,
    ) -> Result<Response<ReadFileResponse>, Status> {
        let request = request.into_inner();
        if request.file_path != "kiln.kdl" {
            return Err(Status::not_found(request.file_path));
        }
        Ok(Response::new(ReadFileResponse {
            data: b"framework \"torch\"\n".to_vec(),
        }))
    }
}

fn client() -> LlbBridgeClient<LlbBridgeServer<FakeEngine>> {
    LlbBridgeClient::new(LlbBridgeServer::new(FakeEngine))
}

#[test]
fn service_name_is_upstreams() {
    // The engine routes on /moby.buildkit.v1.frontend.LLBBridge/<Method>.
    assert_eq!(SERVICE_NAME, "moby.buildkit.v1.frontend.LLBBridge");
}

#[tokio::test]
async fn client_and_server_round_trip() {
    let mut client = client();

    let pong = client
        .ping(PingRequest {})
        .await
        .expect("ping")
        .into_inner();
    assert_eq!(pong.llb_caps.len(), 1);
    assert_eq!(pong.llb_caps[0].id, "mergeop");
    assert!(pong.llb_caps[0].enabled);

    let file = client
        .read_file(ReadFileRequest {
            r#ref: "ref-1".into(),
            file_path: "kiln.kdl".into(),
            ..Default::default()
        })
        .await
        .expect("read_file")
        .into_inner();
    assert_eq!(file.data, b"framework \"torch\"\n");

    let missing = client
        .read_file(ReadFileRequest {
            file_path: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("a missing file is an error");
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn methods_a_fake_skips_are_unimplemented() {
    let err = client()
        .solve(gateway::SolveRequest {
            definition: Some(pb::Definition::default()),
            ..Default::default()
        })
        .await
        .expect_err("the fake does not solve");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}
