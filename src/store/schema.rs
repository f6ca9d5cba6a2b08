//! The state database's schema: an append-only list of steps, and the
//! `user_version` that says how many of them a database has run.

use rusqlite::Connection;

/// One schema step. `sql` may hold several statements; it runs in one
/// transaction together with the `user_version` bump.
pub struct Migration {
    pub name: &'static str,
    pub sql: &'static str,
}

/// Append-only: the database's `user_version` is the number of entries that
/// ran. To add a table, add an entry at the END; never edit or reorder one
/// that has shipped (databases in the field already ran it).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "storage history",
        sql: "CREATE TABLE storage_samples (
              component TEXT    NOT NULL,
              target    TEXT    NOT NULL,
              at_ms     INTEGER NOT NULL,
              used      INTEGER NOT NULL,
              size      INTEGER NOT NULL,
              available INTEGER NOT NULL
          );
          CREATE INDEX storage_samples_by_component
              ON storage_samples (component, target, at_ms);
          CREATE INDEX storage_samples_by_age ON storage_samples (at_ms);",
    },
    Migration {
        name: "log offsets",
        sql: "CREATE TABLE log_offsets (
              component TEXT    NOT NULL,
              dev       INTEGER NOT NULL,
              ino       INTEGER NOT NULL,
              path      TEXT    NOT NULL,
              offset    INTEGER NOT NULL,
              fp_len    INTEGER NOT NULL,
              fp        INTEGER NOT NULL,
              saved_ms  INTEGER NOT NULL,
              PRIMARY KEY (component, dev, ino)
          );
          CREATE INDEX log_offsets_by_age ON log_offsets (saved_ms);",
    },
    Migration {
        name: "alert state",
        sql: "CREATE TABLE alert_incidents (
              id         INTEGER PRIMARY KEY,
              open       INTEGER NOT NULL,
              state      TEXT    NOT NULL,
              updated_ms INTEGER NOT NULL
          );
          CREATE INDEX alert_incidents_open ON alert_incidents (open);
          CREATE TABLE alert_emails (
              id         INTEGER PRIMARY KEY,
              incident   INTEGER,
              kind       TEXT    NOT NULL,
              message_id TEXT    NOT NULL,
              subject    TEXT    NOT NULL,
              mail_from  TEXT    NOT NULL,
              rcpt_to    TEXT    NOT NULL,
              body       BLOB    NOT NULL,
              created_ms INTEGER NOT NULL,
              sent_ms    INTEGER,
              attempts   INTEGER NOT NULL DEFAULT 0,
              reply      TEXT
          );
          CREATE INDEX alert_emails_unsent ON alert_emails (sent_ms);
          CREATE INDEX alert_emails_by_age ON alert_emails (created_ms);",
    },
];

/// Runs the migrations the database has not seen yet.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let done = user_version(conn)?;
    if done > MIGRATIONS.len() {
        tracing::warn!(
            schema_version = done,
            known = MIGRATIONS.len(),
            "The state database was written by a newer depwatch; using the tables this one knows."
        );
        return Ok(());
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(m.sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, migration = m.name, "State store migrated.");
    }
    Ok(())
}

/// How many migrations the database has run.
pub fn user_version(conn: &Connection) -> rusqlite::Result<usize> {
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map(|v| v.max(0) as usize)
}
