//! The 1CClientBankExchange state machine: header → balance sections
//! (`СекцияРасчСчет`) and documents (`СекцияДокумент`) in any order →
//! `КонецФайла`. Any structural or value error rejects the whole file with
//! its line and field.

use std::io::BufRead;

use chrono::NaiveDate;
use dealbridge_core::model::Inn;
use rust_decimal::Decimal;

use super::keys::{DocumentKey, KeyCache, same_key};
use super::shared_text::SharedText;
use crate::attributes::Attributes;
use crate::error::StatementError;
use crate::lines::{LineReader, RawLine};
use crate::statement::{Account, BalancePeriod, Counterparty, Direction, Entry, Format, Location, Statement, Text};
use crate::values::{parse_amount, parse_russian_date, trim};
use crate::warning::{Warning, WarningCode};

const MARKER: &str = "1CClientBankExchange";

enum Section {
    Header,
    Balance(BalanceDraft),
    Document(Box<DocumentDraft>),
    Finished,
}

struct BalanceDraft {
    line: usize,
    account: String,
    period: BalancePeriod,
}

struct DocumentDraft {
    line: usize,
    kind: Option<Text>,
    attributes: Attributes,
    /// Per known key: `(attribute index + 1, line)`; 0 = not seen. The last
    /// occurrence wins.
    slots: [(u32, u32); DocumentKey::SLOTS],
}

impl DocumentDraft {
    fn value(&self, key: DocumentKey) -> Option<(&str, usize)> {
        let (index, line) = self.slots[key.slot()];
        let value = self.attributes.value((index as usize).checked_sub(1)?)?;
        Some((value, line as usize))
    }

    /// Trimmed text of a key, empty when absent.
    fn text(&self, key: DocumentKey) -> Text {
        Text::new(self.trimmed(key))
    }

    fn trimmed(&self, key: DocumentKey) -> &str {
        self.value(key).map(|(v, _)| trim(v)).unwrap_or_default()
    }

    /// The first of `keys` with text, trimmed.
    fn first_trimmed(&self, keys: &[DocumentKey]) -> &str {
        keys.iter().map(|k| self.trimmed(*k)).find(|t| !t.is_empty()).unwrap_or_default()
    }
}

struct StatementBuilder {
    header: Attributes,
    accounts: Vec<Account>,
    entries: Vec<Entry>,
    warnings: Vec<Warning>,
    /// Capacity hints for the next document: the previous one's size.
    last_text_len: usize,
    last_key_count: usize,
    /// The last closed document's draft, reused for the next one.
    spare: Option<Box<DocumentDraft>>,
    shared: SharedText,
    text_after_end: Option<(usize, usize)>,
    keys: KeyCache,
}

/// Parses a whole 1CClientBankExchange file from `input`.
pub fn parse<R: BufRead>(input: R) -> Result<Statement, StatementError> {
    let mut lines = LineReader::new(input);
    let first = loop {
        match lines.next_line()? {
            None => return Err(StatementError::Empty),
            Some((_, l)) if l.trim().is_empty() => continue,
            Some((_, l)) => break l.trim() == MARKER,
        }
    };
    if !first {
        return Err(StatementError::at_line(lines.line_number(), None, format!("the file must start with `{MARKER}`")));
    }
    let mut builder = StatementBuilder {
        header: Attributes::with_capacity(512, 16),
        accounts: Vec::new(),
        entries: Vec::new(),
        warnings: Vec::new(),
        last_text_len: 1024,
        last_key_count: 48,
        spare: None,
        shared: SharedText::default(),
        text_after_end: None,
        keys: KeyCache::default(),
    };
    let mut section = Section::Header;
    let mut decoded = String::new();
    while let Some((n, line)) = lines.next_raw()? {
        // Nine lines in ten are a document's `key=value`: they go straight
        // from the file's bytes into the document.
        if let Section::Document(draft) = &mut section
            && builder.document_pair(draft, n, line)
        {
            continue;
        }
        decoded.clear();
        line.decode_into(&mut decoded);
        let raw = decoded.as_str();
        if raw.trim().is_empty() {
            continue;
        }
        let (key, value) = match raw.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (raw.trim(), None),
        };
        section = builder.step(section, n, key, value)?;
    }
    match section {
        Section::Finished => {}
        Section::Header => {
            return Err(StatementError::Unfinished {
                last_line: lines.line_number(),
                expected: "`КонецФайла`",
                open: None,
            });
        }
        Section::Balance(b) => {
            return Err(StatementError::Unfinished {
                last_line: lines.line_number(),
                expected: "`КонецРасчСчет`",
                open: Some(Location::Line(b.line)),
            });
        }
        Section::Document(d) => {
            return Err(StatementError::Unfinished {
                last_line: lines.line_number(),
                expected: "`КонецДокумента`",
                open: Some(Location::Line(d.line)),
            });
        }
    }
    builder.finish(lines.tally())
}

