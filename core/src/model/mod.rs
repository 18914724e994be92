//! The canonical model: one shape for deals, invoices, payments, shipments,
//! messages and tasks, whichever CRM or ERP they came from.
//!
//! Every record carries its external refs — the ids it has in each connected
//! system — so the hub can find the canonical record for an incoming event and
//! address the right object when it writes back. Amounts are decimals, never
//! floats; they serialize as strings so no JSON consumer rounds them.

mod deal;
mod event;
mod external_ref;
mod inn;
mod invoice;
mod message;
mod money;
mod name_based_id;
mod party;
mod payment;
mod shipment;
mod task;
mod timer;

pub use deal::{Deal, StageEntry};
pub use event::{
    CanonicalEvent, DealObservation, InvoiceObservation, PaymentObservation, PaymentShare, ShipmentObservation,
};
pub use external_ref::ExternalRef;
pub use inn::{Inn, InnError};
pub use invoice::{Invoice, InvoiceKind, InvoiceLine, InvoiceStatus};
pub use message::{Message, MessageChannel};
pub use money::{Money, MoneyError, decimal_text};
pub use name_based_id::name_based_id;
pub use party::{BankAccount, Client, Party};
pub use payment::{
    MatchCandidate, MatchMethod, MatchReason, PaidPart, Payment, PaymentDirection, PaymentMatch, ReviewNote,
};
pub use shipment::{Shipment, ShipmentLine, ShippedPart};
pub use task::{Task, TaskKind, TaskStatus};
pub use timer::{Timer, TimerStatus};

/// Custom fields of any record: the mapping file decides the keys. The
/// names are shared, not copied: a binding makes each of its field names
/// once, and every record it maps and every deal that keeps the field hold
/// that one name. They (de)serialize as plain strings.
pub type CustomFields = std::collections::BTreeMap<std::sync::Arc<str>, serde_json::Value>;

/// Canonical record ids are UUID v7: time-ordered, so they index well in both
/// SQLite and PostgreSQL and sort in creation order.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}
