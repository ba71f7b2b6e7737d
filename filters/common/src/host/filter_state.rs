//! The filter-state contract ([`crate::identity`]) on the host: publishing and reading it
//! through `proxy_set_property`/`proxy_get_property`, and declaring its names read-only where
//! the host can.
//!
//! # Read-only declaration (Envoy's `declare_property`)
//!
//! Envoy registers a foreign function `declare_property` whose argument is a serialized
//! `DeclarePropertyArguments` (`source/extensions/common/wasm/ext/declare_property.proto`):
//! `name` = 1 (string), `readonly` = 2 (bool), `type` = 3 (`WasmType`: Bytes 0, String 1,
//! FlatBuffers 2, Protobuf 3), `schema` = 4 (bytes), `span` = 5 (`LifeSpan`: FilterChain 0,
//! DownstreamRequest 1, DownstreamConnection 2). What Envoy does with it (`context.cc`):
//! - The declaration is stored on the *calling root context* (`state_prototypes_`), so each
//!   plugin declares what it writes, in its own `on_configure`, on every VM. Declaring a name
//!   twice on one root context answers BadArgument and keeps the first declaration.
//! - `set_property` on a stream looks for filter state `wasm.<name>`; when there is none it
//!   creates it from the writing plugin's declaration (or the default: mutable bytes). A
//!   read-only value accepts its first write and answers BadArgument to every later one, from
//!   any filter, the declaring one included. So each name may be written once per stream.
//! - Only the filter that *creates* the value decides: a name nobody declared, or written
//!   first by a filter that did not declare it, stays writable.
//!
//! We declare with `span` FilterChain, not DownstreamRequest: an internal redirect recreates
//! the filter chain, keeping only Request-span state, and jwt-auth on the new chain must be
//! able to publish again; FilterChain state is still there for the access log at the end.
//!
//! A host without the function (the harness when told so, an Envoy built without it)
//! answers `proxy_call_foreign_function` with NotFound: the names stay writable, everything
//! else works the same, and [`declare_read_only`] says so for the caller to log once.

use super::calls::{self, HostError, HostResult, Status};
use crate::identity::{Authentication, ContractError, Refusal, VerifiedIdentity, names};
use crate::mode::WouldDenyLog;
use crate::protobuf::{push_bytes, push_varint};
use std::fmt;

/// Envoy's foreign function that declares a filter-state property.
pub const DECLARE_PROPERTY: &str = "declare_property";

/// `LifeSpan` values of `DeclarePropertyArguments.span`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifeSpan {
    FilterChain = 0,
    DownstreamRequest = 1,
    DownstreamConnection = 2,
}

/// A serialized `DeclarePropertyArguments` for a read-only bytes property: hand-written
/// protobuf (field 1 length-delimited, field 2 varint 1; `type` Bytes and `span`
/// FilterChain are the zero values, which proto3 leaves out, the rest when not zero).
pub fn declare_property_arguments(name: &str, span: LifeSpan) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 8);
    push_bytes(&mut out, 1, name.as_bytes());
    out.extend_from_slice(&[0x10, 0x01]); // field 2 (readonly), varint true
    if span != LifeSpan::FilterChain {
        out.push(0x28); // field 5, wire type 0
        push_varint(&mut out, span as u64);
    }
    out
}

/// How the names a filter publishes are protected on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Declared read-only: a later write is refused by the host.
    ReadOnly,
    /// The host has no `declare_property`: the names stay writable.
    Unavailable,
}

