//! Canonical events: what the mapping layer hands the flow engine.
//!
//! A mapping turns a raw event from any system into one of these; the
//! engine applies it to canonical state and runs flows on whatever really
//! changed. Observations are partial on purpose: a field the mapping did not
//! produce is `None` and leaves the stored value alone.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use chrono::NaiveDate;

use super::{Client, CustomFields, ExternalRef, InvoiceKind, Message, Money};

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
    /// A source system reported the current state of an invoice or a
    /// customer order; `deal` is the deal it names as its basis.
    InvoiceObserved { source: ExternalRef, deal: Option<ExternalRef>, observed: InvoiceObservation },
    /// A source system reported a shipment of (part of) an order or invoice,
    /// `covers`, as that system names it.
    ShipmentObserved { source: ExternalRef, covers: ExternalRef, observed: ShipmentObservation },
    /// A source system reported a payment document (an ERP's receipt) and
    /// what it pays of each order or invoice, as that system names them.
    PaymentObserved { source: ExternalRef, observed: PaymentObservation },
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

/// An invoice or customer order as one system sees it now; `None` = not
/// mapped, which leaves the stored value alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceObservation {
    pub kind: InvoiceKind,
    pub number: Option<String>,
    pub date: Option<NaiveDate>,
    pub total: Option<Money>,
    /// What the system says has been paid so far.
    pub paid: Option<Money>,
    /// What the system says has been shipped so far.
    pub shipped: Option<Money>,
    pub client: Option<Client>,
    #[serde(default)]
    pub custom_fields: CustomFields,
}

/// A shipment document as its system sees it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentObservation {
    pub number: Option<String>,
    pub date: Option<NaiveDate>,
    /// What it ships of the order it covers.
    pub amount: Money,
}

/// A payment document as its system sees it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentObservation {
    /// The payer's payment order number.
    pub number: Option<String>,
    /// The payer's payment order date.
    pub date: Option<NaiveDate>,
    /// What it pays of each order or invoice (one share unless the payment
    /// is split over several).
    pub shares: Vec<PaymentShare>,
}

/// The part of a payment that goes to one order or invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentShare {
    pub pays: ExternalRef,
    pub amount: Money,
}
