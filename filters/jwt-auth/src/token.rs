//! Finding the token in a request, and the cheap structural checks made on it before any
//! signature work: size, three base64url segments, a JSON header naming a known `alg`, a
//! JSON object payload without duplicate members.

use std::fmt;

use banking_filter_common::headers::{self, HeaderPairs};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

use crate::base64url;
use crate::config::TokenSource;
use crate::jwks::Algorithm;

/// What the request carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'r> {
    Nothing,
    /// Exactly one token, borrowed from the request; `source` indexes the configured token
    /// sources.
    One {
        token: &'r [u8],
        source: usize,
    },
    /// RFC 6750 §2: a client must not send a token by more than one method (or twice).
    Several,
}

/// Looks for tokens in every configured source.
pub fn find<'r>(sources: &[TokenSource], headers: &'r HeaderPairs, path: &'r [u8]) -> Found<'r> {
    let mut found: Vec<(&'r [u8], usize)> = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        match source {
            TokenSource::Header { name, prefix } => {
                for value in headers::all(headers, name) {
                    if let Some(token) = strip_prefix_ignore_case(value, prefix.as_bytes()) {
                        found.push((trim(token), index));
                    }
                }
            }
            TokenSource::QueryParam(param) => {
                let query = path
                    .iter()
                    .position(|b| *b == b'?')
                    .and_then(|i| path.get(i + 1..))
                    .unwrap_or_default();
                let query = query.split(|b| *b == b'#').next().unwrap_or_default();
                for pair in query.split(|b| *b == b'&') {
                    let mut kv = pair.splitn(2, |b| *b == b'=');
                    if kv.next() == Some(param.as_bytes()) {
                        found.push((kv.next().unwrap_or_default(), index));
                    }
                }
            }
            TokenSource::Cookie(cookie) => {
                for header in headers::all(headers, "cookie") {
                    for pair in header.split(|b| *b == b';') {
                        let mut kv = trim(pair).splitn(2, |b| *b == b'=');
                        if kv.next() == Some(cookie.as_bytes()) {
                            found.push((trim(kv.next().unwrap_or_default()), index));
                        }
                    }
                }
            }
        }
    }
    match found.len() {
        0 => Found::Nothing,
        1 => match found.pop() {
            Some((token, source)) => Found::One { token, source },
            None => Found::Nothing,
        },
        _ => Found::Several,
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = value.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        value.get(prefix.len()..)
    } else {
        None
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// Why a token was refused before signature work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    TooLarge,
    Malformed(&'static str),
    /// `alg` is `none`, unknown, or not one this filter verifies.
    AlgorithmNotAllowed(&'static str),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooLarge => f.write_str("the token is larger than allowed"),
            Refusal::Malformed(why) | Refusal::AlgorithmNotAllowed(why) => f.write_str(why),
        }
    }
}

/// A token that passed the structural checks; nothing in it is trusted yet.
#[derive(Debug)]
pub struct Unverified<'a> {
    pub text: &'a str,
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// The header's `typ`, when present.
    pub typ: Option<String>,
    pub claims: Map<String, Value>,
}

/// The base64url payload segment of a compact JWS (for the payload output header).
pub fn payload_segment(token: &str) -> Option<&str> {
    token.split('.').nth(1)
}

/// Structural checks; cheap next to a signature check and done first.
pub fn parse(token: &[u8], max_bytes: usize) -> Result<Unverified<'_>, Refusal> {
    if token.len() > max_bytes {
        return Err(Refusal::TooLarge);
    }
    let malformed = Refusal::Malformed;
    let text = std::str::from_utf8(token).map_err(|_| malformed("the token is not ASCII"))?;
    let mut segments = text.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(malformed("a JWS has three dot-separated segments"));
    };
    if header.is_empty() || payload.is_empty() {
        return Err(malformed("a token segment is empty"));
    }
    if !base64url::is_compact_jws_alphabet(text) {
        return Err(malformed("the token is not base64url"));
    }
    let header_json = base64url::decode(header).ok_or(malformed("the header is not base64url"))?;
    let header: UniqueMap = serde_json::from_slice(&header_json)
        .map_err(|_| malformed("the header is not a JSON object with unique members"))?;
    let header = header.0;
    let alg = match header.get("alg") {
        Some(Value::String(name)) if name.eq_ignore_ascii_case("none") => {
            return Err(Refusal::AlgorithmNotAllowed(
                "unsigned tokens (alg \"none\") are never accepted",
            ));
        }
        Some(Value::String(name)) => Algorithm::from_name(name).ok_or(
            Refusal::AlgorithmNotAllowed("the token's alg is not supported"),
        )?,
        _ => return Err(malformed("the header has no alg")),
    };
    // Checked only after `alg`: an empty signature is how an unsecured JWT (RFC 7519 §6,
    // `alg: none`) is written, and that is refused, and counted, as an algorithm.
    if signature.is_empty() {
        return Err(malformed("a token segment is empty"));
    }
    if header.contains_key("crit") {
        return Err(malformed("critical header extensions are not supported"));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(malformed("the header's kid is not a string")),
    };
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(typ)) => Some(typ.clone()),
        Some(_) => return Err(malformed("the header's typ is not a string")),
    };
    let payload_json =
        base64url::decode(payload).ok_or(malformed("the payload is not base64url"))?;
    let claims: UniqueMap = serde_json::from_slice(&payload_json)
        .map_err(|_| malformed("the payload is not a JSON object with unique members"))?;
    Ok(Unverified {
        text,
        alg,
        kid,
        typ,
        claims: claims.0,
    })
}

