//! ISO 20022 camt.053 (BankToCustomerStatement), versions 001.02 to 001.08
//! and later ones that keep the same element names, read as a stream of XML
//! events with quick-xml: a large file is never held as a tree.
//!
//! Elements are recognised by local name inside the camt.053 namespace of
//! the root; elements of other namespaces (supplementary data) are skipped.
//! Differences between versions that matter here: `Sts` is text up to .04
//! and `Sts/Cd` from .08; parties are `Dbtr/Nm` up to .04 and `Dbtr/Pty/Nm`
//! from .08; dates are `Dt` or `DtTm` everywhere.

mod entry;

use std::io::BufRead;

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use rust_decimal::Decimal;

use self::entry::{EntryDraft, StatementDraft};
use crate::attributes::Attributes;
use crate::error::StatementError;
use crate::statement::{Format, Statement, TextEncoding};
use crate::warning::{Warning, WarningCode};

const NAMESPACE_PREFIX: &str = "urn:iso:std:iso:20022:tech:xsd:camt.053.";
/// Nesting deeper than any camt.053 schema allows is refused rather than
/// followed (a cheap guard against pathological input).
const MAX_DEPTH: usize = 64;

/// Whether `head` looks like an XML document naming the camt.053 namespace.
pub fn sniff(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = head.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(head.len());
    head[start..].starts_with(b"<") && head.windows(NAMESPACE_PREFIX.len()).any(|w| w == NAMESPACE_PREFIX.as_bytes())
}

/// Parses a whole camt.053 document from `input`.
pub fn parse<R: BufRead>(input: R) -> Result<Statement, StatementError> {
    let mut reader = NsReader::from_reader(input);
    let mut buf = Vec::new();
    let mut parser = Parser::default();
    loop {
        let (ns, event) = match reader.read_resolved_event_into(&mut buf) {
            Ok(pair) => pair,
            Err(e) => return Err(StatementError::at_path(parser.path_text(), None, format!("malformed XML: {e}"))),
        };
        let in_camt = match &ns {
            ResolveResult::Bound(n) => {
                let n: &str = n.as_ref();
                n.starts_with(NAMESPACE_PREFIX) && parser.namespace.as_deref().is_none_or(|own| own == n)
            }
            _ => false,
        };
        let namespace = match &ns {
            ResolveResult::Bound(n) => Some(AsRef::<str>::as_ref(n).to_owned()),
            _ => None,
        };
        match event {
            Event::Start(e) => {
                let name = AsRef::<str>::as_ref(&e.local_name()).to_owned();
                let ccy = attribute(&e, "Ccy");
                parser.start(name, in_camt, namespace, ccy)?;
            }
            Event::Empty(e) => {
                let name = AsRef::<str>::as_ref(&e.local_name()).to_owned();
                let ccy = attribute(&e, "Ccy");
                parser.start(name, in_camt, namespace, ccy)?;
                parser.end()?;
            }
            Event::End(_) => parser.end()?,
            Event::Text(t) => parser.text.push_str(&t.xml10_content()),
            Event::CData(t) => parser.text.push_str(&t.into_inner()),
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    Ok(None) => match r.xml10_content().as_ref() {
                        "amp" => Some('&'),
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "quot" => Some('"'),
                        "apos" => Some('\''),
                        _ => None,
                    },
                    Err(_) => None,
                };
                let c = resolved.ok_or_else(|| {
                    StatementError::at_path(
                        parser.path_text(),
                        None,
                        format!("unknown entity `&{};`", r.xml10_content()),
                    )
                })?;
                parser.text.push(c);
            }
            Event::DocType(_) => {
                return Err(StatementError::at_path(parser.path_text(), None, "a DOCTYPE is not allowed in camt.053"));
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
        buf.clear();
    }
    parser.finish()
}

fn attribute(e: &quick_xml::events::BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| AsRef::<str>::as_ref(&a.key.local_name()) == name)
        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok().map(|v| v.trim().to_owned()))
}

#[derive(Default)]
struct Parser {
    /// Local names from the root down; elements of foreign namespaces are
    /// kept as `None` so no path matches them.
    path: Vec<Option<String>>,
    /// Ordinals of `Stmt` and `Ntry` for error paths.
    statement_no: usize,
    entry_no: usize,
    namespace: Option<String>,
    root_seen: bool,
    text: String,
    /// `Ccy` attribute of the element being read.
    ccy: Option<String>,
    statements: Vec<StatementDraft>,
    current: Option<StatementDraft>,
    entry: Option<EntryDraft>,
    header: Attributes,
    warnings: Vec<Warning>,
}

