//! Several plugins on one HTTP stream, as Envoy runs an HTTP filter chain: each plugin its
//! own `.wasm`, configuration, root context and VM; one request passing through them in order.
//!
//! Envoy's semantics, kept here:
//! - the request phase runs the filters in order, each seeing the headers the previous one
//!   left; a pause stops the chain there until that filter resumes ([`ChainStream::proceed`]);
//! - a local reply stops the request phase: the later filters never see the request, and the
//!   reply passes back through the response phase of the replying filter and the earlier ones;
//! - the response phase runs the filters that saw the request, in reverse order;
//! - filter state (a property a filter sets on the stream) is one map per stream, as Envoy
//!   keeps one FilterState: what a filter sets is what every filter called after it reads;
//! - when the stream completes every filter's `on_log` runs (also those that never saw the
//!   request, as Envoy runs every access-log handler), then each filter is destroyed
//!   (`on_done`, `on_delete`).
//!
//! Envoy sends a local reply through every encoder filter; a later *Wasm* filter skips it
//! because its context never saw the request, which is what the harness does for all.

use crate::error::HarnessError;
use crate::host::Host;
use crate::plugin::{FilterStateEntry, Plugin, Stream};
use crate::types::{Action, LocalResponse};

type Headers = Vec<(String, Vec<u8>)>;

fn borrowed(headers: &Headers) -> Vec<(&str, &[u8])> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect()
}

/// Plugins in chain order (first = first to see the request).
#[derive(Clone)]
pub struct Chain {
    plugins: Vec<Plugin>,
}

impl Host {
    /// Loads each `(filter, plugin_config)` as its own plugin (VM) on this host, in chain
    /// order, e.g. `host.chain(&[("banking_headers", headers_cfg), ("jwt_auth", jwt_cfg)])`.
    pub fn chain(&self, filters: &[(&str, &str)]) -> Result<Chain, HarnessError> {
        let plugins = filters
            .iter()
            .map(|(filter, config)| self.load(filter, config))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Chain { plugins })
    }
}

impl Chain {
    /// A chain of already loaded plugins.
    pub fn of(plugins: Vec<Plugin>) -> Chain {
        Chain { plugins }
    }

    pub fn plugins(&self) -> &[Plugin] {
        &self.plugins
    }

    /// The plugin at `index` in chain order.
    pub fn plugin(&self, index: usize) -> &Plugin {
        &self.plugins[index]
    }

    /// Opens one stream through every plugin. Panics if a filter traps creating it.
    pub fn stream(&self) -> ChainStream {
        let streams = self.plugins.iter().map(Plugin::stream).collect();
        ChainStream {
            streams,
            reached: 0,
            paused_at: None,
            end_of_stream: true,
            replied_by: None,
            reply: None,
            filter_state: Vec::new(),
        }
    }
}

/// One HTTP stream through a [`Chain`].
pub struct ChainStream {
    streams: Vec<Stream>,
    /// How many filters have seen the request headers.
    reached: usize,
    /// The filter the request phase stopped at, waiting for it to resume.
    paused_at: Option<(usize, usize)>,
    end_of_stream: bool,
    replied_by: Option<usize>,
    reply: Option<LocalResponse>,
    /// The stream's filter state: (property key, value, read-only), latest write wins.
    filter_state: Vec<FilterStateEntry>,
}

impl ChainStream {
    /// The stream as plugin `index` sees it (headers it left, its own local reply, ...).
    pub fn at(&self, index: usize) -> &Stream {
        &self.streams[index]
    }

    /// Delivers the request headers to the first filter and on down the chain. `Pause` when
    /// a filter paused (see [`ChainStream::paused_at`]) or a filter replied locally.
    pub fn request_headers(&mut self, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        let headers: Headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        self.run_request(0, headers, end_of_stream)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`ChainStream::request_headers`] for byte values, returning a trap as an error.
    pub fn try_request_headers(
        &mut self,
        headers: &[(&str, &[u8])],
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        let headers: Headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect();
        self.run_request(0, headers, end_of_stream)
    }

    fn run_request(
        &mut self,
        start: usize,
        mut headers: Headers,
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        self.end_of_stream = end_of_stream;
        for index in start..self.streams.len() {
            self.share_filter_state(index);
            let resumed_before = self.streams[index].request_resume_count();
            let action =
                self.streams[index].try_request_headers(&borrowed(&headers), end_of_stream)?;
            self.collect_filter_state(index);
            self.reached = self.reached.max(index + 1);
            if let Some(reply) = self.streams[index].local_response() {
                self.replied_by = Some(index);
                self.reply = Some(self.reply_back_through(index, reply)?);
                return Ok(Action::Pause);
            }
            if action == Action::Pause {
                self.paused_at = Some((index, resumed_before));
                return Ok(Action::Pause);
            }
            headers = self.streams[index].request_headers_now();
        }
        self.paused_at = None;
        Ok(Action::Continue)
    }

