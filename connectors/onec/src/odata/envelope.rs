//! The JSON envelope of the standard interface: a collection is
//! `{"odata.metadata": "<root>/$metadata#<set>", "value": [ … ]}`, one
//! object is the object itself with `"odata.metadata":
//! "<root>/$metadata#<set>/@Element"`. Anything else is refused with the
//! place that is wrong (`value[3].Ref_Key`, `line 1 column 57`).

use serde_json::{Map, Value};

use crate::kinds::is_guid;

/// One page of a collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Collection {
    pub metadata: String,
    pub value: Vec<Map<String, Value>>,
}

/// Reads a collection of `set`. Objects of sets that have references
/// (catalogs, documents, tasks) must carry a `Ref_Key` GUID.
pub fn parse_collection(body: &[u8], set: &str) -> Result<Collection, String> {
    let mut top = parse_object(body)?;
    let metadata = metadata(&mut top)?;
    let fragment = metadata.rsplit_once('#').map(|(_, f)| f).unwrap_or_default();
    if fragment != set {
        return Err(format!("`odata.metadata` names `{fragment}`, not the collection `{set}`"));
    }
    let rows = match top.remove("value") {
        Some(Value::Array(rows)) => rows,
        Some(_) => return Err("`value` is not an array".into()),
        None => return Err("no `value`: not a collection".into()),
    };
    let mut value = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let Value::Object(row) = row else { return Err(format!("`value[{i}]` is not an object")) };
        check_ref(&row, set, &format!("value[{i}]."))?;
        value.push(row);
    }
    Ok(Collection { metadata, value })
}

/// Reads one object of `set` (the answer of a read, create or update).
pub fn parse_entity(body: &[u8], set: &str) -> Result<Map<String, Value>, String> {
    let mut top = parse_object(body)?;
    let metadata = metadata(&mut top)?;
    let fragment = metadata.rsplit_once('#').map(|(_, f)| f).unwrap_or_default();
    if fragment != format!("{set}/@Element") {
        return Err(format!("`odata.metadata` names `{fragment}`, not an object of `{set}`"));
    }
    check_ref(&top, set, "")?;
    Ok(top)
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    let body = body.strip_prefix("\u{feff}".as_bytes()).unwrap_or(body);
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("not JSON at line {} column {}: {e}", e.line(), e.column()))?;
    match value {
        Value::Object(o) => Ok(o),
        _ => Err("not a JSON object".into()),
    }
}

fn metadata(top: &mut Map<String, Value>) -> Result<String, String> {
    match top.remove("odata.metadata") {
        Some(Value::String(m)) if m.contains("$metadata#") => Ok(m),
        Some(_) => Err("`odata.metadata` is not a `…/$metadata#<set>` URL".into()),
        None => Err("no `odata.metadata`: not an answer of the standard OData interface ($format=json)".into()),
    }
}

/// Objects of these sets are references (a tabular section's rows carry
/// their owner's `Ref_Key` too); register records are not.
fn has_refs(set: &str) -> bool {
    ["Catalog_", "Document_", "Task_", "BusinessProcess_", "ExchangePlan_", "ChartOf"]
        .iter()
        .any(|p| set.starts_with(p))
}

