//! A real S3-compatible server for the remote-cache tests: `moto_server` (PyPI `moto[server]`,
//! installed by .ci/run into the venv of `$PIPE_PYTHON`) on 127.0.0.1 on a port it picks,
//! stopped when dropped. The tests read and change what the server holds through object_store
//! (signed requests: moto refuses anonymous ones) and create buckets with a plain HTTP PUT.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Dummy credentials: moto accepts any; the tests check that these never leak.
pub const ACCESS_KEY: &str = "AKIAPIPETESTKEY00001";
pub const SECRET_KEY: &str = "pipe-test-secret-3f9a1c77b2";

pub struct Moto {
    child: Child,
    pub port: u16,
    rt: tokio::runtime::Runtime,
}

/// `moto_server` next to `$PIPE_PYTHON`, if installed.
fn moto_binary() -> Option<PathBuf> {
    let python = PathBuf::from(std::env::var_os("PIPE_PYTHON")?);
    let bin = python.parent()?.join("moto_server");
    bin.is_file().then_some(bin)
}

impl Moto {
    /// Starts a server, or returns `None` after a skip notice when moto is not installed
    /// (a failure when CI is set: .ci/run installs it).
    pub fn start(test: &str) -> Option<Moto> {
        Moto::start_with(test, &[])
    }

    /// Starts a server with extra environment (e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0`, which
    /// makes moto check credentials).
    pub fn start_with(test: &str, env: &[(&str, &str)]) -> Option<Moto> {
        let Some(bin) = moto_binary() else {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: moto_server not found next to $PIPE_PYTHON (.ci/run installs moto[server])");
            }
            pipe_steps::shared_data::skipped(&format!(
                "{test}: moto_server not found next to $PIPE_PYTHON (pip install 'moto[server]')"
            ));
            return None;
        };
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", "0"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start moto_server");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        // Reads the port from " * Running on http://127.0.0.1:PORT", then keeps draining.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = line.split("http://127.0.0.1:").nth(1).and_then(|p| p.trim().parse::<u16>().ok()) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(port);
                    }
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{test}: moto_server did not start within 60 s");
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        Some(Moto { child, port, rt })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (path-style PUT, as any S3 client would).
    pub fn create_bucket(&self, bucket: &str) {
        let status = self.raw("PUT", &format!("/{bucket}"));
        assert_eq!(status, 200, "creating bucket {bucket}");
    }

    /// One HTTP request with a syntactically valid, unchecked signature; returns the status.
    fn raw(&self, method: &str, path: &str) -> u16 {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect moto");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: AWS4-HMAC-SHA256 \
             Credential={ACCESS_KEY}/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        stream.write_all(request.as_bytes()).expect("write");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    /// The environment a `pipe` child needs to reach this server (and nothing else).
    pub fn env(&self, cmd: &mut Command) {
        aws_env(cmd, &self.endpoint());
    }

    fn store(&self, bucket: &str) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .expect("s3 client")
    }

    /// Object names under `prefix`, sorted, with their sizes.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        use futures_util::TryStreamExt;
        let store = self.store(bucket);
        let prefix = Path::from(prefix);
        let metas: Vec<object_store::ObjectMeta> =
            self.rt.block_on(store.list(Some(&prefix)).try_collect()).expect("list");
        let mut out: Vec<(String, u64)> = metas.into_iter().map(|m| (m.location.to_string(), m.size)).collect();
        out.sort();
        out
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let store = self.store(bucket);
        self.rt.block_on(async { store.get(&Path::from(key)).await?.bytes().await }).expect("get").to_vec()
    }

    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let store = self.store(bucket);
        self.rt.block_on(store.put(&Path::from(key), PutPayload::from(bytes.to_vec()))).expect("put");
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        let store = self.store(bucket);
        self.rt.block_on(store.delete(&Path::from(key))).expect("delete");
    }
}

