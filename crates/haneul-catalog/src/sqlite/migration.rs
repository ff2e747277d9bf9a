//! Migration records in SQLite (see [`crate::migration`]).

use rusqlite::{params, Connection, Row};

use super::now_ms;
use crate::migration::*;
use crate::Result;

const STUDY_COLUMNS: &str = "source, study_uid, patient_id, patient_name, study_date, expected_instances, state,
    attempts, migrated_instances, detail, updated_ms, next_attempt_ms";

fn study_from_row(row: &Row<'_>) -> rusqlite::Result<MigrationStudy> {
    let state: String = row.get(6)?;
    Ok(MigrationStudy {
        source: row.get(0)?,
        study_uid: row.get(1)?,
        patient_id: row.get(2)?,
        patient_name: row.get(3)?,
        study_date: row.get(4)?,
        expected_instances: row.get(5)?,
        // Written only by this module; an unknown word is read as pending so it is fetched again.
        state: MigrationState::parse(&state).unwrap_or(MigrationState::Pending),
        attempts: row.get(7)?,
        migrated_instances: row.get(8)?,
        detail: row.get(9)?,
        updated_ms: row.get(10)?,
        next_attempt_ms: row.get(11)?,
    })
}

pub(super) fn plan(connection: &mut Connection, source: &str, studies: &[PlannedStudy]) -> Result<usize> {
    let tx = connection.transaction()?;
    let mut added = 0;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO migration_studies (source, study_uid, patient_id, patient_name, study_date,
                 expected_instances, state, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7) ON CONFLICT DO NOTHING",
        )?;
        let at_ms = now_ms();
        for study in studies {
            added += insert.execute(params![
                source,
                study.study_uid,
                study.patient_id,
                study.patient_name,
                study.study_date,
                study.expected_instances,
                at_ms
            ])?;
        }
    }
    tx.commit()?;
    Ok(added)
}

pub(super) fn claim(
    connection: &mut Connection,
    source: &str,
    limit: usize,
    now: i64,
    max_attempts: i64,
) -> Result<Vec<MigrationStudy>> {
    let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let claimed = {
        let mut select = tx.prepare_cached(&format!(
            "SELECT {STUDY_COLUMNS} FROM migration_studies
             WHERE source = ?1 AND (state = 'pending'
                OR (state = 'failed' AND attempts < ?2 AND next_attempt_ms <= ?3))
             ORDER BY study_date DESC, study_uid LIMIT ?4"
        ))?;
        let studies = select
            .query_map(params![source, max_attempts, now, limit as i64], study_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut mark = tx.prepare_cached(
            "UPDATE migration_studies SET state = 'running', attempts = attempts + 1, updated_ms = ?3
             WHERE source = ?1 AND study_uid = ?2",
        )?;
        let mut claimed = Vec::with_capacity(studies.len());
        for mut study in studies {
            mark.execute(params![source, study.study_uid, now])?;
            study.state = MigrationState::Running;
            study.attempts += 1;
            study.updated_ms = now;
            claimed.push(study);
        }
        claimed
    };
    tx.commit()?;
    Ok(claimed)
}

pub(super) fn update(
    connection: &mut Connection,
    source: &str,
    study_uid: &str,
    change: &MigrationUpdate,
) -> Result<()> {
    let tx = connection.transaction()?;
    tx.prepare_cached(
        "UPDATE migration_studies SET
            state = COALESCE(?3, state),
            detail = COALESCE(?4, detail),
            migrated_instances = COALESCE(?5, migrated_instances),
            next_attempt_ms = COALESCE(?6, next_attempt_ms),
            updated_ms = ?7
         WHERE source = ?1 AND study_uid = ?2",
    )?
    .execute(params![
        source,
        study_uid,
        change.state.map(MigrationState::as_str),
        change.detail,
        change.migrated_instances,
        change.next_attempt_ms,
        now_ms()
    ])?;
    if let Some(discrepancies) = &change.discrepancies {
        tx.prepare_cached("DELETE FROM migration_discrepancies WHERE source = ?1 AND study_uid = ?2")?
            .execute(params![source, study_uid])?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO migration_discrepancies (source, study_uid, sop_uid, kind, detail)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for discrepancy in discrepancies {
            insert.execute(params![source, study_uid, discrepancy.sop_uid, discrepancy.kind, discrepancy.detail])?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn reset(
    connection: &mut Connection,
    source: &str,
    from: &[MigrationState],
    to: MigrationState,
) -> Result<usize> {
    let tx = connection.transaction()?;
    let mut changed = 0;
    {
        let mut statement = tx.prepare_cached(
            "UPDATE migration_studies SET state = ?3, updated_ms = ?4 WHERE source = ?1 AND state = ?2",
        )?;
        for state in from {
            changed += statement.execute(params![source, state.as_str(), to.as_str(), now_ms()])?;
        }
    }
    tx.commit()?;
    Ok(changed)
}

pub(super) fn counts(connection: &Connection, source: &str) -> Result<MigrationCounts> {
    let mut counts = MigrationCounts::default();
    let mut statement = connection.prepare_cached(
        "SELECT state, COUNT(*), COALESCE(SUM(expected_instances), 0), COALESCE(SUM(migrated_instances), 0)
         FROM migration_studies WHERE source = ?1 GROUP BY state",
    )?;
    let rows = statement.query_map([source], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?, row.get::<_, i64>(3)?))
    })?;
    for row in rows {
        let (state, studies, expected, migrated) = row?;
        counts.total += studies;
        counts.expected_instances += expected;
        counts.migrated_instances += migrated;
        let slot = match MigrationState::parse(&state) {
            Some(MigrationState::Pending) | None => &mut counts.pending,
            Some(MigrationState::Running) => &mut counts.running,
            Some(MigrationState::Done) => &mut counts.done,
            Some(MigrationState::Failed) => &mut counts.failed,
            Some(MigrationState::Verified) => &mut counts.verified,
            Some(MigrationState::Discrepant) => &mut counts.discrepant,
        };
        *slot += studies;
    }
    counts.discrepancies = connection
        .prepare_cached("SELECT COUNT(*) FROM migration_discrepancies WHERE source = ?1")?
        .query_row([source], |row| row.get(0))?;
    Ok(counts)
}

pub(super) fn studies(
    connection: &Connection,
    source: &str,
    states: Option<&[MigrationState]>,
    after_uid: &str,
    limit: usize,
) -> Result<Vec<MigrationStudy>> {
    // States as a list the query can test with instr(): few values, no dynamic SQL.
    let wanted = states.map(|states| states.iter().map(|state| format!("|{}|", state.as_str())).collect::<String>());
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {STUDY_COLUMNS} FROM migration_studies
         WHERE source = ?1 AND study_uid > ?2 AND (?3 IS NULL OR instr(?3, '|' || state || '|') > 0)
         ORDER BY study_uid LIMIT ?4"
    ))?;
    let rows = statement.query_map(params![source, after_uid, wanted, limit as i64], study_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) fn discrepancies(connection: &Connection, source: &str) -> Result<Vec<Discrepancy>> {
    let mut statement = connection.prepare_cached(
        "SELECT study_uid, sop_uid, kind, detail FROM migration_discrepancies WHERE source = ?1
         ORDER BY study_uid, sop_uid, kind",
    )?;
    let rows = statement.query_map([source], |row| {
        Ok(Discrepancy { study_uid: row.get(0)?, sop_uid: row.get(1)?, kind: row.get(2)?, detail: row.get(3)? })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
