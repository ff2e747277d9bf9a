//! The PostgreSQL engine, for several nodes sharing one catalog.
//!
//! Each process keeps one writer connection and a few idle readers. Write
//! transactions take a transaction-scoped advisory lock, so they run one at
//! a time across every node, as on SQLite: journal sequence numbers then
//! grow in commit order (replication reads the journal by sequence), and
//! a background job is claimed by one node only. A commit returns once
//! PostgreSQL has made it durable (`synchronous_commit` is never `off`;
//! with a synchronous standby, once the standby has it too).
//!
//! The `postgres` client is blocking; like every catalog call it runs on
//! blocking threads, never on an async task.

mod schema;

use std::collections::HashMap;
use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, GenericClient, IsolationLevel, NoTls, Statement};

use crate::sql::db::{dollar_placeholders, Param, Value};
use crate::sql::{copy_tables, Db, Dialect, Engine, Row, SqlCatalog};
use crate::sqlite::SqliteDb;
use crate::{CatalogError, Result, SqliteCatalog};

/// Advisory lock keys ("haneul" in ASCII, and one more for schema changes).
const WRITE_LOCK: i64 = 0x68_61_6e_65_75_6c;
const SCHEMA_LOCK: i64 = WRITE_LOCK + 1;

/// Idle reader connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

/// Prepared statements kept per connection: queries differ in shape (their
/// narrowing clauses), so the cache is emptied when it grows past this.
const MAX_PREPARED: usize = 256;

/// The schema version this build writes (the same as SQLite's).
const SCHEMA_VERSION: i64 = crate::sqlite::schema::SCHEMA_VERSION;

/// The catalog on PostgreSQL.
pub type PostgresCatalog = SqlCatalog<PostgresEngine>;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// A libpq connection string or URL (`postgresql://user@host/db`,
    /// `host=... dbname=...`), without a password if `password` is given.
    pub url: String,
    /// The password, read from a file by the caller (never in the URL).
    pub password: Option<String>,
    /// TLS to the server, verifying its certificate (and the host name or
    /// address in the URL) against the configured CA. Required when given:
    /// the connection never falls back to plain text.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// What a connection string says, as the client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlFacts {
    pub has_password: bool,
    /// `sslmode` is `require`.
    pub requires_tls: bool,
    /// `sslmode` is `disable`.
    pub forbids_tls: bool,
    /// Every host is a loopback address, `localhost` or a Unix socket.
    pub local_only: bool,
}

impl PostgresOptions {
    /// Check a connection string as the client reads it.
    pub fn check_url(url: &str) -> std::result::Result<UrlFacts, String> {
        let config = postgres::Config::from_str(url).map_err(|error| error.to_string())?;
        let local_only = config.get_hosts().iter().all(|host| match host {
            postgres::config::Host::Tcp(name) => {
                name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|address| address.is_loopback())
            }
            #[cfg(unix)]
            postgres::config::Host::Unix(_) => true,
        });
        Ok(UrlFacts {
            has_password: config.get_password().is_some(),
            requires_tls: config.get_ssl_mode() == postgres::config::SslMode::Require,
            forbids_tls: config.get_ssl_mode() == postgres::config::SslMode::Disable,
            local_only,
        })
    }
}

/// PostgreSQL connections for [`SqlCatalog`].
pub struct PostgresEngine {
    config: postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    writer: Mutex<Option<Connection>>,
    readers: Mutex<Vec<Connection>>,
}

