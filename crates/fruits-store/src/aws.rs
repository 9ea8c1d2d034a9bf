//! S3 settings from the standard AWS sources.
//!
//! Precedence, as the AWS tools have it: explicit options ([`S3Options`]) over environment
//! variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...) over the shared files of the active profile
//! (`AWS_PROFILE`, default `default`; `~/.aws/credentials` and `~/.aws/config`, or
//! `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE`). With no static credentials at all,
//! `object_store` falls back to web identity, container and instance roles.

use std::collections::HashMap;
use std::path::PathBuf;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

/// S3 settings given on the command line; each overrides its environment variable.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint of an S3-compatible server (`AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Region (`AWS_REGION`).
    pub region: Option<String>,
    /// Profile of the shared AWS files (`AWS_PROFILE`).
    pub profile: Option<String>,
    /// Allow plain `http://` endpoints (`AWS_ALLOW_HTTP=true`).
    pub allow_http: bool,
    /// Static credentials `(access key id, secret)`, for programs that hold them already; the
    /// command line never takes secrets as arguments.
    pub credentials: Option<(String, String)>,
}

/// A builder for `bucket` with every setting applied in precedence order.
pub(crate) fn builder(bucket: &str, opts: &S3Options) -> AmazonS3Builder {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let profile = opts
        .profile
        .clone()
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let mut b = AmazonS3Builder::new();
    // Shared files first, so that the environment and the options below win.
    let home = env("HOME").map(PathBuf::from);
    let credentials = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
    let config = env("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
    let from_files = [
        (
            config,
            if profile == "default" {
                "default".to_string()
            } else {
                format!("profile {profile}")
            },
        ),
        (credentials, profile.clone()),
    ];
    // Static keys from the files only when the environment has none.
    let env_has_keys = env("AWS_ACCESS_KEY_ID").is_some();
    for (file, section) in from_files {
        let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok()) else {
            continue;
        };
        let values = ini_section(&text, &section);
        for (key, config_key) in [
            ("region", AmazonS3ConfigKey::Region),
            ("endpoint_url", AmazonS3ConfigKey::Endpoint),
            ("aws_access_key_id", AmazonS3ConfigKey::AccessKeyId),
            ("aws_secret_access_key", AmazonS3ConfigKey::SecretAccessKey),
            ("aws_session_token", AmazonS3ConfigKey::Token),
        ] {
            let is_key = key.starts_with("aws_");
            if let Some(v) = values.get(key) {
                if !(is_key && env_has_keys) {
                    b = b.with_config(config_key, v.clone());
                }
            }
        }
    }
    for (os_key, os_value) in std::env::vars_os() {
        let (Some(os_key), Some(os_value)) = (os_key.to_str(), os_value.to_str()) else {
            continue;
        };
        if let Some(rest) = os_key.strip_prefix("AWS_") {
            if os_value.is_empty() || (rest == "PROFILE") {
                continue;
            }
            if let Ok(key) = os_key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                b = b.with_config(key, os_value);
            }
        }
    }
    if let Some(e) = &opts.endpoint {
        b = b.with_endpoint(e);
    }
    if let Some(r) = &opts.region {
        b = b.with_region(r);
    }
    if opts.allow_http {
        b = b.with_allow_http(true);
    }
    if let Some((id, secret)) = &opts.credentials {
        b = b.with_access_key_id(id).with_secret_access_key(secret);
    }
    b.with_bucket_name(bucket)
}

/// The `key = value` pairs of `[section]` in an AWS-style INI file.
fn ini_section(text: &str, section: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_named_section_only() {
        let text = "[default]\naws_access_key_id = A\n\n[profile dev]\nregion=eu-west-3\n# c\nendpoint_url = http://127.0.0.1:9000\n[other]\nregion = x\n";
        assert_eq!(
            ini_section(text, "default")
                .get("aws_access_key_id")
                .map(String::as_str),
            Some("A")
        );
        let dev = ini_section(text, "profile dev");
        assert_eq!(dev.get("region").map(String::as_str), Some("eu-west-3"));
        assert_eq!(
            dev.get("endpoint_url").map(String::as_str),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(dev.len(), 2);
    }
}
