//! The Redis store, reached through Webdis (Redis over HTTP: Envoy has no Redis call for a
//! Wasm filter). Pure: it says which HTTP call each store operation is and what Webdis's
//! answer means; the shell dispatches the calls.
//!
//! | operation | Redis command | Webdis call |
//! |---|---|---|
//! | reserve | `SET <key> <reservation> NX PX <retention>` | `GET /SET/<key>/<hex>/NX/PX/<ms>` |
//! | read (when reserving found the key taken) | `GET <key>` | `GET /GET/<key>` |
//! | complete | `PSETEX <key> <retention> <record>` | `PUT /PSETEX/<key>/<ms>`, the record as the body |
//! | release | `DEL <key>` | `GET /DEL/<key>` |
//!
//! Every call asks for the raw value (`?type=application/octet-stream`): Webdis's JSON is
//! not binary-safe. Webdis then answers a bulk string as its bytes, a status as `+OK`, an
//! integer as its digits, an error as `-ERR ...` (all with 200), a nil as 404, a command its
//! ACL refuses as 403, and Redis unreachable as 503. A key counts as reserved only on `+OK`:
//! anything else is read back, or fails closed.
//!
//! A reservation goes in the URL (the body is only ever the last argument), so it is the
//! hex of its record; a completed record is binary, in the body. [`decode_value`] reads both.

use banking_filter_common::ids::hex;
use std::time::Duration;

use crate::record::Record;
use crate::store::{RecordKey, StoreFailure};

/// What every call asks for: the raw value.
const RAW: &str = "?type=application/octet-stream";

/// Where Webdis is and how records are named there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebdisStore {
    /// The Envoy cluster of Webdis, e.g. `outbound|7379||webdis.payments.svc.cluster.local`.
    pub cluster: String,
    /// The calls' `:authority`.
    pub authority: String,
    /// Prefix of every Redis key this plugin writes.
    pub key_prefix: String,
    /// How long a call may take before the store counts as unavailable.
    pub timeout: Duration,
}

/// One HTTP call to Webdis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebdisCall {
    pub method: &'static str,
    pub path: String,
    pub body: Vec<u8>,
}

impl WebdisCall {
    /// The callout's headers, pseudo-headers first.
    pub fn headers<'a>(&'a self, store: &'a WebdisStore) -> Vec<(&'a str, &'a str)> {
        let mut headers = vec![
            (":method", self.method),
            (":path", self.path.as_str()),
            (":authority", store.authority.as_str()),
        ];
        if !self.body.is_empty() {
            headers.push(("content-type", "application/octet-stream"));
        }
        headers
    }
}

/// Webdis's answer, as far as the store cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`: a status reply.
    Ok,
    /// 404: the key has no value (`GET`), or `SET ... NX` found it taken.
    Nil,
    /// Any other 200 body: a value, an integer, or a Redis error (`-ERR ...`).
    Body(Vec<u8>),
    /// No answer, or a status that is not Webdis answering for Redis (403: the ACL refused
    /// the command; 503: Redis is down; anything from a proxy in between).
    Failed(String),
}

/// Reads Webdis's answer: `status` is `None` when the callout failed (reset, timeout).
pub fn reply(status: Option<u16>, body: &[u8]) -> Reply {
    match status {
        None => Reply::Failed("no answer from Webdis (reset or timeout)".to_string()),
        Some(200) if body == b"+OK" => Reply::Ok,
        Some(200) => Reply::Body(body.to_vec()),
        Some(404) => Reply::Nil,
        Some(403) => Reply::Failed("Webdis refused the command: check its ACL".to_string()),
        Some(other) => Reply::Failed(format!("Webdis answered {other}")),
    }
}

impl WebdisStore {
    /// The Redis key of a record: the prefix, then the record key in hex.
    pub fn redis_key(&self, key: &RecordKey) -> String {
        format!("{}{}", self.key_prefix, hex(key))
    }

