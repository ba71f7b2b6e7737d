//! A raw HTTP/1.1 client over `TcpStream`, so tests can send what no well-behaved client would
//! (non-UTF-8 header bytes, oversized values) and still read whatever comes back.
//!
//! Every exchange opens one connection with `Connection: close` and is bounded by a timeout.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use demo_services::wire::{BodyEnd, Wire, first_header, invalid};

/// Largest response head or body the client accepts; more is an error, not a hang.
const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// A response as received: header names lower-cased, values as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        first_header(&self.headers, name)
    }

    /// The first value of header `name` as text, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as text, lossily, for assertion messages.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request to be written byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(path: &str) -> Self {
        Request::new("GET", path)
    }

    pub fn post(path: &str) -> Self {
        Request::new("POST", path)
    }

    /// Adds a header with a text value.
    pub fn header(self, name: &str, value: &str) -> Self {
        self.header_bytes(name, value.as_bytes())
    }

    /// Adds a header with arbitrary value bytes (sent as is, even if not UTF-8).
    pub fn header_bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.headers.push((name.to_string(), value.to_vec()));
        self
    }

    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    /// The bytes on the wire: `Host` unless given, `Content-Length` when there is a body or the
    /// method carries one, and `Connection: close`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path).into_bytes();
        let has = |name: &str| {
            self.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        if !has("host") {
            out.extend_from_slice(b"host: bank.local\r\n");
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        if !has("content-length")
            && (!self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH"))
        {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        if !has("connection") {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// Sends `request` to `addr` and reads one response, all within `timeout`.
pub fn send(addr: SocketAddr, request: &Request, timeout: Duration) -> io::Result<HttpResponse> {
    exchange(addr, &request.to_bytes(), timeout)
}

/// `GET path`, within `timeout`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<HttpResponse> {
    send(addr, &Request::get(path), timeout)
}

/// Writes `raw` as is and reads one response, all within `timeout`.
pub fn exchange(addr: SocketAddr, raw: &[u8], timeout: Duration) -> io::Result<HttpResponse> {
    let deadline = Instant::now() + timeout;
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_write_timeout(Some(timeout))?;
    (&stream).write_all(raw)?;
    let mut wire = Wire::new(Deadlined { stream, deadline });
    loop {
        let (start, headers) = wire.read_head(MAX_MESSAGE_BYTES)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            )
        })?;
        let status = parse_status(&start)?;
        // An interim 1xx response is followed by the real one.
        if (100..200).contains(&status) {
            continue;
        }
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else {
            wire.read_body(&headers, MAX_MESSAGE_BYTES, BodyEnd::UntilClose)?
        };
        return Ok(HttpResponse {
            status,
            headers,
            body,
        });
    }
}

fn parse_status(start_line: &[u8]) -> io::Result<u16> {
    let text = String::from_utf8_lossy(start_line);
    let mut parts = text.split(' ');
    match (
        parts.next(),
        parts.next().and_then(|s| s.parse::<u16>().ok()),
    ) {
        (Some(version), Some(status)) if version.starts_with("HTTP/1.") => Ok(status),
        _ => Err(invalid(format!("not an HTTP/1.x status line: {text:?}"))),
    }
}

/// A stream whose every read is bounded by one overall deadline.
struct Deadlined {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "HTTP exchange timed out",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_header_bytes_verbatim_with_host_length_and_close() {
        let bytes = Request::post("/payments")
            .header_bytes("x-customer-id", b"\xff\xfe")
            .body(b"{}")
            .to_bytes();
        assert_eq!(
            bytes,
            b"POST /payments HTTP/1.1\r\nhost: bank.local\r\nx-customer-id: \xff\xfe\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
        );
    }

    #[test]
    fn reads_the_status_of_an_http1_status_line_and_refuses_anything_else() {
        assert_eq!(
            parse_status(b"HTTP/1.1 503 Service Unavailable").unwrap(),
            503
        );
        assert_eq!(parse_status(b"HTTP/1.0 200").unwrap(), 200);
        assert!(parse_status(b"HTTP/2 200").is_err());
        assert!(parse_status(b"HTTP/1.1 OK").is_err());
    }
}
