//! `POST /api/v1/statements`: an accountant uploads a bank statement
//! (1CClientBankExchange, camt.053, MT940) as the request body. It is
//! imported in one transaction: new payments stored, incoming ones matched
//! to open invoices and applied through the flows. The answer is the
//! statement's summary and what happened to each payment. The same file
//! again changes nothing and answers the first import's result.
//!
//! `GET /api/v1/statements/{id}/file` gives a stored statement's file back,
//! byte for byte as it was imported (the store keeps it compressed).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use dealbridge_connector_bank::import::{ImportError, ImportReport, ImportSource, StatementImporter};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use uuid::Uuid;

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

/// A stored statement's file, byte for byte as it was imported.
#[utoipa::path(
    get,
    path = "/v1/statements/{id}/file",
    tag = "payments",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The statement's id (`statement_id` of its import report)")),
    responses(
        (status = 200, description = "The file as the bank gave it; named by Content-Disposition when it had a name",
            content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, description = "No valid token"),
        (status = 403, description = "Not an accountant, viewer or admin"),
        (status = 404, description = "No such statement"),
    )
)]
pub async fn get_statement_file(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    caller.require(Area::Statements, Access::Read)?;
    let missing = || ApiError::not_found(format!("no statement {id}"));
    let statement = state.store.get_statement(id).await?.ok_or_else(missing)?;
    let stored = state.store.statement_file(id).await?.ok_or_else(missing)?;
    // Decompressing tens of megabytes is CPU work: off the async threads.
    let original = tokio::task::spawn_blocking(move || stored.original())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    let mut response = (StatusCode::OK, original).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if let Some(disposition) = statement.file_name.as_deref().and_then(attachment) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

/// What RFC 8187 percent-encodes in an extended header value: every byte
/// but letters, digits and its `attr-char` punctuation.
const NOT_ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment; filename*=UTF-8''…` (RFC 6266 / 8187): the name as it was
/// uploaded, Cyrillic included, percent-encoded; only its last path part.
fn attachment(file_name: &str) -> Option<HeaderValue> {
    let name = file_name.rsplit(['/', '\\']).next().filter(|n| !n.is_empty())?;
    let encoded = utf8_percent_encode(name, NOT_ATTR_CHAR);
    HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{encoded}")).ok()
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

#[cfg(test)]
mod tests {
    use super::attachment;

    #[test]
    fn a_file_name_is_given_back_percent_encoded_without_its_folders() {
        let header = |name: &str| attachment(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(header("kl_to_1c.txt").as_deref(), Some("attachment; filename*=UTF-8''kl_to_1c.txt"));
        assert_eq!(
            header("C:\\Банк\\выписка 05.02.txt").as_deref(),
            Some("attachment; filename*=UTF-8''%D0%B2%D1%8B%D0%BF%D0%B8%D1%81%D0%BA%D0%B0%2005.02.txt")
        );
        assert_eq!(header("in/\"quoted\";.xml").as_deref(), Some("attachment; filename*=UTF-8''%22quoted%22%3B.xml"));
        assert_eq!(header("folder/"), None, "no name, no header");
    }
}