    /// Writes `reservation` under `key` only if the key is absent, kept for `ttl_ms`.
    pub fn reserve(&self, key: &RecordKey, reservation: &Record, ttl_ms: u64) -> WebdisCall {
        WebdisCall {
            method: "GET",
            path: format!(
                "/SET/{}/{}/NX/PX/{}{RAW}",
                self.redis_key(key),
                hex(&reservation.encode()),
                ttl_ms.max(1)
            ),
            body: Vec::new(),
        }
    }

    /// Reads `key`'s record.
    pub fn read(&self, key: &RecordKey) -> WebdisCall {
        WebdisCall {
            method: "GET",
            path: format!("/GET/{}{RAW}", self.redis_key(key)),
            body: Vec::new(),
        }
    }

    /// Replaces this request's reservation with its outcome, kept for `ttl_ms`.
    pub fn complete(&self, key: &RecordKey, record: &Record, ttl_ms: u64) -> WebdisCall {
        WebdisCall {
            method: "PUT",
            path: format!("/PSETEX/{}/{}{RAW}", self.redis_key(key), ttl_ms.max(1)),
            body: record.encode(),
        }
    }

    /// Removes this request's reservation. Only the holder calls it, and `SET ... NX` never
    /// overwrites a reservation, so the key it removes is its own.
    pub fn release(&self, key: &RecordKey) -> WebdisCall {
        WebdisCall {
            method: "GET",
            path: format!("/DEL/{}{RAW}", self.redis_key(key)),
            body: Vec::new(),
        }
    }
}

/// What reserving learnt: `Ok(true)` the key is ours, `Ok(false)` it was taken (read it).
pub fn reserved(reply: &Reply) -> Result<bool, StoreFailure> {
    match reply {
        Reply::Ok => Ok(true),
        Reply::Nil => Ok(false),
        Reply::Body(body) => Err(unexpected("SET", body)),
        Reply::Failed(why) => Err(StoreFailure::Unavailable(why.clone())),
    }
}

/// What reading learnt: the key's record, or `None` when it has none (it expired or was
/// released since reserving found it taken).
pub fn read(reply: &Reply) -> Result<Option<Record>, StoreFailure> {
    match reply {
        Reply::Nil => Ok(None),
        Reply::Body(body) => decode_value(body).map(Some).ok_or_else(|| {
            if body.starts_with(b"-") {
                unexpected("GET", body)
            } else {
                StoreFailure::Unexpected("the key's value is not a record of this filter".into())
            }
        }),
        Reply::Ok => Err(unexpected("GET", b"+OK")),
        Reply::Failed(why) => Err(StoreFailure::Unavailable(why.clone())),
    }
}

/// Whether a complete or a release was done: `+OK` for `PSETEX`, an integer for `DEL`.
pub fn written(reply: &Reply) -> Result<(), StoreFailure> {
    match reply {
        Reply::Ok => Ok(()),
        Reply::Body(body) if !body.is_empty() && body.iter().all(u8::is_ascii_digit) => Ok(()),
        Reply::Body(body) => Err(unexpected("write", body)),
        Reply::Nil => Err(StoreFailure::Unexpected(
            "Webdis answered nil to a write".into(),
        )),
        Reply::Failed(why) => Err(StoreFailure::Unavailable(why.clone())),
    }
}

fn unexpected(command: &str, body: &[u8]) -> StoreFailure {
    // A Redis error is short and ours to show; a value is not (it may be a response body).
    let shown = if body.starts_with(b"-") {
        String::from_utf8_lossy(body.get(..120).unwrap_or(body)).into_owned()
    } else {
        format!("{} bytes", body.len())
    };
    StoreFailure::Unexpected(format!("{command}: Webdis answered {shown}"))
}

