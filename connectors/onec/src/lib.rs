//! 1C connector: 1C:CRM Interests and 1C ERP documents, both ways.
//!
//! - [`OnecInbound`] accepts the JSON notifications a 1C HTTP service
//!   (`/hs/...`) sends on every change of an Interest, customer order,
//!   invoice, bank receipt, shipment, nomenclature item or stock balance
//!   ([`notification`]), authenticated by Basic or bearer credentials, and
//!   finds changes whose notifications never arrived by polling the
//!   standard OData interface ([`catch_up`]).
//! - [`odata`] is the client of `/odata/standard.odata/`: the JSON envelope,
//!   `$filter`/`$top`/`$skip`, writes, posting, and its errors classified
//!   for the dispatcher.
//! - [`OnecTarget`] performs the hub's commands: an Interest's stage and
//!   fields, child Interests and documents with whole tabular sections,
//!   posting, tasks, and notifications through the HTTP service.
//! - [`enterprise_data`] reads and writes EnterpriseData exchange messages.
//! - [`emulator`] is a 1C test double speaking the same wire formats.
//! - [`build`] makes both halves of a configured instance ([`OnecConfig`])
//!   around one OData client.

pub mod catch_up;
mod config;
pub mod emulator;
pub mod enterprise_data;
mod inbound;
mod instance;
pub mod kinds;
pub mod notification;
pub mod odata;
mod outbound;

pub use config::{InboundCredentials, OnecConfig};
pub use inbound::OnecInbound;
pub use instance::build;
pub use kinds::RecordKind;
pub use odata::{Credentials, ODataClient, ODataError};
pub use outbound::OnecTarget;
