//! Accounts: credentials, users, tokens, API keys and the admin patch.

use qlearn_core::store::{ApiKey, KeyScope, User};
use qlearn_core::tenancy::{
    rfc3339, Role, Tier, MAX_EMAIL_CHARS, MAX_PASSWORD_CHARS, MIN_EMAIL_CHARS, MIN_PASSWORD_CHARS,
};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// The schema of a password: [`MIN_PASSWORD_CHARS`] to
/// [`MAX_PASSWORD_CHARS`] characters (what registration and a password
/// change accept; a login with another length is simply wrong).
fn password_schema() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(MIN_PASSWORD_CHARS))
        .max_length(Some(MAX_PASSWORD_CHARS))
        .description(Some(format!(
            "{MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )))
}

/// The schema of an email: 3 to 254 characters, one `@` after a non-empty
/// name, a dotted domain without empty labels, no whitespace or control
/// characters (surrounding whitespace is trimmed; what registration
/// accepts, see `tenancy::normalize_email`).
fn email_schema() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(MIN_EMAIL_CHARS))
        .max_length(Some(MAX_EMAIL_CHARS))
        .pattern(Some(
            r"^\s*[^@\s\u0000-\u001f\u007f-\u009f]+@[^@.\s\u0000-\u001f\u007f-\u009f]+(\.[^@.\s\u0000-\u001f\u007f-\u009f]+)+\s*$",
        ))
        .description(Some(format!(
            "An email address, {MIN_EMAIL_CHARS} to {MAX_EMAIL_CHARS} characters (case-insensitive)"
        )))
}

fn scope_schema() -> impl Into<RefOr<Schema>> {
    let names: Vec<&str> = KeyScope::ALL.iter().map(|k| k.as_str()).collect();
    super::nullable(super::enum_schema(
        &names,
        "What the key may do; default full",
    ))
}

fn key_days_schema() -> impl Into<RefOr<Schema>> {
    super::nullable(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1.0))
            .maximum(Some(f64::from(MAX_KEY_DAYS)))
            .description(Some(format!(
                "Days until the key expires, 1 to {MAX_KEY_DAYS}"
            ))),
    )
}

fn key_at_schema() -> impl Into<RefOr<Schema>> {
    super::nullable(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(
                r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$",
            ))
            .description(Some(format!(
                "RFC 3339 UTC time like 2027-01-31T00:00:00Z, in the future and at most \
                 {MAX_KEY_DAYS} days away"
            ))),
    )
}

fn tier_schema() -> impl Into<RefOr<Schema>> {
    let names: Vec<&str> = Tier::ALL.iter().map(|t| t.as_str()).collect();
    super::nullable(super::enum_schema(&names, "New tier"))
}

fn role_schema() -> impl Into<RefOr<Schema>> {
    let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
    super::nullable(super::enum_schema(&names, "New role"))
}

/// `POST /register` and `POST /login` body.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// Email address (case-insensitive).
    #[schema(schema_with = email_schema)]
    pub email: String,
    /// [`MIN_PASSWORD_CHARS`] to [`MAX_PASSWORD_CHARS`] characters.
    #[schema(schema_with = password_schema)]
    pub password: String,
}

/// A user as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct UserOut {
    /// Opaque id.
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// `free`, `pro` or `enterprise`.
    #[schema(value_type = String, example = "free")]
    pub tier: Tier,
    /// `user` or `admin`.
    #[schema(value_type = String, example = "user")]
    pub role: Role,
    /// Registration time (RFC 3339).
    pub created_at: String,
}

impl From<&User> for UserOut {
    fn from(u: &User) -> Self {
        UserOut {
            id: u.id.clone(),
            email: u.email.clone(),
            tier: u.tier,
            role: u.role,
            created_at: rfc3339(u.created_at),
        }
    }
}

