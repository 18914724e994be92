//! Which portal record an external id names: a deal or a smart-process
//! item.
//!
//! A deal's id is its `ID`. An item's `id` is unique only within its smart
//! process (item 17 of one process and deal 17 are different records), so
//! the hub knows an item by the portal's own code for it, the one `crm`
//! user fields hold: `T<entityTypeId in hex>_<id>` (`T408_17` is item 17
//! of smart process 1032). The fetch step adds that code to every `item`
//! record as `ref`, so an item binding reads `id: ref`, and the outbound
//! half reads it back to address `crm.item.*`.

/// `entityTypeId` of deals in the universal `crm.item.*` methods.
pub const DEAL_ENTITY_TYPE: u32 = 2;

/// The key the fetch step adds to `item` records: the item's code.
pub const ITEM_REF_KEY: &str = "ref";

/// A record the hub addresses on a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortalRecord<'a> {
    Deal(&'a str),
    Item { entity_type_id: u32, id: &'a str },
}

impl<'a> PortalRecord<'a> {
    /// The record an external id names. Anything that is not an item code
    /// is a deal id, as it always was.
    pub fn parse(external_id: &'a str) -> Self {
        let item = external_id.strip_prefix('T').and_then(|rest| rest.split_once('_')).and_then(|(hex, id)| {
            let entity_type_id = u32::from_str_radix(hex, 16).ok()?;
            let numeric = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
            (numeric && entity_type_id != DEAL_ENTITY_TYPE).then_some(PortalRecord::Item { entity_type_id, id })
        });
        item.unwrap_or(PortalRecord::Deal(external_id))
    }

    /// `ENTITY_TYPE` and `ENTITY_ID` of `crm.timeline.comment.add`.
    pub fn timeline(&self) -> (String, &'a str) {
        match *self {
            PortalRecord::Deal(id) => ("deal".into(), id),
            PortalRecord::Item { entity_type_id, id } => (format!("dynamic_{entity_type_id}"), id),
        }
    }

    /// The record as a `crm` user field value (`UF_CRM_TASK` of a task).
    pub fn crm_link(&self) -> String {
        match *self {
            PortalRecord::Deal(id) => format!("D_{id}"),
            PortalRecord::Item { entity_type_id, id } => item_code(entity_type_id, id),
        }
    }
}

/// The code of item `id` of smart process `entity_type_id`: `T408_17`.
pub fn item_code(entity_type_id: u32, id: &str) -> String {
    format!("T{entity_type_id:x}_{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_codes_name_their_smart_process_and_everything_else_is_a_deal() {
        assert_eq!(item_code(1032, "17"), "T408_17");
        assert_eq!(PortalRecord::parse("T408_17"), PortalRecord::Item { entity_type_id: 1032, id: "17" });
        assert_eq!(PortalRecord::parse("Tb1_5"), PortalRecord::Item { entity_type_id: 177, id: "5" });
        assert_eq!(PortalRecord::parse("410"), PortalRecord::Deal("410"));
        assert_eq!(PortalRecord::parse("T408_"), PortalRecord::Deal("T408_"));
        assert_eq!(PortalRecord::parse("Tzz_1"), PortalRecord::Deal("Tzz_1"));
        assert_eq!(PortalRecord::parse("T408_17").timeline(), ("dynamic_1032".to_owned(), "17"));
        assert_eq!(PortalRecord::parse("410").timeline(), ("deal".to_owned(), "410"));
        assert_eq!(PortalRecord::parse("T408_17").crm_link(), "T408_17");
        assert_eq!(PortalRecord::parse("410").crm_link(), "D_410");
    }
}
