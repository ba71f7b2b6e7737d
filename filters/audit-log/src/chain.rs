//! The hash chain that makes records tamper-evident (PCI DSS 10.3.x). Each worker VM keeps its
//! own chain (no lock between workers): a random chain id, a sequence number from 0, and per
//! record `prev`, the hash of the record before it (64 zeros for the first), and `hash`, the
//! SHA-256 of the record's canonical bytes with `hash` left out. Changing, removing, reordering
//! or inserting a record breaks the hashes or the sequence after it; cutting the tail is seen
//! at the next checkpoint, which states the head.
//!
//! Canonical bytes are the record as compact JSON with object keys in byte order, whatever
//! order they were written or read in; the filter and the verifier compute them with this same
//! code.

use banking_filter_common::ids::hex;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `prev` of a chain's first record.
pub const NO_PREVIOUS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a checkpoint (or `end`) record states, and what its MAC covers.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint<'a> {
    /// `checkpoint` or `end`.
    pub kind: &'a str,
    pub chain: &'a str,
    /// Records before it, which is its own sequence number.
    pub count: u64,
    /// The hash of the record before it.
    pub head: &'a str,
    /// Its `time`.
    pub time: &'a str,
}

/// The MAC a checkpoint (or `end`) record carries when the filter has a checkpoint key:
/// HMAC-SHA256 under the key of
/// `banking-audit-checkpoint:<kind>:<chain id>:<count>:<head>:<time>`, in hex. The head is the
/// hash of the record before the checkpoint, which covers every record before it, and the kind
/// is covered too: whoever rewrites a chain without the key cannot make its checkpoints agree,
/// nor pass a checkpoint off as the chain's `end` (or an `end` as a mere checkpoint).
pub fn checkpoint_mac(key: &[u8], checkpoint: &Checkpoint) -> String {
    let Checkpoint {
        kind,
        chain,
        count,
        head,
        time,
    } = checkpoint;
    let message = format!("banking-audit-checkpoint:{kind}:{chain}:{count}:{head}:{time}");
    hex(&crate::mask::hmac_sha256(key, message.as_bytes()))
}

/// The record's JSON with keys sorted and no whitespace.
pub fn canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            write_object(map, None, out);
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::String(s) => write_string(s, out),
        // Numbers, booleans and null as serde_json writes them (it cannot fail into a Vec).
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// An object with its keys in byte order; with `slot`, also where a member of that name
/// (absent from `map`) would go: the byte offset, and whether members come before it.
fn write_object(map: &Map<String, Value>, slot: Option<&str>, out: &mut Vec<u8>) -> (usize, bool) {
    out.push(b'{');
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    let mut at = None;
    for (i, key) in keys.into_iter().enumerate() {
        if at.is_none() && slot.is_some_and(|s| s < key.as_str()) {
            at = Some((out.len(), i > 0));
        }
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        if let Some(v) = map.get(key) {
            write_canonical(v, out);
        }
    }
    let at = at.unwrap_or((out.len(), !map.is_empty()));
    out.push(b'}');
    at
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's escaping is fixed: the same string always gives the same bytes. Writing
    // into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The hash of a record: SHA-256 over its canonical bytes without its `hash` field, in hex.
pub fn record_hash(record: &Map<String, Value>) -> String {
    let mut without = record.clone();
    without.remove("hash");
    hex(&Sha256::digest(canonical(&Value::Object(without))))
}

/// One VM's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    id: String,
    next_seq: u64,
    head: String,
}

impl Chain {
    /// A new chain; `id` should be random per VM start (the shell draws 16 random bytes).
    pub fn new(id: String) -> Chain {
        Chain {
            id,
            next_seq: 0,
            head: NO_PREVIOUS.to_string(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The hash of the last record sealed (what a checkpoint states).
    pub fn head(&self) -> &str {
        &self.head
    }

    /// Records sealed so far.
    pub fn len(&self) -> u64 {
        self.next_seq
    }

    pub fn is_empty(&self) -> bool {
        self.next_seq == 0
    }

    /// Puts `record` on the chain: adds `chain` (`id`, `seq`, `prev`) and `hash`, and
    /// returns the sealed record's canonical JSON, one line.
    pub fn seal(&mut self, mut record: Map<String, Value>) -> String {
        let mut link = Map::new();
        link.insert("id".into(), Value::String(self.id.clone()));
        link.insert("seq".into(), Value::from(self.next_seq));
        link.insert("prev".into(), Value::String(self.head.clone()));
        record.remove("hash");
        record.insert("chain".into(), Value::Object(link));
        // One pass: the canonical bytes without `hash` are what it covers; the line is the
        // same bytes with the `hash` member put where its key sorts.
        let mut bytes = Vec::with_capacity(1024);
        let (at, members_before) = write_object(&record, Some("hash"), &mut bytes);
        let hash = hex(&Sha256::digest(&bytes));
        let mut member = Vec::with_capacity(80);
        if members_before {
            member.push(b',');
        }
        write_string("hash", &mut member);
        member.push(b':');
        write_string(&hash, &mut member);
        if !members_before && !record.is_empty() {
            member.push(b',');
        }
        bytes.splice(at..at, member);
        self.head = hash;
        self.next_seq += 1;
        String::from_utf8(bytes).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_sealed_line_is_the_canonical_form_of_its_record_and_its_hash_covers_the_rest() {
        // Keys sorting before and after `hash`, and a record with none but `chain`.
        for record in [
            json!({"kind": "request", "a": 1, "zeta": [1, "x\"y"], "body": {"b": 2, "a": "é"}}),
            json!({"aa": true}),
            json!({"kind": "genesis"}),
            json!({}),
        ] {
            let mut chain = Chain::new("c1".into());
            chain.seal(object(json!({"kind": "genesis"})));
            let line = chain.seal(object(record));
            let parsed: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(canonical(&parsed), line.as_bytes(), "{line}");
            let sealed = object(parsed);
            assert_eq!(record_hash(&sealed), sealed["hash"].as_str().unwrap());
            assert_eq!(chain.head(), sealed["hash"].as_str().unwrap());
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn canonical_bytes_ignore_key_order_and_whitespace() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": "é\n", "x": [true, null]}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":[true,null],"y":"é\n"},"b":1}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(
            String::from_utf8(canonical(&a)).unwrap(),
            r#"{"a":{"x":[true,null],"y":"é\n"},"b":1}"#
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn each_record_links_to_the_one_before_it() {
        let mut chain = Chain::new("c1".into());
        let first: Value =
            serde_json::from_str(&chain.seal(object(json!({"kind": "genesis"})))).unwrap();
        let second: Value =
            serde_json::from_str(&chain.seal(object(json!({"kind": "request", "status": 201}))))
                .unwrap();
        assert_eq!(first["chain"]["prev"], NO_PREVIOUS);
        assert_eq!(first["chain"]["seq"], 0);
        assert_eq!(second["chain"]["seq"], 1);
        assert_eq!(second["chain"]["prev"], first["hash"]);
        assert_eq!(chain.head(), second["hash"].as_str().unwrap());
        // The hash covers everything but itself: any change shows.
        let sealed = object(second.clone());
        assert_eq!(record_hash(&sealed), second["hash"].as_str().unwrap());
        let mut changed = sealed.clone();
        changed.insert("status".into(), json!(200));
        assert_ne!(record_hash(&changed), second["hash"].as_str().unwrap());
    }
}
