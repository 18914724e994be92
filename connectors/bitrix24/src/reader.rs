//! Reading a portal for the inbound side: the REST client behind the
//! portal's rate budget, and what the reads taught it.
//!
//! Reads spend the same per-portal budget as the dispatcher's writes when
//! both are given one [`TargetGates`] (same rate key: the portal's host).
//! A read waits a little for a token; when the budget is out for longer, or
//! the portal answers `QUERY_LIMIT_EXCEEDED`, the read fails as transient
//! (the event is tried again later) and the portal's gate is paused.
//!
//! Every deal read is remembered for a minute ([`SeenDeals`]): an event
//! received before a read of its deal began is already shown by that read
//! and takes it instead of another `crm.deal.get` (one UI save can send
//! several updates), and the catch-up skips changes already read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dealbridge_core::connector::FetchError;
use dealbridge_core::delivery::{Admittance, FailureClass, RateQuota, TargetGates};
use serde_json::{Map, Value};

use crate::rest::{RestClient, RestError};
use crate::stages::{Catalogue, StageCatalogue};

/// Longest wait for a token before a read gives up for now.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long a read's result may stand in for a later one.
const REMEMBERED: chrono::Duration = chrono::Duration::seconds(60);
/// How long after a `DATE_MODIFY` stamp a read surely shows every change
/// carrying it (whole seconds, and a little clock skew).
pub(crate) const SAME_STAMP: chrono::Duration = chrono::Duration::seconds(2);
/// Most deals remembered.
const REMEMBERED_MAX: usize = 4096;

/// The portal's rate budget as the reads see it.
pub struct ReadBudget {
    pub gates: Arc<TargetGates>,
    pub quota: Option<RateQuota>,
}

impl Default for ReadBudget {
    fn default() -> Self {
        Self { gates: Arc::new(TargetGates::default()), quota: None }
    }
}

/// A deal as read, and when the read began.
#[derive(Debug, Clone)]
pub struct DealRead {
    pub started_at: DateTime<Utc>,
    pub deal: Map<String, Value>,
}

/// Deals read lately, by id.
#[derive(Default)]
struct SeenDeals {
    by_id: HashMap<String, DealRead>,
}

impl SeenDeals {
    fn remember(&mut self, id: &str, read: DealRead) {
        if self.by_id.len() >= REMEMBERED_MAX {
            let cutoff = Utc::now() - REMEMBERED;
            self.by_id.retain(|_, r| r.started_at > cutoff);
            if self.by_id.len() >= REMEMBERED_MAX {
                self.by_id.clear();
            }
        }
        self.by_id.insert(id.to_owned(), read);
    }
}

/// Reads one portal for the inbound side of a connector instance.
pub struct PortalReader {
    client: RestClient,
    budget: ReadBudget,
    rate_key: String,
    seen: Mutex<SeenDeals>,
    stages: StageCatalogue,
}

impl PortalReader {
    pub fn new(client: RestClient, budget: ReadBudget) -> Self {
        let rate_key = format!("bitrix24:{}", client.portal());
        Self { client, budget, rate_key, seen: Mutex::new(SeenDeals::default()), stages: StageCatalogue::default() }
    }