/// A JSON object whose top-level members are unique. RFC 7515 §5.2 lets a parser reject
/// duplicates; doing so means no other parser downstream (the upstream reading the
/// payload header) can pick a different duplicate than the one this filter checked.
struct UniqueMap(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueMap {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueMap, A::Error> {
                let mut map = Map::new();
                while let Some((key, value)) = access.next_entry::<String, Value>()? {
                    match map.entry(key) {
                        Entry::Occupied(_) => return Err(de::Error::custom("duplicate member")),
                        Entry::Vacant(member) => {
                            member.insert(value);
                        }
                    }
                }
                Ok(UniqueMap(map))
            }
        }
        de.deserialize_map(V)
    }
}

/// A NumericDate claim (`exp`, `nbf`, `iat`) in whole seconds, rounded toward "less
/// valid": `exp` down, `nbf`/`iat` up.
pub fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, &'static str> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let bad = match name {
        "exp" => "the exp claim is not a number of seconds",
        "nbf" => "the nbf claim is not a number of seconds",
        _ => "the iat claim is not a number of seconds",
    };
    let Value::Number(n) = value else {
        return Err(bad);
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    let f = n.as_f64().filter(|f| f.is_finite()).ok_or(bad)?;
    let rounded = if name == "exp" { f.floor() } else { f.ceil() };
    // A NumericDate a signed 64-bit count of seconds cannot hold (`exp: 1e20`) is malformed,
    // as Envoy's jwt_authn has it, not a far-future date.
    if !(-I64_LIMIT..I64_LIMIT).contains(&rounded) {
        return Err(bad);
    }
    // Exact: a whole number strictly inside the i64 range.
    #[allow(clippy::cast_possible_truncation)]
    Ok(Some(rounded as i64))
}

