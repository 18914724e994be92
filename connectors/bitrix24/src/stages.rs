//! The portal's pipelines and stages, read from `crm.category.list` and
//! `crm.status.list` (`DEAL_STAGE` for pipeline 0, `DEAL_STAGE_<n>` for the
//! others) and cached.
//!
//! Stage codes are never assembled from a pipeline id and a name: Bitrix24
//! cuts codes at 21 characters (`C10:PREPAYMENT_INVOIC`), and custom stages
//! get random codes (`C9:UC_KN8KFI`). So mapping files may name a stage
//! by its code or by its name as the portal shows it ("Согласование"):
//! fetched deals carry `STAGE_NAME` and `CATEGORY_NAME` next to
//! `STAGE_ID` and `CATEGORY_ID`, and a stage the hub writes is looked up
//! by name when it is not a code. Names are unique only within a pipeline.

use std::time::{Duration, Instant};

use dealbridge_core::connector::FetchError;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::reader::PortalReader;
use crate::rest::id_text;

/// How long a read catalogue is trusted.
const FRESH: Duration = Duration::from_secs(600);
/// A stage the catalogue does not know makes it re-read, at most this often.
const REREAD_AFTER: Duration = Duration::from_secs(30);

/// One stage of one pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub category: String,
    pub category_name: String,
    pub code: String,
    pub name: String,
}

/// Every stage of every deal pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    pub stages: Vec<Stage>,
}

/// Whether a text is written like a stage code (`NEW`, `C1:UC_APPROVAL`)
/// rather than a stage name.
pub fn looks_like_code(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b':')
}

impl Catalogue {
    /// The stage with this code.
    pub fn by_code(&self, code: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.code == code)
    }

    /// The code of a stage given by code or by name, in `category` when
    /// known (names repeat across pipelines: every one has a «Новая»).
    pub fn code_for(&self, category: Option<&str>, stage: &str) -> Result<String, String> {
        let in_category = |s: &&Stage| category.is_none_or(|c| s.category == c);
        if let Some(s) = self.stages.iter().filter(in_category).find(|s| s.code == stage) {
            return Ok(s.code.clone());
        }
        let wanted = stage.trim().to_lowercase();
        let named: Vec<&Stage> =
            self.stages.iter().filter(in_category).filter(|s| s.name.trim().to_lowercase() == wanted).collect();
        match named.as_slice() {
            [one] => Ok(one.code.clone()),
            [] => Err(match category {
                Some(c) => format!("pipeline {c} has no stage with the code or name `{stage}`"),
                None => format!("no pipeline has a stage with the code or name `{stage}`"),
            }),
            several => Err(format!(
                "stage name `{stage}` is in several pipelines ({}); write its code",
                several.iter().map(|s| s.category.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// The catalogue, read when first needed and again when stale or when a
/// stage turns up that it does not know.
#[derive(Default)]
pub struct StageCatalogue {
    cached: Mutex<Option<(Instant, Catalogue)>>,
}

impl StageCatalogue {
    /// The catalogue, read now if it is missing or stale, or (at most every
    /// 30 s) if `must_know` is a stage code it lacks.
    pub async fn get(&self, reader: &PortalReader, must_know: Option<&str>) -> Result<Catalogue, FetchError> {
        let mut cached = self.cached.lock().await;
        let stale = match &*cached {
            None => true,
            Some((at, catalogue)) => {
                at.elapsed() > FRESH
                    || must_know.is_some_and(|code| catalogue.by_code(code).is_none() && at.elapsed() > REREAD_AFTER)
            }
        };
        if stale {
            *cached = Some((Instant::now(), read(reader).await?));
        }
        Ok(cached.as_ref().map(|(_, c)| c.clone()).unwrap_or_default())
    }
}

async fn read(reader: &PortalReader) -> Result<Catalogue, FetchError> {
    let categories = reader.returned(reader.admitted().await?.deal_categories().await);
    let categories = categories.map_err(|e| reader.fetch_error(e))?;
    let mut stages = Vec::new();
    for (category, category_name) in categories {
        let entity = if category == "0" { "DEAL_STAGE".to_owned() } else { format!("DEAL_STAGE_{category}") };
        let rows = reader.returned(reader.admitted().await?.status_list(&entity).await);
        let rows = rows.map_err(|e| reader.fetch_error(e))?;
        for row in rows {
            let (Some(code), Some(name)) = (row.get("STATUS_ID").and_then(id_text), row.get("NAME")) else { continue };
            let name = name.as_str().map(str::to_owned).unwrap_or_else(|| Value::to_string(name));
            stages.push(Stage { category: category.clone(), category_name: category_name.clone(), code, name });
        }
    }
    Ok(Catalogue { stages })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(category: &str, code: &str, name: &str) -> Stage {
        Stage { category: category.into(), category_name: format!("P{category}"), code: code.into(), name: name.into() }
    }

    #[test]
    fn stages_resolve_by_code_or_by_name_within_a_pipeline() {
        let c = Catalogue {
            stages: vec![
                stage("0", "NEW", "Новая"),
                stage("0", "UC_EVALUATE", "Оценить"),
                stage("1", "C1:NEW", "Новая"),
                stage("1", "C1:UC_KN8KFI", "Согласование"),
                stage("10", "C10:PREPAYMENT_INVOIC", "Счёт на предоплату"),
            ],
        };
        assert_eq!(c.code_for(None, "C1:UC_KN8KFI").unwrap(), "C1:UC_KN8KFI");
        assert_eq!(c.code_for(None, "согласование").unwrap(), "C1:UC_KN8KFI");
        assert_eq!(c.code_for(Some("1"), "Новая").unwrap(), "C1:NEW");
        assert_eq!(c.code_for(Some("0"), "Новая").unwrap(), "NEW");
        assert_eq!(c.code_for(None, "Счёт на предоплату").unwrap(), "C10:PREPAYMENT_INVOIC", "never assembled");
        assert!(c.code_for(None, "Новая").unwrap_err().contains("several pipelines"));
        assert!(c.code_for(Some("0"), "Согласование").is_err());
        assert!(looks_like_code("C1:UC_APPROVAL") && looks_like_code("NEW"));
        assert!(!looks_like_code("Согласование") && !looks_like_code("In work"));
    }
}