/// A connection with the statements prepared on it.
struct Connection {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Drop for PostgresEngine {
    fn drop(&mut self) {
        // Closing a client blocks on the client's own runtime, which panics
        // on an async thread, where the last handle to a catalog often goes
        // (the end of `serve`, of a tool's async main): close them on a plain thread.
        let writer = lock(&self.writer).take();
        let readers = std::mem::take(&mut *lock(&self.readers));
        if writer.is_none() && readers.is_empty() {
            return;
        }
        let closing = std::thread::Builder::new().name("haneul-pg-close".into()).spawn(move || drop((writer, readers)));
        match closing {
            Ok(thread) => {
                let _ = thread.join();
            }
            Err(error) => tracing::warn!(%error, "could not close the catalog's connections cleanly"),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A connection left in a failed transaction is rolled back when the
    // transaction value is dropped, so the guarded state stays usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SqlCatalog<PostgresEngine> {
    /// Connect, and create or upgrade the schema (once, whichever node
    /// comes first). A catalog made by a newer version is used as it is if
    /// that version declared this one compatible, so nodes can be upgraded
    /// one at a time.
    pub fn connect(options: &PostgresOptions) -> Result<PostgresCatalog> {
        let mut config = postgres::Config::from_str(&options.url)
            .map_err(|error| CatalogError::PostgresSetup(format!("invalid connection string: {error}")))?;
        if let Some(password) = &options.password {
            config.password(password);
        }
        if config.get_application_name().is_none() {
            config.application_name("haneul");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let tls = options.tls.as_ref().map(|tls| {
            config.ssl_mode(postgres::config::SslMode::Require);
            tokio_postgres_rustls::MakeRustlsConnect::new(rustls::ClientConfig::clone(tls))
        });
        let engine = PostgresEngine { config, tls, writer: Mutex::new(None), readers: Mutex::new(Vec::new()) };
        let mut connection = engine.connect()?;
        prepare_schema(&mut connection.client)?;
        *lock(&engine.writer) = Some(connection);
        Ok(SqlCatalog { engine })
    }
}

fn prepare_schema(client: &mut Client) -> Result<()> {
    client.execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK])?;
    let result = upgrade_schema(client);
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&SCHEMA_LOCK]);
    result?;
    unlocked?;
    Ok(())
}

