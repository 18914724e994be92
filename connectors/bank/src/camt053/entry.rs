//! What is collected inside one `Stmt` and one `Ntry` while the XML streams
//! past, and how it becomes accounts and entries. Paths are relative to the
//! `Stmt` or `Ntry` element.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::signed;
use crate::attributes::Attributes;
use crate::error::StatementError;
use crate::statement::{Account, BalancePeriod, Counterparty, Direction, Entry, Location};
use crate::values::{parse_amount, parse_iso_date};
use crate::warning::{Warning, WarningCode};

#[derive(Default)]
pub(super) struct StatementDraft {
    pub id: String,
    pub ordinal: usize,
    account: String,
    currency: Option<String>,
    owner: String,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    pub balance: Option<BalanceDraft>,
    opening: Option<(Decimal, String)>,
    closing: Option<(Decimal, String)>,
    stated_credited: Option<Decimal>,
    stated_debited: Option<Decimal>,
    pub entries: Vec<Entry>,
}

#[derive(Default)]
pub(super) struct BalanceDraft {
    code: String,
    amount: Option<(Decimal, String)>,
    credit_debit: String,
}

fn amount_at(value: &str, path: &str) -> Result<Decimal, StatementError> {
    match parse_amount(value) {
        Ok((d, false)) => Ok(d),
        Ok((_, true)) => {
            Err(StatementError::at_path(path, Some("Amt"), format!("`{value}` uses a comma; XML decimals use a dot")))
        }
        Err(p) => Err(StatementError::at_path(path, Some("Amt"), format!("`{value}` {p}"))),
    }
}

fn date_at(value: &str, path: &str, field: &str) -> Result<NaiveDate, StatementError> {
    parse_iso_date(value)
        .ok_or_else(|| StatementError::at_path(path, Some(field), format!("`{value}` is not an ISO date")))
}

impl StatementDraft {
    pub fn new(ordinal: usize) -> Self {
        Self { ordinal, ..Default::default() }
    }

    pub fn set(
        &mut self,
        within: &[&str],
        value: String,
        ccy: Option<String>,
        path: &str,
    ) -> Result<(), StatementError> {
        match within {
            ["Id"] => self.id = value,
            ["Acct", "Id", "IBAN"] | ["Acct", "Id", "Othr", "Id"] => self.account = value,
            ["Acct", "Ccy"] => self.currency = Some(value),
            ["Acct", "Ownr", "Nm"] => self.owner = value,
            ["FrToDt", "FrDtTm"] => self.from = Some(date_at(&value, path, "FrDtTm")?),
            ["FrToDt", "ToDtTm"] => self.to = Some(date_at(&value, path, "ToDtTm")?),
            ["Bal", "Tp", "CdOrPrtry", "Cd"] => {
                if let Some(b) = &mut self.balance {
                    b.code = value;
                }
            }
            ["Bal", "Amt"] => {
                let ccy =
                    ccy.ok_or_else(|| StatementError::at_path(path, Some("Ccy"), "the amount has no currency"))?;
                if let Some(b) = &mut self.balance {
                    b.amount = Some((amount_at(&value, path)?, ccy));
                }
            }
            ["Bal", "CdtDbtInd"] => {
                if let Some(b) = &mut self.balance {
                    b.credit_debit = value;
                }
            }
            ["Bal"] => {
                if let Some(BalanceDraft { code, amount: Some((amount, ccy)), credit_debit }) = self.balance.take() {
                    let balance = (signed(amount, &credit_debit), ccy);
                    // Opening booked (or the previous closing carried over) and closing booked.
                    match code.as_str() {
                        "OPBD" | "PRCD" if self.opening.is_none() => self.opening = Some(balance),
                        "CLBD" => self.closing = Some(balance),
                        _ => {}
                    }
                }
            }
            ["TxsSummry", "TtlCdtNtries", "Sum"] => self.stated_credited = Some(amount_at(&value, path)?),
            ["TxsSummry", "TtlDbtNtries", "Sum"] => self.stated_debited = Some(amount_at(&value, path)?),
            _ => {}
        }
        Ok(())
    }

