//! A small Hugging Face hub on 127.0.0.1 for tests of the real `hf-hub` client: plain
//! HTTP/1.1 (std::net), the endpoints and headers `hf-hub` 0.4 uses:
//!
//! - `GET /api/models/{id}/revision/{rev}` → `{"sha": …, "siblings": [{"rfilename": …}]}`;
//!   401 for an unknown model (as the hub answers without a token), 404 for an unknown revision.
//! - `GET /{id}/resolve/{rev}/{file}` → the file of the commit `rev` names, with `etag` and
//!   `x-repo-commit`, honouring `Range: bytes=a-[b]` (206 + `Content-Range`). Large-file-storage
//!   files (`*.safetensors`, `*.bin`) answer 302 to an absolute `/cdn/{etag}` URL with
//!   `x-linked-etag`, as the hub does; the CDN honours ranges too.
//! - A renamed model answers 307 with a relative `Location` (both endpoints).
//!
//! Commits get made-up 40-hex shas; branches and tags move when told to. It stops when dropped
//! (connections to its port are then refused). Shared by the two test binaries through
//! `#[path]`, so it lives in one file.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Default)]
struct State {
    /// Model id → revision (branch or tag) → sha.
    refs: HashMap<String, HashMap<String, String>>,
    /// (model id, sha) → file name → bytes.
    commits: HashMap<(String, String), BTreeMap<String, Vec<u8>>>,
    /// etag → bytes, for the CDN.
    blobs: HashMap<String, Vec<u8>>,
    /// Old id → new id.
    renamed: HashMap<String, String>,
    /// When set, `x-repo-commit` names this sha whatever was asked (a misbehaving hub).
    misreport: Option<String>,
    /// Request paths in order.
    requests: Vec<String>,
    made: u64,
}

pub struct Hub {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    handle: Option<thread::JoinHandle<()>>,
}

fn hash_hex<T: Hash>(value: T, width: usize) -> String {
    let mut out = String::new();
    let mut round = 0u64;
    while out.len() < width {
        let mut h = DefaultHasher::new();
        (round, &value).hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
        round += 1;
    }
    out.truncate(width);
    out
}

impl Hub {
    pub fn start() -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let state: Arc<Mutex<State>> = Arc::default();
        let (s, st) = (stop.clone(), state.clone());
        let handle = thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let st = st.clone();
                thread::spawn(move || handle_connection(stream, addr, &st));
            }
        });
        Hub { addr, stop, state, handle: Some(handle) }
    }

    /// The endpoint to give hf-hub (`HF_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Publishes a new commit of `id` holding `files` and moves `main` to it; returns its sha.
    pub fn commit(&self, id: &str, files: &[(&str, &[u8])]) -> String {
        let mut st = self.state.lock().unwrap();
        st.made += 1;
        let sha = hash_hex((id, st.made, files), 40);
        let files: BTreeMap<String, Vec<u8>> = files.iter().map(|(n, b)| (n.to_string(), b.to_vec())).collect();
        for bytes in files.values() {
            st.blobs.insert(etag(bytes), bytes.clone());
        }
        st.commits.insert((id.to_string(), sha.clone()), files);
        st.refs.entry(id.to_string()).or_default().insert("main".into(), sha.clone());
        sha
    }

    /// Points branch or tag `name` of `id` at `sha`.
    pub fn set_ref(&self, id: &str, name: &str, sha: &str) {
        self.state.lock().unwrap().refs.entry(id.to_string()).or_default().insert(name.into(), sha.into());
    }

    /// Answers requests for `old` with a redirect to `new`.
    pub fn rename(&self, old: &str, new: &str) {
        self.state.lock().unwrap().renamed.insert(old.into(), new.into());
    }

    /// Makes every file answer name commit `sha` in `x-repo-commit`.
    pub fn misreport_commit(&self, sha: Option<&str>) {
        self.state.lock().unwrap().misreport = sha.map(str::to_string);
    }

    /// The request paths so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// An endpoint on 127.0.0.1 where nothing listens: connections are refused at once.
pub fn unreachable_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

fn etag(bytes: &[u8]) -> String {
    hash_hex(bytes, 40)
}

struct Response {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn new(code: u16, body: impl Into<Vec<u8>>) -> Response {
        Response { code, headers: Vec::new(), body: body.into() }
    }
    fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
    fn error(code: u16, message: &str) -> Response {
        Response::new(code, format!("{{\"error\":\"{message}\"}}")).header("Content-Type", "application/json")
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Error",
    }
}

