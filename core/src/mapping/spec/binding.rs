//! Spec types for bindings: which records map to canonical records, and
//! how each source field maps to a canonical field.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Name;
use crate::mapping::yaml::Located;

/// The canonical kind a binding produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A canonical deal (sales deal, 1C:CRM Interest, amoCRM lead, child deal).
    Deal,
    /// An invoice for payment: what the client owes on a deal (`deal:` says
    /// where the document names its deal).
    Invoice,
    /// A customer order, counted like an invoice when the deal has no
    /// invoices.
    Order,
    /// A shipment of (part of) an order or invoice (`covers:` says which);
    /// shipments add up per order, one part per shipment document.
    Shipment,
    /// A payment an ERP reports (1C «Поступление безналичных денежных
    /// средств»): `pays:` says which orders or invoices it pays, and how
    /// much of it goes to each; payments add up per order, one part per
    /// payment document, and the same money seen in an imported bank
    /// statement counts once.
    Payment,
}

impl TargetKind {
    /// Invoices, orders and shipments: documents about a deal, not deals.
    pub fn is_document(self) -> bool {
        self != TargetKind::Deal
    }
}

/// Maps one kind of record of one connector instance onto canonical records.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingSpec {
    /// Unique name of the binding, shown in errors and in the trace.
    pub name: Name,
    /// Connector instance the records come from (its name in the hub config),
    /// e.g. `bitrix24`.
    pub connector: Name,
    /// Connector kind, used in external refs: `bitrix24`, `onec`, `amocrm`, `http`.
    pub system: Name,
    /// Record kind as the connector names it, e.g. `deal`.
    pub record: Name,
    /// Condition over `record` (a minijinja expression): the binding applies
    /// only to records for which it is true, e.g. `record.CATEGORY_ID == '0'`.
    #[serde(default)]
    pub filter: Option<Located<String>>,
    /// Canonical kind produced: `deal` (the default), `invoice`, `order` or
    /// `shipment`.
    #[serde(default = "deal")]
    pub target: TargetKind,
    /// Source path of the record id (dotted, `[n]` for array items), e.g. `ID`
    /// or `Ref_Key`. Becomes the external ref `(system, connector, id)`.
    pub id: Located<String>,
    /// Where the record names its parent deal (same system and instance).
    #[serde(default)]
    pub parent: Option<ParentSpec>,
    /// Invoices and orders: where the document names the deal it belongs to
    /// (the deal's id in the same system and instance), e.g. `Сделка_Key`.
    /// A document without one is kept but moves no deal.
    #[serde(default)]
    pub deal: Option<ParentSpec>,
    /// Shipments: where the shipment names the order or invoice it covers
    /// (that document's id in the same system and instance), e.g.
    /// `ЗаказКлиента_Key`. Required for shipments.
    #[serde(default)]
    pub covers: Option<ParentSpec>,
    /// Payments: where the payment names the order or invoice it pays, e.g.
    /// `РасшифровкаПлатежа[*].Заказ`. A list path splits the payment
    /// over several documents: then `amount` must be a list path too, read
    /// item by item (`РасшифровкаПлатежа[*].Сумма`). Required for payments.
    #[serde(default)]
    pub pays: Option<ParentSpec>,
    /// Where the stage comes from and which stage map translates it. The
    /// stage map also gives the canonical pipeline.
    #[serde(default)]
    pub stage: Option<StageSourceSpec>,
    /// Canonical field → how to fill it. Deals: `title`, `amount`,
    /// `client.name`, `client.inn`, `client.kpp`, `client.emails`,
    /// `client.phones`, `responsible`, `actor`, `custom.<name>`. Invoices
    /// and orders: `number`, `date`, `total`, `paid`, `shipped`,
    /// `client.name`, `client.inn`, `client.kpp`, `custom.<name>`.
    /// Shipments: `number`, `date`, `amount` (required). Payments: `number`
    /// and `date` of the payer's payment order, `amount` (required).
    #[serde(default)]
    pub fields: BTreeMap<Name, FieldSpec>,
    /// Source fields the hub sets, as given, when it creates a record of this
    /// binding in the system (e.g. `CATEGORY_ID: "1"` for a Bitrix24 pipeline).
    #[serde(default)]
    pub create_with: BTreeMap<String, String>,
}

