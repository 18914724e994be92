//! Records stored whole as JSON documents beside the columns they are
//! looked up by; shared by both backends.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;
use super::error::corrupt;

pub(crate) fn to_doc<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(format!("{what} document: {e}")))
}

/// [`to_doc`] into a buffer of `capacity` bytes: for many documents of
/// about one size (a statement's payments, ~2 KB each) the buffer then
/// grows rarely, where from serde_json's 128 bytes it grew four times a
/// document, copying each one's bytes over again (a quarter of the time
/// serialising 100,000 payments took).
pub(crate) fn to_doc_sized<T: Serialize>(what: &str, value: &T, capacity: usize) -> Result<String, StoreError> {
    let mut bytes = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut bytes, value).map_err(|e| StoreError::Database(format!("{what} document: {e}")))?;
    String::from_utf8(bytes).map_err(|e| StoreError::Database(format!("{what} document: {e}")))
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

    /// A buffer of any size gives the document `to_doc` gives.
    #[test]
    fn a_sized_document_is_the_document() {
        let value = serde_json::json!({"purpose": "Оплата сч. 374488 за товар", "amount": "85670", "lines": [1, 2, 3]});
        let plain = to_doc("test", &value).unwrap();
        for capacity in [0, 1, plain.len(), 4_096] {
            assert_eq!(to_doc_sized("test", &value, capacity).unwrap(), plain, "capacity {capacity}");
        }
    }

    /// The queries filter on these literals (`status = 'open'`,
    /// `status = 'pending'`, the latter also in a partial index).
    #[test]
    fn status_columns_hold_the_names_the_queries_filter_on() {
        assert_eq!(tag(&TaskStatus::Open).unwrap(), "open");
        assert_eq!(tag(&TimerStatus::Pending).unwrap(), "pending");
        assert_eq!(tag(&InvoiceKind::Order).unwrap(), "order");
    }
}
