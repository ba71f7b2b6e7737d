//! Unpadded base64url (RFC 4648 §5, as JWS and JWK use it), decoded in its one canonical
//! spelling only: no padding, no character outside the URL-safe alphabet, no length that
//! leaves a lone character, and no set bits after the last byte. So no two texts decode to
//! the same bytes, which the verified-token cache (keyed by the token text) relies on.
//!
//! Token segments are public, so this is a plain table decoder rather than a constant-time
//! one (an inline HMAC key's `k` is decoded with it too, once, at configure time). It looks
//! every character up once, without a branch per character: the OR of the looked-up values
//! says at the end whether any was outside the alphabet. Decoding and the alphabet check
//! were the largest single cost of a verification outside its signature check.

/// What [`SEXTETS`] holds for a byte outside the alphabet; its top bit never appears in a
/// 6-bit value.
const INVALID: u8 = 0x80;

/// Each byte's 6-bit value in the base64url alphabet, [`INVALID`] for every other byte.
const SEXTETS: [u8; 256] = alphabet_table(INVALID);

/// [`SEXTETS`] with `.` allowed as well (as 0): what a whole compact JWS may contain.
const SEXTETS_OR_DOT: [u8; 256] = alphabet_table(0);

/// The alphabet's values, `dot` for `.` and [`INVALID`] for every other byte. Only ever
/// evaluated at compile time, where an index out of range fails the build: nothing here can
/// panic at run time.
#[expect(
    clippy::indexing_slicing,
    reason = "const evaluation: a bad index is a compile error"
)]
const fn alphabet_table(dot: u8) -> [u8; 256] {
    let mut table = [INVALID; 256];
    table[b'.' as usize] = dot;
    let mut i = 0;
    while i < 26 {
        table[b'A' as usize + i] = i as u8;
        table[b'a' as usize + i] = 26 + i as u8;
        i += 1;
    }
    let mut digit = 0;
    while digit < 10 {
        table[b'0' as usize + digit] = 52 + digit as u8;
        digit += 1;
    }
    table[b'-' as usize] = 62;
    table[b'_' as usize] = 63;
    table
}

/// The 6-bit value of `c`, or [`INVALID`]; a `u8` always indexes a 256-entry table.
fn sextet(c: u8) -> u32 {
    u32::from(SEXTETS.get(usize::from(c)).copied().unwrap_or(INVALID))
}

/// Whether `text` holds nothing but base64url characters and `.`: a compact JWS.
pub fn is_compact_jws_alphabet(text: &str) -> bool {
    text.bytes().fold(0u8, |seen, c| {
        seen | SEXTETS_OR_DOT
            .get(usize::from(c))
            .copied()
            .unwrap_or(INVALID)
    }) & INVALID
        == 0
}