/// Dummy credentials, the endpoint, and no instance-metadata lookups off this machine.
pub fn aws_env(cmd: &mut Command, endpoint: &str) {
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        // Credentials missing by mistake must not send object_store to 169.254.169.254.
        .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("PIPE_REMOTE")
        .env_remove("PIPE_REMOTE_MODE");
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An S3 endpoint that is up for reading and refuses every write: its buckets list as empty,
/// objects are not found, and PUT, POST and DELETE get 403 AccessDenied (a bucket policy
/// without write access, or a store whose writes fail). Counts the refused writes.
pub struct ReadOnlyStore {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ReadOnlyStore {
    pub fn start() -> ReadOnlyStore {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicUsize::new(0));
        let (stop2, writes2) = (stop.clone(), writes.clone());
        let handle = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let writes = writes2.clone();
                std::thread::spawn(move || {
                    if refuse_writes(stream) {
                        writes.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        ReadOnlyStore { addr, stop, writes, handle: Some(handle) }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes refused so far.
    pub fn writes(&self) -> usize {
        self.writes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Answers one request; `true` when it was a write (refused).
fn refuse_writes(mut stream: TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return false,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return false;
    }
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {
                if let Some((name, value)) = header.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
        }
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let (code, reason, text, write) = match method {
        "GET" if target.contains("list-type=2") => (
            200,
            "OK",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult \
             xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>team</Name><Prefix></Prefix><KeyCount>0</KeyCount>\
             <MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>",
            false,
        ),
        "GET" | "HEAD" => (
            404,
            "Not Found",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code><Message>The specified key does \
             not exist.</Message></Error>",
            false,
        ),
        _ => (
            403,
            "Forbidden",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Access \
             Denied</Message></Error>",
            true,
        ),
    };
    let body = if method == "HEAD" { "" } else { text };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes()));
    write
}

impl Drop for ReadOnlyStore {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A proxy in front of moto that holds every upload of a result's file (a PUT under `/files/`)
/// until a gate file exists, or `patience` has passed. It tells whether the uploads were
/// released by the gate: a test whose later step opens the gate proves that the step ran while
/// an earlier step's upload was still in flight, without timing anything.
pub struct GatedProxy {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Per held upload: released by the gate (`true`) or by running out of patience.
    released: std::sync::Arc<std::sync::Mutex<Vec<bool>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl GatedProxy {
    pub fn start(upstream: u16, gate: PathBuf, patience: Duration) -> GatedProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let released = Arc::new(Mutex::new(Vec::new()));
        let (stop2, released2) = (stop.clone(), released.clone());
        let handle = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (gate, released) = (gate.clone(), released2.clone());
                std::thread::spawn(move || {
                    forward(stream, upstream, |method, target| {
                        if method != "PUT" || !target.contains("/files/") {
                            return;
                        }
                        let start = std::time::Instant::now();
                        while !gate.exists() && start.elapsed() < patience {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        released.lock().unwrap().push(gate.exists());
                    })
                });
            }
        });
        GatedProxy { addr, stop, released, handle: Some(handle) }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Per held upload, in order: whether the gate released it.
    pub fn released(&self) -> Vec<bool> {
        self.released.lock().unwrap().clone()
    }
}

impl Drop for GatedProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Relays one request of a client to `upstream` (a connection closed by the server after its
/// response, and the client told to close too), calling `hold` with its method and target
/// before relaying it.
fn forward(client: TcpStream, upstream: u16, hold: impl Fn(&str, &str)) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(mut writer) = client.try_clone() else { return };
    let mut reader = BufReader::new(client);
    let mut line = String::new();
    if reader.read_line(&mut line).map_or(true, |n| n == 0) {
        return;
    }
    let mut head = line.clone();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).map_or(true, |n| n == 0) {
            return;
        }
        if header.trim().is_empty() {
            break;
        }
        let name = header.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if name == "content-length" {
            length = header.split_once(':').map_or(0, |(_, v)| v.trim().parse().unwrap_or(0));
        }
        if name != "connection" {
            head.push_str(&header);
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    hold(parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
    let mut response = Vec::new();
    if up.write_all(head.as_bytes()).and_then(|()| up.write_all(&body)).is_err()
        || up.read_to_end(&mut response).is_err()
    {
        return;
    }
    // The client must not reuse this connection: say so in the response's head.
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else { return };
    let mut out: String = String::from_utf8_lossy(&response[..end])
        .split("\r\n")
        .filter(|h| !h.to_ascii_lowercase().starts_with("connection:"))
        .map(|h| format!("{h}\r\n"))
        .collect();
    out.push_str("Connection: close\r\n\r\n");
    let _ = writer.write_all(out.as_bytes()).and_then(|()| writer.write_all(&response[end + 4..]));
}
