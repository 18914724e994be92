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
}

impl ExternalRef {
    pub fn new(system: impl Into<String>, instance: impl Into<String>, id: impl Into<String>) -> Self {
        Self { system: system.into(), instance: instance.into(), id: id.into() }
    }
}
