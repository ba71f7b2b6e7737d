//! What `audit-verify` checks: every chain in a set of records, each record by its own hash,
//! its place (sequence) and its link to the one before, and each checkpoint against the
//! records it covers. Whatever does not hold is named, one finding per problem, with the
//! chain and sequence number where it shows.
//!
//! | finding | what it means |
//! |---|---|
//! | `tampered` | a record's content no longer matches its hash |
//! | `broken-link` | a record's `prev` is not the hash of the record before it (one was changed, replaced or inserted) |
//! | `missing` | sequence numbers are skipped: records were deleted |
//! | `reordered` | a record came after a later one |
//! | `duplicate` | the same sequence number twice |
//! | `checkpoint-mismatch` | a checkpoint's (or the closing `end` record's) head is not the hash of the record it names, or its count is not its place |
//! | `after-end` | records follow a chain's `end` record |
//! | `non-canonical` | a record's text is not the canonical form its hash covers (duplicate keys, other escapes): what a reader sees may not be what was sealed |
//! | `checkpoint-mac` | with the checkpoint key: a checkpoint or `end` record without a MAC, or whose MAC does not match (forged, or another key) |
//! | `unauthenticated` | with the checkpoint key: a chain with no checkpoint or `end` record at all, so nothing in it is authenticated |
//! | `gap` | the filter itself recorded that it dropped records (buffer full): how many |
//! | `unreadable` | a line that is not a record |
//! | `missing-chain` | (given the proxy log's `chain <id> started` lines) a chain none of whose records is here |
//!
//! The same record twice (a batch the collector took, then got again when the filter resent
//! it after a lost answer) is one record: delivery is at least once. A tail cut after the last
//! record present cannot show in the records alone: compare the chains' lengths with the
//! filter's `records_written` counter, or with another copy (the proxy log and the
//! collector).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::chain::{NO_PREVIOUS, canonical, record_hash};

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: &'static str,
    /// The chain, when known.
    pub chain: String,
    /// The sequence number where it shows, when known.
    pub seq: Option<u64>,
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(
                f,
                "{} chain {} seq {}: {}",
                self.kind, self.chain, seq, self.detail
            ),
            None => write!(f, "{} chain {}: {}", self.kind, self.chain, self.detail),
        }
    }
}

/// What was checked, and what was found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Records read per chain.
    pub chains: BTreeMap<String, u64>,
    pub findings: Vec<Finding>,
    /// Checkpoint MACs found good (with a key).
    pub macs_checked: u64,
    /// With a key: per chain, the records after its last good checkpoint MAC (none after a
    /// MAC'd `end`). Hashes alone cover them: anyone could have rewritten them. Not a finding
    /// (a live chain always has some), but what an auditor weighs: the next checkpoint
    /// authenticates them.
    pub unauthenticated_tail: BTreeMap<String, u64>,
}

struct Sealed {
    /// Position in the input, for order.
    line: usize,
    seq: u64,
    prev: String,
    hash: String,
    record: Map<String, Value>,
}

/// Checks the records of `lines` (one JSON record each; blank lines skipped), without a
/// checkpoint key.
pub fn verify<'a>(lines: impl IntoIterator<Item = &'a str>) -> Report {
    verify_with_key(lines, None)
}

