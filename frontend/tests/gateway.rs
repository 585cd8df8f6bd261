//! The frontend against a fake engine, over the same HTTP/2-on-a-pipe
//! transport it uses on stdin/stdout: what it asks the engine, and what it
//! returns.

mod support;

use kiln_frontend::failure::{SOURCE_DETAIL_TYPE, SourceDetail};
use kiln_proto::gateway::{self as gw};
use kiln_proto::google::rpc::Status as RpcStatus;
use prost::Message;
use support::{
    BASE_DIGEST, FakeEngine, SESSION_ID, metadata_json, metadata_text, run_frontend, source_ids,
    sources, the_return,
};
use tonic::Code;

/// The warnings the frontend gave the engine, as the client shows them.
fn warnings_said(engine: &FakeEngine) -> Vec<String> {
    engine
        .recorded()
        .warnings
        .iter()
        .map(|w| String::from_utf8_lossy(&w.short).into_owned())
        .collect()
}

/// The names of the ops the solves evaluated now end with.
fn evaluated_heads(solves: &[gw::SolveRequest]) -> Vec<String> {
    solves
        .iter()
        .filter(|s| s.evaluate)
        .filter_map(|s| s.definition.as_ref())
        .map(|d| {
            let last = d.def.last().expect("ops");
            let head = kiln_proto::pb::Op::decode(last.as_slice())
                .expect("op")
                .inputs[0]
                .digest
                .clone();
            d.metadata
                .get(&head)
                .and_then(|m| m.description.get("llb.customname").cloned())
                .unwrap_or_default()
        })
        .collect()
}

fn error_of(ret: &gw::ReturnRequest) -> RpcStatus {
    ret.error.clone().expect("an error in Return")
}

#[tokio::test]
async fn one_platform_returns_one_ref_and_the_image_config() {
    let engine = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
    let code = run_frontend(&engine, &[("filename", "env.kdl"), ("target", "cpu")]).await;
    assert_eq!(code, 0);

    let ret = the_return(&engine);
    assert!(ret.error.is_none(), "{:?}", ret.error);
    let state = engine.recorded();

    // First solve: the recipe file from the `dockerfile` local, then read.
    let first = state.solves[0].definition.as_ref().expect("definition");
    assert_eq!(source_ids(first), ["local://dockerfile"]);
    assert_eq!(state.reads[0], ("ref-1".to_string(), "env.kdl".to_string()));

    // The base image was resolved for the worker's platform.
    assert!(
        state
            .resolves
            .iter()
            .any(|(r, p)| r.contains("python:3.11-slim") && p == "linux/amd64"),
        "{:?}",
        state.resolves
    );

    // The image's solve pins the resolved base by digest.
    let image_solve = state
        .solves
        .iter()
        .find(|s| {
            !s.evaluate
                && s.definition.as_ref().is_some_and(|d| {
                    source_ids(d)
                        .iter()
                        .any(|i| i.starts_with("docker-image://"))
                })
        })
        .expect("an image solve");
    let ids = source_ids(image_solve.definition.as_ref().expect("def"));
    assert!(ids.iter().any(|i| i.ends_with(BASE_DIGEST)), "{ids:?}");

    // The checks (`verify`) and the copies were solved and evaluated now.
    let mut evaluated = evaluated_heads(&state.solves);
    evaluated.sort();
    assert_eq!(evaluated.len(), 2, "{evaluated:?}");
    assert!(evaluated[0].contains("] copy "), "{evaluated:?}");
    assert!(evaluated[1].contains("] verify: "), "{evaluated:?}");

    let result = ret.result.as_ref().expect("result");
    let image_ref = match &result.result {
        Some(gw::result::Result::Ref(r)) => r.id.clone(),
        other => panic!("expected one ref, got {other:?}"),
    };
    let image_index = state
        .solves
        .iter()
        .position(|s| std::ptr::eq(s, image_solve))
        .expect("index");
    assert_eq!(image_ref, format!("ref-{}", image_index + 1));

    let config = metadata_json(&ret, "containerimage.config");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    let env: Vec<String> = config["config"]["Env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect();
    assert!(
        env.iter().any(|e| e == "LANG=C.UTF-8"),
        "base env kept: {env:?}"
    );
    assert!(
        env.iter().any(|e| e.starts_with("PATH=/opt/venv/bin")),
        "venv first on PATH: {env:?}"
    );
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["python", "train.py"])
    );

    assert_eq!(
        metadata_json(&ret, "refs.platforms"),
        serde_json::json!({"Platforms":[{"ID":"linux/amd64","Platform":{"architecture":"amd64","os":"linux"}}]})
    );
}

