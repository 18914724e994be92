//! External refs: the id a canonical record has in one connected system.

use serde::{Deserialize, Serialize};

/// `(system, instance, id)`: e.g. `("bitrix24", "main-portal", "4711")`.
/// `instance` tells two portals of the same system apart.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema,
)]
pub struct ExternalRef {
    /// Connector kind, e.g. `bitrix24`, `onec`, `amocrm`.
    pub system: String,
    /// Connector instance name from the config, e.g. `main-portal`.
    pub instance: String,
    /// The record's id in that system (Bitrix24 ID, 1C `Ref_Key` GUID, …).
    pub id: String,
    /// Set when the record is not the deal itself but a document the hub
    /// made for it (e.g. `customer_order`, the binding's record kind): the
    /// document finds its deal through this ref, but the deal's stage,
    /// field, task and message writes do not go there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
}

impl ExternalRef {
    pub fn new(system: impl Into<String>, instance: impl Into<String>, id: impl Into<String>) -> Self {
        Self { system: system.into(), instance: instance.into(), id: id.into(), document: None }
    }

    /// The same ref, marked as a document of kind `record` made for the deal.
    pub fn as_document(mut self, record: impl Into<String>) -> Self {
        self.document = Some(record.into());
        self
    }

    /// Whether both name the same record: system, instance and id (a
    /// document mark is what the hub knows about it, not its identity).
    pub fn same_record(&self, other: &ExternalRef) -> bool {
        self.id == other.id && self.instance == other.instance && self.system == other.system
    }

    /// Whether this is the deal's own record in its system (where the
    /// deal's writes go), rather than a document made for it.
    pub fn holds_deal(&self) -> bool {
        self.document.is_none()
    }
}
