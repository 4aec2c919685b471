//! AWS credentials and the S3 client built from them: the `AWS_*` environment or a profile of
//! `~/.aws/credentials` and `~/.aws/config`, and the scrubbing of their values from messages.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use super::RemoteError;

/// The S3 client: settings from the `AWS_*` environment (object_store reads them), else from
/// the `~/.aws` profile; retries bounded so that a store that is down is reported in seconds.
/// The S3 client, and whether credentials were given (else it asks the instance metadata).
pub(super) fn s3_store(bucket: &str, shown: &str) -> Result<(object_store::aws::AmazonS3, bool), RemoteError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
        if endpoint.contains('@') || endpoint.contains('?') {
            return Err(RemoteError::config(
                shown,
                "AWS_ENDPOINT_URL contains credentials or a query; refused",
                Some(
                    "set AWS_ENDPOINT_URL to scheme://host:port only, and credentials in AWS_ACCESS_KEY_ID / \
                      AWS_SECRET_ACCESS_KEY"
                        .to_string(),
                ),
            ));
        }
    }
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let profile = AwsProfile::load();
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        if let (Some(id), Some(secret)) = (&profile.access_key_id, &profile.secret_access_key) {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(token) = &profile.session_token {
                builder = builder.with_token(token);
            }
        }
    }
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
        if let Some(region) = &profile.region {
            builder = builder.with_region(region);
        }
    } else if std::env::var_os("AWS_REGION").is_none() {
        if let Ok(region) = std::env::var("AWS_DEFAULT_REGION") {
            builder = builder.with_region(region);
        }
    }
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        if let Some(endpoint) = &profile.endpoint_url {
            builder = builder.with_endpoint(endpoint);
        }
    }
    let configured = std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
        || profile.access_key_id.is_some()
        || [
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
        || env_true("AWS_SKIP_SIGNATURE");
    // Without any, the client asks the EC2 instance metadata service (an instance role);
    // AWS_EC2_METADATA_DISABLED says not to, as in the AWS tools.
    if !configured && env_true("AWS_EC2_METADATA_DISABLED") {
        return Err(RemoteError::config(
            shown,
            "no AWS credentials: none in the environment or ~/.aws, and AWS_EC2_METADATA_DISABLED is set",
            Some("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials".into()),
        ));
    }
    // An http:// endpoint (a local S3-compatible server) is allowed when it is the one given.
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint).unwrap_or_default();
    if endpoint.starts_with("http://") {
        builder = builder.with_allow_http(true);
    }
    let retry = object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 4,
        retry_timeout: Duration::from_secs(120),
    };
    let mut builder = builder.with_retry(retry);
    if std::env::var_os("AWS_CONNECT_TIMEOUT").is_none() {
        builder = builder.with_config(AmazonS3ConfigKey::Client(object_store::ClientConfigKey::ConnectTimeout), "5s");
    }
    let store = builder.build().map_err(|e| {
        RemoteError::config(
            shown,
            format!("cannot set up the S3 client: {e}"),
            Some("check AWS_REGION, AWS_ENDPOINT_URL and the bucket name".to_string()),
        )
    })?;
    Ok((store, configured))
}

fn env_true(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// The settings of one profile of `~/.aws/credentials` and `~/.aws/config` (`AWS_PROFILE`,
/// else `default`; `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE` move the files).
#[derive(Debug, Default)]
struct AwsProfile {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
}

impl AwsProfile {
    fn load() -> AwsProfile {
        let name = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        let credentials = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws/credentials"));
        let config = std::env::var_os("AWS_CONFIG_FILE").map(PathBuf::from).unwrap_or_else(|| home.join(".aws/config"));
        let mut values = ini_section(&credentials, &name);
        let config_section = if name == "default" { name.clone() } else { format!("profile {name}") };
        for (k, v) in ini_section(&config, &config_section) {
            values.entry(k).or_insert(v);
        }
        AwsProfile {
            access_key_id: values.remove("aws_access_key_id"),
            secret_access_key: values.remove("aws_secret_access_key"),
            session_token: values.remove("aws_session_token"),
            region: values.remove("region"),
            endpoint_url: values.remove("endpoint_url"),
        }
    }
}

/// `key = value` lines of section `[name]` of an INI file (none when it cannot be read).
fn ini_section(path: &FsPath, name: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(text) = fs::read_to_string(path) else { return out };
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section.trim() == name;
        } else if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    out
}

/// `text` with the values of credential variables (and of the profile) replaced.
pub fn redact(text: String) -> String {
    let mut secrets: Vec<String> = ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .collect();
    let profile = AwsProfile::load();
    secrets.extend([profile.secret_access_key, profile.session_token, profile.access_key_id].into_iter().flatten());
    let mut text = text;
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(s.as_str(), "[redacted]");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_from_ini_sections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        fs::write(
            &path,
            "[default]\naws_access_key_id = A\n\n[team]\n# comment\naws_access_key_id=B\nregion = eu-west-1\n",
        )
        .unwrap();
        assert_eq!(ini_section(&path, "team").get("aws_access_key_id").map(String::as_str), Some("B"));
        assert_eq!(ini_section(&path, "team").get("region").map(String::as_str), Some("eu-west-1"));
        assert_eq!(ini_section(&path, "default").len(), 1);
        assert!(ini_section(&path, "missing").is_empty());
    }
}
