//! Which way each 1C document moves money, seen from the statement's own
//! accounts (header `РасчСчет` and balance sections).
//!
//! The accounts decide first. Only when neither account is the statement's
//! and the statement covers a single account do `ДатаСписано` /
//! `ДатаПоступило` decide (banks anonymise or abbreviate the payer account of
//! their client's own payments, e.g. `12312312312312312`); otherwise the
//! direction stays unknown rather than guessed.

use crate::statement::{Direction, Statement};
use crate::warning::{Warning, WarningCode};

pub fn assign(statement: &mut Statement) {
    let single =
        (statement.accounts.len() == 1).then(|| crate::statement::Text::from(statement.accounts[0].number.as_str()));
    let own: Vec<String> = statement.accounts.iter().map(|a| a.number.clone()).collect();
    let is_own = |n: &str| !n.is_empty() && own.iter().any(|o| o == n);
    let mut warnings = Vec::new();
    for entry in &mut statement.entries {
        let (payer_own, payee_own) = (is_own(&entry.payer.account), is_own(&entry.payee.account));
        let line = entry.location.clone();
        (entry.direction, entry.account) = match (payer_own, payee_own) {
            (false, true) => (Direction::Credit, Some(entry.payee.account.clone())),
            (true, false) => (Direction::Debit, Some(entry.payer.account.clone())),
            (true, true) => {
                warnings.push(Warning::new(
                    WarningCode::BetweenOwnAccounts,
                    Some(line),
                    format!(
                        "{} {} moves money from own account {} to own account {}; counted neither as credit nor debit",
                        entry.amount, entry.currency, entry.payer.account, entry.payee.account
                    ),
                ));
                (Direction::BetweenOwnAccounts, None)
            }
            (false, false) => match (&single, entry.debited_on.is_some(), entry.credited_on.is_some()) {
                (Some(account), true, false) | (Some(account), false, true) => {
                    let (direction, by) = if entry.debited_on.is_some() {
                        (Direction::Debit, "ДатаСписано")
                    } else {
                        (Direction::Credit, "ДатаПоступило")
                    };
                    warnings.push(Warning::new(
                        WarningCode::DirectionFromDates,
                        Some(line),
                        format!(
                            "neither payer account `{}` nor payee account `{}` is the statement's; taken as {} by `{by}`",
                            entry.payer.account,
                            entry.payee.account,
                            if direction == Direction::Debit { "a debit" } else { "a credit" }
                        ),
                    ));
                    (direction, Some(account.clone()))
                }
                _ => {
                    if !own.is_empty() {
                        warnings.push(Warning::new(
                            WarningCode::DirectionUnknown,
                            Some(line),
                            format!(
                                "neither payer account `{}` nor payee account `{}` is the statement's; direction unknown",
                                entry.payer.account, entry.payee.account
                            ),
                        ));
                    }
                    (Direction::Unknown, None)
                }
            },
        };
    }
    if own.is_empty() && !statement.entries.is_empty() {
        warnings.push(Warning::new(
            WarningCode::NoAccounts,
            None,
            format!(
                "the file names no account of its own (no `РасчСчет`), so the direction of its {} document(s) is unknown; \
                 a file written by 1C for the bank (payment orders) looks like this",
                statement.entries.len()
            ),
        ));
    }
    statement.warnings.extend(warnings);
}
