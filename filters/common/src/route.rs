//! The route model every filter shares: one path normaliser, one rule shape (`pathPrefix` on
//! segment boundaries plus upper-case `methods`), one form of `bypassPaths`, and an optional
//! default-deny under protected prefixes. Every filter answers the same path defect with the
//! same problem (`invalid-path`), so no path spelling passes one filter and fails another.
//!
//! A rule must judge the resource the upstream will serve. Upstreams differ in what they
//! decode, strip and fold (Java servers drop `;` parameters, some frameworks route ignoring
//! case, CGI-style ones decode `%2F`), so the path is reduced to one canonical form and every
//! spelling the canonical form cannot represent faithfully is refused:
//! 1. the query (`?`) and anything after a `#` are dropped;
//! 2. the path must start with `/` and hold only visible ASCII: raw control bytes, spaces,
//!    non-ASCII bytes and `\` are refused;
//! 3. a percent-escape must be `%` and two hex digits; one that encodes an unreserved
//!    character (RFC 3986 §2.3: letters, digits, `-._~`) is decoded, so `/p%61yments` *is*
//!    `/payments`; one that encodes `/`, `\` (in either case: `%2f`, `%2F`, `%5c`, `%5C`) or a
//!    control byte is refused; any other escape is kept, with upper-case hex;
//! 4. `;` path parameters, raw or as `%3B`, are refused, or stripped from every segment when
//!    configured (`pathMatching.parameters: strip`), as Tomcat and Jetty do;
//! 5. after 3 and 4, an empty segment (`//`), `.` or `..` is refused (a trailing `/` is
//!    allowed), so `/..;/payments` and `/payments%2f..` never judge a different resource;
//! 6. rules match ignoring ASCII case by default (`pathMatching.case: insensitive`), so
//!    `/PAYMENTS` meets the `/payments` rules; bypass paths always match exactly as written,
//!    since a bypass must never widen.
//!
//! Requests match the first rule whose prefix covers the path on a segment boundary and
//! whose methods include the request's (compared ignoring case, so `post` cannot slip past a
//! `POST` rule). A path that matches no rule but sits under a `denyUnmatchedUnder` prefix is
//! refused with `route-not-allowed` (403).

use crate::config::ConfigError;
use crate::headers::{HeaderPairs, Lookup, is_tchar, lookup};
use crate::problem::Problem;
use serde::Deserialize;

/// Problem slug of every path defect, in every filter.
pub const INVALID_PATH: &str = "invalid-path";
/// Its title.
pub const INVALID_PATH_TITLE: &str = "Request path is not normalised";
/// Problem slug of a request refused by `denyUnmatchedUnder`.
pub const ROUTE_NOT_ALLOWED: &str = "route-not-allowed";
/// Its title.
pub const ROUTE_NOT_ALLOWED_TITLE: &str = "No rule allows this request";

/// `pathMatching` in a filter's config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatching {
    /// How rules compare paths: `insensitive` (default: `/PAYMENTS` meets the `/payments`
    /// rules, as a case-insensitive upstream would route it) or `sensitive`. Bypass paths
    /// always match exactly.
    #[serde(default)]
    pub case: PathCase,
    /// What a `;` path parameter (raw or `%3B`) gets: `refuse` (default: 400
    /// `invalid-path`) or `strip` (removed from every segment before matching, as Java
    /// servers do; the request still goes upstream as sent).
    #[serde(default)]
    pub parameters: PathParameters,
}

/// See [`PathMatching::case`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum PathCase {
    #[default]
    Insensitive,
    Sensitive,
}

/// See [`PathMatching::parameters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum PathParameters {
    #[default]
    Refuse,
    Strip,
}

/// One entry of `bypassPaths`: `{"exact": "/healthz"}` or `{"prefix": "/.well-known/"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum PathMatch {
    /// The normalised path equals this, byte for byte (query ignored).
    Exact(String),
    /// The normalised path starts with this on a segment boundary, byte for byte; one ending
    /// in `/` covers only what is below it.
    Prefix(String),
}

