//! Catch-up: a notification 1C failed to send (the hub was down, the
//! HTTP service timed out) is never repeated by the platform, so every
//! `catch_up_secs` the connector reads the objects of the configured kinds
//! through OData and hands the hub every version (`Ref_Key` +
//! `DataVersion`) it has not handed out before, as a synthetic
//! notification. Its delivery key is the version's, the same a received
//! notification of that version has, so the inbox stores each version once
//! however it arrived.
//!
//! `DataVersion` is opaque (not ordered), so there is no "changed since"
//! filter: documents are read by date (`Date ge datetime'…'`, the last
//! `catch_up_days`), catalogs whole, a page of 500 at a time (`$top`,
//! `$skip`, ordered so pages do not overlap).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use dealbridge_core::connector::{FetchError, Reconciled, Reconciler, SyntheticEvent};

use crate::kinds::RecordKind;
use crate::notification::{Notification, version_key};
use crate::odata::{ODataClient, PAGE_SIZE, Query, query};

/// Most pages one kind reads in a pass.
const MAX_PAGES: usize = 20;

/// Most keys remembered as handed out.
const HANDED_OUT_MAX: usize = 65_536;

pub struct CatchUp {
    client: ODataClient,
    /// The kinds read, with their entity sets.
    sets: Vec<(RecordKind, String)>,
    every: Duration,
    days: u32,
    handed_out: Mutex<HashSet<String>>,
}

impl CatchUp {
    pub fn new(client: ODataClient, sets: Vec<(RecordKind, String)>, every: Duration, days: u32) -> Self {
        Self { client, sets, every, days, handed_out: Mutex::new(HashSet::new()) }
    }

    fn first_time(&self, key: &str) -> bool {
        let mut handed_out = self.handed_out.lock().expect("handed-out keys");
        if handed_out.len() >= HANDED_OUT_MAX {
            handed_out.clear();
        }
        handed_out.insert(key.to_owned())
    }

    fn query(&self, kind: RecordKind) -> Query {
        if kind.is_document() {
            let since = (Utc::now() - chrono::Duration::days(i64::from(self.days))).naive_utc();
            Query {
                orderby: Some("Date,Ref_Key".into()),
                ..Query::filter(format!("Date ge {}", query::datetime(since)))
            }
        } else {
            Query { orderby: Some("Ref_Key".into()), ..Query::default() }
        }
    }
}

#[async_trait]
impl Reconciler for CatchUp {
    fn interval(&self) -> Duration {
        self.every
    }

    async fn reconcile(&self, _cursor: Option<&str>) -> Result<Reconciled, FetchError> {
        let mut events = Vec::new();
        for (kind, set) in &self.sets {
            let (rows, complete) = self
                .client
                .list_all(set, &self.query(*kind), PAGE_SIZE, MAX_PAGES)
                .await
                .map_err(|e| e.to_fetch_error())?;
            if !complete {
                // The rest waits for the next pass; versions handed out stay out.
                tracing::warn!(set, pages = MAX_PAGES, "1C catch-up read its page limit; the rest follows next pass.");
            }
            for object in rows {
                let (Some(ref_key), Some(version)) = (
                    object.get("Ref_Key").and_then(|v| v.as_str()),
                    object.get("DataVersion").and_then(|v| v.as_str()),
                ) else {
                    continue;
                };
                let key = version_key(*kind, ref_key, version);
                if !self.first_time(&key) {
                    continue;
                }
                let notification = Notification::new(key.clone(), *kind, object);
                debug_assert_eq!(notification.delivery_key(), key);
                events
                    .push(SyntheticEvent { delivery_key: key, body: notification.to_json().to_string().into_bytes() });
            }
        }
        let cursor = Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        Ok(Reconciled { events, cursor: Some(cursor) })
    }
}
