//! A fixed-size table of keyed records in the proxy's shared data, for filter state that
//! must stay bounded and correct across worker VMs (rate-limit buckets, idempotency records).
//!
//! # Why slots
//! Envoy's shared data has one key space per `vm_id` (Istio sets none, so every plugin on a
//! proxy shares it), no delete, no TTL and no size limit. A key per request key would grow
//! without bound, so a table owns `slot_count` entries named `<namespace>/slot/<n>`, writes
//! each once as an empty record ([`SlotTable::ensure_created`], or on first sight) and from
//! then on only compare-and-swaps it. Nothing else is ever written.
//!
//! A request key (bytes) hashes to a home slot; the table probes at most `probe_limit`
//! slots from there for the key's own record, else claims the first free slot or one whose
//! record expired. Expiry is a millisecond deadline the caller writes with each value and
//! `now_ms` is passed in: this module never reads a clock.
//!
//! # Memory
//! At most `slot_count × (name + HEADER_LEN + max_key_len + max_value_len)` bytes of keys
//! and values, where `name` is the longest slot name (`<namespace>/slot/<slot_count - 1>`)
//! and [`HEADER_LEN`] is 20: [`SlotTable::memory_bound_bytes`] computes it. Envoy adds its
//! own per-entry overhead (a map node and a CAS) on top. The bound holds per namespace and
//! configuration; a changed `slot_count` leaves the old table's tail behind until restart.
//!
//! # A record
//! `magic "BKST" | version 1 | state (0 free, 1 held) | expires_at_ms u64 | key_len u16 |
//! value_len u32 | key | value`, big-endian. The whole key is stored, not a fingerprint:
//! request keys are client-chosen, and a forged 64- or 128-bit FNV collision would hand one
//! customer another's bucket or stored response. Callers with long keys pass a digest.
//!
//! A record that does not parse (another plugin wrote our key, a newer version, a host bug)
//! is never treated as free: it might be this key's record, so overwriting it could lose a
//! reservation. Its key's requests get [`SlotError::Corrupt`] and fail closed, and every
//! sighting is reported as [`SlotEvent::CorruptSeen`]. A new record version therefore
//! needs a new namespace, not an in-place upgrade.
//!
//! # Races
//! Each slot is one shared-data entry with its own CAS, so a probe over several slots is not
//! atomic. Two invariants keep every key in at most one slot:
//! * A free slot never comes back: slots go free → held and stay held (by some key, maybe
//!   expired). A key is claimed at the first claimable slot of its window, so a probe stops
//!   at the first free slot it meets: the key cannot be beyond it.
//! * Claimability changes only through time. Another key's slot becomes claimable
//!   [`RECLAIM_GRACE_MS`] after its deadline, while its own key sees it as absent from the
//!   deadline on. Two VMs inserting one new key could otherwise disagree on whether an
//!   earlier slot is still taken and claim two different slots. So a new key whose window
//!   passes another key's slot inside its grace (expired, not yet claimable) is placed
//!   nowhere ([`SlotError::Settling`]) until the grace is over: workers can then disagree only
//!   if their `now_ms` values differ by more than the grace within one update. So read the
//!   clock right before calling, and a write's deadline is never earlier than its `now_ms`.
//!
//! A table built [`SlotTable::reclaiming_at_expiry`] trades that guarantee for capacity and
//! availability: it has no grace, so a slot serves the next key as soon as its deadline
//! passes and no new key ever waits. Two workers inserting the same new key at the very
//! instant a slot in its window expires can then place it twice; lookups find the first, and
//! the other expires unused. That suits state where a second copy costs at most a fresh start
//! (a rate-limit bucket starts full), not state that must never be duplicated (an
//! idempotency reservation).
//!
//! The first write of a key is unprotected in Envoy (a CAS of 0 means "no check", and a
//! CAS on a missing key succeeds). Creation therefore writes with a CAS token no live slot
//! is expected to hold ([`CREATE_CAS`]): on a missing key it creates, on a key another VM
//! just created (and maybe claimed) it is refused as a mismatch instead of wiping the claim.

use crate::shared::{SharedStore, StoreError};

/// Bytes before the key in every record.
pub const HEADER_LEN: usize = 20;
/// The record format this module writes and reads.
pub const VERSION: u8 = 1;
const MAGIC: [u8; 4] = *b"BKST";
const STATE_FREE: u8 = 0;
const STATE_HELD: u8 = 1;
/// The most slots one update may probe.
pub const MAX_PROBE: u32 = 16;
/// How long past its deadline another key's slot stays taken (see the module doc).
pub const RECLAIM_GRACE_MS: u64 = 1_000;
/// The CAS a creation write carries. Envoy hands out CAS values from one proxy-wide 32-bit
/// counter that every plugin's writes advance and that wraps (skipping 0), so a slot holds
/// this value now and then; a creation write overwrites a slot only in the instant between
/// another VM creating it and this one's write, and only if the slot holds exactly this
/// value then.
pub const CREATE_CAS: u32 = u32::MAX;

