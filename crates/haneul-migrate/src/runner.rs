//! The migration runner: one task per running source that plans (lists the
//! source's studies into the catalog once), then fetches and verifies study
//! after study, as many at a time as the time windows allow. Every step is
//! recorded in the catalog, so a run stopped anywhere (pause, crash, restart)
//! continues where it stopped; fetching a study again is harmless, as the
//! archive takes an identical instance again without a second copy.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use haneul_core::migration::{
    MigrationControl, MigrationError, MigrationFuture, MigrationPhase, MigrationReport, MigrationStatus, StartOptions,
};
use haneul_core::{Archive, Discrepancy, MigrationState, MigrationStudy, MigrationUpdate, Origin};
use haneul_dicom::levels::InformationModel;
use haneul_dimse::command::status;
use haneul_dimse::{sop, Client, ProposedContext};
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinSet;

use crate::dicomweb::DicomWebSource;
use crate::folder::FolderIndex;
use crate::get;
use crate::silence::Heartbeat;
use crate::walk::{self, DateRange, DicomNode};
use crate::windows::{local_minute_now, parallel_at, Window};

/// The longest pause before a failed study is tried again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// How often a run looks at its time windows and its retry times.
const TICK: Duration = Duration::from_secs(1);
/// Studies read per page from the catalog.
const PAGE: usize = 500;
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// How a source's studies are listed and fetched.
#[derive(Debug, Clone)]
pub enum Fetch {
    /// C-FIND the study list (split where the node caps its answers), then
    /// C-MOVE each study to `destination`, this server's AE title.
    DicomMove { node: DicomNode, destination: String, cap: Option<usize> },
    /// C-FIND the study list as for `DicomMove`, then C-GET each study: the
    /// node sends on the association we open, it needs no route to us.
    DicomGet { node: DicomNode, cap: Option<usize> },
    /// Every instance file under a folder (a folder tree, or the folder of
    /// DICOMDIR media), imported as sent by `actor`.
    Folder { path: PathBuf, actor: String },
    /// A DICOMweb server: QIDO-RS listings, WADO-RS retrieves stored as sent by `actor`.
    DicomWeb { source: DicomWebSource, actor: String },
}

impl Fetch {
    fn method(&self) -> &'static str {
        match self {
            Fetch::DicomMove { .. } => "c-move",
            Fetch::DicomGet { .. } => "c-get",
            Fetch::Folder { .. } => "folder",
            Fetch::DicomWeb { .. } => "dicomweb",
        }
    }
}

/// A configured migration source.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub fetch: Fetch,
    /// Associations to the source at once (fetches and verification queries) outside every window.
    pub parallel: usize,
    pub windows: Vec<Window>,
    /// Instances per second at most; 0: no limit.
    pub rate_limit: f64,
    /// Tries per study before it stays failed.
    pub max_attempts: i64,
    /// The pause before the first retry; it doubles with each attempt.
    pub retry_delay: Duration,
    /// How long a running study's claim holds without renewal: a node that
    /// stops renewing (it died) leaves its studies to the others after this.
    pub claim_lease: Duration,
}

/// What a run does; kept in the catalog's settings while it runs, so a
/// restarted server resumes it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct RunState {
    verify_only: bool,
    since: Option<String>,
    until: Option<String>,
    /// The study list is complete in the catalog.
    planned: bool,
}

#[derive(Debug, Clone)]
struct Progress {
    phase: MigrationPhase,
    started: Option<Instant>,
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
    fetched_this_run: u64,
    parallel_now: usize,
    last_error: Option<String>,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            phase: MigrationPhase::Idle,
            started: None,
            started_ms: None,
            finished_ms: None,
            fetched_this_run: 0,
            parallel_now: 0,
            last_error: None,
        }
    }
}

