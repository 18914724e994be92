//! SWIFT MT940 customer statements, read line by line: `:20:` reference,
//! `:25:` account, `:60F:`/`:60M:` opening balance, `:61:` statement lines
//! with their `:86:` information, `:62F:`/`:62M:` closing balance; a message
//! ends with a line starting `-`. Bank preambles before the first tag (ING's
//! `0000 01INGBNL2AXXXX00001` / `940 00`) are skipped.

use std::io::BufRead;

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;

use crate::attributes::Attributes;
use crate::error::StatementError;
use crate::lines::LineReader;
use crate::statement::{Account, BalancePeriod, Counterparty, Direction, Entry, Format, Location, Statement};
use crate::values::{parse_amount, parse_yymmdd};

/// Whether `head` looks like MT940: a `:20:` tag and an account or balance tag.
pub fn sniff(head: &[u8]) -> bool {
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    has(b":20:") && (has(b":25:") || has(b":60F:"))
}

#[derive(Default)]
struct Message {
    reference: String,
    account: String,
    currency: String,
    line: usize,
    opening: Option<Decimal>,
    closing: Option<Decimal>,
    info: String,
}

/// Parses a whole MT940 file (one or more messages) from `input`.
pub fn parse<R: BufRead>(input: R) -> Result<Statement, StatementError> {
    let mut lines = LineReader::new(input);
    // (tag, line, value): the tag being collected, continuation lines included.
    let mut pending: Option<(String, usize, String)> = None;
    let mut message: Option<Message> = None;
    let mut accounts: Vec<Account> = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut header = Attributes::default();
    let mut last_tag = String::new();
    let mut any_message = false;
    while let Some((n, line)) = lines.next_line()? {
        let tag = line
            .strip_prefix(':')
            .and_then(|rest| rest.split_once(':'))
            .filter(|(t, _)| (2..=3).contains(&t.len()) && t.as_bytes()[..2].iter().all(u8::is_ascii_digit));
        if let Some((tag, value)) = tag {
            if let Some(p) = pending.take() {
                apply(p, &mut message, &mut entries, &mut last_tag)?;
            }
            if tag == "20" {
                if let Some(m) = message.take() {
                    close(m, &mut accounts);
                }
                message = Some(Message { line: n, ..Default::default() });
                any_message = true;
            } else if message.is_none() {
                return Err(StatementError::at_line(n, Some(tag), "a tag before the first `:20:`"));
            }
            pending = Some((tag.to_owned(), n, value.to_owned()));
        } else if line.starts_with('-') && message.is_some() {
            if let Some(p) = pending.take() {
                apply(p, &mut message, &mut entries, &mut last_tag)?;
            }
            if let Some(m) = message.take() {
                close(m, &mut accounts);
            }
        } else if let Some((_, _, value)) = &mut pending {
            value.push('\n');
            value.push_str(line);
        }
        // Anything else before a message is a bank preamble.
    }
    if let Some(p) = pending.take() {
        apply(p, &mut message, &mut entries, &mut last_tag)?;
    }
    if let Some(m) = message.take() {
        close(m, &mut accounts);
    }
    if !any_message {
        return Err(StatementError::UnknownFormat);
    }
    for a in &accounts {
        header.push(":25:", &a.number);
    }
    let mut statement = Statement {
        format: Format::Mt940,
        encoding: lines.tally().encoding(),
        header,
        accounts,
        entries,
        warnings: Vec::new(),
    };
    crate::reconcile::check(&mut statement);
    Ok(statement)
}

fn close(m: Message, accounts: &mut Vec<Account>) {
    let period = BalancePeriod {
        location: Location::Line(m.line),
        from: None,
        to: None,
        opening: m.opening,
        credited: None,
        debited: None,
        closing: m.closing,
        extra: Attributes::default(),
    };
    match accounts.iter_mut().find(|a| a.number == m.account) {
        Some(a) => a.balances.push(period),
        None => accounts.push(Account {
            number: m.account,
            currency: (!m.currency.is_empty()).then_some(m.currency),
            balances: vec![period],
        }),
    }
}

fn apply(
    (tag, n, value): (String, usize, String),
    message: &mut Option<Message>,
    entries: &mut Vec<Entry>,
    last_tag: &mut String,
) -> Result<(), StatementError> {
    let Some(m) = message.as_mut() else { return Ok(()) };
    match tag.as_str() {
        "20" => m.reference = value.trim().to_owned(),
        "25" => m.account = value.trim().to_owned(),
        "60F" | "60M" => {
            let (amount, currency) = balance(&value, n, &tag)?;
            m.opening = Some(amount);
            m.currency = currency;
        }
        "62F" | "62M" => m.closing = Some(balance(&value, n, &tag)?.0),
        "61" => {
            if m.currency.is_empty() {
                return Err(StatementError::at_line(
                    n,
                    Some("61"),
                    "a statement line before the opening balance `:60F:`",
                ));
            }
            entries.push(statement_line(&value, n, m)?);
        }
        // Information to the account owner belongs to the `:61:` right before it.
        "86" if last_tag == "61" => {
            if let Some(e) = entries.last_mut() {
                e.purpose = value.split('\n').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
            }
        }
        "86" => m.info = value,
        _ => {}
    }
    *last_tag = tag;
    Ok(())
}