/// The bytes `text` spells, or `None` when it is not canonical unpadded base64url.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3 + 2);
    let mut seen = 0u32;
    let mut quads = bytes.chunks_exact(4);
    for quad in &mut quads {
        let n = quad.iter().fold(0u32, |n, c| {
            let value = sextet(*c);
            seen |= value;
            n << 6 | value
        });
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c]);
    }
    // An invalid character makes the tail's bits meaningless, but the check of `seen`
    // below refuses the text anyway.
    match *quads.remainder() {
        [] => {}
        [c1, c2] => {
            let (v1, v2) = (sextet(c1), sextet(c2));
            seen |= v1 | v2;
            // 12 bits carry one byte: the low 4 must be zero.
            let n = v1 << 6 | v2;
            if n & 0xf != 0 {
                return None;
            }
            let [_, _, _, a] = (n >> 4).to_be_bytes();
            out.push(a);
        }
        [c1, c2, c3] => {
            let (v1, v2, v3) = (sextet(c1), sextet(c2), sextet(c3));
            seen |= v1 | v2 | v3;
            // 18 bits carry two bytes: the low 2 must be zero.
            let n = v1 << 12 | v2 << 6 | v3;
            if n & 0x3 != 0 {
                return None;
            }
            let [_, _, a, b] = (n >> 2).to_be_bytes();
            out.extend_from_slice(&[a, b]);
        }
        _ => return None,
    }
    if seen & u32::from(INVALID) != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ct_codecs::{Base64UrlSafeNoPadding, Decoder, Encoder};
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn decodes_the_rfc_4648_test_vectors() {
        for (text, bytes) in [
            ("", &b""[..]),
            ("Zg", b"f"),
            ("Zm8", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYg", b"foob"),
            ("Zm9vYmE", b"fooba"),
            ("Zm9vYmFy", b"foobar"),
            // The two characters base64url has where base64 has `+` and `/`.
            ("-_8", &[0xfb, 0xff]),
        ] {
            assert_eq!(decode(text).as_deref(), Some(bytes), "{text}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_every_non_canonical_spelling() {
        for text in [
            "Zg==",   // padding
            "Zm8=",   // padding
            "+/8",    // base64, not base64url
            "Zm9v\n", // whitespace
            "Z",      // a lone character carries no byte
            "Zm9vY",  // the same after a full quad
            "Zh",     // "f" with a set bit after the byte
            "Zm9",    // "fo" with a set bit after the bytes
            "Zm.v",   // a segment separator
        ] {
            assert_eq!(decode(text), None, "{text:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_every_byte_outside_the_alphabet_wherever_it_stands() {
        let alphabet: Vec<u8> = (b'A'..=b'Z')
            .chain(b'a'..=b'z')
            .chain(b'0'..=b'9')
            .chain([b'-', b'_'])
            .collect();
        // "Zm9vYmE" is "fooba": a full quad, then a three-character tail.
        let text = b"Zm9vYmE";
        for at in 0..text.len() {
            for byte in 0..=255u8 {
                let mut altered = text.to_vec();
                altered[at] = byte;
                let Ok(altered) = String::from_utf8(altered) else {
                    continue;
                };
                let decoded = decode(&altered);
                if alphabet.contains(&byte) {
                    // Only the last character can make a non-canonical tail.
                    assert!(decoded.is_some() || at == text.len() - 1, "{altered:?}");
                } else {
                    assert_eq!(decoded, None, "{altered:?}");
                }
                assert_eq!(
                    is_compact_jws_alphabet(&altered),
                    alphabet.contains(&byte) || byte == b'.',
                    "{altered:?}"
                );
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_characters_beyond_ascii_wherever_they_stand() {
        for character in ["\u{80}", "é", "\u{ff}", "€", "\u{10ffff}"] {
            for at in 0..=7 {
                let text = format!("{}{character}{}", &"Zm9vYmE"[..at], &"Zm9vYmE"[at..]);
                assert_eq!(decode(&text), None, "{text:?}");
                assert!(!is_compact_jws_alphabet(&text), "{text:?}");
                let replaced = format!(
                    "{}{character}{}",
                    &"Zm9vYmE"[..at.min(6)],
                    &"Zm9vYmE"[at.min(6) + 1..]
                );
                assert_eq!(decode(&replaced), None, "{replaced:?}");
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn agrees_with_ct_codecs_on_every_length_and_byte() {
        // ct-codecs' canonical constant-time decoder, which this one replaced, as the
        // reference: same bytes for every encoding, same refusals for every alteration.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..200usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed.to_le_bytes()[0]
                })
                .collect();
            let text = Base64UrlSafeNoPadding::encode_to_string(&bytes).unwrap();
            assert_eq!(decode(&text), Some(bytes.clone()), "{len}");
            if let Some(last) = text.bytes().last() {
                for replacement in [b'A', b'B', b'=', b'+', b'/', b'~', last ^ 1] {
                    let mut altered = text.clone().into_bytes();
                    *altered.last_mut().unwrap() = replacement;
                    let altered = String::from_utf8(altered).unwrap();
                    assert_eq!(
                        decode(&altered),
                        Base64UrlSafeNoPadding::decode_to_vec(&altered, None).ok(),
                        "{altered}"
                    );
                }
            }
        }
    }
}
