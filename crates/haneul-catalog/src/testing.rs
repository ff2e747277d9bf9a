//! Fresh PostgreSQL databases for tests, on the server named by the
//! `HANEUL_TEST_POSTGRES` environment variable (a URL without a database
//! name, such as `postgresql://haneul:haneul@127.0.0.1:5432`;
//! `scripts/test.sh` starts a server and sets it).

use std::sync::atomic::{AtomicU32, Ordering};

use postgres::{Client, NoTls};

use crate::PostgresOptions;

/// The environment variable naming the test server.
pub const SERVER_VARIABLE: &str = "HANEUL_TEST_POSTGRES";
/// The environment variable naming the CA of the test server's certificate.
pub const CA_VARIABLE: &str = "HANEUL_TEST_POSTGRES_CA";
/// The environment variable naming the client certificate (PEM) of
/// [`CERTIFICATE_USER`], its key beside it as `client.key`.
pub const CLIENT_CERT_VARIABLE: &str = "HANEUL_TEST_POSTGRES_CLIENT_CERT";
/// The role that signs in to the test server by client certificate alone
/// (`scripts/test.sh` creates it, a member of the role that owns the test databases).
pub const CERTIFICATE_USER: &str = "haneul_cert";

/// A database created for one test and dropped with this value.
pub struct TestDatabase {
    server: String,
    name: String,
    /// How to reach the new database: the URL without the password, and the password.
    pub options: PostgresOptions,
    /// A file holding the password, as `catalog.password_file` names one.
    pub password_file: std::path::PathBuf,
}

/// `scheme://user:password@host...` as the URL without the password, and the password.
fn split_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_part, host)) = authority.rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let Some((user, password)) = user_part.split_once(':') else {
        return (url.to_string(), None);
    };
    (format!("{scheme}://{user}@{host}{path}"), Some(password.to_string()))
}

fn server() -> String {
    match std::env::var(SERVER_VARIABLE) {
        Ok(url) => url.trim_end_matches('/').to_string(),
        Err(_) => panic!(
            "{SERVER_VARIABLE} is not set: these tests need a PostgreSQL server \
             (scripts/test.sh starts one and sets it, e.g. postgresql://haneul:haneul@127.0.0.1:5432)"
        ),
    }
}

/// Run blocking client work off any async runtime the caller is on.
fn on_plain_thread<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(work).join().expect("postgres test helper thread"))
}

impl TestDatabase {
    /// A new, empty database.
    pub fn create() -> TestDatabase {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let server = server();
        let name = format!("haneul_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        on_plain_thread(|| {
            let mut admin = Client::connect(&format!("{server}/postgres"), NoTls)
                .unwrap_or_else(|error| panic!("cannot reach the test PostgreSQL server at {server}: {error}"));
            // One statement per call: neither may run inside a transaction block.
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).expect("drop an old test database");
            admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create a test database");
        });
        let (url, password) = split_password(&format!("{server}/{name}"));
        let password_file = std::env::temp_dir().join(format!("{name}.password"));
        std::fs::write(&password_file, password.as_deref().unwrap_or_default()).expect("write the password file");
        let options = PostgresOptions { url, password, tls: None };
        TestDatabase { server, name, options, password_file }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run SQL statements in this database, as a test's own client (to set
    /// up what a crash would have left, say).
    pub fn execute(&self, statements: &str) {
        let url = format!("{}/{}", self.server, self.name);
        on_plain_thread(|| {
            let mut client = Client::connect(&url, NoTls).expect("connect to the test database");
            client.batch_execute(statements).unwrap_or_else(|error| panic!("{statements}: {error}"));
        });
    }

    /// The first column of a query's rows, as text.
    pub fn column(&self, query: &str) -> Vec<String> {
        let url = format!("{}/{}", self.server, self.name);
        on_plain_thread(|| {
            let mut client = Client::connect(&url, NoTls).expect("connect to the test database");
            let messages = client.simple_query(query).unwrap_or_else(|error| panic!("{query}: {error}"));
            messages
                .iter()
                .filter_map(|message| match message {
                    postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or_default().to_string()),
                    _ => None,
                })
                .collect()
        })
    }

    /// This database's URL for another user, without a password.
    pub fn url_for(&self, user: &str) -> String {
        let host = self.server.rsplit_once('@').map_or(self.server.as_str(), |(_, host)| host);
        let host = host.split_once("://").map_or(host, |(_, host)| host);
        format!("postgresql://{user}@{host}/{}", self.name)
    }

    /// The users and client certificate subjects of the Haneul connections
    /// to this database, as the server sees them ("" for no certificate).
    pub fn haneul_client_certificates(&self) -> Vec<(String, String)> {
        let (server, name) = (&self.server, &self.name);
        on_plain_thread(|| {
            let mut admin = Client::connect(&format!("{server}/postgres"), NoTls).expect("connect to the test server");
            admin
                .query(
                    "SELECT a.usename::text, coalesce(s.client_dn, '') FROM pg_stat_activity a \
                     JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1 AND a.application_name = 'haneul'",
                    &[name],
                )
                .expect("query pg_stat_ssl")
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect()
        })
    }

    /// The Haneul connections to this database as the server sees them:
    /// how many, and whether every one of them is encrypted (TLS).
    pub fn haneul_connections_tls(&self) -> (i64, bool) {
        let (server, name) = (&self.server, &self.name);
        on_plain_thread(|| {
            let mut admin = Client::connect(&format!("{server}/postgres"), NoTls).expect("connect to the test server");
            let row = admin
                .query_one(
                    "SELECT count(*), coalesce(bool_and(s.ssl), false) FROM pg_stat_activity a \
                     JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1 AND a.application_name = 'haneul'",
                    &[name],
                )
                .expect("query pg_stat_ssl");
            (row.get(0), row.get(1))
        })
    }
}

/// The client certificate and key of [`CERTIFICATE_USER`] (`scripts/test.sh` makes them).
pub fn postgres_client_identity() -> (std::path::PathBuf, std::path::PathBuf) {
    let certificate: std::path::PathBuf = match std::env::var(CLIENT_CERT_VARIABLE) {
        Ok(path) => path.into(),
        Err(_) => panic!(
            "{CLIENT_CERT_VARIABLE} is not set: the catalog client-certificate test needs the certificate \
             scripts/test.sh makes for {CERTIFICATE_USER} on the test PostgreSQL server"
        ),
    };
    let key = certificate.with_file_name("client.key");
    (certificate, key)
}

/// The CA that signed the test server's certificate (`scripts/test.sh`
/// turns TLS on with it).
pub fn postgres_ca() -> std::path::PathBuf {
    match std::env::var(CA_VARIABLE) {
        Ok(path) => path.into(),
        Err(_) => panic!(
            "{CA_VARIABLE} is not set: the catalog TLS tests need the CA of the test PostgreSQL server's \
             certificate (scripts/test.sh makes one and turns TLS on)"
        ),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.password_file);
        let (server, name) = (&self.server, &self.name);
        on_plain_thread(|| {
            if let Ok(mut admin) = Client::connect(&format!("{server}/postgres"), NoTls) {
                let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        });
    }
}