/// `C100722EUR0,00`: mark, date, currency, amount.
fn balance(value: &str, n: usize, tag: &str) -> Result<(Decimal, String), StatementError> {
    let v = value.trim();
    let bad = || StatementError::at_line(n, Some(tag), format!("`{v}` is not `C|D yymmdd CCY amount`"));
    let mark = v.get(..1).ok_or_else(bad)?;
    let currency = v.get(7..10).filter(|c| c.bytes().all(|b| b.is_ascii_alphabetic())).ok_or_else(bad)?;
    parse_yymmdd(v.get(1..7).ok_or_else(bad)?).ok_or_else(bad)?;
    let (amount, _) = parse_amount(v.get(10..).ok_or_else(bad)?).map_err(|_| bad())?;
    match mark {
        "C" => Ok((amount, currency.to_owned())),
        "D" => Ok((-amount, currency.to_owned())),
        _ => Err(bad()),
    }
}

/// `100722[0722]D25,03NTRFNONREF[//bankref][\nsupplementary]`.
fn statement_line(value: &str, n: usize, m: &Message) -> Result<Entry, StatementError> {
    let first = value.split('\n').next().unwrap_or("").trim();
    let bad = |what: &str| StatementError::at_line(n, Some("61"), format!("`{first}`: {what}"));
    let value_date = first.get(..6).and_then(parse_yymmdd).ok_or_else(|| bad("no value date (yymmdd)"))?;
    let mut rest = &first[6..];
    let mut booking = None;
    if rest.len() >= 4 && rest.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
        let (month, day) = (rest[..2].parse::<u32>().unwrap_or(0), rest[2..4].parse::<u32>().unwrap_or(0));
        // The entry date has no year: take the value date's, or the next one
        // when the booking falls in January after a December value date.
        let year = if month < value_date.month() && value_date.month() - month > 6 {
            value_date.year() + 1
        } else {
            value_date.year()
        };
        booking = Some(NaiveDate::from_ymd_opt(year, month, day).ok_or_else(|| bad("bad entry date (mmdd)"))?);
        rest = &rest[4..];
    }
    // RC/RD are reversals: a reversed credit takes money out.
    let (direction, after_mark) = if let Some(r) = rest.strip_prefix("RC") {
        (Direction::Debit, r)
    } else if let Some(r) = rest.strip_prefix("RD") {
        (Direction::Credit, r)
    } else if let Some(r) = rest.strip_prefix('C') {
        (Direction::Credit, r)
    } else if let Some(r) = rest.strip_prefix('D') {
        (Direction::Debit, r)
    } else {
        return Err(bad("no debit/credit mark (C, D, RC, RD)"));
    };
    // An optional funds code letter precedes the amount.
    let after_funds = match after_mark.as_bytes().first() {
        Some(b) if b.is_ascii_alphabetic() => &after_mark[1..],
        _ => after_mark,
    };
    let amount_len = after_funds.bytes().take_while(|b| b.is_ascii_digit() || *b == b',').count();
    let (amount, _) = parse_amount(&after_funds[..amount_len]).map_err(|_| bad("no amount"))?;
    let tail = &after_funds[amount_len..];
    let kind = tail.get(..4).unwrap_or(tail).to_owned();
    let refs = tail.get(4..).unwrap_or("");
    let (customer_ref, bank_ref) = refs.split_once("//").unwrap_or((refs, ""));
    let own = Counterparty { account: m.account.as_str().into(), ..Default::default() };
    let (payer, payee) =
        if direction == Direction::Credit { (Counterparty::default(), own) } else { (own, Counterparty::default()) };
    let mut references = Vec::new();
    if !customer_ref.is_empty() && customer_ref != "NONREF" {
        references.push(("customer_reference".to_owned(), customer_ref.to_owned()));
    }
    if !bank_ref.is_empty() {
        references.push(("bank_reference".to_owned(), bank_ref.trim().to_owned()));
    }
    Ok(Entry {
        location: Location::Line(n),
        kind: kind.into(),
        number: references.first().map(|(_, v)| v.as_str().into()).unwrap_or_default(),
        date: booking.unwrap_or(value_date),
        amount,
        currency: m.currency.as_str().into(),
        direction,
        account: Some(m.account.as_str().into()),
        payer,
        payee,
        purpose: String::new(),
        debited_on: (direction == Direction::Debit).then_some(value_date),
        credited_on: (direction == Direction::Credit).then_some(value_date),
        references,
        attributes: Attributes::default(),
    })
}