    /// Waits for a token of the portal's budget, up to [`PATIENCE`].
    async fn admit(&self) -> Result<(), FetchError> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match self.budget.gates.admit(&self.rate_key, self.budget.quota) {
                Admittance::Go => return Ok(()),
                Admittance::WaitFor(wait) if tokio::time::Instant::now() + wait <= deadline => {
                    tokio::time::sleep(wait).await;
                }
                Admittance::WaitFor(wait) => {
                    return Err(FetchError::Transient(format!(
                        "the portal's request budget is spent for {} s more",
                        wait.as_secs().max(1)
                    )));
                }
            }
        }
    }

    /// Reports a call's end to the portal's gate: a rate limit pauses it,
    /// and a call let through after a pause opens it again.
    pub fn returned<T>(&self, result: Result<T, RestError>) -> Result<T, RestError> {
        if let Err(e) = &result
            && e.class == FailureClass::RateLimited
        {
            let pause = e.retry_after.unwrap_or(Duration::from_secs(2));
            self.budget.gates.pause(&self.rate_key, self.budget.quota, pause);
        }
        self.budget.gates.settled(&self.rate_key, self.budget.quota);
        result
    }

    /// A failed read: everything but a permanent failure is worth trying
    /// again later.
    fn failed(&self, e: RestError) -> FetchError {
        match e.class {
            FailureClass::Permanent => FetchError::Permanent(e.to_string()),
            _ => FetchError::Transient(e.to_string()),
        }
    }

    /// The client, once a token of the budget is taken for one call; hand
    /// the call's result to [`Self::returned`].
    pub async fn admitted(&self) -> Result<&RestClient, FetchError> {
        self.admit().await?;
        Ok(&self.client)
    }

    /// `crm.deal.get`; `Ok(None)` when the portal has no such deal.
    pub async fn deal(&self, id: &str) -> Result<Option<DealRead>, FetchError> {
        let started_at = Utc::now();
        match self.returned(self.admitted().await?.deal_get(id).await) {
            Ok(deal) => {
                let read = DealRead { started_at, deal };
                self.seen.lock().expect("seen deals").remember(id, read.clone());
                Ok(Some(read))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// The last read of a deal if it began after `after`.
    pub fn read_since(&self, id: &str, after: DateTime<Utc>) -> Option<DealRead> {
        let seen = self.seen.lock().expect("seen deals");
        seen.by_id.get(id).filter(|r| r.started_at > after).cloned()
    }

    /// Whether the last read of a deal showed this `DATE_MODIFY` and began
    /// late enough to show every change stamped with it: the stamp has
    /// whole seconds, and two changes within one second share it.
    pub fn has_read_version(&self, id: &str, date_modify: &str) -> bool {
        let seen = self.seen.lock().expect("seen deals");
        let Some(read) = seen.by_id.get(id) else { return false };
        let stamp = chrono::DateTime::parse_from_rfc3339(date_modify).map(|t| t.with_timezone(&Utc));
        read.deal.get("DATE_MODIFY").and_then(Value::as_str) == Some(date_modify)
            && stamp.is_ok_and(|t| read.started_at >= t + SAME_STAMP)
    }

    /// The pipeline a deal was in when last read.
    pub fn category_of(&self, id: &str) -> Option<String> {
        let seen = self.seen.lock().expect("seen deals");
        seen.by_id.get(id).and_then(|r| r.deal.get("CATEGORY_ID")).and_then(crate::rest::id_text)
    }

    /// The portal's stages (see [`StageCatalogue::get`]).
    pub async fn stages(&self, must_know: Option<&str>) -> Result<Catalogue, FetchError> {
        self.stages.get(self, must_know).await
    }

    /// Converts a failed call's error (for callers of [`Self::admitted`]).
    pub fn fetch_error(&self, e: RestError) -> FetchError {
        self.failed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_reads_stand_in_only_for_earlier_events() {
        let url = crate::WebhookUrl::parse("http://127.0.0.1:9/rest/1/x/").unwrap();
        let client = RestClient::new(url, Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        let reader = PortalReader::new(client, ReadBudget::default());
        let t0: DateTime<Utc> = "2026-01-01T07:00:05Z".parse().unwrap();
        let mut deal = Map::new();
        deal.insert("DATE_MODIFY".into(), "2026-01-01T10:00:00+03:00".into());
        deal.insert("CATEGORY_ID".into(), "1".into());
        reader.seen.lock().unwrap().remember("5", DealRead { started_at: t0, deal });
        assert!(reader.read_since("5", t0 - chrono::Duration::seconds(1)).is_some(), "event before the read");
        assert!(reader.read_since("5", t0).is_none(), "event not before the read");
        assert!(reader.read_since("6", t0 - chrono::Duration::seconds(1)).is_none());
        assert!(reader.has_read_version("5", "2026-01-01T10:00:00+03:00"));
        reader.seen.lock().unwrap().by_id.get_mut("5").unwrap().started_at = "2026-01-01T07:00:00.5Z".parse().unwrap();
        assert!(!reader.has_read_version("5", "2026-01-01T10:00:00+03:00"), "read within the stamp's second");
        assert!(!reader.has_read_version("5", "2026-01-01T10:00:01+03:00"));
        assert_eq!(reader.category_of("5").as_deref(), Some("1"));
    }
}
