//! The demo upstream: a small HTTP/1.1 server that answers every request with `200` and a JSON
//! echo of what reached it (method, path, headers), so a person with curl or a test can see what
//! the filters let through, added or stripped.
//!
//! The echo body is `{"method": .., "path": .., "headers": [{"name": .., "value": ..}, ..],
//! "bodyBytes": n}`; a header value that is not UTF-8 is given as `"valueHex"` instead of
//! `"value"`. Tests can also read the requests directly with [`DemoUpstream::requests`].

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

use crate::wire::{BodyEnd, Wire, first_header, invalid};

/// Requests kept for inspection; older ones are dropped so a long `make run` stays small.
const KEEP_REQUESTS: usize = 1000;
/// Largest request head and body the upstream reads.
const MAX_HEAD_BYTES: usize = 256 << 10;
const MAX_BODY_BYTES: usize = 1 << 20;
/// Connections served at once; more are closed at once rather than spawning without bound.
const MAX_CONNECTIONS: usize = 256;
/// Idle keep-alive connections are closed after this; Envoy's pool idles out sooner (10 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One request as the upstream received it; header names lower-cased, values raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl SeenRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        first_header(&self.headers, name)
    }

    /// The first value of header `name` as text, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The JSON echo the upstream answers with.
    pub fn to_json(&self) -> Value {
        let headers: Vec<Value> = self
            .headers
            .iter()
            .map(|(name, value)| match std::str::from_utf8(value) {
                Ok(text) => json!({"name": name, "value": text}),
                Err(_) => json!({"name": name, "valueHex": hex(value)}),
            })
            .collect();
        json!({"method": self.method, "path": self.path, "headers": headers, "bodyBytes": self.body.len()})
    }

    /// Reads an echo back (the body is not echoed, so it comes back empty).
    pub fn from_json(echo: &Value) -> Option<SeenRequest> {
        let headers = echo
            .get("headers")?
            .as_array()?
            .iter()
            .map(|h| {
                let name = h.get("name")?.as_str()?.to_string();
                let value = match (
                    h.get("value").and_then(Value::as_str),
                    h.get("valueHex").and_then(Value::as_str),
                ) {
                    (Some(text), _) => text.as_bytes().to_vec(),
                    (None, Some(hex)) => unhex(hex)?,
                    (None, None) => return None,
                };
                Some((name, value))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(SeenRequest {
            method: echo.get("method")?.as_str()?.to_string(),
            path: echo.get("path")?.as_str()?.to_string(),
            headers,
            body: Vec::new(),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The longest a held request waits for [`DemoUpstream::release`].
const HOLD_AT_MOST: Duration = Duration::from_secs(20);

/// While true, requests are recorded and then wait before they are answered.
#[derive(Default)]
struct Gate {
    held: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn pass(&self) {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self
            .opened
            .wait_timeout_while(held, HOLD_AT_MOST, |held| *held);
    }

    fn set(&self, held: bool) {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = held;
        self.opened.notify_all();
    }
}

/// A running demo upstream; stops accepting when dropped.
pub struct DemoUpstream {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    seen: Arc<Mutex<VecDeque<SeenRequest>>>,
    gate: Arc<Gate>,
    acceptor: Option<JoinHandle<()>>,
}

impl DemoUpstream {
    /// Binds `addr` (port 0 for any free port) and serves on background threads.
    pub fn start(addr: SocketAddr) -> io::Result<DemoUpstream> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(VecDeque::new()));
        let gate = Arc::new(Gate::default());
        let acceptor = {
            let stopping = Arc::clone(&stopping);
            let seen = Arc::clone(&seen);
            let gate = Arc::clone(&gate);
            std::thread::Builder::new()
                .name("demo-upstream".into())
                .spawn(move || accept_loop(listener, &stopping, &seen, &gate))?
        };
        Ok(DemoUpstream {
            addr,
            stopping,
            seen,
            gate,
            acceptor: Some(acceptor),
        })
    }

    /// From now on each request is recorded (see [`DemoUpstream::requests`]) and then held,
    /// unanswered, until [`DemoUpstream::release`] (or 20 s): a test can keep a first request
    /// in flight while it sends others.
    pub fn hold(&self) {
        self.gate.set(true);
    }

    /// Answers the held requests and stops holding.
    pub fn release(&self) {
        self.gate.set(false);
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Requests received so far, forgetting them.
    pub fn take_requests(&self) -> Vec<SeenRequest> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect()
    }
}

impl Drop for DemoUpstream {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.gate.set(false);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    stopping: &Arc<AtomicBool>,
    seen: &Arc<Mutex<VecDeque<SeenRequest>>>,
    gate: &Arc<Gate>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (seen, connection_done, stopping, gate) = (
            Arc::clone(seen),
            Arc::clone(&active),
            Arc::clone(stopping),
            Arc::clone(gate),
        );
        let spawned = std::thread::Builder::new()
            .name("demo-upstream-conn".into())
            .spawn(move || {
                let _ = serve_connection(stream, &seen, &stopping, &gate);
                connection_done.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            // The closure (and its counter decrement) never ran.
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn serve_connection(
    stream: TcpStream,
    seen: &Mutex<VecDeque<SeenRequest>>,
    stopping: &AtomicBool,
    gate: &Gate,
) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let mut wire = Wire::new(&stream);
    loop {
        let Some((start, headers)) = wire.read_head(MAX_HEAD_BYTES)? else {
            return Ok(());
        };
        let start = String::from_utf8_lossy(&start).into_owned();
        let mut parts = start.split(' ');
        let (Some(method), Some(path), Some(_version)) = (parts.next(), parts.next(), parts.next())
        else {
            return respond(&stream, 400, br#"{"error":"bad request line"}"#, true);
        };
        let body = match wire.read_body(&headers, MAX_BODY_BYTES, BodyEnd::Empty) {
            Ok(body) => body,
            Err(_) => {
                return respond(
                    &stream,
                    413,
                    br#"{"error":"request body too large or malformed"}"#,
                    true,
                );
            }
        };
        let request = SeenRequest {
            method: method.to_string(),
            path: path.to_string(),
            headers,
            body,
        };
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
        let echo = request.to_json().to_string();
        {
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.len() >= KEEP_REQUESTS {
                seen.pop_front();
            }
            seen.push_back(request);
        }
        gate.pass();
        respond(&stream, 200, echo.as_bytes(), close)?;
        if close || stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
    }
}

fn respond(mut stream: &TcpStream, status: u16, body: &[u8], close: bool) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        413 => "Content Too Large",
        _ => return Err(invalid(format!("no reason phrase for {status}"))),
    };
    let connection = if close { "connection: close\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{connection}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_client::exchange;

    #[test]
    fn echoes_method_path_and_header_bytes_of_what_reached_it() {
        let upstream = DemoUpstream::start("127.0.0.1:0".parse().unwrap()).unwrap();
        let request = b"POST /payments?x=1 HTTP/1.1\r\nhost: bank.local\r\nx-customer-id: CUST-1\r\n\
                        x-odd: \xff\x00ok\r\ncontent-length: 12\r\nconnection: close\r\n\r\n{\"amount\":1}";
        let response = exchange(upstream.addr(), request).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header_str("content-type"),
            Some("application/json")
        );

        let echoed = SeenRequest::from_json(&response.json().unwrap()).unwrap();
        assert_eq!(
            (echoed.method.as_str(), echoed.path.as_str()),
            ("POST", "/payments?x=1")
        );
        assert_eq!(echoed.header("x-customer-id"), Some(&b"CUST-1"[..]));
        assert_eq!(echoed.header("x-odd"), Some(&b"\xff\x00ok"[..]));

        let seen = upstream.take_requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].body, b"{\"amount\":1}");
        assert!(upstream.requests().is_empty());
    }

    #[test]
    fn serves_several_requests_on_one_keep_alive_connection() {
        let upstream = DemoUpstream::start("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut stream = TcpStream::connect(upstream.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut wire = Wire::new(&stream);
        for _ in 0..2 {
            let (start, headers) = wire.read_head(4096).unwrap().unwrap();
            assert!(start.starts_with(b"HTTP/1.1 200"));
            wire.read_body(&headers, 4096, BodyEnd::UntilClose).unwrap();
        }
        let paths: Vec<String> = upstream.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/a", "/b"]);
    }
}
