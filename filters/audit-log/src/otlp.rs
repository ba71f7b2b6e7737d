//! Getting records out without silent loss: a bounded outbox per VM, batches as OTLP/HTTP
//! JSON logs (`resourceLogs` / `scopeLogs` / `logRecords`, the record as the body, its chain
//! and sequence as attributes, its trace context as `traceId`/`spanId` in hex), and what the
//! collector's answer means for the batch. Pure: the shell dispatches and keeps time.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;

/// One record waiting to be shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The sealed record, one line of canonical JSON.
    pub line: String,
    pub time_ms: u64,
    pub chain: String,
    pub seq: u64,
    pub trace: Option<(String, String)>,
}

/// The records a VM holds until the collector has them, bounded in records and in bytes.
#[derive(Debug, Default)]
pub struct Outbox {
    records: VecDeque<Outgoing>,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    /// Records at the front in a batch the collector has not answered: never dropped (the
    /// collector may have them already).
    sending: usize,
}

impl Outbox {
    pub fn new(capacity: usize, max_bytes: usize) -> Outbox {
        Outbox {
            records: VecDeque::new(),
            capacity,
            max_bytes,
            bytes: 0,
            sending: 0,
        }
    }

    /// The first `n` records went out in a batch.
    pub fn mark_sending(&mut self, n: usize) {
        self.sending = n.min(self.records.len());
    }

    /// The batch in flight failed: its records may be sent again, or dropped.
    pub fn sending_failed(&mut self) {
        self.sending = 0;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.records.len() >= self.capacity || self.bytes >= self.max_bytes
    }

    /// Adds a record, dropping the oldest while it is over its bounds by `slack` records
    /// (0: drop-oldest; more: the room `reject` keeps for the records of the requests it
    /// refuses): the dropped records' sequence numbers, for the `gap` record.
    pub fn push(&mut self, record: Outgoing, slack: usize) -> Vec<u64> {
        let mut dropped = Vec::new();
        let (count, bytes) = (
            self.capacity.saturating_add(slack).max(1),
            self.max_bytes.saturating_add(slack.saturating_mul(1024)),
        );
        while self.records.len() >= count || self.bytes + record.line.len() > bytes {
            // The oldest not in flight goes; with only the batch in flight left, the new one.
            match self.records.remove(self.sending) {
                Some(old) => {
                    self.bytes -= old.line.len();
                    dropped.push(old.seq);
                }
                None => {
                    dropped.push(record.seq);
                    return dropped;
                }
            }
        }
        self.bytes += record.line.len();
        self.records.push_back(record);
        dropped
    }

    /// [`Outbox::push`] with no slack.
    pub fn push_dropping_oldest(&mut self, record: Outgoing) -> Vec<u64> {
        self.push(record, 0)
    }

    /// The first `n` records as one OTLP/HTTP JSON logs request, with how many and the last
    /// one's sequence number; they stay until [`Outbox::acknowledge`].
    pub fn batch(&self, n: usize, service: &str) -> (usize, Option<u64>, Vec<u8>) {
        let records: Vec<&Outgoing> = self.records.iter().take(n).collect();
        let count = records.len();
        let last = records.last().map(|r| r.seq);
        // Written directly rather than built as a JSON tree: each record's line is escaped
        // once, straight into the payload.
        let bytes: usize = records.iter().map(|r| r.line.len() + 320).sum();
        let mut out = Vec::with_capacity(bytes + 256);
        out.extend_from_slice(br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"#);
        json_string(service, &mut out);
        out.extend_from_slice(br#"}}]},"scopeLogs":[{"scope":{"name":"banking-wasm-filters/audit-log"},"logRecords":["#);
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_log_record(r, &mut out);
        }
        out.extend_from_slice(b"]}]}]}");
        (count, last, out)
    }

    /// The collector has every record up to sequence `last` that is still here (those the
    /// outbox dropped meanwhile are gone already; newer ones stay).
    pub fn acknowledge(&mut self, last: u64) {
        while self.records.front().is_some_and(|r| r.seq <= last) {
            if let Some(old) = self.records.pop_front() {
                self.bytes -= old.line.len();
            }
        }
        self.sending = 0;
    }
}

/// A JSON string (serde_json's escaping; writing into a Vec cannot fail).
fn json_string(text: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, text);
}

