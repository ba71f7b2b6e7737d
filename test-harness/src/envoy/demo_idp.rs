//! The demo identity provider `make run` starts so jwt-auth works offline: a fresh ES256 key
//! made at start-up, its JWKS served by a [`JwksServer`] on loopback at the cluster the
//! plugin fetches from, and one demo token that passes the example routes.
//!
//! What the token carries is read from the plugins' own configuration, so it follows the
//! WasmPlugin file: `iss` and the first `aud` of the first provider with `remoteJwks`, every
//! `requiredScopes` of every rule in `scope`, the customer-binding claim set to
//! [`DEMO_CUSTOMER_ID`], and `sub` and any other `requiredClaims` filled in. It is a demo
//! convenience, minted natively with jwt-simple; the end-to-end tests mint their tokens with
//! another implementation.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use jwt_simple::prelude::*;
use serde_json::{Map, Value, json};

use super::EnvoyError;
use super::jwks_server::JwksServer;
use super::wasmplugin::WasmPlugin;

/// The customer the demo token acts for; also valid for banking-headers' `x-customer-id`.
pub const DEMO_CUSTOMER_ID: &str = "CUST-00012345";
/// The demo token's `sub`.
pub const DEMO_SUBJECT: &str = "demo-user";
/// How long the demo token is valid.
pub const DEMO_TOKEN_LIFETIME_SECS: u64 = 3600;

/// A provider that fetches its keys over HTTP, as a plugin's configuration describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwksProvider {
    /// The WasmPlugin that configures it.
    pub plugin: String,
    pub issuer: String,
    pub audience: String,
    /// The Istio-style Envoy cluster the plugin calls, e.g. `outbound|443||idp.bank.svc.cluster.local`.
    pub cluster: String,
    /// The JWKS path on that cluster.
    pub path: String,
}

/// Every `providers[*]` with a `remoteJwks` in the plugins' configurations.
pub fn remote_jwks_providers(plugins: &[WasmPlugin]) -> Vec<RemoteJwksProvider> {
    let mut found = Vec::new();
    for plugin in plugins {
        let providers = plugin
            .plugin_config
            .as_ref()
            .and_then(|c| c.get("providers"))
            .and_then(Value::as_array);
        for provider in providers.into_iter().flatten() {
            let text = |pointer: &str| provider.pointer(pointer).and_then(Value::as_str);
            if let (Some(issuer), Some(audience), Some(cluster), Some(path)) = (
                text("/issuer"),
                text("/audiences/0"),
                text("/remoteJwks/cluster"),
                text("/remoteJwks/path"),
            ) {
                found.push(RemoteJwksProvider {
                    plugin: plugin.name.clone(),
                    issuer: issuer.to_string(),
                    audience: audience.to_string(),
                    cluster: cluster.to_string(),
                    path: path.to_string(),
                });
            }
        }
    }
    found
}

/// The demo token's claims beyond `iss`, `aud`, `iat`, `nbf`, `exp`: read from `plugin`'s
/// configuration (see the module notes).
pub fn demo_claims(plugin: &WasmPlugin) -> Map<String, Value> {
    let config = plugin.plugin_config.clone().unwrap_or(Value::Null);
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(DEMO_SUBJECT));
    let scopes: BTreeSet<&str> = config
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|rule| rule.get("requiredScopes").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !scopes.is_empty() {
        let scopes: Vec<&str> = scopes.into_iter().collect();
        claims.insert("scope".into(), json!(scopes.join(" ")));
    }
    if let Some(claim) = config
        .pointer("/customerBinding/claim")
        .and_then(Value::as_str)
    {
        claims.insert(claim.to_string(), json!(DEMO_CUSTOMER_ID));
    }
    let required = config
        .get("providers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("requiredClaims").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str);
    for claim in required {
        claims
            .entry(claim.to_string())
            .or_insert_with(|| json!("demo"));
    }
    claims
}

/// The running demo identity provider.
pub struct DemoIdentityProvider {
    server: JwksServer,
    provider: RemoteJwksProvider,
    token: String,
    claims: Map<String, Value>,
    kid: String,
}

