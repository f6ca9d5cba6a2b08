//! The embedded state store: one SQLite file (`depwatch.db`) under
//! `state_dir`, kept across restarts — storage history now, log read offsets
//! and alerting state later.
//!
//! - **Schema** ([`super::schema`]): `MIGRATIONS` is an append-only list; the database's
//!   `PRAGMA user_version` says how many have run. A new table is one more
//!   entry at the end, never an edit of an old one.
//! - **Writes** never run on the async runtime: [`Store::write`] queues a
//!   closure for a dedicated writer thread, which commits everything queued
//!   at that moment in one transaction (batching under load for free).
//! - **Reads** run on a second connection (WAL lets it read while the writer
//!   writes) through [`Store::read`], on tokio's blocking pool.
//! - **Start**: a state directory that cannot be created or written is an
//!   error ([`StoreError`]); a corrupt database is moved aside under a
//!   timestamped name, a fresh one is started, and [`Store::status_json`]
//!   says so in `/api/health`. An existing database that cannot be written
//!   (a read-only filesystem) is used read-only: depwatch keeps watching,
//!   logs an error and shows `read_only` there.
//! - **Status**: `write_errors` while writes fail, `ok` again once a batch
//!   commits cleanly (the failure counters keep the history).
//! - **Retention**: each table's owner prunes what it no longer needs (the
//!   storage probe keeps its `forecast_window`); [`Store::open`] also drops
//!   any row older than [`MAX_RETENTION`], so a removed component's history
//!   does not stay forever.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, ErrorCode, MAIN_DB, OpenFlags, TransactionBehavior, params};
use serde::Serialize;
use serde_json::Value;

use super::lock::{self, Refused};
use super::schema::{migrate, user_version};
use crate::util::pool::Workers;
use crate::util::time::unix_ms;

/// The database file's name inside `state_dir`.
pub const FILE_NAME: &str = "depwatch.db";

/// Rows older than this are dropped at start, whatever their table: longer
/// than the longest `forecast_window` (366 days) accepted by the config.
pub const MAX_RETENTION: Duration = Duration::from_secs(400 * 86_400);

/// Writes queued beyond this are dropped (and counted) rather than letting
/// a stuck disk grow depwatch's memory without bound. The queue itself
/// grows in small blocks as writes wait (a channel allocated for all of
/// them at once would hold 3 MiB from the start).
const QUEUE_CAPACITY: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot create the state directory {path}: {source} (set `state_dir` to a writable directory)"
    )]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "cannot write the state database {path}: {source} (check that depwatch may write to `state_dir`)"
    )]
    Unwritable {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot move the corrupt state database {path} aside: {source}")]
    MoveAside {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the state directory {dir} is in use by {holder} (give each depwatch its own `state_dir`)"
    )]
    InUse { dir: String, holder: String },
    #[error("cannot lock the state directory with {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start the state store's writer thread: {0}")]
    Thread(std::io::Error),
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the state store is closed")]
    Closed,
}

/// What happened to a corrupt database found at start.
#[derive(Clone, Debug)]
pub struct Recovery {
    pub moved_to: PathBuf,
    pub at: SystemTime,
    pub error: String,
}

type WriteFn = Box<dyn FnOnce(&Connection) -> rusqlite::Result<()> + Send>;

