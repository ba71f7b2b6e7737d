//! The load: requests at a fixed rate over keep-alive HTTP/1.1 connections, open loop.
//!
//! Each connection has a schedule (rate / connections requests per second, the connections
//! staggered so the whole load is evenly spaced) and sends each request at its scheduled
//! time, or at once if the previous response came late; latency is counted from the
//! scheduled time, so a stall is charged to every request it delays (wrk2's model, against
//! coordinated omission). One thread per connection, blocking I/O: at a few thousand requests
//! per second that costs the generator's core little and keeps the code short.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::BenchError;
use crate::procfs;

/// The requests a row sends, shared by all connections: one after the other from a sequence
/// that starts over when it runs out.
pub struct Requests {
    raw: Vec<Vec<u8>>,
    /// Indices into `raw` in sending order; empty: `raw` itself, in rotation.
    order: Vec<usize>,
    next: AtomicUsize,
}

impl Requests {
    pub fn new(raw: Vec<Vec<u8>>) -> Requests {
        Requests::in_order(raw, Vec::new())
    }

    pub fn in_order(raw: Vec<Vec<u8>>, order: Vec<usize>) -> Requests {
        Requests {
            raw,
            order,
            next: AtomicUsize::new(0),
        }
    }

    fn next(&self) -> &[u8] {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let index = if self.order.is_empty() {
            i % self.raw.len().max(1)
        } else {
            self.order.get(i % self.order.len()).copied().unwrap_or(0)
        };
        self.raw.get(index).map_or(&[][..], Vec::as_slice)
    }
}

/// One run of load.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Requests per second over all connections.
    pub rate: f64,
    pub connections: usize,
    /// Load before the measured window starts.
    pub lead_in: Duration,
    /// The measured window; the load stops at its end.
    pub window: Duration,
}

/// The edges of the measured window, where the caller samples Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Start,
    End,
}

/// What one run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Responses completed within the window.
    pub completed: u64,
    /// Latency of each request scheduled within the window, in µs from its scheduled time
    /// to the end of its response.
    pub latencies_us: Vec<u32>,
    /// Requests sent over the whole run, lead-in included.
    pub sent: u64,
    /// Requests of the whole run that got no 200 or no response at all.
    pub failures: u64,
    pub first_failure: Option<String>,
}

/// Runs `plan` against `target`, calling `at_edge` at the window's start and end (from the
/// calling thread, while the load runs).
pub fn run(
    target: SocketAddr,
    plan: Plan,
    requests: &Requests,
    mut at_edge: impl FnMut(Edge) -> Result<(), BenchError>,
) -> Result<Outcome, BenchError> {
    let connections = plan.connections.max(1);
    let interval = Duration::from_secs_f64(connections as f64 / plan.rate);
    let stagger = Duration::from_secs_f64(1.0 / plan.rate);
    // Time for the threads to start and connect before the first request is due.
    let start = Instant::now() + Duration::from_millis(50);
    let window_start = start + plan.lead_in;
    let window_end = window_start + plan.window;
    let schedule = Schedule {
        interval,
        window_start,
        window_end,
    };
    let (edges, outcomes) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..connections)
            .map(|i| {
                let first = start + stagger * u32::try_from(i).unwrap_or(u32::MAX);
                scope.spawn(move || connection(target, requests, first, schedule))
            })
            .collect();
        procfs::tighten_timer_slack();
        sleep_until(window_start);
        let started = at_edge(Edge::Start);
        sleep_until(window_end);
        let ended = at_edge(Edge::End);
        let outcomes: Vec<Outcome> = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect();
        (started.and(ended), outcomes)
    });
    edges?;
    let mut total = Outcome::default();
    for o in outcomes {
        total.completed += o.completed;
        total.latencies_us.extend(o.latencies_us);
        total.sent += o.sent;
        total.failures += o.failures;
        if total.first_failure.is_none() {
            total.first_failure = o.first_failure;
        }
    }
    Ok(total)
}

#[derive(Clone, Copy)]
struct Schedule {
    interval: Duration,
    window_start: Instant,
    window_end: Instant,
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// One connection's share of the load.
fn connection(target: SocketAddr, requests: &Requests, first: Instant, s: Schedule) -> Outcome {
    procfs::tighten_timer_slack();
    let mut out = Outcome::default();
    let mut stream: Option<TcpStream> = None;
    let mut buffer = vec![0u8; 16 * 1024];
    let fail = |out: &mut Outcome, why: String| {
        out.failures += 1;
        if out.first_failure.is_none() {
            out.first_failure = Some(why);
        }
    };
    for k in 0u32.. {
        let scheduled = first + s.interval * k;
        if scheduled >= s.window_end {
            break;
        }
        sleep_until(scheduled);
        if stream.is_none() {
            match connect(target) {
                Ok(c) => stream = Some(c),
                Err(e) => {
                    fail(&mut out, format!("connect: {e}"));
                    continue;
                }
            }
        }
        let Some(conn) = stream.as_mut() else {
            continue;
        };
        out.sent += 1;
        let answer = exchange(conn, requests.next(), &mut buffer);
        let done = Instant::now();
        match answer {
            Ok(answer) => {
                if answer.status != 200 {
                    fail(&mut out, format!("status {}", answer.status));
                }
                if answer.close {
                    stream = None;
                }
            }
            Err(e) => {
                fail(&mut out, format!("exchange: {e}"));
                stream = None;
            }
        }
        if scheduled >= s.window_start {
            let micros = done.saturating_duration_since(scheduled).as_micros();
            out.latencies_us
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
        }
        if done >= s.window_start && done < s.window_end {
            out.completed += 1;
        }
    }
    out
}

fn connect(target: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

struct Answer {
    status: u16,
    /// The server will close the connection after this response.
    close: bool,
}

/// Reads what the connection has after `filled` bytes, growing `buffer` when full; a closed
/// connection is an error saying where it closed.
fn read_more(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    filled: &mut usize,
    closed: &str,
) -> io::Result<()> {
    if *filled == buffer.len() {
        buffer.resize(buffer.len() * 2, 0);
    }
    let n = stream.read(&mut buffer[*filled..])?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            closed.to_string(),
        ));
    }
    *filled += n;
    Ok(())
}

/// Writes one request and reads its response (Content-Length or chunked body).
fn exchange(stream: &mut TcpStream, request: &[u8], buffer: &mut Vec<u8>) -> io::Result<Answer> {
    stream.write_all(request)?;
    let mut filled = 0;
    let head_end = loop {
        if let Some(end) = find(&buffer[..filled], b"\r\n\r\n") {
            break end + 4;
        }
        read_more(stream, buffer, &mut filled, "closed before a response")?;
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP/1.1 status line"))?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
    };
    let close = header("connection") == Some("close");
    if let Some(length) = header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
        let end = head_end + length;
        if buffer.len() < end {
            buffer.resize(end, 0);
        }
        if filled < end {
            stream.read_exact(&mut buffer[filled..end])?;
        }
    } else if header("transfer-encoding") == Some("chunked") {
        while !buffer[head_end..filled].ends_with(b"0\r\n\r\n") {
            read_more(stream, buffer, &mut filled, "closed inside a body")?;
        }
    } else if status != 204 && status != 304 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a response without a length",
        ));
    }
    Ok(Answer { status, close })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
