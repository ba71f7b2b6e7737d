//! Shared data across worker VMs: a small store trait and a bounded compare-and-swap loop.
//!
//! Envoy runs one VM per worker thread; they meet only in the proxy's shared-data store,
//! where every value carries a CAS token. Read-modify-write therefore means: read value and
//! token, compute, write with the token, and start again if another VM wrote in between.
//! [`update`] does that a bounded number of times, so contention degrades to an error the
//! filter can fail closed on instead of a spin.
//!
//! Envoy treats a CAS of 0 (what a never-written key reports) as "no check", so the first
//! write of a new key is not protected: two VMs creating the same key at once both succeed
//! and the last one wins. Design keys so that this first write is idempotent.

use std::cell::RefCell;
use std::collections::HashMap;

/// A write lost the race: the value changed since it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasMismatch;

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    CasMismatch,
    Host(String),
}

impl From<CasMismatch> for StoreError {
    fn from(_: CasMismatch) -> Self {
        StoreError::CasMismatch
    }
}

/// A value and its CAS token, as read.
pub type Versioned = (Option<Vec<u8>>, Option<u32>);

/// Shared data with CAS semantics.
pub trait SharedStore {
    /// The value under `key` and its CAS token; `(None, None)` when absent.
    fn get(&self, key: &str) -> Result<Versioned, StoreError>;
    /// Writes `value`; with `Some(cas)` only if the value has not changed since that token
    /// was read, else `Err(StoreError::CasMismatch)`.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// What an [`update`] step decided.
pub enum Step<T> {
    /// Write these bytes, then return `T`.
    Write(Vec<u8>, T),
    /// Leave the stored value as it is and return `T`.
    Keep(T),
}

/// Why an [`update`] did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    /// Every attempt lost a CAS race.
    Contended { attempts: u32 },
    /// The host refused the call.
    Host(String),
}

/// Read-modify-write of `key`, retried on CAS mismatch at most `max_attempts` times.
///
/// `f` sees the current value (if any) and may be called once per attempt, so it must not
/// have side effects it cannot repeat.
pub fn update<S, T, F>(store: &S, key: &str, max_attempts: u32, mut f: F) -> Result<T, UpdateError>
where
    S: SharedStore + ?Sized,
    F: FnMut(Option<&[u8]>) -> Step<T>,
{
    for _ in 0..max_attempts {
        let (value, cas) = store.get(key).map_err(host_error)?;
        match f(value.as_deref()) {
            Step::Keep(out) => return Ok(out),
            Step::Write(bytes, out) => match store.set(key, &bytes, cas) {
                Ok(()) => return Ok(out),
                Err(StoreError::CasMismatch) => continue,
                Err(StoreError::Host(e)) => return Err(UpdateError::Host(e)),
            },
        }
    }
    Err(UpdateError::Contended {
        attempts: max_attempts,
    })
}

fn host_error(e: StoreError) -> UpdateError {
    match e {
        StoreError::Host(s) => UpdateError::Host(s),
        StoreError::CasMismatch => UpdateError::Host("unexpected CAS mismatch on read".into()),
    }
}

/// An in-memory store with Envoy's CAS rules, for testing cores that use [`update`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Versioned, StoreError> {
        Ok(match self.entries.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut entries = self.entries.borrow_mut();
        let current = entries.get(key).map(|(_, c)| *c);
        match (cas, current) {
            // As in Envoy, CAS 0 or none means "no check".
            (Some(expected), Some(now)) if expected != 0 && expected != now => {
                Err(StoreError::CasMismatch)
            }
            _ => {
                let next = current.unwrap_or(0).wrapping_add(1).max(1);
                entries.insert(key.to_string(), (value.to_vec(), next));
                Ok(())
            }
        }
    }
}

/// The proxy's shared data through proxy-wasm host calls.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
#[derive(Debug, Default, Clone, Copy)]
pub struct HostSharedData;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
impl SharedStore for HostSharedData {
    fn get(&self, key: &str) -> Result<Versioned, StoreError> {
        match crate::host::shared_data(key) {
            Ok((Some(value), cas)) => Ok((Some(value), Some(cas))),
            Ok((None, _)) => Ok((None, None)),
            Err(e) => Err(StoreError::Host(e.to_string())),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match crate::host::set_shared_data(key, value, cas.unwrap_or(0)) {
            Ok(()) => Ok(()),
            Err(e) if e.status == crate::host::Status::CAS_MISMATCH => Err(StoreError::CasMismatch),
            Err(e) => Err(StoreError::Host(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn counter_step(v: Option<&[u8]>) -> Step<u32> {
        let n = v
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
            + 1;
        Step::Write(n.to_string().into_bytes(), n)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn update_writes_new_value_and_returns_result() {
        let store = MemoryStore::new();
        assert_eq!(update(&store, "k", 3, counter_step), Ok(1));
        assert_eq!(update(&store, "k", 3, counter_step), Ok(2));
        assert_eq!(store.get("k").unwrap().0.unwrap(), b"2");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn stale_cas_is_refused() {
        let store = MemoryStore::new();
        store.set("k", b"a", None).unwrap();
        let (_, cas) = store.get("k").unwrap();
        store.set("k", b"b", cas).unwrap();
        assert_eq!(store.set("k", b"c", cas), Err(StoreError::CasMismatch));
    }

    /// A store where another VM writes between our read and our write, `races` times.
    struct RacingStore {
        inner: MemoryStore,
        races: Cell<u32>,
    }

    impl SharedStore for RacingStore {
        fn get(&self, key: &str) -> Result<Versioned, StoreError> {
            let read = self.inner.get(key);
            if self.races.get() > 0 {
                self.races.set(self.races.get() - 1);
                self.inner.set(key, b"100", None)?;
            }
            read
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.inner.set(key, value, cas)
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn update_retries_after_losing_a_race_and_sees_the_winner() {
        let store = RacingStore {
            inner: MemoryStore::new(),
            races: Cell::new(2),
        };
        store.inner.set("k", b"1", None).unwrap();
        assert_eq!(update(&store, "k", 3, counter_step), Ok(101));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn update_gives_up_after_max_attempts() {
        let store = RacingStore {
            inner: MemoryStore::new(),
            races: Cell::new(10),
        };
        store.inner.set("k", b"1", None).unwrap();
        assert_eq!(
            update(&store, "k", 3, counter_step),
            Err(UpdateError::Contended { attempts: 3 })
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn keep_step_writes_nothing() {
        let store = MemoryStore::new();
        assert_eq!(update(&store, "k", 1, |_| Step::Keep(7)), Ok(7));
        assert_eq!(store.get("k").unwrap(), (None, None));
    }
}
