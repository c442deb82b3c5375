//! The Docker Engine API spoken directly on the daemon's unix socket, as the `docker` client speaks
//! it: HTTP/1.1 requests with JSON bodies ([`http`]), one kept-alive connection for the calls and a
//! second one upgraded to the attach stream ([`frames`]).
//!
//! [`ApiClient`] knows the calls a `docker run` makes — ping, version, create, attach, start, wait,
//! remove (and kill, for a deadline) — and nothing else. Every call names itself in its error, and a
//! socket that cannot be reached (no daemon, no permission) is refused with one line naming it
//! before any container exists.

pub mod frames;
pub mod http;
pub mod tap;

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::http::{HttpError, Request, Response, read_head, read_response};

/// The oldest API version whose calls boxbench makes as it makes them (HostConfig.CgroupParent,
/// `wait` with a status body, `attach` upgraded): Docker 1.13's.
pub const MIN_API_VERSION: &str = "1.25";

/// An Engine API call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket could not be reached: no daemon, or no permission.
    #[error("docker socket {socket}: {source}")]
    Connect { socket: PathBuf, source: std::io::Error },
    /// The exchange broke at the HTTP level.
    #[error("docker API {call}: {source}")]
    Http { call: &'static str, source: HttpError },
    /// The daemon answered with an error status.
    #[error("docker API {call}: {status} {message}")]
    Status { call: &'static str, status: u16, message: String },
    /// The daemon's answer was not the JSON the call returns.
    #[error("docker API {call}: unexpected answer: {detail}")]
    Answer { call: &'static str, detail: String },
    /// The daemon's API is older than boxbench's calls need.
    #[error("docker API version {found} at {socket} is older than {MIN_API_VERSION}, the oldest boxbench speaks")]
    TooOld { socket: PathBuf, found: String },
}

/// What `GET /version` says about the daemon (the server half of `docker version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerVersion {
    /// The engine's version (`20.10.24+dfsg1`).
    #[serde(rename = "Version")]
    pub version: String,
    /// The newest API version it speaks (`1.41`).
    #[serde(rename = "ApiVersion")]
    pub api_version: String,
    /// The oldest API version it accepts.
    #[serde(rename = "MinAPIVersion", default)]
    pub min_api_version: String,
    /// The Go toolchain it was built with.
    #[serde(rename = "GoVersion", default)]
    pub go_version: String,
    /// Its git commit.
    #[serde(rename = "GitCommit", default)]
    pub git_commit: String,
    /// `linux`.
    #[serde(rename = "Os", default)]
    pub os: String,
    /// `amd64`.
    #[serde(rename = "Arch", default)]
    pub arch: String,
}

/// A connection to the Engine API on a unix socket, with the API version the calls are made in.
#[derive(Debug)]
pub struct ApiClient {
    socket: PathBuf,
    connection: BufReader<UnixStream>,
    /// `/v1.41`: every call but ping and version is made in this version, as the client does once
    /// it has negotiated.
    prefix: String,
    timeout: Duration,
}

/// Connects to `socket` with read and write timeouts of `timeout`.
fn connect(socket: &Path, timeout: Duration) -> Result<UnixStream, ApiError> {
    let stream =
        UnixStream::connect(socket).map_err(|source| ApiError::Connect { socket: socket.to_owned(), source })?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|source| ApiError::Connect { socket: socket.to_owned(), source })?;
    Ok(stream)
}

/// The socket path of a `unix://PATH` docker host (a bare path is taken as is).
pub fn socket_of_host(host: &str) -> PathBuf {
    PathBuf::from(host.strip_prefix("unix://").unwrap_or(host))
}

impl ApiClient {
    /// Connects to the daemon at `socket` and negotiates the API version (the daemon's newest, as
    /// the docker client does when it is the newer side); `timeout` bounds every read and write.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Self, ApiError> {
        let connection = BufReader::new(connect(socket, timeout)?);
        let mut client = Self { socket: socket.to_owned(), connection, prefix: String::new(), timeout };
        let version = client.ping()?;
        if version_key(&version) < version_key(MIN_API_VERSION) {
            return Err(ApiError::TooOld { socket: socket.to_owned(), found: version });
        }
        client.prefix = format!("/v{version}");
        Ok(client)
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The API version the calls are made in (`1.41`).
    pub fn api_version(&self) -> &str {
        self.prefix.trim_start_matches("/v")
    }

    fn exchange(&mut self, call: &'static str, request: &Request) -> Result<Response, ApiError> {
        let http = |source| ApiError::Http { call, source };
        request.write_to(self.connection.get_mut()).map_err(http)?;
        let response = read_response(&mut self.connection).map_err(http)?;
        // A daemon that says it closes the connection gets a new one for the next call.
        if response.head.header("Connection").is_some_and(|c| c.eq_ignore_ascii_case("close")) {
            self.connection = BufReader::new(connect(&self.socket, self.timeout)?);
        }
        Ok(response)
    }