fn upgrade_schema(client: &mut Client) -> Result<()> {
    let has_settings: bool = client.query_one("SELECT to_regclass('settings') IS NOT NULL", &[])?.get(0);
    if has_settings {
        let setting = |client: &mut Client, key: &str| -> Result<Option<i64>> {
            let row = client.query_opt("SELECT value FROM settings WHERE key = $1", &[&key])?;
            Ok(row.and_then(|row| row.get::<_, String>(0).parse().ok()))
        };
        let found = setting(client, "schema_version")?.unwrap_or(0);
        if found > SCHEMA_VERSION {
            let compatible_from = setting(client, "schema_compatible_from")?.unwrap_or(found);
            if compatible_from > SCHEMA_VERSION {
                return Err(CatalogError::SchemaTooNew { found, supported: SCHEMA_VERSION });
            }
            tracing::info!(found, supported = SCHEMA_VERSION, "catalog schema is newer and compatible; used as it is");
            return Ok(());
        }
    }
    // pg_trgm is a trusted extension: a database owner may create it. Without
    // it, wildcard name searches still work, with a scan.
    let trigram = match client.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_trgm") {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "pg_trgm unavailable; wildcard name searches will scan");
            false
        }
    };
    let mut tx = client.transaction()?;
    tx.batch_execute(&schema::schema())?;
    if trigram {
        tx.batch_execute(schema::TRIGRAM_INDEXES)?;
    }
    for (key, value) in [("schema_version", SCHEMA_VERSION), ("schema_compatible_from", schema::COMPATIBLE_FROM)] {
        tx.execute(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2",
            &[&key, &value.to_string()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

impl PostgresEngine {
    fn connect(&self) -> Result<Connection> {
        let mut client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone())?,
            None => self.config.connect(NoTls)?,
        };
        // The commit is the durability point of a C-STORE success: never
        // let a server-wide `synchronous_commit = off` make it a promise.
        let mode: String = client.query_one("SHOW synchronous_commit", &[])?.get(0);
        if mode == "off" {
            tracing::warn!("synchronous_commit is off on the catalog database; haneul turns it on for its sessions");
            client.batch_execute("SET synchronous_commit = on")?;
        }
        Ok(Connection { client, statements: HashMap::new() })
    }

    /// The pooled connection, or a new one if it is gone (a restarted server).
    fn checkout(&self, slot: Option<Connection>) -> Result<Connection> {
        match slot {
            Some(connection) if !connection.client.is_closed() => Ok(connection),
            _ => self.connect(),
        }
    }
}

impl Engine for PostgresEngine {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn write<T>(&self, work: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let mut slot = lock(&self.writer);
        let mut connection = self.checkout(slot.take())?;
        let result = (|| {
            let Connection { client, statements } = &mut connection;
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
            let result = work(&mut PostgresDb { client: &mut tx, statements })?;
            tx.commit()?;
            Ok(result)
        })();
        *slot = Some(connection);
        result
    }

    fn read<T>(&self, work: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let pooled = lock(&self.readers).pop();
        let mut connection = self.checkout(pooled)?;
        let result = {
            let Connection { client, statements } = &mut connection;
            work(&mut PostgresDb { client, statements })
        };
        let mut idle = lock(&self.readers);
        if idle.len() < MAX_IDLE_READERS && !connection.client.is_closed() {
            idle.push(connection);
        }
        result
    }

    /// A SQLite catalog holding what this one holds at one instant (a
    /// repeatable-read transaction), for backups.
    fn snapshot_into(&self, path: &Path) -> Result<()> {
        let mut target = SqliteCatalog::create_for_snapshot(path)?;
        let target_tx = target.transaction()?;
        let mut connection = self.checkout(None)?;
        let Connection { client, statements } = &mut connection;
        let mut source_tx =
            client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start()?;
        copy_tables(&mut PostgresDb { client: &mut source_tx, statements }, &mut SqliteDb(&target_tx), &|_| true)?;
        source_tx.commit()?;
        target_tx.commit()?;
        Ok(())
    }
}

/// An archive's rows: a restore goes only into a database without them.
const ARCHIVE_ROWS: &str =
    "SELECT (SELECT count(*) FROM instances) + (SELECT count(*) FROM events) + (SELECT count(*) FROM users)";

fn refuse_if_archive(db: &mut dyn Db) -> Result<()> {
    if db.query_one(ARCHIVE_ROWS, &[], |row| row.int(0))? > 0 {
        return Err(CatalogError::PostgresSetup(
            "the database already holds an archive; a restore goes into an empty one".into(),
        ));
    }
    Ok(())
}

impl PostgresCatalog {
    /// Refuse (as [`load_snapshot`](Self::load_snapshot) would) a database
    /// that already holds an archive: instances, journal events or users.
    pub fn check_empty(&self) -> Result<()> {
        self.engine.read(refuse_if_archive)
    }

    /// Fill this catalog, which must hold no archive yet (no instance, no
    /// journal event, no user), with every row of the SQLite catalog
    /// snapshot at `path`: a restore. One transaction, so a failure leaves
    /// the database as it was. Identity columns continue after the restored
    /// rows, and the schema markers stay this build's.
    pub fn load_snapshot(&self, path: &Path) -> Result<()> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let source = rusqlite::Connection::open_with_flags(path, flags)?;
        let mut listing = source.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
        let source_tables =
            listing.query_map([], |row| row.get::<_, String>(0))?.collect::<rusqlite::Result<HashSet<_>>>()?;
        drop(listing);
        self.engine.write(|tx| {
            refuse_if_archive(tx)?;
            tx.execute("DELETE FROM settings", &[])?;
            copy_tables(&mut SqliteDb(&source), tx, &|table| source_tables.contains(table))?;
            for (key, value) in
                [("schema_version", SCHEMA_VERSION), ("schema_compatible_from", schema::COMPATIBLE_FROM)]
            {
                let value = value.to_string();
                tx.execute(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
                    &[key.into(), value.as_str().into()],
                )?;
            }
            let identities = tx.query_all(
                "SELECT table_name::text, column_name::text FROM information_schema.columns
                 WHERE is_identity = 'YES' AND table_schema = current_schema()",
                &[],
                |row| Ok((row.text(0)?, row.text(1)?)),
            )?;
            for (table, column) in identities {
                tx.query_one(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
                         (SELECT coalesce(max({column}), 0) + 1 FROM {table}), false)"
                    ),
                    &[],
                    |row| row.int(0),
                )?;
            }
            Ok(())
        })
    }
}