/// Declares `properties` read-only on the current (root) context. `Unavailable` when the host
/// lacks the function; an error when it has it but refused a declaration for another reason
/// (the names then stay writable too: the caller logs it and carries on).
pub fn declare_read_only(properties: &[&str]) -> HostResult<Protection> {
    for name in properties {
        let arguments = declare_property_arguments(name, LifeSpan::FilterChain);
        match calls::call_foreign_function(DECLARE_PROPERTY, &arguments) {
            Ok(_) => {}
            Err(e) if e.status == Status::NOT_FOUND => return Ok(Protection::Unavailable),
            // Already declared on this root context: Envoy keeps the first declaration,
            // which was this one.
            Err(e) if e.status == Status::BAD_ARGUMENT => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Protection::ReadOnly)
}

/// Declares the names a filter publishes and logs, once, which protection they have.
/// Never fails: without a declaration the contract still holds, only unprotected.
pub fn declare_and_log(filter: &str, properties: &[&str]) -> Protection {
    match declare_read_only(properties) {
        Ok(Protection::ReadOnly) => {
            log::info!(
                "{filter}: filter state {} declared read-only",
                properties.join(", ")
            );
            Protection::ReadOnly
        }
        Ok(Protection::Unavailable) => {
            log::warn!(
                "{filter}: the proxy has no {DECLARE_PROPERTY}; filter state {} stays writable by later filters",
                properties.join(", ")
            );
            Protection::Unavailable
        }
        Err(e) => {
            log::warn!(
                "{filter}: could not declare filter state read-only ({e}); it stays writable by later filters"
            );
            Protection::Unavailable
        }
    }
}

/// A property's value on the current stream; `None` when it is not set.
fn property(name: &str) -> HostResult<Option<Vec<u8>>> {
    calls::property(&[name])
}

/// Why the contract could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    Host(HostError),
    Contract(ContractError),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Host(e) => e.fmt(f),
            ReadError::Contract(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads every name through the host, stopping at the first refused call.
fn read_with<T>(
    decode: impl FnOnce(&mut dyn FnMut(&str) -> Option<Vec<u8>>) -> Result<T, ContractError>,
) -> Result<T, ReadError> {
    let mut failure = None;
    let mut lookup = |name: &str| match property(name) {
        Ok(value) => value,
        Err(e) => {
            failure.get_or_insert(e);
            None
        }
    };
    let decoded = decode(&mut lookup);
    if let Some(e) = failure {
        return Err(ReadError::Host(e));
    }
    decoded.map_err(ReadError::Contract)
}

/// Sets each property; the first refusal is returned.
fn publish(properties: &[(&'static str, Vec<u8>)]) -> HostResult<()> {
    for (name, value) in properties {
        calls::set_property(&[name], value)?;
    }
    Ok(())
}

/// Publishes how jwt-auth let the request through: [`names::IDENTITY`], one host call.
pub fn publish_authentication(authentication: &Authentication) -> HostResult<()> {
    publish_encoded_authentication(&authentication.encode())
}

/// [`publish_authentication`] for a value [`Authentication::encode`] made earlier (jwt-auth
/// encodes a token's once, when it verifies it, and hands the same bytes on at each reuse).
pub fn publish_encoded_authentication(value: &[u8]) -> HostResult<()> {
    calls::set_property(&[names::IDENTITY], value)
}

/// Writes [`names::IDENTITY`] empty, for a request that goes on without an identity
/// (jwt-auth in dry-run letting a failed token through): readers find no identity, and
/// where the name is declared read-only no later filter can add one.
pub fn publish_no_identity() -> HostResult<()> {
    calls::set_property(&[names::IDENTITY], b"")
}

/// What jwt-auth published on this request (see [`Authentication::decode`]).
pub fn read_authentication() -> Result<Option<Authentication>, ReadError> {
    let value = property(names::IDENTITY).map_err(ReadError::Host)?;
    Authentication::decode(value.as_deref()).map_err(ReadError::Contract)
}

/// The verified identity of this request: `Ok(None)` when there is none (jwt-auth did not
/// run, or authentication was bypassed). An error must fail the request closed.
pub fn read_identity() -> Result<Option<VerifiedIdentity>, ReadError> {
    let value = property(names::IDENTITY).map_err(ReadError::Host)?;
    VerifiedIdentity::decode(value.as_deref()).map_err(ReadError::Contract)
}

/// What [`publish_refusal`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalRecord {
    Published,
    /// An earlier refusal is recorded on this request and stands.
    AlreadyRecorded,
}

/// Records that `filter` refused the request for `reason` (both slugs), unless a refusal is
/// already recorded: the first one stands.
///
/// Best effort for the caller: the refusal is sent whatever this answers, since turning a
/// 4xx into a 500 because the audit trail could not be written would hide the real answer
/// from the client. The caller logs the error.
pub fn publish_refusal(filter: &str, reason: &str) -> Result<RefusalRecord, ReadError> {
    let refusal = Refusal::new(filter, reason).ok_or(ReadError::Contract(
        ContractError::Malformed(names::DENY_REASON),
    ))?;
    if property(names::DENIED_BY)
        .map_err(ReadError::Host)?
        .is_some()
    {
        return Ok(RefusalRecord::AlreadyRecorded);
    }
    publish(&refusal.to_properties()).map_err(ReadError::Host)?;
    Ok(RefusalRecord::Published)
}

/// [`publish_refusal`] for a filter about to answer: a failure is logged, never returned,
/// so the answer the filter chose is the one the client gets.
pub fn record_refusal(filter: &str, reason: &str) {
    match publish_refusal(filter, reason) {
        Ok(RefusalRecord::Published) => {}
        Ok(RefusalRecord::AlreadyRecorded) => {
            log::debug!("{filter}: an earlier refusal is already recorded; it stands");
        }
        Err(e) => log::warn!("{filter}: could not record the refusal in filter state: {e}"),
    }
}

/// What a filter in dry-run does with a request it would have refused, besides counting it:
/// logs it (`shown`, e.g. `401 missing-token`) at most once per reason per
/// [`WouldDenyLog::INTERVAL`], and records it with [`record_would_deny`].
pub fn report_would_deny(
    filter: &str,
    reason: &'static str,
    shown: &str,
    log: &std::cell::RefCell<WouldDenyLog>,
) {
    let now_ms = crate::clock::monotonic().map_or(0, |m| m.0 / 1_000_000);
    if log.borrow_mut().should_log(reason, now_ms) {
        log::info!(
            "{filter}: dry-run: would refuse with {shown} (logged once a minute per reason)"
        );
    }
    record_would_deny(filter, reason);
}

/// Records, in dry-run, that `filter` would have refused the request for `reason`: appended
/// to `banking.decision.would_deny` after what earlier filters recorded. Best effort like
/// [`record_refusal`]: the request goes on whatever this answers.
pub fn record_would_deny(filter: &str, reason: &str) {
    let Some(refusal) = Refusal::new(filter, reason) else {
        log::warn!("{filter}: {reason:?} is not a reason slug; not recorded");
        return;
    };
    let recorded = property(names::WOULD_DENY).and_then(|existing| {
        let value = crate::identity::append_would_deny(existing.as_deref(), &refusal);
        calls::set_property(&[names::WOULD_DENY], &value)
    });
    if let Err(e) = recorded {
        log::warn!("{filter}: could not record the dry-run refusal in filter state: {e}");
    }
}

/// The refusal recorded on this request, if any.
pub fn read_refusal() -> Result<Option<Refusal>, ReadError> {
    read_with(|lookup| Refusal::from_lookup(lookup))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declare_property_arguments_are_the_protobuf_envoy_parses() {
        // name "a.b" (field 1), readonly true (field 2); type and span left at zero.
        assert_eq!(
            declare_property_arguments("a.b", LifeSpan::FilterChain),
            [0x0a, 3, b'a', b'.', b'b', 0x10, 1]
        );
        assert_eq!(
            declare_property_arguments("x", LifeSpan::DownstreamRequest),
            [0x0a, 1, b'x', 0x10, 1, 0x28, 1]
        );
        let long = "n".repeat(200);
        let encoded = declare_property_arguments(&long, LifeSpan::FilterChain);
        assert_eq!(&encoded[..3], &[0x0a, 0xc8, 0x01]);
        assert_eq!(encoded.len(), 3 + 200 + 2);
    }
}
