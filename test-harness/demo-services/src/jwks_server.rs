//! A stand-in identity provider's JWKS endpoint, for the end-to-end tests and `make run`: it
//! serves a key set the caller can swap at any time (key rotation), can be made to fail
//! (HTTP 500) or to vanish (connections refused), and records every request it answered.
//!
//! Every response closes its connection, so when the server goes down no pooled connection
//! in Envoy can still reach it: the next fetch really meets a refused connection.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::wire::{BodyEnd, Wire};

/// Largest request head read; a JWKS fetch is a few hundred bytes.
const MAX_HEAD_BYTES: usize = 16 << 10;
/// A client that sends nothing for this long is dropped (requests are served one at a time).
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests remembered; a long `make run` keeps only the latest.
const KEEP_FETCHES: usize = 1000;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksAvailability {
    /// `200` with the current document on the configured path, `404` elsewhere.
    Serving,
    /// `500` to every request: the identity provider is up but broken.
    ServerError,
    /// Not listening: connections are refused, as when the identity provider is down.
    Refusing,
}

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksFetch {
    pub method: String,
    pub path: String,
    /// The `Host` header, which Envoy fills from the call's `:authority`.
    pub host: Option<String>,
    /// The status it was answered with.
    pub status: u16,
}

struct Shared {
    path: String,
    document: Mutex<Vec<u8>>,
    failing: AtomicBool,
    fetches: Mutex<Vec<JwksFetch>>,
}

struct Acceptor {
    stopping: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// A running JWKS server; stops listening when dropped.
pub struct JwksServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Mutex<Option<Acceptor>>,
}

impl JwksServer {
    /// Binds `addr` (port 0 for any free port) and serves `document` at `path`, e.g.
    /// `/.well-known/jwks.json`.
    pub fn start(addr: SocketAddr, path: &str, document: &[u8]) -> io::Result<JwksServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            path: path.to_string(),
            document: Mutex::new(document.to_vec()),
            failing: AtomicBool::new(false),
            fetches: Mutex::new(Vec::new()),
        });
        let acceptor = spawn_acceptor(listener, &shared)?;
        Ok(JwksServer {
            addr,
            shared,
            acceptor: Mutex::new(Some(acceptor)),
        })
    }

    /// The address it listens on (also while `Refusing`: it comes back on the same one).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `document` from the next request on.
    pub fn set_document(&self, document: &[u8]) {
        *self
            .shared
            .document
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = document.to_vec();
    }

    /// Switches how requests are answered. Leaving `Refusing` binds the same address again.
    pub fn set_availability(&self, availability: JwksAvailability) -> io::Result<()> {
        self.shared.failing.store(
            availability == JwksAvailability::ServerError,
            Ordering::SeqCst,
        );
        let mut acceptor = self.acceptor.lock().unwrap_or_else(PoisonError::into_inner);
        match (availability, acceptor.is_some()) {
            (JwksAvailability::Refusing, true) => {
                if let Some(running) = acceptor.take() {
                    stop(running, self.addr);
                }
            }
            (JwksAvailability::Serving | JwksAvailability::ServerError, false) => {
                let listener = TcpListener::bind(self.addr)?;
                *acceptor = Some(spawn_acceptor(listener, &self.shared)?);
            }
            _ => {}
        }
        Ok(())
    }

    /// Every request answered so far, oldest first.
    pub fn fetches(&self) -> Vec<JwksFetch> {
        self.shared
            .fetches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many requests were answered with the key set (`200`).
    pub fn served(&self) -> usize {
        self.fetches().iter().filter(|f| f.status == 200).count()
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        let running = self
            .acceptor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(running) = running {
            stop(running, self.addr);
        }
    }
}

fn spawn_acceptor(listener: TcpListener, shared: &Arc<Shared>) -> io::Result<Acceptor> {
    let stopping = Arc::new(AtomicBool::new(false));
    let thread = {
        let (stopping, shared) = (Arc::clone(&stopping), Arc::clone(shared));
        std::thread::Builder::new()
            .name("jwks-server".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        let _ = serve(&stream, &shared);
                    }
                }
            })?
    };
    Ok(Acceptor { stopping, thread })
}