/// `place` is where the object is (`value[3].`), for the message.
fn check_ref(object: &Map<String, Value>, set: &str, place: &str) -> Result<(), String> {
    if !has_refs(set) {
        return Ok(());
    }
    match object.get("Ref_Key") {
        Some(Value::String(r)) if is_guid(r) => Ok(()),
        Some(Value::String(r)) => Err(format!("`{place}Ref_Key` `{r}` is not a GUID")),
        Some(other) => Err(format!("`{place}Ref_Key` `{other}` is not a GUID")),
        None => Err(format!("`{place}Ref_Key` is missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page as 1C answers it (from a real УТ answer, abridged).
    const PAGE: &str = r#"{
 "odata.metadata": "http://10.0.1.22/1c/odata/standard.odata/$metadata#Document_РеализацияТоваровУслуг",
 "value": [{
  "Ref_Key": "8b9660f6-6332-11ec-ad72-000c29b45b09",
  "DataVersion": "AAAACgAAAAA=",
  "DeletionMark": false,
  "Number": "0000-000001",
  "Date": "2021-12-22T17:22:08",
  "Posted": false,
  "ВидОперации": "Товары",
  "Организация_Key": "87fa6cc2-e901-11ea-8591-000c29b45b09",
  "ПодразделениеОрганизации_Key": "00000000-0000-0000-0000-000000000000",
  "Склад@navigationLinkUrl": "Document_РеализацияТоваровУслуг(guid'8b9660f6-6332-11ec-ad72-000c29b45b09')/Склад"
 }]
}"#;

    #[test]
    fn a_real_page_reads_with_guids_dates_and_cyrillic_intact() {
        let page = parse_collection(PAGE.as_bytes(), "Document_РеализацияТоваровУслуг").unwrap();
        assert_eq!(page.value.len(), 1);
        let row = &page.value[0];
        assert_eq!(row["Ref_Key"], "8b9660f6-6332-11ec-ad72-000c29b45b09");
        assert_eq!(row["Date"], "2021-12-22T17:22:08");
        assert_eq!(row["ВидОперации"], "Товары");
        assert!(!row.contains_key("odata.metadata"));
    }

    #[test]
    fn malformed_answers_name_the_place() {
        let set = "Document_РеализацияТоваровУслуг";
        let err = |body: &str| parse_collection(body.as_bytes(), set).unwrap_err();
        assert!(err("{\"value\": []}").contains("no `odata.metadata`"));
        assert!(err("<html>502</html>").contains("line 1 column 1"));
        let meta = "\"odata.metadata\": \"http://h/odata/standard.odata/$metadata#Document_РеализацияТоваровУслуг\"";
        assert!(err(&format!("{{{meta}}}")).contains("no `value`"));
        assert!(err(&format!("{{{meta}, \"value\": {{}}}}")).contains("`value` is not an array"));
        assert!(
            err(&format!("{{{meta}, \"value\": [{{\"Ref_Key\": \"8b9660f6-6332-11ec-ad72-000c29b45b09\"}}, 3]}}"))
                .contains("`value[1]` is not an object")
        );
        let e = err(&format!("{{{meta}, \"value\": [{{}}, {{\"Ref_Key\": \"x1\"}}]}}"));
        assert!(e.contains("`value[0].Ref_Key` is missing"), "{e}");
        let e = err(&format!(
            "{{{meta}, \"value\": [{{\"Ref_Key\": \"8b9660f6-6332-11ec-ad72-000c29b45b09\"}}, {{\"Ref_Key\": \"x1\"}}]}}"
        ));
        assert!(e.contains("`value[1].Ref_Key` `x1` is not a GUID"), "{e}");
        let other = PAGE.replace("#Document_РеализацияТоваровУслуг", "#Catalog_Номенклатура");
        assert!(err(&other).contains("names `Catalog_Номенклатура`"));
    }

    #[test]
    fn one_object_carries_its_element_metadata() {
        let body = r#"{"odata.metadata": "http://h/b/odata/standard.odata/$metadata#Catalog_Номенклатура/@Element",
            "Ref_Key": "41aa6331-954f-11e3-814b-005056c00008", "Description": "Насос ЦНС-38"}"#;
        let object = parse_entity(body.as_bytes(), "Catalog_Номенклатура").unwrap();
        assert_eq!(object["Description"], "Насос ЦНС-38");
        assert!(
            parse_entity(PAGE.as_bytes(), "Document_РеализацияТоваровУслуг").unwrap_err().contains("not an object of")
        );
    }

    #[test]
    fn register_records_and_tabular_sections_need_no_ref() {
        let body = r#"{"odata.metadata": "http://h/odata/standard.odata/$metadata#AccumulationRegister_ТоварыНаСкладах",
            "value": [{"Номенклатура_Key": "41aa6331-954f-11e3-814b-005056c00008", "ВНаличии": 12}]}"#;
        assert!(parse_collection(body.as_bytes(), "AccumulationRegister_ТоварыНаСкладах").is_ok());
    }
}