#[tokio::test]
async fn several_platforms_return_a_ref_per_platform() {
    let engine = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
    let code = run_frontend(
        &engine,
        &[
            ("filename", "env.kdl"),
            ("platform", "linux/amd64,linux/arm64"),
        ],
    )
    .await;
    assert_eq!(code, 0);
    let ret = the_return(&engine);
    assert!(ret.error.is_none(), "{:?}", ret.error);

    let refs = match &ret.result.as_ref().expect("result").result {
        Some(gw::result::Result::Refs(m)) => m.refs.clone(),
        other => panic!("expected a ref map, got {other:?}"),
    };
    assert_eq!(
        refs.keys().collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"]
    );
    assert_ne!(refs["linux/amd64"].id, refs["linux/arm64"].id);

    assert_eq!(
        metadata_json(&ret, "containerimage.config/linux/amd64")["architecture"],
        "amd64"
    );
    assert_eq!(
        metadata_json(&ret, "containerimage.config/linux/arm64")["architecture"],
        "arm64"
    );
    assert!(
        !ret.result
            .as_ref()
            .expect("result")
            .metadata
            .contains_key("containerimage.config")
    );
    let platforms = metadata_json(&ret, "refs.platforms");
    assert_eq!(platforms["Platforms"][0]["ID"], "linux/amd64");
    assert_eq!(platforms["Platforms"][1]["ID"], "linux/arm64");
    assert_eq!(
        platforms["Platforms"][1]["Platform"]["architecture"],
        "arm64"
    );

    // Each platform's base was resolved for that platform.
    let state = engine.recorded();
    for p in ["linux/amd64", "linux/arm64"] {
        assert!(
            state.resolves.iter().any(|(_, rp)| rp == p),
            "{p}: {:?}",
            state.resolves
        );
    }
    // One lazy image solve per platform, and its checks and copies
    // evaluated now.
    let evaluated = evaluated_heads(&state.solves);
    assert_eq!(evaluated.len(), 4, "{evaluated:?}");
    for what in ["] copy ", "] verify: "] {
        assert_eq!(
            evaluated.iter().filter(|n| n.contains(what)).count(),
            2,
            "{evaluated:?}"
        );
    }
}

#[tokio::test]
async fn a_bad_recipe_returns_a_located_error() {
    let engine = FakeEngine::new().with_fixture("env.kdl", "bad.kdl");
    let code = run_frontend(&engine, &[("filename", "env.kdl")]).await;
    assert_eq!(code, 1);

    let ret = the_return(&engine);
    let error = error_of(&ret);
    assert_eq!(error.code, Code::Unknown as i32);
    assert!(
        error.message.starts_with("env.kdl:4:1: error["),
        "message names FILE:LINE:COL: {}",
        error.message
    );
    assert!(error.message.contains("frameworkk"), "{}", error.message);
    assert!(
        error.message.contains("framework"),
        "suggests the fix: {}",
        error.message
    );

    // The error carries the recipe and the range, so the client shows the line.
    assert_eq!(error.details.len(), 1);
    assert_eq!(error.details[0].type_url, SOURCE_DETAIL_TYPE);
    let source = SourceDetail::decode(error.details[0].value.as_slice()).expect("detail");
    assert_eq!(source.info.as_ref().expect("info").filename, "env.kdl");
    assert_eq!(source.ranges[0].start.expect("start").line, 4);

    // Nothing was built.
    assert_eq!(
        engine.recorded().solves.len(),
        1,
        "only the recipe was loaded"
    );
}