/// Stops accepting and closes the listener (the thread owns it).
fn stop(acceptor: Acceptor, addr: SocketAddr) {
    acceptor.stopping.store(true, Ordering::SeqCst);
    // Wake the blocking accept so the thread sees the flag and drops the listener.
    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    let _ = acceptor.thread.join();
}

fn serve(stream: &TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut wire = Wire::new(stream);
    let Some((start, headers)) = wire.read_head(MAX_HEAD_BYTES)? else {
        return Ok(());
    };
    wire.read_body(&headers, MAX_HEAD_BYTES, BodyEnd::Empty)?;
    let start = String::from_utf8_lossy(&start).into_owned();
    let mut parts = start.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let path_only = target.split('?').next().unwrap_or_default();
    let host = headers
        .iter()
        .find(|(name, _)| name == "host")
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned());

    let (status, content_type, body): (u16, &str, Vec<u8>) =
        if shared.failing.load(Ordering::SeqCst) {
            (500, "text/plain", b"identity provider failure\n".to_vec())
        } else if method != "GET" {
            (405, "text/plain", b"only GET\n".to_vec())
        } else if path_only != shared.path {
            (404, "text/plain", b"no such key set\n".to_vec())
        } else {
            let document = shared
                .document
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            (200, "application/jwk-set+json", document)
        };
    {
        let mut fetches = shared
            .fetches
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if fetches.len() >= KEEP_FETCHES {
            fetches.remove(0);
        }
        fetches.push(JwksFetch {
            method,
            path: target,
            host,
            status,
        });
    }
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut stream = stream;
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_client::{Response, get};

    const PATH: &str = "/.well-known/jwks.json";

    fn fetch(server: &JwksServer) -> io::Result<Response> {
        get(server.addr(), PATH, "idp.bank.svc.cluster.local")
    }

    #[test]
    fn serves_the_current_document_and_records_each_fetch() {
        let server =
            JwksServer::start("127.0.0.1:0".parse().unwrap(), PATH, br#"{"keys":[]}"#).unwrap();
        let first = fetch(&server).unwrap();
        assert_eq!(
            (first.status, first.body.as_slice()),
            (200, &br#"{"keys":[]}"#[..])
        );
        assert_eq!(first.header_str("connection"), Some("close"));

        server.set_document(br#"{"keys":[{"kid":"k2"}]}"#);
        assert_eq!(fetch(&server).unwrap().body, br#"{"keys":[{"kid":"k2"}]}"#);
        let elsewhere = get(server.addr(), "/other", "idp.bank.svc.cluster.local").unwrap();
        assert_eq!(elsewhere.status, 404);

        let fetches = server.fetches();
        assert_eq!(fetches.len(), 3);
        assert_eq!(fetches[0].path, PATH);
        assert_eq!(
            fetches[0].host.as_deref(),
            Some("idp.bank.svc.cluster.local")
        );
        assert_eq!(server.served(), 2);
    }

    #[test]
    fn fails_with_500_then_refuses_connections_then_comes_back_on_the_same_address() {
        let server =
            JwksServer::start("127.0.0.1:0".parse().unwrap(), PATH, br#"{"keys":[]}"#).unwrap();
        let addr = server.addr();

        server
            .set_availability(JwksAvailability::ServerError)
            .unwrap();
        assert_eq!(fetch(&server).unwrap().status, 500);

        server.set_availability(JwksAvailability::Refusing).unwrap();
        let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);

        server.set_availability(JwksAvailability::Serving).unwrap();
        assert_eq!(server.addr(), addr);
        assert_eq!(fetch(&server).unwrap().status, 200);
        let statuses: Vec<u16> = server.fetches().iter().map(|f| f.status).collect();
        assert_eq!(statuses, [500, 200]);
    }
}