fn deal() -> TargetKind {
    TargetKind::Deal
}

/// Where a record names another record of the same system and instance:
/// its parent deal, its deal, the order it covers.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParentSpec {
    /// Source path of the other record's id, e.g. `UF_CRM_PARENT_DEAL`.
    pub from: Located<String>,
    /// Conversions applied to the id first, e.g. `[{strip_prefix: "D_"}]`.
    #[serde(default)]
    pub convert: Vec<Located<Conversion>>,
}

/// Where the stage comes from.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageSourceSpec {
    /// Source path of the system stage id, e.g. `STAGE_ID`.
    pub from: Located<String>,
    /// Name of the stage map (under `stage_maps`) that translates it.
    pub map: Name,
}

/// How one canonical field is filled from a record.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Source path: dotted keys, `[n]` for the n-th array item (from 0),
    /// `[*]` for every item (list fields only), e.g. `EMAIL[*].VALUE`.
    /// Omit it to always use `default`.
    #[serde(default)]
    pub from: Option<Located<String>>,
    /// Conversions applied in order, e.g. `[trim, decimal]`.
    #[serde(default)]
    pub convert: Vec<Located<Conversion>>,
    /// Canonical value used when the source field is missing, null or empty
    /// (or emptied by `empty_if`). Only the type conversions (`decimal`,
    /// `date`, `datetime`, `local_datetime`, `boolean`) apply to it.
    #[serde(default)]
    pub default: Option<Located<String>>,
    /// A missing value (after `default`) is a mapping error naming the field
    /// and binding, instead of leaving the field unmapped.
    #[serde(default)]
    pub required: bool,
    /// Translate a system user id into a canonical person id through
    /// `people` (their `ids` for this connector). Default: true for
    /// `responsible` and `actor`, false otherwise.
    #[serde(default)]
    pub person: Option<bool>,
    /// For amounts only (`amount`, `total`, `paid`, `shipped`): where the
    /// currency code comes from.
    #[serde(default)]
    pub currency: Option<CurrencySpec>,
}

/// The currency of an amount.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CurrencySpec {
    /// Source path of the ISO currency code, e.g. `CURRENCY_ID`.
    #[serde(default)]
    pub from: Option<Located<String>>,
    /// Conversions applied to the code, e.g. `[{lookup: currencies}]`.
    #[serde(default)]
    pub convert: Vec<Located<Conversion>>,
    /// Currency used when the source has none, e.g. `RUB` (used as written).
    #[serde(default)]
    pub default: Option<Located<String>>,
}

/// One conversion step. Written as a bare name (`trim`) or a one-key
/// mapping (`{lookup: currencies}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Conversion {
    /// Strip leading and trailing whitespace (NBSP included).
    Trim,
    /// Upper-case the text.
    Upper,
    /// Lower-case the text.
    Lower,
    /// Parse a decimal number: comma or dot as decimal separator; spaces,
    /// NBSP and apostrophes as thousands separators (`"1 234 567,89"`).
    Decimal,
    /// Parse a date: `dd.mm.yyyy`, `yyyy-mm-dd`, or the date part of a
    /// date-time (`2024-02-01T10:00:00+03:00`).
    Date,
    /// Parse a date-time that carries its offset (`2024-02-01T10:00:00+03:00`).
    Datetime,
    /// Parse a local date-time without offset (`2024-02-01T10:00:00`,
    /// `01.02.2024 10:00`) in this IANA zone, e.g. `Europe/Moscow`.
    LocalDatetime(String),
    /// Parse a yes/no value: `Y`/`N`, `true`/`false`, `1`/`0`, `да`/`нет`.
    Boolean,
    /// Replace the value through a table under `lookups`; a value not in the
    /// table is a mapping error.
    Lookup(String),
    /// Remove this prefix if present, e.g. `D_` from a Bitrix24 CRM link `D_42`.
    StripPrefix(String),
    /// Treat this exact value as "not set", e.g. 1C's empty reference
    /// `00000000-0000-0000-0000-000000000000` or empty date `0001-01-01T00:00:00`.
    EmptyIf(String),
}
