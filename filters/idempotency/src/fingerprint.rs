//! What makes two requests "the same request" for a key: SHA-256 over the method, the
//! normalised path, the configured headers and the whole body. A client that reuses a key for
//! a different payment gets 422 rather than the first payment's answer.

use banking_filter_common::headers::{self, HeaderPairs};
use sha2::{Digest, Sha256};

/// A request's fingerprint.
pub type Fingerprint = [u8; 32];

/// Builds a fingerprint as the request streams in: the head first, then the body in as many
/// chunks as Envoy delivers.
pub struct FingerprintBuilder {
    hash: Sha256,
}

impl FingerprintBuilder {
    /// Starts with the method, the normalised path and each of `headers` (names lower case,
    /// in the order configured): every value the request carries under it, in order. Each
    /// piece is length-prefixed, so no two different requests hash the same bytes.
    pub fn new(
        method: &[u8],
        normalized_path: &str,
        request: &HeaderPairs,
        headers: &[String],
    ) -> FingerprintBuilder {
        let mut builder = FingerprintBuilder {
            hash: Sha256::new(),
        };
        builder.piece(b"banking-idempotency-v1");
        builder.piece(&method.to_ascii_uppercase());
        builder.piece(normalized_path.as_bytes());
        for name in headers {
            builder.piece(name.as_bytes());
            let values = headers::all(request, name);
            builder.piece(
                &u32::try_from(values.len())
                    .unwrap_or(u32::MAX)
                    .to_be_bytes(),
            );
            for value in values {
                builder.piece(value);
            }
        }
        builder
    }

    fn piece(&mut self, bytes: &[u8]) {
        self.hash
            .update(u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
        self.hash.update(bytes);
    }

    /// The next body chunk, as it arrives.
    pub fn body(&mut self, chunk: &[u8]) {
        self.hash.update(chunk);
    }

    pub fn finish(self) -> Fingerprint {
        self.hash.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn fingerprint(
        method: &str,
        path: &str,
        head: &[(&str, &str)],
        chunks: &[&[u8]],
    ) -> Fingerprint {
        let configured = vec!["x-customer-id".to_string(), "content-type".to_string()];
        let mut builder =
            FingerprintBuilder::new(method.as_bytes(), path, &pairs(head), &configured);
        for chunk in chunks {
            builder.body(chunk);
        }
        builder.finish()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_same_request_in_any_chunking_has_one_fingerprint() {
        let head = [
            ("x-customer-id", "CUST-1"),
            ("content-type", "application/json"),
        ];
        let whole = fingerprint("POST", "/payments", &head, &[br#"{"amount":"10.00"}"#]);
        let chunked = fingerprint(
            "post",
            "/payments",
            &head,
            &[b"{\"amount\"", b":\"10.00\"}", b""],
        );
        assert_eq!(whole, chunked);
        // Headers not configured do not count.
        let mut more = head.to_vec();
        more.push(("x-request-id", "abc"));
        assert_eq!(
            whole,
            fingerprint("POST", "/payments", &more, &[br#"{"amount":"10.00"}"#])
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_different_amount_path_method_or_configured_header_is_a_different_request() {
        let head = [
            ("x-customer-id", "CUST-1"),
            ("content-type", "application/json"),
        ];
        let base = fingerprint("POST", "/payments", &head, &[br#"{"amount":"10.00"}"#]);
        let others = [
            fingerprint("POST", "/payments", &head, &[br#"{"amount":"10.01"}"#]),
            fingerprint("PUT", "/payments", &head, &[br#"{"amount":"10.00"}"#]),
            fingerprint("POST", "/transfers", &head, &[br#"{"amount":"10.00"}"#]),
            fingerprint(
                "POST",
                "/payments",
                &[
                    ("x-customer-id", "CUST-2"),
                    ("content-type", "application/json"),
                ],
                &[br#"{"amount":"10.00"}"#],
            ),
            // A header sent twice is not the same as once.
            fingerprint(
                "POST",
                "/payments",
                &[
                    ("x-customer-id", "CUST-1"),
                    ("x-customer-id", "CUST-1"),
                    ("content-type", "application/json"),
                ],
                &[br#"{"amount":"10.00"}"#],
            ),
        ];
        for other in others {
            assert_ne!(base, other);
        }
    }
}
