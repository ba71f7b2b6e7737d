//! The request record: who did what, to which resource, when, from where, and whether it
//! succeeded (PCI DSS 10.2.2), for every request including refused ones (10.2.1.4). Built from
//! what the shell read in `on_log` ([`RequestFacts`]); every piece of client text goes
//! through [`crate::mask`] first, and who the caller is comes only from the verified identity,
//! never from a header (a header's value is kept apart, masked, as `claimed`).

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::body::Unread;
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
    /// Envoy's name of the route the request took (`route_name`).
    pub route: Option<String>,
    /// On a route configured for it: the body's banking context, masked (see
    /// [`crate::body`]), or why there is none.
    pub body: Option<Result<Map<String, Value>, Unread>>,
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

/// The trace context as recorded: a valid `traceparent`'s ids, unless masking would change
/// them (a client could pass a card number off as a span id): then none.
pub fn recorded_trace(traceparent: &str) -> Option<(String, String)> {
    let (trace, span) = trace_context(traceparent)?;
    let plain = |id: &str| matches!(mask::mask(id, &PanMasking::Truncate), Cow::Borrowed(_));
    (plain(&trace) && plain(&span)).then_some((trace, span))
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

/// Longest client text kept in a record field; longer is cut, marked `…`.
pub const MAX_FIELD_CHARS: usize = 512;
/// Longest recorded path (with its query).
pub const MAX_PATH_CHARS: usize = 2048;

/// Percent-decoded text (`+` as a space when `form`), so masking sees what the client
/// meant: `4111%201111...` is a card number too. Bytes that do not decode to UTF-8 are kept
/// as they came.
pub fn percent_decode(text: &str, form: bool) -> Cow<'_, str> {
    if !(text.contains('%') || form && text.contains('+')) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |k: usize| bytes.get(k).and_then(|c| char::from(*c).to_digit(16));
        match b {
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 3;
                    continue;
                }
                _ => out.push(b),
            },
            b'+' if form => out.push(b' '),
            _ => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(_) => Cow::Borrowed(text),
    }
}

/// `text` cut to `max` characters.
fn capped(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or_default()),
        None => text.to_string(),
    }
}

/// Client text as recorded: decoded, masked, capped.
pub fn client_text(text: &str, policy: &RecordPolicy) -> String {
    masked_text(text, &policy.pans)
}

/// Text from a JSON body as recorded: as sent, unless masking finds something in it (read
/// percent-decoded too, so an encoded card number is found): then masked, decoded. Capped.
pub fn masked_verbatim(text: &str, pans: &PanMasking) -> String {
    let decoded = percent_decode(text, false);
    match mask::mask(&decoded, pans) {
        Cow::Borrowed(_) => capped(text, MAX_FIELD_CHARS),
        Cow::Owned(masked) => capped(&masked, MAX_FIELD_CHARS),
    }
}

/// [`client_text`] with only the card policy.
pub fn masked_text(text: &str, pans: &PanMasking) -> String {
    capped(
        &mask::mask(&percent_decode(text, false), pans),
        MAX_FIELD_CHARS,
    )
}

/// The path as recorded: decoded and masked, its query dropped or masked by parameter name
/// (names compared decoded).
pub fn recorded_path(path: &str, policy: &RecordPolicy) -> String {
    let (route, query) = match path.split_once('?') {
        Some((route, query)) => (route, Some(query)),
        None => (path, None),
    };
    let mut out = mask::mask(&percent_decode(route, false), &policy.pans).into_owned();
    if let (Some(query), Query::Mask { redacted }) = (query, &policy.query) {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(name, true);
            out.push_str(&mask::mask(&name, &policy.pans));
            if redacted.iter().any(|r| r.eq_ignore_ascii_case(&name)) {
                out.push_str("=***");
            } else if pair.contains('=') {
                out.push('=');
                out.push_str(&mask::mask(&percent_decode(value, true), &policy.pans));
            }
        }
    }
    capped(&out, MAX_PATH_CHARS)
}

/// The request record, not yet on a chain.
pub fn request_record(facts: &RequestFacts, policy: &RecordPolicy) -> Map<String, Value> {
    let client_field =
        |s: &Option<String>| s.as_deref().map(|s| Value::String(client_text(s, policy)));
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
    put("claimedCustomer", client_field(&facts.claimed_customer));
    put("operation", client_field(&facts.operation));
    put("transactionId", client_field(&facts.transaction_id));
    // A client may set these too (a correlation id banking-headers accepted, a request id
    // Envoy kept): masked like any client text.
    put("correlationId", client_field(&facts.correlation_id));
    put("requestId", client_field(&facts.request_id));
    put("method", Some(client_text(&facts.method, policy).into()));
    put("path", Some(recorded_path(&facts.path, policy).into()));
    put("route", text(&facts.route));
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
    if let Some((trace, span)) = facts.traceparent.as_deref().and_then(recorded_trace) {
        put("traceId", Some(trace.into()));
        put("spanId", Some(span.into()));
    }
    put("deniedBy", text(&facts.denied_by));
    put("denyReason", text(&facts.deny_reason));
    match &facts.body {
        Some(Ok(context)) => put("body", Some(Value::Object(context.clone()))),
        Some(Err(unread)) => put("bodyUnread", Some(unread.as_str().into())),
        None => {}
    }
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
        // Percent-encoded and form-encoded card numbers are card numbers.
        assert_eq!(
            recorded_path(
                "/x/4111%201111%201111%201111?q=4111+1111+1111+1111&%74oken=s",
                &policy()
            ),
            "/x/411111******1111?q=411111******1111&token=***"
        );
        assert!(
            recorded_trace("00-4bf92f3577b34da6a3ce929d0e0e4736-4111111111111111-01").is_none()
        );
        assert_eq!(
            client_text(&"9".repeat(600), &policy()).chars().count(),
            MAX_FIELD_CHARS + 1
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
