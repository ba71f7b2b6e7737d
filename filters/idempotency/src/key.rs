//! The `Idempotency-Key` request header (draft-ietf-httpapi-idempotency-key-header-07): an
//! RFC 9651 Item whose value is a String (`"8e03978e-40d5-43e8-bc93-6894a57f9324"`), and,
//! for clients written against Stripe's API, the same characters as a bare value.
//!
//! Anything else is refused rather than guessed at: a repeated header, a list (a `,` outside
//! the quotes), parameters (`;`), a token or number in place of a string, escapes other than
//! `\"` and `\\`, characters outside printable ASCII, or a length outside the configured
//! bounds. Every refusal is a 400 the client can act on ([`KeyDefect::detail`]).

use banking_filter_common::headers::{self, HeaderPairs, Lookup};

/// The header's name, as Envoy hands it over (lower case).
pub const HEADER: &str = "idempotency-key";

/// A client's key, as it chose it (the quotes and escapes undone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the configuration allows of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyBounds {
    pub min_len: usize,
    pub max_len: usize,
}

/// Why a request's key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDefect {
    /// The route requires a key and the request has none.
    Missing,
    /// More than one `Idempotency-Key` header.
    Repeated,
    /// Not a single string: a list, parameters, a token, a number.
    NotAString,
    /// A string that does not follow RFC 9651: an unterminated quote, a bad escape, a byte
    /// outside printable ASCII.
    Malformed,
    /// Shorter or longer than the configured bounds.
    Length,
}

impl KeyDefect {
    pub fn slug(self) -> &'static str {
        match self {
            KeyDefect::Missing => "idempotency-key-missing",
            KeyDefect::Repeated | KeyDefect::NotAString | KeyDefect::Malformed => {
                "idempotency-key-invalid"
            }
            KeyDefect::Length => "idempotency-key-invalid",
        }
    }

    /// What the client should change: never quotes the value (it is the client's own, and
    /// may be anything).
    pub fn detail(self, bounds: KeyBounds) -> String {
        match self {
            KeyDefect::Missing => {
                "this route requires an Idempotency-Key header, e.g. Idempotency-Key: \"<uuid>\""
                    .to_string()
            }
            KeyDefect::Repeated => "send exactly one Idempotency-Key header".to_string(),
            KeyDefect::NotAString => {
                "Idempotency-Key must be one quoted string (RFC 9651), without parameters"
                    .to_string()
            }
            KeyDefect::Malformed => {
                "Idempotency-Key must be printable ASCII, quoted, with only \\\" and \\\\ escaped"
                    .to_string()
            }
            KeyDefect::Length => format!(
                "Idempotency-Key must be {} to {} characters",
                bounds.min_len, bounds.max_len
            ),
        }
    }
}

/// The request's key: `Ok(None)` when it has none (the caller decides whether the route needs
/// one).
pub fn parse(
    headers: &HeaderPairs,
    bounds: KeyBounds,
) -> Result<Option<IdempotencyKey>, KeyDefect> {
    let raw = match headers::lookup(headers, HEADER) {
        Lookup::Absent => return Ok(None),
        Lookup::One(value) => value,
        Lookup::Repeated(_) => return Err(KeyDefect::Repeated),
    };
    let text = trim_ows(raw);
    let key = match text.first() {
        Some(b'"') => parse_sf_string(text)?,
        Some(_) => parse_bare(text)?,
        None => return Err(KeyDefect::Length),
    };
    if !(bounds.min_len..=bounds.max_len).contains(&key.len()) {
        return Err(KeyDefect::Length);
    }
    Ok(Some(IdempotencyKey(key)))
}

/// Leading and trailing spaces and tabs, which HTTP allows around a field value.
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    value.get(start..end).unwrap_or_default()
}

