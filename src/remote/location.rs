//! Where a remote is, from its URL, and the URL policy: no credentials in it (they come from
//! the environment, see [`super::credentials`]), and the form shown to users.

use std::path::PathBuf;

use super::RemoteError;

/// Where a remote URL points.
#[derive(Debug, PartialEq)]
pub(super) enum Location {
    S3 { bucket: String, prefix: String },
    File { dir: PathBuf },
}

/// Where the remote is, and the URL as shown to users. Refuses URLs with credentials in them.
pub(super) fn parse_url(text: &str) -> Result<(Location, String), RemoteError> {
    let shown_raw = text.split(['?', '#']).next().unwrap_or(text);
    let url = url::Url::parse(text).map_err(|e| {
        let help = if text.starts_with('/') {
            Some(format!("a shared directory is a file URL: file://{text}"))
        } else {
            Some("use s3://BUCKET/PREFIX or file:///ABSOLUTE/PATH".to_string())
        };
        RemoteError::config(&strip_userinfo(shown_raw), format!("not a URL: {e}"), help)
    })?;
    let shown = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        if url.path() == "/" && url.scheme() != "file" { "" } else { url.path() }
    );
    let env_hint = "give credentials in the environment instead: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY \
                    (and AWS_SESSION_TOKEN), or a profile in ~/.aws/credentials chosen with AWS_PROFILE";
    if !url.username().is_empty() || url.password().is_some() {
        return Err(RemoteError::config(
            &shown,
            "the URL contains credentials (user:password@); refused",
            Some(env_hint.into()),
        ));
    }
    if let Some(query) = url.query() {
        let secretish = url.query_pairs().any(|(k, _)| {
            let k = k.to_ascii_lowercase();
            ["x-amz-", "signature", "token", "secret", "credential", "key", "sig", "password"]
                .iter()
                .any(|s| k.contains(s))
        });
        return Err(if secretish || query.to_ascii_lowercase().contains("x-amz") {
            RemoteError::config(&shown, "the URL contains credentials in its query; refused", Some(env_hint.into()))
        } else {
            RemoteError::config(&shown, "a remote URL takes no query parameters", None)
        });
    }
    if url.fragment().is_some() {
        return Err(RemoteError::config(&shown, "a remote URL takes no #fragment", None));
    }
    match url.scheme() {
        "s3" | "s3a" => {
            let Some(bucket) = url.host_str().filter(|b| !b.is_empty()) else {
                return Err(RemoteError::config(&shown, "no bucket", Some("use s3://BUCKET/PREFIX".into())));
            };
            let prefix = url.path().trim_matches('/').to_string();
            Ok((Location::S3 { bucket: bucket.to_string(), prefix }, shown))
        }
        "file" => {
            if url.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                return Err(RemoteError::config(
                    &shown,
                    "a file URL names a local directory: file:///ABSOLUTE/PATH",
                    Some(format!("did you mean file:///{}{}?", url.host_str().unwrap_or(""), url.path())),
                ));
            }
            let dir = url.to_file_path().map_err(|()| {
                RemoteError::config(&shown, "not a directory path", Some("use file:///ABSOLUTE/PATH".into()))
            })?;
            Ok((Location::File { dir }, shown))
        }
        other => Err(RemoteError::config(
            &shown,
            format!("unsupported scheme `{other}://`"),
            Some(
                "this build of pipe reads s3:// (and S3-compatible servers through AWS_ENDPOINT_URL) and file://"
                    .into(),
            ),
        )),
    }
}

/// `scheme://user:pass@host/...` without the `user:pass@`, for messages about unparsable URLs.
fn strip_userinfo(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_locations() {
        let (loc, shown) = parse_url("s3://bucket/team/cache/").unwrap();
        assert_eq!(loc, Location::S3 { bucket: "bucket".into(), prefix: "team/cache".into() });
        assert_eq!(shown, "s3://bucket/team/cache/");
        let (loc, _) = parse_url("s3://bucket").unwrap();
        assert_eq!(loc, Location::S3 { bucket: "bucket".into(), prefix: String::new() });
        let (loc, shown) = parse_url("file:///mnt/shared/pipe").unwrap();
        assert_eq!(loc, Location::File { dir: PathBuf::from("/mnt/shared/pipe") });
        assert_eq!(shown, "file:///mnt/shared/pipe");
    }

    #[test]
    fn urls_with_secrets_are_refused_without_showing_them() {
        for url in [
            "s3://AKIAEXAMPLE:supersecret@bucket/prefix",
            "s3://bucket/prefix?X-Amz-Credential=AKIA&X-Amz-Signature=supersecret",
            "s3://bucket/prefix?token=supersecret",
        ] {
            let e = parse_url(url).unwrap_err();
            assert!(e.config, "{url}");
            let text = format!("{e} {:?}", e.help);
            assert!(!text.contains("supersecret"), "{text}");
            assert!(text.contains("AWS_SECRET_ACCESS_KEY"), "{text}");
        }
        let e = parse_url("gs://bucket/x").unwrap_err();
        assert!(e.message.contains("unsupported scheme"), "{}", e.message);
        let e = parse_url("/mnt/shared").unwrap_err();
        assert_eq!(e.help.as_deref(), Some("a shared directory is a file URL: file:///mnt/shared"));
        let e = parse_url("file://mnt/shared").unwrap_err();
        assert!(e.help.unwrap_or_default().contains("file:///mnt/shared"));
    }
}
