//! HTTP/1.1 message reading, bounded in size, that the demo services and the Envoy runner's raw
//! client share: a start line, headers with raw byte values, and a body by `Content-Length`,
//! chunking, or the end of the connection.

use std::io::{self, Read};

/// The first value of header `name` (case-insensitive) among headers with lower-cased names.
pub fn first_header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_slice())
}

/// An `InvalidData` error: the peer sent something that is not HTTP/1.1 as expected.
pub fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// How a body without `Content-Length` or chunking ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// A response: the body runs until the peer closes.
    UntilClose,
    /// A request: no length means no body.
    Empty,
}

/// A message's start line and its headers (names lower-cased, values raw).
pub type Head = (Vec<u8>, Vec<(String, Vec<u8>)>);

/// Buffered HTTP/1.1 message reading.
pub struct Wire<S: Read> {
    stream: S,
    buffer: Vec<u8>,
}

impl<S: Read> Wire<S> {
    pub fn new(stream: S) -> Self {
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
    pub fn read_head(&mut self, limit: usize) -> io::Result<Option<Head>> {
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
    pub fn read_body(
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
    fn reads_chunked_and_length_delimited_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1 \r\n\r\n3\r\nabc\r\n2;ext\r\nde\r\n0\r\n\r\n";
        let mut wire = Wire::new(&raw[..]);
        let (start, headers) = wire.read_head(1024).unwrap().unwrap();
        assert_eq!(start, b"HTTP/1.1 200 OK");
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
