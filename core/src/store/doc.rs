//! Records stored whole as JSON documents beside the columns they are
//! looked up by; shared by both backends.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;
use super::error::corrupt;

pub(crate) fn to_doc<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(format!("{what} document: {e}")))
}

pub(crate) fn from_doc<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("{what} document: {e}")))
}

/// The serde name of a unit enum variant (`open`, `pending`, `invoice`):
/// what status and kind columns hold.
pub(crate) fn tag<T: Serialize>(value: &T) -> Result<String, StoreError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => Ok(name),
        Ok(other) => Err(StoreError::Database(format!("expected a unit variant, got {other}"))),
        Err(e) => Err(StoreError::Database(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{InvoiceKind, TaskStatus, TimerStatus};

    /// The queries filter on these literals (`status = 'open'`,
    /// `status = 'pending'`, the latter also in a partial index).
    #[test]
    fn status_columns_hold_the_names_the_queries_filter_on() {
        assert_eq!(tag(&TaskStatus::Open).unwrap(), "open");
        assert_eq!(tag(&TimerStatus::Pending).unwrap(), "pending");
        assert_eq!(tag(&InvoiceKind::Order).unwrap(), "order");
    }
}