impl StatementBuilder {
    fn step(&mut self, section: Section, n: usize, key: &str, value: Option<&str>) -> Result<Section, StatementError> {
        let marker_value = value.map(str::trim).unwrap_or("");
        match section {
            Section::Finished => {
                self.text_after_end.get_or_insert((n, 0)).1 += 1;
                Ok(Section::Finished)
            }
            Section::Header => match key {
                "СекцияРасчСчет" if marker_value.is_empty() => Ok(Section::Balance(BalanceDraft::new(n))),
                "СекцияДокумент" => Ok(Section::Document(self.new_document(n, marker_value))),
                "КонецФайла" if value.is_none() => Ok(Section::Finished),
                "КонецРасчСчет" | "КонецДокумента" => {
                    Err(StatementError::at_line(n, None, format!("`{key}` without an open section")))
                }
                _ => {
                    let value = value.ok_or_else(|| not_a_pair(n, key))?;
                    self.header.push(key, value);
                    Ok(Section::Header)
                }
            },
            Section::Balance(mut draft) => match (key, value) {
                ("КонецРасчСчет", None) => {
                    self.close_balance(draft);
                    Ok(Section::Header)
                }
                (_, None) => Err(unclosed(n, key, "`КонецРасчСчет`", draft.line)),
                (_, Some(value)) => {
                    draft.set(n, key, value)?;
                    Ok(Section::Balance(draft))
                }
            },
            Section::Document(mut draft) => match (key, value) {
                ("КонецДокумента", None) => {
                    let entry = self.close_document(&mut draft)?;
                    self.entries.push(entry);
                    self.spare = Some(draft);
                    Ok(Section::Header)
                }
                ("СекцияДокумент" | "СекцияРасчСчет", _) | (_, None) => {
                    Err(unclosed(n, key, "`КонецДокумента`", draft.line))
                }
                (_, Some(value)) => {
                    self.document_line(&mut draft, n, key, value);
                    Ok(Section::Document(draft))
                }
            },
        }
    }

    fn new_document(&mut self, line: usize, kind: &str) -> Box<DocumentDraft> {
        self.keys.next_document();
        // Room for a document a little larger than the last one, so the
        // text is rarely moved while the document is read.
        let attributes = Attributes::with_capacity(self.last_text_len * 9 / 8, self.last_key_count + 4);
        let draft = DocumentDraft {
            line,
            kind: (!kind.is_empty()).then(|| self.shared.get(kind)),
            attributes,
            slots: [(0, 0); DocumentKey::SLOTS],
        };
        match self.spare.take() {
            Some(mut spare) => {
                *spare = draft;
                spare
            }
            None => Box::new(draft),
        }
    }

    /// A `key=value` line of an open document, read from its bytes: the
    /// key through the cache, the value decoded straight into the
    /// document's text. Returns `false` when the line is something else (no
    /// `=`, or a section opening) and needs the general path.
    fn document_pair(&mut self, draft: &mut DocumentDraft, n: usize, line: RawLine<'_>) -> bool {
        let Self { keys, warnings, .. } = self;
        let position = draft.attributes.len();
        let read = keys.with_document_key(&line, position, |eq, key| {
            if key.opens_section {
                return false;
            }
            let value = eq + 1..line.bytes().len();
            if draft.attributes.push_with(&key.stored, |text| line.decode_range_into(value, text)) {
                record_known_key(draft, warnings, n, key.text(), key.key);
            }
            true
        });
        read.unwrap_or(false)
    }

    fn document_line(&mut self, draft: &mut DocumentDraft, n: usize, key: &str, value: &str) {
        if draft.attributes.push(key, value) {
            record_known_key(draft, &mut self.warnings, n, key, DocumentKey::from_key(key));
        }
    }

