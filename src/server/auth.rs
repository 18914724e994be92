//! Bearer-token authentication and role-based authorization of the admin
//! API. Authentication happens once for everything under `/api/`; each
//! handler then states what it needs with `Caller::require`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::app::AppState;
use crate::settings::{ApiTokens, Role};

/// Parts of the API, for authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Events,
    Deals,
    Deliveries,
    Statements,
    Payments,
    Mappings,
    Docs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The authenticated caller of an API request.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub role: Role,
}

impl Caller {
    /// Refuses with 403 unless the caller's role allows `access` to `area`.
    pub fn require(&self, area: Area, access: Access) -> Result<(), ApiError> {
        let allowed = match self.role {
            Role::Admin => true,
            Role::Viewer => access == Access::Read,
            Role::Accountant => matches!(area, Area::Statements | Area::Payments | Area::Docs),
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("the {:?} role may not do this", self.role)))
        }
    }
}

/// Resolves the `Authorization: Bearer …` header to a caller.
pub fn authenticate(tokens: &ApiTokens, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| unauthorized("missing bearer token"))?;
    let value = value.to_str().map_err(|_| unauthorized("malformed Authorization header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| unauthorized("Authorization must be `Bearer <token>`"))?;
    let role = tokens.role_of(token.trim()).ok_or_else(|| unauthorized("unknown token"))?;
    Ok(Caller { role })
}

/// Middleware in front of the router: no valid token, no entry to anything
/// under `/api/` (unknown paths included, so the API's shape is not probed
/// anonymously).
pub async fn guard_api(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !(path == "/api" || path.starts_with("/api/")) {
        return next.run(request).await;
    }
    match authenticate(&state.tokens, request.headers()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_issue_says() {
        let viewer = Caller { role: Role::Viewer };
        let accountant = Caller { role: Role::Accountant };
        let admin = Caller { role: Role::Admin };
        assert!(viewer.require(Area::Events, Access::Read).is_ok());
        assert!(viewer.require(Area::Payments, Access::Write).is_err());
        assert!(accountant.require(Area::Statements, Access::Write).is_ok());
        assert!(accountant.require(Area::Payments, Access::Read).is_ok());
        assert!(accountant.require(Area::Deals, Access::Read).is_err());
        assert!(admin.require(Area::Mappings, Access::Write).is_ok());
    }
}
