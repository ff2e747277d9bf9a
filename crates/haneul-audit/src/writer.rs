//! The background writer: records arrive over a bounded channel and are
//! appended in batches gathered over up to 100 ms, one `fdatasync` per batch.
//!
//! One process writes a trail: the writer holds an exclusive lock on
//! `.writer.lock` in the trail's directory for as long as it runs. Other
//! processes (the command-line tools beside a running server) hand their
//! records to it through `inbox/`, one durable file per record, which the
//! writer appends at its next batch (at least every second) and then removes;
//! see [`submit`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use time::Date;

use crate::record::{check_line, line_digest, Entry, GENESIS};
use crate::syslog::{self, Forwarded, SyslogCounters, SyslogSettings};
use crate::{file_date, file_name, trail_files, AuditError};

/// How many records may wait for the writer before `record` blocks.
const QUEUE: usize = 16_384;
/// Most records appended per batch (and per fdatasync).
const MAX_BATCH: usize = 4_096;
/// How long the writer gathers records after the first of a batch, unless a
/// flush is asked for: records reach the disk at most this much later.
const GATHER: Duration = Duration::from_millis(100);
/// How often an idle writer looks into the inbox.
const INBOX_POLL: Duration = Duration::from_secs(1);
const LOCK_FILE: &str = ".writer.lock";
const INBOX: &str = "inbox";

enum Message {
    Record(Box<Entry>),
    Flush(mpsc::Sender<()>),
}

/// The records waiting for the writer. Only the record that starts a batch
/// (or a flush, or closing) wakes the writer; the rest of the batch just
/// joins the queue, so a busy server pays a lock per record, not a thread
/// wake-up.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// The writer has something to do.
    wake_writer: Condvar,
    /// The writer took the queue (there is room again).
    room: Condvar,
}

#[derive(Default)]
struct QueueState {
    messages: Vec<Message>,
    flush_asked: bool,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a message; false when the writer has stopped. Waits while the
    /// queue is full (counted).
    fn push(&self, message: Message, counters: &Counters) -> bool {
        let mut state = self.lock();
        if state.messages.len() >= QUEUE && !state.closed {
            let waits = counters.waits.fetch_add(1, Ordering::Relaxed) + 1;
            if waits.is_power_of_two() {
                tracing::warn!(waits, "audit queue full; waiting for the audit writer");
            }
            while state.messages.len() >= QUEUE && !state.closed {
                state = self.room.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
        if state.closed {
            return false;
        }
        let flush = matches!(message, Message::Flush(_));
        state.messages.push(message);
        state.flush_asked |= flush;
        if flush || state.messages.len() == 1 || state.messages.len() == MAX_BATCH {
            self.wake_writer.notify_one();
        }
        true
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake_writer.notify_one();
        self.room.notify_all();
    }

    /// Wait for work: up to `INBOX_POLL` for a first message, then up to
    /// `GATHER` more unless a flush is asked for or the batch is full.
    /// Returns the messages and whether the queue is closed.
    fn next_batch(&self) -> (Vec<Message>, bool) {
        let mut state = self.lock();
        if state.messages.is_empty() && !state.closed {
            state = self.wake_writer.wait_timeout(state, INBOX_POLL).unwrap_or_else(|e| e.into_inner()).0;
        }
        if !state.messages.is_empty() {
            let deadline = Instant::now() + GATHER;
            while !state.flush_asked && !state.closed && state.messages.len() < MAX_BATCH {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
                state = self.wake_writer.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
        state.flush_asked = false;
        let batch = std::mem::take(&mut state.messages);
        let closed = state.closed;
        drop(state);
        self.room.notify_all();
        (batch, closed)
    }
}

/// Counters of the writer, for metrics and the status page.
#[derive(Debug, Default, Serialize, Clone, Copy, PartialEq, Eq)]
pub struct AuditStats {
    /// Records appended and synced.
    pub written: u64,
    /// Times `record` had to wait because the queue was full.
    pub waits: u64,
    /// Records that could not be written (the writer failed or stopped); each is logged.
    pub lost: u64,
    /// Failed appends or syncs.
    pub write_errors: u64,
    /// Audit messages delivered to the syslog collector.
    pub syslog_sent: u64,
    /// Audit messages not delivered: failed UDP sends, those left at shutdown
    /// and those dropped because the forwarding queue was full.
    pub syslog_failed: u64,
    /// Failed syslog sends and connection attempts.
    pub syslog_errors: u64,
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    waits: AtomicU64,
    lost: AtomicU64,
    write_errors: AtomicU64,
    syslog: Arc<SyslogCounters>,
}

/// What opening the trail found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpenReport {
    /// Sequence number of the last record found (0 for a new trail).
    pub last_seq: u64,
    /// A final line without its newline (left by a crash) that was cut off:
    /// the file and how many bytes were removed.
    pub truncated: Option<(PathBuf, u64)>,
}

/// A handle for recording; cheap to clone. A disabled auditor records nothing.
#[derive(Clone, Default)]
pub struct Auditor {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    dir: PathBuf,
    queue: Arc<Queue>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
    forward: Forward,
    forwarder: Mutex<Option<JoinHandle<()>>>,
}

/// Where the writer hands records once they are on disk (when forwarding).
type Forward = Arc<Mutex<Option<SyncSender<Forwarded>>>>;

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer drain what is queued and stop.
        self.queue.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Then the forwarder sends what it holds (one try each) and stops.
        self.forward.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = self.forwarder.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor").field("dir", &self.dir()).finish()
    }
}

impl Auditor {
    /// An auditor that records nothing (audit switched off, or tools that
    /// need no trail).
    pub fn disabled() -> Auditor {
        Auditor { inner: None }
    }

