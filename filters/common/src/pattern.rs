//! A small, bounded pattern language for identifier formats (customer ids, correlation ids).
//!
//! The `regex` crate would add hundreds of kilobytes to every `.wasm`, and identifiers need
//! little of it. A pattern here is a sequence of atoms, each with an optional bounded count,
//! always matched against the whole value (no anchors needed):
//!
//! | syntax            | meaning                                                     |
//! |-------------------|-------------------------------------------------------------|
//! | `A`, `-`, `_`     | that ASCII character                                        |
//! | `\.` `\[` `\\` …  | an escaped punctuation character, literally                 |
//! | `\d`, `\w`        | a digit; a letter, digit or `_`                             |
//! | `.`               | any visible ASCII character (`!` to `~`, no space)          |
//! | `[A-Z0-9_-]`      | one character from the class (ranges, literals, `\d`, `\w`) |
//! | `{n}`, `{n,m}`, `?` | repeat the previous atom exactly n, n to m, 0 or 1 times  |
//!
//! Every repetition is bounded (`*`, `+` and `{n,}` are refused), so every pattern has a
//! maximum length and matching is linear in the value's length. Groups, alternation,
//! anchors and negated classes are refused rather than half-supported. Only ASCII can
//! match: any other byte makes the value fail the pattern.

use std::fmt;

/// Largest count a single `{n,m}` may ask for.
pub const MAX_REPEAT: u16 = 1024;

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    atoms: Vec<Atom>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Atom {
    /// Bit `b` set when ASCII byte `b` matches.
    set: u128,
    min: u16,
    max: u16,
}

/// Why a pattern was refused, with the character position (0-based) where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.position)
    }
}

impl std::error::Error for PatternError {}

const DIGITS: u128 = range_set(b'0', b'9');
const WORD: u128 = DIGITS | range_set(b'A', b'Z') | range_set(b'a', b'z') | (1u128 << b'_');
const VISIBLE: u128 = range_set(b'!', b'~');

const fn range_set(lo: u8, hi: u8) -> u128 {
    let mut set = 0u128;
    let mut b = lo;
    while b <= hi {
        set |= 1u128 << b;
        b += 1;
    }
    set
}

impl Pattern {
    /// Compiles `source`, refusing anything outside the language above.
    pub fn new(source: &str) -> Result<Pattern, PatternError> {
        let chars: Vec<char> = source.chars().collect();
        let mut atoms: Vec<Atom> = Vec::new();
        let mut i = 0;
        let err = |position: usize, message: &str| PatternError {
            position,
            message: message.to_string(),
        };
        while let Some(&c) = chars.get(i) {
            match c {
                '[' => {
                    let (set, next) = parse_class(&chars, i)?;
                    atoms.push(Atom {
                        set,
                        min: 1,
                        max: 1,
                    });
                    i = next;
                }
                '\\' => {
                    let set = escape_set(chars.get(i + 1).copied()).ok_or_else(|| {
                        err(
                            i,
                            "`\\` must be followed by d, w or a punctuation character",
                        )
                    })?;
                    atoms.push(Atom {
                        set,
                        min: 1,
                        max: 1,
                    });
                    i += 2;
                }
                '.' => {
                    atoms.push(Atom {
                        set: VISIBLE,
                        min: 1,
                        max: 1,
                    });
                    i += 1;
                }
                '{' | '?' => {
                    let last = atoms
                        .last_mut()
                        .ok_or_else(|| err(i, "a repetition needs something to repeat"))?;
                    if last.min != 1 || last.max != 1 {
                        return Err(err(i, "a repetition cannot follow another repetition"));
                    }
                    if c == '?' {
                        last.min = 0;
                        i += 1;
                    } else {
                        let (min, max, next) = parse_count(&chars, i)?;
                        last.min = min;
                        last.max = max;
                        i = next;
                    }
                }
                '*' | '+' => {
                    return Err(err(
                        i,
                        "unbounded repetition is not allowed; write {min,max}",
                    ));
                }
                '(' | ')' | '|' | '^' | '$' => {
                    return Err(err(
                        i,
                        "groups, alternation and anchors are not supported (patterns always match the whole value)",
                    ));
                }
                ']' | '}' => return Err(err(i, "unbalanced bracket; escape it with `\\`")),
                c if c.is_ascii_graphic() || c == ' ' => {
                    atoms.push(Atom {
                        set: 1u128 << (c as u32),
                        min: 1,
                        max: 1,
                    });
                    i += 1;
                }
                _ => {
                    return Err(err(
                        i,
                        "only printable ASCII characters may appear in a pattern",
                    ));
                }
            }
        }
        if atoms.is_empty() {
            return Err(err(0, "pattern is empty"));
        }
        Ok(Pattern {
            source: source.to_string(),
            atoms,
        })
    }

    /// The pattern as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Shortest value the pattern can match.
    pub fn min_len(&self) -> usize {
        self.atoms.iter().map(|a| usize::from(a.min)).sum()
    }

