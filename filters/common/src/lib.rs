//! What every banking filter shares: config loading, problem+json, header access, clock, ids, shared-data CAS, metrics.
