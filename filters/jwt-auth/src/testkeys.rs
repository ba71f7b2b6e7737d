//! What jwt-auth's unit tests add to the shared test keys (`test_tokens`): a fixed "now" so no
//! test depends on the date, the claims valid at it, and minting by the filter's own
//! [`Algorithm`].

use serde_json::{Value, json};

use crate::jwks::Algorithm;

/// A fixed "now" for tests: 2030-01-01T00:00:00Z, in seconds.
pub const NOW: u64 = 1_893_456_000;

/// Standard valid claims at [`NOW`]: issuer "https://idp.bank.example", audience
/// "payments-api", subject "cust-42", valid for 5 minutes.
pub fn good_claims() -> Value {
    test_tokens::claims_at(NOW, json!({"sub": "cust-42"}))
}

/// [`good_claims`] with members added or replaced (a `null` removes the member).
pub fn claims_with(changes: Value) -> Value {
    test_tokens::claims_with(good_claims(), changes)
}

/// The kid `test_tokens::every_family_jwks` publishes the key for `alg` under.
pub fn kid_for(alg: Algorithm) -> &'static str {
    test_tokens::kid_for(alg.name())
}

/// Mints a token signed by the test key for `alg`, with the given `kid` and claims.
pub fn mint(alg: Algorithm, kid: Option<&str>, claims: Value) -> String {
    test_tokens::mint(alg.name(), kid, claims)
}
