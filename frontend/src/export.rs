//! The `Result` a build returns: the solved refs and the metadata the image
//! exporter reads, laid out as BuildKit's Dockerfile frontend does
//! (`frontend/dockerui/build.go`, keys from
//! `exporter/containerimage/exptypes/types.go`):
//!
//! - one platform: the ref, `containerimage.config`;
//! - several (or `multi-platform` asked for): a ref per platform id and
//!   `containerimage.config/<id>`;
//! - either way `refs.platforms`, the platform list with ids.

use std::collections::BTreeMap;

use kiln_compiler::Platform;
use kiln_proto::gateway;
use serde::Serialize;

use crate::engine::{Caps, gateway_cap};
use crate::failure::Failure;

pub const IMAGE_CONFIG_KEY: &str = "containerimage.config";
pub const PLATFORMS_KEY: &str = "refs.platforms";

/// One platform's solved image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformImage {
    pub platform: Platform,
    /// The engine's id of the solved ref.
    pub ref_id: String,
    /// The OCI image config, as JSON.
    pub config: Vec<u8>,
}

/// `exptypes.Platforms`: Go encodes it without JSON tags, so the keys are
/// the capitalised field names; the inner platform is an OCI platform.
#[derive(Debug, Clone, Serialize)]
struct ExportPlatforms {
    #[serde(rename = "Platforms")]
    platforms: Vec<ExportPlatform>,
}

#[derive(Debug, Clone, Serialize)]
struct ExportPlatform {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Platform")]
    platform: OciPlatform,
}

#[derive(Debug, Clone, Serialize)]
struct OciPlatform {
    architecture: String,
    os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

/// The platform id the exporter keys per-platform data by
/// (`platforms.FormatAll`: `os/arch[/variant]`).
pub fn platform_id(p: &Platform) -> String {
    p.to_string()
}

fn refs_platforms(images: &[PlatformImage]) -> Result<Vec<u8>, Failure> {
    let list = ExportPlatforms {
        platforms: images
            .iter()
            .map(|i| ExportPlatform {
                id: platform_id(&i.platform),
                platform: OciPlatform {
                    architecture: i.platform.architecture.clone(),
                    os: i.platform.os.clone(),
                    variant: i.platform.variant.clone(),
                },
            })
            .collect(),
    };
    serde_json::to_vec(&list)
        .map_err(|e| Failure::Internal(format!("encoding {PLATFORMS_KEY}: {e}")))
}

/// The `Result` for the solved images, in the form the engine's caps allow.
pub fn image_result(
    images: &[PlatformImage],
    multi_platform: bool,
    caps: &Caps,
) -> Result<gateway::Result, Failure> {
    use gateway::result::Result as R;

    let mut metadata = BTreeMap::new();
    let result = match images {
        [single] if !multi_platform => {
            metadata.insert(IMAGE_CONFIG_KEY.to_string(), single.config.clone());
            if caps.has_gateway(gateway_cap::PROTO_REF_ARRAY) {
                R::Ref(gateway::Ref {
                    id: single.ref_id.clone(),
                    def: None,
                })
            } else {
                R::RefDeprecated(single.ref_id.clone())
            }
        }
        _ => {
            if images.len() > 1 && !caps.has_gateway(gateway_cap::RETURN_MAP) {
                return Err(Failure::Unsupported(
                    "this engine cannot return several platforms from one build (no `returnmap` \
                     capability); build one --platform at a time or upgrade BuildKit"
                        .to_string(),
                ));
            }
            for i in images {
                metadata.insert(
                    format!("{IMAGE_CONFIG_KEY}/{}", platform_id(&i.platform)),
                    i.config.clone(),
                );
            }
            if caps.has_gateway(gateway_cap::PROTO_REF_ARRAY) {
                R::Refs(gateway::RefMap {
                    refs: images
                        .iter()
                        .map(|i| {
                            (
                                platform_id(&i.platform),
                                gateway::Ref {
                                    id: i.ref_id.clone(),
                                    def: None,
                                },
                            )
                        })
                        .collect(),
                })
            } else {
                R::RefsDeprecated(gateway::RefMapDeprecated {
                    refs: images
                        .iter()
                        .map(|i| (platform_id(&i.platform), i.ref_id.clone()))
                        .collect(),
                })
            }
        }
    };
    metadata.insert(PLATFORMS_KEY.to_string(), refs_platforms(images)?);
    Ok(gateway::Result {
        result: Some(result),
        metadata,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn caps(ids: &[&str]) -> Caps {
        Caps {
            gateway: ids.iter().map(|s| (*s).to_string()).collect(),
            llb: BTreeSet::new(),
        }
    }

    fn image(p: &str, id: &str) -> PlatformImage {
        PlatformImage {
            platform: Platform::parse(p).expect("platform"),
            ref_id: id.to_string(),
            config: format!(r#"{{"architecture":"{p}"}}"#).into_bytes(),
        }
    }

    #[test]
    fn one_platform_returns_one_ref_and_its_config() {
        let r = image_result(
            &[image("linux/amd64", "r1")],
            false,
            &caps(&["proto.refarray"]),
        )
        .expect("result");
        match r.result {
            Some(gateway::result::Result::Ref(ref rf)) => assert_eq!(rf.id, "r1"),
            ref other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            r.metadata[IMAGE_CONFIG_KEY],
            br#"{"architecture":"linux/amd64"}"#
        );
        let platforms: serde_json::Value =
            serde_json::from_slice(&r.metadata[PLATFORMS_KEY]).expect("json");
        assert_eq!(
            platforms,
            serde_json::json!({"Platforms":[{"ID":"linux/amd64","Platform":{"architecture":"amd64","os":"linux"}}]})
        );
    }

    #[test]
    fn several_platforms_return_a_ref_map() {
        let images = [image("linux/amd64", "r1"), image("linux/arm/v7", "r2")];
        let r =
            image_result(&images, true, &caps(&["proto.refarray", "returnmap"])).expect("result");
        match r.result {
            Some(gateway::result::Result::Refs(ref m)) => {
                assert_eq!(m.refs["linux/amd64"].id, "r1");
                assert_eq!(m.refs["linux/arm/v7"].id, "r2");
            }
            ref other => panic!("unexpected {other:?}"),
        }
        assert!(r.metadata.contains_key("containerimage.config/linux/amd64"));
        assert!(
            r.metadata
                .contains_key("containerimage.config/linux/arm/v7")
        );
        assert!(!r.metadata.contains_key(IMAGE_CONFIG_KEY));
        let platforms: serde_json::Value =
            serde_json::from_slice(&r.metadata[PLATFORMS_KEY]).expect("json");
        assert_eq!(platforms["Platforms"][1]["Platform"]["variant"], "v7");
    }

    #[test]
    fn old_engines_get_the_deprecated_forms() {
        let r = image_result(&[image("linux/amd64", "r1")], false, &caps(&[])).expect("result");
        assert_eq!(
            r.result,
            Some(gateway::result::Result::RefDeprecated("r1".into()))
        );
        let images = [image("linux/amd64", "r1"), image("linux/arm64", "r2")];
        assert!(matches!(
            image_result(&images, true, &caps(&[])),
            Err(Failure::Unsupported(_))
        ));
        let r = image_result(&images, true, &caps(&["returnmap"])).expect("result");
        assert!(matches!(
            r.result,
            Some(gateway::result::Result::RefsDeprecated(_))
        ));
    }
}