/// Why a request path was refused. Every variant answers 400 `invalid-path`; the detail
/// says which rule the path broke, never the path itself (it may carry account numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathDefect {
    /// No `:path`, or more than one.
    Missing,
    /// Does not start with `/`.
    NotAbsolute,
    /// A raw control byte, space, non-ASCII byte, backslash or `#`.
    InvalidCharacter,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C` (any case): a separator the upstream may decode.
    EncodedSeparator,
    /// A percent-encoded control byte.
    EncodedControl,
    /// `%25`: an encoded `%`, which an upstream that decodes twice reads as an escape.
    EncodedPercent,
    /// Percent-encoded non-ASCII bytes that are not shortest-form UTF-8, or (rules ignoring
    /// case) a character that case-folds to ASCII.
    EncodedNonAscii,
    /// A `;` parameter (raw or `%3B`) while parameters are refused.
    Parameter,
    /// An empty, `.` or `..` segment.
    DotOrEmptySegment,
}

impl PathDefect {
    /// The sentence a client reads in the problem's `detail`.
    pub fn detail(self) -> &'static str {
        match self {
            PathDefect::Missing => "The request has no single path.",
            PathDefect::NotAbsolute => "The path must start with '/'.",
            PathDefect::InvalidCharacter => {
                "The path may hold only visible ASCII characters, without '\\' or '#'."
            }
            PathDefect::BadEscape => "A '%' in the path must be followed by two hex digits.",
            PathDefect::EncodedSeparator => {
                "The path must not carry a percent-encoded '/' or '\\'."
            }
            PathDefect::EncodedControl => {
                "The path must not carry a percent-encoded control character."
            }
            PathDefect::EncodedPercent => "The path must not carry a percent-encoded '%'.",
            PathDefect::EncodedNonAscii => {
                "A percent-encoded character in the path must be valid UTF-8 and must not \
                 stand for an ASCII letter."
            }
            PathDefect::Parameter => "The path must not carry ';' parameters.",
            PathDefect::DotOrEmptySegment => "The path must not have empty, '.' or '..' segments.",
        }
    }

    /// 400 `invalid-path`, the same in every filter.
    pub fn problem(self) -> Problem {
        Problem::new(400, INVALID_PATH, INVALID_PATH_TITLE, self.detail()).with_header(":path")
    }
}

/// The 403 `route-not-allowed` problem of a request under a `denyUnmatchedUnder` prefix
/// that no rule allows.
pub fn route_not_allowed() -> Problem {
    Problem::new(
        403,
        ROUTE_NOT_ALLOWED,
        ROUTE_NOT_ALLOWED_TITLE,
        "No route rule covers this method and path.",
    )
}

/// A request's path in canonical form (see the module doc), with its original case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath(String);

impl NormalizedPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Normalises a `:path` value (query allowed) under `matching`.
pub fn normalize(raw: &[u8], matching: PathMatching) -> Result<NormalizedPath, PathDefect> {
    let end = raw.iter().position(|b| *b == b'?').unwrap_or(raw.len());
    let path = raw.get(..end).unwrap_or_default();
    if path.first() != Some(&b'/') {
        return Err(PathDefect::NotAbsolute);
    }
    let mut out = String::with_capacity(path.len());
    // Whether the current segment is inside a stripped `;` parameter.
    let mut in_parameter = false;
    // Percent-encoded non-ASCII bytes in a row: one character, checked when the run ends.
    let mut non_ascii: Vec<u8> = Vec::new();
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        let (byte, escaped, width) = if b == b'%' {
            let hex = path.get(i + 1..i + 3).ok_or(PathDefect::BadEscape)?;
            let decoded = hex_byte(hex).ok_or(PathDefect::BadEscape)?;
            (decoded, true, 3)
        } else {
            (b, false, 1)
        };
        i += width;
        if escaped && byte >= 0x80 {
            non_ascii.push(byte);
        } else if !non_ascii.is_empty() {
            check_non_ascii(&non_ascii, matching.case)?;
            non_ascii.clear();
        }
        // A raw `#` only reaches a filter when Envoy is told to keep fragments, and then the
        // upstream may see what the filter would have cut off.
        if !escaped && (b == b'\\' || b == b'#' || !(0x21..0x7f).contains(&b)) {
            return Err(PathDefect::InvalidCharacter);
        }
        if escaped && (byte == b'/' || byte == b'\\') {
            return Err(PathDefect::EncodedSeparator);
        }
        if escaped && (byte < 0x20 || byte == 0x7f) {
            return Err(PathDefect::EncodedControl);
        }
        // `%25` decodes to `%`: an upstream that decodes twice would read `%252e` as `.`.
        if escaped && byte == b'%' {
            return Err(PathDefect::EncodedPercent);
        }
        if byte == b'/' {
            in_parameter = false;
            out.push('/');
            continue;
        }
        if byte == b';' {
            match matching.parameters {
                PathParameters::Refuse => return Err(PathDefect::Parameter),
                PathParameters::Strip => in_parameter = true,
            }
        }
        if in_parameter {
            continue;
        }
        if !escaped || is_unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(hex_digit(byte >> 4));
            out.push(hex_digit(byte & 0x0f));
        }
    }
    if !non_ascii.is_empty() {
        check_non_ascii(&non_ascii, matching.case)?;
    }
    // Skip the leading '/' and allow one trailing '/'; then no segment may be empty or dots.
    let inner = out.strip_prefix('/').unwrap_or(&out);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if !inner.is_empty()
        && inner
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(PathDefect::DotOrEmptySegment);
    }
    Ok(NormalizedPath(out))
}