    fn close_balance(&mut self, draft: BalanceDraft) {
        let account = match self.accounts.iter_mut().find(|a| a.number == draft.account) {
            Some(a) => a,
            None => {
                self.accounts.push(Account {
                    number: draft.account.clone(),
                    currency: Some("RUB".into()),
                    balances: vec![],
                });
                self.accounts.last_mut().expect("just pushed")
            }
        };
        account.balances.push(draft.period);
    }

    fn close_document(&mut self, draft: &mut DocumentDraft) -> Result<Entry, StatementError> {
        use DocumentKey as K;
        self.last_text_len = draft.attributes.text_len();
        self.last_key_count = draft.attributes.len();
        let (amount_text, amount_line) =
            draft.value(K::Amount).ok_or_else(|| missing(draft.line, "Сумма", "the document has no amount"))?;
        let (amount, comma) = parse_amount(amount_text).map_err(|p| {
            StatementError::at_line(amount_line, Some("Сумма"), format!("`{}` {p}", amount_text.trim()))
        })?;
        if comma {
            self.warnings.push(Warning::at_line(
                WarningCode::CommaDecimalSeparator,
                amount_line,
                "amount written with a comma",
            ));
        }
        let date = required_date(draft, K::Date)?;
        let debited_on = optional_date(draft, K::DebitedOn)?;
        let credited_on = optional_date(draft, K::CreditedOn)?;
        let number = draft.text(K::Number);
        if number.is_empty() {
            self.warnings.push(Warning::at_line(
                WarningCode::DocumentNumberMissing,
                draft.line,
                "the document has no number (`Номер`)",
            ));
        }
        let kind = match draft.kind.take() {
            Some(kind) => kind,
            None => {
                let declared: Vec<&str> =
                    self.header.iter().filter(|(k, _)| same_key(k, "Документ")).map(|(_, v)| v.trim()).collect();
                let kind = if declared.len() == 1 { Text::from(declared[0]) } else { Text::default() };
                self.warnings.push(Warning::at_line(
                    WarningCode::DocumentTypeMissing,
                    draft.line,
                    if kind.is_empty() {
                        "`СекцияДокумент` names no document type".to_owned()
                    } else {
                        format!("`СекцияДокумент` names no document type; taken from the header: «{kind}»")
                    },
                ));
                kind
            }
        };
        let payer = Counterparty {
            name: self.shared.get(draft.first_trimmed(&[K::PayerName1, K::Payer])),
            inn: self.checked_inn(draft, K::PayerInn, "ПлательщикИНН"),
            kpp: draft.text(K::PayerKpp),
            account: Text::new(draft.first_trimmed(&[K::PayerAccount, K::PayerSettlementAccount])),
            bank_bic: draft.text(K::PayerBic),
            bank_name: self.shared.get(draft.trimmed(K::PayerBank1)),
            correspondent_account: draft.text(K::PayerCorrespondentAccount),
            other_ids: Vec::new(),
        };
        let payee = Counterparty {
            name: self.shared.get(draft.first_trimmed(&[K::PayeeName1, K::Payee])),
            inn: self.checked_inn(draft, K::PayeeInn, "ПолучательИНН"),
            kpp: draft.text(K::PayeeKpp),
            account: Text::new(draft.first_trimmed(&[K::PayeeAccount, K::PayeeSettlementAccount])),
            bank_bic: draft.text(K::PayeeBic),
            bank_name: self.shared.get(draft.trimmed(K::PayeeBank1)),
            correspondent_account: draft.text(K::PayeeCorrespondentAccount),
            other_ids: Vec::new(),
        };
        let mut purpose = draft.trimmed(K::Purpose).to_owned();
        if purpose.is_empty() {
            let lines = [K::Purpose1, K::Purpose2, K::Purpose3, K::Purpose4, K::Purpose5, K::Purpose6];
            let parts = lines.iter().filter_map(|k| draft.value(*k).map(|(v, _)| v.trim())).filter(|t| !t.is_empty());
            purpose = parts.collect::<Vec<_>>().join(" ");
        }
        Ok(Entry {
            location: Location::Line(draft.line),
            kind,
            number,
            date,
            amount,
            currency: Text::new_static("RUB"),
            direction: Direction::Unknown,
            account: None,
            payer,
            payee,
            purpose,
            debited_on,
            credited_on,
            references: Vec::new(),
            attributes: std::mem::take(&mut draft.attributes),
        })
    }