/// Why a table cannot be built with these sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTable(pub &'static str);

/// Why an update did not complete. Every case means: the key's state is unknown, fail closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotError {
    /// Every slot within the probe holds another live key.
    Full { probed: u32 },
    /// Every attempt lost a CAS race.
    Contended { attempts: u32 },
    /// A slot within the probe does not parse and might be this key's; it is left as it is.
    Corrupt { slot: u32 },
    /// A new key's window passes a slot whose holder expired less than
    /// [`RECLAIM_GRACE_MS`] ago: workers whose clocks straddle the end of the grace could
    /// place the key in two slots, so it is placed by none until the grace is over.
    Settling { slot: u32 },
    /// The key is longer than the table's `max_key_len`.
    KeyTooLong { len: usize, max: usize },
    /// The step asked to store a value longer than the table's `max_value_len`.
    ValueTooLong { len: usize, max: usize },
    /// The host refused a call.
    Host(String),
}

/// What an update step decided, given the key's live value (`None` if absent or expired).
pub enum SlotStep<T> {
    /// Store `value` under the key until `expires_at_ms` (raised to `now_ms` if earlier),
    /// then return `result`.
    Write {
        value: Vec<u8>,
        expires_at_ms: u64,
        result: T,
    },
    /// Store nothing (a key without a slot gets none) and return `T`.
    Keep(T),
}

/// Something worth a counter that the result does not show. Implements
/// [`crate::metrics::Outcome`], so `OutcomeCounters<SlotEvent>` maps each to a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotEvent {
    /// An absent slot was written as an empty record.
    Created,
    /// A new key took a free slot: occupancy grew by one.
    Claimed,
    /// A new key took the slot of an expired one.
    Reclaimed,
    /// A probe stepped past a slot held by another live key.
    Collision,
    /// A CAS write lost a race and the update started again.
    Retried,
    /// A slot did not parse; it was left as it is.
    CorruptSeen,
}

impl crate::metrics::Outcome for SlotEvent {
    const ALL: &'static [SlotEvent] = &[
        SlotEvent::Created,
        SlotEvent::Claimed,
        SlotEvent::Reclaimed,
        SlotEvent::Collision,
        SlotEvent::Retried,
        SlotEvent::CorruptSeen,
    ];

    fn suffix(self) -> &'static str {
        match self {
            SlotEvent::Created => "slot_created",
            SlotEvent::Claimed => "slot_claimed",
            SlotEvent::Reclaimed => "slot_reclaimed",
            SlotEvent::Collision => "slot_collision",
            SlotEvent::Retried => "slot_retried",
            SlotEvent::CorruptSeen => "slot_corrupt",
        }
    }
}

/// What a full scan found ([`SlotTable::census`]): the occupancy gauge's source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    pub free: u32,
    pub live: u32,
    pub expired: u32,
    pub corrupt: u32,
    /// Not yet written (creation has not reached them).
    pub absent: u32,
}

/// One table: where its slots are and how big they may get. Immutable; share it by `Rc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTable {
    namespace: String,
    slot_count: u32,
    probe_limit: u32,
    max_key_len: usize,
    max_value_len: usize,
    /// How long past its deadline another key's slot stays taken: [`RECLAIM_GRACE_MS`], or 0
    /// for a table [`SlotTable::reclaiming_at_expiry`].
    reclaim_grace_ms: u64,
}

/// A slot as read.
#[derive(Debug, PartialEq, Eq)]
enum Record<'a> {
    Free,
    Held {
        key: &'a [u8],
        expires_at_ms: u64,
        value: &'a [u8],
    },
}

/// The slot an update will write, with the CAS token it was read under.
struct Target {
    slot: u32,
    cas: u32,
    /// `None`: the key's own slot. `Some(reclaim)`: a new claim, of an expired slot or not.
    claim: Option<bool>,
}

impl SlotTable {
    /// A table of `slot_count` slots under `namespace` (e.g. `rate-limit/payments`), probing
    /// `probe_limit` (1..=[`MAX_PROBE`], at most `slot_count`) slots per key.
    pub fn new(
        namespace: &str,
        slot_count: u32,
        probe_limit: u32,
        max_key_len: u16,
        max_value_len: u32,
    ) -> Result<SlotTable, InvalidTable> {
        if namespace.is_empty() || namespace.chars().any(char::is_whitespace) {
            return Err(InvalidTable(
                "namespace must be non-empty and without whitespace",
            ));
        }
        if slot_count == 0 {
            return Err(InvalidTable("slot_count must be at least 1"));
        }
        if probe_limit == 0 || probe_limit > MAX_PROBE || probe_limit > slot_count {
            return Err(InvalidTable(
                "probe_limit must be 1..=16 and at most slot_count",
            ));
        }
        Ok(SlotTable {
            namespace: namespace.to_string(),
            slot_count,
            probe_limit,
            max_key_len: usize::from(max_key_len),
            max_value_len: usize::try_from(max_value_len).unwrap_or(usize::MAX),
            reclaim_grace_ms: RECLAIM_GRACE_MS,
        })
    }