/// A stored value: a binary record (a completed one, written from the body), or the hex of
/// one (a reservation, written from the URL).
pub fn decode_value(value: &[u8]) -> Option<Record> {
    if let Some(record) = Record::decode(value) {
        return Some(record);
    }
    Record::decode(&unhex(value)?)
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::StoredResponse;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn store() -> WebdisStore {
        WebdisStore {
            cluster: "outbound|7379||webdis.payments.svc.cluster.local".into(),
            authority: "webdis.payments.svc.cluster.local".into(),
            key_prefix: "banking:idempotency:payments:".into(),
            timeout: Duration::from_millis(250),
        }
    }

    fn in_flight() -> Record {
        Record::InFlight {
            fingerprint: [0xab; 32],
            lease_until_ms: 1_700_000_060_000,
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn each_operation_is_one_raw_webdis_call() {
        let key = [0x0f; 32];
        let redis_key = format!("banking:idempotency:payments:{}", "0f".repeat(32));
        let reserve = store().reserve(&key, &in_flight(), 86_400_000);
        assert_eq!(reserve.method, "GET");
        assert_eq!(
            reserve.path,
            format!(
                "/SET/{redis_key}/{}/NX/PX/86400000?type=application/octet-stream",
                hex(&in_flight().encode())
            )
        );
        assert_eq!(
            store().read(&key).path,
            format!("/GET/{redis_key}?type=application/octet-stream")
        );
        let done = Record::Completed {
            fingerprint: [0xab; 32],
            response: StoredResponse {
                status: 201,
                headers: vec![],
                body: Some(b"\x00{}".to_vec()),
            },
        };
        let complete = store().complete(&key, &done, 86_400_000);
        assert_eq!(
            (complete.method, complete.path.as_str()),
            (
                "PUT",
                format!("/PSETEX/{redis_key}/86400000?type=application/octet-stream").as_str()
            )
        );
        assert_eq!(complete.body, done.encode());
        assert_eq!(
            store().release(&key).path,
            format!("/DEL/{redis_key}?type=application/octet-stream")
        );
        let s = store();
        let headers = complete.headers(&s);
        assert_eq!(
            headers[2],
            (":authority", "webdis.payments.svc.cluster.local")
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_key_is_reserved_only_on_ok() {
        assert_eq!(reserved(&reply(Some(200), b"+OK")), Ok(true));
        assert_eq!(reserved(&reply(Some(404), b"")), Ok(false));
        for (status, body) in [
            (Some(200), b"-ERR syntax error".as_slice()),
            (Some(200), b"OK"),
            (Some(403), b""),
            (Some(503), b""),
            (Some(500), b""),
            (None, b""),
        ] {
            assert!(reserved(&reply(status, body)).is_err(), "{status:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn both_forms_of_a_stored_value_read_back() {
        let reservation = in_flight();
        assert_eq!(
            read(&reply(Some(200), hex(&reservation.encode()).as_bytes())),
            Ok(Some(reservation.clone()))
        );
        assert_eq!(
            read(&reply(Some(200), &reservation.encode())),
            Ok(Some(reservation))
        );
        assert_eq!(read(&reply(Some(404), b"")), Ok(None));
        assert!(matches!(
            read(&reply(Some(200), b"not a record")),
            Err(StoreFailure::Unexpected(_))
        ));
        assert!(matches!(
            read(&reply(Some(200), b"-ERR wrong number of arguments")),
            Err(StoreFailure::Unexpected(m)) if m.contains("-ERR")
        ));
        assert!(matches!(
            read(&reply(None, b"")),
            Err(StoreFailure::Unavailable(_))
        ));
        assert_eq!(unhex(b"0g"), None);
        assert_eq!(unhex(b"abc"), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn writes_succeed_on_ok_or_a_count() {
        assert_eq!(written(&reply(Some(200), b"+OK")), Ok(()));
        assert_eq!(written(&reply(Some(200), b"1")), Ok(()));
        assert_eq!(written(&reply(Some(200), b"0")), Ok(()));
        assert!(written(&reply(Some(200), b"-ERR")).is_err());
        assert!(written(&reply(Some(503), b"")).is_err());
        assert!(written(&reply(Some(404), b"")).is_err());
    }
}