/// 2^63 as a float: the first whole number an i64 cannot hold.
const I64_LIMIT: f64 = 9_223_372_036_854_775_808.0;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkeys;
    use test_tokens::b64;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn pairs(list: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect()
    }

    fn bearer() -> Vec<TokenSource> {
        vec![TokenSource::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }]
    }

    fn all_sources() -> Vec<TokenSource> {
        vec![
            TokenSource::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            },
            TokenSource::Header {
                name: "x-api-token".into(),
                prefix: String::new(),
            },
            TokenSource::QueryParam("access_token".into()),
            TokenSource::Cookie("sess".into()),
        ]
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn finds_bearer_token_ignoring_scheme_case() {
        let h = pairs(&[("Authorization", b"bearer  abc.def.ghi ")]);
        assert_eq!(
            find(&bearer(), &h, b"/"),
            Found::One {
                token: b"abc.def.ghi",
                source: 0
            }
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn other_authorization_schemes_are_not_tokens() {
        let h = pairs(&[("authorization", b"Basic dXNlcjpwYXNz")]);
        assert_eq!(find(&bearer(), &h, b"/"), Found::Nothing);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn finds_token_in_each_configured_source() {
        let sources = all_sources();
        let h = pairs(&[("x-api-token", b"t1")]);
        assert_eq!(
            find(&sources, &h, b"/"),
            Found::One {
                token: b"t1",
                source: 1
            }
        );
        assert_eq!(
            find(&sources, &[], b"/a?x=1&access_token=t2#frag"),
            Found::One {
                token: b"t2",
                source: 2
            }
        );
        let h = pairs(&[("cookie", b"theme=dark; sess=t3")]);
        assert_eq!(
            find(&sources, &h, b"/"),
            Found::One {
                token: b"t3",
                source: 3
            }
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn two_tokens_are_several_even_when_equal() {
        let sources = all_sources();
        let h = pairs(&[
            ("authorization", b"Bearer t"),
            ("authorization", b"Bearer t"),
        ]);
        assert_eq!(find(&sources, &h, b"/"), Found::Several);
        let h = pairs(&[("authorization", b"Bearer t")]);
        assert_eq!(find(&sources, &h, b"/?access_token=t"), Found::Several);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn parses_header_and_claims_of_a_real_token() {
        let t = testkeys::mint(Algorithm::ES256, Some("k1"), testkeys::good_claims());
        let u = parse(t.as_bytes(), 8192).unwrap();
        assert_eq!(u.alg, Algorithm::ES256);
        assert_eq!(u.kid.as_deref(), Some("k1"));
        assert_eq!(u.claims["sub"], "cust-42");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_structural_problems_before_signature_work() {
        let header = b64(br#"{"alg":"HS256"}"#);
        let payload = b64(br#"{"sub":"x"}"#);
        let cases: Vec<(String, &str)> = vec![
            ("a.b".into(), "three dot-separated"),
            ("a.b.c.d".into(), "three dot-separated"),
            (format!("{header}.{payload}."), "segment is empty"),
            (format!("{header}.{payload}.a+b"), "not base64url"),
            (
                format!("{}.{payload}.sig", b64(b"not json")),
                "header is not a JSON object",
            ),
            (
                format!("{}.{payload}.sig", b64(br#"{"typ":"JWT"}"#)),
                "no alg",
            ),
            (
                format!("{}.{payload}.sig", b64(br#"{"alg":"HS256","alg":"RS256"}"#)),
                "unique members",
            ),
            (
                format!(
                    "{}.{payload}.sig",
                    b64(br#"{"alg":"RS256","crit":["b64"]}"#)
                ),
                "critical",
            ),
            (
                format!("{}.{payload}.sig", b64(br#"{"alg":"RS256","kid":7}"#)),
                "kid is not a string",
            ),
            (
                format!("{}.{payload}.sig", b64(br#"{"alg":"RS256","typ":1}"#)),
                "typ is not a string",
            ),
            (
                format!("{header}.{}.sig", b64(b"[1]")),
                "payload is not a JSON object",
            ),
            (
                format!("{header}.{}.sig", b64(br#"{"sub":"a","sub":"b"}"#)),
                "unique members",
            ),
        ];
        for (token, why) in cases {
            match parse(token.as_bytes(), 8192) {
                Err(Refusal::Malformed(m)) => assert!(m.contains(why), "{token}: {m}"),
                other => panic!("{token}: {other:?}"),
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_alg_none_and_unknown_algorithms() {
        let payload = b64(br#"{"sub":"x"}"#);
        for alg in ["none", "NONE", "HS1", "ES512"] {
            let token = format!(
                "{}.{payload}.c2ln",
                b64(format!(r#"{{"alg":"{alg}"}}"#).as_bytes())
            );
            assert!(
                matches!(
                    parse(token.as_bytes(), 8192),
                    Err(Refusal::AlgorithmNotAllowed(_))
                ),
                "{alg}"
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unsecured_jwt_with_empty_signature_is_refused_for_its_algorithm() {
        let payload = b64(br#"{"sub":"x"}"#);
        let unsecured = format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#));
        assert_eq!(
            parse(unsecured.as_bytes(), 8192).unwrap_err(),
            Refusal::AlgorithmNotAllowed("unsigned tokens (alg \"none\") are never accepted")
        );
        // A supported alg with an empty signature, or an unreadable header, stays malformed.
        let unsigned_rs256 = format!("{}.{payload}.", b64(br#"{"alg":"RS256"}"#));
        assert_eq!(
            parse(unsigned_rs256.as_bytes(), 8192).unwrap_err(),
            Refusal::Malformed("a token segment is empty")
        );
        let no_alg = format!("{}.{payload}.", b64(br#"{"typ":"JWT"}"#));
        assert!(matches!(
            parse(no_alg.as_bytes(), 8192),
            Err(Refusal::Malformed(_))
        ));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_oversized_token_before_decoding() {
        let big = vec![b'a'; 9000];
        assert_eq!(parse(&big, 8192).unwrap_err(), Refusal::TooLarge);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_non_ascii_bytes() {
        assert!(matches!(
            parse(b"\xff.\xfe.\xfd", 8192),
            Err(Refusal::Malformed(_))
        ));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn numeric_dates_round_toward_less_valid() {
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"exp":10.9,"nbf":10.1,"iat":"soon"}"#).unwrap();
        assert_eq!(numeric_date(&claims, "exp"), Ok(Some(10)));
        assert_eq!(numeric_date(&claims, "nbf"), Ok(Some(11)));
        assert!(numeric_date(&claims, "iat").is_err());
        assert_eq!(numeric_date(&Map::new(), "exp"), Ok(None));
        // Outside what a signed 64-bit count of seconds holds: malformed, not "far future".
        for text in [
            r#"{"exp":1e20}"#,
            r#"{"exp":-1e20}"#,
            r#"{"exp":9223372036854775808}"#,
            r#"{"exp":18446744073709551615}"#,
        ] {
            let claims: Map<String, Value> = serde_json::from_str(text).unwrap();
            assert!(numeric_date(&claims, "exp").is_err(), "{text}");
        }
        let max: Map<String, Value> =
            serde_json::from_str(r#"{"exp":9223372036854775807}"#).unwrap();
        assert_eq!(numeric_date(&max, "exp"), Ok(Some(i64::MAX)));
    }
}