    /// This table without a reclaim grace: another key's slot is claimable as soon as its
    /// deadline passes, and [`SlotError::Settling`] never happens (see the module doc for what
    /// that risks).
    pub fn reclaiming_at_expiry(mut self) -> SlotTable {
        self.reclaim_grace_ms = 0;
        self
    }

    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    /// The shared-data key of slot `n`.
    pub fn slot_name(&self, n: u32) -> String {
        format!("{}/slot/{n}", self.namespace)
    }

    /// The most bytes of names and records this table can hold in shared data (see the
    /// module doc): `slot_count × (longest name + HEADER_LEN + max_key_len + max_value_len)`.
    pub fn memory_bound_bytes(&self) -> u64 {
        let longest_name = self.slot_name(self.slot_count.saturating_sub(1)).len();
        let per_slot = [HEADER_LEN, self.max_key_len, self.max_value_len]
            .iter()
            .fold(longest_name as u64, |sum, &n| sum.saturating_add(n as u64));
        u64::from(self.slot_count).saturating_mul(per_slot)
    }

    /// The slot a key's probe starts at.
    pub fn home_slot(&self, key: &[u8]) -> u32 {
        // Widening then reducing modulo a u32 cannot truncate.
        (mix(fnv1a(key)) % u64::from(self.slot_count)) as u32
    }

    /// Writes every absent slot as an empty record, leaving existing ones alone. Idempotent,
    /// and safe against other VMs doing the same or claiming slots meanwhile. Returns how
    /// many slots this call created.
    pub fn ensure_created<S, E>(&self, store: &S, mut on_event: E) -> Result<u32, SlotError>
    where
        S: SharedStore + ?Sized,
        E: FnMut(SlotEvent),
    {
        let mut created = 0;
        for n in 0..self.slot_count {
            let name = self.slot_name(n);
            let (value, _) = store.get(&name).map_err(read_error)?;
            match value {
                Some(bytes) => {
                    if parse(&bytes).is_none() {
                        on_event(SlotEvent::CorruptSeen);
                    }
                }
                None => {
                    if self.create(store, &name)? {
                        created += 1;
                        on_event(SlotEvent::Created);
                    }
                }
            }
        }
        Ok(created)
    }

    /// Counts slots by state at `now_ms`: `slot_count` reads, so for a slow tick, not per request.
    pub fn census<S>(&self, store: &S, now_ms: u64) -> Result<Census, SlotError>
    where
        S: SharedStore + ?Sized,
    {
        self.census_of(store, now_ms, 0..self.slot_count)
    }

    /// [`SlotTable::census`] of the slots in `slots` (those past `slot_count` are ignored), for
    /// a tick that counts a large table a part at a time.
    pub fn census_of<S>(
        &self,
        store: &S,
        now_ms: u64,
        slots: std::ops::Range<u32>,
    ) -> Result<Census, SlotError>
    where
        S: SharedStore + ?Sized,
    {
        let mut census = Census::default();
        for n in slots.start..slots.end.min(self.slot_count) {
            let (value, _) = store.get(&self.slot_name(n)).map_err(read_error)?;
            let Some(bytes) = value else {
                census.absent += 1;
                continue;
            };
            match parse(&bytes) {
                None => census.corrupt += 1,
                Some(Record::Free) => census.free += 1,
                Some(Record::Held { expires_at_ms, .. }) if expires_at_ms <= now_ms => {
                    census.expired += 1
                }
                Some(Record::Held { .. }) => census.live += 1,
            }
        }
        Ok(census)
    }

