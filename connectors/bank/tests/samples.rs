//! Every real sample in `../shared/samples` gives the counts and sums worked
//! out independently (by hand and by `independent_totals.py`, which shares
//! no code with the parser). The samples are read in place; they are not
//! copied into this repository.

mod common;

use common::samples_dir;

use std::path::PathBuf;
use std::str::FromStr;

use dealbridge_connector_bank::{Direction, Format, Statement, Summary, TextEncoding, WarningCode, parse_statement};
use rust_decimal::Decimal;

fn sample_path(name: &str) -> PathBuf {
    samples_dir().expect("samples present (checked at the start of each test)").join(name)
}

fn parse(name: &str) -> Statement {
    let file = std::fs::File::open(sample_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    parse_statement(std::io::BufReader::new(file)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

struct Expected {
    file: &'static str,
    encoding: TextEncoding,
    accounts: usize,
    documents: usize,
    credits: (usize, &'static str),
    debits: (usize, &'static str),
    other: (usize, &'static str),
    warnings: &'static [WarningCode],
}

const EXPECTED: &[Expected] = &[
    Expected {
        file: "1c_dronm_clbnk_kl_to_1c.txt",
        encoding: TextEncoding::Windows1251,
        accounts: 1,
        documents: 3,
        credits: (0, "0"),
        debits: (3, "169992.00"),
        other: (0, "0"),
        // ВсегоПоступило 616050.00 / ВсегоСписано 789647.44 vs 3 documents.
        warnings: &[WarningCode::TotalsDisagree, WarningCode::DirectionFromDates, WarningCode::InvalidInn],
    },
    Expected {
        file: "1c_dronm_clbnk_to_bank.txt",
        encoding: TextEncoding::Mixed,
        accounts: 0,
        documents: 2,
        credits: (0, "0"),
        debits: (0, "0"),
        other: (2, "175375.25"),
        warnings: &[
            WarningCode::MixedEncoding,
            WarningCode::NoAccounts,
            WarningCode::DocumentTypeMissing,
            WarningCode::InvalidInn,
        ],
    },
    Expected {
        file: "1c_kilylabs_one_day.txt",
        encoding: TextEncoding::Windows1251,
        accounts: 1,
        documents: 13,
        credits: (3, "40000.00"),
        debits: (10, "41184.00"),
        other: (0, "0"),
        warnings: &[WarningCode::DirectionFromDates, WarningCode::InvalidInn],
    },
    Expected {
        file: "1c_odin_palace_version_1_03.txt",
        encoding: TextEncoding::Windows1251,
        accounts: 1,
        documents: 2,
        credits: (1, "158654.52"),
        debits: (1, "140000"),
        other: (0, "0"),
        warnings: &[WarningCode::InvalidInn],
    },
    Expected {
        file: "1c_odin_palace_taxdev_4645.txt",
        encoding: TextEncoding::Windows1251,
        accounts: 1,
        documents: 9,
        credits: (9, "66770"),
        debits: (0, "0"),
        other: (0, "0"),
        // ВсегоПоступило = 67770.
        warnings: &[WarningCode::TotalsDisagree, WarningCode::InvalidInn],
    },
    Expected {
        file: "1c_odin_palace_two_accounts.txt",
        encoding: TextEncoding::Windows1251,
        accounts: 2,
        documents: 6,
        credits: (0, "0"),
        debits: (4, "68.33"),
        other: (2, "10198.01"),
        warnings: &[WarningCode::BetweenOwnAccounts, WarningCode::TotalsDisagree, WarningCode::InvalidInn],
    },
    Expected {
        file: "1c_odin_palace_unknown_direction.txt",
        encoding: TextEncoding::Windows1251,
        accounts: 1,
        documents: 2,
        credits: (1, "207459"),
        debits: (1, "4900"),
        other: (0, "0"),
        warnings: &[WarningCode::InvalidInn],
    },
    Expected {
        file: "1c_odin_palace_bench_statement.txt",
        encoding: TextEncoding::Windows1251,
        accounts: 1,
        documents: 129,
        credits: (103, "1027356.16"),
        debits: (26, "642268.31"),
        other: (0, "0"),
        // ВсегоСписано adds up to 642958.31: 690.00 more than the documents.
        warnings: &[WarningCode::TotalsDisagree, WarningCode::InvalidInn],
    },
    Expected {
        file: "1c_unact_all_fields_utf8.txt",
        encoding: TextEncoding::Utf8,
        accounts: 2,
        documents: 6,
        credits: (0, "0"),
        debits: (0, "0"),
        other: (6, "588.00"),
        warnings: &[WarningCode::DeclaredEncodingDiffers, WarningCode::BetweenOwnAccounts],
    },
    Expected {
        file: "camt053_genkgo_v2_multi_statement.xml",
        encoding: TextEncoding::Utf8,
        accounts: 1,
        documents: 2,
        credits: (1, "8.85"),
        debits: (1, "7.00"),
        other: (0, "0"),
        warnings: &[],
    },
    Expected {
        file: "camt053_genkgo_v8.xml",
        encoding: TextEncoding::Utf8,
        accounts: 1,
        documents: 1,
        credits: (1, "8.85"),
        debits: (0, "0"),
        other: (0, "0"),
        // Closing balance 27.00 SEK DBIT against an EUR account.
        warnings: &[WarningCode::CurrencyMismatch, WarningCode::TotalsDisagree],
    },
    Expected {
        file: "mt940_jejik_ing.sta",
        encoding: TextEncoding::Utf8,
        accounts: 1,
        documents: 7,
        credits: (2, "4.68"),
        debits: (5, "50.27"),
        other: (0, "0"),
        // 0,00 + 4,68 − 50,27 ≠ closing 3,47.
        warnings: &[WarningCode::TotalsDisagree],
    },
];

#[test]
fn every_sample_gives_its_counts_and_sums() {
    if samples_dir().is_none() {
        return;
    }
    for e in EXPECTED {
        let statement = parse(e.file);
        let s = Summary::of(&statement);
        let ctx = format!("{}:\n{s}", e.file);
        assert_eq!(s.encoding, e.encoding, "{ctx}");
        assert_eq!(s.accounts.len(), e.accounts, "{ctx}");
        assert_eq!(s.documents, e.documents, "{ctx}");
        assert_eq!((s.credits.count, s.credits.total), (e.credits.0, d(e.credits.1)), "{ctx}");
        assert_eq!((s.debits.count, s.debits.total), (e.debits.0, d(e.debits.1)), "{ctx}");
        assert_eq!((s.other.count, s.other.total), (e.other.0, d(e.other.1)), "{ctx}");
        let mut codes: Vec<WarningCode> = s.warning_counts.keys().copied().collect();
        let mut expected = e.warnings.to_vec();
        codes.sort();
        expected.sort();
        assert_eq!(codes, expected, "{ctx}");
    }
}

/// Lines are handed out from the reader's buffer and put together only when
/// split across two fills: a 5-byte buffer splits nearly every line (and
/// characters), and must read exactly what the whole file in memory reads.
#[test]
fn every_sample_reads_the_same_from_memory_and_through_a_small_buffer() {
    if samples_dir().is_none() {
        return;
    }
    // The line-based formats; the format is named here because sniffing
    // needs more than 5 bytes.
    for e in EXPECTED.iter().filter(|e| !e.file.starts_with("camt053")) {
        let bytes = std::fs::read(sample_path(e.file)).unwrap();
        let whole = parse_statement(bytes.as_slice()).unwrap();
        let small = std::io::BufReader::with_capacity(5, bytes.as_slice());
        let split = if e.file.starts_with("mt940") {
            dealbridge_connector_bank::mt940::parse(small)
        } else {
            dealbridge_connector_bank::client_bank_exchange::parse(small)
        }
        .unwrap();
        assert_eq!(serde_json::to_value(&whole).unwrap(), serde_json::to_value(&split).unwrap(), "{}", e.file);
    }
}

#[test]
fn every_sample_file_is_covered() {
    if samples_dir().is_none() {
        return;
    }
    let dir = sample_path("");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "SOURCES.md")
        .collect();
    files.sort();
    let mut covered: Vec<String> = EXPECTED.iter().map(|e| e.file.to_owned()).collect();
    covered.sort();
    assert_eq!(files, covered);
}

#[test]
fn versions_and_formats_are_reported() {
    if samples_dir().is_none() {
        return;
    }
    assert_eq!(parse("1c_kilylabs_one_day.txt").format, Format::ClientBankExchange("1.02".into()));
    assert_eq!(parse("1c_odin_palace_version_1_03.txt").format, Format::ClientBankExchange("1.03".into()));
    assert_eq!(parse("camt053_genkgo_v2_multi_statement.xml").format, Format::Camt053("001.02".into()));
    assert_eq!(parse("camt053_genkgo_v8.xml").format, Format::Camt053("001.08".into()));
    assert_eq!(parse("mt940_jejik_ing.sta").format, Format::Mt940);
}

#[test]
fn one_c_documents_keep_their_fields() {
    if samples_dir().is_none() {
        return;
    }
    let s = parse("1c_odin_palace_unknown_direction.txt");
    let incoming = s.entries.iter().find(|e| e.direction == Direction::Credit).unwrap();
    assert_eq!(incoming.number, "FDC240");
    assert_eq!(incoming.amount, d("207459"));
    // `ПлательщикКорСчет` (capital С) is read like `ПлательщикКорсчет`.
    assert!(!incoming.payer.correspondent_account.is_empty());
    assert!(incoming.attributes.get("ПлательщикКорСчет").is_some());

    let s = parse("1c_dronm_clbnk_kl_to_1c.txt");
    let doc = &s.entries[1];
    assert_eq!(doc.kind, "Платежное поручение");
    assert_eq!(doc.payer.inn, "7123456789");
    assert_eq!(doc.payer.name, "ООО \"Рога и копыта\"");
    assert_eq!(doc.payer.bank_bic, "044525411");
    assert_eq!(doc.payer.correspondent_account, "30101810145250000411");
    assert_eq!(doc.payee.account, "40702810267020000630");
    assert_eq!(doc.purpose, "Оплата по заказу клиента №9614, НДС не облагается");
    assert_eq!(s.entries[0].kind, "Банковский ордер");

    let s = parse("1c_odin_palace_two_accounts.txt");
    assert!(s.entries.iter().any(|e| e.kind == "Прочее"));
    assert_eq!(s.accounts.iter().map(|a| a.balances.len()).sum::<usize>(), 44);
    // One-decimal balances (`КонечныйОстаток=22.9`) are exact decimals.
    assert_eq!(s.accounts[0].balances[0].closing, Some(d("22.90")));
}

#[test]
fn mixed_encoding_file_is_read_line_by_line() {
    if samples_dir().is_none() {
        return;
    }
    // to_bank.txt is Windows-1251 except its last line, `КонецФайла` in UTF-8.
    let s = parse("1c_dronm_clbnk_to_bank.txt");
    let w = s.warnings.iter().find(|w| w.code == WarningCode::MixedEncoding).unwrap();
    assert_eq!(w.location, Some(dealbridge_connector_bank::Location::Line(75)));
    assert_eq!(s.entries[0].kind, "Платежное поручение");
    assert_eq!(s.entries[0].purpose, "За товары, по счету №125 на сумму 175000-00");
}

#[test]
fn camt_entries_carry_parties_remittance_and_references() {
    if samples_dir().is_none() {
        return;
    }
    let s = parse("camt053_genkgo_v8.xml");
    let e = &s.entries[0];
    assert_eq!(e.payer.name, "NAME NAME");
    assert_eq!(e.payer.account, "NL56AGDH9619008421");
    assert_eq!(e.payee.name, "Company Name");
    assert_eq!(e.payee.other_ids, vec!["KBO-BCE: 455454654".to_owned()]);
    assert_eq!(e.purpose, "4654654654654654");
    assert_eq!(e.kind, "PMNT/RCDT/BOOK");
    assert_eq!(e.date, chrono::NaiveDate::from_ymd_opt(2014, 12, 31).unwrap());
    assert!(e.references.contains(&("EndToEndId".into(), "MUELL/FINP/RA12345".into())));

    let s = parse("camt053_genkgo_v2_multi_statement.xml");
    assert_eq!(s.entries[0].purpose, "Transaction Description 1");
    assert_eq!(s.entries[1].direction, Direction::Debit);
    assert_eq!(s.accounts[0].number, "NL26VAYB8060476890");
    assert_eq!(s.accounts[0].balances.len(), 2);
}

#[test]
fn mt940_lines_carry_their_information() {
    if samples_dir().is_none() {
        return;
    }
    let s = parse("mt940_jejik_ing.sta");
    assert_eq!(s.entries[0].amount, d("25.03"));
    assert!(s.entries[0].purpose.starts_with("RC AFREKENING BETALINGSVERKEER"));
    assert!(s.entries[6].purpose.contains("Hr S Marechal"));
    assert_eq!(s.accounts[0].number, "0001234567");
    assert_eq!(s.accounts[0].currency.as_deref(), Some("EUR"));
}

#[test]
fn payments_have_direction_parties_and_stable_ids() {
    if samples_dir().is_none() {
        return;
    }
    let now = chrono::Utc::now();
    let s = parse("1c_odin_palace_version_1_03.txt");
    let payments = dealbridge_connector_bank::payments::to_payments(&s, now);
    assert_eq!(payments.len(), 2);
    let incoming = payments.iter().find(|p| p.direction == dealbridge_core::model::PaymentDirection::Incoming).unwrap();
    assert_eq!(incoming.amount.amount, d("158654.52"));
    assert_eq!(incoming.amount.currency, "RUB");
    assert!(incoming.payee.account.as_ref().is_some_and(|a| s.is_own_account(&a.number)));
    let again = dealbridge_connector_bank::payments::to_payments(&parse("1c_odin_palace_version_1_03.txt"), now);
    assert_eq!(payments.iter().map(|p| p.id).collect::<Vec<_>>(), again.iter().map(|p| p.id).collect::<Vec<_>>());
}
