//! The `download` step kind: fetch a URL (http, https, file) or copy a local path, verifying
//! a pinned SHA-256.
//!
//! With `sha256` set the step is keyed by the checksum alone (see [`Step::content_pin`]), so a
//! cached file is reused without touching the network, whatever URL or mirror served it. A
//! mirror folder (`--mirror`) is consulted by the URL's file name before the URL is fetched.
//! Transient failures (connection refused or reset, timeouts, HTTP 408/429/5xx) are retried
//! with exponential back-off; a 4xx status or an unknown host is reported at once.
//!
//! The output keeps the name of the URL's file (`reviews.csv`) as its [`InputSource`]: what
//! downstream messages name, and how a table kind tells the format. The name travels beside the
//! file rather than in it (the file is still the output `file`), so a download's content hash,
//! and every key downstream of it, is the hash of the bytes alone, as it always was.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{StepError, StepResult};
use crate::step::{
    Default, Environment, Events, InputSource, OutputSpec, ParamSpec, ParamType, Params, Step, StepContext, StepSpec,
};

pub struct Download;

static SPEC: StepSpec = StepSpec {
    kind: "download",
    all_cores: false,
    version: 1,
    summary: "fetch a URL (http, https, file) or a local path and verify its sha256",
    params: &[
        ParamSpec::required("url", ParamType::Url, "http(s):// or file:// URL, or a local path"),
        ParamSpec::optional("sha256", ParamType::Str, Default::Absent, "expected SHA-256 of the file (64 hex digits)"),
        ParamSpec::optional("retries", ParamType::Uint, Default::Int(4), "attempts after a transient failure")
            .not_in_key(),
        ParamSpec::optional("timeout_seconds", ParamType::Uint, Default::Int(60), "connect and read timeout")
            .not_in_key(),
    ],
    inputs: &[],
    outputs: &[OutputSpec { name: "file", help: "the downloaded file" }],
    reported: &[],
};

/// Where the bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Http(String),
    Local(PathBuf),
}

impl Source {
    pub fn parse(url: &str) -> StepResult<Source> {
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(Source::Http(url.to_string()))
        } else if let Some(path) = url.strip_prefix("file://") {
            Ok(Source::Local(PathBuf::from(path)))
        } else if url.contains("://") {
            Err(StepError::param("url", format!("`{url}` has an unsupported scheme (use http, https, file or a path)")))
        } else {
            Ok(Source::Local(PathBuf::from(url)))
        }
    }

    /// The file name a mirror is searched for.
    fn file_name(&self) -> Option<String> {
        match self {
            Source::Http(url) => {
                let path = url.split(['?', '#']).next().unwrap_or(url);
                path.rsplit('/').next().filter(|n| !n.is_empty()).map(str::to_string)
            }
            Source::Local(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
        }
    }
}

fn pinned_sha256(params: &Params) -> StepResult<Option<String>> {
    match params.opt_str("sha256")? {
        None => Ok(None),
        Some(s) => {
            let s = s.trim().to_ascii_lowercase();
            if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(Some(s))
            } else {
                Err(StepError::param("sha256", format!("`{s}` is not 64 hexadecimal digits")))
            }
        }
    }
}

impl Step for Download {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn content_pin(&self, params: &Params) -> Option<String> {
        pinned_sha256(params).ok().flatten().map(|s| format!("sha256:{s}"))
    }

    fn local_sources(&self, params: &Params) -> BTreeMap<String, PathBuf> {
        let mut out = BTreeMap::new();
        if self.content_pin(params).is_none() {
            if let Some(Ok(Source::Local(p))) = params.str("url").ok().map(Source::parse) {
                out.insert("url".to_string(), p);
            }
        }
        out
    }

    fn output_source(
        &self,
        _output: &str,
        params: &Params,
        _sources: &BTreeMap<String, InputSource>,
    ) -> Option<InputSource> {
        let url = params.str("url").ok()?;
        let file_name = Source::parse(url).ok().and_then(|s| s.file_name());
        Some(InputSource { display: url.to_string(), file_name })
    }

    fn validate(&self, params: &Params) -> StepResult<()> {
        pinned_sha256(params)?;
        Source::parse(params.str("url")?)?;
        Ok(())
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        let url = ctx.params.str("url")?;
        let source = Source::parse(url)?;
        let pin = pinned_sha256(ctx.params)?;
        let dest = ctx.output("file");
        let fetch = Fetch {
            retries: ctx.params.opt_usize("retries")?.unwrap_or(4),
            timeout: Duration::from_secs(ctx.params.opt_usize("timeout_seconds")?.unwrap_or(60) as u64),
            events: ctx.events,
            env: ctx.env,
        };

        let mirrored = match (&ctx.env.mirror, source.file_name()) {
            (Some(dir), Some(name)) if dir.join(&name).is_file() => Some(dir.join(name)),
            _ => None,
        };
        let (digest, origin) = match mirrored {
            Some(path) => {
                ctx.events.log(&format!("using mirror copy {}", path.display()));
                (fetch.copy(&path, &dest)?, path.display().to_string())
            }
            None => match &source {
                Source::Local(path) => (fetch.copy(path, &dest)?, path.display().to_string()),
                Source::Http(url) => (fetch.http(url, &dest)?, url.clone()),
            },
        };
        if let Some(expected) = pin {
            if digest != expected {
                return Err(StepError::input_with_help(
                    format!("sha256 mismatch for {origin}: expected {expected}, got {digest}"),
                    "the file changed upstream or is corrupt; check the URL, or update `sha256` if the new file is intended",
                ));
            }
        }
        Ok(())
    }
}

