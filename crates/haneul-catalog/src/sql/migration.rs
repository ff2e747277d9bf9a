//! Migration records (see [`crate::migration`]).

use super::db::{row_limit, Db, Row};
use super::now_ms;
use crate::migration::*;
use crate::Result;

const STUDY_COLUMNS: &str = "source, study_uid, patient_id, patient_name, study_date, expected_instances, state,
    attempts, migrated_instances, detail, updated_ms, next_attempt_ms";

fn study_from_row(row: &dyn Row) -> Result<MigrationStudy> {
    Ok(MigrationStudy {
        source: row.text(0)?,
        study_uid: row.text(1)?,
        patient_id: row.text(2)?,
        patient_name: row.text(3)?,
        study_date: row.text(4)?,
        expected_instances: row.opt_int(5)?,
        // Written only by this module; an unknown word is read as pending so it is fetched again.
        state: MigrationState::parse(&row.text(6)?).unwrap_or(MigrationState::Pending),
        attempts: row.int(7)?,
        migrated_instances: row.int(8)?,
        detail: row.text(9)?,
        updated_ms: row.int(10)?,
        next_attempt_ms: row.int(11)?,
    })
}

pub(super) fn plan(tx: &mut dyn Db, source: &str, studies: &[PlannedStudy]) -> Result<usize> {
    let mut added = 0;
    let at_ms = now_ms();
    for study in studies {
        added += tx.execute(
            "INSERT INTO migration_studies (source, study_uid, patient_id, patient_name, study_date,
                 expected_instances, state, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7) ON CONFLICT DO NOTHING",
            &[
                source.into(),
                (&study.study_uid).into(),
                (&study.patient_id).into(),
                (&study.patient_name).into(),
                (&study.study_date).into(),
                study.expected_instances.into(),
                at_ms.into(),
            ],
        )?;
    }
    Ok(added as usize)
}

/// Runs in a write transaction, which the engines serialise: a study is
/// claimed by one node only.
pub(super) fn claim(
    tx: &mut dyn Db,
    source: &str,
    limit: usize,
    claimant: &Claimant<'_>,
    max_attempts: i64,
) -> Result<Vec<MigrationStudy>> {
    let now = claimant.now_ms;
    let studies = tx.query_all(
        &format!(
            "SELECT {STUDY_COLUMNS} FROM migration_studies
             WHERE source = ?1 AND (state = 'pending'
                OR (state = 'failed' AND attempts < ?2 AND next_attempt_ms <= ?3)
                OR (state = 'running' AND updated_ms < ?5))
             ORDER BY study_date DESC, study_uid LIMIT ?4"
        ),
        &[source.into(), max_attempts.into(), now.into(), row_limit(limit).into(), claimant.abandoned_before_ms.into()],
        study_from_row,
    )?;
    let mut claimed = Vec::with_capacity(studies.len());
    for mut study in studies {
        if study.state == MigrationState::Running {
            tracing::warn!(%source, study_uid = %study.study_uid, node = %claimant.node,
                "taking over a migration study whose node stopped renewing its claim");
        }
        tx.execute(
            "UPDATE migration_studies
             SET state = 'running', attempts = attempts + 1, updated_ms = ?3, claimed_by = ?4
             WHERE source = ?1 AND study_uid = ?2",
            &[source.into(), (&study.study_uid).into(), now.into(), claimant.node.into()],
        )?;
        study.state = MigrationState::Running;
        study.attempts += 1;
        study.updated_ms = now;
        claimed.push(study);
    }
    Ok(claimed)
}

pub(super) fn renew(tx: &mut dyn Db, source: &str, node: &str, now: i64) -> Result<usize> {
    tx.execute(
        "UPDATE migration_studies SET updated_ms = ?3 WHERE source = ?1 AND state = 'running' AND claimed_by = ?2",
        &[source.into(), node.into(), now.into()],
    )
    .map(|changed| changed as usize)
}

pub(super) fn release(tx: &mut dyn Db, source: &str, node: &str) -> Result<usize> {
    tx.execute(
        "UPDATE migration_studies SET state = 'pending' WHERE source = ?1 AND state = 'running' AND claimed_by = ?2",
        &[source.into(), node.into()],
    )
    .map(|changed| changed as usize)
}