/// The whole body, or the `bytes=a-[b]` slice of it as a 206.
fn ranged(bytes: &[u8], range: Option<&str>) -> Response {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Response::new(200, bytes.to_vec()).header("Accept-Ranges", "bytes");
    };
    let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
    let len = bytes.len();
    let start: usize = a.parse().unwrap_or(0);
    let end: usize =
        if b.is_empty() { len.saturating_sub(1) } else { b.parse().unwrap_or(0).min(len.saturating_sub(1)) };
    if start >= len || end < start {
        return Response::new(416, Vec::new()).header("Content-Range", format!("bytes */{len}"));
    }
    Response::new(206, bytes[start..=end].to_vec())
        .header("Content-Range", format!("bytes {start}-{end}/{len}"))
        .header("Accept-Ranges", "bytes")
}

fn route(st: &mut State, addr: SocketAddr, path: &str, range: Option<&str>) -> Response {
    let revision_of = |st: &State, id: &str, rev: &str| -> Option<String> {
        let rev = rev.replace("%2F", "/");
        if rev.len() == 40 && st.commits.contains_key(&(id.to_string(), rev.clone())) {
            return Some(rev);
        }
        st.refs.get(id).and_then(|r| r.get(&rev)).cloned()
    };
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((id, rev)) = rest.rsplit_once("/revision/") else { return Response::error(404, "Not Found") };
        if let Some(new) = st.renamed.get(id) {
            return Response::new(307, "").header("Location", format!("/api/models/{new}/revision/{rev}"));
        }
        if !st.refs.contains_key(id) {
            return Response::error(401, "Repository Not Found");
        }
        let Some(sha) = revision_of(st, id, rev) else { return Response::error(404, "Revision Not Found") };
        let siblings: Vec<String> =
            st.commits[&(id.to_string(), sha.clone())].keys().map(|f| format!("{{\"rfilename\":\"{f}\"}}")).collect();
        let body = format!("{{\"id\":\"{id}\",\"sha\":\"{sha}\",\"siblings\":[{}]}}", siblings.join(","));
        return Response::new(200, body).header("Content-Type", "application/json");
    }
    if let Some(tag) = path.strip_prefix("/cdn/") {
        return match st.blobs.get(tag) {
            Some(bytes) => ranged(bytes, range),
            None => Response::error(404, "Not Found"),
        };
    }
    let Some((id, rest)) = path.trim_start_matches('/').split_once("/resolve/") else {
        return Response::error(404, "Not Found");
    };
    if let Some(new) = st.renamed.get(id) {
        return Response::new(307, "").header("Location", format!("/{new}/resolve/{rest}"));
    }
    if !st.refs.contains_key(id) {
        return Response::error(401, "Repository Not Found");
    }
    let Some((rev, file)) = rest.split_once('/') else { return Response::error(404, "Not Found") };
    let Some(sha) = revision_of(st, id, rev) else { return Response::error(404, "Revision Not Found") };
    let Some(bytes) = st.commits[&(id.to_string(), sha.clone())].get(file) else {
        return Response::error(404, "Entry not found").header("x-repo-commit", sha);
    };
    let commit = st.misreport.clone().unwrap_or(sha);
    let tag = etag(bytes);
    if file.ends_with(".safetensors") || file.ends_with(".bin") {
        return Response::new(302, "")
            .header("Location", format!("http://{addr}/cdn/{tag}"))
            .header("x-repo-commit", commit)
            .header("x-linked-etag", format!("\"{tag}\""))
            .header("x-linked-size", bytes.len().to_string());
    }
    ranged(bytes, range).header("x-repo-commit", commit).header("ETag", format!("\"{tag}\""))
}

fn handle_connection(mut stream: TcpStream, addr: SocketAddr, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut range = None;
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {
                if let Some((name, value)) = header.split_once(':') {
                    if name.trim().eq_ignore_ascii_case("range") {
                        range = Some(value.trim().to_string());
                    }
                }
            }
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let path = path.split('?').next().unwrap_or("/").to_string();
    let response = {
        let mut st = state.lock().unwrap();
        st.requests.push(path.clone());
        route(&mut st, addr, &path, range.as_deref())
    };
    let mut head = format!("HTTP/1.1 {} {}\r\n", response.code, reason(response.code));
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", response.body.len()));
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&response.body);
}
