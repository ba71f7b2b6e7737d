//! The response fields that tell a client where it stands: `RateLimit-Policy` and
//! `RateLimit` as draft-ietf-httpapi-ratelimit-headers-11 defines them (structured-field
//! lists of one item each, named by the limit), `Retry-After` on a 429, and optionally the
//! older `X-RateLimit-*` trio.
//!
//! - `RateLimit-Policy: "payment_create";q=10;w=60`: the quota `q` per window `w` seconds.
//! - `RateLimit: "payment_create";r=2;t=18`: `r` requests remain, and the key's bucket is
//!   full again in `t` seconds.
//!
//! No partition key (`pk`) is sent: the key is the customer, and the client knows who it
//! is; a raw customer id in a response field is what this filter must never leak.

use crate::config::{Config, ResponseFieldsConfig};
use crate::policy::Standing;

/// The fields for `standing`, and `Retry-After` when given (a refusal).
pub fn response_fields(
    config: &Config,
    standing: &Standing,
    retry_after_s: Option<u64>,
) -> Vec<(&'static str, String)> {
    let Some(limit) = config.limits.get(standing.limit) else {
        return Vec::new();
    };
    let name = &limit.name;
    let mut fields = vec![
        ("ratelimit-policy", limit.policy_field.clone()),
        (
            "ratelimit",
            format!("\"{name}\";r={};t={}", standing.remaining, standing.reset_s),
        ),
    ];
    if let Some(seconds) = retry_after_s {
        fields.push(("retry-after", seconds.to_string()));
    }
    let ResponseFieldsConfig { x_rate_limit, .. } = config.response_fields;
    if x_rate_limit {
        fields.push(("x-ratelimit-limit", limit.rate.quota().to_string()));
        fields.push(("x-ratelimit-remaining", standing.remaining.to_string()));
        fields.push(("x-ratelimit-reset", standing.reset_s.to_string()));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn config(x_rate_limit: bool) -> Config {
        Config::from_json(
            format!(
                r#"{{"instance":"rl","limits":[{{"name":"payment_create","key":"customer","quota":10,"window":"1m","burst":3}}],"responseFields":{{"xRateLimit":{x_rate_limit}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_refusal_carries_the_policy_where_it_stands_and_when_to_retry() {
        let standing = Standing {
            limit: 0,
            remaining: 0,
            reset_s: 18,
        };
        assert_eq!(
            response_fields(&config(false), &standing, Some(6)),
            [
                (
                    "ratelimit-policy",
                    "\"payment_create\";q=10;w=60".to_string()
                ),
                ("ratelimit", "\"payment_create\";r=0;t=18".to_string()),
                ("retry-after", "6".to_string()),
            ]
        );
        let with_trio = response_fields(&config(true), &standing, None);
        assert_eq!(with_trio.len(), 5);
        assert!(with_trio.contains(&("x-ratelimit-reset", "18".to_string())));
    }
}