/// One OTLP log record: the audit record as its string body, its chain and sequence as
/// attributes, its trace context in hex.
fn write_log_record(r: &Outgoing, out: &mut Vec<u8>) {
    let nanos = u128::from(r.time_ms) * 1_000_000;
    out.extend_from_slice(format!(r#"{{"timeUnixNano":"{nanos}","severityNumber":9,"severityText":"INFO","body":{{"stringValue":"#).as_bytes());
    json_string(&r.line, out);
    out.extend_from_slice(br#"},"attributes":[{"key":"audit.chain.id","value":{"stringValue":"#);
    json_string(&r.chain, out);
    out.extend_from_slice(
        format!(
            r#"}}}},{{"key":"audit.chain.seq","value":{{"intValue":"{}"}}}}]"#,
            r.seq
        )
        .as_bytes(),
    );
    if let Some((trace, span)) = &r.trace {
        out.extend_from_slice(br#","traceId":"#);
        json_string(trace, out);
        out.extend_from_slice(br#","spanId":"#);
        json_string(span, out);
    }
    out.push(b'}');
}

/// The records in an OTLP/HTTP JSON logs payload: each log record's string body, in order.
pub fn record_bodies(payload: &Value) -> Vec<String> {
    let list = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for resource in list(payload, "resourceLogs") {
        for scope in list(&resource, "scopeLogs") {
            for record in list(&scope, "logRecords") {
                if let Some(body) = record.pointer("/body/stringValue").and_then(Value::as_str) {
                    out.push(body.to_string());
                }
            }
        }
    }
    out
}

/// What to do after the collector answered a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Taken: acknowledge the batch; `rejected` of its records the collector refused
    /// (partial success), counted, never resent.
    Taken { rejected: u64 },
    /// Try the same batch again after this long.
    Retry(Duration),
    /// The collector refused the batch itself (400 and other 4xx): resending would fail
    /// again. Dropped, counted.
    Refused,
}

/// The answer to a batch: `status` `None` when the call failed (no answer, timeout, reset);
/// `retry_after` the `Retry-After` header; `attempt` how many times this batch failed before.
pub fn answer(status: Option<u16>, retry_after: Option<&str>, body: &[u8], attempt: u32) -> Answer {
    let backoff = backoff(attempt);
    match status {
        Some(200..=299) => {
            let rejected = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| {
                    let n = v.pointer("/partialSuccess/rejectedLogRecords")?;
                    n.as_u64().or_else(|| n.as_str()?.parse().ok())
                })
                .unwrap_or(0);
            Answer::Taken { rejected }
        }
        Some(429 | 503) => Answer::Retry(
            retry_after
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map_or(backoff, |s| Duration::from_secs(s.min(300))),
        ),
        Some(408) => Answer::Retry(backoff),
        Some(400..=499) => Answer::Refused,
        // 5xx (502, 504 and the rest) and no answer at all.
        _ => Answer::Retry(backoff),
    }
}

/// 1 s, 2 s, 4 s, ... at most 30 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs((1u64 << attempt.min(5)).min(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn record(seq: u64) -> Outgoing {
        Outgoing {
            line: format!(r#"{{"seq":{seq}}}"#),
            time_ms: 1_795_982_320_123,
            chain: "c1".into(),
            seq,
            trace: (seq == 0).then(|| {
                (
                    "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                    "00f067aa0ba902b7".into(),
                )
            }),
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_batch_is_otlp_json_with_the_record_as_body_and_trace_ids_in_hex() {
        let mut outbox = Outbox::new(10, 1 << 20);
        for seq in 0..3 {
            assert!(outbox.push_dropping_oldest(record(seq)).is_empty());
        }
        let (n, last, payload) = outbox.batch(2, "gateway");
        assert_eq!((n, last), (2, Some(1)));
        let v: Value = serde_json::from_slice(&payload).unwrap();
        let logs = &v["resourceLogs"][0]["scopeLogs"][0]["logRecords"];
        assert_eq!(logs.as_array().unwrap().len(), 2);
        assert_eq!(logs[0]["body"]["stringValue"], r#"{"seq":0}"#);
        assert_eq!(logs[0]["timeUnixNano"], "1795982320123000000");
        assert_eq!(logs[0]["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(logs[1]["attributes"][1]["value"]["intValue"], "1");
        assert_eq!(outbox.len(), 3, "kept until acknowledged");
        outbox.acknowledge(1);
        assert_eq!(outbox.len(), 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_full_outbox_drops_its_oldest_and_says_which() {
        let mut outbox = Outbox::new(2, 1 << 20);
        outbox.push_dropping_oldest(record(0));
        outbox.push_dropping_oldest(record(1));
        assert!(outbox.is_full());
        assert_eq!(outbox.push_dropping_oldest(record(2)), [0]);
        assert_eq!(outbox.len(), 2);
        // A batch of 1 and 2 is in flight: they are never dropped (the collector may have
        // them); with nothing else to drop, the new record is.
        let (n, last, _) = outbox.batch(2, "gateway");
        outbox.mark_sending(n);
        assert_eq!(last, Some(2));
        assert_eq!(outbox.push_dropping_oldest(record(3)), [3]);
        outbox.acknowledge(2);
        assert!(outbox.is_empty());
        let mut wider = Outbox::new(3, 1 << 20);
        for seq in 0..3 {
            wider.push_dropping_oldest(record(seq));
        }
        wider.mark_sending(1);
        assert_eq!(
            wider.push_dropping_oldest(record(3)),
            [1],
            "the oldest not in flight"
        );
        // Bytes bound too: a record that would pass it pushes the oldest out.
        let mut small = Outbox::new(100, 15);
        small.push_dropping_oldest(record(0));
        assert_eq!(small.push_dropping_oldest(record(1)), [0]);
        // Slack: reject's reserve lets a full outbox take a few more.
        let mut reserve = Outbox::new(1, 1 << 20);
        reserve.push(record(0), 2);
        assert!(reserve.push(record(1), 2).is_empty());
        assert!(reserve.push(record(2), 2).is_empty());
        assert_eq!(reserve.push(record(3), 2), [0]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_collectors_answer_decides_resend_wait_or_drop() {
        assert_eq!(
            answer(Some(200), None, b"{}", 0),
            Answer::Taken { rejected: 0 }
        );
        assert_eq!(
            answer(
                Some(200),
                None,
                br#"{"partialSuccess":{"rejectedLogRecords":"3"}}"#,
                0
            ),
            Answer::Taken { rejected: 3 }
        );
        assert_eq!(
            answer(Some(503), Some("7"), b"", 0),
            Answer::Retry(Duration::from_secs(7))
        );
        assert_eq!(
            answer(Some(429), None, b"", 2),
            Answer::Retry(Duration::from_secs(4))
        );
        assert_eq!(
            answer(Some(502), None, b"", 0),
            Answer::Retry(Duration::from_secs(1))
        );
        assert_eq!(
            answer(None, None, b"", 9),
            Answer::Retry(Duration::from_secs(30))
        );
        assert_eq!(answer(Some(400), None, b"", 0), Answer::Refused);
    }
}