enum Op {
    Write(&'static str, WriteFn),
    /// Answered once everything queued before it is committed.
    Flush(tokio::sync::oneshot::Sender<()>),
    Close(tokio::sync::oneshot::Sender<()>),
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    committed: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// The latest batch had a failed (or a dropped) write; cleared by a
    /// batch that commits without one.
    failing: AtomicBool,
}

impl Counters {
    /// Records whether writes work now; logs only the changes (a failing
    /// disk would otherwise log every check).
    fn set_failing(&self, failing: bool, what: &str, error: &str) {
        if self.failing.swap(failing, Ordering::Relaxed) == failing {
            return;
        }
        if failing {
            tracing::warn!(
                what,
                error,
                "State store writes fail; counting them in /api/health until one commits."
            );
        } else {
            tracing::info!("State store writes work again.");
        }
    }
}

/// The open state store, shared by everything that keeps state.
pub struct Store {
    path: PathBuf,
    /// Locked for as long as the store is open: two processes writing one
    /// database would each resume the other's log offsets and alert state.
    _lock: Option<File>,
    tx: Sender<Op>,
    /// Writes queued and not yet taken by the writer (bounded by
    /// `QUEUE_CAPACITY`; control messages are not counted).
    backlog: Arc<AtomicUsize>,
    reader: Arc<Mutex<Connection>>,
    /// One read at a time waits here, on the runtime, not on the reader's
    /// lock in a blocking-pool thread: 200 log probes loading their offsets
    /// after a reload would otherwise hold 200 threads.
    read_turn: Arc<tokio::sync::Semaphore>,
    /// The reads' one thread. Not tokio's blocking pool: a read that came
    /// right after another, before that one's thread was idle again, made
    /// the pool start one more (and keep it for 10 s).
    read_thread: Arc<Workers>,
    counters: Arc<Counters>,
    last_error: Arc<Mutex<Option<String>>>,
    recovered: Option<Recovery>,
    /// Why the database cannot be written, found at start.
    read_only: Option<String>,
    schema_version: usize,
}

impl Store {
    /// Opens (creating when needed) `dir/depwatch.db`, runs the migrations
    /// and starts the writer thread. Blocking: call before serving, or from
    /// `spawn_blocking`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
        let lock = lock::take(dir).map_err(|refused| match refused {
            Refused::Held(holder) => StoreError::InUse {
                dir: dir.display().to_string(),
                holder,
            },
            Refused::Io(path, source) => StoreError::Lock {
                path: path.display().to_string(),
                source,
            },
        })?;
        let path = dir.join(FILE_NAME);
        let (mut conn, recovered) = match open_checked(&path) {
            Ok(c) => (c, None),
            Err(e) if is_corruption(&e) => {
                let moved_to = move_aside(&path)?;
                tracing::warn!(
                    path = %path.display(), moved_to = %moved_to.display(), error = %e,
                    "The state database is corrupt: moved it aside and started a fresh one (storage history starts over)."
                );
                let conn = open_checked(&path).map_err(|source| unwritable(&path, source))?;
                let recovery = Recovery {
                    moved_to,
                    at: SystemTime::now(),
                    error: e.to_string(),
                };
                (conn, Some(recovery))
            }
            Err(e) => return Err(unwritable(&path, e)),
        };
        let schema_version = user_version(&conn)?;
        let read_only = unwritable_reason(&mut conn);
        if let Some(error) = &read_only {
            tracing::error!(
                path = %path.display(), error = %error,
                "The state database is read-only: depwatch keeps watching but saves nothing (storage history, log offsets). Make state_dir writable and restart depwatch."
            );
        }
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reader.busy_timeout(Duration::from_secs(5))?;

        let (tx, rx) = std::sync::mpsc::channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let counters = Arc::new(Counters::default());
        let last_error = Arc::new(Mutex::new(None));
        let writer = Writer {
            conn,
            rx,
            backlog: backlog.clone(),
            counters: counters.clone(),
            last_error: last_error.clone(),
        };
        std::thread::Builder::new()
            .name("depwatch-store".into())
            .spawn(move || writer.run())
            .map_err(StoreError::Thread)?;
        let store = Store {
            path,
            _lock: lock,
            tx,
            backlog,
            reader: Arc::new(Mutex::new(reader)),
            read_turn: Arc::new(tokio::sync::Semaphore::new(1)),
            read_thread: Arc::new(Workers::new("depwatch-store-read", 1, 16)),
            counters,
            last_error,
            recovered,
            read_only,
            schema_version,
        };
        let cutoff = unix_ms(SystemTime::now()) - MAX_RETENTION.as_millis() as i64;
        store.write("retention", move |tx| {
            tx.execute(
                "DELETE FROM storage_samples WHERE at_ms < ?1",
                params![cutoff],
            )?;
            tx.execute(
                "DELETE FROM log_offsets WHERE saved_ms < ?1",
                params![cutoff],
            )?;
            tx.execute(
                "DELETE FROM alert_incidents WHERE open = 0 AND updated_ms < ?1",
                params![cutoff],
            )?;
            tx.execute(
                "DELETE FROM alert_emails WHERE sent_ms IS NOT NULL AND created_ms < ?1",
                params![cutoff],
            )
            .map(drop)
        });
        tracing::info!(path = %store.path.display(), schema_version, "State store open.");
        Ok(store)
    }

