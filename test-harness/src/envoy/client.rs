//! A raw HTTP/1.1 client over `TcpStream`, so tests can send what no well-behaved client would
//! (non-UTF-8 header bytes, oversized values) and still read whatever comes back.
//!
//! Every exchange opens one connection with `Connection: close` and is bounded by a timeout.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::types::first_header;

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

pub(crate) fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
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

/// How a body without `Content-Length` or chunking ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyEnd {
    /// A response: the body runs until the peer closes.
    UntilClose,
    /// A request: no length means no body.
    Empty,
}

/// A message's start line and its headers (names lower-cased, values raw).
pub(crate) type Head = (Vec<u8>, Vec<(String, Vec<u8>)>);

/// Buffered HTTP/1.1 message reading shared by the client and the demo upstream.
pub(crate) struct Wire<S: Read> {
    stream: S,
    buffer: Vec<u8>,
}

impl<S: Read> Wire<S> {
    pub(crate) fn new(stream: S) -> Self {
        Wire {
            stream,
            buffer: Vec::new(),
        }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk)?;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads a start line and headers. `Ok(None)` if the peer closed before sending anything.
    pub(crate) fn read_head(&mut self, limit: usize) -> io::Result<Option<Head>> {
        let end = loop {
            if let Some(pos) = find(&self.buffer, b"\r\n\r\n") {
                break pos;
            }
            if self.buffer.len() > limit {
                return Err(invalid(format!("message head larger than {limit} bytes")));
            }
            if self.fill()? == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a message head",
                ));
            }
        };
        let head: Vec<u8> = self.buffer.drain(..end + 4).collect();
        let mut lines = head[..end]
            .split(|b| *b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
        let start = lines.next().unwrap_or_default().to_vec();
        let mut headers = Vec::new();
        for line in lines {
            let colon = line
                .iter()
                .position(|b| *b == b':')
                .ok_or_else(|| invalid("header line without ':'".into()))?;
            let name = String::from_utf8_lossy(&line[..colon])
                .trim()
                .to_ascii_lowercase();
            let value = trim(&line[colon + 1..]).to_vec();
            headers.push((name, value));
        }
        Ok(Some((start, headers)))
    }

    /// Reads the body the headers announce.
    pub(crate) fn read_body(
        &mut self,
        headers: &[(String, Vec<u8>)],
        limit: usize,
        end: BodyEnd,
    ) -> io::Result<Vec<u8>> {
        if first_header(headers, "transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"))
        {
            return self.read_chunked(limit);
        }
        if let Some(length) = first_header(headers, "content-length") {
            let length: usize = std::str::from_utf8(length)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| invalid("bad content-length".into()))?;
            if length > limit {
                return Err(invalid(format!(
                    "body of {length} bytes is over the {limit} byte limit"
                )));
            }
            return self.read_exact(length);
        }
        match end {
            BodyEnd::Empty => Ok(Vec::new()),
            BodyEnd::UntilClose => {
                while self.fill()? > 0 {
                    if self.buffer.len() > limit {
                        return Err(invalid(format!("body over the {limit} byte limit")));
                    }
                }
                Ok(std::mem::take(&mut self.buffer))
            }
        }
    }

    fn read_exact(&mut self, length: usize) -> io::Result<Vec<u8>> {
        while self.buffer.len() < length {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a body",
                ));
            }
        }
        Ok(self.buffer.drain(..length).collect())
    }

    fn read_line(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        loop {
            if let Some(pos) = find(&self.buffer, b"\r\n") {
                let line: Vec<u8> = self.buffer.drain(..pos + 2).collect();
                return Ok(line[..pos].to_vec());
            }
            if self.buffer.len() > limit {
                return Err(invalid("chunk line too long".into()));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a chunk",
                ));
            }
        }
    }

    fn read_chunked(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line(1024)?;
            let size_text = String::from_utf8_lossy(&line);
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
            if size == 0 {
                // Trailers, if any, end with an empty line.
                while !self.read_line(limit)?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > limit {
                return Err(invalid(format!("chunked body over the {limit} byte limit")));
            }
            body.extend(self.read_exact(size)?);
            self.read_line(2)?;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
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
    fn reads_chunked_and_length_delimited_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1 \r\n\r\n3\r\nabc\r\n2;ext\r\nde\r\n0\r\n\r\n";
        let mut wire = Wire::new(&raw[..]);
        let (start, headers) = wire.read_head(1024).unwrap().unwrap();
        assert_eq!(parse_status(&start).unwrap(), 200);
        assert_eq!(headers[1], ("x-a".to_string(), b"1".to_vec()));
        assert_eq!(
            wire.read_body(&headers, 1024, BodyEnd::UntilClose).unwrap(),
            b"abcde"
        );

        let raw = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 4\r\n\r\nbody-and-more";
        let mut wire = Wire::new(&raw[..]);
        let (_, headers) = wire.read_head(1024).unwrap().unwrap();
        assert_eq!(
            wire.read_body(&headers, 1024, BodyEnd::UntilClose).unwrap(),
            b"body"
        );
    }

    #[test]
    fn refuses_a_body_over_the_limit_instead_of_buffering_it() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 999999\r\n\r\n";
        let mut wire = Wire::new(&raw[..]);
        let (_, headers) = wire.read_head(1024).unwrap().unwrap();
        assert!(wire.read_body(&headers, 1024, BodyEnd::UntilClose).is_err());
    }
}