/// A bearer token.
#[derive(Serialize, ToSchema)]
pub struct TokenOut {
    /// The JWT.
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// `POST /register` response.
#[derive(Serialize, ToSchema)]
pub struct Registered {
    /// The JWT.
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The new user.
    pub user: UserOut,
    /// The model created with the account.
    pub default_model_id: String,
}

/// `POST /me/password` body.
#[derive(Deserialize, ToSchema)]
pub struct PasswordChange {
    /// The password in force.
    pub current_password: String,
    /// The new password, [`MIN_PASSWORD_CHARS`] to [`MAX_PASSWORD_CHARS`]
    /// characters.
    #[schema(schema_with = password_schema)]
    pub new_password: String,
}

/// `POST /api-keys` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A label, 1 to [`MAX_NAME_CHARS`](super::MAX_NAME_CHARS) characters.
    #[schema(schema_with = super::name_schema)]
    pub name: String,
    /// What the key may do: `read` (GET routes, event tickets), `engine`
    /// (read + predict, update, batch, import, export), `full` (everything
    /// but admin; the default) or `admin` (admins only, and never wider
    /// than the credential creating it).
    #[schema(schema_with = scope_schema)]
    pub scope: Option<KeyScope>,
    /// Days until the key expires (1 to [`MAX_KEY_DAYS`]); or `expires_at`.
    #[schema(schema_with = key_days_schema)]
    pub expires_in_days: Option<u32>,
    /// When the key expires, RFC 3339 UTC (`2027-01-31T00:00:00Z`), in the
    /// future and at most [`MAX_KEY_DAYS`] days away; or `expires_in_days`.
    #[schema(schema_with = key_at_schema)]
    pub expires_at: Option<String>,
}

/// The longest lifetime a key's expiry may ask for, days (10 years).
pub const MAX_KEY_DAYS: u32 = 3650;

/// A created API key: the only time `key` is shown.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    /// Key id (for `DELETE /api-keys/{id}`).
    pub id: String,
    /// The label.
    pub name: String,
    /// The key; use it as a bearer token. Shown only here.
    pub key: String,
    /// Its first characters, to recognise it in lists.
    pub prefix: String,
    /// Creation time.
    pub created_at: String,
    /// What it may do: `read`, `engine`, `full` or `admin`.
    #[schema(value_type = String, example = "engine")]
    pub scope: KeyScope,
    /// When it expires (RFC 3339), or `null`: never by itself.
    pub expires_at: Option<String>,
}

/// An API key in a list (never the key itself).
#[derive(Serialize, ToSchema)]
pub struct KeyOut {
    /// Key id.
    pub id: String,
    /// The label.
    pub name: String,
    /// Its first characters.
    pub prefix: String,
    /// Creation time.
    pub created_at: String,
    /// Last use (updated at most once a minute), if ever used.
    pub last_used_at: Option<String>,
    /// What it may do: `read`, `engine`, `full` or `admin`.
    #[schema(value_type = String, example = "engine")]
    pub scope: KeyScope,
    /// When it expires (RFC 3339), or `null`: never by itself.
    pub expires_at: Option<String>,
    /// `false` once expired (it authenticates nothing; delete it). A
    /// password change deletes every key made before it.
    pub active: bool,
}

impl KeyOut {
    /// The list entry of `k`, owned by `user`, as of `now`.
    pub fn of(k: &ApiKey, user: &User, now: i64) -> Self {
        KeyOut {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            created_at: rfc3339(k.created_at),
            last_used_at: k.last_used_at.map(rfc3339),
            scope: k.scope,
            expires_at: k.expires_at.map(rfc3339),
            active: k.usable(user, now),
        }
    }
}

/// `PATCH /admin/users/{id}` body (admin role only).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUserPatch {
    /// New tier.
    #[schema(schema_with = tier_schema)]
    pub tier: Option<Tier>,
    /// New role.
    #[schema(schema_with = role_schema)]
    pub role: Option<Role>,
}
