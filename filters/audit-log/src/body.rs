//! Banking context from a request body: on the routes configured for it, named JSON pointers
//! (`/amount`, `/creditorAccount/iban`) pick values out of the JSON body, each masked by its
//! rule before it goes into the record. Numbers are kept as the text the client sent
//! (`12.50` stays `12.50`, never a float), and masked like any text (a card number sent as a
//! JSON number is a card number). Members named like card security data (CVV, PIN, track
//! data) are never recorded: a pointer may not name one, and one inside a picked object is
//! left out.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::mask::PanMasking;
use crate::record;

/// Card security data (PCI DSS 3.3.1: sensitive authentication data is not kept after
/// authorisation): a member whose name, compared with [`drop_key`], contains one of these is
/// never recorded (`cardCvv`, `cvv2`, `card_verification_value`, `encryptedPinBlock`,
/// `track2Data`, `magneticStripe`...). Configuration can add names, never remove these.
pub const DROPPED_IF_CONTAINED: &[&str] = &[
    "cvv",
    "cvc",
    "cvn",
    "csc",
    "cav2",
    "securitycode",
    "verificationcode",
    "verificationvalue",
    "pinblock",
    "track1",
    "track2",
    "trackdata",
    "magstripe",
    "magneticstripe",
];

/// Names that drop a member when its name starts or ends with one (`pin`, `pinCode`,
/// `cardPin`): inside a name, too many words hold them (`shipping`).
pub const DROPPED_AT_EITHER_END: &[&str] = &["pin"];

/// Names that drop a member only as the whole name.
pub const DROPPED_IF_EQUAL: &[&str] = &["cid"];

/// Whether a member named `name` is card security data, or one of `extra` (the
/// configuration's [`drop_key`]s, matched whole).
pub fn is_dropped(name: &str, extra: &[String]) -> bool {
    let key = drop_key(name);
    DROPPED_IF_CONTAINED.iter().any(|d| key.contains(d))
        || DROPPED_AT_EITHER_END
            .iter()
            .any(|d| key.starts_with(d) || key.ends_with(d))
        || DROPPED_IF_EQUAL.contains(&key.as_str())
        || extra.contains(&key)
}

/// Recorded objects and arrays go this deep below the picked value, with this many members.
const MAX_DEPTH: usize = 4;
const MAX_MEMBERS: usize = 32;

/// A member name as compared with the drop list: ASCII lower case, without `-` and `_`, so
/// `card_verification-Code` and `cardVerificationCode` are one name.
pub fn drop_key(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// How a picked value is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldMask {
    /// Card numbers, IBANs and e-mail addresses, as in every client text.
    Standard,
    /// Only the last four characters of the text are kept (account numbers); shorter
    /// values are hidden whole.
    Last4,
}

/// One named value to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyField {
    pub name: String,
    /// The pointer's reference tokens, unescaped.
    pub tokens: Vec<String>,
    pub mask: FieldMask,
}

/// What to record from a body, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyPolicy {
    pub fields: Vec<BodyField>,
    /// [`drop_key`]s of the members the configuration adds to [`is_dropped`]'s.
    pub dropped: Vec<String>,
    /// Bodies longer than this are not read.
    pub max_bytes: usize,
}

/// Why a body gave no banking context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unread {
    /// No body came.
    Empty,
    /// Longer than `maxBodyBytes`.
    TooLarge,
    /// The VM held as many bodies as it may at once (a flood of slow uploads).
    Busy,
    /// Not a JSON object.
    NotJson,
    /// An object with one member name twice: which one the service used is unknown, so
    /// neither is recorded.
    DuplicateMember,
}

impl Unread {
    pub fn as_str(self) -> &'static str {
        match self {
            Unread::Empty => "no-body",
            Unread::TooLarge => "too-large",
            Unread::Busy => "busy",
            Unread::NotJson => "not-json",
            Unread::DuplicateMember => "duplicate-member",
        }
    }
}

