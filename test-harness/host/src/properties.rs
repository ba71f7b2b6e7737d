//! Property lookup (`get_property`): per-stream overrides, then what Envoy derives from the
//! stream's headers, then values the filter set on its root context, then the test's defaults
//! on the `Host`, then the plugin's identity.

use crate::abi::{HeaderList, Status};
use crate::state::VmState;

/// Envoy's foreign function that declares a filter-state property.
pub(crate) const DECLARE_PROPERTY: &str = "declare_property";

/// Envoy's `declare_property` (`source/extensions/common/wasm/foreign.cc`, `context.cc`):
/// `args` is a serialized `DeclarePropertyArguments` { name = 1, readonly = 2, type = 3,
/// schema = 4, span = 5 }. The declaration belongs to the context that calls (in practice
/// the root context, at configure time; `set_property` only consults the root context's);
/// declaring a name twice there is BadArgument, as are arguments that do not parse.
pub(crate) fn declare(vm: &mut VmState, args: &[u8]) -> Status {
    let Some((name, readonly)) = parse_declaration(args) else {
        return Status::BadArgument;
    };
    if vm.current_context() != vm.root_context {
        // Envoy stores it on the stream's own context, where nothing ever looks.
        return Status::Ok;
    }
    if !vm.declared.insert(name.clone()) {
        return Status::BadArgument;
    }
    if readonly {
        vm.declared_read_only.insert(name);
    }
    Status::Ok
}

/// A protobuf varint at `at`, which it advances; `None` when the bytes end first.
pub(crate) fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
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

/// `(name, readonly)` of a `DeclarePropertyArguments`; `None` when it is no valid protobuf.
fn parse_declaration(bytes: &[u8]) -> Option<(Vec<u8>, bool)> {
    let (mut name, mut readonly, mut at) = (Vec::new(), false, 0);
    while at < bytes.len() {
        let key = varint(bytes, &mut at)?;
        match (key >> 3, key & 7) {
            (2, 0) => readonly = varint(bytes, &mut at)? != 0,
            (_, 0) => {
                varint(bytes, &mut at)?;
            }
            (field, 2) => {
                let len = usize::try_from(varint(bytes, &mut at)?).ok()?;
                let value = bytes.get(at..at.checked_add(len)?)?;
                at += len;
                if field == 1 {
                    std::str::from_utf8(value).ok()?;
                    name = value.to_vec();
                }
            }
            _ => return None,
        }
    }
    Some((name, readonly))
}

/// Resolves a NUL-joined property path; `None` means NotFound.
pub(crate) fn lookup(vm: &mut VmState, path: &[u8]) -> Option<Vec<u8>> {
    if path.is_empty() {
        return None;
    }
    let context = vm.current_context();
    if let Some(stream) = vm.streams.get(&context) {
        if let Some(value) = stream.properties.get(path) {
            return Some(value.clone());
        }
        if let Some(value) = derived(
            path,
            stream.request_headers.as_ref(),
            stream.response_headers.as_ref(),
        ) {
            return Some(value);
        }
    }
    if let Some(value) = vm.root_properties.get(path) {
        return Some(value.clone());
    }
    if let Some(value) = vm.host.borrow().properties.get(path) {
        return Some(value.clone());
    }
    match path {
        b"plugin_name" => Some(vm.plugin_name.clone().into_bytes()),
        b"plugin_root_id" => Some(vm.root_id.clone().into_bytes()),
        b"plugin_vm_id" => Some(vm.vm_id.clone().into_bytes()),
        _ => None,
    }
}

fn header<'a>(headers: Option<&'a HeaderList>, name: &str) -> Option<&'a [u8]> {
    headers?
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

/// The request and response attributes Envoy computes from the headers. Integers are
/// 8 little-endian bytes, as Envoy serialises them.
fn derived(
    path: &[u8],
    request: Option<&HeaderList>,
    response: Option<&HeaderList>,
) -> Option<Vec<u8>> {
    let mut parts = path.split(|b| *b == 0);
    let first = parts.next()?;
    let second = parts.next()?;
    let third = parts.next();
    let request_header = |name: &str| header(request, name).map(<[u8]>::to_vec);
    match (first, second, third) {
        (b"request", b"path", None) => request_header(":path"),
        (b"request", b"url_path", None) => {
            let path = header(request, ":path")?;
            let end = path.iter().position(|b| *b == b'?').unwrap_or(path.len());
            Some(path.get(..end)?.to_vec())
        }
        (b"request", b"host", None) => request_header(":authority"),
        (b"request", b"method", None) => request_header(":method"),
        (b"request", b"scheme", None) => request_header(":scheme"),
        (b"request", b"id", None) => request_header("x-request-id"),
        (b"request", b"referer", None) => request_header("referer"),
        (b"request", b"useragent", None) => request_header("user-agent"),
        (b"request", b"headers", Some(name)) => {
            request_header(&String::from_utf8_lossy(name).to_ascii_lowercase())
        }
        (b"response", b"headers", Some(name)) => header(
            response,
            &String::from_utf8_lossy(name).to_ascii_lowercase(),
        )
        .map(<[u8]>::to_vec),
        (b"response", b"code", None) => {
            let status = header(response, ":status")?;
            let code: i64 = std::str::from_utf8(status).ok()?.parse().ok()?;
            Some(code.to_le_bytes().to_vec())
        }
        _ => None,
    }
}