    /// Open the trail in `dir` (created if needed), continue its chain from
    /// the last record and start the writer thread. [`AuditError::Busy`]
    /// when another process writes the trail.
    pub fn open(dir: impl Into<PathBuf>) -> Result<(Auditor, OpenReport), AuditError> {
        let dir = dir.into();
        std::fs::create_dir_all(dir.join(INBOX)).map_err(|source| AuditError::io(&dir, source))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| AuditError::io(&lock_path, source))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(AuditError::Busy(dir)),
            Err(std::fs::TryLockError::Error(source)) => return Err(AuditError::io(&lock_path, source)),
        }
        let (tail, report) = resume(&dir)?;
        let counters = Arc::new(Counters::default());
        let queue = Arc::new(Queue::default());
        let forward: Forward = Arc::default();
        let writer = Writer {
            dir: dir.clone(),
            tail,
            file: None,
            counters: Arc::clone(&counters),
            forward: Arc::clone(&forward),
            _lock: lock,
        };
        let thread = std::thread::Builder::new()
            .name("haneul-audit".into())
            .spawn({
                let queue = Arc::clone(&queue);
                move || writer.run(&queue)
            })
            .map_err(|source| AuditError::io(&dir, source))?;
        let inner = Inner { dir, queue, counters, thread: Some(thread), forward, forwarder: Mutex::new(None) };
        Ok((Auditor { inner: Some(Arc::new(inner)) }, report))
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The trail's directory, when enabled.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.as_ref().map(|inner| inner.dir.as_path())
    }

    /// Queue a record. Returns at once unless the queue is full, in which
    /// case it waits for the writer (counted and logged) rather than drop it.
    pub fn record(&self, entry: Entry) {
        let Some(inner) = &self.inner else { return };
        if !inner.queue.push(Message::Record(Box::new(entry)), &inner.counters) {
            lost(&inner.counters);
        }
    }

    /// Wait until everything recorded so far is on disk (blocking).
    pub fn flush(&self) {
        let Some(inner) = &self.inner else { return };
        let (done, wait) = mpsc::channel();
        if inner.queue.push(Message::Flush(done), &inner.counters) {
            let _ = wait.recv();
        }
    }

    /// Forward every record, once on disk, to a syslog collector as a DICOM
    /// audit message (see [`crate::syslog`]). At most once per auditor.
    pub fn forward_to_syslog(&self, settings: SyslogSettings) -> Result<(), String> {
        let Some(inner) = &self.inner else { return Err("the audit trail is off".into()) };
        let mut forward = inner.forward.lock().unwrap_or_else(|e| e.into_inner());
        if forward.is_some() {
            return Err("audit records are already forwarded".into());
        }
        let (sender, receiver) = mpsc::sync_channel(syslog::QUEUE);
        let thread = syslog::spawn(settings, receiver, Arc::clone(&inner.counters.syslog))?;
        *inner.forwarder.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        *forward = Some(sender);
        Ok(())
    }

    pub fn stats(&self) -> AuditStats {
        let Some(inner) = &self.inner else { return AuditStats::default() };
        let counters = &inner.counters;
        let syslog = &counters.syslog;
        AuditStats {
            written: counters.written.load(Ordering::Relaxed),
            waits: counters.waits.load(Ordering::Relaxed),
            lost: counters.lost.load(Ordering::Relaxed),
            write_errors: counters.write_errors.load(Ordering::Relaxed),
            syslog_sent: syslog.sent.load(Ordering::Relaxed),
            syslog_failed: syslog.failed.load(Ordering::Relaxed) + syslog.dropped.load(Ordering::Relaxed),
            syslog_errors: syslog.errors.load(Ordering::Relaxed),
        }
    }
}

