//! Store errors, classified so callers can tell "try later" from "wrong".

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the work for a transient
    /// reason (connection lost, pool exhausted, disk full, locked).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was violated, e.g. an external ref already belongs
    /// to another record.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored row cannot be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("database error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => {
                StoreError::Unavailable(e.to_string())
            }
            E::Database(db) if db.is_unique_violation() => StoreError::Conflict(db.message().to_owned()),
            E::Database(db) if is_transient(db.code().as_deref()) => StoreError::Unavailable(e.to_string()),
            E::ColumnDecode { .. } | E::Decode(_) | E::ColumnNotFound(_) => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// SQLSTATE classes and SQLite codes that mean "the database is not able to
/// work right now" rather than "your statement is wrong".
fn is_transient(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    // PostgreSQL: 08 connection exception, 53 insufficient resources,
    // 57P operator intervention (shutdown, database dropped), 3D000 no database.
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code == "3D000"
        // SQLite primary codes: BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN
        || matches!(code, "5" | "6" | "7" | "8" | "10" | "13" | "14")
        || code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14))
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migration(e.to_string())
    }
}

pub(crate) fn corrupt(what: impl fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}