    /// Queues a write for the writer thread; never blocks. `what` names it
    /// in logs. A full queue (the disk is stuck) drops the write and counts it.
    pub fn write(
        &self,
        what: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static,
    ) {
        if self.backlog.fetch_add(1, Ordering::AcqRel) >= QUEUE_CAPACITY {
            self.backlog.fetch_sub(1, Ordering::AcqRel);
            let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            self.counters.failing.store(true, Ordering::Relaxed);
            // Once per thousand: a stuck disk must not flood the log too.
            if n.is_multiple_of(1000) {
                tracing::warn!(
                    what,
                    dropped = n + 1,
                    "State store queue is full: dropping writes."
                );
            }
            return;
        }
        match self.tx.send(Op::Write(what, Box::new(f))) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.backlog.fetch_sub(1, Ordering::AcqRel);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Runs a read on the reads' thread, on the reader connection.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        let turn = self
            .read_turn
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let result = self
            .read_thread
            .run(move || {
                let conn = reader.lock().unwrap_or_else(|e| e.into_inner());
                f(&conn).map_err(StoreError::from)
            })
            .await;
        drop(turn);
        result.map_err(|_| StoreError::Closed)?
    }

    /// Waits until every write queued so far is committed (or failed).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send_blocking_free(Op::Flush(done))?;
        wait.await.map_err(|_| StoreError::Closed)
    }

    /// Commits what is queued and stops the writer; later writes are dropped.
    pub async fn close(&self) -> Result<(), StoreError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send_blocking_free(Op::Close(done))?;
        wait.await.map_err(|_| StoreError::Closed)
    }

    /// Control messages get through even when the queue of writes is full
    /// (they are not counted in its bound), without waiting.
    fn send_blocking_free(&self, op: Op) -> Result<(), StoreError> {
        self.tx.send(op).map_err(|_| StoreError::Closed)
    }

    pub fn recovered(&self) -> Option<&Recovery> {
        self.recovered.as_ref()
    }

    /// Why the database cannot be written (found at start), if it cannot.
    pub fn read_only(&self) -> Option<&str> {
        self.read_only.as_deref()
    }

    /// The `state_store` section of `/api/health`, written after what
    /// `out` holds (no `Value` tree per request).
    pub fn write_status(&self, out: &mut Vec<u8>) {
        crate::util::json::write_or_null(out, &self.status_view(), "the state store's status");
    }

    /// The numbers of the status, for `/metrics` ([`super::metrics`]).
    pub fn numbers(&self) -> Numbers {
        let c = &self.counters;
        let committed = c.committed.load(Ordering::Relaxed);
        let failed = c.failed.load(Ordering::Relaxed);
        Numbers {
            writable: self.read_only.is_none() && !c.failing.load(Ordering::Relaxed),
            committed,
            failed,
            dropped: c.dropped.load(Ordering::Relaxed),
            pending: c
                .queued
                .load(Ordering::Relaxed)
                .saturating_sub(committed + failed),
        }
    }

    /// [`Store::write_status`] as a `Value`.
    pub fn status_json(&self) -> Value {
        serde_json::to_value(self.status_view()).unwrap_or(Value::Null)
    }

    fn status_view(&self) -> StatusView<'_> {
        let n = self.numbers();
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let status = if self.read_only.is_some() {
            "read_only"
        } else if !n.writable {
            "write_errors"
        } else if self.recovered.is_some() {
            "recovered"
        } else {
            "ok"
        };
        StatusView {
            status,
            path: self.path.display().to_string(),
            schema_version: self.schema_version,
            writes: n.committed,
            pending_writes: n.pending,
            write_failures: n.failed,
            dropped_writes: n.dropped,
            last_error,
            read_only: self.read_only.as_deref().map(|error| ReadOnlyView {
                error,
                hint: "make state_dir writable and restart depwatch",
            }),
            recovered_from_corruption: self.recovered.as_ref().map(|r| RecoveredView {
                moved_to: r.moved_to.display().to_string(),
                at: crate::util::time::rfc3339(r.at),
                error: &r.error,
            }),
        }
    }
}

/// What the state store's writes came to (see [`Store::numbers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Numbers {
    /// Neither read-only nor failing its latest writes.
    pub writable: bool,
    pub committed: u64,
    pub failed: u64,
    pub dropped: u64,
    pub pending: u64,
}

/// The `state_store` section of `/api/health`, in its order.
#[derive(Serialize)]
struct StatusView<'a> {
    status: &'static str,
    path: String,
    schema_version: usize,
    writes: u64,
    pending_writes: u64,
    write_failures: u64,
    dropped_writes: u64,
    last_error: Option<String>,
    read_only: Option<ReadOnlyView<'a>>,
    recovered_from_corruption: Option<RecoveredView<'a>>,
}

