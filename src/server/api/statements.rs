//! `POST /api/v1/statements`: an accountant uploads a bank statement
//! (1CClientBankExchange, camt.053, MT940) as the request body. It is
//! imported in one transaction: new payments stored, incoming ones matched
//! to open invoices and applied through the flows. The answer is the
//! statement's summary and what happened to each payment. The same file
//! again changes nothing and answers the first import's result.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use dealbridge_connector_bank::import::{ImportError, ImportReport, ImportSource, StatementImporter};
use serde::Deserialize;

use crate::app::AppState;
use crate::server::{Access, ApiError, Area, Caller};

/// The importer for this hub's store, engine and `[bank]` settings.
pub fn importer(state: &AppState) -> StatementImporter {
    StatementImporter {
        store: state.store.clone(),
        runner: state.runner.clone(),
        rules: state.settings.bank.rules(),
        open_invoices: state.open_invoices.clone(),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct UploadQuery {
    /// The file's name, kept with the statement (e.g. `kl_to_1c.txt`).
    pub file_name: Option<String>,
}

/// Imports a bank statement.
#[utoipa::path(
    post,
    path = "/v1/statements",
    tag = "payments",
    security(("bearer" = [])),
    params(UploadQuery),
    request_body(content = String, description = "The statement file's bytes, as the bank gave it", content_type = "application/octet-stream"),
    responses(
        (status = 201, body = ImportReport, description = "Imported"),
        (status = 200, body = ImportReport, description = "This file was imported before; nothing changed"),
        (status = 401, description = "No valid token"),
        (status = 403, description = "Not an accountant or admin"),
        (status = 413, description = "Larger than bank.max_upload_bytes"),
        (status = 422, description = "Not a statement the hub reads; the message names the line or XML path and the field. Nothing imported"),
    )
)]
pub async fn upload_statement(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Result<(StatusCode, Json<ImportReport>), ApiError> {
    caller.require(Area::Statements, Access::Write)?;
    let limit = state.settings.bank.max_upload_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a statement may be at most {limit} bytes (bank.max_upload_bytes)"),
        )
    })?;
    let set = state.mappings.current();
    let report = importer(&state)
        .import(&set, &bytes, query.file_name.as_deref(), ImportSource::Upload)
        .await
        .map_err(import_error)?;
    tracing::info!(
        statement = %report.statement_id,
        new = report.payments.new,
        matched = report.payments.matched,
        review = report.payments.review,
        already = report.already_imported,
        "Statement uploaded."
    );
    let status = if report.already_imported { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(report)))
}

fn import_error(e: ImportError) -> ApiError {
    match e {
        ImportError::Rejected(e) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", format!("rejected, nothing imported: {e}"))
        }
        ImportError::Store(e) => ApiError::from(e),
        ImportError::Busy(_) => ApiError::unavailable(e.to_string()),
    }
}

/// The watched statement folder of `[bank] watch_dir`, if one is configured.
pub fn watched_folder(state: &AppState) -> Option<dealbridge_connector_bank::watch::WatchedFolder> {
    let dir = state.settings.bank.watch_dir.clone()?;
    let mappings = state.mappings.clone();
    Some(dealbridge_connector_bank::watch::WatchedFolder {
        dir,
        importer: importer(state),
        mappings: std::sync::Arc::new(move || mappings.current()),
        poll: std::time::Duration::from_millis(state.settings.bank.watch_poll_ms.max(50)),
    })
}
