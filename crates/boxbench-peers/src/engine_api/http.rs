//! HTTP/1.1 as the Docker Engine API speaks it on its unix socket: requests with a JSON body, and
//! responses framed by `Content-Length`, by chunked transfer coding, by the connection's end, or not
//! at all (`101 Switching Protocols`, `204`, `304`: the bytes after the head belong to the upgraded
//! stream or the next response).
//!
//! Only what the Engine API uses is here: no compression, no pipelining, no proxies.

use std::io::{BufRead, Read, Write};

/// The longest line of a response head or a chunk header accepted (a daemon sending more is not
/// speaking HTTP to us).
const MAX_LINE: usize = 16 * 1024;
/// The most headers accepted in one response head.
const MAX_HEADERS: usize = 100;
/// The largest body accepted (the Engine API's answers for boxbench's calls are a few KiB).
const MAX_BODY: usize = 16 << 20;

/// A response that is not HTTP/1.1 as the Engine API sends it, or a transport failure.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Reading or writing the socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The connection ended before the response did.
    #[error("connection closed in the middle of the {0}")]
    Truncated(&'static str),
    /// The response broke the protocol.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    /// A line or body beyond the limits above.
    #[error("HTTP response too large: {0}")]
    TooLarge(&'static str),
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, `DELETE`.
    pub method: &'static str,
    /// The path with its query (`/v1.41/containers/create?name=x`).
    pub target: String,
    /// A JSON body, if any.
    pub body: Option<Vec<u8>>,
    /// Ask to upgrade the connection to a raw stream (`attach`).
    pub upgrade: bool,
}

impl Request {
    /// A request without a body.
    pub fn new(method: &'static str, target: impl Into<String>) -> Self {
        Self { method, target: target.into(), body: None, upgrade: false }
    }

    /// With a JSON body.
    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self
    }

    /// Asking for the connection's upgrade to a raw stream, as `docker attach` does.
    pub fn upgraded(mut self) -> Self {
        self.upgrade = true;
        self
    }

    /// The request's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        // The Host header is required by HTTP/1.1; over a unix socket its value is a placeholder, as
        // the docker client's own ("docker", or "api.moby.localhost" in newer clients).
        let mut head = format!("{} {} HTTP/1.1\r\nHost: docker\r\nUser-Agent: boxbench\r\n", self.method, self.target);
        if self.upgrade {
            head.push_str("Connection: Upgrade\r\nUpgrade: tcp\r\n");
        }
        match &self.body {
            Some(body) => {
                head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()))
            }
            // A POST without a body still says so, or some servers wait for one.
            None if self.method != "GET" => head.push_str("Content-Length: 0\r\n"),
            None => {}
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_deref().unwrap_or_default());
        bytes
    }

    /// Writes the request to `out`.
    pub fn write_to(&self, out: &mut impl Write) -> Result<(), HttpError> {
        out.write_all(&self.encode())?;
        out.flush()?;
        Ok(())
    }
}

/// A response's status line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The headers in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// How the body that follows this head is delimited.
    pub fn framing(&self) -> Result<Framing, HttpError> {
        if (100..200).contains(&self.status) || self.status == 204 || self.status == 304 {
            return Ok(Framing::None);
        }
        if let Some(coding) = self.header("Transfer-Encoding") {
            return if coding.trim().eq_ignore_ascii_case("chunked") {
                Ok(Framing::Chunked)
            } else {
                Err(HttpError::Malformed(format!("transfer coding `{coding}` is not supported")))
            };
        }
        match self.header("Content-Length") {
            Some(length) => length
                .trim()
                .parse()
                .map(Framing::Length)
                .map_err(|_| HttpError::Malformed(format!("Content-Length `{length}`"))),
            None => Ok(Framing::UntilClose),
        }
    }
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(usize),
    /// Chunked transfer coding.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// A whole response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Its status line and headers.
    pub head: Head,
    /// Its body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text, for error messages.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_owned()
    }
}

/// Reads one line ending in CRLF (or LF), without the ending; `what` names it for errors.
fn read_line(input: &mut impl BufRead, what: &'static str) -> Result<String, HttpError> {
    let mut line = Vec::new();
    let n = input.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 || line.last() != Some(&b'\n') {
        return Err(if line.len() > MAX_LINE { HttpError::TooLarge(what) } else { HttpError::Truncated(what) });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| HttpError::Malformed(format!("{what} is not UTF-8")))
}

/// Reads a response's status line and headers, leaving `input` at the first byte of the body.
pub fn read_head(input: &mut impl BufRead) -> Result<Head, HttpError> {
    let status_line = read_line(input, "status line")?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!("status line `{status_line}`")));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| HttpError::Malformed(format!("status line `{status_line}`")))?;
    let reason = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let line = read_line(input, "response head")?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::TooLarge("response head"));
        }
        let (name, value) =
            line.split_once(':').ok_or_else(|| HttpError::Malformed(format!("header line `{line}`")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(Head { status, reason, headers })
}

/// Reads the body `framing` delimits.
pub fn read_body(input: &mut impl BufRead, framing: Framing) -> Result<Vec<u8>, HttpError> {
    match framing {
        Framing::None => Ok(Vec::new()),
        Framing::Length(length) => {
            if length > MAX_BODY {
                return Err(HttpError::TooLarge("body"));
            }
            let mut body = vec![0; length];
            input.read_exact(&mut body).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => HttpError::Truncated("body"),
                _ => HttpError::Io(e),
            })?;
            Ok(body)
        }
        Framing::Chunked => read_chunked(input),
        Framing::UntilClose => {
            let mut body = Vec::new();
            input.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
            if body.len() > MAX_BODY {
                return Err(HttpError::TooLarge("body"));
            }
            Ok(body)
        }
    }
}