/// [`verify`], and with `key` (the filter's checkpoint key) every checkpoint's MAC too.
pub fn verify_with_key<'a>(lines: impl IntoIterator<Item = &'a str>, key: Option<&[u8]>) -> Report {
    let mut report = Report::default();
    let mut chains: BTreeMap<String, Vec<Sealed>> = BTreeMap::new();
    for (line, text) in lines.into_iter().enumerate() {
        if text.trim().is_empty() {
            continue;
        }
        let text = text.trim();
        let parsed: Option<Map<String, Value>> = serde_json::from_str(text).ok();
        let Some(record) = parsed else {
            report.findings.push(Finding {
                kind: "unreadable",
                chain: String::new(),
                seq: None,
                detail: format!("line {} is not a JSON object", line + 1),
            });
            continue;
        };
        let link = record.get("chain").unwrap_or(&Value::Null);
        let (Some(id), Some(seq), Some(prev), Some(hash)) = (
            link["id"].as_str(),
            link["seq"].as_u64(),
            link["prev"].as_str(),
            record.get("hash").and_then(Value::as_str),
        ) else {
            report.findings.push(Finding {
                kind: "unreadable",
                chain: link["id"].as_str().unwrap_or_default().to_string(),
                seq: link["seq"].as_u64(),
                detail: format!("line {} has no chain id, seq, prev and hash", line + 1),
            });
            continue;
        };
        if canonical(&Value::Object(record.clone())) != text.as_bytes() {
            report.findings.push(Finding {
                kind: "non-canonical",
                chain: id.to_string(),
                seq: Some(seq),
                detail: format!("line {} is not the canonical form of its record", line + 1),
            });
        }
        let sealed = Sealed {
            line,
            seq,
            prev: prev.to_string(),
            hash: hash.to_string(),
            record: record.clone(),
        };
        chains.entry(id.to_string()).or_default().push(sealed);
    }
    for (id, mut records) in chains {
        // At-least-once delivery: the same record (seq and hash) more than once is one.
        let mut seen = std::collections::HashSet::new();
        records.retain(|r| seen.insert((r.seq, r.hash.clone())));
        report.chains.insert(id.clone(), records.len() as u64);
        check_chain(&id, &mut records, &mut report.findings);
        if let Some(key) = key {
            let (good, tail) = check_macs(&id, &records, key, &mut report.findings);
            report.macs_checked += good;
            if tail > 0 {
                report.unauthenticated_tail.insert(id.clone(), tail);
            }
        }
    }
    report
}

/// `missing-chain` findings: chains the proxy log says started (`audit-log: chain <id>
/// started`) of which no record was read: a chain deleted whole leaves no gap in the others.
pub fn missing_chains(report: &Report, started: &[String]) -> Vec<Finding> {
    let mut missing: Vec<&String> = started
        .iter()
        .filter(|id| !report.chains.contains_key(id.as_str()))
        .collect();
    missing.sort();
    missing.dedup();
    missing
        .into_iter()
        .map(|id| Finding {
            kind: "missing-chain",
            chain: id.clone(),
            seq: None,
            detail: "the proxy log says it started, and none of its records is here".into(),
        })
        .collect()
}

fn finding(kind: &'static str, chain: &str, seq: u64, detail: String) -> Finding {
    Finding {
        kind,
        chain: chain.to_string(),
        seq: Some(seq),
        detail,
    }
}

/// Each checkpoint's MAC under `key`: how many were good, and how many records follow the
/// last good one (not authenticated yet, unless it is the chain's `end`).
fn check_macs(id: &str, records: &[Sealed], key: &[u8], findings: &mut Vec<Finding>) -> (u64, u64) {
    let mut good = 0;
    let mut checkpoints = 0;
    let mut authenticated_to: Option<(u64, bool)> = None;
    for r in records {
        let kind = r
            .record
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !matches!(kind, "checkpoint" | "end") {
            continue;
        }
        checkpoints += 1;
        let text = |f: &str| r.record.get(f).and_then(Value::as_str).unwrap_or_default();
        let stated = crate::chain::Checkpoint {
            kind,
            chain: id,
            count: r.record.get("count").and_then(Value::as_u64).unwrap_or(0),
            head: text("head"),
            time: text("time"),
        };
        match r.record.get("mac").and_then(Value::as_str) {
            Some(mac) if mac == crate::chain::checkpoint_mac(key, &stated) => {
                good += 1;
                authenticated_to = Some((r.seq, kind == "end"));
            }
            Some(_) => findings.push(finding(
                "checkpoint-mac",
                id,
                r.seq,
                "its MAC does not match: forged, or made with another key".into(),
            )),
            None => findings.push(finding("checkpoint-mac", id, r.seq, "it has no MAC".into())),
        }
    }
    if checkpoints == 0 {
        findings.push(Finding {
            kind: "unauthenticated",
            chain: id.to_string(),
            seq: None,
            detail: "no checkpoint or end record: nothing in this chain is authenticated".into(),
        });
    }
    let tail = match authenticated_to {
        Some((_, true)) => 0,
        Some((seq, false)) => records.iter().filter(|r| r.seq > seq).count() as u64,
        None => records.len() as u64,
    };
    (good, tail)
}