/// The non-ASCII characters whose upper- or lower-case mapping holds ASCII (Unicode's case
/// tables: `ſ`→`S`, Kelvin sign→`k`, dotted `İ`→`i`, dotless `ı`→`I`, and the full mappings
/// such as `ß`→`SS` and the ligatures `ﬁ`→`FI` that whole-string case conversion applies).
/// Listed rather than computed, which would pull the case tables into every `.wasm`; a test
/// checks the list against them.
const FOLDS_TO_ASCII: [char; 19] = [
    '\u{00DF}', '\u{0130}', '\u{0131}', '\u{0149}', '\u{017F}', '\u{01F0}', '\u{1E96}', '\u{1E97}',
    '\u{1E98}', '\u{1E99}', '\u{1E9A}', '\u{212A}', '\u{FB00}', '\u{FB01}', '\u{FB02}', '\u{FB03}',
    '\u{FB04}', '\u{FB05}', '\u{FB06}',
];

/// A run of percent-encoded non-ASCII bytes must be UTF-8 in its shortest form (an overlong
/// `%C0%AE` is a `.` to a lenient decoder), and when rules ignore case no character may fold
/// to ASCII (`ſ` is `S` to Java's `equalsIgnoreCase`, the Kelvin sign `K` is `k`).
fn check_non_ascii(bytes: &[u8], case: PathCase) -> Result<(), PathDefect> {
    let text = std::str::from_utf8(bytes).map_err(|_| PathDefect::EncodedNonAscii)?;
    if case == PathCase::Insensitive && text.chars().any(|c| FOLDS_TO_ASCII.contains(&c)) {
        return Err(PathDefect::EncodedNonAscii);
    }
    Ok(())
}