/// A chunked body: `SIZE[;ext]CRLF DATA CRLF` … `0 CRLF [trailers] CRLF`.
fn read_chunked(input: &mut impl BufRead) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(input, "chunk size")?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| HttpError::Malformed(format!("chunk size `{line}`")))?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            while !read_line(input, "chunked trailer")?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(HttpError::TooLarge("body"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        input.read_exact(&mut body[start..]).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => HttpError::Truncated("chunk"),
            _ => HttpError::Io(e),
        })?;
        if !read_line(input, "chunk end")?.is_empty() {
            return Err(HttpError::Malformed("chunk data longer than its size".to_owned()));
        }
    }
}

/// Reads a whole response (head and body).
pub fn read_response(input: &mut impl BufRead) -> Result<Response, HttpError> {
    let head = read_head(input)?;
    let body = read_body(input, head.framing()?)?;
    Ok(Response { head, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Response, HttpError> {
        read_response(&mut &bytes[..])
    }

    #[test]
    fn a_post_carries_its_json_body_with_its_length() {
        let request = Request::new("POST", "/v1.41/containers/create?name=a").json(&serde_json::json!({"Image": "x"}));
        let text = String::from_utf8(request.encode()).unwrap();
        assert_eq!(
            text,
            "POST /v1.41/containers/create?name=a HTTP/1.1\r\nHost: docker\r\nUser-Agent: boxbench\r\n\
             Content-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"Image\":\"x\"}"
        );
    }

    #[test]
    fn a_bodyless_post_says_length_zero_and_a_get_says_nothing() {
        let post = String::from_utf8(Request::new("POST", "/c/start").encode()).unwrap();
        assert!(post.ends_with("Content-Length: 0\r\n\r\n"), "{post}");
        let get = String::from_utf8(Request::new("GET", "/_ping").encode()).unwrap();
        assert_eq!(get, "GET /_ping HTTP/1.1\r\nHost: docker\r\nUser-Agent: boxbench\r\n\r\n");
        let attach = String::from_utf8(Request::new("POST", "/a").upgraded().encode()).unwrap();
        assert!(attach.contains("Connection: Upgrade\r\nUpgrade: tcp\r\n"), "{attach}");
    }

    #[test]
    fn a_content_length_body_is_read_exactly_and_the_next_response_follows() {
        let bytes =
            b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOKHTTP/1.1 204 No Content\r\n\r\n";
        let mut input = &bytes[..];
        let first = read_response(&mut input).unwrap();
        assert_eq!((first.head.status, first.body.as_slice()), (200, &b"OK"[..]));
        assert_eq!(first.head.header("api-version"), Some("1.41"));
        let second = read_response(&mut input).unwrap();
        assert_eq!((second.head.status, second.head.reason.as_str(), second.body.len()), (204, "No Content", 0));
        assert!(input.is_empty());
    }

    #[test]
    fn a_chunked_body_is_joined_across_chunks_extensions_and_trailers() {
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"St\r\nb\r\natusCode\":0\r\n3\r\n}\n\n\r\n0\r\nX-Trailer: y\r\n\r\nrest";
        let mut input = &bytes[..];
        let response = read_response(&mut input).unwrap();
        assert_eq!(response.body, b"{\"StatusCode\":0}\n\n");
        assert_eq!(input, b"rest");
    }

    #[test]
    fn an_upgrade_leaves_the_stream_after_the_head_unread() {
        let bytes = b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n\x01\x00\x00\x00";
        let mut input = &bytes[..];
        let response = read_response(&mut input).unwrap();
        assert_eq!(response.head.status, 101);
        assert_eq!(input, b"\x01\x00\x00\x00");
    }

    #[test]
    fn a_body_without_framing_runs_to_the_end_of_the_connection() {
        let response = parse(b"HTTP/1.0 200 OK\r\n\r\nall of it").unwrap();
        assert_eq!(response.body, b"all of it");
    }

    #[test]
    fn broken_responses_are_errors_that_say_what_broke() {
        let cases: [(&[u8], &str); 6] = [
            (b"SSH-2.0-OpenSSH\r\n", "malformed HTTP response: status line `SSH-2.0-OpenSSH`"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", "connection closed in the middle of the body"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "malformed HTTP response: chunk size `zz`",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
                "malformed HTTP response: chunk data longer than its size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                "malformed HTTP response: transfer coding `gzip` is not supported",
            ),
            (b"HTTP/1.1 200 OK\r\nNo-Colon\r\n\r\n", "malformed HTTP response: header line `No-Colon`"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(parse(bytes).unwrap_err().to_string(), expected);
        }
        assert!(matches!(parse(b""), Err(HttpError::Truncated("status line"))));
        let long = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &vec![b'a'; MAX_LINE + 10]].concat();
        assert!(matches!(parse(&long), Err(HttpError::TooLarge("response head"))));
    }
}
