//! Byte-safe header lookup over the pairs a filter reads from the host.
//!
//! Values stay bytes: a client can send any octet in a header value, and only the caller
//! knows what encoding it needs. Names compare case-insensitively, and a header sent more
//! than once is reported as such rather than silently reduced to its first copy.

/// Header pairs as read from the host with the `_bytes` accessors.
pub type HeaderPairs = [(String, Vec<u8>)];

/// What a request carries under one header name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    Absent,
    One(&'a [u8]),
    /// Sent this many times (two or more).
    Repeated(usize),
}

impl<'a> Lookup<'a> {
    /// The value when the header was sent exactly once.
    pub fn single(self) -> Option<&'a [u8]> {
        match self {
            Lookup::One(v) => Some(v),
            _ => None,
        }
    }
}

/// Looks `name` up in `headers` as an upstream would: `x-customer_id` is `x-customer-id`.
pub fn lookup<'a>(headers: &'a HeaderPairs, name: &str) -> Lookup<'a> {
    let mut found = None;
    let mut count = 0usize;
    for (n, v) in headers {
        if same_header_name(n, name) {
            count += 1;
            found.get_or_insert(v.as_slice());
        }
    }
    match (count, found) {
        (0, _) | (_, None) => Lookup::Absent,
        (1, Some(v)) => Lookup::One(v),
        (n, Some(_)) => Lookup::Repeated(n),
    }
}

/// Every value sent under `name` in any spelling an upstream reads as it, in order.
pub fn all<'a>(headers: &'a HeaderPairs, name: &str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(n, _)| same_header_name(n, name))
        .map(|(_, v)| v.as_slice())
        .collect()
}

/// A header-name matcher written as in configuration: an exact name (`x-internal-user`) or
/// a prefix ending in `*` (`x-internal-*`). Names are stored lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameMatcher {
    Exact(String),
    Prefix(String),
}

impl NameMatcher {
    /// Parses `x-name` or `x-prefix-*`; refuses anything that is not a lowercase-able
    /// header token, a `*` elsewhere than at the end, and a bare `*`.
    pub fn parse(text: &str) -> Result<NameMatcher, String> {
        let (stem, wildcard) = match text.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (text, false),
        };
        if stem.is_empty() {
            return Err("a header name (or a prefix followed by `*`) is required".to_string());
        }
        if stem.starts_with(':') {
            return Err(format!("{text:?}: pseudo-headers cannot be matched"));
        }
        // `*` is a token character, but here it only ever means "any suffix".
        if let Some(bad) = stem
            .chars()
            .find(|c| !u8::try_from(*c).is_ok_and(is_tchar) || *c == '*')
        {
            return Err(format!("{text:?}: {bad:?} is not allowed in a header name"));
        }
        let stem = stem.to_ascii_lowercase();
        Ok(if wildcard {
            NameMatcher::Prefix(stem)
        } else {
            NameMatcher::Exact(stem)
        })
    }

    /// Whether the header `name` is matched, as [`same_header_name`] compares names.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NameMatcher::Exact(exact) => same_header_name(name, exact),
            NameMatcher::Prefix(prefix) => name
                .get(..prefix.len())
                .is_some_and(|head| same_header_name(head, prefix)),
        }
    }
}

/// Whether two header names are the same to an upstream: ASCII case ignored and `_` read as
/// `-`. CGI, WSGI and PHP upstreams turn both `-` and `_` into `_`, and Envoy (as Istio
/// configures it) lets underscores through, so `x-internal_user` must be stripped, or
/// protected, exactly as `x-internal-user` is.
pub fn same_header_name(a: &str, b: &str) -> bool {
    let fold = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// RFC 9110 `tchar`: what a header name or a method is made of.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn pairs(list: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn lookup_ignores_name_case() {
        let h = pairs(&[("X-Customer-Id", b"C1")]);
        assert_eq!(lookup(&h, "x-customer-id"), Lookup::One(b"C1"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn repeated_header_is_reported_not_reduced() {
        let h = pairs(&[
            ("x-customer-id", b"C1"),
            ("x-other", b""),
            ("X-CUSTOMER-ID", b"C2"),
        ]);
        assert_eq!(lookup(&h, "x-customer-id"), Lookup::Repeated(2));
        assert_eq!(
            all(&h, "x-customer-id"),
            vec![b"C1".as_slice(), b"C2".as_slice()]
        );
        assert_eq!(lookup(&h, "x-customer-id").single(), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn absent_and_non_utf8_values() {
        let h = pairs(&[("x-a", b"\xff\xfe")]);
        assert_eq!(lookup(&h, "x-b"), Lookup::Absent);
        assert_eq!(lookup(&h, "x-a").single(), Some(b"\xff\xfe".as_slice()));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn name_matchers_exact_and_prefix() {
        let p = NameMatcher::parse("X-Internal-*").unwrap();
        assert!(p.matches("x-internal-user"));
        assert!(p.matches("X-INTERNAL-"));
        assert!(!p.matches("x-internal"));
        assert!(!p.matches("x-intern"));
        let e = NameMatcher::parse("x-jwt-payload").unwrap();
        assert!(e.matches("X-JWT-Payload"));
        assert!(!e.matches("x-jwt-payload-2"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn name_matchers_refuse_bad_names() {
        for bad in ["", "*", "x-a*b*", "x a", ":path", "x-é"] {
            assert!(NameMatcher::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_second_spelling_of_a_header_is_a_repeat_not_a_new_header() {
        let h = pairs(&[("x-customer-id", b"CUST-1"), ("X-Customer_Id", b"CUST-2")]);
        assert_eq!(lookup(&h, "x-customer-id"), Lookup::Repeated(2));
        assert_eq!(all(&h, "x-customer-id"), vec![&b"CUST-1"[..], b"CUST-2"]);
        let only_underscore = pairs(&[("x_customer_id", b"CUST-9")]);
        assert_eq!(
            lookup(&only_underscore, "x-customer-id"),
            Lookup::One(b"CUST-9")
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn underscore_spellings_match_as_upstreams_read_them() {
        assert!(same_header_name("x-internal_user", "X-Internal-User"));
        assert!(same_header_name("x_jwt_claim_sub", "x-jwt-claim-sub"));
        assert!(!same_header_name("x-internal-users", "x-internal-user"));
        let prefix = NameMatcher::parse("x-jwt-claim-*").unwrap();
        assert!(prefix.matches("x-jwt-claim_customer_id"));
        assert!(prefix.matches("X_JWT_CLAIM_SUB"));
        assert!(!prefix.matches("x-jwt-claimed"));
    }
}