#[derive(Serialize)]
struct ReadOnlyView<'a> {
    error: &'a str,
    hint: &'static str,
}

#[derive(Serialize)]
struct RecoveredView<'a> {
    moved_to: String,
    at: String,
    error: &'a str,
}

/// The single connection that writes, on its own thread.
struct Writer {
    conn: Connection,
    rx: Receiver<Op>,
    backlog: Arc<AtomicUsize>,
    counters: Arc<Counters>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Writer {
    fn run(mut self) {
        let mut batch: Vec<(&'static str, WriteFn)> = Vec::new();
        let mut waiting: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
        while let Ok(first) = self.rx.recv() {
            let mut closing = None;
            let mut next = Some(first);
            // Take everything queued right now: one transaction for all of it.
            while let Some(op) = next.take() {
                match op {
                    Op::Write(what, f) => {
                        self.backlog.fetch_sub(1, Ordering::AcqRel);
                        batch.push((what, f));
                    }
                    Op::Flush(done) => waiting.push(done),
                    Op::Close(done) => {
                        closing = Some(done);
                        break;
                    }
                }
                if batch.len() >= 5_000 {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            self.commit(&mut batch);
            for done in waiting.drain(..) {
                let _ = done.send(());
            }
            if let Some(done) = closing {
                // Writes queued after the close request are still committed.
                while let Ok(op) = self.rx.try_recv() {
                    if let Op::Write(what, f) = op {
                        self.backlog.fetch_sub(1, Ordering::AcqRel);
                        batch.push((what, f));
                    }
                }
                self.commit(&mut batch);
                let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
                tracing::debug!("State store closed.");
                let _ = done.send(());
                return;
            }
        }
    }

    fn commit(&mut self, batch: &mut Vec<(&'static str, WriteFn)>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let mut ok = 0u64;
        let mut first_failure: Option<(&'static str, String)> = None;
        let counters = self.counters.clone();
        let last_error = self.last_error.clone();
        let result = (|| {
            let mut tx = self.conn.transaction()?;
            for (what, f) in batch.drain(..) {
                // One bad write must not cost the others: a savepoint each.
                let sp = tx.savepoint()?;
                match f(&sp) {
                    Ok(()) => {
                        sp.commit()?;
                        ok += 1;
                    }
                    Err(e) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(what, error = %e, "State store write failed.");
                        *last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(format!("{what}: {e}"));
                        first_failure.get_or_insert((what, e.to_string()));
                    }
                }
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                self.counters.committed.fetch_add(ok, Ordering::Relaxed);
                match first_failure {
                    Some((what, e)) => self.counters.set_failing(true, what, &e),
                    None => self.counters.set_failing(false, "", ""),
                }
            }
            Err(e) => {
                batch.clear();
                // The writes that had worked inside the transaction are lost too.
                self.counters.failed.fetch_add(ok, Ordering::Relaxed);
                // Logged when writes start failing (below), not each time:
                // a full disk would log every check.
                tracing::debug!(error = %e, writes = n, "State store commit failed; these writes are lost.");
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                self.counters.set_failing(true, "commit", &e.to_string());
            }
        }
    }
}

/// Opens the database, checks it and brings its schema up to date.
fn open_checked(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Reading the schema is where a file that is not a database shows.
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(format!("integrity check: {check}")),
        ));
    }
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "The state database is not in WAL mode.");
    }
    // NORMAL is durable across a depwatch crash (not across a power cut of
    // the last commits), which is what history needs, at a fraction of FULL's cost.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    migrate(&mut conn)?;
    // Waits out (then refuses) a database that another process holds locked.
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")?;
    Ok(conn)
}

/// Why `conn` cannot write, if it cannot. SQLite opens a file it may not
/// write (a read-only filesystem, a read-only file) read-only without a
/// word, and an empty transaction succeeds there: only a write tells.
/// This one is rolled back, so it changes nothing.
fn unwritable_reason(conn: &mut Connection) -> Option<String> {
    if conn.is_readonly(MAIN_DB).unwrap_or(false) {
        return Some("the file was opened read-only (a read-only filesystem or file?)".into());
    }
    let probe = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let v = user_version(&tx)?;
        tx.pragma_update(None, "user_version", v as i64)?;
        tx.rollback()
    })();
    probe.err().map(|e| e.to_string())
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