    /// Read-modify-write of `key`'s record at `now_ms`, retried on CAS mismatch at most
    /// `max_attempts` times. `f` sees the live value (`None` if the key has none or it
    /// expired) and may run once per attempt, so it must not have side effects it cannot
    /// repeat. A key without a slot gets one only when `f` writes.
    pub fn update<S, T, E, F>(
        &self,
        store: &S,
        key: &[u8],
        now_ms: u64,
        max_attempts: u32,
        mut on_event: E,
        mut f: F,
    ) -> Result<T, SlotError>
    where
        S: SharedStore + ?Sized,
        E: FnMut(SlotEvent),
        F: FnMut(Option<&[u8]>) -> SlotStep<T>,
    {
        if key.len() > self.max_key_len {
            return Err(SlotError::KeyTooLong {
                len: key.len(),
                max: self.max_key_len,
            });
        }
        let home = self.home_slot(key);
        for _ in 0..max_attempts {
            let probe = self.probe(store, key, home, now_ms, &mut on_event)?;
            for _ in 0..probe.collisions {
                on_event(SlotEvent::Collision);
            }
            for _ in 0..probe.corrupt_seen {
                on_event(SlotEvent::CorruptSeen);
            }
            let (target, current) = match (probe.own, probe.corrupt, probe.claimable) {
                (Some((target, current)), _, _) => (target, current),
                // The key may be in the slot we cannot read: claiming another would fork it.
                (None, Some(slot), _) => return Err(SlotError::Corrupt { slot }),
                // Another worker, a moment later, may claim the settling slot for this key.
                (None, None, Some(_)) if probe.settling.is_some() => {
                    let slot = probe.settling.unwrap_or_default();
                    return Err(SlotError::Settling { slot });
                }
                (None, None, Some(target)) => (target, None),
                (None, None, None) => {
                    return Err(SlotError::Full {
                        probed: probe.probed,
                    });
                }
            };
            let (value, expires_at_ms, result) = match f(current.as_deref()) {
                SlotStep::Keep(result) => return Ok(result),
                SlotStep::Write {
                    value,
                    expires_at_ms,
                    result,
                } => (value, expires_at_ms, result),
            };
            if value.len() > self.max_value_len {
                return Err(SlotError::ValueTooLong {
                    len: value.len(),
                    max: self.max_value_len,
                });
            }
            let record = encode_held(key, expires_at_ms.max(now_ms), &value);
            match store.set(&self.slot_name(target.slot), &record, Some(target.cas)) {
                Ok(()) => {
                    match target.claim {
                        Some(true) => on_event(SlotEvent::Reclaimed),
                        Some(false) => on_event(SlotEvent::Claimed),
                        None => {}
                    }
                    return Ok(result);
                }
                Err(StoreError::CasMismatch) => on_event(SlotEvent::Retried),
                Err(StoreError::Host(e)) => return Err(SlotError::Host(e)),
            }
        }
        Err(SlotError::Contended {
            attempts: max_attempts,
        })
    }

    /// One pass over `key`'s window: its own slot, or the first claimable one.
    fn probe<S, E>(
        &self,
        store: &S,
        key: &[u8],
        home: u32,
        now_ms: u64,
        on_event: &mut E,
    ) -> Result<Probe, SlotError>
    where
        S: SharedStore + ?Sized,
        E: FnMut(SlotEvent),
    {
        let mut probe = Probe::default();
        for step in 0..self.probe_limit {
            let slot = ((u64::from(home) + u64::from(step)) % u64::from(self.slot_count)) as u32;
            let (bytes, cas) = self.read_slot(store, slot, on_event)?;
            probe.probed += 1;
            let held = match parse(&bytes) {
                None => {
                    probe.corrupt_seen += 1;
                    probe.corrupt.get_or_insert(slot);
                    continue;
                }
                Some(Record::Free) => {
                    probe.claimable.get_or_insert(Target {
                        slot,
                        cas,
                        claim: Some(false),
                    });
                    // A free slot never comes back, and keys are claimed at the first
                    // claimable slot: the key is not further on.
                    break;
                }
                Some(Record::Held {
                    key: holder,
                    expires_at_ms,
                    value,
                }) => (holder == key, expires_at_ms, value),
            };
            match held {
                (true, expires_at_ms, value) => {
                    let live = (expires_at_ms > now_ms).then(|| value.to_vec());
                    let target = Target {
                        slot,
                        cas,
                        claim: None,
                    };
                    probe.own = Some((target, live));
                    break;
                }
                (false, expires_at_ms, _)
                    if expires_at_ms.saturating_add(self.reclaim_grace_ms) <= now_ms =>
                {
                    probe.claimable.get_or_insert(Target {
                        slot,
                        cas,
                        claim: Some(true),
                    });
                }
                (false, expires_at_ms, _) => {
                    if expires_at_ms <= now_ms && probe.claimable.is_none() {
                        probe.settling.get_or_insert(slot);
                    }
                    probe.collisions += 1;
                }
            }
        }
        Ok(probe)
    }

    /// A slot's bytes and CAS token, creating the slot first if it was never written.
    fn read_slot<S, E>(
        &self,
        store: &S,
        slot: u32,
        on_event: &mut E,
    ) -> Result<(Vec<u8>, u32), SlotError>
    where
        S: SharedStore + ?Sized,
        E: FnMut(SlotEvent),
    {
        let name = self.slot_name(slot);
        let (mut value, mut cas) = store.get(&name).map_err(read_error)?;
        if value.is_none() {
            if self.create(store, &name)? {
                on_event(SlotEvent::Created);
            }
            (value, cas) = store.get(&name).map_err(read_error)?;
        }
        match (value, cas) {
            // Without a token the write would be unconditional: never risk that.
            (Some(bytes), Some(cas)) if cas != 0 => Ok((bytes, cas)),
            (None, _) => Err(SlotError::Host(format!("{name}: absent after creation"))),
            (Some(_), _) => Err(SlotError::Host(format!("{name}: read without a CAS token"))),
        }
    }

