//! Getting records out without silent loss: a bounded outbox per VM, batches as OTLP/HTTP
//! JSON logs (`resourceLogs` / `scopeLogs` / `logRecords`, the record as the body, its chain
//! and sequence as attributes, its trace context as `traceId`/`spanId` in hex), and what the
//! collector's answer means for the batch. Pure: the shell dispatches and keeps time.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{Value, json};

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

/// The records a VM holds until the collector has them.
#[derive(Debug, Default)]
pub struct Outbox {
    records: VecDeque<Outgoing>,
    capacity: usize,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            records: VecDeque::new(),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.records.len() >= self.capacity
    }

    /// Adds a record, dropping the oldest when full: the dropped records' sequence numbers,
    /// for the `gap` record.
    pub fn push_dropping_oldest(&mut self, record: Outgoing) -> Vec<u64> {
        let mut dropped = Vec::new();
        while self.records.len() >= self.capacity.max(1) {
            match self.records.pop_front() {
                Some(old) => dropped.push(old.seq),
                None => break,
            }
        }
        self.records.push_back(record);
        dropped
    }

    /// The first `n` records as one OTLP/HTTP JSON logs request; they stay until
    /// [`Outbox::acknowledge`].
    pub fn batch(&self, n: usize, service: &str) -> (usize, Vec<u8>) {
        let records: Vec<Value> = self.records.iter().take(n).map(log_record).collect();
        let count = records.len();
        let payload = json!({"resourceLogs": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": service}}
            ]},
            "scopeLogs": [{
                "scope": {"name": "banking-wasm-filters/audit-log"},
                "logRecords": records
            }]
        }]});
        (count, payload.to_string().into_bytes())
    }

    /// The collector has the first `n` records.
    pub fn acknowledge(&mut self, n: usize) {
        for _ in 0..n {
            self.records.pop_front();
        }
    }
}

fn log_record(r: &Outgoing) -> Value {
    let mut record = json!({
        "timeUnixNano": (u128::from(r.time_ms) * 1_000_000).to_string(),
        "severityNumber": 9,
        "severityText": "INFO",
        "body": {"stringValue": r.line},
        "attributes": [
            {"key": "audit.chain.id", "value": {"stringValue": r.chain}},
            {"key": "audit.chain.seq", "value": {"intValue": r.seq.to_string()}}
        ]
    });
    if let (Some((trace, span)), Some(fields)) = (&r.trace, record.as_object_mut()) {
        fields.insert("traceId".into(), json!(trace));
        fields.insert("spanId".into(), json!(span));
    }
    record
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
        let mut outbox = Outbox::new(10);
        for seq in 0..3 {
            assert!(outbox.push_dropping_oldest(record(seq)).is_empty());
        }
        let (n, payload) = outbox.batch(2, "gateway");
        assert_eq!(n, 2);
        let v: Value = serde_json::from_slice(&payload).unwrap();
        let logs = &v["resourceLogs"][0]["scopeLogs"][0]["logRecords"];
        assert_eq!(logs.as_array().unwrap().len(), 2);
        assert_eq!(logs[0]["body"]["stringValue"], r#"{"seq":0}"#);
        assert_eq!(logs[0]["timeUnixNano"], "1795982320123000000");
        assert_eq!(logs[0]["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(logs[1]["attributes"][1]["value"]["intValue"], "1");
        assert_eq!(outbox.len(), 3, "kept until acknowledged");
        outbox.acknowledge(n);
        assert_eq!(outbox.len(), 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_full_outbox_drops_its_oldest_and_says_which() {
        let mut outbox = Outbox::new(2);
        outbox.push_dropping_oldest(record(0));
        outbox.push_dropping_oldest(record(1));
        assert!(outbox.is_full());
        assert_eq!(outbox.push_dropping_oldest(record(2)), [0]);
        assert_eq!(outbox.len(), 2);
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