    /// Longest value the pattern can match: the length bound every pattern has.
    pub fn max_len(&self) -> usize {
        self.atoms.iter().map(|a| usize::from(a.max)).sum()
    }

    /// Whether the whole of `value` matches.
    pub fn matches(&self, value: &[u8]) -> bool {
        if value.len() < self.min_len() || value.len() > self.max_len() {
            return false;
        }
        // Simulate the automaton whose states are (atom, repetitions so far); `offset[k]`
        // is the index of (k, 0) and the last index is "matched everything".
        let mut offset = Vec::with_capacity(self.atoms.len() + 1);
        let mut total = 0usize;
        for atom in &self.atoms {
            offset.push(total);
            total += usize::from(atom.max) + 1;
        }
        let accept = total;
        let mut current = vec![false; total + 1];
        let mut next = vec![false; total + 1];
        set_state(&mut current, 0);
        self.close(&mut current, &offset);
        for &b in value {
            let bit = if b < 128 { 1u128 << b } else { 0 };
            next.iter_mut().for_each(|s| *s = false);
            let mut any = false;
            for (k, atom) in self.atoms.iter().enumerate() {
                if atom.set & bit == 0 {
                    continue;
                }
                let base = offset.get(k).copied().unwrap_or(0);
                for c in 0..usize::from(atom.max) {
                    if current.get(base + c).copied().unwrap_or(false) {
                        set_state(&mut next, base + c + 1);
                        any = true;
                    }
                }
            }
            if !any {
                return false;
            }
            std::mem::swap(&mut current, &mut next);
            self.close(&mut current, &offset);
        }
        current.get(accept).copied().unwrap_or(false)
    }

    /// Adds the states reachable without consuming input: having repeated atom k at least
    /// `min` times, the automaton may move on to atom k+1.
    fn close(&self, states: &mut [bool], offset: &[usize]) {
        let total = states.len().saturating_sub(1);
        for (k, atom) in self.atoms.iter().enumerate() {
            let base = offset.get(k).copied().unwrap_or(0);
            let next_start = offset.get(k + 1).copied().unwrap_or(total);
            let reached = (usize::from(atom.min)..=usize::from(atom.max))
                .any(|c| states.get(base + c).copied().unwrap_or(false));
            if reached {
                set_state(states, next_start);
            }
        }
    }
}

fn set_state(states: &mut [bool], index: usize) {
    if let Some(s) = states.get_mut(index) {
        *s = true;
    }
}

fn escape_set(c: Option<char>) -> Option<u128> {
    match c? {
        'd' => Some(DIGITS),
        'w' => Some(WORD),
        c if c.is_ascii_punctuation() => Some(1u128 << (c as u32)),
        _ => None,
    }
}

/// Parses `[...]` starting at `start` (the `[`); returns the set and the index after `]`.
fn parse_class(chars: &[char], start: usize) -> Result<(u128, usize), PatternError> {
    let err = |position: usize, message: &str| PatternError {
        position,
        message: message.to_string(),
    };
    let mut i = start + 1;
    if chars.get(i) == Some(&'^') {
        return Err(err(
            i,
            "negated classes are not supported; list the allowed characters",
        ));
    }
    let mut set = 0u128;
    loop {
        let c = *chars
            .get(i)
            .ok_or_else(|| err(start, "character class is not closed with `]`"))?;
        let (lo, next) = match c {
            ']' => {
                if set == 0 {
                    return Err(err(i, "character class is empty"));
                }
                return Ok((set, i + 1));
            }
            '\\' => {
                let e = chars.get(i + 1).copied();
                match e {
                    Some('d') | Some('w') => {
                        set |= escape_set(e).unwrap_or(0);
                        i += 2;
                        continue;
                    }
                    Some(p) if p.is_ascii_punctuation() => (p, i + 2),
                    _ => {
                        return Err(err(
                            i,
                            "`\\` must be followed by d, w or a punctuation character",
                        ));
                    }
                }
            }
            c if c.is_ascii_graphic() || c == ' ' => (c, i + 1),
            _ => {
                return Err(err(
                    i,
                    "only printable ASCII characters may appear in a pattern",
                ));
            }
        };
        // A `-` between two characters makes a range; first or last it is literal.
        if chars.get(next) == Some(&'-') && chars.get(next + 1).is_some_and(|&h| h != ']') {
            let (hi, after) = match chars.get(next + 1).copied() {
                Some('\\') => match chars.get(next + 2).copied() {
                    Some(p) if p.is_ascii_punctuation() => (p, next + 3),
                    _ => return Err(err(next + 1, "invalid range end")),
                },
                Some(h) if h.is_ascii_graphic() || h == ' ' => (h, next + 2),
                _ => return Err(err(next + 1, "invalid range end")),
            };
            if hi < lo {
                return Err(err(i, "range is backwards"));
            }
            // Both ends are ASCII, checked above.
            set |= range_set(lo as u8, hi as u8);
            i = after;
        } else {
            set |= 1u128 << (lo as u32);
            i = next;
        }
    }
}

