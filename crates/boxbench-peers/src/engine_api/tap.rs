//! A tap on the Docker socket: a unix socket that forwards every connection to the daemon's and
//! stamps each chunk crossing it, so the docker client's own calls can be timed from outside it —
//! when it sent each request and when the daemon's answer ended — without changing the client.
//!
//! [`calls`] turns the stamps into calls: on each connection, a chunk from the client that starts
//! with a request line opens a call; it ends at the daemon's last chunk before the client's next
//! request on that connection (a streamed answer such as `wait`'s ends with its last chunk), or at
//! the `101` head of an upgraded connection (`attach`), after which the stream is not a call.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use boxbench_core::clock::MonotonicNs;

/// Which way a chunk went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the daemon.
    Request,
    /// From the daemon to the client.
    Answer,
}

/// One chunk that crossed the tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The connection, numbered in the order they were accepted.
    pub connection: usize,
    /// Which way.
    pub direction: Direction,
    /// When it was read.
    pub at: MonotonicNs,
    /// Its first line, if it starts an HTTP request or response (`POST /v1.41/... HTTP/1.1`).
    pub head: Option<String>,
}

/// One call of the client, as seen on the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The call's name: the last segment of its path without the query (`_ping`, `create`,
    /// `attach`, `wait`, `start`).
    pub name: String,
    /// When its request arrived.
    pub sent: MonotonicNs,
    /// When its answer ended (`None` if none came).
    pub answered: Option<MonotonicNs>,
}

const METHODS: [&str; 5] = ["GET ", "HEAD ", "POST ", "DELETE ", "PUT "];

fn head_of(bytes: &[u8]) -> Option<String> {
    let line = bytes.split(|b| *b == b'\r' || *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    (METHODS.iter().any(|m| line.starts_with(m)) || line.starts_with("HTTP/1.")).then(|| line.to_owned())
}

/// The call a request line makes: `POST /v1.41/containers/ID/wait?condition=removed HTTP/1.1` → `wait`.
fn call_name(request_line: &str) -> String {
    let target = request_line.split(' ').nth(1).unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

/// The calls in `chunks`, in the order they were sent.
pub fn calls(chunks: &[Chunk]) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    let connections: std::collections::BTreeSet<usize> = chunks.iter().map(|c| c.connection).collect();
    for connection in connections {
        let mut open: Option<Call> = None;
        let mut first_answer = true;
        for chunk in chunks.iter().filter(|c| c.connection == connection) {
            match (chunk.direction, &chunk.head) {
                (Direction::Request, Some(line)) if !line.starts_with("HTTP/") => {
                    calls.extend(open.take());
                    open = Some(Call { name: call_name(line), sent: chunk.at, answered: None });
                    first_answer = true;
                }
                (Direction::Answer, head) => {
                    if let Some(call) = open.as_mut() {
                        call.answered = Some(chunk.at);
                        let upgraded = first_answer && head.as_deref().is_some_and(|h| h.contains(" 101 "));
                        first_answer = false;
                        if upgraded {
                            calls.extend(open.take());
                        }
                    }
                }
                _ => {}
            }
        }
        calls.extend(open.take());
    }
    calls.sort_by_key(|c| c.sent);
    calls
}

/// A tap listening at a socket of its own, forwarding to the daemon's; stopped when dropped.
#[derive(Debug)]
pub struct Tap {
    socket: PathBuf,
    chunks: Arc<Mutex<Vec<Chunk>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Tap {
    /// Listens at `socket` (which must not exist) and forwards to `upstream`.
    pub fn start(socket: &Path, upstream: &Path) -> std::io::Result<Self> {
        let listener = UnixListener::bind(socket)?;
        let chunks = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopping, upstream) = (Arc::clone(&chunks), Arc::clone(&stop), upstream.to_owned());
        let next = AtomicUsize::new(0);
        let acceptor = std::thread::Builder::new().name("docker-tap".into()).spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::Acquire) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(daemon) = UnixStream::connect(&upstream) else { continue };
                let connection = next.fetch_add(1, Ordering::Relaxed);
                for (from, to, direction) in [
                    (client.try_clone(), daemon.try_clone(), Direction::Request),
                    (daemon.try_clone(), client.try_clone(), Direction::Answer),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else { continue };
                    let log = Arc::clone(&log);
                    let _ = std::thread::Builder::new()
                        .name("docker-tap-copy".into())
                        .spawn(move || forward(from, to, direction, connection, &log));
                }
            }
        })?;
        Ok(Self { socket: socket.to_owned(), chunks, stop, acceptor: Some(acceptor) })
    }

    /// The tap's socket (give it to the client as `-H unix://PATH`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The chunks seen since the last call, which forgets them.
    pub fn take(&self) -> Vec<Chunk> {
        self.chunks.lock().map(|mut chunks| std::mem::take(&mut *chunks)).unwrap_or_default()
    }
}