    /// The INN as written; a wrong one is a warning, never a rejection.
    fn checked_inn(&mut self, draft: &DocumentDraft, key: DocumentKey, name: &str) -> Text {
        let Some((value, line)) = draft.value(key) else { return Text::default() };
        let value = trim(value);
        // «0» is the documented way to say "no INN".
        if !value.is_empty() && value != "0" && !Inn::is_valid(value) {
            self.warnings.push(Warning::at_line(WarningCode::InvalidInn, line, invalid_inn_message(name, value)));
        }
        value.into()
    }

    fn finish(mut self, tally: crate::lines::EncodingTally) -> Result<Statement, StatementError> {
        let encoding = tally.encoding();
        if encoding == crate::statement::TextEncoding::Mixed {
            let (minority, first) = if tally.utf8_lines <= tally.windows1251_lines {
                ("UTF-8", tally.first_utf8_line)
            } else {
                ("Windows-1251", tally.first_windows1251_line)
            };
            self.warnings.push(Warning::at_line(
                WarningCode::MixedEncoding,
                first,
                format!(
                    "the file mixes encodings: {} line(s) in UTF-8, {} in Windows-1251; each line was read in its own (first {minority} line here)",
                    tally.utf8_lines, tally.windows1251_lines
                ),
            ));
        }
        if let Some(declared) =
            self.header.iter().find(|(k, _)| same_key(k, "Кодировка")).map(|(_, v)| v.trim().to_owned())
        {
            let says_1251 =
                ["windows", "windows-1251", "cp1251", "1251"].iter().any(|d| declared.eq_ignore_ascii_case(d));
            let says_utf8 = ["utf-8", "utf8"].iter().any(|d| declared.eq_ignore_ascii_case(d));
            let differs = match encoding {
                crate::statement::TextEncoding::Utf8 => !says_utf8,
                crate::statement::TextEncoding::Windows1251 => !says_1251,
                _ => false,
            };
            if differs {
                self.warnings.push(Warning::new(
                    WarningCode::DeclaredEncodingDiffers,
                    None,
                    format!("`Кодировка={declared}` but the text is {encoding}; read as {encoding}"),
                ));
            }
        }
        if let Some((first, count)) = self.text_after_end {
            self.warnings.push(Warning::at_line(
                WarningCode::TextAfterEnd,
                first,
                format!("{count} line(s) after `КонецФайла` were ignored"),
            ));
        }
        // Header accounts first (the order the bank lists them), then any
        // account that only a balance section names.
        let mut accounts: Vec<Account> = Vec::new();
        for number in self.header.iter().filter(|(k, _)| same_key(k, "РасчСчет")).map(|(_, v)| v.trim()) {
            if !number.is_empty() && !accounts.iter().any(|a| a.number == number) {
                let balances =
                    self.accounts.iter().find(|a| a.number == number).map(|a| a.balances.clone()).unwrap_or_default();
                accounts.push(Account { number: number.to_owned(), currency: Some("RUB".into()), balances });
            }
        }
        for account in self.accounts {
            if !account.number.is_empty() && !accounts.iter().any(|a| a.number == account.number) {
                accounts.push(account);
            }
        }
        let version = self
            .header
            .iter()
            .find(|(k, _)| same_key(k, "ВерсияФормата"))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default();
        let mut statement = Statement {
            format: Format::ClientBankExchange(version),
            encoding,
            header: self.header,
            accounts,
            entries: self.entries,
            warnings: self.warnings,
        };
        super::direction::assign(&mut statement);
        crate::reconcile::check(&mut statement);
        Ok(statement)
    }
}

/// Points the key's slot at the pair just pushed (the last occurrence
/// wins), warning when it repeats with another value.
fn record_known_key(
    draft: &mut DocumentDraft,
    warnings: &mut Vec<Warning>,
    n: usize,
    key: &str,
    known: Option<DocumentKey>,
) {
    let Some(known) = known else { return };
    let pushed = draft.attributes.len();
    let slot = draft.slots[known.slot()];
    if slot.0 != 0
        && let (Some(previous), Some(value)) =
            (draft.attributes.value(slot.0 as usize - 1), draft.attributes.value(pushed - 1))
        && previous.trim() != value.trim()
    {
        warnings.push(Warning::at_line(
            WarningCode::RepeatedKey,
            n,
            format!("`{key}` repeats in the document at line {} with another value; the last one is used", draft.line),
        ));
    }
    draft.slots[known.slot()] = (pushed as u32, n as u32);
}