fn unwritable(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Unwritable {
        path: path.display().to_string(),
        source,
    }
}

/// Renames the database (and its WAL and shared-memory files, which belong
/// to it) to `depwatch.db.corrupt-<unix seconds>`.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let target = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    std::fs::rename(path, &target).map_err(|source| StoreError::MoveAside {
        path: path.display().to_string(),
        source,
    })?;
    for ext in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{ext}", path.display()));
        if side.exists() {
            let _ = std::fs::rename(&side, format!("{}{ext}", target.display()));
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::super::history::tests::sample;
    use super::*;
    use crate::store::schema::MIGRATIONS;
    #[tokio::test]
    async fn corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), vec![b'x'; 8192]).unwrap();
        let s = Store::open(dir.path()).unwrap();
        let r = s.recovered().expect("recovered");
        assert!(r.moved_to.exists());
        assert!(
            r.moved_to
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("depwatch.db.corrupt-")
        );
        assert_eq!(s.status_json()["status"], "recovered");
        s.storage_append("disk", "/", sample(1, 1));
        s.flush().await.unwrap();
        assert_eq!(s.storage_history("disk", "/", 0).await.unwrap().len(), 1);
    }

    #[test]
    fn uncreatable_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let err = Store::open(&file.join("state")).err().expect("an error");
        let msg = err.to_string();
        assert!(msg.contains("cannot create the state directory"), "{msg}");
        assert!(msg.contains("state_dir"), "{msg}");
    }

    #[test]
    fn a_state_directory_takes_one_depwatch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let lock = std::fs::read_to_string(dir.path().join(lock::LOCK_NAME)).unwrap();
        assert_eq!(lock, format!("{}\n", std::process::id()));
        let err = Store::open(dir.path()).err().expect("a second store");
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "in use by another depwatch (pid {})",
                std::process::id()
            )),
            "{msg}"
        );
        assert!(msg.contains("its own `state_dir`"), "{msg}");
        drop(first);
        Store::open(dir.path()).expect("the directory is free again");
    }

    #[test]
    fn migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Connection::open(dir.path().join("t.db")).unwrap();
        migrate(&mut c).unwrap();
        migrate(&mut c).unwrap();
        assert_eq!(user_version(&c).unwrap(), MIGRATIONS.len());
    }

    #[tokio::test]
    async fn status_returns_to_ok_once_writes_work_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.write("broken", |tx| {
            tx.execute("INSERT INTO nowhere VALUES (1)", []).map(drop)
        });
        s.flush().await.unwrap();
        assert_eq!(s.status_json()["status"], "write_errors");
        s.storage_append("disk", "/", sample(1, 1));
        s.flush().await.unwrap();
        let st = s.status_json();
        assert_eq!(st["status"], "ok", "{st}");
        assert_eq!(st["write_failures"], 1, "the counter keeps the history");
        assert!(
            st["last_error"].as_str().unwrap().contains("nowhere"),
            "{st}"
        );
    }

    #[test]
    fn a_read_only_connection_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        drop(open_checked(&path).unwrap());
        let mut writable = Connection::open(&path).unwrap();
        assert_eq!(unwritable_reason(&mut writable), None);
        // What SQLite falls back to when the file or filesystem is read-only.
        let mut ro = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let why = unwritable_reason(&mut ro).expect("read-only");
        assert!(why.contains("read-only"), "{why}");
        // A connection SQLite does not flag, whose writes fail all the same.
        writable.pragma_update(None, "query_only", true).unwrap();
        let why = unwritable_reason(&mut writable).expect("writes fail");
        assert!(why.contains("readonly"), "{why}");
        writable.pragma_update(None, "query_only", false).unwrap();
        assert_eq!(user_version(&writable).unwrap(), MIGRATIONS.len());
    }

    #[tokio::test]
    async fn a_failing_write_does_not_cost_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.storage_append("disk", "/", sample(1, 1));
        s.write("broken", |tx| {
            tx.execute("INSERT INTO nowhere VALUES (1)", []).map(drop)
        });
        s.storage_append("disk", "/", sample(2, 2));
        s.flush().await.unwrap();
        assert_eq!(s.storage_history("disk", "/", 0).await.unwrap().len(), 2);
        let st = s.status_json();
        assert_eq!(st["write_failures"], 1);
        assert_eq!(st["status"], "write_errors");
    }
}
