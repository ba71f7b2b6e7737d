//! The request record: who did what, to which resource, when, from where, and whether it
//! succeeded (PCI DSS 10.2.2), for every request including refused ones (10.2.1.4). Built from
//! what the shell read in `on_log` ([`RequestFacts`]); every piece of client text goes
//! through [`crate::mask`] first, and who the caller is comes only from the verified identity,
//! never from a header (a header's value is kept apart, masked, as `claimed`).

use serde_json::{Map, Value};

use crate::mask::{self, PanMasking};

/// What the shell knows of a finished request. Text a client chose is marked so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// Wall clock at the end of the request, Unix milliseconds.
    pub time_ms: u64,
    /// From the verified identity (jwt-auth's filter state), when there is one.
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub customer: Option<String>,
    pub client: Option<String>,
    pub jti: Option<String>,
    /// Client text: the `x-customer-id` header, recorded masked as what the caller claimed.
    pub claimed_customer: Option<String>,
    /// Client text: `x-banking-operation`, `x-transaction-id`.
    pub operation: Option<String>,
    pub transaction_id: Option<String>,
    /// The correlation id banking-headers settled (generated, or the client's, checked).
    pub correlation_id: Option<String>,
    /// Envoy's `x-request-id`.
    pub request_id: Option<String>,
    pub method: String,
    /// Client text: the normalised path, query string included (see [`Query`]).
    pub path: String,
    pub status: u16,
    /// Envoy's `response.flags` and `response.code_details`.
    pub response_flags: Option<String>,
    pub code_details: Option<String>,
    pub duration_ms: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub source_address: Option<String>,
    /// The mTLS peer's URI SAN, when the connection had one.
    pub peer_identity: Option<String>,
    pub upstream_host: Option<String>,
    /// Client text: the W3C `traceparent` header.
    pub traceparent: Option<String>,
    /// The filter that refused the request and its reason (`banking.decision.*`).
    pub denied_by: Option<String>,
    pub deny_reason: Option<String>,
}

/// What becomes of the query string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Query {
    /// Dropped from the recorded path (default).
    #[default]
    Drop,
    /// Kept, each value masked; the values of these parameter names replaced by `***`.
    Mask { redacted: Vec<String> },
}

/// How the record is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordPolicy {
    pub pans: PanMasking,
    pub query: Query,
}

/// success: 1xx-3xx; denied: a 401, 403 or 429, or any refusal a filter recorded; failure:
/// everything else.
pub fn outcome(status: u16, denied_by: Option<&str>) -> &'static str {
    match status {
        401 | 403 | 429 => "denied",
        _ if denied_by.is_some() => "denied",
        100..=399 => "success",
        _ => "failure",
    }
}