    /// The statement's account with its one balance period, and its entries.
    pub fn into_parts(self, warnings: &mut Vec<Warning>) -> (Account, Vec<Entry>) {
        let location = Location::XmlPath(format!("Document/BkToCstmrStmt/Stmt[{}]", self.ordinal));
        let currency = self
            .currency
            .clone()
            .or_else(|| self.opening.as_ref().map(|b| b.1.clone()))
            .or_else(|| self.entries.first().map(|e| e.currency.to_string()));
        for (name, balance) in [("opening", &self.opening), ("closing", &self.closing)] {
            if let (Some((_, ccy)), Some(account_ccy)) = (balance, &currency)
                && ccy != account_ccy
            {
                warnings.push(Warning::new(
                    WarningCode::CurrencyMismatch,
                    Some(location.clone()),
                    format!("the {name} balance is in {ccy} but the account is kept in {account_ccy}"),
                ));
            }
        }
        let period = BalancePeriod {
            location,
            from: self.from,
            to: self.to,
            opening: self.opening.map(|b| b.0),
            credited: self.stated_credited,
            debited: self.stated_debited,
            closing: self.closing.map(|b| b.0),
            extra: Attributes::default(),
        };
        (Account { number: self.account, currency, balances: vec![period] }, self.entries)
    }
}

#[derive(Default)]
pub(super) struct EntryDraft {
    amount: Option<(Decimal, String)>,
    credit_debit: String,
    status: String,
    booking: Option<NaiveDate>,
    value: Option<NaiveDate>,
    servicer_ref: String,
    entry_ref: String,
    code: [String; 4],
    info: String,
    pub transactions: Vec<TransactionDraft>,
}

#[derive(Default)]
pub(super) struct TransactionDraft {
    refs: Vec<(String, String)>,
    amount: Option<(Decimal, String)>,
    credit_debit: String,
    debtor: PartyDraft,
    creditor: PartyDraft,
    unstructured: Vec<String>,
    structured: Vec<String>,
    info: String,
}

#[derive(Default)]
struct PartyDraft {
    party: Counterparty,
    id: String,
    scheme: String,
    issuer: String,
}

impl PartyDraft {
    fn set(&mut self, within: &[&str], value: String) {
        // `.08` wraps the party in `Pty`; earlier versions do not.
        let within = match within {
            ["Pty", rest @ ..] => rest,
            other => other,
        };
        match within {
            ["Nm"] => self.party.name = value.into(),
            ["Id", "OrgId" | "PrvtId", "Othr", "Id"] => self.id = value,
            ["Id", "OrgId" | "PrvtId", "Othr", "SchmeNm", "Cd" | "Prtry"] => self.scheme = value,
            ["Id", "OrgId" | "PrvtId", "Othr", "Issr"] => self.issuer = value,
            ["Id", "OrgId" | "PrvtId", "Othr"] => {
                let (id, scheme, issuer) =
                    (std::mem::take(&mut self.id), std::mem::take(&mut self.scheme), std::mem::take(&mut self.issuer));
                // Russian banks put the INN under the scheme `INN` (or the ISO `TXID`).
                if ["INN", "TXID", "ИНН"].iter().any(|s| scheme.eq_ignore_ascii_case(s)) && self.party.inn.is_empty()
                {
                    self.party.inn = id.into();
                } else if !id.is_empty() {
                    let label = if !scheme.is_empty() { scheme } else { issuer };
                    self.party.other_ids.push(if label.is_empty() { id } else { format!("{label}: {id}") });
                }
            }
            ["Id", "OrgId", "AnyBIC" | "BICOrBEI"] => self.party.other_ids.push(format!("BIC: {value}")),
            _ => {}
        }
    }
}