    /// Writes the empty record if `name` is still missing; false if another VM got there first.
    fn create<S>(&self, store: &S, name: &str) -> Result<bool, SlotError>
    where
        S: SharedStore + ?Sized,
    {
        match store.set(name, &encode_free(), Some(CREATE_CAS)) {
            Ok(()) => Ok(true),
            Err(StoreError::CasMismatch) => Ok(false),
            Err(StoreError::Host(e)) => Err(SlotError::Host(e)),
        }
    }
}

/// What one pass over a key's window found.
#[derive(Default)]
struct Probe {
    own: Option<(Target, Option<Vec<u8>>)>,
    claimable: Option<Target>,
    /// Another key's slot, expired but within the grace, before any claimable slot.
    settling: Option<u32>,
    corrupt: Option<u32>,
    probed: u32,
    collisions: u32,
    corrupt_seen: u32,
}

fn read_error(e: StoreError) -> SlotError {
    match e {
        StoreError::Host(s) => SlotError::Host(s),
        StoreError::CasMismatch => SlotError::Host("unexpected CAS mismatch on read".into()),
    }
}

fn header(state: u8, expires_at_ms: u64, key_len: u16, value_len: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(state);
    out.extend_from_slice(&expires_at_ms.to_be_bytes());
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(&value_len.to_be_bytes());
    out
}

fn encode_free() -> Vec<u8> {
    header(STATE_FREE, 0, 0, 0)
}

/// Callers have checked both lengths against the table's limits, which fit the fields.
fn encode_held(key: &[u8], expires_at_ms: u64, value: &[u8]) -> Vec<u8> {
    let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    let value_len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    let mut out = header(STATE_HELD, expires_at_ms, key_len, value_len);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// A record, or `None` if anything about it is off: wrong magic or version, unknown state,
/// lengths that do not add up, a free record with contents.
fn parse(bytes: &[u8]) -> Option<Record<'_>> {
    let (head, body) = bytes.split_at_checked(HEADER_LEN)?;
    let (magic, rest) = head.split_first_chunk::<4>()?;
    let ([version, state], rest) = rest.split_first_chunk::<2>()?;
    let (expires_at_ms, rest) = rest.split_first_chunk::<8>()?;
    let (key_len, rest) = rest.split_first_chunk::<2>()?;
    let value_len = <[u8; 4]>::try_from(rest).ok()?;
    if *magic != MAGIC || *version != VERSION {
        return None;
    }
    let expires_at_ms = u64::from_be_bytes(*expires_at_ms);
    let key_len = usize::from(u16::from_be_bytes(*key_len));
    let value_len = usize::try_from(u32::from_be_bytes(value_len)).ok()?;
    match *state {
        STATE_FREE if expires_at_ms == 0 && key_len == 0 && value_len == 0 && body.is_empty() => {
            Some(Record::Free)
        }
        STATE_HELD if key_len.checked_add(value_len) == Some(body.len()) => {
            let (key, value) = body.split_at_checked(key_len)?;
            Some(Record::Held {
                key,
                expires_at_ms,
                value,
            })
        }
        _ => None,
    }
}

