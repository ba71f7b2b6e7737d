//! Each provider's signing keys and, for a remote JWKS, when they are fetched: the key
//! manager, in the shape of Envoy's `jwks_async_fetcher`, over plain interfaces.
//!
//! One [`IssuerKeys`] per configured provider holds the set its tokens are verified with; a
//! remote provider's also holds its fetch state ([`RemoteKeySource`]). The [`KeyManager`]
//! owning them talks to the host only through a [`SharedStore`] (how the worker VMs share
//! one fetch, see [`crate::fetch`]) and a [`JwksCallout`], takes the time as an argument and
//! reports what happened as [`KeyEvent`]s, which the shell turns into logs and counters.
//!
//! The rules it keeps:
//! - a fetch starts from a tick only (the shell's first one comes a millisecond after
//!   configure), never on the request path and never from configure;
//! - one fetch per proxy: a VM fetches only after taking the shared fetch marker;
//! - a fetch is due without a set, at 90% of `cacheDuration` after the last good fetch, or,
//!   after a token named an unknown `kid` (or met a set without a usable key), at most once
//!   per `minRefetchInterval`;
//! - a request short of keys looks for a newer shared set before it is refused;
//! - a fetch that returns a JWKS is the truth, installed and shared whatever it holds: a set
//!   without a usable key refuses every token of its issuer;
//! - a failed fetch (including a callout the host refuses) keeps the last good set and
//!   backs every VM off for `retryInterval`, but a set not refreshed for `maxStaleness`
//!   is no longer trusted: its issuer's tokens get 503 until a fetch succeeds;
//! - a set is versioned by its keys ([`KeySet::fingerprint`]), so refetching the same keys
//!   keeps the verified-token cache and any other set drops it;
//! - a shared record that is not this plugin's is ignored and overwritten by the next fetch.
//!
//! Time is the wall clock on purpose: every interval here is measured from a stamp in a
//! shared record (the set's `fetched_at`, the marker's `attempted_at` and `until`), which all
//! the worker VMs and every plugin on the proxy read, validated by the common record
//! envelope against the wall clock.

use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use banking_filter_common::clock::Timestamp;
use banking_filter_common::record::RecordError;
use banking_filter_common::shared::{SharedStore, StoreError, UpdateError};

use crate::config::{Config, KeySource, RemoteJwks};
use crate::fetch::{self, Announcement, JwksRecord, SharedSet};
use crate::jwks::{Algorithm, KeyOrigin, KeySet};
use crate::policy::{KeySets, ProviderKeys};

/// The host refused to start a callout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutError(pub String);

impl fmt::Display for CalloutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Starts HTTP calls: what the key manager needs from the host besides shared data.
pub trait JwksCallout {
    /// Sends a bodiless request to `cluster`; the token names its response.
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<u32, CalloutError>;
}

/// What happened to a provider's keys, for the shell to log and count.
#[derive(Debug)]
pub enum KeyEvent {
    /// The free fetch marker or the stamp could not be created at configure.
    MarkerNotCreated { provider: usize, error: StoreError },
    /// A fetch was dispatched.
    FetchStarted { provider: usize },
    /// The host refused the callout: a failed fetch, retried after `retryInterval`.
    CalloutRefused {
        provider: usize,
        error: CalloutError,
    },
    /// A fetched set was installed (possibly empty: no usable key); `shared` is whether it
    /// went to shared data (false: a newer one was there), or why sharing it failed.
    Fetched {
        provider: usize,
        set: Rc<KeySet>,
        shared: Result<bool, UpdateError>,
        /// Writing the set's stamp (after the set was written); a failure leaves the other
        /// VMs to take the set at their next tick.
        announced: Result<(), UpdateError>,
    },
    /// A fetch failed; the last good set (if any) stays, in use unless `stale`.
    FetchFailed {
        provider: usize,
        problem: String,
        kept_last_good: bool,
        stale: bool,
    },
    /// The set was not refreshed for `maxStaleness`: its issuer's tokens are refused with
    /// 503 until a fetch succeeds. Reported once per set.
    Stale {
        provider: usize,
        fetched_at: Timestamp,
    },
    /// A newer set another VM fetched was installed.
    Installed {
        provider: usize,
        fetched_at: Timestamp,
    },
    /// The newer shared set does not parse; the current keys stay.
    Unusable { provider: usize, error: String },
    /// The value under the provider's record key is not this plugin's record. `first`
    /// when the reason differs from the last one reported, so the warning is logged once.
    RecordIgnored {
        provider: usize,
        why: RecordError,
        first: bool,
    },
}

/// A remote provider's fetch state in this VM.
#[derive(Debug, Clone)]
pub struct RemoteKeySource {
    pub remote: RemoteJwks,
    /// `fetched_at` of the set installed here.
    installed: Option<Timestamp>,
    /// `fetched_at` of the newest shared set found unusable, so requests do not parse it
    /// (and report it) again.
    unusable: Option<Timestamp>,
    /// A token named a `kid` the set lacks since the last fetch.
    unknown_kid_seen: bool,
    /// The token of this VM's pending fetch.
    in_flight: Option<u32>,
    /// The last reason a shared record was ignored.
    ignored_reported: Option<RecordError>,
    /// The installed set was reported stale.
    stale_reported: bool,
    /// What the stamp said when a request last read the shared set, since the last tick:
    /// requests read the set once per stamp per tick (see `crate::fetch`).
    looked_since_tick: Option<Announcement>,
}

