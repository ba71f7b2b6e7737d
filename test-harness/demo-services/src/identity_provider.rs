//! The demo identity provider `make run` starts for jwt-auth (see [`crate::declared`]), so
//! the filter works offline: a fresh ES256 key made at start-up, its JWKS served by a
//! [`JwksServer`] on loopback at the cluster the plugin fetches from, and one demo token that
//! passes the example routes.
//!
//! What the token carries is read from the plugin's own configuration, so it follows the
//! WasmPlugin file: `iss` and the first `aud` of the first provider with `remoteJwks`, every
//! `requiredScopes` of every rule in `scope`, the customer-binding claim set to
//! [`DEMO_CUSTOMER_ID`], and `sub` and any other `requiredClaims` filled in. It is a demo
//! convenience, minted natively with jwt-simple; the end-to-end tests mint their tokens with
//! another implementation ([`crate::jwt_minter`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use jwt_simple::prelude::*;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::DemoError;
use crate::declared::{DemoService, RunningService};
use crate::jwks_server::JwksServer;

/// The customer the demo token acts for; also valid for banking-headers' `x-customer-id`.
pub const DEMO_CUSTOMER_ID: &str = "CUST-00012345";
/// The demo token's `sub`.
pub const DEMO_SUBJECT: &str = "demo-user";
/// How long the demo token is valid.
pub const DEMO_TOKEN_LIFETIME_SECS: u64 = 3600;

