//! The command line as an operator meets it: clear config errors with exit
//! code 2, a `check` that changes nothing, `--version`.

use std::process::Command;

use crate::support::*;

fn dealbridge(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dealbridge"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_clear()
        .envs(test_env(&StoreKind::Sqlite))
        .output()
        .unwrap()
}

#[test]
fn an_invalid_config_names_the_file_and_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &StoreKind::Sqlite, "");
    let text = std::fs::read_to_string(&config).unwrap().replace("max_body_bytes = 65536", "max_body_bytes = \"big\"");
    std::fs::write(&config, text).unwrap();
    for args in [&["check"][..], &["serve"][..]] {
        let out = dealbridge(&config, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("server.max_body_bytes"), "{stderr}");
        assert!(stderr.contains(&config.display().to_string()), "{stderr}");
    }
}

#[test]
fn a_missing_secret_is_a_config_error_that_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &StoreKind::Sqlite, "");
    let out = Command::new(env!("CARGO_BIN_EXE_dealbridge"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TEST_HTTP_SECRET"));
}

#[test]
fn check_validates_without_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &StoreKind::Sqlite, "");
    let mappings = dir.path().join("mappings");
    std::fs::create_dir(&mappings).unwrap();
    let out = dealbridge(&config, &["check", mappings.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.path().join("data").exists(), "check must not create the store");
}

#[test]
fn version_is_printed() {
    let out = Command::new(env!("CARGO_BIN_EXE_dealbridge")).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("dealbridge "));
}

#[test]
fn an_unreachable_database_is_retried_then_reported_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreKind::Postgres { url: "postgres://hub:s3cret-pw@127.0.0.1:1/dealbridge".into() };
    let config = write_config(dir.path(), &store, "");
    let text = std::fs::read_to_string(&config).unwrap().replace("[store]\n", "[store]\nconnect_timeout_secs = 2\n");
    std::fs::write(&config, text).unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_dealbridge"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_clear()
        .envs(test_env(&store))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "it waited for the database");
    assert!(stderr.contains("Store not reachable yet; retrying."), "{stderr}");
    assert!(stderr.contains("postgres://hub:***@127.0.0.1:1/dealbridge"), "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "the password leaked: {stderr}");
}

#[test]
fn a_missing_database_url_is_a_config_error_for_check_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreKind::Postgres { url: String::new() };
    let config = write_config(dir.path(), &store, "");
    let mut env = test_env(&StoreKind::Sqlite);
    env.remove("TEST_DATABASE_URL");
    for args in [&["check"][..], &["serve"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_dealbridge"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_clear()
            .envs(&env)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("TEST_DATABASE_URL"), "{args:?}: {stderr}");
    }
}
