//! The crate's one error type.
//!
//! Every fallible operation of `qlearn-core` returns [`Error`]. Variants are
//! grouped by what the caller should do: fix the input (`InvalidField`,
//! `InvalidState`, ...), back off (`QuotaExceeded`, `RateLimited`), or report
//! a fault of the environment (`Storage`). The HTTP host maps each variant to
//! one status code and error code in a single function.

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `qlearn-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A field of a request or configuration is out of range or malformed.
    /// `field` is the field's name as the user wrote it (`learning_rate`).
    #[error("invalid {field}: {message}")]
    InvalidField {
        /// The offending field, e.g. `learning_rate` or `experiences[3].reward`.
        field: String,
        /// What is wrong and what is allowed, e.g. `must be in (0, 1], got 1.5`.
        message: String,
    },

    /// A state is not a string, an integer or an array of 1 to 64 finite numbers,
    /// or does not match the model's `state_bins`.
    #[error("invalid state: {message}")]
    InvalidState {
        /// The offending member, e.g. `next_state` or `experiences[3].state`.
        field: String,
        /// What is wrong (it names the member too, for messages read alone).
        message: String,
    },

    /// An action index is outside `0..n_actions`, or an action mask is empty
    /// or out of range.
    #[error("invalid action: {message}")]
    InvalidAction {
        /// The offending member, e.g. `allowed_actions` or
        /// `experiences[3].next_action`.
        field: String,
        /// What is wrong (it names the member too, for messages read alone).
        message: String,
    },

    /// Bytes given to a decoder are not a model in a format this version reads.
    #[error("cannot decode model: {0}")]
    Decode(String),

    /// The resource does not exist or belongs to another tenant. Deliberately
    /// carries no hint of which.
    #[error("{0} not found")]
    NotFound(&'static str),

    /// A unique constraint was violated (e.g. the email is already registered).
    #[error("{0}")]
    Conflict(String),

    /// The user's tier allows no more models.
    #[error("model limit of {limit} reached for this tier")]
    ModelLimitReached {
        /// The tier's model limit.
        limit: u32,
    },

    /// The model would hold more distinct states than the user's tier allows
    /// (an update adding new states, or an import of a bigger model);
    /// nothing was changed.
    #[error("this tier allows {limit} states per model; the model holds {states} and this call would add {new}")]
    StateLimitReached {
        /// The tier's limit of states per model.
        limit: u64,
        /// States the model holds now.
        states: u64,
        /// New states the refused call would have added.
        new: u64,
    },

    /// The caller's plan does not include a feature the call needs (an
    /// advanced algorithm, decision logging); nothing was changed.
    #[error("{}", plan_required_message(feature, *plan))]
    PlanRequired {
        /// The missing feature's name, e.g. `advanced_algorithms`.
        feature: &'static str,
        /// The cheapest plan (tier name) that includes it; `None` when no
        /// plan does.
        plan: Option<&'static str>,
    },

    /// The model is over the caller's plan (after a downgrade: more models
    /// or states than the plan allows, or a feature it lacks): it still
    /// answers predictions and exports, but is not taught until the owner
    /// deletes or changes enough. Data is never deleted.
    #[error("this model is read-only on your plan: {reason}")]
    ModelReadOnly {
        /// Why, in words (names the limit or feature).
        reason: String,
    },

    /// A signed request (the billing provider's webhook) did not verify:
    /// wrong or missing signature, or a timestamp outside the tolerance.
    #[error("invalid signature: {0}")]
    InvalidSignature(&'static str),

    /// The monthly quota of metered calls is used up.
    #[error("monthly quota of {limit} calls reached; it resets in {retry_after_secs} s")]
    QuotaExceeded {
        /// The tier's monthly limit.
        limit: u64,
        /// Seconds until 00:00 UTC on the 1st of next month.
        retry_after_secs: u64,
    },

    /// The plan's limit on evaluation jobs is reached: `limit` names it
    /// (`evaluations_per_day` or `evaluations_at_once`); nothing was
    /// created.
    #[error("this plan allows {max} {}; try again later", limit_words(limit))]
    EvaluationLimit {
        /// The limit's name in the plans file.
        limit: &'static str,
        /// Its value.
        max: u32,
        /// Seconds until it frees up, when known (the next UTC day).
        retry_after_secs: Option<u64>,
    },

    /// Too many requests in a short time (token bucket or login throttle).
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request would be admitted.
        retry_after_secs: u64,
    },

    /// Bad credentials; deliberately the same for unknown users and wrong passwords.
    #[error("invalid credentials")]
    InvalidCredentials,

    /// The storage backend failed (IO, connection, corruption). Not the caller's fault.
    #[error("{backend} storage error: {message}")]
    Storage {
        /// Which backend: `memory`, `sqlite` or `postgres`.
        backend: &'static str,
        /// The backend's own message.
        message: String,
    },

    /// An internal invariant failed (a bug); reported instead of panicking.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The words of an [`Error::EvaluationLimit`]'s limit.
fn limit_words(limit: &str) -> &'static str {
    if limit == "evaluations_per_day" {
        "evaluations per day"
    } else {
        "evaluations queued or running at once"
    }
}

/// The message of [`Error::PlanRequired`].
fn plan_required_message(feature: &str, plan: Option<&str>) -> String {
    match plan {
        Some(plan) => format!("the {feature} feature needs the {plan} plan or higher"),
        None => format!("no plan includes the {feature} feature"),
    }
}

impl Error {
    /// Shorthand for [`Error::InvalidField`].
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::InvalidState`].
    pub fn state(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidState {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::InvalidAction`].
    pub fn action(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidAction {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The member of the input a validation error is about (its JSON path
    /// as the caller named it), if the error is one.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            Error::InvalidField { field, .. }
            | Error::InvalidState { field, .. }
            | Error::InvalidAction { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Shorthand for [`Error::Storage`].
    pub fn storage(backend: &'static str, message: impl std::fmt::Display) -> Self {
        Error::Storage {
            backend,
            message: message.to_string(),
        }
    }
}
