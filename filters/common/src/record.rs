//! Records in shared data that a neighbour cannot corrupt unnoticed: keys namespaced by
//! filter and instance, and values in a versioned, time-stamped envelope validated on read.
//!
//! Istio sets no `vm_id`, so every WasmPlugin on a proxy shares one shared-data key space.
//! Co-resident plugins are trusted code (any of them can call any hostcall), but one's
//! mistake (a key that collides, an old record format, a clock gone wrong) must not corrupt
//! another's state. So:
//! - every key starts with `<filter>/<instance>/`, where `instance` is a name each filter's
//!   config requires ([`check_instance`]); `plugin_name` and `plugin_root_id` are not used,
//!   since istiod leaves the root id empty and changed the name's format in Istio 1.30;
//! - every value is `bwf` + envelope version + the record's schema version + the time it was
//!   written + the payload ([`encode`]); [`decode`] refuses anything else, a schema version
//!   it does not know, and a record stamped in the future beyond a small skew;
//! - what a caller does with a refused record is its own policy, stated where it reads: a
//!   cache treats it as absent (and refetches), state that guards money fails closed.

/// Envelope magic and version: `bwf` then 1.
const MAGIC: [u8; 4] = *b"bwf\x01";
/// Bytes before the payload: magic, schema version (u16), written-at milliseconds (u64).
pub const HEADER_BYTES: usize = 4 + 2 + 8;
/// How far in the future a record may be stamped before it is refused: the workers of one
/// proxy share a clock, so more than this is a bug or a neighbour's record, not skew.
pub const MAX_FUTURE_SKEW_MS: u64 = 5_000;

/// The namespace of one filter instance's keys.
pub fn key_prefix(filter: &str, instance: &str) -> String {
    format!("{filter}/{instance}/")
}

/// Checks a config's `instance`: 1 to 63 lower-case letters, digits and `-`, starting with a
/// letter and not ending with `-` (a Kubernetes name, so the WasmPlugin's own name fits).
pub fn check_instance(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let well_formed = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes.last() != Some(&b'-')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be 1 to 63 lower-case letters, digits and '-', starting with a \
             letter (e.g. the WasmPlugin's name); it names this plugin's shared data"
        ))
    }
}

/// Why a stored value was not accepted as a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// Not an envelope: too short or another magic.
    Malformed,
    /// An envelope of another schema version (an older or newer build, or another record).
    UnknownVersion(u16),
    /// Stamped more than [`MAX_FUTURE_SKEW_MS`] after `now`.
    FromTheFuture,
}

impl RecordError {
    /// For the log line: what was wrong, without the value.
    pub fn describe(self) -> String {
        match self {
            RecordError::Malformed => "not a record of this filter".to_string(),
            RecordError::UnknownVersion(v) => format!("unknown record version {v}"),
            RecordError::FromTheFuture => {
                "stamped in the future (a neighbour's record, or the clock stepped back)"
                    .to_string()
            }
        }
    }
}

/// A record's envelope around `payload`.
pub fn encode(version: u16, written_at_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&written_at_ms.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The time a record was written and its payload, if `bytes` is a record of `version`
/// stamped no later than `now_ms` plus the skew.
pub fn decode(bytes: &[u8], version: u16, now_ms: u64) -> Result<(u64, &[u8]), RecordError> {
    let (magic, rest) = bytes.split_at_checked(4).ok_or(RecordError::Malformed)?;
    if magic != MAGIC {
        return Err(RecordError::Malformed);
    }
    let (v, rest) = rest.split_at_checked(2).ok_or(RecordError::Malformed)?;
    let (stamp, payload) = rest.split_at_checked(8).ok_or(RecordError::Malformed)?;
    let found = u16::from_be_bytes(v.try_into().map_err(|_| RecordError::Malformed)?);
    if found != version {
        return Err(RecordError::UnknownVersion(found));
    }
    let written_at_ms = u64::from_be_bytes(stamp.try_into().map_err(|_| RecordError::Malformed)?);
    if written_at_ms > now_ms.saturating_add(MAX_FUTURE_SKEW_MS) {
        return Err(RecordError::FromTheFuture);
    }
    Ok((written_at_ms, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    const NOW: u64 = 1_900_000_000_000;

    #[wasm_bindgen_test(unsupported = test)]
    fn a_record_round_trips_with_its_stamp_and_payload() {
        let bytes = encode(3, NOW - 10, b"{\"keys\":[]}");
        assert_eq!(bytes.len(), HEADER_BYTES + 11);
        assert_eq!(
            decode(&bytes, 3, NOW),
            Ok((NOW - 10, &b"{\"keys\":[]}"[..]))
        );
        // Within the skew a slightly later stamp is fine: workers' clocks are one clock.
        let soon = encode(3, NOW + MAX_FUTURE_SKEW_MS, b"");
        assert!(decode(&soon, 3, NOW).is_ok());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn anything_else_is_refused_and_says_why() {
        assert_eq!(decode(b"", 1, NOW), Err(RecordError::Malformed));
        assert_eq!(
            decode(b"jwks1 123\n{}", 1, NOW),
            Err(RecordError::Malformed)
        );
        assert_eq!(decode(b"bwf\x01\x00", 1, NOW), Err(RecordError::Malformed));
        let short = &encode(1, NOW, b"")[..HEADER_BYTES - 1];
        assert_eq!(decode(short, 1, NOW), Err(RecordError::Malformed));
        assert_eq!(
            decode(&encode(2, NOW, b"x"), 1, NOW),
            Err(RecordError::UnknownVersion(2))
        );
        assert_eq!(
            decode(&encode(1, NOW + MAX_FUTURE_SKEW_MS + 1, b"x"), 1, NOW),
            Err(RecordError::FromTheFuture)
        );
        assert_eq!(
            decode(&encode(1, u64::MAX, b"x"), 1, NOW),
            Err(RecordError::FromTheFuture)
        );
        assert!(RecordError::UnknownVersion(9).describe().contains('9'));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn instance_names_are_kubernetes_names() {
        for good in ["jwt-auth", "a", "payments-gw-2"] {
            assert_eq!(check_instance(good), Ok(()), "{good}");
        }
        let long = "a".repeat(64);
        for bad in ["", "Jwt", "2fa", "a-", "a_b", "a/b", "a.b", long.as_str()] {
            assert!(check_instance(bad).is_err(), "{bad}");
        }
        assert_eq!(key_prefix("jwt-auth", "edge"), "jwt-auth/edge/");
    }
}
