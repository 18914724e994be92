//! `GET /api/v1/mappings`: which mapping set is in force; `POST
//! /api/v1/mappings/reload`: reload it now (for file systems whose changes
//! the watcher cannot see). An invalid set is reported with every problem
//! and the last good one keeps running.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;

use crate::app::AppState;
use crate::reload::ReloadOutcome;
use crate::server::{Access, ApiError, Area, Caller};

/// The mapping set in force.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MappingsView {
    /// Content hash of the files; every processed event records it.
    pub version: String,
    pub files: Vec<String>,
    pub flows: usize,
}

/// What a reload did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReloadView {
    /// `swapped` or `rejected`.
    pub outcome: String,
    /// Every problem as `file:line:column: message` (when rejected).
    pub problems: Vec<String>,
    /// The version in force afterwards.
    pub version: String,
}

fn view(state: &AppState) -> MappingsView {
    let set = state.mappings.current();
    MappingsView { version: set.version().to_owned(), files: set.files().to_vec(), flows: set.plan().flows.len() }
}

/// The mapping set in force.
#[utoipa::path(
    get,
    path = "/v1/mappings",
    tag = "mappings",
    security(("bearer" = [])),
    responses((status = 200, body = MappingsView), (status = 401, description = "No valid token"))
)]
pub async fn get_mappings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<MappingsView>, ApiError> {
    caller.require(Area::Mappings, Access::Read)?;
    Ok(Json(view(&state)))
}

/// Reloads the mapping files now; swaps only a valid set.
#[utoipa::path(
    post,
    path = "/v1/mappings/reload",
    tag = "mappings",
    security(("bearer" = [])),
    responses(
        (status = 200, body = ReloadView),
        (status = 401, description = "No valid token"),
        (status = 403, description = "Not an admin"),
    )
)]
pub async fn reload_mappings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ReloadView>, ApiError> {
    caller.require(Area::Mappings, Access::Write)?;
    let (outcome, problems) = match state.mappings.reload_now().await {
        ReloadOutcome::Swapped => ("swapped", Vec::new()),
        ReloadOutcome::Rejected(problems) => ("rejected", problems),
    };
    Ok(Json(ReloadView { outcome: outcome.into(), problems, version: view(&state).version }))
}
