//! `kiln-frontend`: the entrypoint of the frontend image. The engine talks
//! gRPC to it over stdin/stdout, so nothing but that protocol may go to
//! stdout; logs go to stderr.

use kiln_frontend::{Environment, serve, transport};

fn main() {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kiln-frontend: cannot start: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async {
        let env = Environment::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        );
        let code = match transport::connect_stdio().await {
            Ok(client) => serve(client, env).await,
            Err(e) => {
                eprintln!("kiln-frontend: cannot talk to the engine over stdin/stdout: {e}");
                1
            }
        };
        // Exit here, from inside the runtime, the moment `Return` is answered.
        // Letting the runtime wind down would first close the HTTP/2
        // connection gracefully (GOAWAY): BuildKit then cancels the frontend's
        // context while the process still runs, kills it, and reports
        // "context canceled" instead of the result already returned
        // (frontend/gateway/gateway.go, serveLLBBridgeForwarder). Dropping
        // the runtime would also wait forever on the blocking stdin read.
        std::process::exit(code)
    })
}