/// FNV-1a, 64-bit: stable across builds and Rust versions, so VMs of different releases
/// during a rollout agree on home slots.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's finaliser: FNV's low bits are weak, and the slot is taken modulo any count.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::{MemoryStore, Versioned};
    use std::cell::{Cell, RefCell};
    use wasm_bindgen_test::wasm_bindgen_test;

    const TTL: u64 = 60_000;

    fn table(slots: u32, probe: u32) -> SlotTable {
        SlotTable::new("test/t1", slots, probe, 64, 32).unwrap()
    }

    /// A counter step: the stored decimal plus one, kept `TTL` from `now`.
    fn incr(now: u64) -> impl FnMut(Option<&[u8]>) -> SlotStep<u64> {
        move |current| {
            let n = current
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            SlotStep::Write {
                value: n.to_string().into_bytes(),
                expires_at_ms: now + TTL,
                result: n,
            }
        }
    }

    fn count(
        t: &SlotTable,
        store: &dyn SharedStore,
        key: &[u8],
        now: u64,
    ) -> Result<u64, SlotError> {
        t.update(store, key, now, 4, |_| {}, incr(now))
    }

    fn events(
        t: &SlotTable,
        store: &dyn SharedStore,
        key: &[u8],
        now: u64,
    ) -> (Result<u64, SlotError>, Vec<SlotEvent>) {
        let mut seen = Vec::new();
        let result = t.update(store, key, now, 4, |e| seen.push(e), incr(now));
        (result, seen)
    }

    /// `n` distinct keys whose probe starts at `home`.
    fn keys_at(t: &SlotTable, home: u32, n: usize) -> Vec<Vec<u8>> {
        (0..)
            .map(|i| format!("customer-{i}").into_bytes())
            .filter(|k| t.home_slot(k) == home)
            .take(n)
            .collect()
    }

    /// Which slots hold `key` (any expiry).
    fn slots_holding(t: &SlotTable, store: &dyn SharedStore, key: &[u8]) -> Vec<u32> {
        (0..t.slot_count())
            .filter(|&n| {
                let bytes = store.get(&t.slot_name(n)).unwrap().0;
                matches!(bytes.as_deref().and_then(parse), Some(Record::Held { key: k, .. }) if k == key)
            })
            .collect()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_new_key_claims_one_slot_and_later_updates_stay_in_it() {
        let (t, store) = (table(8, 4), MemoryStore::new());
        let (first, seen) = events(&t, &store, b"alice", 1_000);
        assert_eq!(first, Ok(1));
        assert!(seen.contains(&SlotEvent::Claimed));
        let (second, seen) = events(&t, &store, b"alice", 1_001);
        assert_eq!(second, Ok(2));
        assert!(!seen.contains(&SlotEvent::Claimed));
        assert_eq!(
            slots_holding(&t, &store, b"alice"),
            vec![t.home_slot(b"alice")]
        );
        let census = t.census(&store, 1_001).unwrap();
        assert_eq!((census.live, census.free + census.absent), (1, 7));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn keep_on_a_key_without_a_slot_claims_nothing() {
        let (t, store) = (table(8, 4), MemoryStore::new());
        assert_eq!(
            t.update(
                &store,
                b"bob",
                0,
                4,
                |_| {},
                |v| SlotStep::Keep(v.is_some())
            ),
            Ok(false)
        );
        assert!(slots_holding(&t, &store, b"bob").is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_expired_value_reads_as_absent_to_its_own_key_and_is_rewritten_in_place() {
        let (t, store) = (table(8, 4), MemoryStore::new());
        assert_eq!(count(&t, &store, b"alice", 0), Ok(1));
        assert_eq!(count(&t, &store, b"alice", TTL - 1), Ok(2));
        assert_eq!(
            count(&t, &store, b"alice", TTL * 3),
            Ok(1),
            "expired: starts again"
        );
        assert_eq!(slots_holding(&t, &store, b"alice").len(), 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn keys_sharing_a_home_slot_get_their_own_slots_and_values() {
        let (t, store) = (table(16, 4), MemoryStore::new());
        let keys = keys_at(&t, 3, 3);
        for (i, key) in keys.iter().enumerate() {
            for _ in 0..=i {
                count(&t, &store, key, 10).unwrap();
            }
        }
        let (result, seen) = events(&t, &store, &keys[2], 10);
        assert_eq!(
            result,
            Ok(4),
            "the third key's own count, not a neighbour's"
        );
        assert_eq!(
            seen.iter().filter(|e| **e == SlotEvent::Collision).count(),
            2
        );
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(slots_holding(&t, &store, key), vec![3 + i as u32]);
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_full_probe_window_refuses_a_new_key_and_writes_nothing() {
        let (t, store) = (table(16, 2), MemoryStore::new());
        let keys = keys_at(&t, 5, 3);
        count(&t, &store, &keys[0], 0).unwrap();
        count(&t, &store, &keys[1], 0).unwrap();
        assert_eq!(
            count(&t, &store, &keys[2], 1),
            Err(SlotError::Full { probed: 2 })
        );
        assert!(slots_holding(&t, &store, &keys[2]).is_empty());
        assert_eq!(
            count(&t, &store, &keys[0], 1),
            Ok(2),
            "the holders are untouched"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn another_keys_expired_slot_is_reclaimed_only_after_the_grace() {
        let (t, store) = (table(16, 1), MemoryStore::new());
        let keys = keys_at(&t, 7, 2);
        count(&t, &store, &keys[0], 0).unwrap();
        let in_grace = TTL + RECLAIM_GRACE_MS - 1;
        assert_eq!(
            count(&t, &store, &keys[1], in_grace),
            Err(SlotError::Full { probed: 1 })
        );
        let (result, seen) = events(&t, &store, &keys[1], TTL + RECLAIM_GRACE_MS);
        assert_eq!(result, Ok(1));
        assert!(seen.contains(&SlotEvent::Reclaimed));
        assert_eq!(slots_holding(&t, &store, &keys[1]), vec![7]);
        assert!(slots_holding(&t, &store, &keys[0]).is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn workers_whose_clocks_straddle_the_grace_never_place_a_new_key_twice() {
        // keys[0] holds the home slot and expires at TTL; keys[1] is new, with room after it.
        let (t, store) = (table(16, 4), MemoryStore::new());
        let keys = keys_at(&t, 3, 2);
        count(&t, &store, &keys[0], 0).unwrap();
        // A worker whose clock is still inside the grace places it nowhere...
        let in_grace = TTL + RECLAIM_GRACE_MS - 1;
        assert_eq!(
            count(&t, &store, &keys[1], in_grace),
            Err(SlotError::Settling { slot: 3 })
        );
        assert!(slots_holding(&t, &store, &keys[1]).is_empty());
        // ...one a millisecond later reclaims the home slot, and the first then finds it there.
        assert_eq!(count(&t, &store, &keys[1], TTL + RECLAIM_GRACE_MS), Ok(1));
        assert_eq!(count(&t, &store, &keys[1], in_grace), Ok(2));
        assert_eq!(slots_holding(&t, &store, &keys[1]), vec![3]);
        // Before the holder expires it is an ordinary collision: the key goes past it.
        let (t, store) = (table(16, 4), MemoryStore::new());
        count(&t, &store, &keys[0], 0).unwrap();
        assert_eq!(count(&t, &store, &keys[1], TTL - 1), Ok(1));
        assert_eq!(slots_holding(&t, &store, &keys[1]), vec![4]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_table_reclaiming_at_expiry_gives_an_expired_slot_to_the_next_key_at_once() {
        let (t, store) = (table(16, 4).reclaiming_at_expiry(), MemoryStore::new());
        let keys = keys_at(&t, 3, 3);
        count(&t, &store, &keys[0], 0).unwrap();
        // Still live: an ordinary collision.
        assert_eq!(count(&t, &store, &keys[1], TTL - 1), Ok(1));
        assert_eq!(slots_holding(&t, &store, &keys[1]), vec![4]);
        // Expired: the home slot goes to the next new key, with no grace and no Settling.
        let (result, seen) = events(&t, &store, &keys[2], TTL);
        assert_eq!(result, Ok(1));
        assert!(seen.contains(&SlotEvent::Reclaimed));
        assert_eq!(slots_holding(&t, &store, &keys[2]), vec![3]);
        // A lookup goes past a reclaimable slot to the key's own.
        assert_eq!(count(&t, &store, &keys[1], 2 * TTL - 2), Ok(2));
        assert_eq!(slots_holding(&t, &store, &keys[1]), vec![4]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_corrupt_slot_fails_its_keys_closed_and_is_never_overwritten() {
        let (t, store) = (table(16, 4), MemoryStore::new());
        let key = keys_at(&t, 2, 1).remove(0);
        t.ensure_created(&store, |_| {}).unwrap();
        let name = t.slot_name(2);
        for garbage in [b"not a record".to_vec(), {
            let mut newer = encode_free();
            newer[4] = VERSION + 1;
            newer
        }] {
            store.set(&name, &garbage, None).unwrap();
            let (result, seen) = events(&t, &store, &key, 0);
            assert_eq!(result, Err(SlotError::Corrupt { slot: 2 }));
            assert!(seen.contains(&SlotEvent::CorruptSeen));
            assert_eq!(store.get(&name).unwrap().0.unwrap(), garbage);
            assert!(
                slots_holding(&t, &store, &key).is_empty(),
                "no second copy elsewhere"
            );
        }
        assert_eq!(t.census(&store, 0).unwrap().corrupt, 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_key_past_a_corrupt_slot_is_still_served() {
        let (t, store) = (table(16, 4), MemoryStore::new());
        let keys = keys_at(&t, 9, 2);
        count(&t, &store, &keys[0], 0).unwrap();
        count(&t, &store, &keys[1], 0).unwrap();
        store.set(&t.slot_name(9), b"\0\0garbage", None).unwrap();
        assert_eq!(count(&t, &store, &keys[1], 1), Ok(2));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn oversized_keys_and_values_are_refused_before_any_write() {
        let (t, store) = (table(8, 4), MemoryStore::new());
        assert_eq!(
            count(&t, &store, &[b'k'; 65], 0),
            Err(SlotError::KeyTooLong { len: 65, max: 64 })
        );
        let big = t.update(
            &store,
            b"k",
            0,
            4,
            |_| {},
            |_| SlotStep::Write {
                value: vec![0; 33],
                expires_at_ms: TTL,
                result: (),
            },
        );
        assert_eq!(big, Err(SlotError::ValueTooLong { len: 33, max: 32 }));
        assert!(slots_holding(&t, &store, b"k").is_empty());
    }

    type OtherVm = RefCell<Box<dyn FnMut(&MemoryStore)>>;

    /// A store where another VM acts right after a read of a chosen slot, `races` times.
    struct RacingStore {
        inner: MemoryStore,
        slot: String,
        races: Cell<u32>,
        other_vm: OtherVm,
    }

    impl RacingStore {
        fn new(slot: String, races: u32, other_vm: impl FnMut(&MemoryStore) + 'static) -> Self {
            RacingStore {
                inner: MemoryStore::new(),
                slot,
                races: Cell::new(races),
                other_vm: RefCell::new(Box::new(other_vm)),
            }
        }
    }

    impl SharedStore for RacingStore {
        fn get(&self, key: &str) -> Result<Versioned, StoreError> {
            let read = self.inner.get(key);
            if key == self.slot && self.races.get() > 0 {
                self.races.set(self.races.get() - 1);
                (self.other_vm.borrow_mut())(&self.inner);
            }
            read
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.inner.set(key, value, cas)
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn two_vms_creating_one_key_leave_one_slot_and_both_counts() {
        let t = table(16, 4);
        let home = t.slot_name(t.home_slot(b"alice"));
        let other = t.clone();
        let store = RacingStore::new(home, 1, move |inner| {
            assert_eq!(count(&other, inner, b"alice", 0), Ok(1));
        });
        t.ensure_created(&store.inner, |_| {}).unwrap();
        let (result, seen) = events(&t, &store, b"alice", 0);
        assert_eq!(
            result,
            Ok(2),
            "lost the claim, retried, counted on top of the winner"
        );
        assert!(seen.contains(&SlotEvent::Retried));
        assert_eq!(slots_holding(&t, &store, b"alice").len(), 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_creation_race_never_wipes_a_slot_another_vm_just_claimed() {
        let t = table(4, 4);
        // Our creation pass reads slot 0 absent; before it writes, another VM creates the
        // table and claims slot 0.
        let other = t.clone();
        let store = RacingStore::new(t.slot_name(0), 1, move |inner| {
            other.ensure_created(inner, |_| {}).unwrap();
            let key = keys_at(&other, 0, 1).remove(0);
            assert_eq!(count(&other, inner, &key, 0), Ok(1));
        });
        assert_eq!(
            t.ensure_created(&store, |_| {}),
            Ok(0),
            "the other VM created every slot"
        );
        let key = keys_at(&t, 0, 1).remove(0);
        assert_eq!(
            count(&t, &store.inner, &key, 0),
            Ok(2),
            "the claim survived"
        );
        assert_eq!(t.ensure_created(&store.inner, |_| {}), Ok(0), "idempotent");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn slots_are_created_on_first_sight_without_ensure_created() {
        let (t, store) = (table(8, 4), MemoryStore::new());
        let (result, seen) = events(&t, &store, b"alice", 0);
        assert_eq!(result, Ok(1));
        assert!(seen.contains(&SlotEvent::Created));
        assert_eq!(t.ensure_created(&store, |_| {}).unwrap(), 7);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn contention_gives_up_after_max_attempts_with_the_winners_state_intact() {
        let t = table(8, 4);
        let home = t.slot_name(t.home_slot(b"alice"));
        let other = t.clone();
        let store = RacingStore::new(home, 10, move |inner| {
            count(&other, inner, b"alice", 0).unwrap();
        });
        t.ensure_created(&store.inner, |_| {}).unwrap();
        assert_eq!(
            count(&t, &store, b"alice", 0),
            Err(SlotError::Contended { attempts: 4 })
        );
        assert_eq!(
            count(&t, &store.inner, b"alice", 0),
            Ok(5),
            "four winners, then us"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn records_round_trip_and_anything_off_is_rejected() {
        let held = encode_held(b"key", 42, b"value");
        assert_eq!(held.len(), HEADER_LEN + 3 + 5);
        assert_eq!(
            parse(&held),
            Some(Record::Held {
                key: b"key",
                expires_at_ms: 42,
                value: b"value"
            })
        );
        assert_eq!(parse(&encode_free()), Some(Record::Free));
        assert_eq!(parse(&held[..held.len() - 1]), None, "truncated");
        assert_eq!(
            parse(&[held.as_slice(), b"x"].concat()),
            None,
            "trailing bytes"
        );
        let mut free_with_deadline = encode_free();
        free_with_deadline[13] = 1;
        assert_eq!(parse(&free_with_deadline), None);
        let mut unknown_state = encode_free();
        unknown_state[5] = 7;
        assert_eq!(parse(&unknown_state), None);
        assert_eq!(parse(&[]), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_memory_bound_is_slots_times_name_header_key_and_value() {
        let t = SlotTable::new("rate-limit/payments", 1000, 8, 64, 32).unwrap();
        // "rate-limit/payments/slot/999" is 28 bytes.
        assert_eq!(t.memory_bound_bytes(), 1000 * (28 + 20 + 64 + 32));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn nonsense_sizes_are_refused() {
        assert!(SlotTable::new("", 8, 4, 64, 32).is_err());
        assert!(SlotTable::new("a b", 8, 4, 64, 32).is_err());
        assert!(SlotTable::new("ns", 0, 1, 64, 32).is_err());
        assert!(SlotTable::new("ns", 8, 0, 64, 32).is_err());
        assert!(SlotTable::new("ns", 8, 9, 64, 32).is_err());
        assert!(SlotTable::new("ns", 64, 17, 64, 32).is_err());
        assert!(SlotTable::new("ns", 1, 1, 0, 0).is_ok());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn home_slots_spread_keys_over_the_table() {
        let t = table(64, 4);
        let mut used = [false; 64];
        for i in 0..512 {
            used[t.home_slot(format!("k{i}").as_bytes()) as usize] = true;
        }
        assert!(used.iter().filter(|u| **u).count() > 56);
    }
}
