//! camt.053 and MT940 cases the two public samples do not cover: other
//! schema versions, party INNs, pending entries, batch bookings, and errors
//! that name the XML path or line.

use std::str::FromStr;

use dealbridge_connector_bank::{Direction, StatementError, WarningCode, camt053, mt940, parse_statement};
use rust_decimal::Decimal;

fn camt(version: &str, entries: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.{version}">
 <BkToCstmrStmt><GrpHdr><MsgId>M1</MsgId><CreDtTm>2024-02-01T10:00:00</CreDtTm></GrpHdr>
  <Stmt><Id>S1</Id><Acct><Id><Othr><Id>40702810900000002851</Id></Othr></Id><Ccy>RUB</Ccy></Acct>
   <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="RUB">100.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2024-02-01</Dt></Dt></Bal>
   <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="RUB">1100.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2024-02-01</Dt></Dt></Bal>
   {entries}
  </Stmt></BkToCstmrStmt></Document>"#
    )
}

const CREDIT_04: &str = r#"<Ntry><Amt Ccy="RUB">1000.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>
  <BookgDt><Dt>2024-02-01</Dt></BookgDt><ValDt><Dt>2024-02-01</Dt></ValDt><AcctSvcrRef>REF-1</AcctSvcrRef>
  <NtryDtls><TxDtls><Refs><EndToEndId>E2E-1</EndToEndId></Refs>
   <RltdPties><Dbtr><Nm>ООО «Ромашка» &amp; Ко</Nm><Id><OrgId><Othr><Id>7707083893</Id><SchmeNm><Prtry>INN</Prtry></SchmeNm></Othr></OrgId></Id></Dbtr>
    <DbtrAcct><Id><Othr><Id>40702810000000077777</Id></Othr></Id></DbtrAcct></RltdPties>
   <RltdAgts><DbtrAgt><FinInstnId><ClrSysMmbId><MmbId>044525225</MmbId></ClrSysMmbId></FinInstnId></DbtrAgt></RltdAgts>
   <RmtInf><Ustrd>Оплата по счету № 123</Ustrd><Ustrd>от 01.02.2024</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>"#;

#[test]
fn camt_versions_03_and_04_read_like_02_and_08() {
    for version in ["02", "03", "04", "08"] {
        let s = parse_statement(camt(version, CREDIT_04).as_bytes()).unwrap();
        assert_eq!(s.format, dealbridge_connector_bank::Format::Camt053(format!("001.{version}")));
        let e = &s.entries[0];
        assert_eq!(e.amount, Decimal::from_str("1000.00").unwrap());
        assert_eq!(e.direction, Direction::Credit);
        assert_eq!(e.payer.name, "ООО «Ромашка» & Ко");
        assert_eq!(e.payer.inn, "7707083893");
        assert_eq!(e.payer.account, "40702810000000077777");
        assert_eq!(e.payer.bank_bic, "044525225");
        assert_eq!(e.payee.account, "40702810900000002851");
        assert_eq!(e.purpose, "Оплата по счету № 123 от 01.02.2024");
        assert_eq!(e.number, "REF-1");
        // 100 + 1000 = 1100: the balances agree.
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }
}

#[test]
fn pending_entries_and_batch_bookings() {
    let pending = CREDIT_04.replace("<Sts>BOOK</Sts>", "<Sts><Cd>PDNG</Cd></Sts>");
    let s = camt053::parse(camt("08", &pending).as_bytes()).unwrap();
    assert!(s.warnings.iter().any(|w| w.code == WarningCode::EntryNotBooked));

    let batch = r#"<Ntry><Amt Ccy="RUB">1000.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><BookgDt><Dt>2024-02-01</Dt></BookgDt>
      <NtryDtls><TxDtls><Amt Ccy="RUB">400.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><RmtInf><Ustrd>сч. 1</Ustrd></RmtInf></TxDtls>
      <TxDtls><Amt Ccy="RUB">600.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><RmtInf><Ustrd>сч. 2</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>"#;
    let s = camt053::parse(camt("04", batch).as_bytes()).unwrap();
    assert_eq!(
        s.entries.iter().map(|e| (e.amount.to_string(), e.purpose.as_str())).collect::<Vec<_>>(),
        [("400.00".to_owned(), "сч. 1"), ("600.00".to_owned(), "сч. 2")]
    );
}

#[test]
fn camt_errors_name_the_path_and_field() {
    let no_ccy = camt("08", &CREDIT_04.replace(r#"<Amt Ccy="RUB">1000.00</Amt>"#, "<Amt>1000.00</Amt>"));
    let e = camt053::parse(no_ccy.as_bytes()).unwrap_err().to_string();
    assert_eq!(e, "Document/BkToCstmrStmt/Stmt[1]/Ntry[1]/Amt, field `Ccy`: the amount has no currency");

    let bad_amount = camt("08", &CREDIT_04.replace("1000.00", "1 000"));
    assert!(camt053::parse(bad_amount.as_bytes()).unwrap_err().to_string().contains("Ntry[1]/Amt, field `Amt`"));

    let bad_ind = camt("08", &CREDIT_04.replace("<CdtDbtInd>CRDT", "<CdtDbtInd>PLUS"));
    assert!(camt053::parse(bad_ind.as_bytes()).unwrap_err().to_string().contains("`PLUS` is neither CRDT nor DBIT"));

    let cut = camt("08", CREDIT_04);
    let cut = &cut[..cut.len() - 40];
    assert!(matches!(camt053::parse(cut.as_bytes()), Err(StatementError::Invalid { .. })));

    let other_ns = camt("08", CREDIT_04).replace("camt.053.001.08", "camt.052.001.08");
    assert!(camt053::parse(other_ns.as_bytes()).is_err());
}

#[test]
fn mt940_errors_name_the_line() {
    let good = ":20:REF\n:25:123\n:28C:1\n:60F:C240201RUB100,00\n:61:2402010201C50,NTRFNONREF//B1\n:86:Оплата по сч. 7\n:62F:C240201RUB150,00\n-\n";
    let s = mt940::parse(good.as_bytes()).unwrap();
    assert_eq!(s.entries[0].amount, Decimal::from(50));
    assert_eq!(s.entries[0].purpose, "Оплата по сч. 7");
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let bad = good.replace("C50,", "X50,");
    assert_eq!(
        mt940::parse(bad.as_bytes()).unwrap_err().to_string(),
        "line 5, field `61`: `2402010201X50,NTRFNONREF//B1`: no debit/credit mark (C, D, RC, RD)"
    );
    let no_balance = good.replace(":60F:C240201RUB100,00\n", "");
    assert!(mt940::parse(no_balance.as_bytes()).unwrap_err().to_string().contains("before the opening balance"));
}