fn lost(counters: &Counters) {
    let lost = counters.lost.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::error!(lost, "audit writer is not running; record not written");
}

/// Where the chain stands.
#[derive(Debug, Clone)]
struct Tail {
    seq: u64,
    prev: String,
    /// Day of the newest file, which new records never go before.
    date: Option<Date>,
}

struct Writer {
    dir: PathBuf,
    tail: Tail,
    file: Option<(Date, File)>,
    counters: Arc<Counters>,
    forward: Forward,
    /// Held while the writer runs (released when the file closes).
    _lock: File,
}

impl Writer {
    fn run(mut self, queue: &Queue) {
        loop {
            // One append and fdatasync for everything gathered: one flush per
            // record would compete with the archive's own flushes of instance
            // files and catalog on the same disk.
            let (mut batch, closed) = queue.next_batch();
            // Read last, so a flush asked for after a record was submitted
            // finds that record.
            let inbox = self.read_inbox(&mut batch);
            self.write_batch(&mut batch, inbox);
            if closed {
                return;
            }
        }
    }

    /// Queue the records other processes left in the inbox, oldest first;
    /// returns their files, to remove once the batch is on disk.
    fn read_inbox(&self, batch: &mut Vec<Message>) -> Vec<PathBuf> {
        let inbox = self.dir.join(INBOX);
        let Ok(entries) = std::fs::read_dir(&inbox) else { return Vec::new() };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        files.sort();
        files.retain(|path| match std::fs::read(path).map(|bytes| serde_json::from_slice::<Entry>(&bytes)) {
            Ok(Ok(entry)) => {
                batch.push(Message::Record(Box::new(entry)));
                true
            }
            // A file being written has no name ending in .json yet; anything
            // else unreadable is kept aside for a human, not lost.
            Ok(Err(error)) => {
                tracing::error!(file = %path.display(), %error, "unreadable record in the audit inbox; renamed to .bad");
                let _ = std::fs::rename(path, path.with_extension("bad"));
                false
            }
            Err(error) => {
                tracing::error!(file = %path.display(), %error, "cannot read the audit inbox");
                false
            }
        });
        files
    }