impl RemoteKeySource {
    fn new(remote: RemoteJwks) -> Self {
        RemoteKeySource {
            remote,
            installed: None,
            unusable: None,
            unknown_kid_seen: false,
            in_flight: None,
            ignored_reported: None,
            stale_reported: false,
            looked_since_tick: None,
        }
    }
}

/// One provider's keys: the set in use and, for a remote JWKS, how it is kept fresh.
#[derive(Debug, Clone)]
pub struct IssuerKeys {
    keys: ProviderKeys,
    allowed_algorithms: Vec<Algorithm>,
    remote: Option<RemoteKeySource>,
}

impl IssuerKeys {
    /// Installs a remote set stamped `fetched_at`, trusted for `maxStaleness` from then.
    /// Its keys version the cached tokens: the same keys again keep them.
    fn install(&mut self, set: Rc<KeySet>, fetched_at: Timestamp) {
        let expires_at = self
            .remote
            .as_ref()
            .map(|source| fetched_at.plus(source.remote.max_staleness));
        self.keys = ProviderKeys {
            version: set.fingerprint(),
            set: Some(set),
            expires_at,
        };
        if let Some(source) = &mut self.remote {
            source.installed = Some(fetched_at);
            source.unknown_kid_seen = false;
            source.stale_reported = false;
        }
    }
}

/// Every provider's keys in this VM.
#[derive(Debug, Clone)]
pub struct KeyManager {
    providers: Vec<IssuerKeys>,
    /// This VM's id in fetch markers (never 0, which marks a marker nobody holds).
    owner: u64,
}

impl KeyManager {
    /// Inline sets installed, remote ones empty until fetched.
    pub fn new(config: &Config, owner: u64) -> Self {
        let providers = config
            .providers
            .iter()
            .map(|p| match &p.keys {
                KeySource::Inline(set) => IssuerKeys {
                    keys: ProviderKeys {
                        set: Some(Rc::new(set.clone())),
                        version: 1,
                        expires_at: None,
                    },
                    allowed_algorithms: p.allowed_algorithms.clone(),
                    remote: None,
                },
                KeySource::Remote(remote) => IssuerKeys {
                    keys: ProviderKeys::default(),
                    allowed_algorithms: p.allowed_algorithms.clone(),
                    remote: Some(RemoteKeySource::new(remote.clone())),
                },
            })
            .collect();
        KeyManager {
            providers,
            owner: owner.max(1),
        }
    }

    /// Whether any provider fetches its keys (and so needs ticks).
    pub fn has_remote(&self) -> bool {
        self.providers.iter().any(|p| p.remote.is_some())
    }

    /// The remote JWKS of provider `index`, if it has one.
    pub fn remote(&self, index: usize) -> Option<&RemoteJwks> {
        Some(&self.providers.get(index)?.remote.as_ref()?.remote)
    }

    /// `fetched_at` of the set provider `index` has installed, if remote and fetched.
    pub fn installed(&self, index: usize) -> Option<Timestamp> {
        self.providers.get(index)?.remote.as_ref()?.installed
    }

    /// Creates every remote provider's fetch marker (free) and stamp where there are none yet.
    pub fn ensure_markers(&self, store: &dyn SharedStore, events: &mut Vec<KeyEvent>) {
        for (provider, keys) in self.providers.iter().enumerate() {
            if let Some(source) = &keys.remote
                && let Err(error) = fetch::ensure_marker(store, &source.remote)
            {
                events.push(KeyEvent::MarkerNotCreated { provider, error });
            }
        }
    }

    /// A token for provider `index` named a `kid` its set lacks: the next tick may refetch.
    pub fn unknown_kid(&mut self, index: usize) {
        if let Some(source) = self
            .providers
            .get_mut(index)
            .and_then(|p| p.remote.as_mut())
        {
            source.unknown_kid_seen = true;
        }
    }

    /// [`Self::adopt_shared`] for a request that needs keys this VM lacks: reads the set
    /// only when the stamp beside it is newer than what this VM has seen, or unreadable, and
    /// then once per stamp until the next tick. So such requests, which any client can
    /// send, cost one 14-byte shared-data read each, not a copy of the set. True when the
    /// keys changed.
    pub fn adopt_announced(
        &mut self,
        index: usize,
        store: &dyn SharedStore,
        now: Timestamp,
        events: &mut Vec<KeyEvent>,
    ) -> bool {
        let Some(source) = self
            .providers
            .get_mut(index)
            .and_then(|p| p.remote.as_mut())
        else {
            return false;
        };
        let seen = source.installed.max(source.unusable);
        let announcement = fetch::announcement(store, &source.remote, seen, now);
        if announcement == Announcement::NothingNewer
            || source.looked_since_tick == Some(announcement)
        {
            return false;
        }
        source.looked_since_tick = Some(announcement);
        self.adopt_shared(index, store, now, events)
    }