    /// Makes `call`, expecting one of `ok` statuses.
    fn call(&mut self, call: &'static str, request: Request, ok: &[u16]) -> Result<Response, ApiError> {
        let response = self.exchange(call, &request)?;
        if ok.contains(&response.head.status) { Ok(response) } else { Err(status_error(call, &response)) }
    }

    /// `GET /_ping`: the cheapest round trip, and the API version the daemon speaks.
    pub fn ping(&mut self) -> Result<String, ApiError> {
        let response = self.call("ping", Request::new("GET", "/_ping"), &[200])?;
        response
            .head
            .header("Api-Version")
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Answer { call: "ping", detail: "no Api-Version header".to_owned() })
    }

    /// `GET /version`: the server half of `docker version`.
    pub fn version(&mut self) -> Result<ServerVersion, ApiError> {
        let response = self.call("version", Request::new("GET", "/version"), &[200])?;
        parse_json("version", &response)
    }

    /// `POST /containers/create`: a container called `name` from `config`; its id.
    pub fn create(&mut self, name: &str, config: &serde_json::Value) -> Result<String, ApiError> {
        let target = format!("{}/containers/create?name={name}", self.prefix);
        let response = self.call("create", Request::new("POST", target).json(config), &[201])?;
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "Id")]
            id: String,
        }
        parse_json::<Created>("create", &response).map(|c| c.id)
    }

    /// `POST /containers/ID/attach` on a new connection, upgraded to the container's multiplexed
    /// stdout and stderr (read it through [`frames::Demux`]) from the start of its output.
    pub fn attach(&self, id: &str) -> Result<BufReader<UnixStream>, ApiError> {
        let call = "attach";
        let http = |source| ApiError::Http { call, source };
        let mut stream = BufReader::new(connect(&self.socket, self.timeout)?);
        let target = format!("{}/containers/{id}/attach?stream=1&stdout=1&stderr=1&logs=1", self.prefix);
        Request::new("POST", target).upgraded().write_to(stream.get_mut()).map_err(http)?;
        let head = read_head(&mut stream).map_err(http)?;
        // 101 from daemons that honour the upgrade; 200 from those that hijack without saying so.
        if head.status != 101 && head.status != 200 {
            let body = http::read_body(&mut stream, head.framing().map_err(http)?).map_err(http)?;
            return Err(status_error(call, &Response { head, body }));
        }
        // The stream lasts as long as the container: no read timeout on it.
        stream.get_ref().set_read_timeout(None).map_err(|source| http(HttpError::Io(source)))?;
        Ok(stream)
    }

    /// `POST /containers/ID/start`.
    pub fn start(&mut self, id: &str) -> Result<(), ApiError> {
        let target = format!("{}/containers/{id}/start", self.prefix);
        self.call("start", Request::new("POST", target), &[204, 304]).map(drop)
    }

    /// `POST /containers/ID/wait`: blocks until the container has stopped; its exit status.
    pub fn wait(&mut self, id: &str) -> Result<i64, ApiError> {
        let target = format!("{}/containers/{id}/wait", self.prefix);
        let response = self.call("wait", Request::new("POST", target), &[200])?;
        #[derive(Deserialize)]
        struct Waited {
            #[serde(rename = "StatusCode")]
            status_code: i64,
            #[serde(rename = "Error", default)]
            error: Option<WaitError>,
        }
        #[derive(Deserialize)]
        struct WaitError {
            #[serde(rename = "Message", default)]
            message: String,
        }
        let waited: Waited = parse_json("wait", &response)?;
        match waited.error.filter(|e| !e.message.is_empty()) {
            Some(error) => Err(ApiError::Answer { call: "wait", detail: error.message }),
            None => Ok(waited.status_code),
        }
    }

    /// `DELETE /containers/ID` (`force`: kill it first if it runs). A container already gone is
    /// not an error.
    pub fn remove(&mut self, id: &str, force: bool) -> Result<(), ApiError> {
        let target = format!("{}/containers/{id}?force={}", self.prefix, u8::from(force));
        self.call("remove", Request::new("DELETE", target), &[204, 404]).map(drop)
    }

    /// `POST /containers/ID/kill` (a container not running is not an error).
    pub fn kill(&mut self, id: &str) -> Result<(), ApiError> {
        let target = format!("{}/containers/{id}/kill", self.prefix);
        self.call("kill", Request::new("POST", target), &[204, 404, 409]).map(drop)
    }

    /// Names of the containers (running or not) whose name starts with `prefix`.
    pub fn containers_named(&mut self, prefix: &str) -> Result<Vec<String>, ApiError> {
        let target = format!("{}/containers/json?all=1", self.prefix);
        let response = self.call("list containers", Request::new("GET", target), &[200])?;
        #[derive(Deserialize)]
        struct Listed {
            #[serde(rename = "Names", default)]
            names: Vec<String>,
        }
        let listed: Vec<Listed> = parse_json("list containers", &response)?;
        Ok(listed
            .into_iter()
            .flat_map(|c| c.names)
            .map(|n| n.trim_start_matches('/').to_owned())
            .filter(|n| n.starts_with(prefix))
            .collect())
    }
}