/// A PostgreSQL connection or transaction as a [`Db`].
struct PostgresDb<'a, C> {
    client: &'a mut C,
    statements: &'a mut HashMap<String, Statement>,
}

impl<C: GenericClient> PostgresDb<'_, C> {
    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(&dollar_placeholders(sql))?;
        if self.statements.len() >= MAX_PREPARED {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

impl<C: GenericClient> Db for PostgresDb<'_, C> {
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|param| param as &(dyn ToSql + Sync)).collect();
        Ok(self.client.execute(&statement, &params)?)
    }

    fn query_each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        visit: &mut dyn FnMut(&dyn Row) -> Result<bool>,
    ) -> Result<()> {
        let statement = self.statement(sql)?;
        let mut rows = self.client.query_raw(&statement, params.iter())?;
        while let Some(row) = rows.next()? {
            if !visit(&PostgresRow(row))? {
                break;
            }
        }
        Ok(())
    }
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(value) => match *ty {
                Type::INT4 => i32::try_from(value)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(value)?.to_sql(ty, out),
                Type::BOOL => (value != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => value.to_string().to_sql(ty, out),
                _ => value.to_sql(ty, out),
            },
            Param::Text(value) => value.to_sql(ty, out),
            Param::Bytes(value) => value.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // The shared SQL decides the types; `to_sql` converts integers to
        // the width PostgreSQL inferred.
        true
    }

    postgres::types::to_sql_checked!();
}

struct PostgresRow(postgres::Row);

impl PostgresRow {
    fn column_type(&self, index: usize) -> Result<&Type> {
        self.0
            .columns()
            .get(index)
            .map(|column| column.type_())
            .ok_or_else(|| CatalogError::CorruptRecord(format!("no column {index} in the result")))
    }
}

impl Row for PostgresRow {
    fn opt_int(&self, index: usize) -> Result<Option<i64>> {
        Ok(match *self.column_type(index)? {
            Type::INT4 => self.0.try_get::<_, Option<i32>>(index)?.map(i64::from),
            Type::INT2 => self.0.try_get::<_, Option<i16>>(index)?.map(i64::from),
            Type::BOOL => self.0.try_get::<_, Option<bool>>(index)?.map(i64::from),
            _ => self.0.try_get::<_, Option<i64>>(index)?,
        })
    }

    fn opt_text(&self, index: usize) -> Result<Option<String>> {
        Ok(self.0.try_get(index)?)
    }

    fn opt_bytes(&self, index: usize) -> Result<Option<Vec<u8>>> {
        Ok(self.0.try_get(index)?)
    }

    fn flag(&self, index: usize) -> Result<bool> {
        Ok(match *self.column_type(index)? {
            Type::BOOL => self.0.try_get(index)?,
            _ => self.int(index)? != 0,
        })
    }

    fn value(&self, index: usize) -> Result<Value> {
        let value = match *self.column_type(index)? {
            Type::INT8 | Type::INT4 | Type::INT2 | Type::BOOL => self.opt_int(index)?.map(Value::Int),
            Type::BYTEA => self.opt_bytes(index)?.map(Value::Bytes),
            _ => self.opt_text(index)?.map(Value::Text),
        };
        Ok(value.unwrap_or(Value::Null))
    }

    fn column_name(&self, index: usize) -> Result<String> {
        let column = self.0.columns().get(index);
        column
            .map(|column| column.name().to_string())
            .ok_or_else(|| CatalogError::CorruptRecord(format!("no column {index}")))
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}
