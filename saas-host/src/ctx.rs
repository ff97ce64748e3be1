//! What a handler of an authenticated route receives ([`Ctx`]: the server,
//! the caller, the caller's address) and what it hands back to the router
//! for the `RateLimit` headers ([`MonthlyState`]). Its own module so the
//! router and the handlers both depend on it, not on each other.

use std::net::IpAddr;
use std::sync::Arc;

use qlearn_core::store::{KeyScope, User};
use qlearn_core::tenancy::TierLimits;

use crate::app::App;
use crate::http::RequestDeadline;

/// An authenticated request's context.
pub struct Ctx {
    /// The server state.
    pub app: Arc<App>,
    /// The caller.
    pub user: Arc<User>,
    /// What the caller's credential allows (already checked against the
    /// route by the router; handlers that create keys compare with it).
    pub scope: KeyScope,
    /// The caller's bearer credential (for re-checks by long-lived
    /// responses). Never logged.
    pub credential: Arc<str>,
    /// The caller's network address (the peer, or the client behind a
    /// trusted proxy).
    pub client: IpAddr,
    /// When the request must have arrived in full (for reading its body).
    pub deadline: RequestDeadline,
}

impl Ctx {
    /// The caller's tier limits.
    pub fn limits(&self) -> &TierLimits {
        self.app.limits(&self.user)
    }
}

/// The monthly quota's state after a metered call, for the `RateLimit`
/// headers; handlers put it in the response's extensions.
#[derive(Clone, Copy, Debug)]
pub struct MonthlyState {
    /// The monthly limit.
    pub limit: u64,
    /// Calls left.
    pub remaining: u64,
    /// Seconds until the reset.
    pub reset_secs: u64,
    /// Seconds in the month (the policy's window).
    pub window_secs: u64,
}

/// Seconds in the current month.
pub fn month_secs() -> u64 {
    let m = qlearn_core::tenancy::BillingMonth::from_unix(crate::now_unix());
    u64::from(m.days()) * 86_400
}
