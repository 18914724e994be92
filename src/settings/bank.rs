//! `[bank]`: importing bank statements — the watched folder, the largest
//! upload, and the thresholds of automatic matching.

use std::path::PathBuf;

use dealbridge_connector_bank::matching::MatchRules;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BankSettings {
    /// A folder whose statement files are imported by themselves (moved to
    /// `processed/` or `failed/` beside them). None: no folder is watched.
    pub watch_dir: Option<PathBuf>,
    /// How often the folder is looked at.
    pub watch_poll_ms: u64,
    /// Largest statement `POST /api/v1/statements` accepts (413 above).
    pub max_upload_bytes: usize,
    /// How many days after its invoice a payment is still expected.
    pub match_window_days: i64,
    /// The least score an automatic match needs (docs/connectors/bank.md).
    pub match_min_score: i32,
    /// How far the best invoice must lead the second.
    pub match_min_margin: i32,
    /// Keep the open invoices in memory for imports (read on start, then
    /// only what is written since; about 400 bytes per open invoice).
    /// Off: each import looks its candidates up in the store.
    pub open_invoices_in_memory: bool,
}

impl Default for BankSettings {
    fn default() -> Self {
        let rules = MatchRules::default();
        Self {
            watch_dir: None,
            watch_poll_ms: 2000,
            max_upload_bytes: 64 * 1024 * 1024,
            match_window_days: rules.window_days,
            match_min_score: rules.min_score,
            match_min_margin: rules.min_margin,
            open_invoices_in_memory: true,
        }
    }
}

impl BankSettings {
    /// The matching thresholds these settings give.
    pub fn rules(&self) -> MatchRules {
        MatchRules {
            window_days: self.match_window_days,
            min_score: self.match_min_score,
            min_margin: self.match_min_margin,
            ..MatchRules::default()
        }
    }
}