fn hex_byte(hex: &[u8]) -> Option<u8> {
    let digit = |c: u8| char::from(c).to_digit(16);
    match hex {
        [hi, lo] => u8::try_from(digit(*hi)? * 16 + digit(*lo)?).ok(),
        _ => None,
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16)
        .unwrap_or('0')
        .to_ascii_uppercase()
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether `prefix` covers `path` on a segment boundary. A prefix ending in `/` covers only
/// what is below it (bypass prefixes keep theirs; rule prefixes are stored without one).
fn covers(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// Whether a rule's (or a protected) prefix covers `path`: on a segment boundary, and also
/// where a framework may still route the path to the prefix's handler: a suffix after `.`
/// (`/payments.json` is `/payments` to Rails and to Spring's suffix matching) or after an
/// escape (`/payments%20`, trimmed by some). Broader than [`covers`] on purpose: a rule only
/// ever adds checks, so it errs towards covering.
/// `prefix` is stored folded when `case` is insensitive; the path is compared without a
/// folded copy, so matching allocates nothing per request.
fn rule_covers(prefix: &str, path: &str, case: PathCase) -> bool {
    let head = path.get(..prefix.len());
    let same = match case {
        PathCase::Insensitive => head.is_some_and(|h| h.eq_ignore_ascii_case(prefix)),
        PathCase::Sensitive => head == Some(prefix),
    };
    let rest = path.get(prefix.len()..).unwrap_or_default();
    same && (prefix == "/" || rest.is_empty() || rest.starts_with(['/', '.', '%']))
}

/// A configured path (rule prefix, bypass path, protected prefix) checked to be in canonical
/// form already, so what the operator wrote is what is compared.
fn configured_path(text: &str, trim_slash: bool) -> Result<String, String> {
    if text.contains(['?', '#']) {
        return Err("must be a path without query or fragment".to_string());
    }
    let strict = PathMatching {
        case: PathCase::Sensitive,
        parameters: PathParameters::Refuse,
    };
    let normal = normalize(text.as_bytes(), strict).map_err(|d| {
        format!(
            "{text:?} is not a normalised path ({})",
            d.detail().trim_end_matches('.').to_lowercase()
        )
    })?;
    if normal.as_str() != text {
        return Err(format!(
            "{text:?} is not a normalised path: write it as {:?}",
            normal.as_str()
        ));
    }
    let trimmed = if trim_slash && text.len() > 1 {
        text.trim_end_matches('/')
    } else {
        text
    };
    Ok(trimmed.to_string())
}

/// A rule's `pathPrefix` and `methods`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// As configured, without a trailing `/`: for messages.
    path_prefix: String,
    /// Folded to lower case when matching ignores case.
    compared_prefix: String,
    /// Upper case; empty: every method.
    methods: Vec<String>,
}

impl RouteMatch {
    /// Validates a rule's `pathPrefix` and `methods`; `at` is the rule's field path
    /// (`rules[2]`), so an error names `rules[2].methods[0]`.
    pub fn new(
        path_prefix: &str,
        methods: &[String],
        matching: PathMatching,
        at: &str,
    ) -> Result<RouteMatch, ConfigError> {
        let prefix = configured_path(path_prefix, true)
            .map_err(|m| ConfigError::at(format!("{at}.pathPrefix"), m))?;
        for (i, m) in methods.iter().enumerate() {
            check_method(m).map_err(|e| ConfigError::at(format!("{at}.methods[{i}]"), e))?;
        }
        Ok(RouteMatch {
            compared_prefix: fold(&prefix, matching.case),
            path_prefix: prefix,
            methods: methods.to_vec(),
        })
    }

    /// How the rule is named to a client: by its configuration, never by the request.
    pub fn describe(&self) -> String {
        if self.methods.is_empty() {
            self.path_prefix.clone()
        } else {
            format!("{} {}", self.methods.join("|"), self.path_prefix)
        }
    }

    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    pub fn methods(&self) -> &[String] {
        &self.methods
    }

    /// Whether the rule covers a request, for a filter that applies every rule a request
    /// matches (rate-limit's limits) rather than the first ([`RouteTable::route`]).
    pub fn covers(&self, method: &[u8], path: &NormalizedPath, case: PathCase) -> bool {
        self.matches(method, path.as_str(), case)
    }

    /// `GET` covers `HEAD` too, as every framework routes a HEAD to the GET handler.
    fn matches(&self, method: &[u8], path: &str, case: PathCase) -> bool {
        let method_matches = |m: &String| {
            m.as_bytes().eq_ignore_ascii_case(method)
                || (m == "GET" && method.eq_ignore_ascii_case(b"HEAD"))
        };
        (self.methods.is_empty() || self.methods.iter().any(method_matches))
            && rule_covers(&self.compared_prefix, path, case)
    }
}

fn fold(text: &str, case: PathCase) -> String {
    match case {
        PathCase::Insensitive => text.to_ascii_lowercase(),
        PathCase::Sensitive => text.to_string(),
    }
}

/// An HTTP method as config may name it: an upper-case token (RFC 9110 §9).
fn check_method(m: &str) -> Result<(), String> {
    if m.is_empty() || !m.bytes().all(is_tchar) {
        return Err(format!("{m:?} is not an HTTP method"));
    }
    if m.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "methods are written in upper case: {:?}",
            m.to_ascii_uppercase()
        ));
    }
    Ok(())
}