/// Trace and span ids of a valid `traceparent` (version 00, non-zero ids), in lower-case hex.
pub fn trace_context(traceparent: &str) -> Option<(String, String)> {
    let mut parts = traceparent.trim().split('-');
    let (Some(version), Some(trace), Some(span), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    (version == "00"
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && !zero(trace)
        && !zero(span)
        && parts.next().is_none())
    .then(|| (trace.to_string(), span.to_string()))
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-29T19:58:40.123Z`.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let (days, ms_of_day) = (unix_ms / 86_400_000, unix_ms % 86_400_000);
    // Howard Hinnant's civil-from-days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

/// The path as recorded: masked, its query dropped or masked by parameter name.
pub fn recorded_path(path: &str, policy: &RecordPolicy) -> String {
    let (route, query) = match path.split_once('?') {
        Some((route, query)) => (route, Some(query)),
        None => (path, None),
    };
    let mut out = mask::mask(route, &policy.pans).into_owned();
    if let (Some(query), Query::Mask { redacted }) = (query, &policy.query) {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if redacted.iter().any(|r| r.eq_ignore_ascii_case(name)) => {
                    out.push_str(&mask::mask(name, &policy.pans));
                    out.push_str("=***");
                }
                _ => out.push_str(&mask::mask(pair, &policy.pans)),
            }
        }
    }
    out
}

/// The request record, not yet on a chain.
pub fn request_record(facts: &RequestFacts, policy: &RecordPolicy) -> Map<String, Value> {
    let client_text = |s: &Option<String>| {
        s.as_deref()
            .map(|s| Value::String(mask::mask(s, &policy.pans).into_owned()))
    };
    let mut record = Map::new();
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            record.insert(name.to_string(), value);
        }
    };
    let text = |s: &Option<String>| s.clone().map(Value::String);
    put("kind", Some("request".into()));
    put("time", Some(rfc3339_ms(facts.time_ms).into()));
    let mut who = Map::new();
    for (name, value) in [
        ("issuer", &facts.issuer),
        ("subject", &facts.subject),
        ("customer", &facts.customer),
        ("client", &facts.client),
        ("jti", &facts.jti),
    ] {
        if let Some(v) = value {
            who.insert(name.to_string(), Value::String(v.clone()));
        }
    }
    put("verified", Some(Value::Object(who)));
    put("claimedCustomer", client_text(&facts.claimed_customer));
    put("operation", client_text(&facts.operation));
    put("transactionId", client_text(&facts.transaction_id));
    put("correlationId", text(&facts.correlation_id));
    put("requestId", text(&facts.request_id));
    put("method", Some(facts.method.clone().into()));
    put("path", Some(recorded_path(&facts.path, policy).into()));
    put("status", Some(facts.status.into()));
    put(
        "outcome",
        Some(outcome(facts.status, facts.denied_by.as_deref()).into()),
    );
    put("responseFlags", text(&facts.response_flags));
    put("codeDetails", text(&facts.code_details));
    put("durationMs", Some(facts.duration_ms.into()));
    put("requestBytes", Some(facts.request_bytes.into()));
    put("responseBytes", Some(facts.response_bytes.into()));
    put("sourceAddress", text(&facts.source_address));
    put("peerIdentity", text(&facts.peer_identity));
    put("upstreamHost", text(&facts.upstream_host));
    if let Some((trace, span)) = facts.traceparent.as_deref().and_then(trace_context) {
        put("traceId", Some(trace.into()));
        put("spanId", Some(span.into()));
    }
    put("deniedBy", text(&facts.denied_by));
    put("denyReason", text(&facts.deny_reason));
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn policy() -> RecordPolicy {
        RecordPolicy {
            pans: PanMasking::Truncate,
            query: Query::Mask {
                redacted: vec!["token".into()],
            },
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn times_are_rfc_3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_982_320_123), "2026-11-29T19:58:40.123Z");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn only_a_valid_traceparent_gives_trace_and_span_ids() {
        assert_eq!(
            trace_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                "00f067aa0ba902b7".into()
            ))
        );
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert_eq!(trace_context(bad), None, "{bad}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn client_text_is_masked_and_the_query_follows_the_policy() {
        assert_eq!(
            recorded_path(
                "/cards/4111111111111111/limits?token=abc&iban=DE89370400440532013000",
                &policy()
            ),
            "/cards/411111******1111/limits?token=***&iban=DE****************3000"
        );
        let dropped = RecordPolicy {
            query: Query::Drop,
            ..policy()
        };
        assert_eq!(recorded_path("/payments?token=abc", &dropped), "/payments");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_refused_request_is_denied_and_names_who_refused_it() {
        let facts = RequestFacts {
            time_ms: 1_795_982_320_123,
            method: "POST".into(),
            path: "/payments".into(),
            status: 401,
            claimed_customer: Some("CUST-00012345".into()),
            denied_by: Some("jwt-auth".into()),
            deny_reason: Some("token-expired".into()),
            ..RequestFacts::default()
        };
        let record = request_record(&facts, &policy());
        assert_eq!(record["outcome"], "denied");
        assert_eq!(record["deniedBy"], "jwt-auth");
        assert_eq!(record["verified"], Value::Object(Map::new()));
        assert_eq!(record["claimedCustomer"], "CUST-00012345");
        assert_eq!(outcome(201, None), "success");
        assert_eq!(outcome(503, None), "failure");
        assert_eq!(outcome(400, Some("banking-headers")), "denied");
    }
}
