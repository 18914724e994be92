//! Canonical events: what the mapping layer hands the flow engine.
//!
//! A mapping turns a raw event from any system into one of these; the
//! engine applies it to canonical state and runs flows on whatever really
//! changed. Observations are partial on purpose: a field the mapping did not
//! produce is `None` and leaves the stored value alone.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Client, CustomFields, ExternalRef, Message, Money};

/// One thing that happened, in canonical terms.
// Events are handled one at a time and never kept in bulk, so the size of
// the largest variant costs nothing worth a `Box` on every observation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CanonicalEvent {
    /// A source system reported the current state of a deal.
    DealObserved { source: ExternalRef, observed: DealObservation },
    /// A source system deleted a deal.
    DealDeleted { source: ExternalRef },
    /// Money was applied to an invoice of the deal (partial or full).
    PaymentApplied { deal_id: Uuid, invoice_id: Uuid, amount: Money, paid_total: Money, invoice_total: Money },
    /// The last payment of an invoice arrived.
    InvoiceFullyPaid { deal_id: Uuid, invoice_id: Uuid },
    /// Shipments now cover 100 % of the deal's orders.
    ShipmentsCoverOrder { deal_id: Uuid, invoice_id: Uuid },
    /// A message landed on the deal's timeline.
    MessageArrived { deal_id: Uuid, message: Message },
    /// A durable timer of the deal fired.
    TimerFired { deal_id: Uuid, timer: String, timer_id: Uuid },
    /// Someone decided an approval task.
    ApprovalDecided { deal_id: Uuid, task_id: Uuid, approved: bool, by: String },
}

/// The fields of a deal as one system sees them now; `None` = not mapped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DealObservation {
    pub pipeline: Option<String>,
    pub stage: Option<String>,
    pub title: Option<String>,
    pub amount: Option<Money>,
    pub client: Option<Client>,
    /// Canonical person id (already translated from the system's user id).
    pub responsible: Option<String>,
    /// The parent deal, as the source system refers to it.
    pub parent: Option<ExternalRef>,
    /// Only the custom fields the mapping produced.
    #[serde(default)]
    pub custom_fields: CustomFields,
    /// Who made the change in the source system (canonical person id), if
    /// the source says.
    pub actor: Option<String>,
}