#[tokio::test]
async fn a_missing_recipe_says_which_file() {
    let engine = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
    let code = run_frontend(&engine, &[]).await;
    assert_eq!(code, 1);
    let error = error_of(&the_return(&engine));
    // No `filename` option: kiln looks for kiln.kdl.
    assert!(error.message.contains("`kiln.kdl`"), "{}", error.message);
    assert!(error.message.contains("no such file"), "{}", error.message);
}

#[tokio::test]
async fn an_unknown_target_is_a_recipe_error() {
    let engine = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
    let code = run_frontend(&engine, &[("filename", "env.kdl"), ("target", "gpuu")]).await;
    assert_eq!(code, 1);
    let error = error_of(&the_return(&engine));
    assert!(error.message.contains("gpuu"), "{}", error.message);
    assert!(
        error.message.contains("did you mean `gpu`"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn bad_options_are_returned_as_errors() {
    let engine = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
    let code = run_frontend(&engine, &[("filename", "env.kdl"), ("platform", "linux")]).await;
    assert_eq!(code, 1);
    let error = error_of(&the_return(&engine));
    assert_eq!(error.code, Code::Unknown as i32);
    assert!(
        error.message.contains("option `platform`"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn engine_solve_errors_pass_through_with_their_details() {
    let detail = prost_types::Any {
        type_url: "errdefs.Vertex".into(),
        value: b"\n\x07sha256x".to_vec(),
    };
    let inner = RpcStatus {
        code: Code::Unknown as i32,
        message: "process \"pip install\" did not complete successfully: exit code: 1".into(),
        details: vec![detail.clone()],
    };
    let mut engine = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
    engine.fail_solve = Some((
        "numpy==1.26.4".into(),
        tonic::Status::with_details(
            Code::Unknown,
            inner.message.clone(),
            inner.encode_to_vec().into(),
        ),
    ));
    let code = run_frontend(&engine, &[("filename", "env.kdl")]).await;
    assert_eq!(code, 1);
    let error = error_of(&the_return(&engine));
    assert_eq!(error.code, Code::Unknown as i32);
    assert_eq!(error.message, inner.message);
    assert_eq!(error.details, vec![detail]);
}

/// Run the frontend on `engine`, whose solves evaluated now (the copies,
/// the checks) fail with `message` where they hold `needle`; the error it
/// returned.
async fn copy_failing_with(mut engine: FakeEngine, needle: &str, message: &str) -> RpcStatus {
    engine.fail_solve = Some((needle.into(), tonic::Status::unknown(message)));
    engine.fail_evaluated_only = true;
    let code = run_frontend(&engine, &[("filename", "env.kdl")]).await;
    assert_eq!(code, 1);
    error_of(&the_return(&engine))
}

/// A copy that fails because its source is not in the context: the
/// frontend looks the copy sources up and fails at the line that named the
/// missing one, not at every line of the op that copies them all.
#[tokio::test]
async fn a_missing_copy_source_is_an_error_at_its_line() {
    let recipe = "kiln 1\npython \"3.11\"\ncopy \"app.py\" \"/app/app.py\"\ncopy \"model.bin\" \"/app/model.bin\"\ncopy \"conf\" \"/app/conf\"\n";
    let engine = FakeEngine::new()
        .with_file("env.kdl", recipe.as_bytes())
        .with_file("app.py", b"print(1)\n")
        .with_file("conf/app.yaml", b"a: 1\n");
    let error = copy_failing_with(
        engine.clone(),
        "model.bin",
        "failed to calculate checksum of ref abc::def: \"/model.bin\": not found",
    )
    .await;
    assert!(
        error.message.starts_with(
            "env.kdl:4:1: error[kiln::missing_file]: copy source `model.bin` is not in the build context"
        ),
        "{}",
        error.message
    );
    assert!(!error.message.contains("`app.py`"), "{}", error.message);
    assert!(!error.message.contains("`conf`"), "{}", error.message);
    let source = SourceDetail::decode(error.details[0].value.as_slice()).expect("detail");
    assert_eq!(source.ranges.len(), 1);
    assert_eq!(source.ranges[0].start.expect("start").line, 4);
    // Every copy source was looked up.
    let stats: Vec<String> = engine
        .recorded()
        .stats
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(stats.len(), 3, "{stats:?}");
    for p in ["app.py", "model.bin", "conf"] {
        assert!(stats.iter().any(|s| s == p), "{p}: {stats:?}");
    }
}

/// A copy pattern that matches nothing fails at its line too; one that
/// matches is not blamed.
#[tokio::test]
async fn a_copy_pattern_that_matches_nothing_is_an_error_at_its_line() {
    let recipe =
        "kiln 1\npython \"3.11\"\ncopy \"src/*.py\" \"/app/\"\ncopy \"src/*.rs\" \"/app/\"\n";
    let engine = FakeEngine::new()
        .with_file("env.kdl", recipe.as_bytes())
        .with_file("src/a.py", b"print(1)\n");
    let error = copy_failing_with(
        engine.clone(),
        "src/*.rs",
        "lstat /tmp/buildkit-mount1/src: no such file or directory",
    )
    .await;
    assert!(
        error.message.starts_with(
            "env.kdl:4:1: error[kiln::missing_file]: copy pattern `src/*.rs` matches nothing in the build context"
        ),
        "{}",
        error.message
    );
    assert!(!error.message.contains("`src/*.py`"), "{}", error.message);
}

/// A copy that fails for another reason keeps the engine's error.
#[tokio::test]
async fn a_copy_failing_with_its_sources_there_keeps_the_engines_error() {
    let recipe = "kiln 1\npython \"3.11\"\ncopy \"app.py\" \"/app/app.py\"\n";
    let engine = FakeEngine::new()
        .with_file("env.kdl", recipe.as_bytes())
        .with_file("app.py", b"print(1)\n");
    let error = copy_failing_with(engine.clone(), "app.py", "mkdir /app: not found").await;
    assert_eq!(error.message, "mkdir /app: not found");
}

#[tokio::test]
async fn a_base_the_engine_cannot_resolve_is_an_error_at_its_line() {
    let recipe = "kiln 1\npython \"3.11\"\n\nbase \"registry.invalid/team/py:3.11\"\n";
    let mut engine = FakeEngine::new().with_file("env.kdl", recipe.as_bytes());
    engine.fail_resolve = Some((
        "registry.invalid".into(),
        tonic::Status::unknown("failed to do request: no such host"),
    ));
    let code = run_frontend(&engine, &[("filename", "env.kdl")]).await;
    assert_eq!(code, 1);
    let error = error_of(&the_return(&engine));
    assert!(
        error
            .message
            .starts_with("env.kdl:4:6: error[kiln::unresolvable_image]"),
        "{}",
        error.message
    );
    assert!(error.message.contains("no such host"), "{}", error.message);
    let source = SourceDetail::decode(error.details[0].value.as_slice()).expect("detail");
    assert_eq!(source.ranges[0].start.expect("start").line, 4);

    // The base kiln chose for the python: at the `python` line, and on a
    // multi-platform build the platform is named.
    let recipe = "kiln 1\n\npython \"3.11\"\n";
    let mut engine = FakeEngine::new().with_file("env.kdl", recipe.as_bytes());
    engine.fail_resolve = Some((
        "python:3.11-slim".into(),
        tonic::Status::unknown("no match for platform in manifest"),
    ));
    let code = run_frontend(
        &engine,
        &[
            ("filename", "env.kdl"),
            ("platform", "linux/amd64,linux/arm64"),
        ],
    )
    .await;
    assert_eq!(code, 1);
    let error = error_of(&the_return(&engine));
    assert!(
        error.message.starts_with("env.kdl:3:8: "),
        "{}",
        error.message
    );
    // (Both platforms fail; whichever the engine answered first is named.)
    assert!(
        error
            .message
            .contains("for linux/amd64: no match for platform")
            || error
                .message
                .contains("for linux/arm64: no match for platform"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_named_context_is_not_used_and_the_build_output_says_so() {
    let engine = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
    let code = run_frontend(
        &engine,
        &[
            ("filename", "env.kdl"),
            (
                "context:python:3.11-slim",
                "docker-image://team/python:3.11",
            ),
        ],
    )
    .await;
    assert_eq!(code, 0);
    let said = warnings_said(&engine);
    assert!(
        said.iter()
            .any(|w| w.contains("--build-context is not supported")
                && w.contains("python:3.11-slim")),
        "{said:?}"
    );
}

#[tokio::test]
async fn a_multi_platform_build_says_each_warning_once() {
    let engine = FakeEngine::new().with_fixture("kiln.kdl", "warn.kdl");
    let code = run_frontend(&engine, &[("platform", "linux/amd64,linux/arm64")]).await;
    assert_eq!(code, 0);
    let said = warnings_said(&engine);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("is newer"), "{said:?}");
}

#[tokio::test]
async fn a_base_the_engine_has_for_another_platform_warns_for_that_platform_only() {
    let mut engine = FakeEngine::new().with_file("kiln.kdl", b"kiln 1\npython \"3.11\"\n");
    engine.only_platform = Some(kiln_proto::pb::Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        ..Default::default()
    });
    let code = run_frontend(&engine, &[("platform", "linux/amd64,linux/arm64")]).await;
    assert_eq!(code, 0);
    let said = warnings_said(&engine);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("the engine gave for linux/arm64 is built for linux/amd64"),
        "{said:?}"
    );
}

#[tokio::test]
async fn targets_subrequest_lists_variants() {
    let engine = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
    let code = run_frontend(
        &engine,
        &[("filename", "env.kdl"), ("requestid", "frontend.targets")],
    )
    .await;
    assert_eq!(code, 0);
    let ret = the_return(&engine);
    assert!(ret.error.is_none(), "{:?}", ret.error);
    assert!(
        ret.result.as_ref().expect("result").result.is_none(),
        "no refs"
    );
    assert_eq!(
        metadata_json(&ret, "result.json"),
        serde_json::json!({"targets":[
            {"name":"cpu","default":true,"description":"CPU-only build"},
            {"name":"gpu","description":"CUDA build"}
        ]})
    );
    assert_eq!(
        metadata_text(&ret, "result.txt"),
        "TARGET        DESCRIPTION\ncpu (default) CPU-only build\ngpu           CUDA build\n"
    );
    assert_eq!(metadata_text(&ret, "version"), "1.0.0");
    // Answering needs no base image and builds nothing.
    let state = engine.recorded();
    assert!(state.resolves.is_empty());
    assert_eq!(state.solves.len(), 1);
}

/// The frontend's answer to `frontend.outline` for the fixture recipe,
/// with `opts` added to the request.
async fn outline_of_fixture(opts: &[(&str, &str)]) -> gw::ReturnRequest {
    let engine = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
    let mut all = vec![("filename", "env.kdl"), ("requestid", "frontend.outline")];
    all.extend_from_slice(opts);
    assert_eq!(run_frontend(&engine, &all).await, 0);
    let ret = the_return(&engine);
    assert!(ret.error.is_none(), "{:?}", ret.error);
    ret
}

#[tokio::test]
async fn outline_subrequest_lists_args_and_secrets() {
    let ret = outline_of_fixture(&[("target", "gpu")]).await;
    assert_eq!(
        metadata_json(&ret, "result.json"),
        serde_json::json!({
            "name": "gpu",
            "description": "CUDA build",
            "args": [{"name": "NUMPY", "value": "1.26.4"}],
            "secrets": [{"name": "ca-bundle"}, {"name": "pip-index", "required": true}]
        })
    );
    let text = metadata_text(&ret, "result.txt");
    assert!(
        text.starts_with("TARGET:      gpu\nDESCRIPTION: CUDA build\n"),
        "{text}"
    );
    assert!(
        text.contains("BUILD ARG   VALUE    DESCRIPTION\nNUMPY       1.26.4"),
        "{text}"
    );
}

/// As with a Dockerfile, the outline shows the value the build would use:
/// a `--build-arg` given replaces the default.
#[tokio::test]
async fn outline_shows_the_build_arg_given() {
    let ret = outline_of_fixture(&[("build-arg:NUMPY", "2.0.1")]).await;
    assert_eq!(
        metadata_json(&ret, "result.json")["args"],
        serde_json::json!([{"name": "NUMPY", "value": "2.0.1"}])
    );
    assert!(
        metadata_text(&ret, "result.txt").contains("NUMPY       2.0.1"),
        "{}",
        metadata_text(&ret, "result.txt")
    );
}

#[tokio::test]
async fn describe_subrequest_needs_no_recipe() {
    let engine = FakeEngine::new();
    let code = run_frontend(&engine, &[("requestid", "frontend.subrequests.describe")]).await;
    assert_eq!(code, 0);
    let ret = the_return(&engine);
    let names: Vec<String> = metadata_json(&ret, "result.json")
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        names,
        [
            "frontend.outline",
            "frontend.targets",
            "frontend.subrequests.describe"
        ]
    );
    assert!(engine.recorded().solves.is_empty());
}

#[tokio::test]
async fn an_unknown_subrequest_is_unimplemented() {
    let engine = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
    let code = run_frontend(
        &engine,
        &[("filename", "env.kdl"), ("requestid", "frontend.lint")],
    )
    .await;
    assert_eq!(code, 1);
    let error = error_of(&the_return(&engine));
    assert_eq!(error.code, Code::Unimplemented as i32);
    assert!(error.message.contains("frontend.lint"), "{}", error.message);
}

#[tokio::test]
async fn an_engine_without_merge_op_gets_a_graph_without_it() {
    let mut engine = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
    engine.llb_caps.retain(|c| c != "mergeop" && c != "diffop");
    let code = run_frontend(&engine, &[("filename", "env.kdl")]).await;
    assert_eq!(code, 0, "{:?}", engine.recorded().returns);
    let state = engine.recorded();
    for solve in &state.solves {
        let def = solve.definition.as_ref().expect("def");
        for md in def.metadata.values() {
            assert!(
                !md.caps.contains_key("mergeop"),
                "mergeop used on an engine without it"
            );
            assert!(!md.caps.contains_key("diffop"));
        }
    }
}

#[tokio::test]
async fn source_meta_resolver_is_preferred_when_the_engine_has_it() {
    let mut engine = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
    engine.gateway_caps.push("source.metaresolver".into());
    let code = run_frontend(&engine, &[("filename", "env.kdl")]).await;
    assert_eq!(code, 0);
    let state = engine.recorded();
    assert!(!state.resolves.is_empty());
    assert!(
        state.resolves.iter().all(|(r, _)| r.starts_with("meta:")),
        "{:?}",
        state.resolves
    );
}

#[tokio::test]
async fn no_cache_marks_every_op_of_the_build() {
    let engine = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
    let code = run_frontend(&engine, &[("filename", "env.kdl"), ("no-cache", "")]).await;
    assert_eq!(code, 0);
    let state = engine.recorded();
    // The recipe's and the ignore file's loads are not part of the build;
    // every other solve is.
    let mut built = 0;
    for solve in &state.solves {
        let def = solve.definition.as_ref().expect("def");
        let internal = def.metadata.values().any(|m| {
            m.description
                .get("llb.customname")
                .is_some_and(|n| n.starts_with("[internal] load"))
        });
        if !internal {
            built += 1;
            assert!(def.metadata.values().all(|m| m.ignore_cache));
        }
    }
    assert!(built > 0, "no build solve recorded");
}

/// `--no-cache-filter CPU` names the variant `cpu`, as `--target` would;
/// another variant's name leaves the build's cache alone.
#[tokio::test]
async fn no_cache_filter_names_variants_whatever_their_case() {
    let ignored = |filter: &'static str| async move {
        let engine = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
        let code = run_frontend(&engine, &[("filename", "env.kdl"), ("no-cache", filter)]).await;
        assert_eq!(code, 0);
        let state = engine.recorded();
        state
            .solves
            .iter()
            .filter_map(|s| s.definition.as_ref())
            .flat_map(|d| d.metadata.values())
            .any(|m| m.ignore_cache)
    };
    assert!(ignored("CPU").await);
    assert!(!ignored("gpu").await);
}

#[tokio::test]
async fn a_recipe_without_variants_builds_with_the_default_name() {
    let engine = FakeEngine::new().with_fixture("kiln.kdl", "plain.kdl");
    let code = run_frontend(&engine, &[]).await;
    assert_eq!(code, 0, "{:?}", engine.recorded().returns);
    let code = run_frontend(&engine, &[("requestid", "frontend.targets")]).await;
    assert_eq!(code, 0);
    let state = engine.recorded();
    let targets: serde_json::Value = serde_json::from_slice(
        &state.returns[1].result.as_ref().expect("result").metadata["result.json"],
    )
    .expect("json");
    assert_eq!(
        targets,
        serde_json::json!({"targets":[{"name":"default","default":true}]})
    );
}

#[tokio::test]
async fn every_local_source_belongs_to_the_build_session() {
    // Without it, two builds of the same recipe running at once share the
    // local vertex and can read each other's files.
    let engine = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
    let code = run_frontend(&engine, &[("filename", "env.kdl")]).await;
    assert_eq!(code, 0);
    let state = engine.recorded();
    let mut locals = 0;
    for solve in &state.solves {
        for src in sources(solve.definition.as_ref().expect("def")) {
            if src.identifier.starts_with("local://") {
                locals += 1;
                assert_eq!(
                    src.attrs.get("local.session").map(String::as_str),
                    Some(SESSION_ID),
                    "{}",
                    src.identifier
                );
            }
        }
    }
    assert!(locals >= 2, "the recipe and the context are locals");
}

#[tokio::test]
async fn warnings_reach_the_build_output_at_the_recipe_line() {
    let engine = FakeEngine::new().with_fixture("kiln.kdl", "warn.kdl");
    let code = run_frontend(&engine, &[]).await;
    assert_eq!(code, 0, "a warning does not fail the build");
    let state = engine.recorded();
    assert_eq!(state.warnings.len(), 1, "{:?}", state.warnings);
    let warning = &state.warnings[0];
    let short = String::from_utf8_lossy(&warning.short);
    assert!(
        short.starts_with("kiln.kdl:3:1: pytorch 2.99.0 is newer"),
        "{short}"
    );
    // Attached to the op that loaded the recipe, with the recipe and range.
    let load = state.solves[0].definition.as_ref().expect("def");
    assert!(
        load.metadata.contains_key(&warning.digest),
        "{}",
        warning.digest
    );
    assert_eq!(warning.info.as_ref().expect("info").filename, "kiln.kdl");
    assert_eq!(warning.ranges[0].start.expect("start").line, 3);
    drop(state);
    assert!(the_return(&engine).error.is_none());
}

#[tokio::test]
async fn the_dockerignore_becomes_the_contexts_exclude_patterns() {
    let excludes = |engine: &FakeEngine| -> Vec<String> {
        let state = engine.recorded();
        let mut found = Vec::new();
        for solve in &state.solves {
            for src in sources(solve.definition.as_ref().expect("def")) {
                // (The ignore file's own load reads the context too.)
                if src.identifier == "local://context"
                    && !src.attrs.contains_key("local.followpaths")
                {
                    found.push(
                        src.attrs
                            .get("local.excludepatterns")
                            .cloned()
                            .unwrap_or_default(),
                    );
                }
            }
        }
        found
    };
    let plain = FakeEngine::new().with_fixture("env.kdl", "env.kdl");
    assert_eq!(run_frontend(&plain, &[("filename", "env.kdl")]).await, 0);
    let without = excludes(&plain);
    assert!(!without.is_empty(), "no context source was solved");
    assert!(without.iter().all(String::is_empty), "{without:?}");

    let ignored = FakeEngine::new()
        .with_fixture("env.kdl", "env.kdl")
        .with_file(".dockerignore", b"# scratch\n/data/**\n*.local\n");
    assert_eq!(run_frontend(&ignored, &[("filename", "env.kdl")]).await, 0);
    let with = excludes(&ignored);
    assert!(
        with.iter().all(|e| e == r#"["data/**","*.local"]"#),
        "{with:?}"
    );

    // The recipe's own ignore file comes first.
    let own = FakeEngine::new()
        .with_fixture("env.kdl", "env.kdl")
        .with_file(".dockerignore", b"*.local\n")
        .with_file("env.kdl.dockerignore", b"notebooks\n");
    assert_eq!(run_frontend(&own, &[("filename", "env.kdl")]).await, 0);
    let with = excludes(&own);
    assert!(with.iter().all(|e| e == r#"["notebooks"]"#), "{with:?}");
}

/// The frontend reads requirements files through the build's context (one
/// round per level of includes) before it compiles: the files a file
/// includes travel into the install step, and a missing one is a located
/// recipe error.
#[tokio::test]
async fn requirements_files_and_their_includes_are_read_from_the_context() {
    let recipe: &[u8] = b"kiln 1\npython \"3.11\"\npip requirements=\"reqs/app.txt\"\n";
    let engine = FakeEngine::new()
        .with_file("env.kdl", recipe)
        .with_file("reqs/app.txt", b"-r base.txt\nflask\n")
        .with_file("reqs/base.txt", b"-c ../pins.txt\n")
        .with_file("pins.txt", b"flask<4\n");
    assert_eq!(run_frontend(&engine, &[("filename", "env.kdl")]).await, 0);
    let reads: Vec<String> = engine
        .recorded()
        .reads
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    for f in ["reqs/app.txt", "reqs/base.txt", "pins.txt"] {
        assert!(reads.iter().any(|r| r == f), "{f} was not read: {reads:?}");
    }
    let includes: Vec<String> = engine
        .recorded()
        .solves
        .iter()
        .flat_map(|s| sources(s.definition.as_ref().expect("def")))
        .filter_map(|src| src.attrs.get("local.includepattern").cloned())
        .collect();
    assert!(
        includes
            .iter()
            .any(|i| i == r#"["reqs/app.txt","pins.txt","reqs/base.txt"]"#),
        "the install step's context carries the includes: {includes:?}"
    );

    let missing = FakeEngine::new()
        .with_file("env.kdl", recipe)
        .with_file("reqs/app.txt", b"-r base.txt\n");
    assert_eq!(run_frontend(&missing, &[("filename", "env.kdl")]).await, 1);
    let error = error_of(&the_return(&missing));
    assert!(
        error.message.starts_with("env.kdl:3:1: error[kiln::missing_file]")
            && error
                .message
                .contains("`reqs/app.txt` line 1 reads `-r base.txt`, and `reqs/base.txt` is not in the build context"),
        "{}",
        error.message
    );
}
