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

/// A fresh database on the test server, dropped by `drop_db` or, when a
/// test ends without calling it (or panics), when the value is dropped.
pub struct TestDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
    /// Set once `drop_db` has dropped it.
    dropped: bool,
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
        Self { admin_url: admin_url.to_owned(), name, url, dropped: false }
    }

    /// Drops the database, disconnecting whoever still uses it.
    pub async fn drop_db(mut self) {
        drop_database(&self.admin_url, &self.name).await;
        self.dropped = true;
    }
}

impl Drop for TestDatabase {
    /// A test that never called `drop_db` still leaves no database behind
    /// on the server. Dropping needs a connection, so it runs on a thread
    /// and runtime of its own: this may run inside the test's runtime,
    /// which must not be blocked on itself.
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropping = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                runtime.block_on(drop_database(&admin_url, &name));
            }
        });
        let _ = dropping.join();
    }
}

/// `DROP DATABASE … WITH (FORCE)` on the server `admin_url` points at; a
/// server that cannot be reached leaves it (nothing to clean up then).
async fn drop_database(admin_url: &str, name: &str) {
    let Ok(admin) = PgConnectOptions::from_str(admin_url) else { return };
    if let Ok(mut conn) = admin.connect().await {
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test that ends without `drop_db` leaves no database on the server.
    #[tokio::test]
    async fn a_database_not_dropped_by_its_test_goes_with_the_value() {
        let Some(admin) = pg_admin_url("a_database_not_dropped_by_its_test_goes_with_the_value") else { return };
        let db = TestDatabase::create(&admin).await;
        let name = db.name.clone();
        let mut conn = PgConnectOptions::from_str(&admin).unwrap().connect().await.unwrap();
        let count = "SELECT count(*) FROM pg_database WHERE datname = $1";
        let before: i64 = sqlx::query_scalar(count).bind(&name).fetch_one(&mut conn).await.unwrap();
        assert_eq!(before, 1);
        drop(db);
        let after: i64 = sqlx::query_scalar(count).bind(&name).fetch_one(&mut conn).await.unwrap();
        assert_eq!(after, 0, "{name} is still on the server");
    }
}
