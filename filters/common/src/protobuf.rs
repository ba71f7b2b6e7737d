//! The few protobuf wire-format pieces Envoy's foreign functions take and answer
//! (`declare_property`, `verify_signature`), written once: varints, length-delimited fields,
//! and skipping a field of any wire type. Messages are built and read by hand where they are
//! used; no protobuf crate is worth its size for two small messages.

/// Appends `value` as a varint.
pub fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends field `field` as a length-delimited value (wire type 2): bytes, a string, a
/// message.
pub fn push_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    push_varint(out, field << 3 | 2);
    push_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The varint at `at`, which it advances; `None` when the bytes end first or it runs past
/// ten bytes.
pub fn take_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Skips the value of a field of wire type `wire_type` at `at`; `None` when the bytes end
/// first or the wire type is none protobuf writes today (the deprecated groups included).
pub fn skip_value(bytes: &[u8], at: &mut usize, wire_type: u64) -> Option<()> {
    match wire_type {
        0 => {
            take_varint(bytes, at)?;
        }
        1 => *at = at.checked_add(8)?,
        2 => {
            let len = usize::try_from(take_varint(bytes, at)?).ok()?;
            *at = at.checked_add(len)?;
        }
        5 => *at = at.checked_add(4)?,
        _ => return None,
    }
    (*at <= bytes.len()).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn varints_round_trip_at_every_length() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            push_varint(&mut out, value);
            let mut at = 0;
            assert_eq!(take_varint(&out, &mut at), Some(value), "{value}");
            assert_eq!(at, out.len(), "{value}");
        }
        let mut at = 0;
        assert_eq!(take_varint(&[0x80, 0x80], &mut at), None, "truncated");
        assert_eq!(take_varint(&[0xff; 11], &mut 0), None, "too long");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn length_delimited_fields_and_skips() {
        let mut out = Vec::new();
        push_bytes(&mut out, 3, &[7; 200]);
        assert_eq!(&out[..3], &[0x1a, 0xc8, 0x01]);
        let mut at = 1;
        assert_eq!(skip_value(&out, &mut at, 2), Some(()));
        assert_eq!(at, out.len());
        for (wire_type, bytes) in [(0, &[0x96, 0x01][..]), (1, &[0; 8]), (5, &[0; 4])] {
            let mut at = 0;
            assert_eq!(
                skip_value(bytes, &mut at, wire_type),
                Some(()),
                "{wire_type}"
            );
            assert_eq!(at, bytes.len());
            assert_eq!(
                skip_value(&bytes[..bytes.len() - 1], &mut 0, wire_type),
                None,
                "{wire_type} short"
            );
        }
        assert_eq!(skip_value(&[0; 8], &mut 0, 3), None, "groups");
    }
}
