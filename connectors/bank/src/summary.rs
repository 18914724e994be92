//! What a statement holds at a glance — the dry-run answer an accountant
//! reads before importing: format, encoding, accounts, document counts,
//! credits and debits with their totals, and the warnings.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::statement::{Direction, Format, Statement, TextEncoding};
use crate::warning::{Warning, WarningCode};

/// How many warnings of one kind the summary lists before it only counts.
pub const WARNINGS_SHOWN_PER_KIND: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub format: Format,
    pub encoding: TextEncoding,
    pub accounts: Vec<String>,
    /// The days the statement covers: its balance periods (`ДатаНачала` …
    /// `ДатаКонца`), or else its first and last document date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    pub documents: usize,
    pub credits: Tally,
    pub debits: Tally,
    /// Documents that are neither: transfers between own accounts and
    /// documents whose direction is unknown (see the warnings).
    pub other: Tally,
    pub warnings: Vec<Warning>,
    /// Warnings per kind, including those not listed.
    pub warning_counts: BTreeMap<WarningCode, usize>,
}

/// First and last day, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Period {
    fn of(statement: &Statement) -> Option<Self> {
        let balances = statement.accounts.iter().flat_map(|a| &a.balances);
        let from = balances.clone().filter_map(|b| b.from.or(b.to)).min();
        let to = balances.filter_map(|b| b.to.or(b.from)).max();
        let (from, to) = match (from, to) {
            (Some(from), Some(to)) => (from, to),
            _ => (statement.entries.iter().map(|e| e.date).min()?, statement.entries.iter().map(|e| e.date).max()?),
        };
        Some(Self { from, to })
    }
}

/// A count and a sum. Totals are exact decimals (serialized as strings); a
/// statement with several currencies sums each entry's amount as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub count: usize,
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
}

impl Tally {
    fn add(&mut self, amount: Decimal) {
        self.count += 1;
        self.total += amount;
    }
}

impl Summary {
    pub fn of(statement: &Statement) -> Self {
        let (mut credits, mut debits, mut other) = (Tally::default(), Tally::default(), Tally::default());
        for e in &statement.entries {
            match e.direction {
                Direction::Credit => credits.add(e.amount),
                Direction::Debit => debits.add(e.amount),
                Direction::BetweenOwnAccounts | Direction::Unknown => other.add(e.amount),
            }
        }
        let mut warning_counts: BTreeMap<WarningCode, usize> = BTreeMap::new();
        let mut warnings = Vec::new();
        for w in &statement.warnings {
            let seen = warning_counts.entry(w.code).or_default();
            *seen += 1;
            if *seen <= WARNINGS_SHOWN_PER_KIND {
                warnings.push(w.clone());
            }
        }
        Summary {
            format: statement.format.clone(),
            encoding: statement.encoding,
            accounts: statement.accounts.iter().map(|a| a.number.clone()).collect(),
            period: Period::of(statement),
            documents: statement.entries.len(),
            credits,
            debits,
            other,
            warnings,
            warning_counts,
        }
    }
}

impl std::fmt::Display for Summary {
    /// The plain-text form printed by `dealbridge import-statement --dry-run`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "format:    {}", self.format)?;
        writeln!(f, "encoding:  {}", self.encoding)?;
        writeln!(
            f,
            "accounts:  {}",
            if self.accounts.is_empty() { "(none named)".to_owned() } else { self.accounts.join(", ") }
        )?;
        writeln!(f, "documents: {}", self.documents)?;
        writeln!(f, "credits:   {} totalling {}", self.credits.count, self.credits.total)?;
        writeln!(f, "debits:    {} totalling {}", self.debits.count, self.debits.total)?;
        if self.other.count > 0 {
            writeln!(
                f,
                "other:     {} totalling {} (between own accounts or direction unknown)",
                self.other.count, self.other.total
            )?;
        }
        let total: usize = self.warning_counts.values().sum();
        writeln!(f, "warnings:  {total}")?;
        for w in &self.warnings {
            writeln!(
                f,
                "  - [{}] {w}",
                serde_json::to_value(w.code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
            )?;
        }
        for (code, count) in &self.warning_counts {
            if *count > WARNINGS_SHOWN_PER_KIND {
                let name =
                    serde_json::to_value(code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                writeln!(f, "  … and {} more [{name}]", count - WARNINGS_SHOWN_PER_KIND)?;
            }
        }
        Ok(())
    }
}