/// Every configured source and the runs under way.
pub struct Migrations {
    archive: Arc<Archive>,
    sources: BTreeMap<String, Arc<Source>>,
    progress: Mutex<HashMap<String, Progress>>,
    /// Stop signals of the runs under way.
    running: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Itself, for the tasks it spawns.
    me: std::sync::Weak<Migrations>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

fn setting_key(source: &str) -> String {
    format!("migration.{source}")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Migrations {
    pub fn new(archive: Arc<Archive>, sources: Vec<Source>) -> Arc<Migrations> {
        let sources = sources.into_iter().map(|source| (source.name.clone(), Arc::new(source))).collect();
        Arc::new_cyclic(|me| Migrations {
            archive,
            sources,
            progress: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    /// Continue the runs a stopped server left unfinished.
    pub async fn resume(self: &Arc<Self>) {
        for name in self.sources.keys() {
            let saved = match self.archive.setting(&setting_key(name)).await {
                Ok(Some(saved)) if !saved.is_empty() => saved,
                Ok(_) => continue,
                Err(error) => {
                    tracing::error!(source = %name, %error, "cannot read the migration's saved state");
                    continue;
                }
            };
            match serde_json::from_str::<RunState>(&saved) {
                Ok(state) => {
                    tracing::info!(source = %name, verify_only = state.verify_only, "resuming the migration");
                    self.spawn_run(name, state);
                }
                Err(error) => tracing::error!(source = %name, %error, "the migration's saved state is unreadable"),
            }
        }
    }

    fn source(&self, name: &str) -> Result<Arc<Source>, MigrationError> {
        self.sources.get(name).cloned().ok_or_else(|| MigrationError::UnknownSource(name.to_string()))
    }

    fn is_running(&self, name: &str) -> bool {
        lock(&self.running).contains_key(name)
    }

    fn update_progress(&self, name: &str, change: impl FnOnce(&mut Progress)) {
        change(lock(&self.progress).entry(name.to_string()).or_default());
    }

    fn spawn_run(&self, name: &str, state: RunState) {
        let Some(source) = self.sources.get(name).cloned() else { return };
        let Some(migrations) = self.me.upgrade() else { return };
        let (stop, stopped) = watch::channel(false);
        lock(&self.running).insert(name.to_string(), stop);
        self.update_progress(name, |progress| {
            *progress = Progress {
                phase: if state.verify_only { MigrationPhase::Verifying } else { MigrationPhase::Planning },
                started: Some(Instant::now()),
                started_ms: Some(now_ms()),
                ..Progress::default()
            }
        });
        tokio::spawn(async move {
            let name = source.name.clone();
            let outcome = migrations.run(source, state, stopped).await;
            lock(&migrations.running).remove(&name);
            let phase = match outcome {
                Ok(phase) => phase,
                Err(error) => {
                    tracing::error!(source = %name, %error, "migration stopped");
                    migrations.update_progress(&name, |progress| progress.last_error = Some(error.to_string()));
                    MigrationPhase::Paused
                }
            };
            migrations.update_progress(&name, |progress| {
                progress.phase = phase;
                progress.parallel_now = 0;
                progress.finished_ms = Some(now_ms());
            });
        });
    }

    async fn save_state(&self, name: &str, state: Option<&RunState>) -> Result<(), MigrationError> {
        let value = match state {
            Some(state) => serde_json::to_string(state).map_err(|error| MigrationError::Invalid(error.to_string()))?,
            None => String::new(),
        };
        Ok(self.archive.set_setting(&setting_key(name), &value).await?)
    }

    /// One run, until every study is settled or it is told to stop.
    async fn run(
        &self,
        source: Arc<Source>,
        mut state: RunState,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<MigrationPhase, MigrationError> {
        let name = source.name.clone();
        let context = Arc::new(RunContext {
            archive: Arc::clone(&self.archive),
            source: Arc::clone(&source),
            origin: Origin {
                actor: format!("migrate:{name}"),
                address: "local".into(),
                session: format!("migrate-{name}-{}", now_ms()),
                ..Origin::default()
            },
            folder: OnceCell::new(),
            rate: RateLimiter::new(source.rate_limit),
        });
        let mut failures = 0u32;
        while !state.verify_only && !state.planned {
            if *stopped.borrow() {
                return Ok(MigrationPhase::Paused);
            }
            self.update_progress(&name, |progress| progress.phase = MigrationPhase::Planning);
            match context.plan(&state).await {
                Ok(added) => {
                    tracing::info!(source = %name, added, "migration planned");
                    state.planned = true;
                    self.save_state(&name, Some(&state)).await?;
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(source = %name, %error, "listing the source's studies failed; trying again");
                    self.update_progress(&name, |progress| {
                        progress.phase = MigrationPhase::Waiting;
                        progress.last_error = Some(error);
                    });
                    let pause = retry_delay(source.retry_delay, failures);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stopped.changed() => {}
                    }
                }
            }
        }
        // Studies a stopped run of this node left running are fetched again
        // (other nodes' running studies are theirs until their claims lapse).
        self.archive.migration_release(&name).await?;
        let mut renewed_at = std::time::Instant::now();
        if state.verify_only {
            self.archive
                .migration_reset(
                    &name,
                    vec![MigrationState::Verified, MigrationState::Discrepant],
                    MigrationState::Done,
                )
                .await?;
        }
        let working_phase = if state.verify_only { MigrationPhase::Verifying } else { MigrationPhase::Migrating };
        // A study is fetched, then verified in a task of its own. A verification
        // that queries the source (a C-FIND at IMAGE level on an association of
        // its own, or DICOMweb requests) keeps its study's slot: fetches and such
        // queries together stay within the associations allowed for the source,
        // which a legacy PACS serves with a fixed pool of workers (Orthanc's
        // default is 4). One that needs nothing from the source frees the slot at once.
        let mut fetching: JoinSet<(MigrationStudy, Result<Fetched, String>)> = JoinSet::new();
        let mut verifying: JoinSet<Result<(), String>> = JoinSet::new();
        // Each verification's study and whether it holds a slot, by task, so
        // that even a task that panicked gives both back.
        let mut verifications: HashMap<tokio::task::Id, (String, bool)> = HashMap::new();
        let mut in_flight: HashSet<String> = HashSet::new();
        // Fetched studies not verified yet (a run stopped between the two) are verified first, in UID order.
        let mut done_cursor: Option<String> = Some(String::new());
        loop {
            if *stopped.borrow() {
                while fetching.join_next().await.is_some() {}
                while verifying.join_next().await.is_some() {}
                return Ok(MigrationPhase::Paused);
            }
            let allowed = parallel_at(&source.windows, source.parallel, local_minute_now());
            // Studies a stopped run left fetched are verified first, before any
            // fetch: at most `allowed` at once, whether or not they query the
            // source (a folder's verification reads and hashes every file).
            let verify_free = allowed.saturating_sub(fetching.len() + verifying.len());
            if verify_free > 0 {
                if let Some(after) = done_cursor.take() {
                    let page = self
                        .archive
                        .migration_studies(&name, Some(vec![MigrationState::Done]), &after, verify_free)
                        .await?;
                    done_cursor = page.last().map(|study| study.study_uid.clone());
                    for study in page {
                        if !in_flight.insert(study.study_uid.clone()) {
                            continue;
                        }
                        let queries = context.verification_queries_source(false);
                        let context = Arc::clone(&context);
                        let uid = study.study_uid.clone();
                        let task = verifying.spawn(async move { context.verify_study(&study, false, None).await });
                        verifications.insert(task.id(), (uid, queries));
                    }
                }
            }
            let querying = verifications.values().filter(|(_, queries)| *queries).count();
            let fetch_free = allowed.saturating_sub(fetching.len() + querying);
            if done_cursor.is_none() && fetch_free > 0 && !state.verify_only {
                let claimed = self
                    .archive
                    .migration_claim(&name, fetch_free, now_ms(), source.claim_lease, source.max_attempts)
                    .await?;
                for study in claimed {
                    in_flight.insert(study.study_uid.clone());
                    let context = Arc::clone(&context);
                    fetching.spawn(async move {
                        let result = context.fetch_study(&study).await;
                        (study, result)
                    });
                }
            }
            if renewed_at.elapsed() >= source.claim_lease / 3 {
                self.archive.migration_renew(&name, now_ms()).await?;
                renewed_at = std::time::Instant::now();
            }
            let idle = fetching.is_empty() && verifying.is_empty();
            self.update_progress(&name, |progress| {
                progress.parallel_now = allowed;
                progress.phase = if allowed == 0 || idle { MigrationPhase::Waiting } else { working_phase };
            });
            if idle && allowed > 0 && done_cursor.is_none() && !self.retries_pending(&source).await? {
                let counts = self.archive.migration_counts(&name).await?;
                if counts.pending == 0 && counts.running == 0 && counts.done == 0 {
                    self.save_state(&name, None).await?;
                    tracing::info!(source = %name, verified = counts.verified, discrepant = counts.discrepant,
                        failed = counts.failed, "migration finished");
                    return Ok(MigrationPhase::Finished);
                }
            }
            tokio::select! {
                Some(joined) = fetching.join_next(), if !fetching.is_empty() => {
                    let Ok((study, result)) = joined else { continue };
                    match result {
                        Ok(fetched) => {
                            self.update_progress(&name, |p| p.fetched_this_run += fetched.count);
                            let queries = context.verification_queries_source(fetched.listed.is_some());
                            let context = Arc::clone(&context);
                            let uid = study.study_uid.clone();
                            let task = verifying
                                .spawn(async move { context.verify_study(&study, true, fetched.listed).await });
                            verifications.insert(task.id(), (uid, queries));
                        }
                        Err(error) => {
                            in_flight.remove(&study.study_uid);
                            self.update_progress(&name, |p| p.last_error = Some(error));
                        }
                    }
                }
                Some(joined) = verifying.join_next_with_id(), if !verifying.is_empty() => {
                    let (task, result) = match joined {
                        Ok((task, result)) => (task, Some(result)),
                        Err(error) => (error.id(), None),
                    };
                    if let Some((uid, _)) = verifications.remove(&task) {
                        in_flight.remove(&uid);
                    }
                    if let Some(Err(error)) = result {
                        self.update_progress(&name, |p| p.last_error = Some(error));
                    }
                }
                _ = tokio::time::sleep(TICK) => {}
                _ = stopped.changed() => {}
            }
        }
    }

    /// Whether a failed study will be tried again.
    async fn retries_pending(&self, source: &Source) -> Result<bool, MigrationError> {
        let failed =
            self.archive.migration_studies(&source.name, Some(vec![MigrationState::Failed]), "", usize::MAX).await?;
        Ok(failed.iter().any(|study| study.attempts < source.max_attempts && study.next_attempt_ms != NEVER))
    }

    async fn status_of(&self, name: &str) -> Result<MigrationStatus, MigrationError> {
        let source = self.source(name)?;
        let counts = self.archive.migration_counts(name).await?;
        let progress = lock(&self.progress).get(name).cloned().unwrap_or_default();
        let mut phase = progress.phase;
        if phase == MigrationPhase::Idle && counts.total > 0 && counts.pending == 0 && counts.running == 0 {
            phase = MigrationPhase::Finished;
        }
        let elapsed = progress.started.map_or(0.0, |started| started.elapsed().as_secs_f64());
        let rate = if elapsed > 0.0 { progress.fetched_this_run as f64 / elapsed } else { 0.0 };
        let remaining = (counts.expected_instances - counts.migrated_instances).max(0) as f64;
        let eta_seconds = (rate > 0.0 && self.is_running(name)).then(|| (remaining / rate).ceil() as u64);
        Ok(MigrationStatus {
            source: name.to_string(),
            method: source.fetch.method().to_string(),
            phase,
            counts,
            parallel_now: progress.parallel_now,
            instances_per_second: rate,
            eta_seconds,
            started_ms: progress.started_ms,
            finished_ms: progress.finished_ms,
            last_error: progress.last_error,
        })
    }

    async fn begin(&self, name: &str, state: RunState) -> Result<MigrationStatus, MigrationError> {
        self.source(name)?;
        if !self.is_running(name) {
            self.save_state(name, Some(&state)).await?;
            self.spawn_run(name, state);
        }
        self.status_of(name).await
    }
}

impl MigrationControl for Migrations {
    fn start<'a>(&'a self, source: &'a str, options: StartOptions) -> MigrationFuture<'a, MigrationStatus> {
        Box::pin(async move {
            for date in [&options.since, &options.until].into_iter().flatten() {
                if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(MigrationError::Invalid(format!("{date:?} is not a date (YYYYMMDD)")));
                }
            }
            self.source(source)?;
            if !self.is_running(source) {
                // A new start gives studies that ran out of attempts another chance.
                self.archive.migration_reset(source, vec![MigrationState::Failed], MigrationState::Pending).await?;
            }
            let state = RunState { verify_only: false, since: options.since, until: options.until, planned: false };
            self.begin(source, state).await
        })
    }

    fn verify<'a>(&'a self, source: &'a str) -> MigrationFuture<'a, MigrationStatus> {
        Box::pin(async move {
            let state = RunState { verify_only: true, planned: true, ..RunState::default() };
            self.begin(source, state).await
        })
    }

    fn pause<'a>(&'a self, source: &'a str) -> MigrationFuture<'a, MigrationStatus> {
        Box::pin(async move {
            self.source(source)?;
            if let Some(stop) = lock(&self.running).get(source) {
                let _ = stop.send(true);
            }
            self.save_state(source, None).await?;
            self.update_progress(source, |progress| progress.phase = MigrationPhase::Paused);
            self.status_of(source).await
        })
    }

    fn status<'a>(&'a self, source: Option<&'a str>) -> MigrationFuture<'a, Vec<MigrationStatus>> {
        Box::pin(async move {
            match source {
                Some(name) => Ok(vec![self.status_of(name).await?]),
                None => {
                    let mut statuses = Vec::with_capacity(self.sources.len());
                    for name in self.sources.keys() {
                        statuses.push(self.status_of(name).await?);
                    }
                    Ok(statuses)
                }
            }
        })
    }

    fn report<'a>(&'a self, source: &'a str) -> MigrationFuture<'a, MigrationReport> {
        Box::pin(async move {
            let status = self.status_of(source).await?;
            let mut studies = Vec::new();
            let mut after = String::new();
            loop {
                let page = self.archive.migration_studies(source, None, &after, PAGE).await?;
                let Some(last) = page.last() else { break };
                after = last.study_uid.clone();
                studies.extend(page);
            }
            let discrepancies = self.archive.migration_discrepancies(source).await?;
            Ok(MigrationReport { status, studies, discrepancies })
        })
    }
}

fn retry_delay(first: Duration, attempt: u32) -> Duration {
    first.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(MAX_RETRY_DELAY)
}

/// A study fetched.
struct Fetched {
    /// Instances stored.
    count: u64,
    /// The source's SOP Instance UIDs where the fetch listed them (a C-MOVE or C-GET on its association).
    listed: Option<BTreeSet<String>>,
}

/// Why a study was not fetched.
struct FetchError {
    detail: String,
    /// Whether trying again may help (a network failure), or not (the source's data is refused).
    retriable: bool,
}

impl From<String> for FetchError {
    fn from(detail: String) -> FetchError {
        FetchError { detail, retriable: true }
    }
}

/// Whether a file starts with the Part 10 preamble and "DICM".
fn is_part10(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    std::fs::File::open(path).and_then(|mut file| file.read_exact(&mut head)).is_ok() && &head[128..] == b"DICM"
}

/// `next_attempt_ms` of a study that is not tried again until someone starts the migration again.
const NEVER: i64 = i64::MAX;

/// What the tasks of one run share.
struct RunContext {
    archive: Arc<Archive>,
    source: Arc<Source>,
    /// Who the archive's journal names for the migration's queries.
    origin: Origin,
    folder: OnceCell<Arc<FolderIndex>>,
    rate: RateLimiter,
}

impl RunContext {
    async fn folder_index(&self, path: &std::path::Path) -> Result<Arc<FolderIndex>, String> {
        let path = path.to_path_buf();
        self.folder
            .get_or_try_init(|| async move {
                let index = tokio::task::spawn_blocking(move || FolderIndex::scan(&path))
                    .await
                    .map_err(|error| error.to_string())??;
                for (file, reason) in &index.unreadable {
                    tracing::warn!(file = %file.display(), %reason, "migration source: file skipped");
                }
                Ok(Arc::new(index))
            })
            .await
            .cloned()
    }

    /// List the source's studies into the catalog; returns how many were new.
    async fn plan(&self, state: &RunState) -> Result<usize, String> {
        let studies = match &self.source.fetch {
            Fetch::DicomMove { node, cap, .. } | Fetch::DicomGet { node, cap } => {
                let range = DateRange {
                    from: state.since.clone().unwrap_or_else(|| "19000101".into()),
                    to: state.until.clone().unwrap_or_else(|| "99991231".into()),
                };
                walk::list_studies(node, &range, *cap)
                    .await
                    .map_err(|error| error.to_string())?
                    .into_iter()
                    .map(|study| haneul_core::PlannedStudy {
                        study_uid: study.study_uid,
                        patient_id: study.patient_id,
                        patient_name: study.patient_name,
                        study_date: study.study_date,
                        expected_instances: study.instances.map(i64::from),
                    })
                    .collect()
            }
            Fetch::Folder { path, .. } => {
                let index = self.folder_index(path).await?;
                let in_range = |date: &str| {
                    state.since.as_deref().is_none_or(|since| date >= since)
                        && state.until.as_deref().is_none_or(|until| date <= until)
                };
                index.planned().into_iter().filter(|study| in_range(&study.study_date)).collect()
            }
            Fetch::DicomWeb { source, .. } => {
                let range = DateRange {
                    from: state.since.clone().unwrap_or_else(|| "19000101".into()),
                    to: state.until.clone().unwrap_or_else(|| "99991231".into()),
                };
                source.planned_studies(&range).await?
            }
        };
        self.archive.migration_plan(&self.source.name, studies).await.map_err(|error| error.to_string())
    }

    /// Fetch one study and record the outcome: `done`, or `failed` with
    /// when to try again.
    async fn fetch_study(&self, study: &MigrationStudy) -> Result<Fetched, String> {
        let name = &self.source.name;
        let uid = &study.study_uid;
        self.rate.acquire(study.expected_instances.unwrap_or(1).max(1) as f64).await;
        let started = Instant::now();
        let fetched = match self.fetch(study).await {
            Ok(fetched) => fetched,
            Err(FetchError { detail, retriable }) => {
                tracing::warn!(source = %name, study_uid = %uid, attempt = study.attempts, retriable, error = %detail, "study not fetched");
                let next_attempt_ms = match retriable {
                    true => now_ms() + retry_delay(self.source.retry_delay, study.attempts as u32).as_millis() as i64,
                    false => NEVER,
                };
                let update = MigrationUpdate {
                    state: Some(MigrationState::Failed),
                    detail: Some(detail.clone()),
                    next_attempt_ms: Some(next_attempt_ms),
                    ..MigrationUpdate::default()
                };
                self.archive.migration_update(name, uid, update).await.map_err(|e| e.to_string())?;
                return Err(format!("study {uid}: {detail}"));
            }
        };
        let fetch_ms = started.elapsed().as_millis();
        let update = MigrationUpdate { state: Some(MigrationState::Done), ..MigrationUpdate::default() };
        self.archive.migration_update(name, uid, update).await.map_err(|e| e.to_string())?;
        tracing::debug!(source = %name, study_uid = %uid, instances = fetched.count, fetch_ms,
            recorded_ms = started.elapsed().as_millis() - fetch_ms, "study fetched");
        Ok(fetched)
    }

    /// Whether verifying a study asks the source for its listing (`listed`:
    /// the fetch brought one); a folder's listing is its index, read here.
    fn verification_queries_source(&self, listed: bool) -> bool {
        !listed && !matches!(self.source.fetch, Fetch::Folder { .. })
    }

    /// Verify one study (`just_fetched`: by this run, with the source's
    /// listing when the fetch made one); records the outcome.
    async fn verify_study(
        &self,
        study: &MigrationStudy,
        just_fetched: bool,
        listed: Option<BTreeSet<String>>,
    ) -> Result<(), String> {
        let uid = &study.study_uid;
        let started = Instant::now();
        let verified = self.verify(study, just_fetched, listed).await;
        tracing::debug!(source = %self.source.name, study_uid = %uid, verify_ms = started.elapsed().as_millis(),
            ok = verified.is_ok(), "study verified");
        let Err(error) = verified else { return Ok(()) };
        // Left `done`, the study would keep the run from ever finishing: it is
        // fetched (harmlessly) and verified again once its retry time comes.
        let update = MigrationUpdate {
            state: Some(MigrationState::Failed),
            detail: Some(format!("not verified: {error}")),
            next_attempt_ms: Some(
                now_ms() + retry_delay(self.source.retry_delay, study.attempts.max(1) as u32).as_millis() as i64,
            ),
            ..MigrationUpdate::default()
        };
        self.archive.migration_update(&self.source.name, uid, update).await.map_err(|e| e.to_string())?;
        Err(format!("study {uid}: not verified: {error}"))
    }

    async fn fetch(&self, study: &MigrationStudy) -> Result<Fetched, FetchError> {
        let count = match &self.source.fetch {
            Fetch::DicomMove { node, destination, .. } => {
                // Instances the node sends show it is alive too.
                let metrics = Arc::clone(self.archive.metrics());
                let received = move || metrics.instances_stored.get() + metrics.duplicates.get();
                return Ok(move_study(node, destination, &study.study_uid, received).await?);
            }
            Fetch::DicomGet { node, .. } => {
                // Sent by the node: its AE title is what coercion rules are keyed by.
                let origin = Origin { actor: node.ae_title.clone(), address: node.address(), ..self.origin.clone() };
                let got = get::get_study(node, &self.archive, &origin, &study.study_uid)
                    .await
                    .map_err(|error| FetchError { detail: error.detail, retriable: error.retriable })?;
                if !got.refused.is_empty() {
                    let detail = format!("{} instances refused: {}", got.refused.len(), got.refused.join("; "));
                    return Err(FetchError { detail, retriable: false });
                }
                return Ok(Fetched { count: got.stored, listed: got.listed });
            }
            Fetch::Folder { path, actor } => {
                let index = self.folder_index(path).await.map_err(FetchError::from)?;
                let Some(found) = index.studies.get(&study.study_uid) else {
                    let detail = "the study is no longer in the folder".to_string();
                    return Err(FetchError { detail, retriable: false });
                };
                let origin = Origin { actor: actor.clone(), ..self.origin.clone() };
                let mut stored = 0;
                let mut refused = Vec::new();
                let mut retriable = false;
                for file in &found.files {
                    match self.archive.ingest_file(file, origin.clone()).await {
                        Ok(_) => stored += 1,
                        Err(error) => {
                            // A refused file stays refused; a storage failure may pass.
                            retriable |= !matches!(error, haneul_core::IngestError::Rejected { .. });
                            refused.push(format!("{}: {error}", file.display()));
                        }
                    }
                }
                if !refused.is_empty() {
                    let detail =
                        format!("{} of {} files refused: {}", refused.len(), found.files.len(), refused.join("; "));
                    return Err(FetchError { detail, retriable });
                }
                stored
            }
            Fetch::DicomWeb { source, actor } => {
                let origin = Origin { actor: actor.clone(), ..self.origin.clone() };
                source
                    .fetch_study(&self.archive, &study.study_uid, &origin)
                    .await
                    .map_err(|failure| FetchError { detail: failure.detail, retriable: failure.retriable })?
            }
        };
        Ok(Fetched { count, listed: None })
    }

    /// Where the source offers its bytes (a folder of Part 10 files), the
    /// digest of each file against the copy held here. Skipped for a source
    /// whose instances are coerced on the way in, as their bytes change.
    async fn compare_digests(
        &self,
        study_uid: &str,
        held: &BTreeMap<String, [u8; 32]>,
    ) -> Result<Vec<Discrepancy>, String> {
        let Fetch::Folder { path, actor } = &self.source.fetch else { return Ok(Vec::new()) };
        if self.archive.config().coercions.get(actor).is_some_and(|rules| !rules.is_empty()) {
            return Ok(Vec::new());
        }
        let index = self.folder_index(path).await?;
        let Some(found) = index.studies.get(study_uid) else { return Ok(Vec::new()) };
        let files: Vec<(String, PathBuf, [u8; 32])> = found
            .file_of
            .iter()
            .filter_map(|(sop_uid, file)| held.get(sop_uid).map(|digest| (sop_uid.clone(), file.clone(), *digest)))
            .collect();
        let study_uid = study_uid.to_string();
        tokio::task::spawn_blocking(move || {
            let mut discrepancies = Vec::new();
            for (sop_uid, file, held_digest) in files {
                // A bare data set is stored behind a meta group we write: only Part 10 files compare.
                if !is_part10(&file) {
                    continue;
                }
                let detail = match haneul_core::digest_file(&file) {
                    Ok((_, digest)) if digest.0 == held_digest => continue,
                    Ok(_) => format!("the copy here differs from {} (BLAKE3)", file.display()),
                    Err(error) => format!("{} could not be read again: {error}", file.display()),
                };
                discrepancies.push(Discrepancy {
                    study_uid: study_uid.clone(),
                    sop_uid,
                    kind: "digest-mismatch".into(),
                    detail,
                });
            }
            discrepancies
        })
        .await
        .map_err(|error| error.to_string())
    }

    /// Compare the study's instances at the source (`listed`, when the fetch
    /// just listed them, else asked now) and here; record the result.
    async fn verify(
        &self,
        study: &MigrationStudy,
        just_fetched: bool,
        listed: Option<BTreeSet<String>>,
    ) -> Result<(), String> {
        let name = &self.source.name;
        let uid = &study.study_uid;
        let at_source: BTreeSet<String> = match (listed, &self.source.fetch) {
            (Some(listed), _) => listed,
            (None, fetch) => match fetch {
                Fetch::DicomMove { node, .. } | Fetch::DicomGet { node, .. } => {
                    walk::study_instances(node, uid).await.map_err(|error| error.to_string())?.into_iter().collect()
                }
                Fetch::Folder { path, .. } => self
                    .folder_index(path)
                    .await?
                    .studies
                    .get(uid)
                    .map(|found| found.sop_uids.iter().cloned().collect())
                    .unwrap_or_default(),
                Fetch::DicomWeb { source, .. } => source.study_instances(uid).await?,
            },
        };
        let held = self.archive.study_instances_held(uid, &self.origin).await.map_err(|error| error.to_string())?;
        let here: BTreeSet<String> = held.keys().cloned().collect();
        let mut discrepancies = self.compare_digests(uid, &held).await?;
        for missing in at_source.difference(&here) {
            discrepancies.push(Discrepancy {
                study_uid: uid.clone(),
                sop_uid: missing.clone(),
                kind: "missing-here".into(),
                detail: "held by the source, not stored here".into(),
            });
        }
        for extra in here.difference(&at_source) {
            discrepancies.push(Discrepancy {
                study_uid: uid.clone(),
                sop_uid: extra.clone(),
                kind: "missing-at-source".into(),
                detail: "stored here, no longer held by the source".into(),
            });
        }
        if at_source.is_empty() && here.is_empty() {
            discrepancies.push(Discrepancy {
                study_uid: uid.clone(),
                sop_uid: String::new(),
                kind: "study-gone".into(),
                detail: "the source no longer lists the study and nothing of it is stored here".into(),
            });
        }
        let missing_here = discrepancies.iter().filter(|d| d.kind == "missing-here").count();
        let missing_at_source = discrepancies.iter().filter(|d| d.kind == "missing-at-source").count();
        let migrated = at_source.intersection(&here).count() as i64;
        let (state, detail) = match (missing_here, discrepancies.len()) {
            (_, 0) => (MigrationState::Verified, format!("{migrated} instances on both sides")),
            // Missing right after a fetch: fetch again while attempts remain.
            (missing, _) if missing > 0 && just_fetched && study.attempts < self.source.max_attempts => {
                (MigrationState::Failed, format!("{missing} of {} instances missing after the fetch", at_source.len()))
            }
            (missing, count) => (
                MigrationState::Discrepant,
                format!(
                    "{count} discrepancies ({missing} instances missing here, {missing_at_source} missing at the source, {} differing)",
                    count - missing - missing_at_source
                ),
            ),
        };
        if state != MigrationState::Verified {
            tracing::warn!(source = %name, study_uid = %uid, %detail, "study verification found differences");
        }
        let next_attempt_ms = (state == MigrationState::Failed)
            .then(|| now_ms() + retry_delay(self.source.retry_delay, study.attempts as u32).as_millis() as i64);
        let update = MigrationUpdate {
            state: Some(state),
            detail: Some(detail),
            migrated_instances: Some(migrated),
            next_attempt_ms,
            discrepancies: Some(discrepancies),
        };
        self.archive.migration_update(name, uid, update).await.map_err(|error| error.to_string())
    }
}

/// C-MOVE one study from `node` to `destination`, then list its instances
/// (C-FIND at IMAGE level) on the same association for the verification (none
/// where that listing failed: the verification asks again): one
/// association per study, and the listing holds no slot of the node's on its own.
/// The node's final answer comes after our C-STORE answers, each sent only once
/// its instance was durable, so everything counted is stored.
/// `received` counts instances received by this node (any sender): while it
/// grows, or pending answers come, the move is waited for however long it
/// takes; after the node's timeout without either, it is given up.
async fn move_study(
    node: &DicomNode,
    destination: &str,
    study_uid: &str,
    received: impl Fn() -> u64,
) -> Result<Fetched, String> {
    let proposed = [
        ProposedContext::new(sop::STUDY_ROOT_MOVE, &[EXPLICIT_LE, IMPLICIT_LE]),
        ProposedContext::new(sop::STUDY_ROOT_FIND, &[EXPLICIT_LE, IMPLICIT_LE]),
    ];
    let started = Instant::now();
    let mut client = Client::connect(&node.address(), &node.request_params(), &proposed)
        .await
        .map_err(|error| format!("{node}: {error}"))?;
    let connect_ms = started.elapsed().as_millis();
    let identifier = walk::retrieve_identifier(study_uid, None);
    let heartbeat = Heartbeat::new();
    let mut received_before = received();
    let moved = {
        let moving =
            client.retrieve_move_watched(InformationModel::StudyRoot, destination, &identifier, || heartbeat.beat());
        let arriving = || {
            let now = received();
            std::mem::replace(&mut received_before, now) != now
        };
        tokio::select! {
            moved = moving => moved.map_err(|error| error.to_string()),
            () = heartbeat.silence(node.timeout, arriving) => Err(format!(
                "no answer and no instance for {} s",
                node.timeout.as_secs_f32()
            )),
        }
    };
    let summary = match moved {
        Ok(summary) => summary,
        Err(error) => {
            client.abort().await;
            return Err(format!("C-MOVE from {}: {error}", node.ae_title));
        }
    };
    let moved_ms = started.elapsed().as_millis();
    let succeeded = summary.status == status::SUCCESS || summary.status & 0xF000 == 0xB000;
    // Ended before the slot takes another study: the node never sees more
    // associations than allowed, not even for a moment.
    let listed = if succeeded && summary.failed == 0 {
        walk::list_then_release(client, node, study_uid).await
    } else {
        walk::release(client, node).await;
        None
    };
    tracing::debug!(
        study_uid,
        connect_ms,
        move_ms = moved_ms - connect_ms,
        list_and_release_ms = started.elapsed().as_millis() - moved_ms,
        "study moved"
    );
    if !succeeded || summary.failed > 0 {
        return Err(format!(
            "C-MOVE from {} ended with status {:#06x}: {} completed, {} failed, {} warnings",
            node.ae_title, summary.status, summary.completed, summary.failed, summary.warning
        ));
    }
    Ok(Fetched { count: u64::from(summary.completed) + u64::from(summary.warning), listed })
}

/// Instances per second for one source, over all its parallel studies.
struct RateLimiter {
    per_second: f64,
    /// When the capacity taken so far is used up.
    busy_until: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl RateLimiter {
    fn new(per_second: f64) -> RateLimiter {
        RateLimiter { per_second, busy_until: tokio::sync::Mutex::new(None) }
    }

    /// Wait until `instances` more fit under the rate.
    async fn acquire(&self, instances: f64) {
        if self.per_second <= 0.0 {
            return;
        }
        let start = {
            let mut busy_until = self.busy_until.lock().await;
            let now = tokio::time::Instant::now();
            let start = busy_until.map_or(now, |until| until.max(now));
            *busy_until = Some(start + Duration::from_secs_f64(instances / self.per_second));
            start
        };
        tokio::time::sleep_until(start).await;
    }
}
