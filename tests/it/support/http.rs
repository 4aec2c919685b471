//! A real HTTP/1.1 server on 127.0.0.1 for download tests: each path has a behaviour (serve,
//! fail N times then serve, a status code, trickle slowly); requests are counted per path.
//! It stops when dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Clone)]
pub enum Behavior {
    Serve(Vec<u8>),
    /// Answer 503 the first `failures` times, then serve.
    FailThenServe {
        failures: usize,
        body: Vec<u8>,
    },
    Status(u16),
    /// Serve in `chunk`-byte pieces with `delay` between them.
    Slow {
        body: Vec<u8>,
        chunk: usize,
        delay: Duration,
    },
}

pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    routes: Arc<Mutex<HashMap<String, Behavior>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let routes: Arc<Mutex<HashMap<String, Behavior>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (s, r, h) = (stop.clone(), routes.clone(), hits.clone());
        let handle = thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (r, h) = (r.clone(), h.clone());
                thread::spawn(move || handle_connection(stream, &r, &h));
            }
        });
        Server { addr, stop, routes, hits, handle: Some(handle) }
    }

    pub fn route(&self, path: &str, behavior: Behavior) {
        self.routes.lock().unwrap().insert(path.to_string(), behavior);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn handle_connection(
    mut stream: TcpStream,
    routes: &Mutex<HashMap<String, Behavior>>,
    hits: &Mutex<HashMap<String, usize>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let count = {
        let mut h = hits.lock().unwrap();
        let c = h.entry(path.clone()).or_insert(0);
        *c += 1;
        *c
    };
    let behavior = routes.lock().unwrap().get(&path).cloned();
    let respond = |stream: &mut TcpStream, code: u16, reason: &str, body: &[u8]| {
        let head = format!("HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    };
    match behavior {
        None => respond(&mut stream, 404, "Not Found", b"not found"),
        Some(Behavior::Serve(body)) => respond(&mut stream, 200, "OK", &body),
        Some(Behavior::FailThenServe { failures, body }) => {
            if count <= failures {
                respond(&mut stream, 503, "Service Unavailable", b"try later");
            } else {
                respond(&mut stream, 200, "OK", &body);
            }
        }
        Some(Behavior::Status(code)) => respond(&mut stream, code, "Error", b"error"),
        Some(Behavior::Slow { body, chunk, delay }) => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            if stream.write_all(head.as_bytes()).is_err() {
                return;
            }
            for piece in body.chunks(chunk.max(1)) {
                if stream.write_all(piece).is_err() || stream.flush().is_err() {
                    return;
                }
                thread::sleep(delay);
            }
        }
    }
}
