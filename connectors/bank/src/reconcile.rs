//! Compares a statement's own figures with its entries and says where they
//! disagree. Disagreement is a warning, not an error: a bank may export only
//! part of a period's documents, and the accountant decides.

use rust_decimal::Decimal;

use crate::statement::{BalancePeriod, Direction, Statement};
use crate::warning::{Warning, WarningCode};

/// Adds `TotalsDisagree` and `BalanceDoesNotAdd` warnings to `statement`.
pub fn check(statement: &mut Statement) {
    let mut warnings = Vec::new();
    for account in &statement.accounts {
        let (mut credited, mut debited) = (Decimal::ZERO, Decimal::ZERO);
        for e in &statement.entries {
            match e.direction {
                Direction::Credit if e.account.as_deref() == Some(&account.number) => credited += e.amount,
                Direction::Debit if e.account.as_deref() == Some(&account.number) => debited += e.amount,
                Direction::BetweenOwnAccounts if e.payee.account == account.number => credited += e.amount,
                Direction::BetweenOwnAccounts if e.payer.account == account.number => debited += e.amount,
                _ => {}
            }
        }
        // Banks sometimes repeat a period verbatim; count each once.
        let mut periods: Vec<&BalancePeriod> = Vec::new();
        for p in &account.balances {
            if !periods.iter().any(|q| same_figures(p, q)) {
                periods.push(p);
            }
        }
        for p in &periods {
            if let (Some(o), Some(c), Some(d), Some(cl)) = (p.opening, p.credited, p.debited, p.closing)
                && o + c - d != cl
            {
                warnings.push(Warning::new(
                    WarningCode::BalanceDoesNotAdd,
                    Some(p.location.clone()),
                    format!(
                        "account {}: opening {o} + credited {c} − debited {d} = {} but the closing balance is {cl}",
                        account.number,
                        o + c - d
                    ),
                ));
            }
        }
        let stated = |f: fn(&BalancePeriod) -> Option<Decimal>| -> Option<Decimal> {
            let values: Vec<Decimal> = periods.iter().filter_map(|p| f(p)).collect();
            (!values.is_empty()).then(|| values.iter().sum())
        };
        let mut compared = false;
        for (label, stated, documents) in
            [("credited", stated(|p| p.credited), credited), ("debited", stated(|p| p.debited), debited)]
        {
            let Some(stated) = stated else { continue };
            compared = true;
            if stated != documents {
                warnings.push(Warning::new(
                    WarningCode::TotalsDisagree,
                    None,
                    format!(
                        "account {}: the statement says {stated} {label} in total, its documents add up to {documents} \
                         (difference {}); the file may hold only part of the period's documents",
                        account.number,
                        stated - documents
                    ),
                ));
            }
        }
        // camt.053 and MT940 state balances but rarely the turnover: check
        // opening + entries = closing instead.
        if !compared
            && let (Some(first), Some(last)) = (periods.first(), periods.last())
            && let (Some(opening), Some(closing)) = (first.opening, last.closing)
            && opening + credited - debited != closing
        {
            warnings.push(Warning::new(
                WarningCode::TotalsDisagree,
                None,
                format!(
                    "account {}: opening balance {opening} + entries credited {credited} − debited {debited} = {} \
                     but the closing balance is {closing}",
                    account.number,
                    opening + credited - debited
                ),
            ));
        }
    }
    statement.warnings.extend(warnings);
}

fn same_figures(a: &BalancePeriod, b: &BalancePeriod) -> bool {
    (a.from, a.to, a.opening, a.credited, a.debited, a.closing)
        == (b.from, b.to, b.opening, b.credited, b.debited, b.closing)
}
