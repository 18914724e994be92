//! Parse throughput (MB/s) on a ~100 MB 1CClientBankExchange statement,
//! side by side in one run: this crate, the Rust crate `odin_palace`, and the
//! PyPI package `client-bank-exchange-1c` (run as a `python3` subprocess;
//! skipped with a note when python3 or the package is missing).
//!
//! The statement is generated into a temporary directory from
//! `../shared/samples/1c_odin_palace_bench_statement.txt`: its header, its
//! first balance section (the Python package reads only one) and its 129
//! documents repeated until the file reaches 100 MiB. Windows-1251, LF.
//!
//! Run: `cargo bench -p dealbridge-connector-bank --bench statement_parse`
//! (`BENCH_RUNS=n` sets the runs per Rust parser, default 5; `BENCH_SKIP_PYTHON=1`
//! leaves the Python peer out).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TARGET_BYTES: usize = 100 * 1024 * 1024;

fn sample() -> Vec<u8> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/samples/1c_odin_palace_bench_statement.txt");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).expect("marker in sample")
}

/// Header + first balance section + documents repeated + `КонецФайла`.
fn generate(dir: &Path) -> (PathBuf, usize) {
    let raw = sample();
    let cp = |s: &str| encoding_rs::WINDOWS_1251.encode(s).0.into_owned();
    let balance_start = find(&raw, &cp("СекцияРасчСчет"));
    let balance_end = find(&raw, &cp("КонецРасчСчет")) + cp("КонецРасчСчет\n").len();
    let docs_start = find(&raw, &cp("СекцияДокумент"));
    let docs_end = find(&raw, &cp("КонецФайла"));
    let documents = &raw[docs_start..docs_end];
    let per_copy = raw[docs_start..docs_end]
        .windows(cp("КонецДокумента").len())
        .filter(|w| *w == cp("КонецДокумента").as_slice())
        .count();
    let path = dir.join("statement_100mb.txt");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    out.write_all(&raw[..balance_start]).unwrap();
    out.write_all(&raw[balance_start..balance_end]).unwrap();
    let mut written = balance_end;
    let mut copies = 0;
    while written < TARGET_BYTES {
        out.write_all(documents).unwrap();
        written += documents.len();
        copies += 1;
    }
    out.write_all(&cp("КонецФайла\n")).unwrap();
    out.flush().unwrap();
    (path, copies * per_copy)
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1_000_000.0 / d.as_secs_f64()
}

fn report(name: &str, bytes: usize, times: &mut [Duration]) -> f64 {
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "{name:<34} median {:>8.1} MB/s ({:>7.3} s)   best {:>8.1} MB/s   runs {}",
        mb_per_s(bytes, median),
        median.as_secs_f64(),
        mb_per_s(bytes, times[0]),
        times.len()
    );
    mb_per_s(bytes, median)
}

const PYTHON_SCRIPT: &str = r#"
import sys, time
try:
    from client_bank_exchange_1c import Statement
except ImportError as e:
    print("MISSING", e)
    sys.exit(3)
t = time.perf_counter()
s = Statement.from_file(sys.argv[1])
print(len(s.documents), time.perf_counter() - t)
"#;

/// Runs one parser `runs` times in a child process; returns the parse times
/// after checking it found every document.
fn timed_runs(which: &str, path: &Path, runs: usize, documents: usize) -> Vec<Duration> {
    let exe = std::env::current_exe().expect("bench executable");
    let out = Command::new(exe)
        .env("BENCH_ONE", which)
        .env("BENCH_RUNS", runs.to_string())
        .arg(path)
        .output()
        .expect("child run");
    assert!(out.status.success(), "{which}: {}", String::from_utf8_lossy(&out.stderr));
    let mut times = Vec::new();
    for run in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let (secs, found) = run.split_once(':').expect("secs:documents");
        assert_eq!(found.parse::<usize>().unwrap(), documents, "{which} read another number of documents");
        times.push(Duration::from_secs_f64(secs.parse().unwrap()));
    }
    times
}

/// Child side of `timed_runs`: prints one duration in seconds per run.
fn run_one(which: &str, path: &Path, runs: usize) {
    let bytes = std::fs::read(path).unwrap();
    for _ in 0..runs {
        let t = Instant::now();
        let documents = match which {
            "ours" => dealbridge_connector_bank::parse_statement(bytes.as_slice()).expect("our parser").entries.len(),
            "ours-file" => {
                let file = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(path).unwrap());
                dealbridge_connector_bank::parse_statement(file).expect("our parser").entries.len()
            }
            _ => odin_palace::parser::Parser::default().parse(&bytes).expect("odin_palace").documents.len(),
        };
        // The statement is dropped inside the timing: freeing is part of using a parser.
        let elapsed = t.elapsed();
        print!("{}:{documents} ", elapsed.as_secs_f64());
    }
}

fn main() {
    if let (Ok(which), Some(path)) = (std::env::var("BENCH_ONE"), std::env::args().nth(1)) {
        let runs = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
        run_one(&which, Path::new(&path), runs);
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, documents) = generate(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let size = bytes.len();
    println!("statement: {} bytes ({:.1} MB), {documents} documents, Windows-1251, LF", size, size as f64 / 1e6);
    println!(
        "Rust parsers read from memory (the file's bytes) unless marked (file); {runs} runs each, one process per parser\n"
    );

    // Each parser runs in a fresh process of this bench, so one parser's
    // freed heap never slows the other's allocations.
    let mut ours = timed_runs("ours", &path, runs, documents);
    let mut from_file = timed_runs("ours-file", &path, runs, documents);
    let mut odin = timed_runs("odin", &path, runs, documents);
    let ours_rate = report("dealbridge-connector-bank", size, &mut ours);
    report("dealbridge-connector-bank (file)", size, &mut from_file);
    let odin_rate = report("odin_palace 0.2.1", size, &mut odin);
    println!("ratio dealbridge / odin_palace: {:.2}x (target >= 2x)", ours_rate / odin_rate);

    if std::env::var_os("BENCH_SKIP_PYTHON").is_some() {
        println!("\nclient-bank-exchange-1c: skipped (BENCH_SKIP_PYTHON is set)");
        return;
    }
    match Command::new("python3").arg("-c").arg(PYTHON_SCRIPT).arg(&path).output() {
        Err(e) => println!("\nclient-bank-exchange-1c: skipped, python3 not runnable ({e})"),
        Ok(out) if out.status.code() == Some(3) => {
            println!(
                "\nclient-bank-exchange-1c: skipped, package missing ({}); `pip install client-bank-exchange-1c`",
                String::from_utf8_lossy(&out.stdout).trim()
            )
        }
        Ok(out) if !out.status.success() => {
            println!(
                "\nclient-bank-exchange-1c: failed: {}",
                String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
            )
        }
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let mut parts = text.split_whitespace();
            let docs: usize = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let secs: f64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
            println!(
                "{:<34} {:>15.1} MB/s ({:>7.3} s)   1 run (python3 subprocess, parse time inside the interpreter); {docs} documents",
                "client-bank-exchange-1c (PyPI)",
                size as f64 / 1e6 / secs,
                secs
            );
        }
    }
}
