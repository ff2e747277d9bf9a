//! Every contract test runs on each engine: SQLite in a temporary directory
//! and PostgreSQL in a fresh database (see `haneul_catalog::testing`).

use std::ops::Deref;

use haneul_catalog::testing::TestDatabase;
use haneul_catalog::{Catalog, PostgresCatalog, SqliteCatalog};

/// An open catalog and what it lives in, removed on drop.
pub struct Opened {
    // Declared first so it is dropped (its connections closed) first.
    catalog: Box<dyn Catalog>,
    _dir: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

impl Deref for Opened {
    type Target = dyn Catalog;

    fn deref(&self) -> &Self::Target {
        self.catalog.as_ref()
    }
}

pub fn open_sqlite() -> Opened {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = SqliteCatalog::open(dir.path().join("catalog.sqlite")).expect("open sqlite catalog");
    Opened { catalog: Box::new(catalog), _dir: Some(dir), _database: None }
}

pub fn open_postgres() -> Opened {
    let database = TestDatabase::create();
    let catalog = PostgresCatalog::connect(&database.options).expect("open postgresql catalog");
    Opened { catalog: Box::new(catalog), _dir: None, _database: Some(database) }
}

/// `fn name(catalog)` (a `&dyn Catalog`) as one test per engine: `name::sqlite`, `name::postgres`.
macro_rules! on_every_engine {
    ($(#[doc = $doc:literal])* fn $name:ident($catalog:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[doc = $doc])*
            fn run($catalog: &dyn Catalog) $body

            #[test]
            fn sqlite() {
                run(&*crate::engines::open_sqlite())
            }

            #[test]
            fn postgres() {
                run(&*crate::engines::open_postgres())
            }
        }
    };
}