/// RFC 9651 §4.2.5, for an Item that must be exactly one String.
fn parse_sf_string(text: &[u8]) -> Result<String, KeyDefect> {
    let mut out = String::with_capacity(text.len());
    let mut bytes = text.iter().skip(1);
    loop {
        match bytes.next() {
            None => return Err(KeyDefect::Malformed),
            Some(b'\\') => match bytes.next() {
                Some(&c @ (b'"' | b'\\')) => out.push(char::from(c)),
                _ => return Err(KeyDefect::Malformed),
            },
            Some(b'"') => break,
            Some(&c) if (0x20..=0x7e).contains(&c) => out.push(char::from(c)),
            Some(_) => return Err(KeyDefect::Malformed),
        }
    }
    // After the string: nothing (a `;` would start parameters, a `,` a list).
    match bytes.next() {
        None => Ok(out),
        Some(_) => Err(KeyDefect::NotAString),
    }
}

/// A Stripe-style bare key: visible ASCII except the characters that would make it a list,
/// parameters or a quoted string.
fn parse_bare(text: &[u8]) -> Result<String, KeyDefect> {
    if text.iter().any(|b| matches!(b, b',' | b';' | b'"' | b'\\')) {
        return Err(KeyDefect::NotAString);
    }
    if !text.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(KeyDefect::Malformed);
    }
    Ok(text.iter().map(|b| char::from(*b)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    const BOUNDS: KeyBounds = KeyBounds {
        min_len: 8,
        max_len: 64,
    };

    fn key(values: &[&[u8]]) -> Result<Option<IdempotencyKey>, KeyDefect> {
        let headers: Vec<(String, Vec<u8>)> = values
            .iter()
            .map(|v| (HEADER.to_string(), v.to_vec()))
            .collect();
        parse(&headers, BOUNDS)
    }

    fn ok(text: &str) -> IdempotencyKey {
        IdempotencyKey(text.to_string())
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_quoted_string_and_a_stripe_style_bare_key_are_keys() {
        let uuid = "8e03978e-40d5-43e8-bc93-6894a57f9324";
        assert_eq!(key(&[format!("\"{uuid}\"").as_bytes()]), Ok(Some(ok(uuid))));
        assert_eq!(key(&[uuid.as_bytes()]), Ok(Some(ok(uuid))));
        assert_eq!(key(&[b"  \"payment 42\"\t"]), Ok(Some(ok("payment 42"))));
        assert_eq!(
            key(&[br#""say \"hi\" \\ now""#]),
            Ok(Some(ok(r#"say "hi" \ now"#)))
        );
        assert_eq!(key(&[]), Ok(None));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn anything_but_one_string_is_refused_with_its_reason() {
        let cases: [(&[&[u8]], KeyDefect); 11] = [
            (&[b"\"abcdefgh\"", b"\"abcdefgh\""], KeyDefect::Repeated),
            (&[b"\"abcdefgh\", \"ijklmnop\""], KeyDefect::NotAString),
            (&[b"\"abcdefgh\";a=1"], KeyDefect::NotAString),
            (&[b"abcdefgh;a=1"], KeyDefect::NotAString),
            (&[b"abcd,efgh"], KeyDefect::NotAString),
            (&[b"\"abcdefgh"], KeyDefect::Malformed),
            (&[b"\"abcd\\nefgh\""], KeyDefect::Malformed),
            (&[b"\"abcd\xc3\xa9efgh\""], KeyDefect::Malformed),
            (&[b"abcd efgh"], KeyDefect::Malformed),
            (&[b"\"short\""], KeyDefect::Length),
            (&[b""], KeyDefect::Length),
        ];
        for (values, defect) in cases {
            assert_eq!(key(values), Err(defect), "{values:?}");
        }
        let long = format!("\"{}\"", "k".repeat(65));
        assert_eq!(key(&[long.as_bytes()]), Err(KeyDefect::Length));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_defect_never_quotes_the_clients_value() {
        for defect in [
            KeyDefect::Missing,
            KeyDefect::Repeated,
            KeyDefect::NotAString,
            KeyDefect::Malformed,
            KeyDefect::Length,
        ] {
            assert!(defect.slug().starts_with("idempotency-key-"));
            assert!(!defect.detail(BOUNDS).is_empty());
        }
        assert!(KeyDefect::Length.detail(BOUNDS).contains("8 to 64"));
    }
}