/// Parses `{n}` or `{n,m}` starting at `start` (the `{`).
fn parse_count(chars: &[char], start: usize) -> Result<(u16, u16, usize), PatternError> {
    let err = |position: usize, message: &str| PatternError {
        position,
        message: message.to_string(),
    };
    let close = chars
        .iter()
        .skip(start)
        .position(|&c| c == '}')
        .map(|p| p + start)
        .ok_or_else(|| err(start, "repetition is not closed with `}`"))?;
    let inner: String = chars.get(start + 1..close).unwrap_or(&[]).iter().collect();
    let number = |s: &str| -> Result<u16, PatternError> {
        let n: u16 = s.trim().parse().map_err(|_| {
            err(
                start,
                "repetition counts must be whole numbers, as in {1,32}",
            )
        })?;
        if n > MAX_REPEAT {
            return Err(err(start, "repetition count is larger than 1024"));
        }
        Ok(n)
    };
    let (min, max) = match inner.split_once(',') {
        None => {
            let n = number(&inner)?;
            (n, n)
        }
        Some((_, hi)) if hi.trim().is_empty() => {
            return Err(err(
                start,
                "unbounded repetition is not allowed; write {min,max}",
            ));
        }
        Some((lo, hi)) => (number(lo)?, number(hi)?),
    };
    if max < min {
        return Err(err(start, "repetition maximum is below its minimum"));
    }
    if max == 0 {
        return Err(err(start, "repetition {0} matches nothing"));
    }
    Ok((min, max, close + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn p(s: &str) -> Pattern {
        Pattern::new(s).unwrap()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn class_with_bounded_count_matches_whole_value_only() {
        let cust = p("[A-Z0-9]{6,10}");
        assert!(cust.matches(b"ABC123"));
        assert!(cust.matches(b"ABCDEF1234"));
        assert!(!cust.matches(b"ABC12"));
        assert!(!cust.matches(b"ABCDEF12345"));
        assert!(!cust.matches(b"abc123"));
        assert!(!cust.matches(b"ABC 123"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn literal_prefix_and_digits() {
        let cust = p("CUST-\\d{8}");
        assert!(cust.matches(b"CUST-12345678"));
        assert!(!cust.matches(b"CUST-1234567"));
        assert!(!cust.matches(b"CUSX-12345678"));
        assert_eq!(cust.min_len(), 13);
        assert_eq!(cust.max_len(), 13);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn backtracking_cases_match_correctly() {
        // Greedy matching without backtracking would fail these.
        let x = p("[A-Z0-9]{1,10}[0-9]{2}");
        assert!(x.matches(b"AB12"));
        assert!(!x.matches(b"12"));
        assert!(x.matches(b"A12"));
        assert!(!x.matches(b"AB1"));
        let y = p("a?a{2}");
        assert!(y.matches(b"aa"));
        assert!(y.matches(b"aaa"));
        assert!(!y.matches(b"a"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn class_literals_escapes_and_trailing_dash() {
        let t = p("[\\w.-]{1,8}");
        assert!(t.matches(b"a.b-c_9"));
        assert!(!t.matches(b"a/b"));
        let dot = p("a\\.b");
        assert!(dot.matches(b"a.b"));
        assert!(!dot.matches(b"axb"));
        let any = p(".{3}");
        assert!(any.matches(b"a/~"));
        assert!(!any.matches(b"a b"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn non_ascii_and_control_bytes_never_match() {
        let any = p(".{1,4}");
        assert!(!any.matches(b"\xff"));
        assert!(!any.matches("é".as_bytes()));
        assert!(!any.matches(b"\x00"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unbounded_and_unsupported_syntax_is_refused_with_position() {
        for (src, pos) in [
            ("[a-z]+", 5),
            ("[a-z]*", 5),
            ("[a-z]{1,}", 5),
            ("(ab){2}", 0),
            ("a|b", 1),
            ("^abc", 0),
            ("[^a]", 1),
            ("[a-z", 0),
            ("", 0),
            ("{2}", 0),
            ("a{2}{3}", 4),
            ("[z-a]", 1),
            ("a{5,2}", 1),
            ("a{2000}", 1),
            ("\\q", 0),
        ] {
            let e = Pattern::new(src).unwrap_err();
            assert_eq!(e.position, pos, "{src:?}: {e}");
        }
        assert!(
            Pattern::new("[a-z]+")
                .unwrap_err()
                .message
                .contains("{min,max}")
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn uuid_shaped_pattern() {
        let u = p("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}");
        assert!(u.matches(b"123e4567-e89b-42d3-a456-426614174000"));
        assert!(!u.matches(b"123e4567e89b42d3a456426614174000"));
    }
}
