//! The canonical field vocabulary: which fields a binding may fill and a
//! flow may read or write. Custom fields are `custom.<name>`; their names
//! come from the mapping files (bindings that fill them, `custom_fields`).

use std::collections::BTreeSet;

/// A canonical deal field a binding fills.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum BindingTarget {
    Title,
    Amount,
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

/// Field names a binding may fill, for error messages.
pub const BINDING_TARGETS: &str = "title, amount, client.name, client.inn, client.kpp, client.emails, client.phones, responsible, actor, custom.<name>";

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
            "client.name" => Self::ClientName,
            "client.inn" => Self::ClientInn,
            "client.kpp" => Self::ClientKpp,
            "client.emails" => Self::ClientEmails,
            "client.phones" => Self::ClientPhones,
            "responsible" => Self::Responsible,
            "actor" => Self::Actor,
            other => match other.strip_prefix("custom.") {
                Some(custom) => Self::Custom(valid_custom_name(custom)?.to_owned()),
                None => return Err(format!("unknown canonical field `{other}`; expected one of {BINDING_TARGETS}")),
            },
        })
    }

    /// Fields that hold a list: a `[*]` path fills them with every item.
    pub fn accepts_list(&self) -> bool {
        matches!(self, Self::ClientEmails | Self::ClientPhones | Self::Custom(_))
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
    fn flow_fields() {
        let custom = BTreeSet::from(["cost".to_owned()]);
        assert!(check_flow_field("client", &custom).is_ok());
        assert!(check_flow_field("custom.cost", &custom).is_ok());
        assert!(check_flow_field("custom.price", &custom).unwrap_err().contains("no binding fills it"));
        assert!(check_flow_field("stage", &custom).is_err());
    }
}