/// How a request relates to the route table.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'t, T> {
    /// A bypass path: the filter's checks do not apply.
    Bypass,
    /// The first rule that matches.
    Rule(&'t T),
    /// No rule matches and no protected prefix covers the path.
    Unmatched,
    /// No rule matches, under a `denyUnmatchedUnder` prefix: refuse with
    /// [`route_not_allowed`].
    NotAllowed,
}

/// A filter's rules, bypass paths and protected prefixes, validated.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    matching: PathMatching,
    rules: Vec<(RouteMatch, T)>,
    bypass_paths: Vec<PathMatch>,
    /// Folded like rule prefixes.
    deny_unmatched_under: Vec<String>,
}

impl<T> RouteTable<T> {
    /// Validates `bypassPaths` and `denyUnmatchedUnder`; rules are added with
    /// [`RouteTable::push`].
    pub fn new(
        matching: PathMatching,
        bypass_paths: &[PathMatch],
        deny_unmatched_under: &[String],
    ) -> Result<RouteTable<T>, ConfigError> {
        let mut bypass = Vec::with_capacity(bypass_paths.len());
        for (i, m) in bypass_paths.iter().enumerate() {
            let (kind, text) = match m {
                PathMatch::Exact(p) => ("exact", p),
                PathMatch::Prefix(p) => ("prefix", p),
            };
            // A bypass keeps its trailing '/': `/health/` does not cover `/health`.
            let path = configured_path(text, false)
                .map_err(|e| ConfigError::at(format!("bypassPaths[{i}].{kind}"), e))?;
            bypass.push(match m {
                PathMatch::Exact(_) => PathMatch::Exact(path),
                PathMatch::Prefix(_) => PathMatch::Prefix(path),
            });
        }
        let mut protected = Vec::with_capacity(deny_unmatched_under.len());
        for (i, text) in deny_unmatched_under.iter().enumerate() {
            let path = configured_path(text, true)
                .map_err(|e| ConfigError::at(format!("denyUnmatchedUnder[{i}]"), e))?;
            protected.push(fold(&path, matching.case));
        }
        Ok(RouteTable {
            matching,
            rules: Vec::new(),
            bypass_paths: bypass,
            deny_unmatched_under: protected,
        })
    }

    /// Adds a rule after the ones already added (first match wins).
    pub fn push(&mut self, route: RouteMatch, rule: T) {
        self.rules.push((route, rule));
    }

    pub fn matching(&self) -> PathMatching {
        self.matching
    }

    pub fn rules(&self) -> impl Iterator<Item = &(RouteMatch, T)> {
        self.rules.iter()
    }

    pub fn has_bypass_paths(&self) -> bool {
        !self.bypass_paths.is_empty()
    }

