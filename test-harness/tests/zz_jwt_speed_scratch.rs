use std::time::{Instant, UNIX_EPOCH};
use jwt_simple::prelude::*;
use test_harness::{Action, Host};
#[test]
fn speed() {
    let rsa = RS256KeyPair::generate(2048).unwrap().with_key_id("r");
    let ec = ES256KeyPair::generate().with_key_id("e");
    let c = rsa.public_key().to_components();
    let b = |x: &[u8]| Base64UrlSafeNoPadding::encode_to_string(x).unwrap();
    let p = ec.public_key().public_key().to_bytes_uncompressed();
    let jwks = format!(r#"{{"keys":[{{"kty":"RSA","kid":"r","n":"{}","e":"{}"}},{{"kty":"EC","kid":"e","crv":"P-256","x":"{}","y":"{}"}}]}}"#, b(&c.n), b(&c.e), b(&p[1..33]), b(&p[33..]));
    let cfg = format!(r#"{{"providers":[{{"issuer":"i","audiences":["a"],"jwks":{jwks}}}],"cache":{{"maxEntries":0}}}}"#);
    let host = Host::new();
    let plugin = host.load("jwt_auth", cfg).unwrap();
    let now = host.now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mk = |k: &str| {
        let mut cl = Claims::create(Duration::from_mins(5)).with_issuer("i").with_audience("a");
        cl.issued_at = Some(UnixTimeStamp::from_secs(now)); cl.invalid_before = None; cl.expires_at = Some(UnixTimeStamp::from_secs(now + 300));
        if k == "r" { rsa.sign(cl).unwrap() } else { ec.sign(cl).unwrap() }
    };
    for k in ["r", "e"] {
        let t = format!("Bearer {}", mk(k));
        let n = 200;
        let start = Instant::now();
        for _ in 0..n {
            let mut s = plugin.stream();
            assert_eq!(s.request_headers(&[(":method","GET"),(":path","/"),("authorization", t.as_str())], true), Action::Continue);
        }
        eprintln!("{k}: {:?} per request", start.elapsed() / n);
    }
}
