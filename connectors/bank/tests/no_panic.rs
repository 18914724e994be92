//! A stable-Rust stand-in for the fuzz targets (`connectors/bank/fuzz/`),
//! run by `cargo test`: every sample, mutated thousands of times by a
//! deterministic generator (byte flips, cuts, splices, repeats, line
//! shuffles), through every parser. Any panic fails the test; errors are
//! expected and fine.

mod common;

use common::samples_dir;

use dealbridge_connector_bank::{camt053, client_bank_exchange, mt940, parse_statement};

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

const INTERESTING: &[&[u8]] = &[
    b"=",
    b"\n",
    b"\r\n",
    b"\xEF\xBB\xBF",
    b"\xD0",
    b"\xFF\xFE",
    "СекцияДокумент=".as_bytes(),
    "КонецДокумента\n".as_bytes(),
    "СекцияРасчСчет\n".as_bytes(),
    "КонецФайла".as_bytes(),
    "Сумма=".as_bytes(),
    b"99999999999999999999999999999999.9",
    b"<Ntry>",
    b"</Stmt>",
    b"<Amt Ccy=\"EUR\">",
    b"&amp;",
    b"&#xFFFFFF;",
    b"<!DOCTYPE x>",
    b":61:",
    b":86:",
    b":60F:C",
    b"\n-\n",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let start = rng.below(len);
                let end = (start + rng.below(64)).min(len);
                data.drain(start..end);
            }
            2 => {
                let at = rng.below(len + 1);
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                data.splice(at..at, piece.iter().copied());
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + rng.below(256)).min(len);
                let chunk = data[start..end].to_vec();
                let at = rng.below(data.len() + 1);
                data.splice(at..at, chunk);
            }
            4 => data.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            _ => {
                // Swap two lines.
                let mut lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
                if lines.len() > 2 {
                    let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                    lines.swap(a, b);
                }
                data = lines.join(&b'\n');
            }
        }
    }
    data
}

fn samples() -> Vec<(String, Vec<u8>)> {
    let Some(dir) = samples_dir() else { return Vec::new() };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_file() && name != "SOURCES.md" {
            let mut bytes = std::fs::read(entry.path()).unwrap();
            // Keep debug-build runs short: the start of the big sample holds
            // every structure the rest repeats.
            bytes.truncate(24 * 1024);
            out.push((name, bytes));
        }
    }
    out.sort();
    out
}

fn run_all(data: &[u8]) {
    let _ = parse_statement(data);
    let _ = client_bank_exchange::parse(data);
    let _ = camt053::parse(data);
    let _ = mt940::parse(data);
}

#[test]
fn mutated_samples_never_panic() {
    let rounds: usize = std::env::var("NO_PANIC_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(150);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (name, bytes) in samples() {
        for round in 0..rounds {
            let data = mutate(&mut rng, &bytes);
            let result = std::panic::catch_unwind(|| run_all(&data));
            assert!(
                result.is_ok(),
                "{name}, round {round}: a parser panicked on this input: {:?}",
                String::from_utf8_lossy(&data)
            );
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    for len in [0usize, 1, 2, 7, 64, 300, 4096] {
        for _ in 0..50 {
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            run_all(&data);
            let mut with_marker = b"1CClientBankExchange\n".to_vec();
            with_marker.extend_from_slice(&data);
            run_all(&with_marker);
        }
    }
}