    /// Installs the shared set of remote provider `index` if another VM fetched a newer one
    /// than this VM has seen. True when the keys changed.
    pub fn adopt_shared(
        &mut self,
        index: usize,
        store: &dyn SharedStore,
        now: Timestamp,
        events: &mut Vec<KeyEvent>,
    ) -> bool {
        let Some(keys) = self.providers.get_mut(index) else {
            return false;
        };
        let Some(source) = &mut keys.remote else {
            return false;
        };
        let seen = source.installed.max(source.unusable);
        match fetch::read_newer_record(store, &source.remote, seen, now) {
            SharedSet::NothingNewer => false,
            SharedSet::Ignored(why) => {
                let first = source.ignored_reported.replace(why) != Some(why);
                events.push(KeyEvent::RecordIgnored {
                    provider: index,
                    why,
                    first,
                });
                false
            }
            SharedSet::Newer(record) => {
                match KeySet::parse_published(
                    &record.body,
                    &keys.allowed_algorithms,
                    KeyOrigin::Remote,
                ) {
                    Ok(set) => {
                        keys.install(Rc::new(set), record.fetched_at);
                        events.push(KeyEvent::Installed {
                            provider: index,
                            fetched_at: record.fetched_at,
                        });
                        true
                    }
                    Err(e) => {
                        source.unusable = Some(record.fetched_at);
                        events.push(KeyEvent::Unusable {
                            provider: index,
                            error: e.to_string(),
                        });
                        false
                    }
                }
            }
        }
    }

    /// The tick: per remote provider, installs a newer shared set, reports a set that has
    /// gone stale, then starts the fetch if one is due and this VM takes the marker.
    pub fn on_tick(
        &mut self,
        store: &dyn SharedStore,
        callout: &mut dyn JwksCallout,
        now: Timestamp,
        events: &mut Vec<KeyEvent>,
    ) {
        for index in 0..self.providers.len() {
            self.adopt_shared(index, store, now, events);
            let owner = self.owner;
            let Some(keys) = self.providers.get_mut(index) else {
                continue;
            };
            let Some(source) = &mut keys.remote else {
                continue;
            };
            // The tick has read the set itself: requests may look once more per stamp.
            source.looked_since_tick = None;
            if keys.keys.is_stale(now)
                && !source.stale_reported
                && let Some(fetched_at) = source.installed
            {
                source.stale_reported = true;
                events.push(KeyEvent::Stale {
                    provider: index,
                    fetched_at,
                });
            }
            if source.in_flight.is_some() {
                continue;
            }
            let remote = &source.remote;
            let last_attempt = fetch::read_marker(store, remote, now)
                .map(|m| m.attempted_at)
                .filter(|t| t.0 > 0);
            if !fetch::fetch_due(
                remote,
                source.installed,
                last_attempt,
                source.unknown_kid_seen,
                now,
            ) {
                continue;
            }
            let hold = remote.timeout + Duration::from_secs(1);
            if !fetch::try_take(store, remote, owner, now, hold) {
                continue;
            }
            let headers = fetch::request_headers(remote);
            match callout.dispatch(&remote.cluster, &headers, remote.timeout) {
                Ok(token) => {
                    source.in_flight = Some(token);
                    source.unknown_kid_seen = false;
                    events.push(KeyEvent::FetchStarted { provider: index });
                }
                Err(error) => {
                    // Best effort: a marker left held frees itself after its hold.
                    let _ = fetch::release(store, remote, owner, now.plus(remote.retry_interval));
                    events.push(KeyEvent::CalloutRefused {
                        provider: index,
                        error,
                    });
                }
            }
        }
    }

    /// The provider whose pending fetch `token` answers, no longer pending; `None` for a
    /// call that is not this manager's.
    pub fn take_call(&mut self, token: u32) -> Option<usize> {
        self.providers.iter_mut().enumerate().find_map(|(i, p)| {
            let source = p.remote.as_mut()?;
            (source.in_flight == Some(token)).then(|| {
                source.in_flight = None;
                i
            })
        })
    }

    /// A fetch of provider `index` came back with `fetched` (the body, or why there is none).
    /// A JWKS is installed whatever it holds (a set without a usable key too), shared, and
    /// the marker freed; anything else keeps the last good set and holds the marker for
    /// `retryInterval`.
    pub fn on_fetched(
        &mut self,
        index: usize,
        fetched: Result<Vec<u8>, String>,
        store: &dyn SharedStore,
        now: Timestamp,
        events: &mut Vec<KeyEvent>,
    ) {
        let owner = self.owner;
        let Some(keys) = self.providers.get_mut(index) else {
            return;
        };
        let Some(source) = &keys.remote else {
            return;
        };
        let remote = source.remote.clone();
        let parsed = fetched.and_then(|body| {
            KeySet::parse_published(&body, &keys.allowed_algorithms, KeyOrigin::Remote)
                .map(|set| (set, body))
                .map_err(|e| e.to_string())
        });
        match parsed {
            Ok((set, body)) => {
                let record = JwksRecord {
                    fetched_at: now,
                    body,
                };
                let shared = fetch::publish(store, &remote, &record, now);
                // The stamp only after the set: it must never announce a set not there yet.
                let announced = match shared {
                    Ok(true) => fetch::announce(store, &remote, now, now),
                    _ => Ok(()),
                };
                let set = Rc::new(set);
                keys.install(Rc::clone(&set), now);
                events.push(KeyEvent::Fetched {
                    provider: index,
                    set,
                    shared,
                    announced,
                });
                let _ = fetch::release(store, &remote, owner, now);
            }
            Err(problem) => {
                events.push(KeyEvent::FetchFailed {
                    provider: index,
                    problem,
                    kept_last_good: source.installed.is_some(),
                    stale: keys.keys.is_stale(now),
                });
                let _ = fetch::release(store, &remote, owner, now.plus(remote.retry_interval));
            }
        }
    }
}

