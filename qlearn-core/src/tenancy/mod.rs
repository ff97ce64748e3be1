//! Tenants, tiers, quotas (being written).