impl DemoIdentityProvider {
    /// Generates a key, serves its JWKS at `addr` on `provider.path`, and mints the demo token
    /// with `claims` (see [`demo_claims`]).
    pub fn start(
        addr: SocketAddr,
        provider: &RemoteJwksProvider,
        claims: Map<String, Value>,
    ) -> Result<DemoIdentityProvider, EnvoyError> {
        let kid = format!(
            "local-demo-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default()
        );
        let key = ES256KeyPair::generate().with_key_id(&kid);
        let point = key.public_key().public_key().to_bytes_uncompressed();
        let coordinate = |range: std::ops::Range<usize>| {
            point
                .get(range)
                .and_then(|bytes| Base64UrlSafeNoPadding::encode_to_string(bytes).ok())
                .ok_or_else(|| EnvoyError("the demo key's public point is malformed".into()))
        };
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": coordinate(1..33)?, "y": coordinate(33..65)?,
        }]});
        // jwt-simple writes `sub` from its own field; a second one in the custom map would
        // make the payload carry it twice.
        let mut custom = claims.clone();
        let subject = custom.remove("sub");
        let mut token_claims = Claims::with_custom_claims(
            custom,
            jwt_simple::prelude::Duration::from_secs(DEMO_TOKEN_LIFETIME_SECS),
        )
        .with_issuer(&provider.issuer)
        .with_audience(&provider.audience);
        if let Some(subject) = subject.as_ref().and_then(Value::as_str) {
            token_claims = token_claims.with_subject(subject);
        }
        let token = key
            .sign(token_claims)
            .map_err(|e| EnvoyError(format!("cannot sign the demo token: {e}")))?;
        let server =
            JwksServer::start(addr, &provider.path, jwks.to_string().as_bytes()).map_err(|e| {
                EnvoyError(format!(
                    "demo identity provider cannot listen on {addr}: {e}"
                ))
            })?;
        Ok(DemoIdentityProvider {
            server,
            provider: provider.clone(),
            token,
            claims,
            kid,
        })
    }

    /// Where its JWKS is served.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The provider it stands in for.
    pub fn provider(&self) -> &RemoteJwksProvider {
        &self.provider
    }

    /// The demo token (ES256, valid for [`DEMO_TOKEN_LIFETIME_SECS`] from start-up).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The demo token's own claims (besides `iss`, `aud` and the times).
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The demo key's `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS server, e.g. to see how often Envoy fetched.
    pub fn server(&self) -> &JwksServer {
        &self.server
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::client;

    fn jwt_auth() -> WasmPlugin {
        let repo = crate::envoy::repo_root();
        let plugins = crate::envoy::load_wasmplugins(&repo.join("wasmplugins")).unwrap();
        crate::envoy::only(&plugins, &["jwt-auth"])
            .unwrap()
            .remove(0)
    }

    #[test]
    fn demo_token_has_what_the_shipped_jwt_auth_routes_need_and_verifies_with_the_served_key() {
        let plugin = jwt_auth();
        let providers = remote_jwks_providers(std::slice::from_ref(&plugin));
        assert_eq!(providers.len(), 1, "{providers:?}");
        let provider = &providers[0];
        assert_eq!(provider.cluster, "outbound|443||idp.bank.svc.cluster.local");

        let idp = DemoIdentityProvider::start(
            "127.0.0.1:0".parse().unwrap(),
            provider,
            demo_claims(&plugin),
        )
        .unwrap();
        let served = client::get(
            idp.addr(),
            &provider.path,
            std::time::Duration::from_secs(5),
        )
        .unwrap()
        .json()
        .unwrap();
        let jwk = &served["keys"][0];
        assert_eq!(jwk["kid"], idp.kid());
        let b64 =
            |v: &Value| Base64UrlSafeNoPadding::decode_to_vec(v.as_str().unwrap(), None).unwrap();
        let mut point = vec![4u8];
        point.extend(b64(&jwk["x"]));
        point.extend(b64(&jwk["y"]));
        let public = ES256PublicKey::from_bytes(&point).unwrap();
        let verified = public
            .verify_token::<Map<String, Value>>(idp.token(), None)
            .unwrap();
        assert_eq!(verified.issuer.as_deref(), Some(provider.issuer.as_str()));
        let custom = verified.custom;
        assert_eq!(custom["customer_id"], DEMO_CUSTOMER_ID);
        assert_eq!(verified.subject.as_deref(), Some(DEMO_SUBJECT));
        let scopes: Vec<&str> = custom["scope"].as_str().unwrap().split(' ').collect();
        for needed in ["payments:read", "payments:write", "accounts:read"] {
            assert!(scopes.contains(&needed), "{scopes:?}");
        }
        let lifetime =
            verified.expires_at.unwrap().as_secs() - verified.issued_at.unwrap().as_secs();
        assert_eq!(lifetime, DEMO_TOKEN_LIFETIME_SECS);
    }
}
