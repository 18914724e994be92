//! Catch-up: Bitrix24 never redelivers an event its handler missed, so
//! every `catch_up_secs` the connector lists the deals modified since its
//! cursor (`crm.deal.list`, `>=DATE_MODIFY`, only `ID` and `DATE_MODIFY`,
//! ordered by `ID`, `>ID` of the last row and `start=-1`: the fast way for
//! large pulls) and hands the hub a synthetic event for each change it has
//! not read yet. Those are stored in the inbox with the delivery key
//! `CATCHUP:<id>:<DATE_MODIFY>` and fetched and mapped like received events.
//!
//! `DATE_MODIFY` has whole seconds, so two changes within one second share
//! a stamp (and a delivery key): a change stamped less than two seconds ago
//! is left for the next pass, when its second is over.
//!
//! The cursor is `<DATE_MODIFY>|<ID>`: the latest modification seen, and
//! where a pass cut short (more than 1,000 changed deals) goes on. The
//! first pass looks back two intervals; the portal's history before that
//! is not pulled.
//!
//! A list by `DATE_MODIFY` cannot show a deal that was deleted. So every
//! `deletion_check_secs` the hub hands over the ids of the deals it knows
//! in this portal ([`Reconciler::vanished`]), and the connector asks the
//! portal which of them it still has: `crm.deal.list` with `{"@ID": […]}`
//! (50 ids a request, only `ID` selected). Each id the portal no longer
//! lists becomes a synthetic deletion (`{"catch_up": "deal", "ID": …,
//! "gone": true}`, delivery key `GONE:<id>`, so one deletion is stored
//! once), recorded like a received `ONCRMDEALDELETE`. The portal lists
//! only the deals the integration user may see: one who cannot see a
//! pipeline makes its deals look deleted.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use dealbridge_core::connector::{FetchError, Reconciled, Reconciler, SyntheticEvent};
use serde_json::{Value, json};

use crate::reader::{PortalReader, SAME_STAMP};
use crate::rest::{PAGE_SIZE, id_text};

/// Most pages (of 50 deals) one pass reads.
const MAX_PAGES: usize = 20;

/// The body of a synthetic event (decoded by the inbound half).
pub(crate) const CATCH_UP_KEY: &str = "catch_up";

/// Most delivery keys a catch-up remembers handing out.
const HANDED_OUT_MAX: usize = 16_384;

pub struct DealCatchUp {
    reader: Arc<PortalReader>,
    every: Duration,
    /// How often the hub asks for deletions; `None`: never.
    pub(crate) deletions_every: Option<Duration>,
    /// Keys already handed out: a change found again before its event was
    /// read is not handed out again (a repeated key costs the inbox a
    /// sequence number, and the processor waits at such gaps).
    handed_out: Mutex<HashSet<String>>,
}

impl DealCatchUp {
    pub fn new(reader: Arc<PortalReader>, every: Duration) -> Self {
        Self { reader, every, deletions_every: None, handed_out: Mutex::new(HashSet::new()) }
    }

    /// True the first time a key is handed out.
    fn first_time(&self, key: &str) -> bool {
        let mut handed_out = self.handed_out.lock().expect("handed-out keys");
        if handed_out.len() >= HANDED_OUT_MAX {
            handed_out.clear();
        }
        handed_out.insert(key.to_owned())
    }
}

/// Whether `a` is a later time than `b` (both as Bitrix24 writes them).
fn later(a: &str, b: &str) -> bool {
    match (chrono::DateTime::parse_from_rfc3339(a), chrono::DateTime::parse_from_rfc3339(b)) {
        (Ok(a), Ok(b)) => a > b,
        _ => a > b,
    }
}

fn parse_cursor(cursor: &str) -> Option<(String, u64)> {
    let (since, after) = cursor.rsplit_once('|')?;
    Some((since.to_owned(), after.parse().ok()?))
}

/// The synthetic event of a deal the portal no longer has.
pub fn vanished_event(id: &str) -> SyntheticEvent {
    let body = json!({ CATCH_UP_KEY: "deal", "ID": id, "gone": true });
    SyntheticEvent { delivery_key: format!("GONE:{id}"), body: body.to_string().into_bytes() }
}

/// The synthetic event of one change.
pub fn synthetic_event(id: &str, date_modify: &str) -> SyntheticEvent {
    let body = json!({ CATCH_UP_KEY: "deal", "ID": id, "DATE_MODIFY": date_modify });
    SyntheticEvent { delivery_key: format!("CATCHUP:{id}:{date_modify}"), body: body.to_string().into_bytes() }
}