    /// Remove inbox files whose records are now in the trail. A crash before
    /// this appends them again at the next start: a record twice, never none.
    fn clear_inbox(&self, files: Vec<PathBuf>) {
        for path in files {
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), %error, "cannot remove a record from the audit inbox");
            }
        }
    }

    /// Append and sync a batch, then remove the inbox files it holds (only
    /// once written) and wake those waiting for a flush.
    fn write_batch(&mut self, batch: &mut Vec<Message>, inbox: Vec<PathBuf>) {
        if batch.is_empty() {
            return;
        }
        let mut waiters = Vec::new();
        let mut buffer = Vec::with_capacity(batch.len() * 512);
        let mut pending = 0u64;
        let start = self.tail.clone();
        let mut result = Ok(());
        let forward = self.forward.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Records appended but not yet synced, and those on disk (to forward).
        let mut unsynced = Vec::new();
        let mut synced = Vec::new();
        for message in batch.drain(..) {
            let entry = match message {
                Message::Record(entry) => entry,
                Message::Flush(done) => {
                    waiters.push(done);
                    continue;
                }
            };
            if result.is_err() {
                pending += 1;
                continue;
            }
            let date = match self.tail.date {
                Some(current) if current > entry.time.date() => current,
                _ => entry.time.date(),
            };
            if self.file.as_ref().is_none_or(|(open, _)| *open != date) {
                result = self.append(&buffer).and_then(|()| self.open_day(date));
                if result.is_err() {
                    pending += 1;
                    continue;
                }
                self.counters.written.fetch_add(pending, Ordering::Relaxed);
                pending = 0;
                buffer.clear();
                synced.append(&mut unsynced);
            }
            self.tail.seq += 1;
            let line = entry.to_line(self.tail.seq, &self.tail.prev);
            self.tail.prev = line_digest(line.as_bytes());
            self.tail.date = Some(date);
            buffer.extend_from_slice(line.as_bytes());
            buffer.push(b'\n');
            pending += 1;
            if forward.is_some() {
                unsynced.push(entry);
            }
        }
        if result.is_ok() {
            result = self.append(&buffer);
        }
        let written = result.is_ok();
        match result {
            Ok(()) => {
                self.counters.written.fetch_add(pending, Ordering::Relaxed);
                synced.append(&mut unsynced);
            }
            Err(error) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                self.counters.lost.fetch_add(pending, Ordering::Relaxed);
                tracing::error!(%error, records = pending, "could not append to the audit trail");
                // Start again from what is really on disk.
                self.file = None;
                match resume(&self.dir) {
                    Ok((tail, _)) => self.tail = tail,
                    Err(error) => {
                        tracing::error!(%error, "cannot re-read the audit trail");
                        self.tail = start;
                    }
                }
            }
        }
        if let Some(forward) = forward {
            for entry in synced {
                // Never wait for the collector: a full queue drops the message.
                if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = forward.try_send(entry) {
                    syslog::dropped(&self.counters.syslog);
                }
            }
        }
        if written {
            self.clear_inbox(inbox);
        }
        for done in waiters {
            let _ = done.send(());
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), AuditError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let Some((date, file)) = &mut self.file else { return Ok(()) };
        let path = self.dir.join(file_name(*date));
        file.write_all(bytes).and_then(|()| file.sync_data()).map_err(|source| AuditError::io(&path, source))
    }

    fn open_day(&mut self, date: Date) -> Result<(), AuditError> {
        let path = self.dir.join(file_name(date));
        let existed = path.exists();
        let file =
            OpenOptions::new().create(true).append(true).open(&path).map_err(|source| AuditError::io(&path, source))?;
        if !existed {
            file.sync_all().map_err(|source| AuditError::io(&path, source))?;
            sync_dir(&self.dir)?;
        }
        self.file = Some((date, file));
        Ok(())
    }
}

/// Where [`submit`] put a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Appended to the trail and synced (no other process was writing it).
    Written,
    /// Left durably in the inbox of the process that writes the trail.
    Queued,
}

