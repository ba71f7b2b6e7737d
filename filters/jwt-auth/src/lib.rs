//! JWT validation filter with banking scopes and customer binding.
