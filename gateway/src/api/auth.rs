//! Bearer-token authentication with roles for every `/api/v1` route, and the policy of which
//! role each route needs (`authorize`, applied by the router).
//!
//! Tokens come from `[[security.tokens]]` (stored as SHA-256 hashes, or given raw) and from the
//! environment variable `SENTINEL_API_TOKENS` (`name:role:token` separated by `;`), so a
//! deployment can keep every token out of the file. A presented token is hashed and compared
//! with every known hash in constant time; 401 when it is missing or unknown, 403 when its role
//! is not enough.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

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
                let (Some(name), Some(role), Some(token)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    tracing::error!(
                        variable = TOKENS_ENV,
                        "An API token in the environment is not name:role:token; ignored."
                    );
                    continue;
                };
                let role = match role {
                    "viewer" => Role::Viewer,
                    "operator" => Role::Operator,
                    "admin" => Role::Admin,
                    _ => {
                        tracing::error!(
                            variable = TOKENS_ENV,
                            name,
                            "An API token in the environment has an unknown role; ignored."
                        );
                        continue;
                    }
                };
                entries.push((name.to_owned(), role, sha256_hex(token)));
            }
        }
        Tokens { entries }
    }

    /// No token is configured (the demo, a quick start).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Who a token belongs to. Every entry is compared, so the time taken does not depend on
    /// which one (if any) matched.
    pub fn identify(&self, token: &str) -> Option<Caller> {
        let presented = sha256_hex(token);
        let mut found = None;
        for (name, role, hash) in &self.entries {
            if ct_eq(presented.as_bytes(), hash.as_bytes()) && found.is_none() {
                found = Some(Caller {
                    name: name.clone(),
                    role: *role,
                });
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
                format!(
                    "token {:?} has role {}; this needs {}",
                    self.name,
                    self.role.as_str(),
                    min.as_str()
                ),
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
        // The router's policy layer (`authorize`) has already identified the caller.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let tokens = Arc::<Tokens>::from_ref(state);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError(
                    StatusCode::UNAUTHORIZED,
                    "missing Authorization: Bearer token".into(),
                )
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError(
                    StatusCode::UNAUTHORIZED,
                    "expected Authorization: Bearer <token>".into(),
                )
            })?;
        tokens
            .identify(token)
            .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown token".into()))
    }
}

/// The role a request needs: reading is for viewers; alarm actions and tickets for operators;
/// taking things out of service, suppressing by design and reloading for admins.
pub fn required_role(method: &Method, path: &str) -> Role {
    if method == Method::GET || method == Method::HEAD {
        return Role::Viewer;
    }
    const ADMIN: [&str; 5] = [
        "/out-of-service",
        "/return-to-service",
        "/suppress",
        "/unsuppress",
        "/reload",
    ];
    if ADMIN.iter().any(|suffix| path.ends_with(suffix)) {
        Role::Admin
    } else {
        Role::Operator
    }
}

