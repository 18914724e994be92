//! The 1CClientBankExchange pitfalls real files have, each with a small
//! inline file: encodings, line ends, blank lines, key variants, odd
//! numbers and amounts, several accounts, other document types, unknown
//! keys, and errors that name the line and field.

use std::str::FromStr;

use dealbridge_connector_bank::{
    Direction, Location, StatementError, Summary, TextEncoding, WarningCode, parse_statement,
};
use rust_decimal::Decimal;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

const HEADER: &str = "1CClientBankExchange\nВерсияФормата=1.03\nКодировка=Windows\nОтправитель=Банк\nДатаНачала=01.02.2024\nДатаКонца=02.02.2024\nРасчСчет=40702810900000002851\n";

fn document(number: &str, amount: &str, payer: &str, payee: &str) -> String {
    format!(
        "СекцияДокумент=Платежное поручение\nНомер={number}\nДата=01.02.2024\nСумма={amount}\nПлательщикСчет={payer}\n\
         ПлательщикИНН=7707083893\nПлательщик1=ООО Покупатель\nПолучательСчет={payee}\nНазначениеПлатежа=Оплата по счету № 12 от 01.02.2024\nКонецДокумента\n"
    )
}

fn text_with(documents: &[String]) -> String {
    let mut s = HEADER.to_owned();
    for doc in documents {
        s.push_str(doc);
    }
    s.push_str("КонецФайла\n");
    s
}

const OWN: &str = "40702810900000002851";
const OTHER: &str = "40702810000000077777";

fn parse(bytes: &[u8]) -> Result<dealbridge_connector_bank::Statement, StatementError> {
    parse_statement(bytes)
}

#[test]
fn windows_1251_and_utf8_are_told_apart_by_content() {
    let text = text_with(&[document("1", "100.00", OTHER, OWN)]);
    let cp1251 = encoding_rs::WINDOWS_1251.encode(&text).0.into_owned();
    let a = parse(&cp1251).unwrap();
    let b = parse(text.as_bytes()).unwrap();
    assert_eq!(a.encoding, TextEncoding::Windows1251);
    assert_eq!(b.encoding, TextEncoding::Utf8);
    assert_eq!(a.entries, b.entries);
    // The header says Windows; UTF-8 content is read as UTF-8 with a warning.
    assert!(b.warnings.iter().any(|w| w.code == WarningCode::DeclaredEncodingDiffers));
    assert!(!a.warnings.iter().any(|w| w.code == WarningCode::DeclaredEncodingDiffers));
    // A UTF-8 BOM is not part of the marker.
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(text.as_bytes());
    assert_eq!(parse(&bom).unwrap().entries.len(), 1);
}

#[test]
fn crlf_lf_mixed_line_ends_and_no_final_newline() {
    let text = text_with(&[document("1", "100.00", OTHER, OWN), document("2", "5", OWN, OTHER)]);
    let crlf = text.replace('\n', "\r\n");
    let mixed: String = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| if i % 2 == 0 { format!("{l}\r\n") } else { format!("{l}\n") })
        .collect();
    let no_final = text.trim_end().to_owned();
    for variant in [&text, &crlf, &mixed, &no_final] {
        let s = parse(variant.as_bytes()).unwrap();
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.entries[0].purpose, "Оплата по счету № 12 от 01.02.2024", "no stray \\r");
    }
}

#[test]
fn blank_lines_between_and_inside_sections_are_skipped() {
    let text = text_with(&[document("1", "100.00", OTHER, OWN)])
        .replace("\nСекцияДокумент", "\n\n\n  \nСекцияДокумент")
        .replace("Дата=", "\nДата=");
    assert_eq!(parse(text.as_bytes()).unwrap().entries.len(), 1);
}

#[test]
fn key_spelling_variants_are_read() {
    let doc = document("1", "100.00", OTHER, OWN).replace(
        "КонецДокумента",
        "ПлательщикКорСчет=30101810400000000225\nПОЛУЧАТЕЛЬКОРСЧЕТ=30101810200000000827\nКонецДокумента",
    );
    let s = parse(text_with(&[doc]).as_bytes()).unwrap();
    assert_eq!(s.entries[0].payer.correspondent_account, "30101810400000000225");
    assert_eq!(s.entries[0].payee.correspondent_account, "30101810200000000827");
    // Kept as written, too.
    assert_eq!(s.entries[0].attributes.get("ПлательщикКорСчет"), Some("30101810400000000225"));
}

