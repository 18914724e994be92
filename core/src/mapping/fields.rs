//! The canonical field vocabulary: which fields a binding may fill and a
//! flow may read or write. Custom fields are `custom.<name>`; their names
//! come from the mapping files (bindings that fill them, `custom_fields`).

use std::collections::BTreeSet;

use super::spec::TargetKind;

/// A canonical field a binding fills: of a deal, or of a document (an
/// invoice, order or shipment).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum BindingTarget {
    Title,
    /// A deal's amount, or what a shipment ships.
    Amount,
    /// A document's number as printed.
    Number,
    /// A document's date.
    Date,
    /// What an invoice or order asks for.
    Total,
    /// What an invoice or order has been paid so far, as its system says.
    Paid,
    /// What an invoice or order has been shipped so far, as its system says.
    Shipped,
    ClientName,
    ClientInn,
    ClientKpp,
    ClientEmails,
    ClientPhones,
    Responsible,
    /// Who made the change in the source system.
    Actor,
    Custom(String),
}

/// Field names a deal binding may fill, for error messages.
pub const BINDING_TARGETS: &str = "title, amount, client.name, client.inn, client.kpp, client.emails, client.phones, responsible, actor, custom.<name>";

/// Field names an invoice or order binding may fill, for error messages.
pub const INVOICE_TARGETS: &str =
    "number, date, total, paid, shipped, client.name, client.inn, client.kpp, custom.<name>";

/// Field names a shipment binding may fill, for error messages.
pub const SHIPMENT_TARGETS: &str = "number, date, amount";

/// Fields a flow may copy or set, besides `custom.<name>`.
const FLOW_FIELDS: [&str; 9] = [
    "title",
    "amount",
    "client",
    "client.name",
    "client.inn",
    "client.kpp",
    "client.emails",
    "client.phones",
    "responsible",
];

impl BindingTarget {
    pub fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "title" => Self::Title,
            "amount" => Self::Amount,
            "number" => Self::Number,
            "date" => Self::Date,
            "total" => Self::Total,
            "paid" => Self::Paid,
            "shipped" => Self::Shipped,
            "client.name" => Self::ClientName,
            "client.inn" => Self::ClientInn,
            "client.kpp" => Self::ClientKpp,
            "client.emails" => Self::ClientEmails,
            "client.phones" => Self::ClientPhones,
            "responsible" => Self::Responsible,
            "actor" => Self::Actor,
            other => match other.strip_prefix("custom.") {
                Some(custom) => Self::Custom(valid_custom_name(custom)?.to_owned()),
                None => {
                    return Err(format!(
                        "unknown canonical field `{other}`; expected one of {BINDING_TARGETS} (deals), \
                         {INVOICE_TARGETS} (invoices and orders), {SHIPMENT_TARGETS} (shipments and payments)"
                    ));
                }
            },
        })
    }

    /// Fields that hold a list: a `[*]` path fills them with every item.
    pub fn accepts_list(&self) -> bool {
        matches!(self, Self::ClientEmails | Self::ClientPhones | Self::Custom(_))
    }

    /// Amounts: read with a currency (`currency:`).
    pub fn is_money(&self) -> bool {
        matches!(self, Self::Amount | Self::Total | Self::Paid | Self::Shipped)
    }

    /// Whether a binding of `kind` may fill this field; `Err` lists the
    /// fields it may fill.
    pub fn check_for(&self, kind: TargetKind) -> Result<(), &'static str> {
        let allowed = match kind {
            TargetKind::Deal => !matches!(self, Self::Number | Self::Date | Self::Total | Self::Paid | Self::Shipped),
            TargetKind::Invoice | TargetKind::Order => matches!(
                self,
                Self::Number
                    | Self::Date
                    | Self::Total
                    | Self::Paid
                    | Self::Shipped
                    | Self::ClientName
                    | Self::ClientInn
                    | Self::ClientKpp
                    | Self::Custom(_)
            ),
            TargetKind::Shipment | TargetKind::Payment => matches!(self, Self::Number | Self::Date | Self::Amount),
        };
        match kind {
            _ if allowed => Ok(()),
            TargetKind::Deal => Err(BINDING_TARGETS),
            TargetKind::Invoice | TargetKind::Order => Err(INVOICE_TARGETS),
            TargetKind::Shipment | TargetKind::Payment => Err(SHIPMENT_TARGETS),
        }
    }

    /// Fields holding a canonical person id, translated by default.
    pub fn is_person(&self) -> bool {
        matches!(self, Self::Responsible | Self::Actor)
    }
}

/// Checks a custom field name: letters, digits and `_`, so it reads the
/// same in YAML, in templates (`deal.custom.cost`) and in JSON.
pub fn valid_custom_name(name: &str) -> Result<&str, String> {
    if !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        Ok(name)
    } else {
        Err(format!("custom field name `{name}` must be letters, digits and `_`"))
    }
}

/// Checks a field path a flow copies or sets.
pub fn check_flow_field(path: &str, custom_fields: &BTreeSet<String>) -> Result<(), String> {
    if FLOW_FIELDS.contains(&path) {
        return Ok(());
    }
    match path.strip_prefix("custom.") {
        Some(name) if custom_fields.contains(name) => Ok(()),
        Some(name) => {
            valid_custom_name(name)?;
            Err(format!("unknown custom field `{path}`: no binding fills it and `custom_fields` does not declare it"))
        }
        None => Err(format!("unknown field `{path}`; expected one of {}, custom.<name>", FLOW_FIELDS.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_targets() {
        assert_eq!(BindingTarget::parse("client.inn").unwrap(), BindingTarget::ClientInn);
        assert_eq!(BindingTarget::parse("custom.cost").unwrap(), BindingTarget::Custom("cost".into()));
        assert!(BindingTarget::parse("client").is_err());
        assert!(BindingTarget::parse("custom.").is_err());
        assert!(BindingTarget::parse("custom.a.b").is_err());
        assert!(BindingTarget::parse("stage").is_err(), "stages come from `stage:`, not a field map");
    }

    #[test]
    fn each_kind_of_binding_fills_its_own_fields() {
        assert!(BindingTarget::Title.check_for(TargetKind::Deal).is_ok());
        assert_eq!(BindingTarget::Paid.check_for(TargetKind::Deal), Err(BINDING_TARGETS));
        assert!(BindingTarget::Paid.check_for(TargetKind::Order).is_ok());
        assert_eq!(BindingTarget::Responsible.check_for(TargetKind::Invoice), Err(INVOICE_TARGETS));
        assert!(BindingTarget::Amount.check_for(TargetKind::Shipment).is_ok());
        assert_eq!(BindingTarget::Total.check_for(TargetKind::Shipment), Err(SHIPMENT_TARGETS));
    }

    #[test]
    fn flow_fields() {
        let custom = BTreeSet::from(["cost".to_owned()]);
        assert!(check_flow_field("client", &custom).is_ok());
        assert!(check_flow_field("custom.cost", &custom).is_ok());
        assert!(check_flow_field("custom.price", &custom).unwrap_err().contains("no binding fills it"));
        assert!(check_flow_field("stage", &custom).is_err());
    }
}