impl EntryDraft {
    pub fn set(
        &mut self,
        within: &[&str],
        value: String,
        ccy: Option<String>,
        path: &str,
    ) -> Result<(), StatementError> {
        match within {
            ["Amt"] => {
                let ccy =
                    ccy.ok_or_else(|| StatementError::at_path(path, Some("Ccy"), "the amount has no currency"))?;
                self.amount = Some((amount_at(&value, path)?, ccy));
            }
            ["CdtDbtInd"] => self.credit_debit = value,
            // Text up to .04, `Sts/Cd` (or `Prtry`) from .08.
            ["Sts"] if !value.is_empty() => self.status = value,
            ["Sts", "Cd" | "Prtry"] => self.status = value,
            ["BookgDt", "Dt" | "DtTm"] => self.booking = Some(date_at(&value, path, "BookgDt")?),
            ["ValDt", "Dt" | "DtTm"] => self.value = Some(date_at(&value, path, "ValDt")?),
            ["AcctSvcrRef"] => self.servicer_ref = value,
            ["NtryRef"] => self.entry_ref = value,
            ["AddtlNtryInf"] => self.info = value,
            ["BkTxCd", "Domn", "Cd"] => self.code[0] = value,
            ["BkTxCd", "Domn", "Fmly", "Cd"] => self.code[1] = value,
            ["BkTxCd", "Domn", "Fmly", "SubFmlyCd"] => self.code[2] = value,
            ["BkTxCd", "Prtry", "Cd"] => self.code[3] = value,
            ["NtryDtls", "TxDtls", rest @ ..] => {
                if let Some(tx) = self.transactions.last_mut() {
                    tx.set(rest, value, ccy, path)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The entry as one `Entry`, or one per transaction of a batch booking
    /// whose transactions carry their own amounts.
    pub fn finish(
        mut self,
        path: &str,
        statement: &StatementDraft,
        warnings: &mut Vec<Warning>,
    ) -> Result<Vec<Entry>, StatementError> {
        let (amount, currency) =
            self.amount.take().ok_or_else(|| StatementError::at_path(path, Some("Amt"), "the entry has no amount"))?;
        let direction = direction(&self.credit_debit, path)?;
        let date = self.booking.or(self.value).ok_or_else(|| {
            StatementError::at_path(path, Some("BookgDt"), "the entry has neither a booking nor a value date")
        })?;
        if !self.status.is_empty() && self.status != "BOOK" {
            warnings.push(Warning::new(
                WarningCode::EntryNotBooked,
                Some(Location::XmlPath(path.to_owned())),
                format!("entry status is {} (not booked); it may still change", self.status),
            ));
        }
        let kind = if self.code[..3].iter().any(|c| !c.is_empty()) {
            self.code[..3].iter().filter(|c| !c.is_empty()).cloned().collect::<Vec<_>>().join("/")
        } else {
            self.code[3].clone()
        };
        let batch = self.transactions.len() > 1 && self.transactions.iter().all(|t| t.amount.is_some());
        let transactions = if self.transactions.is_empty() {
            vec![TransactionDraft::default()]
        } else {
            std::mem::take(&mut self.transactions)
        };
        let mut out = Vec::new();
        for (i, tx) in transactions.into_iter().enumerate() {
            let (amount, currency, direction) = match (&tx.amount, batch) {
                (Some((a, c)), true) => {
                    let d =
                        if tx.credit_debit.is_empty() { direction } else { self::direction(&tx.credit_debit, path)? };
                    (*a, c.clone(), d)
                }
                _ => (amount, currency.clone(), direction),
            };
            let location =
                Location::XmlPath(if batch { format!("{path}/NtryDtls/TxDtls[{}]", i + 1) } else { path.to_owned() });
            out.push(self.entry(tx, location, kind.clone(), date, amount, currency, direction, statement));
            if !batch {
                break;
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &self,
        tx: TransactionDraft,
        location: Location,
        kind: String,
        date: NaiveDate,
        amount: Decimal,
        currency: String,
        direction: Direction,
        statement: &StatementDraft,
    ) -> Entry {
        let (mut payer, mut payee) = (tx.debtor.party, tx.creditor.party);
        let own = if direction == Direction::Credit { &mut payee } else { &mut payer };
        if own.account.is_empty() {
            own.account = statement.account.as_str().into();
        }
        if own.name.is_empty() {
            own.name = statement.owner.as_str().into();
        }
        let mut purpose = tx.unstructured.join(" ");
        for r in &tx.structured {
            if !purpose.is_empty() {
                purpose.push(' ');
            }
            purpose.push_str(r);
        }
        if purpose.is_empty() {
            purpose = if tx.info.is_empty() { self.info.clone() } else { tx.info.clone() };
        }
        let mut references = tx.refs;
        if !self.servicer_ref.is_empty() {
            references.push(("AcctSvcrRef".into(), self.servicer_ref.clone()));
        }
        if !self.entry_ref.is_empty() {
            references.push(("NtryRef".into(), self.entry_ref.clone()));
        }
        let number = [&self.servicer_ref, &self.entry_ref]
            .into_iter()
            .find(|r| !r.is_empty())
            .cloned()
            .or_else(|| references.first().map(|(_, v)| v.clone()))
            .unwrap_or_default();
        Entry {
            location,
            kind: kind.into(),
            number: number.into(),
            date,
            amount,
            currency: currency.into(),
            direction,
            account: (!statement.account.is_empty()).then(|| statement.account.as_str().into()),
            payer,
            payee,
            purpose,
            debited_on: (direction == Direction::Debit).then_some(self.value).flatten(),
            credited_on: (direction == Direction::Credit).then_some(self.value).flatten(),
            references,
            attributes: Attributes::default(),
        }
    }
}

fn direction(code: &str, path: &str) -> Result<Direction, StatementError> {
    match code {
        "CRDT" => Ok(Direction::Credit),
        "DBIT" => Ok(Direction::Debit),
        other => Err(StatementError::at_path(path, Some("CdtDbtInd"), format!("`{other}` is neither CRDT nor DBIT"))),
    }
}

impl TransactionDraft {
    fn set(&mut self, within: &[&str], value: String, ccy: Option<String>, path: &str) -> Result<(), StatementError> {
        match within {
            ["Refs", name] if !value.is_empty() && value != "NOTPROVIDED" => {
                self.refs.push(((*name).to_owned(), value))
            }
            ["Amt"] | ["AmtDtls", "TxAmt", "Amt"] if self.amount.is_none() || within.len() == 1 => {
                if let Some(ccy) = ccy {
                    self.amount = Some((amount_at(&value, path)?, ccy));
                }
            }
            ["CdtDbtInd"] => self.credit_debit = value,
            ["RltdPties", "Dbtr", rest @ ..] => self.debtor.set(rest, value),
            ["RltdPties", "Cdtr", rest @ ..] => self.creditor.set(rest, value),
            ["RltdPties", "DbtrAcct", "Id", "IBAN"] | ["RltdPties", "DbtrAcct", "Id", "Othr", "Id"] => {
                self.debtor.party.account = value.into()
            }
            ["RltdPties", "CdtrAcct", "Id", "IBAN"] | ["RltdPties", "CdtrAcct", "Id", "Othr", "Id"] => {
                self.creditor.party.account = value.into()
            }
            ["RltdAgts", agent @ ("DbtrAgt" | "CdtrAgt"), "FinInstnId", rest @ ..] => {
                let party = if *agent == "DbtrAgt" { &mut self.debtor.party } else { &mut self.creditor.party };
                match rest {
                    ["BIC" | "BICFI"] => party.bank_bic = value.into(),
                    // Russian banks give the BIK as the clearing member id.
                    ["ClrSysMmbId", "MmbId"] if party.bank_bic.is_empty() => party.bank_bic = value.into(),
                    ["Nm"] => party.bank_name = value.into(),
                    _ => {}
                }
            }
            ["RmtInf", "Ustrd"] if !value.is_empty() => self.unstructured.push(value),
            ["RmtInf", "Strd", "CdtrRefInf", "Ref"]
            | ["RmtInf", "Strd", "RfrdDocInf", "Nb"]
            | ["RmtInf", "Strd", "AddtlRmtInf"]
                if !value.is_empty() =>
            {
                self.structured.push(value)
            }
            ["AddtlTxInf"] => self.info = value,
            _ => {}
        }
        Ok(())
    }
}