#[test]
fn document_numbers_with_letters_and_amounts_without_kopecks() {
    let s = parse(
        text_with(&[
            document("FDC240", "140000", OTHER, OWN),
            document("А-17", "22.9", OTHER, OWN),
            document("3", "0.01", OTHER, OWN),
        ])
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(s.entries.iter().map(|e| e.number.as_str()).collect::<Vec<_>>(), ["FDC240", "А-17", "3"]);
    assert_eq!(s.entries.iter().map(|e| e.amount).collect::<Vec<_>>(), [d("140000"), d("22.9"), d("0.01")]);
    assert_eq!(Summary::of(&s).credits.total, d("140022.91"));
}

#[test]
fn several_accounts_and_daily_balance_sections() {
    let second = "40702810000001002118";
    let mut text = HEADER.replace("РасчСчет=40702810900000002851\n", &format!("РасчСчет={OWN}\nРасчСчет={second}\n"));
    for (day, account, opening, credited, debited, closing) in
        [("01", OWN, "0", "100", "0", "100"), ("02", OWN, "100", "0", "5", "95"), ("01", second, "10", "0", "0", "10")]
    {
        text.push_str(&format!(
            "СекцияРасчСчет\nДатаНачала={day}.02.2024\nДатаКонца={day}.02.2024\nРасчСчет={account}\nНачальныйОстаток={opening}\n\
             ВсегоПоступило={credited}\nВсегоСписано={debited}\nКонечныйОстаток={closing}\nКонецРасчСчет\n"
        ));
    }
    text.push_str(&document("1", "100", OTHER, OWN));
    text.push_str(&document("2", "5", OWN, OTHER));
    text.push_str("КонецФайла");
    let s = parse(text.as_bytes()).unwrap();
    assert_eq!(s.accounts.len(), 2);
    assert_eq!(s.accounts[0].balances.len(), 2);
    assert_eq!(s.accounts[1].balances.len(), 1);
    assert_eq!(s.entries[0].account.as_deref(), Some(OWN));
    // Totals agree: no warning.
    assert!(s.warnings.iter().all(|w| w.code != WarningCode::TotalsDisagree), "{:?}", s.warnings);
}

#[test]
fn totals_that_disagree_with_documents_are_reported() {
    let text = format!(
        "{HEADER}СекцияРасчСчет\nРасчСчет={OWN}\nНачальныйОстаток=0\nВсегоПоступило=150\nВсегоСписано=0\nКонечныйОстаток=150\nКонецРасчСчет\n{}КонецФайла\n",
        document("1", "100", OTHER, OWN)
    );
    let s = parse(text.as_bytes()).unwrap();
    let w = s.warnings.iter().find(|w| w.code == WarningCode::TotalsDisagree).unwrap();
    assert!(w.message.contains("150") && w.message.contains("100") && w.message.contains("difference 50"), "{w}");
    let broken = text.replace("КонечныйОстаток=150", "КонечныйОстаток=151");
    assert!(parse(broken.as_bytes()).unwrap().warnings.iter().any(|w| w.code == WarningCode::BalanceDoesNotAdd));
}

#[test]
fn other_document_types_are_kept_as_written() {
    let docs: Vec<String> = ["Банковский ордер", "Мемориальный ордер", "Прочее", "Платежное требование"]
        .iter()
        .enumerate()
        .map(|(i, kind)| document(&i.to_string(), "1", OTHER, OWN).replace("Платежное поручение", kind))
        .collect();
    let s = parse(text_with(&docs).as_bytes()).unwrap();
    assert_eq!(
        s.entries.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["Банковский ордер", "Мемориальный ордер", "Прочее", "Платежное требование"]
    );
}

#[test]
fn unknown_keys_are_kept_in_order() {
    let doc = document("1", "1", OTHER, OWN)
        .replace("КонецДокумента", "КодДебитора=42\nСовсемНовыйКлюч= с пробелами \nКонецДокумента");
    let text = text_with(&[doc]).replace("Отправитель=Банк", "Отправитель=Банк\nНовыйЗаголовок=x");
    let s = parse(text.as_bytes()).unwrap();
    let attrs: Vec<(&str, &str)> = s.entries[0].attributes.iter().collect();
    assert_eq!(attrs[attrs.len() - 2..], [("КодДебитора", "42"), ("СовсемНовыйКлюч", " с пробелами ")]);
    assert_eq!(s.header.get("НовыйЗаголовок"), Some("x"));
}

#[test]
fn direction_is_relative_to_the_statement_account() {
    let s = parse(
        text_with(&[document("1", "1", OTHER, OWN), document("2", "2", OWN, OTHER), document("3", "3", OTHER, OTHER)])
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        s.entries.iter().map(|e| e.direction).collect::<Vec<_>>(),
        [Direction::Credit, Direction::Debit, Direction::Unknown]
    );
    assert!(
        s.warnings
            .iter()
            .any(|w| w.code == WarningCode::DirectionUnknown && w.location == Some(s.entries[2].location.clone()))
    );
    assert_eq!(s.entries[2].location, Location::Line(28));
}

#[test]
fn invalid_inn_is_a_warning_not_a_rejection() {
    let doc = document("1", "1", OTHER, OWN).replace("ПлательщикИНН=7707083893", "ПлательщикИНН=7707083894");
    let s = parse(text_with(&[doc]).as_bytes()).unwrap();
    assert_eq!(s.entries.len(), 1);
    assert!(s.warnings.iter().any(|w| w.code == WarningCode::InvalidInn && w.message.contains("7707083894")));
}

#[test]
fn text_after_the_end_marker_is_ignored_with_a_warning() {
    let text = text_with(&[document("1", "1", OTHER, OWN)]) + "мусор\n";
    let s = parse(text.as_bytes()).unwrap();
    assert!(s.warnings.iter().any(|w| w.code == WarningCode::TextAfterEnd));
}

fn error_of(text: &str) -> String {
    parse(text.as_bytes()).map(|_| ()).unwrap_err().to_string()
}

#[test]
fn broken_files_are_rejected_whole_with_line_and_field() {
    let good = text_with(&[document("1", "100.00", OTHER, OWN), document("2", "5", OWN, OTHER)]);
    // Line 17 is the second document's amount... find it rather than count.
    let bad_amount = good.replacen("Сумма=5", "Сумма=5,0,0", 1);
    let line = bad_amount.lines().position(|l| l == "Сумма=5,0,0").unwrap() + 1;
    assert_eq!(
        error_of(&bad_amount),
        format!(
            "line {line}, field `Сумма`: `5,0,0` is not an amount (digits with an optional `.` and up to 28 decimals)"
        )
    );

    let bad_date = good.replacen("Дата=01.02.2024", "Дата=31.02.2024", 1);
    assert!(error_of(&bad_date).contains("field `Дата`: `31.02.2024` is not a date"), "{}", error_of(&bad_date));

    let no_amount = good.replacen("Сумма=100.00\n", "", 1);
    assert!(error_of(&no_amount).contains("field `Сумма`: the document has no amount"));

    let unfinished = good.replace("КонецФайла\n", "");
    assert!(error_of(&unfinished).contains("before `КонецФайла`"));

    let unclosed = good.replacen("КонецДокумента\n", "", 1);
    assert!(
        error_of(&unclosed).contains("before `КонецДокумента` of the section opened at line 8"),
        "{}",
        error_of(&unclosed)
    );

    let garbage = good.replacen("Номер=1", "просто текст", 1);
    assert!(
        error_of(&garbage).contains("is neither `key=value` nor a section marker")
            || error_of(&garbage).contains("before `КонецДокумента`")
    );

    assert_eq!(
        error_of("ВерсияФормата=1.03\n"),
        "not a bank statement this hub reads (expected 1CClientBankExchange, camt.053 XML or MT940)"
    );
    assert_eq!(error_of(""), "the file is empty");
    assert_eq!(error_of("\r\n  \n"), "the file is empty");
}

#[test]
fn bare_document_section_takes_its_type_from_the_header() {
    let text =
        text_with(&[document("1", "1", OTHER, OWN).replace("СекцияДокумент=Платежное поручение", "СекцияДокумент")])
            .replace(
                "РасчСчет=40702810900000002851\n",
                "РасчСчет=40702810900000002851\nДокумент=Платежное поручение\n",
            );
    let s = parse(text.as_bytes()).unwrap();
    assert_eq!(s.entries[0].kind, "Платежное поручение");
    assert!(s.warnings.iter().any(|w| w.code == WarningCode::DocumentTypeMissing));
}

#[test]
fn purpose_falls_back_to_its_split_lines() {
    let doc = document("1", "1", OTHER, OWN).replace(
        "НазначениеПлатежа=Оплата по счету № 12 от 01.02.2024\n",
        "НазначениеПлатежа1=Оплата по счету\nНазначениеПлатежа2=№ 12 от 01.02.2024\n",
    );
    assert_eq!(parse(text_with(&[doc]).as_bytes()).unwrap().entries[0].purpose, "Оплата по счету № 12 от 01.02.2024");
}