impl KeySets for KeyManager {
    fn provider(&self, index: usize) -> Option<&ProviderKeys> {
        self.providers.get(index).map(|p| &p.keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banking_filter_common::record;
    use banking_filter_common::shared::MemoryStore;
    use wasm_bindgen_test::wasm_bindgen_test;

    /// The Ed25519 public key of RFC 8037, appendix A.2.
    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn jwks(kids: &[&str]) -> Vec<u8> {
        let keys: Vec<String> = kids
            .iter()
            .map(|kid| format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"{kid}"}}"#))
            .collect();
        format!(r#"{{"keys":[{}]}}"#, keys.join(",")).into_bytes()
    }

    fn config() -> Config {
        let text = r#"{"instance":"test","providers":[{"issuer":"https://idp.bank.example",
            "audiences":["payments-api"],"remoteJwks":{"cluster":"idp","authority":"idp.bank",
            "path":"/jwks.json","timeout":"5s","cacheDuration":"100s",
            "minRefetchInterval":"30s","retryInterval":"5s"}}]}"#;
        Config::parse(text.as_bytes()).unwrap().config
    }

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_unix_seconds(1_900_000_000 + secs)
    }

    /// A dispatched call: cluster, headers, timeout.
    type Call = (String, Vec<(String, String)>, Duration);

    /// Records every call; answers with increasing tokens, or refuses while `refuse` is set.
    #[derive(Default)]
    struct FakeCallout {
        calls: Vec<Call>,
        refuse: bool,
    }

    impl JwksCallout for FakeCallout {
        fn dispatch(
            &mut self,
            cluster: &str,
            headers: &[(&str, &str)],
            timeout: Duration,
        ) -> Result<u32, CalloutError> {
            if self.refuse {
                return Err(CalloutError("BadArgument".into()));
            }
            let headers = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            self.calls.push((cluster.to_owned(), headers, timeout));
            Ok(u32::try_from(self.calls.len()).unwrap())
        }
    }

    /// One worker VM: its manager, its callouts, and what it reported.
    struct Vm {
        keys: KeyManager,
        callout: FakeCallout,
        events: Vec<KeyEvent>,
    }

    impl Vm {
        fn new(owner: u64) -> Vm {
            Vm {
                keys: KeyManager::new(&config(), owner),
                callout: FakeCallout::default(),
                events: Vec::new(),
            }
        }

        fn tick(&mut self, store: &dyn SharedStore, now: Timestamp) {
            self.keys
                .on_tick(store, &mut self.callout, now, &mut self.events);
        }

        /// Answers this VM's last call with `fetched`.
        fn answer(
            &mut self,
            store: &dyn SharedStore,
            fetched: Result<Vec<u8>, String>,
            now: Timestamp,
        ) {
            let token = u32::try_from(self.callout.calls.len()).unwrap();
            let provider = self.keys.take_call(token).expect("a pending call");
            self.keys
                .on_fetched(provider, fetched, store, now, &mut self.events);
        }

        fn fetches(&self) -> usize {
            self.callout.calls.len()
        }

        fn has_kid(&self, kid: &str) -> bool {
            self.keys
                .provider(0)
                .and_then(|k| k.set.as_ref())
                .is_some_and(|set| set.has_kid(kid))
        }

        fn count(&self, what: fn(&KeyEvent) -> bool) -> usize {
            self.events.iter().filter(|e| what(e)).count()
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_first_fetch_starts_on_the_first_tick_and_installs_the_set() {
        let store = MemoryStore::new();
        let mut vm = Vm::new(1);
        assert!(vm.keys.has_remote());
        vm.keys.ensure_markers(&store, &mut vm.events);
        assert_eq!(vm.fetches(), 0, "nothing before the first tick");
        assert!(vm.keys.provider(0).unwrap().set.is_none());

        vm.tick(&store, t(0));
        assert_eq!(vm.fetches(), 1);
        let (cluster, headers, timeout) = &vm.callout.calls[0];
        assert_eq!(
            (cluster.as_str(), *timeout),
            ("idp", Duration::from_secs(5))
        );
        assert!(headers.contains(&(":path".into(), "/jwks.json".into())));
        assert!(headers.contains(&(":authority".into(), "idp.bank".into())));
        // While the call is out, no second one.
        vm.tick(&store, t(1));
        assert_eq!(vm.fetches(), 1);

        vm.answer(&store, Ok(jwks(&["k1"])), t(2));
        assert!(vm.has_kid("k1"));
        assert_eq!(vm.keys.installed(0), Some(t(2)));
        let keys = vm.keys.provider(0).unwrap();
        assert_eq!(keys.version, keys.set.as_ref().unwrap().fingerprint());
        // Trusted for maxStaleness (3 x cacheDuration by default) from the fetch.
        assert_eq!(keys.expires_at, Some(t(302)));
        assert!(matches!(
            vm.events.last(),
            Some(KeyEvent::Fetched {
                shared: Ok(true),
                announced: Ok(()),
                ..
            })
        ));
        // Shared, and the marker is free again.
        let record = fetch::read_record(&store, &vm.keys.remote(0).unwrap().clone(), t(2));
        assert_eq!(record.map(|r| r.body), Some(jwks(&["k1"])));
        let marker = fetch::read_marker(&store, vm.keys.remote(0).unwrap(), t(2)).unwrap();
        assert_eq!(marker.until, t(2));
        // An answer to a call that is not the manager's is not taken.
        assert_eq!(vm.keys.take_call(99), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_set_is_refreshed_at_90_percent_of_cache_duration() {
        let store = MemoryStore::new();
        let mut vm = Vm::new(1);
        vm.tick(&store, t(0));
        vm.answer(&store, Ok(jwks(&["k1"])), t(0));
        vm.tick(&store, t(89));
        assert_eq!(vm.fetches(), 1);
        vm.tick(&store, t(90));
        assert_eq!(vm.fetches(), 2);
        vm.answer(&store, Ok(jwks(&["k2"])), t(90));
        assert!(vm.has_kid("k2") && !vm.has_kid("k1"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_unknown_kid_refetches_at_most_once_per_min_refetch_interval() {
        let store = MemoryStore::new();
        let mut vm = Vm::new(1);
        vm.tick(&store, t(0));
        vm.answer(&store, Ok(jwks(&["k1"])), t(0));
        // Without an unknown kid nothing is due before the refresh.
        vm.tick(&store, t(40));
        assert_eq!(vm.fetches(), 1);
        vm.keys.unknown_kid(0);
        vm.tick(&store, t(41));
        assert_eq!(vm.fetches(), 2, "30 s after the last fetch");
        vm.answer(&store, Ok(jwks(&["k1"])), t(41));
        // The flood goes on: the next refetch waits for the interval again.
        for s in 42..71 {
            vm.keys.unknown_kid(0);
            vm.tick(&store, t(s));
        }
        assert_eq!(vm.fetches(), 2);
        vm.keys.unknown_kid(0);
        vm.tick(&store, t(71));
        assert_eq!(vm.fetches(), 3);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_failed_fetch_keeps_the_last_good_set_and_backs_off() {
        let store = MemoryStore::new();
        let mut vm = Vm::new(1);
        vm.tick(&store, t(0));
        vm.answer(&store, Err("HTTP status 500".into()), t(0));
        assert!(matches!(
            vm.events.last(),
            Some(KeyEvent::FetchFailed {
                kept_last_good: false,
                ..
            })
        ));
        vm.tick(&store, t(4));
        assert_eq!(vm.fetches(), 1, "backing off for retryInterval");
        vm.tick(&store, t(5));
        assert_eq!(vm.fetches(), 2);
        vm.answer(&store, Ok(jwks(&["k1"])), t(5));

        // Refresh due at 95 s; a malformed set keeps k1.
        vm.tick(&store, t(95));
        vm.answer(&store, Ok(b"{not json".to_vec()), t(95));
        assert!(vm.has_kid("k1"));
        assert!(matches!(
            vm.events.last(),
            Some(KeyEvent::FetchFailed { kept_last_good: true, problem, .. })
                if problem.contains("not a JWKS document")
        ));
        vm.tick(&store, t(99));
        assert_eq!(vm.fetches(), 3);
        vm.tick(&store, t(100));
        assert_eq!(vm.fetches(), 4);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_refused_callout_is_a_failed_fetch_retried_after_the_interval() {
        let store = MemoryStore::new();
        let mut vm = Vm::new(1);
        vm.callout.refuse = true;
        vm.tick(&store, t(0));
        assert_eq!(
            vm.count(|e| matches!(e, KeyEvent::CalloutRefused { .. })),
            1
        );
        vm.callout.refuse = false;
        vm.tick(&store, t(4));
        assert_eq!(vm.fetches(), 0, "backing off");
        vm.tick(&store, t(5));
        assert_eq!(vm.fetches(), 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_neighbours_record_is_ignored_reported_once_and_overwritten() {
        let store = MemoryStore::new();
        let mut vm = Vm::new(1);
        let key = fetch::record_key(vm.keys.remote(0).unwrap());
        // Another plugin's value, with the same key in its hand.
        store
            .set(&key, &record::encode(9, 0, &jwks(&["planted"])), None)
            .unwrap();
        vm.tick(&store, t(0));
        assert!(!vm.has_kid("planted"));
        assert_eq!(vm.fetches(), 1, "fetched as if there were no record");
        let mut events = Vec::new();
        assert!(!vm.keys.adopt_shared(0, &store, t(1), &mut events));
        let ignored: Vec<bool> = vm
            .events
            .iter()
            .chain(&events)
            .filter_map(|e| match e {
                KeyEvent::RecordIgnored { why, first, .. } => {
                    assert_eq!(*why, RecordError::UnknownVersion(9));
                    Some(*first)
                }
                _ => None,
            })
            .collect();
        assert_eq!(ignored, vec![true, false], "each seen, reported once");
        vm.answer(&store, Ok(jwks(&["k1"])), t(2));
        assert!(vm.has_kid("k1"));
        let stored = fetch::read_record(&store, vm.keys.remote(0).unwrap(), t(2)).unwrap();
        assert_eq!(stored.body, jwks(&["k1"]));
    }

    /// A store that remembers which keys were read, and which written.
    #[derive(Default)]
    struct ReadLog {
        store: MemoryStore,
        reads: std::cell::RefCell<Vec<String>>,
        writes: std::cell::RefCell<Vec<String>>,
    }

    impl SharedStore for ReadLog {
        fn get(&self, key: &str) -> Result<banking_filter_common::shared::Versioned, StoreError> {
            self.reads.borrow_mut().push(key.to_owned());
            self.store.get(key)
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.writes.borrow_mut().push(key.to_owned());
            self.store.set(key, value, cas)
        }
    }

    impl ReadLog {
        /// The keys read since the last call.
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.reads.borrow_mut())
        }

        /// The keys written since the last call.
        fn take_writes(&self) -> Vec<String> {
            std::mem::take(&mut *self.writes.borrow_mut())
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_request_short_of_keys_reads_the_small_stamp_and_the_set_once_per_new_stamp() {
        let log = ReadLog::default();
        let (mut a, mut b) = (Vm::new(1), Vm::new(2));
        a.keys.ensure_markers(&log.store, &mut a.events);
        b.keys.ensure_markers(&log.store, &mut b.events);
        let remote = a.keys.remote(0).unwrap().clone();
        let (set_key, stamp_key) = (fetch::record_key(&remote), fetch::stamp_key(&remote));
        // Times finer than the stamp's milliseconds, as a real clock gives them.
        let at = |secs: u64| Timestamp(t(secs).0 + 123_456_789);
        a.tick(&log.store, at(0));
        a.answer(&log, Ok(jwks(&["k1"])), at(0));
        log.take();
        // The set, then its stamp (never a stamp announcing a set not there yet), then the
        // fetch marker handed back.
        let marker_key = fetch::marker_key(&remote);
        assert_eq!(
            log.take_writes(),
            vec![set_key.clone(), stamp_key.clone(), marker_key]
        );
        let mut events = Vec::new();
        assert!(b.keys.adopt_announced(0, &log, at(1), &mut events));
        assert!(b.has_kid("k1"));
        assert_eq!(log.take(), vec![stamp_key.clone(), set_key.clone()]);

        // Tokens with kids nobody publishes, on the worker that took the set and on the one
        // that fetched it: the stamp is read, never the set.
        for _ in 0..3 {
            assert!(!b.keys.adopt_announced(0, &log, at(2), &mut events));
            assert!(!a.keys.adopt_announced(0, &log, at(2), &mut events));
        }
        assert_eq!(log.take(), vec![stamp_key.clone(); 6]);

        // A rotation fetched by A is announced, and B takes it on its next such request.
        a.keys.unknown_kid(0);
        a.tick(&log.store, at(31));
        a.answer(&log.store, Ok(jwks(&["k1", "k2"])), at(31));
        assert!(b.keys.adopt_announced(0, &log, at(31), &mut events));
        assert!(b.has_kid("k2"));
        assert_eq!(log.take(), vec![stamp_key.clone(), set_key.clone()]);

        // A stamp planted in the past (or left behind) hides nothing from the tick.
        let record = JwksRecord {
            fetched_at: at(40),
            body: jwks(&["k1", "k2", "k3"]),
        };
        fetch::publish(&log.store, &remote, &record, at(40)).unwrap();
        let past = record::encode(fetch::STAMP_RECORD_VERSION, 0, &[]);
        log.store.set(&stamp_key, &past, None).unwrap();
        assert!(!b.keys.adopt_announced(0, &log, at(41), &mut events));
        assert!(!b.has_kid("k3"));
        b.tick(&log.store, at(41));
        assert!(b.has_kid("k3"));

        // An unreadable stamp means "look", once until the next tick.
        log.store.set(&stamp_key, b"junk", None).unwrap();
        log.take();
        for _ in 0..3 {
            assert!(!b.keys.adopt_announced(0, &log, at(42), &mut events));
        }
        assert_eq!(
            log.take(),
            vec![
                stamp_key.clone(),
                set_key.clone(),
                stamp_key.clone(),
                stamp_key.clone()
            ]
        );
        b.tick(&log.store, at(43));
        log.take();
        assert!(!b.keys.adopt_announced(0, &log, at(43), &mut events));
        assert_eq!(log.take(), vec![stamp_key.clone(), set_key.clone()]);

        // So does a stamp newer than the set beside it: once per stamp.
        let ahead = record::encode(fetch::STAMP_RECORD_VERSION, at(45).unix_millis(), &[]);
        log.store.set(&stamp_key, &ahead, None).unwrap();
        for _ in 0..3 {
            assert!(!b.keys.adopt_announced(0, &log, at(44), &mut events));
        }
        assert_eq!(
            log.take(),
            vec![stamp_key.clone(), set_key, stamp_key.clone(), stamp_key]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn two_vms_on_one_store_share_one_fetch_and_its_set() {
        let store = MemoryStore::new();
        let (mut a, mut b) = (Vm::new(1), Vm::new(2));
        a.keys.ensure_markers(&store, &mut a.events);
        b.keys.ensure_markers(&store, &mut b.events);
        a.tick(&store, t(0));
        b.tick(&store, t(0));
        assert_eq!((a.fetches(), b.fetches()), (1, 0), "one fetch per proxy");
        a.answer(&store, Ok(jwks(&["k1"])), t(1));

        // B picks the set up on a request short of keys, before its next tick.
        let mut events = Vec::new();
        assert!(b.keys.adopt_shared(0, &store, t(1), &mut events));
        assert!(b.has_kid("k1"));
        assert!(matches!(
            events[..],
            [KeyEvent::Installed { provider: 0, .. }]
        ));
        // Nothing newer: no parse, no change.
        assert!(!b.keys.adopt_shared(0, &store, t(1), &mut Vec::new()));
        b.tick(&store, t(2));
        assert_eq!(b.fetches(), 0);
        // Both name the set by its stamp, so cached verifications agree.
        assert_eq!(
            a.keys.provider(0).unwrap().version,
            b.keys.provider(0).unwrap().version
        );

        // A rotation seen by both: one refetch, which B takes on its tick.
        a.keys.unknown_kid(0);
        b.keys.unknown_kid(0);
        b.tick(&store, t(31));
        a.tick(&store, t(31));
        assert_eq!((a.fetches(), b.fetches()), (1, 1));
        b.answer(&store, Ok(jwks(&["k1", "k2"])), t(32));
        a.tick(&store, t(33));
        assert!(a.has_kid("k2"));
        assert_eq!(a.fetches(), 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_unusable_shared_set_is_parsed_once_and_the_keys_stay() {
        let store = MemoryStore::new();
        let mut vm = Vm::new(1);
        vm.tick(&store, t(0));
        vm.answer(&store, Ok(jwks(&["k1"])), t(0));
        let remote = vm.keys.remote(0).unwrap().clone();
        let bad = JwksRecord {
            fetched_at: t(10),
            body: b"{not json".to_vec(),
        };
        fetch::publish(&store, &remote, &bad, t(10)).unwrap();
        let mut events = Vec::new();
        assert!(!vm.keys.adopt_shared(0, &store, t(10), &mut events));
        assert!(!vm.keys.adopt_shared(0, &store, t(11), &mut events));
        assert!(matches!(
            events[..],
            [KeyEvent::Unusable { provider: 0, .. }]
        ));
        assert!(vm.has_kid("k1"));
    }

    fn usable_keys(vm: &Vm) -> usize {
        vm.keys
            .provider(0)
            .and_then(|k| k.set.as_ref())
            .map_or(0, |set| set.entries().len())
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_fetched_set_without_a_usable_key_replaces_the_last_good_one_on_every_vm() {
        let store = MemoryStore::new();
        let (mut a, mut b) = (Vm::new(1), Vm::new(2));
        a.tick(&store, t(0));
        a.answer(&store, Ok(jwks(&["k1"])), t(0));
        b.tick(&store, t(1));
        assert!(b.has_kid("k1"));

        // The issuer revokes every key: the refresh is the truth, not a failure.
        a.tick(&store, t(90));
        a.answer(&store, Ok(br#"{"keys":[]}"#.to_vec()), t(90));
        assert!(!a.has_kid("k1"));
        assert_eq!(usable_keys(&a), 0);
        assert!(a.keys.provider(0).unwrap().set.is_some(), "a set, empty");
        assert!(matches!(
            a.events.last(),
            Some(KeyEvent::Fetched { set, shared: Ok(true), .. }) if set.is_empty()
        ));
        assert_eq!(a.count(|e| matches!(e, KeyEvent::FetchFailed { .. })), 0);
        // Shared: the other worker drops k1 too, on its tick or on a request.
        let mut events = Vec::new();
        assert!(b.keys.adopt_shared(0, &store, t(91), &mut events));
        assert!(!b.has_kid("k1"));
        assert_eq!(
            a.keys.provider(0).unwrap().version,
            b.keys.provider(0).unwrap().version
        );
        // The marker was freed as after any success: the next refresh is at 90% again.
        a.tick(&store, t(179));
        assert_eq!(a.fetches(), 2);
        a.tick(&store, t(180));
        assert_eq!(a.fetches(), 3);

        // A rotation to keys this provider cannot use (a symmetric key from the network,
        // a key for encryption) is the same: no usable key.
        let unusable = format!(
            r#"{{"keys":[{{"kty":"oct","k":"{}","kid":"h1"}},{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"k1","use":"enc"}}]}}"#,
            "A".repeat(64)
        );
        a.answer(&store, Ok(unusable.into_bytes()), t(180));
        assert_eq!(usable_keys(&a), 0);
        assert!(matches!(
            a.events.last(),
            Some(KeyEvent::Fetched { set, .. }) if set.is_empty() && set.skipped().len() == 2
        ));

        // Keys published again: service is back.
        a.keys.unknown_kid(0);
        a.tick(&store, t(210));
        a.answer(&store, Ok(jwks(&["k2"])), t(210));
        assert!(a.has_kid("k2"));
        assert!(b.keys.adopt_shared(0, &store, t(211), &mut events));
        assert!(b.has_kid("k2"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_set_not_refreshed_for_max_staleness_is_stale_until_a_fetch_succeeds() {
        let store = MemoryStore::new();
        let mut vm = Vm::new(1);
        vm.tick(&store, t(0));
        vm.answer(&store, Ok(jwks(&["k1"])), t(0));
        // cacheDuration 100 s, so maxStaleness 300 s; every refresh from 90 s on fails.
        let mut s = 90;
        while s < 300 {
            vm.tick(&store, t(s));
            if vm
                .keys
                .take_call(u32::try_from(vm.fetches()).unwrap())
                .is_some()
            {
                vm.keys.on_fetched(
                    0,
                    Err("HTTP status 503".into()),
                    &store,
                    t(s),
                    &mut vm.events,
                );
            }
            s += 5;
        }
        let keys = vm.keys.provider(0).unwrap();
        assert!(!keys.is_stale(t(299)) && keys.is_stale(t(300)));
        assert_eq!(vm.count(|e| matches!(e, KeyEvent::Stale { .. })), 0);
        assert!(vm.events.iter().any(|e| matches!(
            e,
            KeyEvent::FetchFailed {
                kept_last_good: true,
                stale: false,
                ..
            }
        )));

        // The tick that finds it stale reports it, once.
        vm.tick(&store, t(300));
        vm.tick(&store, t(301));
        let stale: Vec<Timestamp> = vm
            .events
            .iter()
            .filter_map(|e| match e {
                KeyEvent::Stale {
                    provider: 0,
                    fetched_at,
                } => Some(*fetched_at),
                _ => None,
            })
            .collect();
        assert_eq!(stale, vec![t(0)]);
        // The fetch due at 300 s fails too: said so.
        vm.answer(&store, Err("HTTP status 503".into()), t(301));
        assert!(matches!(
            vm.events.last(),
            Some(KeyEvent::FetchFailed { stale: true, .. })
        ));

        // A later success restores the set (the same keys: same version) for another
        // maxStaleness.
        let version = vm.keys.provider(0).unwrap().version;
        vm.tick(&store, t(306));
        vm.answer(&store, Ok(jwks(&["k1"])), t(306));
        let keys = vm.keys.provider(0).unwrap();
        assert!(!keys.is_stale(t(306)) && keys.is_stale(t(606)));
        assert_eq!(keys.version, version);
        vm.tick(&store, t(307));
        assert_eq!(vm.count(|e| matches!(e, KeyEvent::Stale { .. })), 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_same_keys_fetched_again_keep_their_version_and_other_keys_change_it() {
        let store = MemoryStore::new();
        let mut vm = Vm::new(1);
        let version = |vm: &Vm| vm.keys.provider(0).unwrap().version;
        vm.tick(&store, t(0));
        vm.answer(&store, Ok(jwks(&["k1", "k2"])), t(0));
        let first = version(&vm);
        // An unknown kid forces a refetch; the issuer serves the same keys, reformatted.
        vm.keys.unknown_kid(0);
        vm.tick(&store, t(30));
        let reformatted = String::from_utf8(jwks(&["k2", "k1"]))
            .unwrap()
            .replace(',', " ,\n ");
        vm.answer(&store, Ok(reformatted.into_bytes()), t(30));
        assert_eq!(vm.keys.installed(0), Some(t(30)), "installed, newer stamp");
        assert_eq!(version(&vm), first, "same keys, same version");
        // Another VM adopting it names it alike.
        let mut other = Vm::new(2);
        other.keys.adopt_shared(0, &store, t(31), &mut Vec::new());
        assert_eq!(version(&other), first);
        // A key revoked: another version.
        vm.keys.unknown_kid(0);
        vm.tick(&store, t(60));
        vm.answer(&store, Ok(jwks(&["k1"])), t(60));
        assert_ne!(version(&vm), first);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn inline_keys_are_installed_and_never_fetched() {
        let text = format!(
            r#"{{"instance":"test","providers":[{{"issuer":"i","audiences":["a"],"jwks":{}}}]}}"#,
            String::from_utf8(jwks(&["k1"])).unwrap()
        );
        let config = Config::parse(text.as_bytes()).unwrap().config;
        let store = MemoryStore::new();
        let mut keys = KeyManager::new(&config, 0);
        assert!(!keys.has_remote());
        assert_eq!(keys.provider(0).unwrap().version, 1);
        let mut callout = FakeCallout::default();
        let mut events = Vec::new();
        keys.on_tick(&store, &mut callout, t(0), &mut events);
        keys.unknown_kid(0);
        assert!(!keys.adopt_shared(0, &store, t(0), &mut events));
        assert!(callout.calls.is_empty() && events.is_empty());
    }
}
