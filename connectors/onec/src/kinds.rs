//! The kinds of 1C objects the connector carries, what the hub's mappings
//! call them (`record:` of a binding), and the OData entity set each one
//! lives in by default (names of 1C:CRM and 1C:УТ 11 / ERP; a configuration
//! that names them otherwise overrides them in `entity_sets`).

use std::collections::BTreeMap;

/// One kind of 1C object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// «Интерес клиента» of 1C:CRM: the deal, with its scenario and stage.
    Interest,
    /// «Заказ клиента».
    CustomerOrder,
    /// «Счет на оплату клиенту».
    Invoice,
    /// «Поступление безналичных денежных средств»: a bank receipt.
    BankReceipt,
    /// «Реализация товаров и услуг»: a shipment.
    Shipment,
    /// An item of the «Номенклатура» catalog.
    Nomenclature,
    /// A stock balance (an accumulation register has no `Ref_Key`).
    Stock,
}

impl RecordKind {
    pub const ALL: [RecordKind; 7] = [
        RecordKind::Interest,
        RecordKind::CustomerOrder,
        RecordKind::Invoice,
        RecordKind::BankReceipt,
        RecordKind::Shipment,
        RecordKind::Nomenclature,
        RecordKind::Stock,
    ];

    /// The record kind mappings bind (`record: interest`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Interest => "interest",
            RecordKind::CustomerOrder => "customer_order",
            RecordKind::Invoice => "invoice",
            RecordKind::BankReceipt => "bank_receipt",
            RecordKind::Shipment => "shipment",
            RecordKind::Nomenclature => "nomenclature",
            RecordKind::Stock => "stock",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The standard OData entity set of this kind.
    pub fn default_entity_set(self) -> &'static str {
        match self {
            RecordKind::Interest => "Document_CRM_Интерес",
            RecordKind::CustomerOrder => "Document_ЗаказКлиента",
            RecordKind::Invoice => "Document_СчетНаОплатуКлиенту",
            RecordKind::BankReceipt => "Document_ПоступлениеБезналичныхДенежныхСредств",
            RecordKind::Shipment => "Document_РеализацияТоваровУслуг",
            RecordKind::Nomenclature => "Catalog_Номенклатура",
            RecordKind::Stock => "AccumulationRegister_ТоварыНаСкладах",
        }
    }

    /// Objects of this kind are identified by a `Ref_Key` GUID (register
    /// records are not).
    pub fn has_ref(self) -> bool {
        self != RecordKind::Stock
    }

    /// A document (dated, posted); otherwise a catalog item or a register record.
    pub fn is_document(self) -> bool {
        self.default_entity_set().starts_with("Document_")
    }
}

/// Entity sets by kind: the defaults with a configuration's overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitySets(BTreeMap<RecordKind, String>);

impl Default for EntitySets {
    fn default() -> Self {
        Self(RecordKind::ALL.into_iter().map(|k| (k, k.default_entity_set().to_owned())).collect())
    }
}

impl EntitySets {
    /// The defaults with `overrides` (kind name → entity set); an unknown
    /// kind name is an error naming it.
    pub fn with_overrides(overrides: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut sets = Self::default();
        for (kind, set) in overrides {
            let kind = RecordKind::parse(kind).ok_or_else(|| {
                let known: Vec<&str> = RecordKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("entity_sets: `{kind}` is not a record kind (known: {})", known.join(", "))
            })?;
            if !crate::odata::is_entity_set_name(set) {
                return Err(format!("entity_sets.{}: `{set}` is not an OData entity set name", kind.as_str()));
            }
            sets.0.insert(kind, set.clone());
        }
        Ok(sets)
    }

    pub fn of(&self, kind: RecordKind) -> &str {
        &self.0[&kind]
    }

    /// The kind whose objects live in `set`.
    pub fn kind_of(&self, set: &str) -> Option<RecordKind> {
        self.0.iter().find(|(_, s)| s.as_str() == set).map(|(k, _)| *k)
    }
}

/// 1C's empty reference.
pub const EMPTY_REF: &str = "00000000-0000-0000-0000-000000000000";

/// Whether `text` is a GUID as 1C writes it (`8-4-4-4-12` hex digits).
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_back_and_name_their_entity_sets() {
        for kind in RecordKind::ALL {
            assert_eq!(RecordKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(RecordKind::parse("Interest"), None);
        let sets = EntitySets::default();
        assert_eq!(sets.kind_of("Document_РеализацияТоваровУслуг"), Some(RecordKind::Shipment));
        assert!(RecordKind::Shipment.is_document() && !RecordKind::Nomenclature.is_document());
    }

    #[test]
    fn overrides_replace_defaults_and_unknown_kinds_are_named() {
        let sets =
            EntitySets::with_overrides(&BTreeMap::from([("interest".to_owned(), "Document_Интерес".to_owned())]))
                .unwrap();
        assert_eq!(sets.of(RecordKind::Interest), "Document_Интерес");
        let err = EntitySets::with_overrides(&BTreeMap::from([("deal".to_owned(), "Document_X".to_owned())]));
        assert!(err.unwrap_err().contains("`deal`"));
        let err = EntitySets::with_overrides(&BTreeMap::from([("invoice".to_owned(), "Doc X'".to_owned())]));
        assert!(err.unwrap_err().contains("entity_sets.invoice"));
    }

    #[test]
    fn guids_are_recognised() {
        assert!(is_guid("8b9660f6-6332-11ec-ad72-000c29b45b09"));
        assert!(is_guid(EMPTY_REF));
        assert!(!is_guid("8b9660f6633211ecad72000c29b45b09"));
        assert!(!is_guid("8b9660f6-6332-11ec-ad72-000c29b45b0g"));
        assert!(!is_guid("guid'8b9660f6-6332-11ec-ad72-000c29b45b09'"));
    }
}