impl BalanceDraft {
    fn new(line: usize) -> Self {
        Self {
            line,
            account: String::new(),
            period: BalancePeriod {
                location: Location::Line(line),
                from: None,
                to: None,
                opening: None,
                credited: None,
                debited: None,
                closing: None,
                extra: Attributes::default(),
            },
        }
    }

    fn set(&mut self, n: usize, key: &str, value: &str) -> Result<(), StatementError> {
        let p = &mut self.period;
        let amount = |field: &str| -> Result<Option<Decimal>, StatementError> {
            let v = value.trim();
            if v.is_empty() {
                return Ok(None);
            }
            // Balances may be negative (an overdraft), unlike document amounts.
            let (negative, digits) = match v.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, v),
            };
            parse_amount(digits)
                .map(|(d, _)| Some(if negative { -d } else { d }))
                .map_err(|e| StatementError::at_line(n, Some(field), format!("`{v}` {e}")))
        };
        let date = |field: &str| -> Result<Option<NaiveDate>, StatementError> {
            let v = value.trim();
            if v.is_empty() {
                return Ok(None);
            }
            parse_russian_date(v).map(Some).ok_or_else(|| bad_date(n, field, v))
        };
        for (name, slot) in [
            ("НачальныйОстаток", &mut p.opening),
            ("ВсегоПоступило", &mut p.credited),
            ("ВсегоСписано", &mut p.debited),
            ("КонечныйОстаток", &mut p.closing),
        ] {
            if same_key(key, name) {
                *slot = amount(name)?;
                return Ok(());
            }
        }
        if same_key(key, "ДатаНачала") {
            p.from = date("ДатаНачала")?;
        } else if same_key(key, "ДатаКонца") {
            p.to = date("ДатаКонца")?;
        } else if same_key(key, "РасчСчет") {
            self.account = value.trim().to_owned();
        } else {
            p.extra.push(key, value);
        }
        Ok(())
    }
}

fn required_date(draft: &DocumentDraft, key: DocumentKey) -> Result<NaiveDate, StatementError> {
    let (text, line) = draft.value(key).ok_or_else(|| missing(draft.line, key.name(), "the document has no date"))?;
    parse_russian_date(text).ok_or_else(|| bad_date(line, key.name(), text.trim()))
}

fn optional_date(draft: &DocumentDraft, key: DocumentKey) -> Result<Option<NaiveDate>, StatementError> {
    match draft.value(key) {
        None => Ok(None),
        Some((text, _)) if text.trim().is_empty() => Ok(None),
        Some((text, line)) => parse_russian_date(text).map(Some).ok_or_else(|| bad_date(line, key.name(), text.trim())),
    }
}

/// `{name} `{value}` fails its length or check digits`, put together
/// without `format!`: the bench statement has two per document.
fn invalid_inn_message(name: &str, value: &str) -> String {
    const TAIL: &str = "` fails its length or check digits";
    let mut message = String::with_capacity(name.len() + value.len() + 2 + TAIL.len());
    for part in [name, " `", value, TAIL] {
        message.push_str(part);
    }
    message
}

fn bad_date(line: usize, field: &str, text: &str) -> StatementError {
    StatementError::at_line(line, Some(field), format!("`{text}` is not a date (дд.мм.гггг)"))
}

fn missing(line: usize, field: &str, problem: &str) -> StatementError {
    StatementError::at_line(line, Some(field), problem)
}

fn not_a_pair(n: usize, key: &str) -> StatementError {
    let shown: String = key.chars().take(60).collect();
    StatementError::at_line(n, None, format!("`{shown}` is neither `key=value` nor a section marker"))
}

fn unclosed(n: usize, key: &str, expected: &str, opened: usize) -> StatementError {
    let shown: String = key.chars().take(60).collect();
    StatementError::at_line(n, None, format!("`{shown}` before {expected} of the section opened at line {opened}"))
}
