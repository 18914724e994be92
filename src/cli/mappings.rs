//! `dealbridge check` and `dealbridge test`: what an admin runs after
//! editing mapping files, before the hub does.
//!
//! Both print problems as `file:line:column: message`, one per line, so
//! editors and CI logs can jump to them.

use std::path::Path;
use std::process::ExitCode;

use dealbridge_core::mapping::testcase::TestCase;
use dealbridge_core::mapping::testrun::run_case;
use dealbridge_core::mapping::{Diagnostic, MappingSet};

/// Loads the set in `dir`, or prints every problem.
pub fn load_set(dir: &Path) -> Result<MappingSet, Vec<Diagnostic>> {
    MappingSet::load_dir(dir)
}

/// Problems of a mapping directory: the set itself, then its test cases
/// (`tests/` beside the files), each checked against the set.
pub fn mapping_problems(dir: &Path) -> Vec<String> {
    let set = match load_set(dir) {
        Ok(set) => set,
        Err(diagnostics) => return diagnostics.iter().map(ToString::to_string).collect(),
    };
    let tests = dir.join("tests");
    if !tests.is_dir() {
        return Vec::new();
    }
    match TestCase::load_dir(&tests) {
        Err(diagnostics) => diagnostics.iter().map(ToString::to_string).collect(),
        Ok(cases) => cases.iter().flat_map(|(file, case)| case.check(file, &set)).map(|d| d.to_string()).collect(),
    }
}

/// Runs every test case beside the mappings; ends with `N passed, M failed`.
pub fn run_tests(dir: &Path) -> ExitCode {
    let set = match load_set(dir) {
        Ok(set) => set,
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            eprintln!("the mapping set is invalid; no test ran");
            println!("0 passed, 0 failed");
            return ExitCode::FAILURE;
        }
    };
    let cases = match TestCase::load_dir(&dir.join("tests")) {
        Ok(cases) => cases,
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            println!("0 passed, 0 failed");
            return ExitCode::FAILURE;
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for (file, case) in &cases {
        let result = run_case(file, case, &set);
        if result.passed() {
            passed += 1;
            println!("ok     {} ({})", result.name, result.file);
        } else {
            failed += 1;
            println!("FAILED {} ({})", result.name, result.file);
            for failure in &result.failures {
                println!("       {failure}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
