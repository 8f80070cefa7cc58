//! Bearer-token authentication with roles, for the endpoints that change things.
//!
//! Tokens come from `[[security.tokens]]` (stored as SHA-256 hashes, or given raw) and from the
//! environment variable `SENTINEL_API_TOKENS` (`name:role:token` separated by `;`), so a
//! deployment can keep every token out of the file. A presented token is hashed and compared
//! with every known hash in constant time; 401 when it is missing or unknown, 403 when its role
//! is not enough.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::ApiError;
use crate::config::{Config, Role};
use crate::notify::signing::{ct_eq, sha256_hex};

/// Environment variable with raw tokens: `name:role:token;name:role:token`.
pub const TOKENS_ENV: &str = "SENTINEL_API_TOKENS";

pub struct Tokens {
    /// (name, role, hex SHA-256 of the token)
    entries: Vec<(String, Role, String)>,
}

impl Tokens {
    pub fn from_config(config: &Config) -> Tokens {
        let mut entries: Vec<(String, Role, String)> = config
            .security
            .tokens
            .iter()
            .filter_map(|t| {
                let hash = match (&t.sha256, &t.token) {
                    (Some(h), _) => h.to_ascii_lowercase(),
                    (None, Some(raw)) => sha256_hex(raw.expose()),
                    (None, None) => return None,
                };
                Some((t.name.clone(), t.role, hash))
            })
            .collect();
        if let Ok(env) = std::env::var(TOKENS_ENV) {
            for item in env.split(';').filter(|s| !s.trim().is_empty()) {
                let mut parts = item.trim().splitn(3, ':');
                let (Some(name), Some(role), Some(token)) = (parts.next(), parts.next(), parts.next()) else {
                    tracing::error!(variable = TOKENS_ENV, "An API token in the environment is not name:role:token; ignored.");
                    continue;
                };
                let role = match role {
                    "viewer" => Role::Viewer,
                    "operator" => Role::Operator,
                    "admin" => Role::Admin,
                    _ => {
                        tracing::error!(variable = TOKENS_ENV, name, "An API token in the environment has an unknown role; ignored.");
                        continue;
                    }
                };
                entries.push((name.to_owned(), role, sha256_hex(token)));
            }
        }
        Tokens { entries }
    }

    /// Who a token belongs to. Every entry is compared, so the time taken does not depend on
    /// which one (if any) matched.
    pub fn identify(&self, token: &str) -> Option<Caller> {
        let presented = sha256_hex(token);
        let mut found = None;
        for (name, role, hash) in &self.entries {
            if ct_eq(presented.as_bytes(), hash.as_bytes()) && found.is_none() {
                found = Some(Caller { name: name.clone(), role: *role });
            }
        }
        found
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// 403 unless the caller's role is at least `min`.
    pub fn require(&self, min: Role) -> Result<&Caller, ApiError> {
        if self.role >= min {
            Ok(self)
        } else {
            Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("token {:?} has role {}; this needs {}", self.name, self.role.as_str(), min.as_str()),
            ))
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Arc<Tokens>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tokens = Arc::<Tokens>::from_ref(state);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "missing Authorization: Bearer token".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "expected Authorization: Bearer <token>".into()))?;
        tokens
            .identify(token)
            .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown token".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_by_hash_and_refuses_others() {
        let tokens = Tokens {
            entries: vec![
                ("ops".into(), Role::Operator, sha256_hex("operator-token-123")),
                ("wall".into(), Role::Viewer, sha256_hex("viewer-token-4567")),
            ],
        };
        let c = tokens.identify("operator-token-123").unwrap_or_else(|| panic!("known"));
        assert_eq!(c.name, "ops");
        assert!(c.require(Role::Operator).is_ok());
        assert!(c.require(Role::Admin).is_err());
        let v = tokens.identify("viewer-token-4567").unwrap_or_else(|| panic!("known"));
        assert!(v.require(Role::Operator).is_err());
        assert!(tokens.identify("guess").is_none());
    }
}
