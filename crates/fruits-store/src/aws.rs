//! S3 settings from the standard AWS sources.
//!
//! Precedence, as the AWS tools have it: explicit settings ([`S3Settings`]) over environment
//! variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...) over the shared files of the active profile
//! (`AWS_PROFILE`, default `default`; `~/.aws/credentials` and `~/.aws/config`, or
//! `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE`). An explicit profile
//! ([`S3Settings::profile`], `--profile`) names the identity: its files win over the
//! environment. With no static credentials at all,
//! `object_store` falls back to web identity, container and instance roles.

use std::collections::HashMap;
use std::path::PathBuf;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

/// The non-secret S3 settings of a run: built once from the command line, carried by plans
/// to other processes; each overrides its environment variable there. Credentials are never
/// part of them: every process resolves its own ([`S3Credentials`] stay where they were made).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct S3Settings {
    /// Endpoint of an S3-compatible server (`AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Region (`AWS_REGION`).
    pub region: Option<String>,
    /// Profile of the shared AWS files (`AWS_PROFILE`).
    pub profile: Option<String>,
    /// Allow plain `http://` endpoints (`AWS_ALLOW_HTTP=true`).
    pub allow_http: bool,
}

/// Static credentials for programs that hold them already (the command line never takes
/// secrets as arguments). Not serialisable, and its `Debug` hides the secret.
#[derive(Clone)]
pub struct S3Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// A builder for `bucket` with every setting applied in precedence order.
pub(crate) fn builder(
    bucket: &str,
    opts: &S3Settings,
    credentials: Option<&S3Credentials>,
) -> AmazonS3Builder {
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let read = |path: &std::path::Path| std::fs::read_to_string(path).ok();
    let mut b = AmazonS3Builder::new();
    for (key, value) in settings(opts, credentials, &env, &read) {
        b = b.with_config(key, value);
    }
    if opts.allow_http {
        b = b.with_allow_http(true);
    }
    b.with_bucket_name(bucket)
}

/// Every S3 setting, from `env` (the process environment) and the shared files (`read`),
/// in the AWS tools' precedence: explicit options, then, with an explicit `--profile`, that
/// profile's files over the environment (as the AWS CLI does: the profile names the identity),
/// else the environment over the files of `AWS_PROFILE` (or `default`). Static credentials come
/// as a set from one source: a source that gives an access key replaces the key, secret and
/// session token of the sources below it.
fn settings(
    opts: &S3Settings,
    keys: Option<&S3Credentials>,
    env: &[(String, String)],
    read: &dyn Fn(&std::path::Path) -> Option<String>,
) -> HashMap<AmazonS3ConfigKey, String> {
    let var = |k: &str| {
        env.iter()
            .find(|(name, v)| name == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let profile = opts
        .profile
        .clone()
        .or_else(|| var("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let home = var("HOME").map(PathBuf::from);
    let credentials = var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
    let config = var("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    let mut files = HashMap::new();
    for (file, section) in [(config, config_section), (credentials, profile)] {
        let Some(text) = file.and_then(|f| read(&f)) else {
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
            if let Some(v) = values.get(key) {
                files.insert(config_key, v.clone());
            }
        }
    }
    let mut environment = HashMap::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("AWS_") else {
            continue;
        };
        if value.is_empty() || rest == "PROFILE" {
            continue;
        }
        if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            environment.insert(key, value.clone());
        }
    }
    let mut explicit = HashMap::new();
    if let Some(e) = &opts.endpoint {
        explicit.insert(AmazonS3ConfigKey::Endpoint, e.clone());
    }
    if let Some(r) = &opts.region {
        explicit.insert(AmazonS3ConfigKey::Region, r.clone());
    }
    if let Some(c) = keys {
        explicit.insert(AmazonS3ConfigKey::AccessKeyId, c.access_key_id.clone());
        explicit.insert(
            AmazonS3ConfigKey::SecretAccessKey,
            c.secret_access_key.clone(),
        );
    }
    let (lowest, middle) = if opts.profile.is_some() {
        (environment, files)
    } else {
        (files, environment)
    };
    let mut out = lowest;
    for layer in [middle, explicit] {
        if layer.contains_key(&AmazonS3ConfigKey::AccessKeyId) {
            for k in [
                AmazonS3ConfigKey::AccessKeyId,
                AmazonS3ConfigKey::SecretAccessKey,
                AmazonS3ConfigKey::Token,
            ] {
                out.remove(&k);
            }
        }
        out.extend(layer);
    }
    out
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
    fn an_explicit_profile_wins_over_the_environment_and_the_environment_over_aws_profile() {
        let files = |p: &std::path::Path| -> Option<String> {
            let name = p.file_name()?.to_str()?;
            match name {
                "credentials" => Some("[dev]\naws_access_key_id = DEV\naws_secret_access_key = devsecret\n[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n".into()),
                "config" => Some("[profile dev]\nregion = eu-west-3\nendpoint_url = http://dev:9000\n".into()),
                _ => None,
            }
        };
        let env: Vec<(String, String)> = [
            ("HOME", "/home/u"),
            ("AWS_ACCESS_KEY_ID", "ENV"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_SESSION_TOKEN", "envtoken"),
            ("AWS_REGION", "us-east-2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let get = |m: &HashMap<AmazonS3ConfigKey, String>, k| m.get(&k).cloned();
        use AmazonS3ConfigKey as K;
        // --profile dev: the profile's identity, region and endpoint; no stray env token.
        let dev = S3Settings {
            profile: Some("dev".into()),
            ..S3Settings::default()
        };
        let m = settings(&dev, None, &env, &files);
        assert_eq!(get(&m, K::AccessKeyId).as_deref(), Some("DEV"));
        assert_eq!(get(&m, K::SecretAccessKey).as_deref(), Some("devsecret"));
        assert_eq!(get(&m, K::Token), None);
        assert_eq!(get(&m, K::Region).as_deref(), Some("eu-west-3"));
        assert_eq!(get(&m, K::Endpoint).as_deref(), Some("http://dev:9000"));
        // AWS_PROFILE=dev (not explicit): the environment's keys and region win.
        let mut with_env_profile = env.clone();
        with_env_profile.push(("AWS_PROFILE".into(), "dev".into()));
        let m = settings(&S3Settings::default(), None, &with_env_profile, &files);
        assert_eq!(get(&m, K::AccessKeyId).as_deref(), Some("ENV"));
        assert_eq!(get(&m, K::Token).as_deref(), Some("envtoken"));
        assert_eq!(get(&m, K::Region).as_deref(), Some("us-east-2"));
        assert_eq!(get(&m, K::Endpoint).as_deref(), Some("http://dev:9000"));
        // Explicit options win over both.
        let explicit = S3Settings {
            profile: Some("dev".into()),
            region: Some("ap-south-1".into()),
            ..S3Settings::default()
        };
        let keys = S3Credentials {
            access_key_id: "OPT".into(),
            secret_access_key: "optsecret".into(),
        };
        let m = settings(&explicit, Some(&keys), &env, &files);
        assert_eq!(get(&m, K::AccessKeyId).as_deref(), Some("OPT"));
        assert_eq!(get(&m, K::Region).as_deref(), Some("ap-south-1"));
        // No profile, no env keys: the default profile's keys.
        let m = settings(&S3Settings::default(), None, &env[..1], &files);
        assert_eq!(get(&m, K::AccessKeyId).as_deref(), Some("DEF"));
    }

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