pub(super) fn update(tx: &mut dyn Db, source: &str, study_uid: &str, change: &MigrationUpdate) -> Result<()> {
    tx.execute(
        "UPDATE migration_studies SET
            state = COALESCE(?3, state),
            detail = COALESCE(?4, detail),
            migrated_instances = COALESCE(?5, migrated_instances),
            next_attempt_ms = COALESCE(?6, next_attempt_ms),
            updated_ms = ?7
         WHERE source = ?1 AND study_uid = ?2",
        &[
            source.into(),
            study_uid.into(),
            change.state.map(MigrationState::as_str).into(),
            change.detail.as_ref().into(),
            change.migrated_instances.into(),
            change.next_attempt_ms.into(),
            now_ms().into(),
        ],
    )?;
    if let Some(discrepancies) = &change.discrepancies {
        tx.execute(
            "DELETE FROM migration_discrepancies WHERE source = ?1 AND study_uid = ?2",
            &[source.into(), study_uid.into()],
        )?;
        for discrepancy in discrepancies {
            tx.execute(
                "INSERT INTO migration_discrepancies (source, study_uid, sop_uid, kind, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                &[
                    source.into(),
                    study_uid.into(),
                    (&discrepancy.sop_uid).into(),
                    (&discrepancy.kind).into(),
                    (&discrepancy.detail).into(),
                ],
            )?;
        }
    }
    Ok(())
}

pub(super) fn reset(tx: &mut dyn Db, source: &str, from: &[MigrationState], to: MigrationState) -> Result<usize> {
    let mut changed = 0;
    for state in from {
        changed += tx.execute(
            "UPDATE migration_studies SET state = ?3, updated_ms = ?4 WHERE source = ?1 AND state = ?2",
            &[source.into(), state.as_str().into(), to.as_str().into(), now_ms().into()],
        )?;
    }
    Ok(changed as usize)
}

pub(super) fn counts(db: &mut dyn Db, source: &str) -> Result<MigrationCounts> {
    let mut counts = MigrationCounts::default();
    let rows = db.query_all(
        "SELECT state, COUNT(*), CAST(COALESCE(SUM(expected_instances), 0) AS BIGINT),
                CAST(COALESCE(SUM(migrated_instances), 0) AS BIGINT)
         FROM migration_studies WHERE source = ?1 GROUP BY state",
        &[source.into()],
        |row| Ok((row.text(0)?, row.int(1)?, row.int(2)?, row.int(3)?)),
    )?;
    for (state, studies, expected, migrated) in rows {
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
    counts.discrepancies =
        db.query_one("SELECT COUNT(*) FROM migration_discrepancies WHERE source = ?1", &[source.into()], |row| {
            row.int(0)
        })?;
    Ok(counts)
}

pub(super) fn studies(
    db: &mut dyn Db,
    source: &str,
    states: Option<&[MigrationState]>,
    after_uid: &str,
    limit: usize,
) -> Result<Vec<MigrationStudy>> {
    // States as one string the query searches: few values, no dynamic SQL.
    let wanted = states.map(|states| states.iter().map(|state| format!("|{}|", state.as_str())).collect::<String>());
    db.query_all(
        &format!(
            "SELECT {STUDY_COLUMNS} FROM migration_studies
             WHERE source = ?1 AND study_uid > ?2
               AND (CAST(?3 AS TEXT) IS NULL OR CAST(?3 AS TEXT) LIKE '%|' || state || '|%')
             ORDER BY study_uid LIMIT ?4"
        ),
        &[source.into(), after_uid.into(), wanted.as_ref().into(), row_limit(limit).into()],
        study_from_row,
    )
}

pub(super) fn discrepancies(db: &mut dyn Db, source: &str) -> Result<Vec<Discrepancy>> {
    db.query_all(
        "SELECT study_uid, sop_uid, kind, detail FROM migration_discrepancies WHERE source = ?1
         ORDER BY study_uid, sop_uid, kind",
        &[source.into()],
        |row| {
            Ok(Discrepancy { study_uid: row.text(0)?, sop_uid: row.text(1)?, kind: row.text(2)?, detail: row.text(3)? })
        },
    )
}