/// Copies `from` to `to`, stamping each chunk, until `from` ends; then ends `to`'s writing side.
fn forward(mut from: UnixStream, mut to: UnixStream, direction: Direction, connection: usize, log: &Mutex<Vec<Chunk>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let at = MonotonicNs::now();
        if let Ok(mut chunks) = log.lock() {
            chunks.push(Chunk { connection, direction, at, head: head_of(&buf[..n]) });
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the acceptor, which sees `stop`.
        let _ = UnixStream::connect(&self.socket);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(connection: usize, direction: Direction, ms: u64, head: Option<&str>) -> Chunk {
        Chunk { connection, direction, at: MonotonicNs(ms * 1_000_000), head: head.map(str::to_owned) }
    }

    #[test]
    fn a_docker_run_on_the_socket_is_its_calls_with_the_streamed_wait_ending_last() {
        use Direction::{Answer, Request};
        let chunks = [
            chunk(0, Request, 10, Some("HEAD /_ping HTTP/1.1")),
            chunk(0, Answer, 11, Some("HTTP/1.1 200 OK")),
            chunk(0, Request, 12, Some("POST /v1.41/containers/create HTTP/1.1")),
            chunk(0, Answer, 40, Some("HTTP/1.1 201 Created")),
            chunk(1, Request, 41, Some("POST /v1.41/containers/abc/attach?stream=1 HTTP/1.1")),
            chunk(1, Answer, 42, Some("HTTP/1.1 101 UPGRADED")),
            chunk(0, Request, 43, Some("POST /v1.41/containers/abc/wait?condition=removed HTTP/1.1")),
            chunk(0, Answer, 44, Some("HTTP/1.1 200 OK")),
            chunk(2, Request, 45, Some("POST /v1.41/containers/abc/start HTTP/1.1")),
            chunk(1, Answer, 200, None),
            chunk(2, Answer, 210, Some("HTTP/1.1 204 No Content")),
            chunk(0, Answer, 300, None),
        ];
        let calls = calls(&chunks);
        let seen: Vec<(&str, u64, Option<u64>)> = calls
            .iter()
            .map(|c| (c.name.as_str(), c.sent.0 / 1_000_000, c.answered.map(|a| a.0 / 1_000_000)))
            .collect();
        assert_eq!(
            seen,
            [
                ("_ping", 10, Some(11)),
                ("create", 12, Some(40)),
                ("attach", 41, Some(42)),
                ("wait", 43, Some(300)),
                ("start", 45, Some(210)),
            ]
        );
    }

    #[test]
    fn the_tap_forwards_both_ways_and_stamps_the_heads() {
        let dir = tempfile::tempdir().unwrap();
        let upstream = dir.path().join("daemon.sock");
        let daemon = UnixListener::bind(&upstream).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = daemon.accept().unwrap();
            let mut buf = [0u8; 64];
            let n = conn.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET /_ping HTTP/1.1"));
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK").unwrap();
        });
        let tap = Tap::start(&dir.path().join("tap.sock"), &upstream).unwrap();
        let mut client = UnixStream::connect(tap.socket()).unwrap();
        client.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n").unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        server.join().unwrap();
        assert!(answer.ends_with("\r\n\r\nOK"), "{answer}");
        let calls = calls(&tap.take());
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "_ping");
        assert!(calls[0].answered.is_some_and(|a| a >= calls[0].sent));
        let socket = tap.socket().to_owned();
        drop(tap);
        assert!(!socket.exists());
    }
}