/// Failed token checks per client address: after a few, each further failure is answered
/// more slowly, so guessing tokens over the network is impractical.
#[derive(Default)]
pub struct FailureThrottle {
    recent: tokio::sync::Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Failures forgiven before answers slow down, the step per further failure, the cap, and how
/// long a quiet client takes to be forgiven.
const FREE_FAILURES: u32 = 3;
const DELAY_STEP: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(3);
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Bound on the table, so that many addresses cannot grow it without limit.
const MAX_TRACKED: usize = 10_000;

impl FailureThrottle {
    /// Record a failure from `ip` and return how long to wait before answering.
    pub async fn failed(&self, ip: IpAddr) -> Duration {
        let now = Instant::now();
        let mut recent = self.recent.lock().await;
        if recent.len() >= MAX_TRACKED {
            recent.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
            if recent.len() >= MAX_TRACKED {
                recent.clear();
            }
        }
        let entry = recent.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let over = entry.0.saturating_sub(FREE_FAILURES);
        DELAY_STEP.saturating_mul(over).min(MAX_DELAY)
    }
}

/// What the policy layer needs.
#[derive(Clone)]
pub struct AuthState {
    pub tokens: Arc<Tokens>,
    pub throttle: Arc<FailureThrottle>,
    /// With no tokens configured, the API is open only when the server listens on loopback.
    pub loopback: bool,
}

/// The policy layer in front of `/api/v1`: identifies the caller from the bearer token, checks
/// the role the route needs (401 without a valid token, 403 when the role is too low) and hands
/// the caller to the handler. With no tokens configured the API is open on loopback (the caller
/// is `local`, admin) and closed elsewhere.
pub async fn authorize(State(auth): State<AuthState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !path.starts_with("/api/") {
        return next.run(req).await;
    }
    let needed = required_role(req.method(), path);
    let caller = if auth.tokens.is_empty() {
        if !auth.loopback {
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "no API tokens are configured and the server does not listen on loopback: configure [[security.tokens]]".into(),
            )
            .into_response();
        }
        Caller {
            name: "local".into(),
            role: Role::Admin,
        }
    } else {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(header) = header else {
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "missing Authorization: Bearer token".into(),
            )
            .into_response();
        };
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty());
        match token.and_then(|t| auth.tokens.identify(t)) {
            Some(caller) => caller,
            None => {
                let ip = req
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
                let delay = auth.throttle.failed(ip).await;
                tracing::warn!(%ip, delay_ms = delay.as_millis() as u64, "An API request with an unknown token was refused.");
                tokio::time::sleep(delay).await;
                let msg = if token.is_some() {
                    "unknown token"
                } else {
                    "expected Authorization: Bearer <token>"
                };
                return ApiError(StatusCode::UNAUTHORIZED, msg.into()).into_response();
            }
        }
    };
    if let Err(e) = caller.require(needed) {
        return e.into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_by_hash_and_refuses_others() {
        let tokens = Tokens {
            entries: vec![
                (
                    "ops".into(),
                    Role::Operator,
                    sha256_hex("operator-token-123"),
                ),
                ("wall".into(), Role::Viewer, sha256_hex("viewer-token-4567")),
            ],
        };
        let c = tokens
            .identify("operator-token-123")
            .unwrap_or_else(|| panic!("known"));
        assert_eq!(c.name, "ops");
        assert!(c.require(Role::Operator).is_ok());
        assert!(c.require(Role::Admin).is_err());
        let v = tokens
            .identify("viewer-token-4567")
            .unwrap_or_else(|| panic!("known"));
        assert!(v.require(Role::Operator).is_err());
        assert!(tokens.identify("guess").is_none());
    }

    #[test]
    fn roles_by_route() {
        assert_eq!(required_role(&Method::GET, "/api/v1/points"), Role::Viewer);
        assert_eq!(
            required_role(&Method::POST, "/api/v1/alarms/3/ack"),
            Role::Operator
        );
        assert_eq!(
            required_role(&Method::POST, "/api/v1/alarms/3/shelve"),
            Role::Operator
        );
        assert_eq!(
            required_role(&Method::POST, "/api/v1/tickets"),
            Role::Operator
        );
        assert_eq!(
            required_role(&Method::POST, "/api/v1/points/NH3-101/out-of-service"),
            Role::Admin
        );
        assert_eq!(
            required_role(&Method::POST, "/api/v1/points/NH3-101/suppress"),
            Role::Admin
        );
        assert_eq!(required_role(&Method::POST, "/api/v1/reload"), Role::Admin);
    }

    #[tokio::test]
    async fn failures_slow_down_after_a_few() {
        let t = FailureThrottle::default();
        let ip = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.failed(ip).await, Duration::ZERO);
        }
        assert_eq!(t.failed(ip).await, DELAY_STEP);
        assert_eq!(t.failed(ip).await, DELAY_STEP * 2);
        for _ in 0..100 {
            t.failed(ip).await;
        }
        assert_eq!(t.failed(ip).await, MAX_DELAY);
        assert_eq!(t.failed(IpAddr::from([10, 0, 0, 2])).await, Duration::ZERO);
    }
}