    /// Normalises the request's `:path` and finds its route.
    pub fn resolve(&self, headers: &HeaderPairs) -> Result<Route<'_, T>, PathDefect> {
        let raw = match lookup(headers, ":path") {
            Lookup::One(p) => p,
            _ => return Err(PathDefect::Missing),
        };
        let path = normalize(raw, self.matching)?;
        let method = lookup(headers, ":method").single().unwrap_or_default();
        Ok(self.route(method, &path))
    }

    /// The route of an already normalised path.
    pub fn route(&self, method: &[u8], path: &NormalizedPath) -> Route<'_, T> {
        let exact = path.as_str();
        let bypassed = self.bypass_paths.iter().any(|m| match m {
            PathMatch::Exact(p) => p == exact,
            PathMatch::Prefix(p) => covers(p, exact),
        });
        if bypassed {
            return Route::Bypass;
        }
        let case = self.matching.case;
        if let Some((_, rule)) = self
            .rules
            .iter()
            .find(|(m, _)| m.matches(method, exact, case))
        {
            return Route::Rule(rule);
        }
        if self
            .deny_unmatched_under
            .iter()
            .any(|p| rule_covers(p, exact, case))
        {
            Route::NotAllowed
        } else {
            Route::Unmatched
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    const DEFAULT: PathMatching = PathMatching {
        case: PathCase::Insensitive,
        parameters: PathParameters::Refuse,
    };
    const STRIP: PathMatching = PathMatching {
        case: PathCase::Insensitive,
        parameters: PathParameters::Strip,
    };

    fn norm(p: &str) -> Result<String, PathDefect> {
        normalize(p.as_bytes(), DEFAULT).map(|n| n.0)
    }

    fn table() -> RouteTable<&'static str> {
        let mut t = RouteTable::new(
            DEFAULT,
            &[
                PathMatch::Exact("/healthz".into()),
                PathMatch::Prefix("/.well-known/".into()),
            ],
            &["/payments".into()],
        )
        .unwrap();
        let post = ["POST".to_string()];
        t.push(
            RouteMatch::new("/payments", &post, DEFAULT, "rules[0]").unwrap(),
            "create",
        );
        t.push(
            RouteMatch::new("/accounts/", &[], DEFAULT, "rules[1]").unwrap(),
            "accounts",
        );
        t
    }

    fn route<'t>(
        t: &'t RouteTable<&'static str>,
        method: &str,
        path: &str,
    ) -> Result<Route<'t, &'static str>, PathDefect> {
        let headers = vec![
            (":method".to_string(), method.as_bytes().to_vec()),
            (":path".to_string(), path.as_bytes().to_vec()),
        ];
        t.resolve(&headers)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unreserved_escapes_decode_to_the_path_they_spell() {
        assert_eq!(norm("/p%61yments").unwrap(), "/payments");
        assert_eq!(norm("/%70ayments").unwrap(), "/payments");
        assert_eq!(norm("/a%7Eb%2d%5F").unwrap(), "/a~b-_");
        // Reserved and non-ASCII escapes stay escaped, hex in upper case.
        assert_eq!(norm("/a%3a%c3%a9").unwrap(), "/a%3A%C3%A9");
        assert_eq!(norm("/payments?x=/../y;z").unwrap(), "/payments");
        assert_eq!(norm("/payments/").unwrap(), "/payments/");
        assert_eq!(norm("/").unwrap(), "/");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_spelling_that_could_reach_another_resource_is_refused() {
        let cases = [
            ("", PathDefect::NotAbsolute),
            ("payments", PathDefect::NotAbsolute),
            ("*", PathDefect::NotAbsolute),
            ("/payments%2f..", PathDefect::EncodedSeparator),
            ("/payments%2F..", PathDefect::EncodedSeparator),
            ("/a%5cb", PathDefect::EncodedSeparator),
            ("/a%5Cb", PathDefect::EncodedSeparator),
            ("/a\\b", PathDefect::InvalidCharacter),
            ("/a b", PathDefect::InvalidCharacter),
            ("/a\u{e9}", PathDefect::InvalidCharacter),
            ("/a\tb", PathDefect::InvalidCharacter),
            ("/a%00", PathDefect::EncodedControl),
            ("/a%7f", PathDefect::EncodedControl),
            ("/a%", PathDefect::BadEscape),
            ("/a%4", PathDefect::BadEscape),
            ("/a%zz", PathDefect::BadEscape),
            ("/payments;x=1", PathDefect::Parameter),
            ("/payments%3Bx", PathDefect::Parameter),
            ("/payments%3bx", PathDefect::Parameter),
            ("/healthz/../payments", PathDefect::DotOrEmptySegment),
            ("/healthz/%2e%2e/payments", PathDefect::DotOrEmptySegment),
            ("/./payments", PathDefect::DotOrEmptySegment),
            ("//payments", PathDefect::DotOrEmptySegment),
            ("/payments//", PathDefect::DotOrEmptySegment),
            ("/payments/.", PathDefect::DotOrEmptySegment),
            ("/x#/../payments", PathDefect::InvalidCharacter),
            ("/payments#", PathDefect::InvalidCharacter),
            ("/public/%252e%252e/payments", PathDefect::EncodedPercent),
            ("/50%25", PathDefect::EncodedPercent),
            ("/%c0%ae%c0%ae/payments", PathDefect::EncodedNonAscii),
            ("/a%C3", PathDefect::EncodedNonAscii),
            ("/a%C3/b", PathDefect::EncodedNonAscii),
            ("/payment%C5%BF", PathDefect::EncodedNonAscii),
            ("/%E2%84%AA", PathDefect::EncodedNonAscii),
        ];
        for (path, defect) in cases {
            assert_eq!(norm(path), Err(defect), "{path:?}");
            assert_eq!(defect.problem().status, 400);
            assert!(defect.problem().type_uri.ends_with(":invalid-path"));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn stripped_parameters_leave_the_path_a_java_server_routes() {
        let strip = |p: &str| normalize(p.as_bytes(), STRIP).map(|n| n.0);
        assert_eq!(strip("/payments;x=1").unwrap(), "/payments");
        assert_eq!(strip("/payments%3Bx").unwrap(), "/payments");
        assert_eq!(
            strip("/payments;jsessionid=1/42;v=2").unwrap(),
            "/payments/42"
        );
        // Stripping cannot hide a dot segment or an empty one.
        assert_eq!(strip("/..;/payments"), Err(PathDefect::DotOrEmptySegment));
        assert_eq!(strip("/;x/payments"), Err(PathDefect::DotOrEmptySegment));
        assert_eq!(strip("/a;b%2Fc"), Err(PathDefect::EncodedSeparator));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rules_match_on_segments_ignoring_case_and_method_case() {
        let t = table();
        for path in [
            "/payments",
            "/PAYMENTS",
            "/Payments/42",
            "/p%61yments",
            "/%70ayments",
        ] {
            assert_eq!(
                route(&t, "POST", path),
                Ok(Route::Rule(&"create")),
                "{path}"
            );
        }
        assert_eq!(route(&t, "post", "/payments"), Ok(Route::Rule(&"create")));
        // Suffixes a framework may still route to the handler of `/payments`.
        for path in [
            "/payments.json",
            "/payments.",
            "/payments%2ejson",
            "/payments%20",
        ] {
            assert_eq!(
                route(&t, "POST", path),
                Ok(Route::Rule(&"create")),
                "{path}"
            );
        }
        // A GET rule covers HEAD, which frameworks send to the GET handler.
        assert_eq!(route(&t, "HEAD", "/accounts"), Ok(Route::Rule(&"accounts")));
        assert_eq!(route(&t, "GET", "/accounts"), Ok(Route::Rule(&"accounts")));
        assert_eq!(route(&t, "GET", "/accountsx"), Ok(Route::Unmatched));
        assert_eq!(route(&t, "GET", "/other"), Ok(Route::Unmatched));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unmatched_requests_under_a_protected_prefix_are_not_allowed() {
        let t = table();
        assert_eq!(route(&t, "DELETE", "/payments/42"), Ok(Route::NotAllowed));
        assert_eq!(route(&t, "GET", "/PAYMENTS"), Ok(Route::NotAllowed));
        assert_eq!(route(&t, "GET", "/paymentsx"), Ok(Route::Unmatched));
        assert_eq!(route_not_allowed().status, 403);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bypasses_match_exactly_as_written() {
        let t = table();
        assert_eq!(route(&t, "GET", "/healthz?full=1"), Ok(Route::Bypass));
        assert_eq!(route(&t, "GET", "/h%65althz"), Ok(Route::Bypass));
        assert_eq!(
            route(&t, "GET", "/.well-known/jwks.json"),
            Ok(Route::Bypass)
        );
        assert_eq!(route(&t, "GET", "/HEALTHZ"), Ok(Route::Unmatched));
        assert_eq!(route(&t, "GET", "/healthz/x"), Ok(Route::Unmatched));
        assert_eq!(route(&t, "GET", "/.well-known"), Ok(Route::Unmatched));
        assert_eq!(
            route(&t, "GET", "/healthz/../payments"),
            Err(PathDefect::DotOrEmptySegment)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_list_of_characters_folding_to_ascii_is_the_unicode_tables() {
        let folds = |c: char| {
            !c.is_ascii()
                && (c.to_lowercase().any(|l| l.is_ascii())
                    || c.to_uppercase().any(|u| u.is_ascii()))
        };
        let found: Vec<char> = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|c| folds(*c))
            .collect();
        assert_eq!(found, FOLDS_TO_ASCII);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn encoded_non_ascii_is_kept_when_it_is_shortest_utf8_and_folds_to_nothing_ascii() {
        assert_eq!(norm("/caf%C3%A9").unwrap(), "/caf%C3%A9");
        // Case-sensitive rules compare bytes: a long s is no `s` to them.
        let sensitive = PathMatching {
            case: PathCase::Sensitive,
            ..DEFAULT
        };
        let kept = normalize(b"/payment%C5%BF", sensitive).map(|n| n.0);
        assert_eq!(kept.unwrap(), "/payment%C5%BF");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn case_sensitive_matching_is_an_option() {
        let sensitive = PathMatching {
            case: PathCase::Sensitive,
            ..DEFAULT
        };
        let mut t: RouteTable<u8> = RouteTable::new(sensitive, &[], &[]).unwrap();
        t.push(
            RouteMatch::new("/payments", &[], sensitive, "rules[0]").unwrap(),
            1,
        );
        let p = |s: &str| normalize(s.as_bytes(), sensitive).unwrap();
        assert_eq!(t.route(b"GET", &p("/payments")), Route::Rule(&1));
        assert_eq!(t.route(b"GET", &p("/Payments")), Route::Unmatched);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn configured_paths_must_already_be_canonical() {
        let bad = |prefix: &str| RouteMatch::new(prefix, &[], DEFAULT, "rules[3]").unwrap_err();
        for prefix in [
            "payments",
            "/p%61yments",
            "/a/../b",
            "/a;b",
            "/a?b",
            "/a//b",
            "/a%2Fb",
        ] {
            assert_eq!(bad(prefix).path, "rules[3].pathPrefix", "{prefix}");
        }
        assert!(bad("/p%61yments").message.contains("\"/payments\""));
        let e = RouteMatch::new("/a", &["post".into()], DEFAULT, "rules[0]").unwrap_err();
        assert_eq!(e.path, "rules[0].methods[0]");
        assert!(e.message.contains("\"POST\""), "{e}");
        let e = RouteMatch::new("/a", &["GET".into(), "P OST".into()], DEFAULT, "rules[0]")
            .unwrap_err();
        assert_eq!(e.path, "rules[0].methods[1]");
        let e =
            RouteTable::<()>::new(DEFAULT, &[PathMatch::Prefix("health".into())], &[]).unwrap_err();
        assert_eq!(e.path, "bypassPaths[0].prefix");
        let e = RouteTable::<()>::new(DEFAULT, &[], &["/x/".into(), "/y/..".into()]).unwrap_err();
        assert_eq!(e.path, "denyUnmatchedUnder[1]");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn path_matching_config_reads_its_documented_spellings() {
        let m: PathMatching =
            crate::config::parse(br#"{"case":"sensitive","parameters":"strip"}"#).unwrap();
        assert_eq!(m.case, PathCase::Sensitive);
        assert_eq!(m.parameters, PathParameters::Strip);
        let m: PathMatching = crate::config::parse(b"").unwrap();
        assert_eq!(m, DEFAULT);
        assert!(crate::config::parse::<PathMatching>(br#"{"case":"lower"}"#).is_err());
    }
}
