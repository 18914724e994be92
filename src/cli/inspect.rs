//! `dealbridge replay` and `dealbridge explain`: looking at real traffic
//! and real deals from the command line, without changing anything.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use dealbridge_core::explain;
use dealbridge_core::mapping::delay::parse_delay;
use dealbridge_core::replay;
use dealbridge_core::runner::EngineRunner;
use dealbridge_core::store::RawEvent;

use super::mappings::load_set;
use crate::app::open_store;
use crate::connectors::ConnectorRegistry;
use crate::settings::Settings;

pub struct ReplayOptions {
    pub since: String,
    pub until: Option<String>,
    pub mappings: Option<PathBuf>,
    pub dry_run: bool,
    pub json: bool,
}

pub async fn replay(
    settings: &Settings,
    options: ReplayOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<ExitCode> {
    if !options.dry_run {
        eprintln!("replay only shows what a mapping set would do; run it with --dry-run (it never writes)");
        return Ok(ExitCode::from(2));
    }
    let now = Utc::now();
    let since = match parse_time(&options.since, now) {
        Ok(t) => t,
        Err(e) => return usage(&format!("--since: {e}")),
    };
    let until = match options.until.as_deref().map(|u| parse_time(u, now)).transpose() {
        Ok(t) => t,
        Err(e) => return usage(&format!("--until: {e}")),
    };
    let dir = options.mappings.unwrap_or_else(|| settings.mappings.dir.clone());
    let set = match load_set(&dir) {
        Ok(set) => set,
        Err(diagnostics) => {
            for d in &diagnostics {
                println!("{d}");
            }
            eprintln!("the mapping set in {} is invalid; nothing replayed", dir.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let connectors = ConnectorRegistry::build(&settings.connectors, &settings.delivery.targets, env)?;
    let store = open_store(settings, env).await?;
    let runner = EngineRunner::new(store.clone());
    let decode = |event: &RawEvent| -> Result<_, String> {
        let connector = connectors
            .get(&event.connector)
            .ok_or_else(|| format!("connector `{}` is not configured", event.connector))?;
        connector.decode(&event.body, &event.headers).map_err(|e| e.to_string())
    };
    let report = replay::replay(store.as_ref(), &runner, &decode, &set, since, until).await.context("replaying")?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", replay::render_text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn explain(
    settings: &Settings,
    deal: uuid::Uuid,
    json: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<ExitCode> {
    let store = open_store(settings, env).await?;
    let Some(trace) = explain::deal_trace(store.as_ref(), deal, Utc::now()).await? else {
        eprintln!("no deal {deal}");
        return Ok(ExitCode::FAILURE);
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&trace)?);
    } else {
        print!("{}", explain::render_text(&trace));
    }
    Ok(ExitCode::SUCCESS)
}

fn usage(message: &str) -> anyhow::Result<ExitCode> {
    eprintln!("{message}");
    Ok(ExitCode::from(2))
}

/// RFC 3339, a date (midnight UTC), or a duration back from `now`.
fn parse_time(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.to_utc());
    }
    if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    let delay = parse_delay(raw)
        .map_err(|_| format!("`{raw}` is not a time: write 2025-03-03T09:00:00+03:00, 2025-03-03 or 24h"))?;
    if delay.working {
        return Err(format!("`{raw}`: working time is not a point in time; write e.g. 7d"));
    }
    let minutes = match delay.unit {
        dealbridge_core::flow::plan::DelayUnit::Minutes => 1,
        dealbridge_core::flow::plan::DelayUnit::Hours => 60,
        dealbridge_core::flow::plan::DelayUnit::Days => 24 * 60,
    };
    Ok(now - chrono::Duration::minutes(i64::from(delay.amount) * minutes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_absolute_dates_or_back_from_now() {
        let now: DateTime<Utc> = "2025-03-10T12:00:00Z".parse().unwrap();
        assert_eq!(parse_time("2025-03-03T09:00:00+03:00", now).unwrap().to_rfc3339(), "2025-03-03T06:00:00+00:00");
        assert_eq!(parse_time("2025-03-03", now).unwrap().to_rfc3339(), "2025-03-03T00:00:00+00:00");
        assert_eq!(parse_time("24h", now).unwrap().to_rfc3339(), "2025-03-09T12:00:00+00:00");
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("2 working days", now).is_err());
    }
}
