//! The services' own tests talk to them with this: one request written as is, one response
//! read. (Requests through Envoy use the Envoy runner's client, which builds on the same
//! [`Wire`].)

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::wire::{BodyEnd, Wire, first_header};

const TIMEOUT: Duration = Duration::from_secs(5);
const LIMIT: usize = 1 << 20;

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn header_str(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub(crate) fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
    }
}

/// Writes `raw` to `addr` and reads one response.
pub(crate) fn exchange(addr: SocketAddr, raw: &[u8]) -> io::Result<Response> {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    (&stream).write_all(raw)?;
    let mut wire = Wire::new(&stream);
    let (start, headers) = wire
        .read_head(LIMIT)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no response"))?;
    let status = String::from_utf8_lossy(&start)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status"))?;
    let body = wire.read_body(&headers, LIMIT, BodyEnd::UntilClose)?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// `GET path` with `host`, on a connection closed after the response.
pub(crate) fn get(addr: SocketAddr, path: &str, host: &str) -> io::Result<Response> {
    let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    exchange(addr, request.as_bytes())
}