impl Parser {
    fn path_text(&self) -> String {
        let mut out = String::new();
        for (i, part) in self.path.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            let name = part.as_deref().unwrap_or("?");
            out.push_str(name);
            match name {
                "Stmt" => out.push_str(&format!("[{}]", self.statement_no)),
                "Ntry" => out.push_str(&format!("[{}]", self.entry_no)),
                _ => {}
            }
        }
        out
    }

    fn names(&self) -> Vec<&str> {
        self.path.iter().map(|p| p.as_deref().unwrap_or("?")).collect()
    }

    fn start(
        &mut self,
        name: String,
        in_camt: bool,
        namespace: Option<String>,
        ccy: Option<String>,
    ) -> Result<(), StatementError> {
        if self.path.len() >= MAX_DEPTH {
            return Err(StatementError::at_path(self.path_text(), None, "elements nest deeper than camt.053 allows"));
        }
        if self.path.is_empty() {
            if self.root_seen {
                return Err(StatementError::at_path(name, None, "a second root element"));
            }
            self.root_seen = true;
            if name != "Document" || !in_camt {
                return Err(StatementError::at_path(
                    name,
                    None,
                    format!("the root must be `Document` in a `{NAMESPACE_PREFIX}…` namespace"),
                ));
            }
            self.namespace = namespace;
        }
        self.text.clear();
        self.ccy = ccy;
        let known = in_camt && self.path.iter().all(Option::is_some);
        self.path.push(known.then_some(name));
        let names = self.names();
        match names.as_slice() {
            [.., "BkToCstmrStmt", "Stmt"] => {
                self.statement_no += 1;
                self.current = Some(StatementDraft::new(self.statement_no));
            }
            [.., "Stmt", "Ntry"] => {
                self.entry_no += 1;
                self.entry = Some(EntryDraft::default());
            }
            [.., "Stmt", "Bal"] => {
                if let Some(s) = &mut self.current {
                    s.balance = Some(Default::default());
                }
            }
            [.., "NtryDtls", "TxDtls"] => {
                if let Some(e) = &mut self.entry {
                    e.transactions.push(Default::default());
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), StatementError> {
        let value = self.text.trim().to_owned();
        let path_text = self.path_text();
        let names: Vec<String> = self.names().iter().map(|s| (*s).to_owned()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let ccy = self.ccy.take();
        self.text.clear();
        if names.ends_with(&["GrpHdr", "MsgId"]) || names.ends_with(&["GrpHdr", "CreDtTm"]) {
            self.header.push(names[names.len() - 1], &value);
        } else if names.ends_with(&["Stmt", "Ntry"]) {
            let draft = self.entry.take().unwrap_or_default();
            if let Some(s) = &mut self.current {
                let entries = draft.finish(&path_text, s, &mut self.warnings)?;
                s.entries.extend(entries);
            }
        } else if names.ends_with(&["BkToCstmrStmt", "Stmt"]) {
            if let Some(s) = self.current.take() {
                self.statements.push(s);
            }
        } else if let Some(i) = names.iter().position(|n| *n == "Ntry")
            && let Some(e) = &mut self.entry
        {
            e.set(&names[i + 1..], value, ccy, &path_text)?;
        } else if let Some(i) = names.iter().position(|n| *n == "Stmt")
            && let Some(s) = &mut self.current
        {
            s.set(&names[i + 1..], value, ccy, &path_text)?;
        }
        self.path.pop();
        Ok(())
    }

    fn finish(mut self) -> Result<Statement, StatementError> {
        if !self.root_seen {
            return Err(StatementError::Empty);
        }
        if !self.path.is_empty() {
            return Err(StatementError::at_path(
                self.path_text(),
                None,
                "the document ends before this element is closed",
            ));
        }
        let version = self.namespace.as_deref().and_then(|n| n.strip_prefix(NAMESPACE_PREFIX)).unwrap_or("").to_owned();
        let mut accounts: Vec<crate::statement::Account> = Vec::new();
        let mut entries = Vec::new();
        for s in self.statements {
            if !s.id.is_empty() {
                self.header.push("Stmt/Id", &s.id);
            }
            let (account, mut s_entries) = s.into_parts(&mut self.warnings);
            match accounts.iter_mut().find(|a| a.number == account.number) {
                Some(known) => known.balances.extend(account.balances),
                None => accounts.push(account),
            }
            entries.append(&mut s_entries);
        }
        let mut statement = Statement {
            format: Format::Camt053(version),
            // XML declares its encoding and quick-xml reads UTF-8; camt.053 is UTF-8 by schema.
            encoding: TextEncoding::Utf8,
            header: self.header,
            accounts,
            entries,
            warnings: self.warnings,
        };
        for e in &statement.entries {
            if e.currency.is_empty() {
                continue;
            }
            if let Some(a) = statement.accounts.iter().find(|a| Some(a.number.as_str()) == e.account.as_deref())
                && let Some(ccy) = &a.currency
                && *ccy != e.currency
            {
                statement.warnings.push(Warning::new(
                    WarningCode::CurrencyMismatch,
                    Some(e.location.clone()),
                    format!("entry in {} on account {} kept in {ccy}", e.currency, a.number),
                ));
            }
        }
        crate::reconcile::check(&mut statement);
        Ok(statement)
    }
}

/// Signed amount of a balance: `DBIT` balances are negative.
fn signed(amount: Decimal, credit_debit: &str) -> Decimal {
    if credit_debit == "DBIT" { -amount } else { amount }
}