/// One fetch: copy or HTTP GET into `dest`, hashing as it goes.
struct Fetch<'a> {
    retries: usize,
    timeout: Duration,
    events: &'a dyn Events,
    env: &'a Environment,
}

impl Fetch<'_> {
    fn copy(&self, src: &Path, dest: &Path) -> StepResult<String> {
        let mut input = File::open(src).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StepError::input(format!("{}: no such file", src.display()))
            } else {
                StepError::Io { action: "opening", path: src.to_path_buf(), source: e }
            }
        })?;
        let total = input.metadata().ok().map(|m| m.len());
        self.events.progress_start("copying", total, "bytes");
        let digest = self.stream(&mut input, src, dest);
        self.events.progress_finish();
        digest
    }

    fn http(&self, url: &str, dest: &Path) -> StepResult<String> {
        let agent = ureq::AgentBuilder::new().timeout_connect(self.timeout).timeout_read(self.timeout).build();
        let mut attempt = 0;
        loop {
            match self.http_once(&agent, url, dest) {
                Ok(digest) => return Ok(digest),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Transient(why)) if attempt < self.retries => {
                    let wait = Duration::from_millis(250 << attempt.min(6));
                    attempt += 1;
                    self.events.log(&format!(
                        "{why}; retrying in {:.1}s ({attempt}/{})",
                        wait.as_secs_f64(),
                        self.retries
                    ));
                    thread::sleep(wait);
                }
                Err(Attempt::Transient(why)) => {
                    return Err(StepError::failed_with_help(
                        format!("{url}: {why} (gave up after {} attempts)", attempt + 1),
                        "check the network, or pass --mirror DIR with a local copy of the file",
                    ))
                }
            }
        }
    }

    fn http_once(&self, agent: &ureq::Agent, url: &str, dest: &Path) -> Result<String, Attempt> {
        let response = match agent.get(url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                let what = format!("HTTP {code} {}", r.status_text());
                return Err(if code == 408 || code == 429 || code >= 500 {
                    Attempt::Transient(what)
                } else {
                    Attempt::Final(StepError::input(format!("{url}: {what}")))
                });
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(match t.kind() {
                    ureq::ErrorKind::Dns => Attempt::Final(StepError::input_with_help(
                        format!("{url}: cannot resolve host ({t})"),
                        "check the URL, or pass --mirror DIR with a local copy of the file",
                    )),
                    ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => {
                        Attempt::Final(StepError::param("url", format!("`{url}` is not a valid URL ({t})")))
                    }
                    _ => Attempt::Transient(t.to_string()),
                })
            }
        };
        let total = response.header("Content-Length").and_then(|v| v.parse::<u64>().ok());
        self.events.progress_start("downloading", total, "bytes");
        let mut reader = response.into_reader();
        let result = self.stream(&mut reader, Path::new(url), dest);
        self.events.progress_finish();
        match result {
            Ok(digest) => match (total, fs::metadata(dest).map(|m| m.len())) {
                (Some(expected), Ok(got)) if got != expected => {
                    Err(Attempt::Transient(format!("connection closed after {got} of {expected} bytes")))
                }
                _ => Ok(digest),
            },
            Err(StepError::Io { action: "reading", source, .. }) => Err(Attempt::Transient(source.to_string())),
            Err(e) => Err(Attempt::Final(e)),
        }
    }

    /// Copies `input` to `dest` (truncating it) and returns the hex SHA-256 of the bytes.
    fn stream(&self, input: &mut dyn Read, origin: &Path, dest: &Path) -> StepResult<String> {
        let mut out = File::create(dest).map_err(StepError::io("creating", dest))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if self.env.is_cancelled() {
                return Err(StepError::Cancelled);
            }
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StepError::Io { action: "reading", path: origin.to_path_buf(), source: e }),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(StepError::io("writing", dest))?;
            self.events.progress_inc(n as u64);
        }
        out.sync_all().map_err(StepError::io("writing", dest))?;
        Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }
}

enum Attempt {
    Transient(String),
    Final(StepError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_mirror_names() {
        assert_eq!(
            Source::parse("https://h/x/ratings_train.txt?raw=1").unwrap().file_name().as_deref(),
            Some("ratings_train.txt")
        );
        assert_eq!(Source::parse("file:///tmp/a.txt").unwrap(), Source::Local(PathBuf::from("/tmp/a.txt")));
        assert!(Source::parse("ftp://h/x").is_err());
    }
}