/// The part of jwt-auth's `pluginConfig` the identity provider follows; every other field is
/// ignored here (the filter itself validates the whole configuration).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JwtAuthView {
    #[serde(default)]
    providers: Vec<ProviderView>,
    #[serde(default)]
    rules: Vec<RuleView>,
    customer_binding: Option<CustomerBindingView>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderView {
    issuer: String,
    #[serde(default)]
    audiences: Vec<String>,
    remote_jwks: Option<RemoteJwksView>,
    #[serde(default)]
    required_claims: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RemoteJwksView {
    cluster: String,
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleView {
    #[serde(default)]
    required_scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct CustomerBindingView {
    claim: String,
}

fn view(plugin_config: &Value) -> Result<JwtAuthView, DemoError> {
    if plugin_config.is_null() {
        return Ok(JwtAuthView::default());
    }
    JwtAuthView::deserialize(plugin_config).map_err(|e| {
        DemoError(format!(
            "the demo identity provider cannot read the plugin configuration: {e}"
        ))
    })
}

/// A provider that fetches its keys over HTTP, as a plugin's configuration describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwksProvider {
    pub issuer: String,
    pub audience: String,
    /// The Istio-style Envoy cluster the plugin calls, e.g. `outbound|443||idp.bank.svc.cluster.local`.
    pub cluster: String,
    /// The JWKS path on that cluster.
    pub path: String,
}

/// Every `providers[*]` with a `remoteJwks` in a jwt-auth configuration, in order.
pub fn remote_jwks_providers(plugin_config: &Value) -> Result<Vec<RemoteJwksProvider>, DemoError> {
    let mut found = Vec::new();
    for (index, provider) in view(plugin_config)?.providers.into_iter().enumerate() {
        let Some(remote) = provider.remote_jwks else {
            continue;
        };
        let audience = provider.audiences.into_iter().next().ok_or_else(|| {
            DemoError(format!(
                "providers[{index}].audiences is empty: the demo token needs an audience"
            ))
        })?;
        found.push(RemoteJwksProvider {
            issuer: provider.issuer,
            audience,
            cluster: remote.cluster,
            path: remote.path,
        });
    }
    Ok(found)
}

/// The demo token's claims beyond `iss`, `aud`, `iat`, `nbf`, `exp`, read from a jwt-auth
/// configuration (see the module notes).
pub fn demo_claims(plugin_config: &Value) -> Result<Map<String, Value>, DemoError> {
    let config = view(plugin_config)?;
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(DEMO_SUBJECT));
    let scopes: BTreeSet<&str> = config
        .rules
        .iter()
        .flat_map(|rule| &rule.required_scopes)
        .map(String::as_str)
        .collect();
    if !scopes.is_empty() {
        let scopes: Vec<&str> = scopes.into_iter().collect();
        claims.insert("scope".into(), json!(scopes.join(" ")));
    }
    if let Some(binding) = &config.customer_binding {
        claims.insert(binding.claim.clone(), json!(DEMO_CUSTOMER_ID));
    }
    for claim in config.providers.iter().flat_map(|p| &p.required_claims) {
        claims.entry(claim.clone()).or_insert_with(|| json!("demo"));
    }
    Ok(claims)
}

/// The identity provider as a declared demo service: jwt-auth's `remoteJwks` clusters lead
/// to one [`DemoIdentityProvider`], which stands in for the first provider.
pub struct IdentityProvider;

impl DemoService for IdentityProvider {
    fn name(&self) -> &'static str {
        "idp"
    }

    fn clusters(&self, plugin_config: &Value) -> Result<Vec<String>, DemoError> {
        let mut clusters: Vec<String> = remote_jwks_providers(plugin_config)?
            .into_iter()
            .map(|p| p.cluster)
            .collect();
        clusters.sort();
        clusters.dedup();
        Ok(clusters)
    }

    fn start(
        &self,
        addr: SocketAddr,
        plugin_config: &Value,
    ) -> Result<Box<dyn RunningService>, DemoError> {
        let provider = remote_jwks_providers(plugin_config)?
            .into_iter()
            .next()
            .ok_or_else(|| DemoError("no provider with remoteJwks to stand in for".into()))?;
        let idp = DemoIdentityProvider::start(addr, &provider, demo_claims(plugin_config)?)?;
        Ok(Box::new(idp))
    }
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
    ) -> Result<DemoIdentityProvider, DemoError> {
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
                .ok_or_else(|| DemoError("the demo key's public point is malformed".into()))
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
            .map_err(|e| DemoError(format!("cannot sign the demo token: {e}")))?;
        let server =
            JwksServer::start(addr, &provider.path, jwks.to_string().as_bytes()).map_err(|e| {
                DemoError(format!(
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

impl RunningService for DemoIdentityProvider {
    fn addr(&self) -> SocketAddr {
        self.addr()
    }

    fn describe(&self) -> String {
        format!(
            "http://{}{}  (demo JWKS for {}, as cluster {})",
            self.addr(),
            self.provider.path,
            self.provider.issuer,
            self.provider.cluster
        )
    }

    fn files(&self) -> Vec<(&'static str, String)> {
        vec![("demo-token", format!("{}\n", self.token))]
    }

    /// A payment any example route accepts: the demo token plus the banking headers.
    fn examples(&self, listener: SocketAddr, workdir: &Path) -> Vec<String> {
        let claim = |name: &str| {
            self.claims
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or("-")
                .to_string()
        };
        vec![
            format!(
                "Demo token: ES256 kid {}, valid {} min, sub {}, customer_id {}, scope \"{}\"; also in {}",
                self.kid,
                DEMO_TOKEN_LIFETIME_SECS / 60,
                claim("sub"),
                claim("customer_id"),
                claim("scope"),
                workdir.join("demo-token").display()
            ),
            format!("  curl -i -X POST http://{listener}/payments \\"),
            format!("    -H 'authorization: Bearer {}' \\", self.token),
            format!("    -H 'x-customer-id: {DEMO_CUSTOMER_ID}' \\"),
            "    -H 'x-transaction-id: 0f8fad5b-d9cb-469f-a165-70867728950e' \\".to_string(),
            "    -H 'x-banking-operation: payment.create' \\".to_string(),
            // The idempotency filter wants a key on POST /payments; run it twice for a replay.
            "    -H 'idempotency-key: \"demo-payment-0001\"' \\".to_string(),
            "    -H 'content-type: application/json' -d '{\"amount\":\"10.00\"}'".to_string(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_client::get;

    /// The `pluginConfig` of the shipped jwt-auth WasmPlugin.
    fn shipped_jwt_auth_config() -> Value {
        let path = workspace_dirs::repo_root().join("wasmplugins/jwt-auth.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let plugin: Value = serde_yaml::from_str(&text).unwrap();
        plugin["spec"]["pluginConfig"].clone()
    }

    #[test]
    fn demo_token_has_what_the_shipped_jwt_auth_routes_need_and_verifies_with_the_served_key() {
        let config = shipped_jwt_auth_config();
        let providers = remote_jwks_providers(&config).unwrap();
        assert_eq!(providers.len(), 1, "{providers:?}");
        let provider = &providers[0];
        assert_eq!(provider.cluster, "outbound|443||idp.bank.svc.cluster.local");
        assert_eq!(
            IdentityProvider.clusters(&config).unwrap(),
            [provider.cluster.as_str()]
        );

        let idp = DemoIdentityProvider::start(
            "127.0.0.1:0".parse().unwrap(),
            provider,
            demo_claims(&config).unwrap(),
        )
        .unwrap();
        let served = get(idp.addr(), &provider.path, "idp.bank.svc.cluster.local")
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

    #[test]
    fn a_configuration_with_inline_keys_only_calls_no_identity_provider() {
        let inline =
            json!({"providers": [{"issuer": "i", "audiences": ["a"], "jwks": {"keys": []}}]});
        assert!(IdentityProvider.clusters(&inline).unwrap().is_empty());
        assert!(IdentityProvider.clusters(&Value::Null).unwrap().is_empty());
    }

    #[test]
    fn a_remote_provider_without_audience_is_refused_naming_the_field() {
        let config = json!({"providers": [{"issuer": "i", "audiences": [],
            "remoteJwks": {"cluster": "c", "path": "/k"}}]});
        let err = IdentityProvider.clusters(&config).unwrap_err();
        assert!(err.0.contains("providers[0].audiences"), "{err}");
    }
}