/// The reference tokens of an RFC 6901 JSON pointer other than the whole document, e.g.
/// `/creditorAccount/iban`.
pub fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err("a JSON pointer to a member, e.g. /amount".into());
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                match c {
                    '~' => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err("~ must be followed by 0 or 1 (RFC 6901)".to_string()),
                    },
                    c => out.push(c),
                }
            }
            Ok(out)
        })
        .collect()
}

/// An object's members in the order sent (the body's names are known to be distinct).
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

fn members(raw: &str) -> Option<Members<'_>> {
    serde_json::from_str(raw).ok()
}

/// A JSON document in which no object names a member twice, checked in one pass.
struct Unambiguous;

const DUPLICATE: &str = "duplicate member";

impl<'de> serde::Deserialize<'de> for Unambiguous {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Check;
        impl<'de> Visitor<'de> for Check {
            type Value = Unambiguous;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unambiguous, A::Error> {
                let mut names = BTreeSet::new();
                while let Some(name) = map.next_key::<String>()? {
                    if !names.insert(name) {
                        return Err(serde::de::Error::custom(DUPLICATE));
                    }
                    map.next_value::<Unambiguous>()?;
                }
                Ok(Unambiguous)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unambiguous, A::Error> {
                while seq.next_element::<Unambiguous>()?.is_some() {}
                Ok(Unambiguous)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Unambiguous, E> {
                Ok(Unambiguous)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Unambiguous, E> {
                Ok(Unambiguous)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Unambiguous, E> {
                Ok(Unambiguous)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Unambiguous, E> {
                Ok(Unambiguous)
            }
            fn visit_str<E>(self, _: &str) -> Result<Unambiguous, E> {
                Ok(Unambiguous)
            }
            fn visit_unit<E>(self) -> Result<Unambiguous, E> {
                Ok(Unambiguous)
            }
        }
        deserializer.deserialize_any(Check)
    }
}

/// The banking context of `body`: each field whose pointer resolves, by name.
pub fn banking_context(
    body: &[u8],
    policy: &BodyPolicy,
    pans: &PanMasking,
) -> Result<Map<String, Value>, Unread> {
    if body.is_empty() {
        return Err(Unread::Empty);
    }
    if body.len() > policy.max_bytes {
        return Err(Unread::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| Unread::NotJson)?;
    // The whole body is checked first: a malformed body or a duplicate anywhere leaves
    // every field out, so a record never shows a value the service may have read otherwise.
    if let Err(e) = serde_json::from_str::<Unambiguous>(text) {
        return Err(if e.to_string().starts_with(DUPLICATE) {
            Unread::DuplicateMember
        } else {
            Unread::NotJson
        });
    }
    let whole: &RawValue = serde_json::from_str(text).map_err(|_| Unread::NotJson)?;
    if !whole.get().trim_start().starts_with('{') {
        return Err(Unread::NotJson);
    }
    let mut context = Map::new();
    for field in &policy.fields {
        let Some(raw) = resolve(whole, &field.tokens) else {
            continue;
        };
        let value = recorded(raw, policy, pans, 0);
        let value = match field.mask {
            FieldMask::Standard => value,
            FieldMask::Last4 => last4(&value),
        };
        context.insert(field.name.clone(), value);
    }
    Ok(context)
}

/// The value a pointer names, if it names one.
fn resolve<'a>(root: &'a RawValue, tokens: &[String]) -> Option<&'a RawValue> {
    let mut here = root;
    for token in tokens {
        here = match here.get().trim_start().as_bytes().first() {
            Some(b'{') => {
                let Members(members) = members(here.get())?;
                members.into_iter().find(|(n, _)| n == token)?.1
            }
            Some(b'[') => {
                // RFC 6901: an index is 0 or digits without a leading zero.
                let plain = token == "0"
                    || !token.starts_with('0') && token.bytes().all(|b| b.is_ascii_digit());
                let index: usize = token.parse().ok().filter(|_| plain)?;
                let items: Vec<&RawValue> = serde_json::from_str(here.get()).ok()?;
                *items.get(index)?
            }
            _ => return None,
        };
    }
    Some(here)
}

/// A value as recorded: strings and numbers masked as text, dropped members left out,
/// containers cut at [`MAX_DEPTH`] and [`MAX_MEMBERS`].
fn recorded(raw: &RawValue, policy: &BodyPolicy, pans: &PanMasking, depth: usize) -> Value {
    let text = raw.get().trim();
    match text.as_bytes().first() {
        Some(b'{') if depth < MAX_DEPTH => {
            let mut out = Map::new();
            if let Some(Members(members)) = members(text) {
                let kept = members
                    .into_iter()
                    .filter(|(name, _)| !is_dropped(name, &policy.dropped));
                for (name, value) in kept.take(MAX_MEMBERS) {
                    let name = record::masked_verbatim(&name, pans);
                    out.insert(name, recorded(value, policy, pans, depth + 1));
                }
            }
            Value::Object(out)
        }
        Some(b'[') if depth < MAX_DEPTH => {
            let items: Vec<&RawValue> = serde_json::from_str(text).unwrap_or_default();
            Value::Array(
                items
                    .into_iter()
                    .take(MAX_MEMBERS)
                    .map(|item| recorded(item, policy, pans, depth + 1))
                    .collect(),
            )
        }
        Some(b'{' | b'[') => Value::String("…".into()),
        Some(b'"') => match serde_json::from_str::<String>(text) {
            Ok(s) => Value::String(record::masked_verbatim(&s, pans)),
            Err(_) => Value::Null,
        },
        Some(b't') => Value::Bool(true),
        Some(b'f') => Value::Bool(false),
        Some(b'n') => Value::Null,
        // A number, as sent.
        _ => Value::String(record::masked_verbatim(text, pans)),
    }
}

/// A recorded value reduced to its last four characters (objects and arrays: hidden whole).
fn last4(value: &Value) -> Value {
    let text = match value {
        Value::String(s) => s.as_str(),
        Value::Null => return Value::Null,
        _ => return Value::String("****".into()),
    };
    let count = text.chars().count();
    if count <= 4 {
        return Value::String("****".into());
    }
    let tail: String = text.chars().skip(count - 4).collect();
    Value::String(format!("****{tail}"))
}

/// Whether a pointer token names a dropped member.
pub fn names_dropped(tokens: &[String], dropped: &[String]) -> bool {
    tokens.iter().any(|t| is_dropped(t, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn policy(fields: &[(&str, &str, FieldMask)]) -> BodyPolicy {
        BodyPolicy {
            fields: fields
                .iter()
                .map(|(name, pointer, mask)| BodyField {
                    name: name.to_string(),
                    tokens: parse_pointer(pointer).unwrap(),
                    mask: *mask,
                })
                .collect(),
            dropped: Vec::new(),
            max_bytes: 4096,
        }
    }

    fn context(body: &str, policy: &BodyPolicy) -> Result<Value, Unread> {
        banking_context(body.as_bytes(), policy, &PanMasking::Truncate).map(Value::Object)
    }

    const PAYMENT: &str = r#"{
        "amount": 1250.50, "currency": "EUR",
        "creditorAccount": {"iban": "DE89370400440532013000", "name": "Jane Doe"},
        "debtorAccount": {"number": "12345678901"},
        "card": {"number": "4111 1111 1111 1111", "expiry": "12/28", "cvv": "123",
                 "PIN_block": "0412AC89"},
        "remittance": ["invoice 4111111111111111", 17]
    }"#;

    #[wasm_bindgen_test(unsupported = test)]
    fn named_fields_are_picked_and_masked_numbers_kept_as_sent() {
        let policy = policy(&[
            ("amount", "/amount", FieldMask::Standard),
            ("currency", "/currency", FieldMask::Standard),
            ("creditorIban", "/creditorAccount/iban", FieldMask::Standard),
            ("debtorAccount", "/debtorAccount/number", FieldMask::Last4),
            ("card", "/card", FieldMask::Standard),
            ("remittance", "/remittance/0", FieldMask::Standard),
            ("absent", "/ultimateCreditor/name", FieldMask::Standard),
        ]);
        let context = context(PAYMENT, &policy).unwrap();
        assert_eq!(
            context,
            serde_json::json!({
                "amount": "1250.50",
                "currency": "EUR",
                "creditorIban": "DE****************3000",
                "debtorAccount": "****8901",
                "card": {"number": "411111******1111", "expiry": "12/28"},
                "remittance": "invoice 411111******1111",
            })
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_card_number_sent_as_a_json_number_is_masked() {
        let policy = policy(&[("pan", "/pan", FieldMask::Standard)]);
        assert_eq!(
            context(r#"{"pan": 4111111111111111}"#, &policy).unwrap()["pan"],
            "411111******1111"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bad_too_large_or_ambiguous_bodies_give_nothing() {
        let policy = policy(&[("amount", "/amount", FieldMask::Standard)]);
        assert_eq!(context("not json", &policy), Err(Unread::NotJson));
        assert_eq!(context(r#"{"amount": 1"#, &policy), Err(Unread::NotJson));
        // Which amount did the service take? Neither is recorded.
        assert_eq!(
            context(r#"{"amount": "1.00", "amount": "9999.00"}"#, &policy),
            Err(Unread::DuplicateMember)
        );
        assert_eq!(
            context(r#"{"amount": "1.00", "x": [{"a": 1, "a": 2}]}"#, &policy),
            Err(Unread::DuplicateMember)
        );
        let long = format!(r#"{{"amount": "1.00", "pad": "{}"}}"#, "x".repeat(5000));
        assert_eq!(context(&long, &policy), Err(Unread::TooLarge));
        // Deep nesting does not trap.
        let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
        assert_eq!(context(&deep, &policy), Err(Unread::NotJson));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn pointers_follow_rfc_6901() {
        assert_eq!(parse_pointer("/a~1b/c~0d/0").unwrap(), ["a/b", "c~d", "0"]);
        assert!(parse_pointer("amount").is_err());
        assert!(parse_pointer("").is_err());
        assert!(parse_pointer("/a~2").is_err());
        let policy = policy(&[
            ("slash", "/a~1b", FieldMask::Standard),
            ("leadingZero", "/list/01", FieldMask::Standard),
            ("second", "/list/1", FieldMask::Standard),
        ]);
        let context = context(r#"{"a/b": "x", "list": ["p", "q"]}"#, &policy).unwrap();
        assert_eq!(context, serde_json::json!({"slash": "x", "second": "q"}));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn security_codes_are_never_recorded() {
        let dropped = policy(&[]).dropped;
        assert!(names_dropped(
            &parse_pointer("/card/CVV2").unwrap(),
            &dropped
        ));
        assert!(names_dropped(
            &parse_pointer("/card/pin_block").unwrap(),
            &dropped
        ));
        assert!(!names_dropped(
            &parse_pointer("/card/number").unwrap(),
            &dropped
        ));
        for name in [
            "cardCvv",
            "card_cvv",
            "cvvNumber",
            "cvc3",
            "CVN",
            "csc",
            "cardVerificationCode",
            "card-verification-value",
            "pinCode",
            "cardPin",
            "encryptedPinBlock",
            "track2Data",
            "track2Equivalent",
            "magneticStripe",
            "CID",
        ] {
            assert!(is_dropped(name, &[]), "{name}");
        }
        for name in [
            "shipping",
            "number",
            "expiry",
            "cardholderName",
            "accountId",
        ] {
            assert!(!is_dropped(name, &[]), "{name}");
        }
        assert!(is_dropped(
            "One-Time_Password",
            &[drop_key("oneTimePassword")]
        ));
        let policy = policy(&[("all", "/card", FieldMask::Standard)]);
        let card = context(PAYMENT, &policy).unwrap();
        let text = card.to_string();
        assert!(
            !text.contains("123\"") && !text.contains("0412AC89"),
            "{text}"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn last4_hides_short_values_and_containers_whole() {
        assert_eq!(last4(&Value::String("1234".into())), "****");
        assert_eq!(last4(&serde_json::json!({"a": 1})), "****");
        assert_eq!(last4(&Value::String("GB12345678".into())), "****5678");
    }
}