/// The error of an unexpected status, with the daemon's `{"message": …}` where it sent one.
fn status_error(call: &'static str, response: &Response) -> ApiError {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    let message =
        serde_json::from_slice::<Message>(&response.body).map(|m| m.message).unwrap_or_else(|_| response.body_text());
    let message = if message.is_empty() { response.head.reason.clone() } else { message };
    ApiError::Status { call, status: response.head.status, message: message.replace('\n', " ") }
}

fn parse_json<T: serde::de::DeserializeOwned>(call: &'static str, response: &Response) -> Result<T, ApiError> {
    serde_json::from_slice(&response.body).map_err(|e| ApiError::Answer { call, detail: e.to_string() })
}

/// `1.41` as (1, 41), for comparing API versions.
fn version_key(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Read, Write};
    use std::os::unix::net::UnixListener;

    /// A one-connection server answering each request with the next of `answers`; returns the
    /// requests' heads it saw.
    fn serve(listener: UnixListener, answers: Vec<&'static [u8]>) -> std::thread::JoinHandle<Vec<String>> {
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut seen = Vec::new();
            for answer in answers {
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 {
                        return seen;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map_or(0, |n| n.trim().parse().unwrap());
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                seen.push(format!("{}{}", head.lines().next().unwrap(), String::from_utf8_lossy(&body)));
                reader.get_mut().write_all(answer).unwrap();
            }
            seen
        })
    }

    #[test]
    fn calls_go_out_in_the_negotiated_version_and_errors_quote_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("d.sock");
        let server = serve(
            UnixListener::bind(&socket).unwrap(),
            vec![
                b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK",
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 30\r\n\r\n{\"Id\":\"abc123\",\"Warnings\":[]}\n",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1c\r\n{\"Error\":null,\"StatusCode\":3\r\n2\r\n}\n\r\n0\r\n\r\n",
                b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 44\r\n\r\n{\"message\":\"No such container: nosuchthing\"}",
            ],
        );
        let mut client = ApiClient::connect(&socket, Duration::from_secs(10)).unwrap();
        assert_eq!(client.api_version(), "1.41");
        assert_eq!(client.create("box", &serde_json::json!({"Image": "i"})).unwrap(), "abc123");
        assert_eq!(client.wait("abc123").unwrap(), 3);
        let err = client.start("nosuchthing").unwrap_err();
        assert_eq!(err.to_string(), "docker API start: 404 No such container: nosuchthing");
        drop(client);
        let seen = server.join().unwrap();
        assert_eq!(
            seen,
            [
                "GET /_ping HTTP/1.1",
                "POST /v1.41/containers/create?name=box HTTP/1.1{\"Image\":\"i\"}",
                "POST /v1.41/containers/abc123/wait HTTP/1.1",
                "POST /v1.41/containers/nosuchthing/start HTTP/1.1",
            ]
        );
    }

    #[test]
    fn no_daemon_or_an_old_one_is_one_line_naming_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sock");
        let err = ApiClient::connect(&missing, Duration::from_secs(1)).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with(&format!("docker socket {}: ", missing.display())), "{text}");
        assert!(!text.contains('\n'));

        let socket = dir.path().join("old.sock");
        let server = serve(
            UnixListener::bind(&socket).unwrap(),
            vec![b"HTTP/1.1 200 OK\r\nApi-Version: 1.24\r\nContent-Length: 2\r\n\r\nOK"],
        );
        let err = ApiClient::connect(&socket, Duration::from_secs(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("docker API version 1.24 at {} is older than 1.25, the oldest boxbench speaks", socket.display())
        );
        server.join().unwrap();
    }

    #[test]
    fn api_versions_compare_by_number() {
        assert!(version_key("1.9") < version_key("1.25"));
        assert!(version_key("1.41") > version_key("1.25"));
        assert_eq!(socket_of_host("unix:///run/d.sock"), PathBuf::from("/run/d.sock"));
    }
}