#[async_trait]
impl Reconciler for DealCatchUp {
    fn interval(&self) -> Duration {
        self.every
    }

    fn vanished_interval(&self) -> Option<Duration> {
        self.deletions_every
    }

    async fn vanished(&self, known: &[String]) -> Result<Vec<SyntheticEvent>, FetchError> {
        let mut events = Vec::new();
        let numeric: Vec<&String> = known.iter().filter(|id| id.parse::<u64>().is_ok()).collect();
        for chunk in numeric.chunks(PAGE_SIZE) {
            let filter = json!({ "@ID": chunk });
            let client = self.reader.admitted().await?;
            let page = self.reader.returned(client.deal_list(&filter, &["ID"], &json!({ "ID": "ASC" }), -1).await);
            let page = page.map_err(|e| self.reader.fetch_error(e))?;
            let present: HashSet<String> =
                page.items.iter().filter_map(|row| row.get("ID").and_then(id_text)).collect();
            events.extend(chunk.iter().filter(|id| !present.contains(id.as_str())).map(|id| vanished_event(id)));
        }
        Ok(events)
    }

    async fn reconcile(&self, cursor: Option<&str>) -> Result<Reconciled, FetchError> {
        let (since, after_id) = cursor.and_then(parse_cursor).unwrap_or_else(|| {
            let back = chrono::Duration::from_std(self.every * 2).unwrap_or(chrono::Duration::hours(1));
            ((Utc::now() - back).to_rfc3339_opts(chrono::SecondsFormat::Secs, false), 0)
        });
        let (mut last_id, mut latest) = (after_id, since.clone());
        // Changes whose second may not be over yet, for the next pass.
        let open_after = Utc::now() - SAME_STAMP;
        let mut oldest_open: Option<String> = None;
        let mut events = Vec::new();
        let mut complete = false;
        for _ in 0..MAX_PAGES {
            let filter = json!({ ">=DATE_MODIFY": since, ">ID": last_id });
            let order = json!({ "ID": "ASC" });
            let client = self.reader.admitted().await?;
            let page = self.reader.returned(client.deal_list(&filter, &["ID", "DATE_MODIFY"], &order, -1).await);
            let page = page.map_err(|e| self.reader.fetch_error(e))?;
            for row in &page.items {
                let Some(id) = row.get("ID").and_then(id_text) else { continue };
                let modified = row.get("DATE_MODIFY").and_then(Value::as_str).unwrap_or_default().to_owned();
                last_id = id.parse().unwrap_or(last_id);
                let stamp = chrono::DateTime::parse_from_rfc3339(&modified).map(|t| t.with_timezone(&Utc));
                if stamp.is_ok_and(|t| t > open_after) {
                    if oldest_open.as_ref().is_none_or(|o| later(o, &modified)) {
                        oldest_open = Some(modified);
                    }
                    continue;
                }
                if later(&modified, &latest) {
                    latest = modified.clone();
                }
                if !self.reader.has_read_version(&id, &modified) {
                    let event = synthetic_event(&id, &modified);
                    if self.first_time(&event.delivery_key) {
                        events.push(event);
                    }
                }
            }
            if page.items.len() < PAGE_SIZE {
                complete = true;
                break;
            }
        }
        let cursor = match (complete, oldest_open) {
            (true, Some(open)) if later(&latest, &open) => format!("{open}|0"),
            (true, _) => format!("{latest}|0"),
            (false, _) => format!("{since}|{last_id}"),
        };
        Ok(Reconciled { events, cursor: Some(cursor) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_and_times_read_back() {
        assert_eq!(parse_cursor("2026-01-01T10:00:00+03:00|42"), Some(("2026-01-01T10:00:00+03:00".into(), 42)));
        assert_eq!(parse_cursor("garbage"), None);
        assert!(later("2026-01-01T10:00:01+03:00", "2026-01-01T10:00:00+03:00"));
        assert!(later("2026-01-01T08:00:00+00:00", "2026-01-01T10:00:00+03:00"), "compared as instants");
        let e = synthetic_event("7", "2026-01-01T10:00:00+03:00");
        assert_eq!(e.delivery_key, "CATCHUP:7:2026-01-01T10:00:00+03:00");
    }
}