    /// After the filter the chain paused at resumed the request (its callout answered,
    /// say), runs the rest of the request phase. `Pause` again if a later filter pauses or
    /// replies, or if the paused filter has not resumed yet.
    pub fn proceed(&mut self) -> Action {
        let Some((index, resumed_before)) = self.paused_at else {
            return if self.replied_by.is_some() {
                Action::Pause
            } else {
                Action::Continue
            };
        };
        if let Some(reply) = self.streams[index].local_response() {
            self.paused_at = None;
            self.replied_by = Some(index);
            self.reply = Some(
                self.reply_back_through(index, reply)
                    .unwrap_or_else(|e| panic!("{e}")),
            );
            return Action::Pause;
        }
        if self.streams[index].request_resume_count() == resumed_before {
            return Action::Pause;
        }
        let headers = self.streams[index].request_headers_now();
        self.run_request(index + 1, headers, self.end_of_stream)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a local reply of filter `from` (which already passed through its own response
    /// phase) back through the earlier filters' response phase, as the client gets it.
    fn reply_back_through(
        &mut self,
        from: usize,
        reply: LocalResponse,
    ) -> Result<LocalResponse, HarnessError> {
        let mut headers: Headers =
            vec![(":status".to_string(), reply.status.to_string().into_bytes())];
        headers.extend(reply.headers.iter().cloned());
        let mut body = reply.body.clone();
        for index in (0..from).rev() {
            self.share_filter_state(index);
            let stream = &mut self.streams[index];
            stream.try_response_headers(&borrowed(&headers), body.is_empty())?;
            let headers_after = stream.response_headers_now();
            if !body.is_empty() {
                stream.try_response_body(&body, true)?;
                body = stream.response_body_now();
            }
            headers = headers_after;
            self.collect_filter_state(index);
        }
        let status = headers
            .iter()
            .find(|(n, _)| n == ":status")
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(reply.status);
        Ok(LocalResponse {
            status,
            headers: headers
                .into_iter()
                .filter(|(n, _)| !n.starts_with(':'))
                .collect(),
            body,
            ..reply
        })
    }

    /// Delivers a request body chunk through the filters that passed the headers, in order,
    /// stopping at the first that pauses. A filter paused on the headers gets no body (Envoy
    /// buffers it until the filter resumes; the harness does not deliver it later).
    pub fn request_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Action {
        let mut body = chunk.to_vec();
        let upto = self.paused_at.map_or(self.reached, |(index, _)| index);
        if upto < self.reached {
            return Action::Pause;
        }
        for index in 0..upto {
            let stream = &mut self.streams[index];
            if stream.request_body(&body, end_of_stream) == Action::Pause {
                return Action::Pause;
            }
            body = stream.request_body_now();
        }
        Action::Continue
    }

    /// Delivers the upstream's response headers (with `:status`) through the filters that saw
    /// the request, last first. `Pause` when one pauses.
    pub fn response_headers(&mut self, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        let mut headers: Headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        for index in (0..self.reached).rev() {
            self.share_filter_state(index);
            let stream = &mut self.streams[index];
            let action = stream
                .try_response_headers(&borrowed(&headers), end_of_stream)
                .unwrap_or_else(|e| panic!("{e}"));
            headers = stream.response_headers_now();
            self.collect_filter_state(index);
            if action == Action::Pause {
                return Action::Pause;
            }
        }
        Action::Continue
    }

    /// The response headers as the client gets them (after the first filter).
    pub fn response_headers_now(&self) -> Headers {
        self.streams
            .first()
            .map(Stream::response_headers_now)
            .unwrap_or_default()
    }

    /// A response header as the client gets it.
    pub fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.streams.first().and_then(|s| s.response_header(name))
    }

    /// The request headers as they leave the chain for the upstream (after the last filter).
    pub fn upstream_request_headers(&self) -> Headers {
        self.streams
            .last()
            .map(Stream::request_headers_now)
            .unwrap_or_default()
    }

    /// A request header as the upstream gets it.
    pub fn upstream_request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.streams.last().and_then(|s| s.request_header(name))
    }

    /// The local reply as the client gets it, after the earlier filters' response phase.
    pub fn local_response(&self) -> Option<LocalResponse> {
        self.reply.clone()
    }

    /// Which filter (chain index) answered locally, if one did.
    pub fn replied_by(&self) -> Option<usize> {
        self.replied_by
    }

    /// Which filter (chain index) the request phase is paused at, if any.
    pub fn paused_at(&self) -> Option<usize> {
        self.paused_at.map(|(index, _)| index)
    }

    /// How many filters have seen the request headers.
    pub fn reached(&self) -> usize {
        self.reached
    }

    /// Whether any filter reset the stream.
    pub fn was_reset(&self) -> bool {
        self.streams.iter().any(Stream::was_reset)
    }

    /// Ends the stream: every filter's `on_log`, in chain order, then each filter's `on_done`
    /// and `on_delete`.
    pub fn complete(&mut self) {
        // Envoy's access-log pass sees the response the client got: a filter that never saw
        // the response go by (an earlier one answered locally) reads it there all the same
        // (`response.code`, `response.code_details`, the response headers).
        if let Some(reply) = self.local_response() {
            // And the request headers as the client's request stood when it was answered.
            let request = self
                .replied_by()
                .map(|i| self.streams[i].request_headers_now())
                .unwrap_or_default();
            for stream in &mut self.streams {
                stream.see_final_response(&reply, &request);
            }
        }
        for index in 0..self.streams.len() {
            self.share_filter_state(index);
            self.streams[index]
                .try_log()
                .unwrap_or_else(|e| panic!("{e}"));
            self.collect_filter_state(index);
        }
        for stream in &mut self.streams {
            stream.try_destroy().unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Lends the stream's filter state to the filter about to be called.
    fn share_filter_state(&mut self, index: usize) {
        let state = self.filter_state.clone();
        self.streams[index].merge_filter_state(state);
    }

    /// Takes back what the filter just called set (the latest write wins).
    fn collect_filter_state(&mut self, index: usize) {
        for (key, value, read_only) in self.streams[index].filter_state_set() {
            match self.filter_state.iter_mut().find(|(k, _, _)| *k == key) {
                // The host refused any write to a read-only entry, so it keeps its flag.
                Some(entry) => entry.1 = value,
                None => self.filter_state.push((key, value, read_only)),
            }
        }
    }
}
