//! `POST /api/v1/tasks/{id}/decision`: a person decides an approval the
//! hub asked for (S6: a large proposal, S4: giving a deal up). The
//! decision goes through the engine like any event: the hold is lifted or
//! kept, the decision's flows run, and the trail records who decided.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use dealbridge_core::flow::Cause;
use dealbridge_core::model::{CanonicalEvent, Task, TaskKind};
use dealbridge_core::runner::RunError;
use serde::Deserialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::server::{Access, ApiError, Area, Caller};

/// The decision.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct Decision {
    pub approved: bool,
    /// Canonical id of the person deciding.
    pub by: String,
}

/// Decides an open approval task.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/decision",
    tag = "deals",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Approval task id")),
    request_body = Decision,
    responses(
        (status = 200, body = Task, description = "The task as decided"),
        (status = 401, description = "No valid token"),
        (status = 404, description = "No such task"),
        (status = 409, description = "Not an open approval"),
    )
)]
pub async fn decide(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<Uuid>,
    Json(decision): Json<Decision>,
) -> Result<Json<Task>, ApiError> {
    caller.require(Area::Deals, Access::Write)?;
    let task = state.store.get_task(id).await?.ok_or_else(|| ApiError::not_found(format!("no task {id}")))?;
    let (Some(deal_id), TaskKind::Approval, dealbridge_core::model::TaskStatus::Open) =
        (task.deal_id, task.kind, task.status)
    else {
        return Err(ApiError::new(
            http::StatusCode::CONFLICT,
            "not_open_approval",
            format!("task {id} is not an open approval"),
        ));
    };
    let event = CanonicalEvent::ApprovalDecided { deal_id, task_id: id, approved: decision.approved, by: decision.by };
    let set = state.mappings.current();
    let cause = Cause::new(Uuid::now_v7(), chrono::Utc::now());
    state.runner.apply(&set, &[(event, cause)], None).await.map_err(|e| match e {
        RunError::Store(e) => ApiError::from(e),
        RunError::Rejected(reason) => ApiError::new(http::StatusCode::CONFLICT, "rejected", reason),
    })?;
    let task = state.store.get_task(id).await?.ok_or_else(|| ApiError::not_found(format!("no task {id}")))?;
    Ok(Json(task))
}