/// Record one entry from a process that may not own the trail (the
/// command-line tools): written directly when no other process writes it,
/// else left in its inbox for the writer to append.
pub fn submit(dir: &Path, entry: Entry) -> Result<Submitted, AuditError> {
    match Auditor::open(dir) {
        Ok((auditor, _)) => {
            auditor.record(entry);
            auditor.flush();
            Ok(Submitted::Written)
        }
        Err(AuditError::Busy(_)) => {
            let inbox = dir.join(INBOX);
            let bytes = serde_json::to_vec(&entry).map_err(|error| AuditError::Corrupt(error.to_string()))?;
            let nanos = entry.time.unix_timestamp_nanos();
            let name = format!("{nanos:024}-{}-{:08x}", std::process::id(), rand_suffix());
            // Written under a temporary name and renamed, so the writer never
            // reads half a record.
            let temporary = inbox.join(format!("{name}.tmp"));
            let path = inbox.join(format!("{name}.json"));
            let mut file = File::create(&temporary).map_err(|source| AuditError::io(&temporary, source))?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|source| AuditError::io(&temporary, source))?;
            std::fs::rename(&temporary, &path).map_err(|source| AuditError::io(&path, source))?;
            sync_dir(&inbox)?;
            Ok(Submitted::Queued)
        }
        Err(error) => Err(error),
    }
}

/// A few bits that differ between records submitted in the same nanosecond.
fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish() as u32
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all()).map_err(|source| AuditError::io(dir, source))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Find where the chain ends: the last complete line of the newest file
/// holding one. A final line without its newline is cut off (logged).
fn resume(dir: &Path) -> Result<(Tail, OpenReport), AuditError> {
    let mut report = OpenReport::default();
    let files = trail_files(dir)?;
    let newest = files.last().map(|path| file_date(path));
    for (index, path) in files.iter().enumerate().rev() {
        let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| AuditError::io(path, e))?;
        let (last_line, partial) = read_tail(&mut file).map_err(|e| AuditError::io(path, e))?;
        if partial > 0 {
            if index + 1 != files.len() {
                return Err(AuditError::Corrupt(format!(
                    "{} ends without a newline but is not the newest audit file",
                    path.display()
                )));
            }
            let length = file.metadata().map_err(|e| AuditError::io(path, e))?.len();
            tracing::warn!(file = %path.display(), bytes = partial, "audit trail ends in a partial record (crash?); cutting it off");
            file.set_len(length - partial).and_then(|()| file.sync_all()).map_err(|e| AuditError::io(path, e))?;
            report.truncated = Some((path.clone(), partial));
        }
        let Some(line) = last_line else { continue };
        let record = check_line(&line).map_err(|problem| {
            AuditError::Corrupt(format!(
                "the last record of {} is unsound ({problem:?}); run `haneul audit verify`",
                path.display()
            ))
        })?;
        report.last_seq = record.seq;
        let tail = Tail { seq: record.seq, prev: line_digest(&line), date: newest.flatten() };
        return Ok((tail, report));
    }
    Ok((Tail { seq: 0, prev: GENESIS.to_string(), date: newest.flatten() }, report))
}

/// The last complete line of a file (without its newline) and the length of
/// a partial line after it, reading only the end of the file.
fn read_tail(file: &mut File) -> std::io::Result<(Option<Vec<u8>>, u64)> {
    let length = file.metadata()?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = length.saturating_sub(window);
        let mut bytes = Vec::with_capacity((length - start) as usize);
        file.seek(SeekFrom::Start(start))?;
        Read::take(&mut *file, length - start).read_to_end(&mut bytes)?;
        let partial = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(end) => (bytes.len() - end - 1) as u64,
            None if start == 0 => return Ok((None, bytes.len() as u64)),
            None => {
                window *= 4;
                continue;
            }
        };
        let complete = &bytes[..bytes.len() - partial as usize - 1];
        match complete.iter().rposition(|&b| b == b'\n') {
            Some(begin) => return Ok((Some(complete[begin + 1..].to_vec()), partial)),
            None if start == 0 => return Ok((Some(complete.to_vec()), partial)),
            None => window *= 4,
        }
    }
}
