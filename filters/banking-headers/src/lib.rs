//! Banking-header enforcement filter.
