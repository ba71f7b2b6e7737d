//! The proxy-wasm 0.2.1 wire format: status codes, map and buffer numbers, and the byte layouts
//! the SDK uses for header maps and property paths.

/// Status codes a hostcall returns (`proxy_status_t` / Envoy's `WasmResult`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
}

impl Status {
    pub(crate) fn code(self) -> i32 {
        self as i32
    }
}

/// Header-like maps addressed by number in the ABI.
pub(crate) mod map_type {
    pub(crate) const REQUEST_HEADERS: i32 = 0;
    pub(crate) const REQUEST_TRAILERS: i32 = 1;
    pub(crate) const RESPONSE_HEADERS: i32 = 2;
    pub(crate) const RESPONSE_TRAILERS: i32 = 3;
    pub(crate) const HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
    pub(crate) const HTTP_CALL_RESPONSE_TRAILERS: i32 = 7;
}

/// Byte buffers addressed by number in the ABI.
pub(crate) mod buffer_type {
    pub(crate) const REQUEST_BODY: i32 = 0;
    pub(crate) const RESPONSE_BODY: i32 = 1;
    pub(crate) const HTTP_CALL_RESPONSE_BODY: i32 = 4;
    pub(crate) const VM_CONFIGURATION: i32 = 6;
    pub(crate) const PLUGIN_CONFIGURATION: i32 = 7;
}

/// `proxy_continue_stream` / `proxy_close_stream` targets.
pub(crate) mod stream_type {
    pub(crate) const HTTP_REQUEST: i32 = 0;
    pub(crate) const HTTP_RESPONSE: i32 = 1;
    pub(crate) const DOWNSTREAM: i32 = 2;
    pub(crate) const UPSTREAM: i32 = 3;
}

/// A header map as the harness keeps it: names lower-cased like Envoy's codecs do, values raw.
pub(crate) type HeaderList = Vec<(String, Vec<u8>)>;

/// Encodes pairs the way the SDK's `deserialize_map_bytes` reads them: a little-endian count,
/// then a (name length, value length) pair per entry, then each name and value NUL-terminated.
pub(crate) fn serialize_pairs(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// Decodes the SDK's serialised pairs; `None` when the bytes are not a well-formed map.
/// An empty slice is an empty map (the SDK sends nothing for "no headers").
pub(crate) fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let read_u32 = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(raw) as usize)
    };
    let count = read_u32(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for n in 0..count {
        let at = 4 + n.checked_mul(8)?;
        sizes.push((read_u32(at)?, read_u32(at + 4)?));
    }
    let mut pos = 4 + count.checked_mul(8)?;
    let mut pairs = Vec::with_capacity(sizes.len());
    for (name_len, value_len) in sizes {
        let name = bytes.get(pos..pos + name_len)?.to_vec();
        pos += name_len + 1;
        let value = bytes.get(pos..pos + value_len)?.to_vec();
        pos += value_len + 1;
        pairs.push((name, value));
    }
    if pos > bytes.len() {
        return None;
    }
    Some(pairs)
}

/// The SDK sends a property path as its parts joined by NUL bytes; the harness keys
/// properties by that same joined form.
pub(crate) fn property_key<S: AsRef<str>>(path: &[S]) -> Vec<u8> {
    let mut key = Vec::new();
    for (i, part) in path.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part.as_ref().as_bytes());
    }
    key
}

/// Header names are case-insensitive; Envoy stores and looks them up in lower case.
pub(crate) fn header_name(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_with_non_utf8_values() {
        let pairs = vec![
            (":path".to_string(), b"/a".to_vec()),
            ("x-raw".to_string(), vec![0xff, 0x00, 0x80]),
        ];
        let decoded = deserialize_pairs(&serialize_pairs(&pairs)).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[1].1, vec![0xff, 0x00, 0x80]);
    }

    #[test]
    fn truncated_map_is_refused() {
        let mut bytes = serialize_pairs(&[("a".to_string(), b"b".to_vec())]);
        bytes.truncate(bytes.len() - 3);
        assert!(deserialize_pairs(&bytes).is_none());
    }

    #[test]
    fn property_path_is_nul_joined() {
        assert_eq!(
            property_key(&["source", "address"]),
            b"source\0address".to_vec()
        );
    }
}