fn check_chain(id: &str, records: &mut [Sealed], findings: &mut Vec<Finding>) {
    // In input order: a record after one with a higher seq was moved.
    let mut highest: Option<u64> = None;
    for r in records.iter() {
        if highest.is_some_and(|h| r.seq < h) {
            findings.push(finding(
                "reordered",
                id,
                r.seq,
                format!(
                    "comes after seq {} (line {})",
                    highest.unwrap_or(0),
                    r.line + 1
                ),
            ));
        }
        highest = Some(highest.map_or(r.seq, |h| h.max(r.seq)));
    }
    records.sort_by_key(|r| (r.seq, r.line));
    let mut expected_seq = records.first().map_or(0, |r| r.seq);
    let next = |seq: u64| seq.saturating_add(1);
    if expected_seq != 0 {
        findings.push(finding(
            "missing",
            id,
            0,
            format!("the chain starts at seq {expected_seq}"),
        ));
    }
    let mut previous: Option<&Sealed> = None;
    for r in records.iter() {
        if record_hash(&r.record) != r.hash {
            findings.push(finding(
                "tampered",
                id,
                r.seq,
                "its content does not match its hash".into(),
            ));
        }
        match previous {
            Some(p) if p.seq == r.seq => {
                findings.push(finding("duplicate", id, r.seq, "seen twice".into()));
                continue;
            }
            _ => {}
        }
        if r.seq > expected_seq {
            findings.push(finding(
                "missing",
                id,
                expected_seq,
                format!(
                    "{} record(s) before seq {} are missing",
                    r.seq - expected_seq,
                    r.seq
                ),
            ));
        }
        let linked = match previous {
            Some(p) if next(p.seq) == r.seq => r.prev == p.hash,
            None if r.seq == 0 => r.prev == NO_PREVIOUS,
            // After missing records the link cannot be checked.
            _ => true,
        };
        if !linked {
            findings.push(finding(
                "broken-link",
                id,
                r.seq,
                "prev is not the hash of the record before it".into(),
            ));
        }
        if r.record.get("kind").and_then(Value::as_str) == Some("gap") {
            let lost = r.record.get("dropped").and_then(Value::as_u64).unwrap_or(0);
            findings.push(finding(
                "gap",
                id,
                r.seq,
                format!("the filter dropped {lost} record(s) here (buffer full)"),
            ));
        }
        if previous.is_some_and(|p| p.record.get("kind").and_then(Value::as_str) == Some("end")) {
            findings.push(finding(
                "after-end",
                id,
                r.seq,
                "a record after the chain's end".into(),
            ));
        }
        expected_seq = next(r.seq);
        previous = Some(r);
    }
    // Checkpoints: the head they state must be the hash of the record they name.
    for r in records.iter() {
        if !matches!(
            r.record.get("kind").and_then(Value::as_str),
            Some("checkpoint" | "end")
        ) {
            continue;
        }
        let (Some(count), Some(covers), Some(head)) = (
            r.record.get("count").and_then(Value::as_u64),
            r.record.get("covers").and_then(Value::as_u64),
            r.record.get("head").and_then(Value::as_str),
        ) else {
            findings.push(finding(
                "checkpoint-mismatch",
                id,
                r.seq,
                "a checkpoint without covers and head".into(),
            ));
            continue;
        };
        if count != r.seq || next(covers) != count {
            findings.push(finding(
                "checkpoint-mismatch",
                id,
                r.seq,
                format!("it states {count} records before it, at seq {}", r.seq),
            ));
        }
        match records.iter().find(|c| c.seq == covers) {
            Some(c) if c.hash == head => {}
            Some(_) => findings.push(finding(
                "checkpoint-mismatch",
                id,
                r.seq,
                format!("its head is not the hash of seq {covers}"),
            )),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Chain;
    use serde_json::json;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    /// A chain of a genesis, `n` requests and a checkpoint, as lines.
    fn lines(n: u64) -> Vec<String> {
        let mut chain = Chain::new("vm-1".into());
        let mut out = vec![chain.seal(object(json!({"kind": "genesis"})))];
        for i in 0..n {
            out.push(chain.seal(object(json!({"kind": "request", "status": 200 + i}))));
        }
        let (count, covers, head) = (chain.len(), chain.len() - 1, chain.head().to_string());
        out.push(chain.seal(object(
            json!({"kind": "checkpoint", "count": count, "covers": covers, "head": head}),
        )));
        out
    }

    fn kinds(lines: &[String]) -> Vec<&'static str> {
        verify(lines.iter().map(String::as_str))
            .findings
            .iter()
            .map(|f| f.kind)
            .collect()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_intact_chain_has_no_findings() {
        let report = verify(lines(5).iter().map(String::as_str));
        assert_eq!(report.findings, []);
        assert_eq!(report.chains["vm-1"], 7);
    }

    /// [`lines`] with a MAC on its checkpoint.
    fn lines_with_mac(n: u64, key: &[u8]) -> Vec<String> {
        let mut chain = Chain::new("vm-1".into());
        let mut out = vec![chain.seal(object(json!({"kind": "genesis"})))];
        for i in 0..n {
            out.push(chain.seal(object(json!({"kind": "request", "status": 200 + i}))));
        }
        out.push(mac_checkpoint(&mut chain, "checkpoint", key));
        out
    }

    /// A checkpoint of `kind` with its MAC under `key`, sealed on `chain`.
    fn mac_checkpoint(chain: &mut Chain, kind: &str, key: &[u8]) -> String {
        let (count, head) = (chain.len(), chain.head().to_string());
        let time = "2026-11-29T19:58:40.123Z";
        let id = chain.id().to_string();
        let stated = crate::chain::Checkpoint {
            kind,
            chain: &id,
            count,
            head: &head,
            time,
        };
        let mac = crate::chain::checkpoint_mac(key, &stated);
        chain.seal(object(
            json!({"kind": kind, "count": count, "covers": count - 1,
            "head": head, "time": time, "mac": mac}),
        ))
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn with_the_key_a_rewritten_chain_is_told_from_the_real_one() {
        let key = b"0123456789abcdef0123456789abcdef";
        let real = lines_with_mac(3, key);
        let report = verify_with_key(real.iter().map(String::as_str), Some(key));
        assert!(report.unauthenticated_tail.is_empty());
        assert_eq!((report.findings, report.macs_checked), (vec![], 1));
        // Whoever rewrites a record and reseals the whole chain has consistent hashes, but
        // without the key the checkpoint cannot agree.
        let forged = lines(3);
        assert_eq!(kinds(&forged), Vec::<&str>::new());
        let found: Vec<_> = verify_with_key(forged.iter().map(String::as_str), Some(key))
            .findings
            .iter()
            .map(|f| f.kind)
            .collect();
        assert_eq!(found, ["checkpoint-mac"]);
        let other_key = verify_with_key(
            real.iter().map(String::as_str),
            Some(b"another key, 32 bytes long......"),
        );
        assert_eq!(other_key.findings.len(), 1);
        // A chain stripped of its checkpoints authenticates nothing.
        let stripped = &real[..real.len() - 1];
        let found: Vec<_> = verify_with_key(stripped.iter().map(String::as_str), Some(key))
            .findings
            .iter()
            .map(|f| f.kind)
            .collect();
        assert_eq!(found, ["unauthenticated"]);
    }

    /// `lines` sealed again on a new chain `id` (their own chain fields and hashes dropped):
    /// what someone without the key can do.
    fn resealed(lines: &[String], id: &str) -> (Chain, Vec<String>) {
        let mut chain = Chain::new(id.into());
        let mut out = Vec::new();
        for line in lines {
            let mut record: Map<String, Value> = serde_json::from_str(line).unwrap();
            record.remove("hash");
            record.remove("chain");
            out.push(chain.seal(record));
        }
        (chain, out)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn with_the_key_a_checkpoint_cannot_pass_for_the_end_and_the_tail_is_told() {
        let key = b"0123456789abcdef0123456789abcdef";
        // Records after the last checkpoint are covered by hashes only: told, not a finding.
        let (mut chain, mut live) = resealed(&lines_with_mac(3, key), "vm-1");
        live.push(chain.seal(object(json!({"kind": "request", "status": 201}))));
        let report = verify_with_key(live.iter().map(String::as_str), Some(key));
        assert_eq!(report.findings, []);
        assert_eq!(report.unauthenticated_tail["vm-1"], 1);
        // A chain cut after a checkpoint that is relabelled `end` and resealed: the MAC
        // covers the kind.
        let mut cut = lines_with_mac(3, key);
        let n = cut.len();
        cut[n - 1] = cut[n - 1].replace("\"kind\":\"checkpoint\"", "\"kind\":\"end\"");
        let (_, cut) = resealed(&cut, "vm-1");
        let found: Vec<_> = verify_with_key(cut.iter().map(String::as_str), Some(key))
            .findings
            .iter()
            .map(|f| f.kind)
            .collect();
        assert_eq!(found, ["checkpoint-mac"]);
        // A chain that closes with a good `end` has no tail.
        let mut chain = Chain::new("vm-2".into());
        let mut closed = vec![chain.seal(object(json!({"kind": "genesis"})))];
        closed.push(mac_checkpoint(&mut chain, "end", key));
        let report = verify_with_key(closed.iter().map(String::as_str), Some(key));
        assert_eq!(report.findings, []);
        assert!(report.unauthenticated_tail.is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn each_kind_of_tampering_is_named() {
        let intact = lines(5);
        let mut tampered = intact.clone();
        tampered[2] = tampered[2].replace("\"status\":201", "\"status\":500");
        assert_eq!(kinds(&tampered), ["tampered"]);

        let mut deleted = intact.clone();
        deleted.remove(3);
        assert_eq!(kinds(&deleted), ["missing"]);

        let mut reordered = intact.clone();
        reordered.swap(2, 3);
        assert_eq!(kinds(&reordered), ["reordered"]);

        let mut replaced = intact.clone();
        let forged: Value = serde_json::from_str(&replaced[2]).unwrap();
        let mut forged = object(forged);
        forged.insert("status".into(), json!(999));
        let hash = crate::chain::record_hash(&forged);
        forged.insert("hash".into(), json!(hash));
        replaced[2] = Value::Object(forged).to_string();
        assert_eq!(
            kinds(&replaced),
            ["broken-link"],
            "rehashed, but the next link breaks"
        );

        let mut garbage = intact;
        garbage.push("not json".into());
        assert_eq!(kinds(&garbage), ["unreadable"]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_resent_record_is_one_and_a_lying_checkpoint_or_odd_text_is_named() {
        let intact = lines(3);
        let mut resent = intact.clone();
        resent.insert(3, intact[1].clone());
        resent.insert(4, intact[2].clone());
        assert_eq!(kinds(&resent), [] as [&str; 0]);

        let mut chain = Chain::new("vm-2".into());
        let mut out = vec![chain.seal(object(json!({"kind": "genesis"})))];
        let head = chain.head().to_string();
        out.push(chain.seal(object(
            json!({"kind": "checkpoint", "count": 5, "covers": 0, "head": head}),
        )));
        assert_eq!(kinds(&out), ["checkpoint-mismatch"]);

        let mut chain = Chain::new("vm-4".into());
        let ended = [
            chain.seal(object(json!({"kind": "genesis"}))),
            chain.seal(object(json!({"kind": "end", "count": 1, "covers": 0,
                "head": chain.head().to_string()}))),
            chain.seal(object(json!({"kind": "request", "status": 200}))),
        ];
        assert_eq!(kinds(&ended), ["after-end"]);

        let mut spaced = intact;
        spaced[1] = spaced[1].replacen(':', ": ", 1);
        assert_eq!(kinds(&spaced), ["non-canonical"]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_gap_the_filter_recorded_is_reported() {
        let mut chain = Chain::new("vm-3".into());
        let out = [
            chain.seal(object(json!({"kind": "genesis"}))),
            chain.seal(object(json!({"kind": "gap", "dropped": 12}))),
        ];
        let report = verify(out.iter().map(String::as_str));
        assert_eq!(report.findings.len(), 1);
        assert_eq!(report.findings[0].kind, "gap");
        assert!(report.findings[0].detail.contains("12"));
    }
}
