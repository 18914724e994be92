//! Test support shared by this crate's suites and the hub's end-to-end
//! tests: where to find the real PostgreSQL, and fresh throwaway databases
//! on it.
//!
//! Tests that need PostgreSQL read `DEALBRIDGE_TEST_PG_URL`. When it is not
//! set they print why they are skipped — unless `DEALBRIDGE_REQUIRE_SERVICES`
//! is set (as CI does), in which case a missing server is a failure.

use std::str::FromStr;

use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

/// Variable naming an administrative PostgreSQL URL for tests.
pub const PG_URL_VAR: &str = "DEALBRIDGE_TEST_PG_URL";
/// Set (to anything) to make service-backed tests mandatory.
pub const REQUIRE_VAR: &str = "DEALBRIDGE_REQUIRE_SERVICES";

/// The admin URL, or `None` after printing why the test is skipped.
///
/// # Panics
/// When services are required but the variable is missing.
pub fn pg_admin_url(test: &str) -> Option<String> {
    match std::env::var(PG_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os(REQUIRE_VAR).is_some() => {
            panic!("{test}: {REQUIRE_VAR} is set but {PG_URL_VAR} is not: PostgreSQL tests must run here")
        }
        _ => {
            eprintln!("SKIPPED {test}: set {PG_URL_VAR} (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run it");
            None
        }
    }
}

/// A fresh database on the test server, dropped by `drop_db`.
pub struct TestDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// Creates `dealbridge_test_<random>` on the server `admin_url` points at.
    ///
    /// # Panics
    /// When the server cannot be reached: a configured server that is down
    /// must fail loudly, never skip.
    pub async fn create(admin_url: &str) -> Self {
        let name = format!("dealbridge_test_{}", uuid::Uuid::new_v4().simple());
        let admin = PgConnectOptions::from_str(admin_url).expect("valid DEALBRIDGE_TEST_PG_URL");
        let mut conn = admin.connect().await.unwrap_or_else(|e| panic!("cannot reach PostgreSQL for tests: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = admin.database(&name).to_url_lossy().to_string();
        Self { admin_url: admin_url.to_owned(), name, url }
    }

    /// Drops the database, disconnecting whoever still uses it.
    pub async fn drop_db(self) {
        let admin = PgConnectOptions::from_str(&self.admin_url).expect("valid admin URL");
        if let Ok(mut conn) = admin.connect().await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
        }
    }
}
