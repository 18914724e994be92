//! OData v3 URLs as 1C's standard interface reads them: entity paths with
//! typed keys (`Document_X(guid'…')`), `$filter` literals (`guid'…'`,
//! `datetime'…'`, `'text'`), and a query string that leaves `$`, `'`,
//! `(`, `)` and `,` as they are — some 1C publications refuse a filter
//! whose quotes arrive percent-encoded.

use chrono::NaiveDateTime;

/// Prefixes of the standard interface's entity sets.
const PREFIXES: [&str; 14] = [
    "Catalog_",
    "Document_",
    "DocumentJournal_",
    "Constant_",
    "ExchangePlan_",
    "ChartOfAccounts_",
    "ChartOfCalculationTypes_",
    "ChartOfCharacteristicTypes_",
    "InformationRegister_",
    "AccumulationRegister_",
    "AccountingRegister_",
    "CalculationRegister_",
    "BusinessProcess_",
    "Task_",
];

/// Whether `name` is an entity set name of the standard interface
/// (`Document_ЗаказКлиента`, `Catalog_Номенклатура`, a tabular section
/// `Document_ЗаказКлиента_Товары`).
pub fn is_entity_set_name(name: &str) -> bool {
    PREFIXES.iter().any(|p| name.strip_prefix(p).is_some_and(is_identifier))
}

/// A 1C identifier: letters (Cyrillic too), digits and `_`.
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// `guid'…'`.
pub fn guid(value: &str) -> String {
    format!("guid'{value}'")
}

/// `datetime'2024-01-01T00:00:00'`: 1C dates are local, without offset.
pub fn datetime(value: NaiveDateTime) -> String {
    format!("datetime'{}'", value.format("%Y-%m-%dT%H:%M:%S"))
}

/// `'text'` with quotes doubled.
pub fn string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The query options of a read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub filter: Option<String>,
    pub select: Vec<String>,
    pub orderby: Option<String>,
    pub top: Option<u32>,
    pub skip: Option<u32>,
}

impl Query {
    pub fn filter(filter: impl Into<String>) -> Self {
        Self { filter: Some(filter.into()), ..Self::default() }
    }

    /// `$format=json` first, then the options that are set.
    pub fn to_query_string(&self) -> String {
        let mut parts = vec!["$format=json".to_owned()];
        if let Some(f) = &self.filter {
            parts.push(format!("$filter={}", encode(f)));
        }
        if !self.select.is_empty() {
            parts.push(format!("$select={}", encode(&self.select.join(","))));
        }
        if let Some(o) = &self.orderby {
            parts.push(format!("$orderby={}", encode(o)));
        }
        if let Some(t) = self.top {
            parts.push(format!("$top={t}"));
        }
        if let Some(s) = self.skip {
            parts.push(format!("$skip={s}"));
        }
        parts.join("&")
    }
}

/// Percent-encodes what must be (spaces, `&`, `#`, `+`, `%`, non-ASCII as
/// UTF-8) and keeps OData's own punctuation readable.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let keep = byte.is_ascii_alphanumeric() || b"-._~$,'()/:;!=*@".contains(&byte);
        if keep {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The resource path of an entity set, one object of it, or an action on
/// one object: `Document_X`, `Document_X(guid'…')`, `Document_X(guid'…')/Post`.
pub fn entity_path(set: &str, key: Option<&str>, action: Option<&str>) -> String {
    let mut path = encode(set);
    if let Some(key) = key {
        path.push('(');
        path.push_str(&encode(&guid(key)));
        path.push(')');
    }
    if let Some(action) = action {
        path.push('/');
        path.push_str(&encode(action));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_set_names_follow_the_standard_interface() {
        assert!(is_entity_set_name("Document_ЗаказКлиента"));
        assert!(is_entity_set_name("Document_ЗаказКлиента_Товары"));
        assert!(is_entity_set_name("Catalog_Номенклатура"));
        assert!(is_entity_set_name("Task_ЗадачаИсполнителя"));
        assert!(!is_entity_set_name("ЗаказКлиента"));
        assert!(!is_entity_set_name("Document_"));
        assert!(!is_entity_set_name("Document_X(guid'1')"));
    }

    #[test]
    fn filters_keep_their_quotes_and_encode_the_rest() {
        let since = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
        let query = Query {
            filter: Some(format!(
                "Date ge {} and Контрагент_Key eq {}",
                datetime(since),
                guid("8b9660f6-6332-11ec-ad72-000c29b45b09")
            )),
            select: vec!["Ref_Key".into(), "DataVersion".into()],
            orderby: Some("Date asc".into()),
            top: Some(100),
            skip: Some(200),
        };
        assert_eq!(
            query.to_query_string(),
            "$format=json&$filter=Date%20ge%20datetime'2024-01-01T00:00:00'%20and%20\
             %D0%9A%D0%BE%D0%BD%D1%82%D1%80%D0%B0%D0%B3%D0%B5%D0%BD%D1%82_Key%20eq%20guid'8b9660f6-6332-11ec-ad72-000c29b45b09'\
             &$select=Ref_Key,DataVersion&$orderby=Date%20asc&$top=100&$skip=200"
        );
        assert_eq!(string("O'Brien"), "'O''Brien'");
        assert_eq!(encode("a&b+c#d%"), "a%26b%2Bc%23d%25");
    }

    #[test]
    fn paths_carry_typed_keys_and_actions() {
        assert_eq!(
            entity_path("Document_X", Some("8b9660f6-6332-11ec-ad72-000c29b45b09"), Some("Post")),
            "Document_X(guid'8b9660f6-6332-11ec-ad72-000c29b45b09')/Post"
        );
        assert_eq!(entity_path("Catalog_Я", None, None), "Catalog_%D0%AF");
    }
}
