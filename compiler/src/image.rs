//! OCI image configs: what a base image brings (as the engine resolved it)
//! and what the built image declares (`containerimage.config`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The runtime part of an OCI image config (`config` in the image JSON).
/// Fields kiln does not manage are kept as they came from the base.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, Value>,
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// An OCI image config (the image JSON minus what the exporter fills in).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".to_string(),
            diff_ids: Vec::new(),
        }
    }
}

impl ImageConfig {
    /// Parse the config JSON an engine returns for an image.
    pub fn from_json(bytes: &[u8]) -> Result<ImageConfig, serde_json::Error> {
        // An object: serde would also read a JSON array as the fields in
        // order (`[]` as an empty config).
        let value: Value = serde_json::from_slice(bytes)?;
        if !value.is_object() {
            return Err(serde::de::Error::custom("an image config is a JSON object"));
        }
        serde_json::from_value(value)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The value of an environment variable.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.config.env.iter().rev().find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then_some(v)
        })
    }

    /// Set an environment variable, in place if present.
    pub fn set_env(&mut self, name: &str, value: &str) {
        let entry = format!("{name}={value}");
        match self
            .config
            .env
            .iter_mut()
            .find(|kv| kv.split_once('=').is_some_and(|(k, _)| k == name))
        {
            Some(slot) => *slot = entry,
            None => self.config.env.push(entry),
        }
    }

    /// The environment as ordered pairs.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.config
            .env
            .iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    }
}

/// A base image as the engine resolved it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedImage {
    /// `sha256:…` of the manifest, pinned into the LLB.
    pub digest: Option<String>,
    pub config: ImageConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unknown_fields_and_round_trips() {
        let json = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin","LANG=C.UTF-8"],"Cmd":["python3"],"StopSignal":"SIGINT"},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;
        let mut c = ImageConfig::from_json(json).expect("parses");
        assert_eq!(c.env("LANG"), Some("C.UTF-8"));
        c.set_env("PATH", "/opt/venv/bin:/usr/bin");
        c.set_env("NEW", "1");
        assert_eq!(
            c.config.env,
            vec!["PATH=/opt/venv/bin:/usr/bin", "LANG=C.UTF-8", "NEW=1"]
        );
        let back: Value = serde_json::from_slice(&c.to_json()).expect("json");
        assert_eq!(back["config"]["StopSignal"], "SIGINT");
        assert_eq!(back["rootfs"]["diff_ids"][0], "sha256:aa");
    }
}
