//! The floor of `make bench`, not a product filter: a proxy-wasm filter on our own host layer
//! that accepts any configuration and passes every request and response untouched. Its row
//! is what Envoy pays for a Wasm filter in the chain (VM call-ins, context creation, the
//! `proxy_on_*` dispatch) before a filter does any work of its own; it has no WasmPlugin and
//! is never deployed. Like jwt-auth it acts on request headers only (`request_headers_only`:
//! no `proxy_on_delete` either), so Envoy enters it twice per request.

use banking_filter_common::host::{RootContext, StreamContext};

struct Root;

impl RootContext for Root {
    fn on_configure(&mut self, _configuration: &[u8]) -> bool {
        true
    }

    fn new_stream(&self, _context_id: u32) -> Box<dyn StreamContext> {
        Box::new(Stream)
    }
}

/// Every phase is the trait's default: continue.
struct Stream;

impl StreamContext for Stream {}

banking_filter_common::filter_main!(|_| Box::new(Root), request_headers_only);
