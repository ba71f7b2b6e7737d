//! What the store keeps per key, and its bytes. The same record goes to the embedded store
//! (a slot's value) and to Redis (a value read back raw through Webdis), so it is one binary
//! format, versioned, and decoding never trusts a length it has not checked.
//!
//! `magic "BKIR" | version 1 | state | fingerprint (32)`, then for an in-flight record its
//! lease deadline (u64 ms), for a completed one `status u16 | body kept u8 | header count u16 |
//! (name len u16, name, value len u32, value)* | body len u32 | body`, all big-endian.

use crate::fingerprint::Fingerprint;

const MAGIC: &[u8; 4] = b"BKIR";
/// The record format this build writes and reads.
pub const VERSION: u8 = 1;
const IN_FLIGHT: u8 = 1;
const COMPLETED: u8 = 2;

/// An upstream response as kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// The configured headers the response carried, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// `None` when the body was larger than the configured bound and was not kept.
    pub body: Option<Vec<u8>>,
}

/// A key's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Reserved by a request that went upstream and has not finished, until the lease
    /// deadline (wall-clock milliseconds). Past it, the outcome is unknown.
    InFlight {
        fingerprint: Fingerprint,
        lease_until_ms: u64,
    },
    /// The request finished upstream with this response.
    Completed {
        fingerprint: Fingerprint,
        response: StoredResponse,
    },
}

impl Record {
    pub fn fingerprint(&self) -> &Fingerprint {
        match self {
            Record::InFlight { fingerprint, .. } | Record::Completed { fingerprint, .. } => {
                fingerprint
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        match self {
            Record::InFlight {
                fingerprint,
                lease_until_ms,
            } => {
                out.push(IN_FLIGHT);
                out.extend_from_slice(fingerprint);
                out.extend_from_slice(&lease_until_ms.to_be_bytes());
            }
            Record::Completed {
                fingerprint,
                response,
            } => {
                out.push(COMPLETED);
                out.extend_from_slice(fingerprint);
                out.extend_from_slice(&response.status.to_be_bytes());
                out.push(u8::from(response.body.is_some()));
                let count = u16::try_from(response.headers.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&count.to_be_bytes());
                for (name, value) in response.headers.iter().take(usize::from(count)) {
                    let name = name.as_bytes();
                    let name = name.get(..usize::from(u16::MAX)).unwrap_or(name);
                    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
                    out.extend_from_slice(name);
                    push_block(&mut out, value);
                }
                push_block(&mut out, response.body.as_deref().unwrap_or_default());
            }
        }
        out
    }

    /// `None` for bytes that are not a record of this version: the caller fails closed.
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC || r.u8()? != VERSION {
            return None;
        }
        let state = r.u8()?;
        let fingerprint: Fingerprint = r.take(32)?.try_into().ok()?;
        let record = match state {
            IN_FLIGHT => Record::InFlight {
                fingerprint,
                lease_until_ms: u64::from_be_bytes(r.take(8)?.try_into().ok()?),
            },
            COMPLETED => {
                let status = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
                let body_kept = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return None,
                };
                let count = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
                let mut headers = Vec::with_capacity(usize::from(count).min(64));
                for _ in 0..count {
                    let len = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
                    let name = String::from_utf8(r.take(usize::from(len))?.to_vec()).ok()?;
                    headers.push((name, r.block()?.to_vec()));
                }
                let body = r.block()?.to_vec();
                Record::Completed {
                    fingerprint,
                    response: StoredResponse {
                        status,
                        headers,
                        body: body_kept.then_some(body),
                    },
                }
            }
            _ => return None,
        };
        // Nothing may follow: a longer value is not this record.
        r.0.is_empty().then_some(record)
    }
}

fn push_block(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes.get(..len as usize).unwrap_or(bytes));
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn block(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().ok()?);
        self.take(usize::try_from(len).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn completed(body: Option<&[u8]>) -> Record {
        Record::Completed {
            fingerprint: [7; 32],
            response: StoredResponse {
                status: 201,
                headers: vec![
                    ("content-type".into(), b"application/json".to_vec()),
                    ("location".into(), b"/payments/42".to_vec()),
                ],
                body: body.map(<[u8]>::to_vec),
            },
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_record_round_trips_byte_for_byte() {
        let records = [
            Record::InFlight {
                fingerprint: [1; 32],
                lease_until_ms: 1_700_000_000_000,
            },
            completed(Some(b"{\"id\":42}\x00\xff")),
            completed(Some(b"")),
            completed(None),
        ];
        for record in records {
            assert_eq!(Record::decode(&record.encode()), Some(record));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn anything_else_is_no_record() {
        let good = completed(Some(b"{}")).encode();
        assert_eq!(Record::decode(b""), None);
        assert_eq!(Record::decode(b"BKIR"), None);
        let mut newer = good.clone();
        newer[4] = VERSION + 1;
        assert_eq!(Record::decode(&newer), None);
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(Record::decode(&longer), None);
        // Every truncation, and a length that points past the end.
        for n in 0..good.len() {
            assert_eq!(Record::decode(&good[..n]), None, "{n} bytes");
        }
        let mut lying = good.clone();
        let body_len_at = good.len() - 2 - 4;
        lying[body_len_at..body_len_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Record::decode(&lying), None);
    }
}
