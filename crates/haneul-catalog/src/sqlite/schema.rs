//! The SQLite schema.
//!
//! Counts (instances per series, series per study, …) are not stored: they
//! would cost three extra page writes in every store's commit. Queries count
//! with the indexes instead, and only when a response asks for a count.

pub(crate) const SCHEMA_VERSION: i64 = 9;

/// Columns added to existing tables since version 1: (table, column, its
/// definition). Catalogs made earlier get them before `SCHEMA` (all
/// `IF NOT EXISTS`) adds new tables and indexes.
pub(crate) const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // Version 3: studies carry the site they belong to.
    ("studies", "site", "TEXT NOT NULL DEFAULT ''"),
    // Version 4: the digest of the data set alone (NULL for older rows).
    ("instances", "content_digest", "BLOB"),
    // Version 6: the node that claimed a running migration study.
    ("migration_studies", "claimed_by", "TEXT NOT NULL DEFAULT ''"),
    // Version 8: the bytes of a small unsettled blob (see `InstanceFacts::write_ahead`).
    ("unsettled", "write_ahead", "BLOB"),
];

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS patients (
    pk INTEGER PRIMARY KEY,
    identity TEXT NOT NULL UNIQUE,
    patient_id TEXT NOT NULL,
    issuer TEXT NOT NULL,
    name TEXT NOT NULL,
    name_alphabetic TEXT NOT NULL,
    name_ideographic TEXT NOT NULL,
    name_phonetic TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    sex TEXT NOT NULL,
    attrs BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS patients_patient_id ON patients(patient_id);
CREATE INDEX IF NOT EXISTS patients_name_alphabetic ON patients(name_alphabetic);
CREATE INDEX IF NOT EXISTS patients_name_ideographic ON patients(name_ideographic);
CREATE INDEX IF NOT EXISTS patients_name_phonetic ON patients(name_phonetic);
-- site: the site (institution) a study belongs to, set by its first
-- instance; users limited to sites see only theirs. '': none assigned.
CREATE TABLE IF NOT EXISTS studies (
    pk INTEGER PRIMARY KEY,
    patient_pk INTEGER NOT NULL REFERENCES patients(pk),
    study_uid TEXT NOT NULL UNIQUE,
    study_date TEXT NOT NULL,
    study_time TEXT NOT NULL,
    accession TEXT NOT NULL,
    study_id TEXT NOT NULL,
    description TEXT NOT NULL,
    referring_physician TEXT NOT NULL,
    -- Sets kept current on ingest: they change only with a new series or SOP class.
    modalities TEXT NOT NULL DEFAULT '',
    sop_classes TEXT NOT NULL DEFAULT '',
    attrs BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    site TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS studies_patient ON studies(patient_pk);
CREATE INDEX IF NOT EXISTS studies_site ON studies(site);
CREATE INDEX IF NOT EXISTS studies_date ON studies(study_date);
CREATE INDEX IF NOT EXISTS studies_accession ON studies(accession);
CREATE TABLE IF NOT EXISTS series (
    pk INTEGER PRIMARY KEY,
    study_pk INTEGER NOT NULL REFERENCES studies(pk),
    series_uid TEXT NOT NULL UNIQUE,
    modality TEXT NOT NULL,
    series_number INTEGER,
    description TEXT NOT NULL,
    body_part TEXT NOT NULL,
    attrs BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_pk);
CREATE INDEX IF NOT EXISTS series_modality ON series(modality);
CREATE TABLE IF NOT EXISTS instances (
    pk INTEGER PRIMARY KEY,
    series_pk INTEGER NOT NULL REFERENCES series(pk),
    sop_uid TEXT NOT NULL UNIQUE,
    sop_class TEXT NOT NULL,
    instance_number INTEGER,
    transfer_syntax TEXT NOT NULL,
    blob_path TEXT NOT NULL UNIQUE,
    blob_size INTEGER NOT NULL,
    blob_digest BLOB NOT NULL,
    dataset_offset INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    source_ae TEXT NOT NULL,
    attrs BLOB NOT NULL,
    -- BLAKE3 of the data set without the file meta group (version 4; NULL
    -- for instances stored earlier): equal for copies of one instance on
    -- two nodes, whose meta groups name different senders.
    content_digest BLOB
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_pk);
CREATE TABLE IF NOT EXISTS superseded (
    pk INTEGER PRIMARY KEY,
    sop_uid TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    blob_path TEXT NOT NULL UNIQUE,
    blob_size INTEGER NOT NULL,
    blob_digest BLOB NOT NULL,
    dataset_offset INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    superseded_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS superseded_sop ON superseded(sop_uid);
-- Versions of an instance that a replication peer holds with other bytes
-- than the current one here (schema version 4): kept for review, never
-- dropped, so two sites that stored different content under one UID both end
-- up holding both versions.
CREATE TABLE IF NOT EXISTS conflicts (
    pk INTEGER PRIMARY KEY,
    sop_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    blob_path TEXT NOT NULL UNIQUE,
    blob_size INTEGER NOT NULL,
    blob_digest BLOB NOT NULL,
    dataset_offset INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    source_ae TEXT NOT NULL,
    detected_ms INTEGER NOT NULL,
    content_digest BLOB,
    UNIQUE(sop_uid, blob_digest)
);
-- Blobs committed before their fsync had finished; see `InstanceFacts::blob_durable`.
-- write_ahead: the blob's bytes, until it is settled (`InstanceFacts::write_ahead`).
CREATE TABLE IF NOT EXISTS unsettled (
    blob_path TEXT PRIMARY KEY,
    write_ahead BLOB
) WITHOUT ROWID;
-- SOP Instance UIDs removed here (schema version 4): a replication peer that
-- had not yet learnt of the removal and sends the instance again (its journal
-- or its verify) does not bring it back. A new store from anyone else clears it.
CREATE TABLE IF NOT EXISTS removed_uids (
    sop_uid TEXT PRIMARY KEY,
    removed_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- Migrations from legacy PACS (schema version 5): the studies found at each
-- source and where each stands, and what verification found different.
CREATE TABLE IF NOT EXISTS migration_studies (
    source TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,
    study_date TEXT NOT NULL,
    expected_instances INTEGER,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    migrated_instances INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '',
    -- For a running study: when its node last renewed its claim (see claimed_by).
    updated_ms INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    -- The node running the study ('' for a lone node, or before version 6).
    claimed_by TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (source, study_uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS migration_studies_state ON migration_studies(source, state, study_date);
-- Leases on background jobs one node runs at a time (schema version 7).
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- Corrected attribute values (schema version 9): one register per patient
-- (key: its identity, as in patients) or study (key: its UID) and attribute
-- (tag as a number, value as text), holding the latest correction by hybrid
-- logical clock (hlc, then origin), so that nodes that receive the same
-- corrections in any order hold the same values. Stored files stay as
-- received; the values are applied to the catalog rows and to retrieved copies.
CREATE TABLE IF NOT EXISTS corrections (
    level TEXT NOT NULL,
    key TEXT NOT NULL,
    tag INTEGER NOT NULL,
    vr TEXT NOT NULL,
    value TEXT NOT NULL,
    hlc INTEGER NOT NULL,
    origin TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (level, key, tag)
) WITHOUT ROWID;
-- Remote AEs every node knows, besides each node's [[known_ae]] (schema version 7).
CREATE TABLE IF NOT EXISTS shared_aes (
    title TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    role TEXT NOT NULL,
    site TEXT NOT NULL,
    description TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    updated_by TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS migration_discrepancies (
    source TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    sop_uid TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS migration_discrepancies_study ON migration_discrepancies(source, study_uid);
-- Files of removed instances, deleted after the removal commits.
CREATE TABLE IF NOT EXISTS trash (
    blob_path TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    address TEXT NOT NULL,
    session TEXT NOT NULL,
    patient_id TEXT,
    study_uid TEXT,
    series_uid TEXT,
    sop_uid TEXT,
    detail TEXT NOT NULL
);
-- Accounts (schema version 2). Credentials are stored only hashed: an
-- Argon2id PHC string per password, a BLAKE3 digest per API token secret.
CREATE TABLE IF NOT EXISTS users (
    pk INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    -- JSON list of site names; empty: every site.
    sites TEXT NOT NULL DEFAULT '[]',
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    user_pk INTEGER NOT NULL REFERENCES users(pk),
    name TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    revoked_ms INTEGER
);
CREATE INDEX IF NOT EXISTS api_tokens_user ON api_tokens(user_pk);
"#;
