//! Identifiers: UUID formatting and validation, and random bytes from the host.
//!
//! In a proxy-wasm module on `wasm32-wasip1`, randomness comes from WASI's `random_get`,
//! which Envoy backs with its own CSPRNG; natively it is the OS generator.

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let digit = |nibble: u8| {
        char::from(if nibble < 10 {
            b'0' + nibble
        } else {
            b'a' + nibble - 10
        })
    };
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(digit(b >> 4));
        out.push(digit(b & 0x0f));
    }
    out
}

/// Formats 16 random bytes as a version-4, variant-1 UUID (lowercase, hyphenated).
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(hex_digit(b >> 4));
        out.push(hex_digit(b & 0x0f));
    }
    out
}

fn hex_digit(n: u8) -> char {
    char::from(
        b"0123456789abcdef"
            .get(usize::from(n))
            .copied()
            .unwrap_or(b'0'),
    )
}

/// Whether `value` is a UUID in the canonical hyphenated form (8-4-4-4-12 hex digits,
/// either case), any version, and not the nil UUID.
pub fn is_uuid(value: &[u8]) -> bool {
    if value.len() != 36 {
        return false;
    }
    let shaped = value.iter().enumerate().all(|(i, &b)| {
        if matches!(i, 8 | 13 | 18 | 23) {
            b == b'-'
        } else {
            b.is_ascii_hexdigit()
        }
    });
    shaped && value.iter().any(|&b| b != b'0' && b != b'-')
}

/// Whether `value` is a canonical version-4 (random) UUID.
pub fn is_uuid_v4(value: &[u8]) -> bool {
    is_uuid(value)
        && value.get(14) == Some(&b'4')
        && value
            .get(19)
            .is_some_and(|b| matches!(b.to_ascii_lowercase(), b'8' | b'9' | b'a' | b'b'))
}

/// The host's randomness could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomUnavailable(pub String);

/// `N` random bytes from the host (WASI `random_get` inside Envoy).
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomUnavailable> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|e| RandomUnavailable(e.to_string()))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn formats_version_and_variant_bits() {
        let id = uuid_v4([0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = uuid_v4([0; 16]);
        assert_eq!(id, "00000000-0000-4000-8000-000000000000");
        assert!(is_uuid_v4(id.as_bytes()));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn validates_canonical_uuids_of_any_version() {
        assert!(is_uuid(b"123e4567-e89b-12d3-a456-426614174000"));
        assert!(is_uuid(b"123E4567-E89B-12D3-A456-426614174000"));
        assert!(!is_uuid_v4(b"123e4567-e89b-12d3-a456-426614174000"));
        assert!(is_uuid_v4(b"123e4567-e89b-42d3-a456-426614174000"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_malformed_and_nil_uuids() {
        for bad in [
            &b"123e4567e89b12d3a456426614174000"[..],
            b"123e4567-e89b-12d3-a456-42661417400",
            b"123e4567-e89b-12d3-a456-4266141740000",
            b"{123e4567-e89b-12d3-a456-426614174000}",
            b"123e4567-e89b-12d3-a456_426614174000",
            b"g23e4567-e89b-12d3-a456-426614174000",
            b"00000000-0000-0000-0000-000000000000",
            b"",
        ] {
            assert!(!is_uuid(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
    #[wasm_bindgen_test(unsupported = test)]
    fn random_bytes_differ_between_calls() {
        let a: [u8; 16] = random_bytes().unwrap();
        let b: [u8; 16] = random_bytes().unwrap();
        assert_ne!(a, b);
    }
}
