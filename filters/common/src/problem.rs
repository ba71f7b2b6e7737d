//! RFC 9457 problem details: the one error shape every filter answers a client with.
//!
//! Bodies are `application/problem+json`. A problem may name the offending header, and its
//! detail may quote a short, sanitised [`excerpt`] of what the client sent — never more, so
//! a rejected request cannot make the proxy echo a secret or a card number back.

use serde::Serialize;

/// Content type of every problem body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// Problem type URIs are URNs under this prefix: stable identifiers a client can switch on,
/// not links (RFC 9457 allows non-dereferenceable type URIs).
pub const TYPE_PREFIX: &str = "urn:banking-filters:problem:";

/// Most characters of client input an excerpt shows before it is cut.
pub const EXCERPT_MAX_CHARS: usize = 12;

/// Marks an excerpt that was cut; the whole excerpt stays within 15 characters.
pub const TRUNCATION_MARK: &str = "...";

/// What an excerpt shows instead of a value that looks like a payment card number.
pub const REDACTED: &str = "[redacted]";

/// A digit run this long may be a primary account number (PANs are 13 to 19 digits).
const PAN_LIKE_DIGITS: usize = 13;

/// One RFC 9457 problem. Serialises with the standard members (`type`, `title`, `status`,
/// `detail`) plus the extensions `header` (the offending header's name),
/// `correlationId` (so a support ticket can quote it) and `limit` (the refusing limit's name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(rename = "correlationId", skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The configured name of the limit that refused the request (rate-limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

impl Problem {
    /// A problem of type `TYPE_PREFIX + slug`, e.g. slug `missing-header`.
    pub fn new(
        status: u16,
        slug: &str,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            type_uri: format!("{TYPE_PREFIX}{slug}"),
            title: title.into(),
            status,
            detail: detail.into(),
            header: None,
            correlation_id: None,
            limit: None,
        }
    }

    /// Names the limit that refused the request.
    pub fn with_limit(mut self, name: impl Into<String>) -> Self {
        self.limit = Some(name.into());
        self
    }

    /// Names the header the problem is about.
    pub fn with_header(mut self, name: impl Into<String>) -> Self {
        self.header = Some(name.into());
        self
    }

    /// Attaches the request's correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// The `application/problem+json` body.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail; the fallback keeps the
        // response well-formed even so.
        serde_json::to_vec(self).unwrap_or_else(|_| {
            format!(
                "{{\"type\":\"about:blank\",\"title\":\"Error\",\"status\":{}}}",
                self.status
            )
            .into_bytes()
        })
    }
}

/// A short, safe excerpt of a client-supplied value for a problem detail or a log line.
///
/// At most [`EXCERPT_MAX_CHARS`] characters, printable ASCII only (anything else becomes
/// `?`), followed by [`TRUNCATION_MARK`] when the value was longer. A value holding a run of
/// 13 or more digits may be a card number and is shown as [`REDACTED`] instead.
pub fn excerpt(value: &[u8]) -> String {
    if has_pan_like_digit_run(value) {
        return REDACTED.to_string();
    }
    let mut out: String = value
        .iter()
        .take(EXCERPT_MAX_CHARS)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect();
    if value.len() > EXCERPT_MAX_CHARS {
        out.push_str(TRUNCATION_MARK);
    }
    out
}

fn has_pan_like_digit_run(value: &[u8]) -> bool {
    let mut run = 0usize;
    for &b in value {
        // Separators inside a card number do not break the run: "4111 1111-1111 1111".
        if b.is_ascii_digit() {
            run += 1;
            if run >= PAN_LIKE_DIGITS {
                return true;
            }
        } else if b != b' ' && b != b'-' {
            run = 0;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn serialises_standard_members_and_header_extension() {
        let p = Problem::new(
            400,
            "missing-header",
            "Missing header",
            "x-customer-id is required",
        )
        .with_header("x-customer-id");
        let v: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(v["type"], "urn:banking-filters:problem:missing-header");
        assert_eq!(v["title"], "Missing header");
        assert_eq!(v["status"], 400);
        assert_eq!(v["detail"], "x-customer-id is required");
        assert_eq!(v["header"], "x-customer-id");
        assert!(v.get("correlationId").is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn carries_correlation_id_when_known() {
        let p = Problem::new(400, "x", "t", "d").with_correlation_id("abc-123");
        let v: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(v["correlationId"], "abc-123");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn excerpt_keeps_short_printable_values_whole() {
        assert_eq!(excerpt(b"CUST-42"), "CUST-42");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn excerpt_cuts_long_values_and_marks_the_cut() {
        let e = excerpt(b"abcdefghijklmnopqrstuvwxyz");
        assert_eq!(e, "abcdefghijkl...");
        assert!(e.len() <= 15);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn excerpt_replaces_control_and_non_ascii_bytes() {
        assert_eq!(excerpt(b"a\x00b\xffc\n"), "a?b?c?");
        assert_eq!(excerpt("é".as_bytes()), "??");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn excerpt_redacts_card_number_like_values() {
        assert_eq!(excerpt(b"4111111111111111"), REDACTED);
        assert_eq!(excerpt(b"4111 1111 1111 1111"), REDACTED);
        assert_eq!(excerpt(b"x4111-1111-1111-1111y"), REDACTED);
        // A short digit run is an ordinary id.
        assert_eq!(excerpt(b"123456789012"), "123456789012");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn excerpt_of_json_breaking_characters_stays_valid_json() {
        let p = Problem::new(400, "x", "t", format!("got \"{}\"", excerpt(b"\"}\\")));
        let v: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(v["detail"], "got \"\"}\\\"");
    }
}
