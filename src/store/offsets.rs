//! Log offsets (table `log_offsets`, migration 2): where each log probe's
//! reading of each file stands, so a restart neither skips nor repeats lines.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::core::{Store, StoreError};

/// Where reading of one file stands, as checkpointed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileMark {
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    /// After the last complete line processed.
    pub offset: u64,
    pub fp_len: u32,
    pub fp: u64,
}

/// A component's checkpoint: its files and when it was taken.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub saved_at: f64,
    pub files: Vec<FileMark>,
}

impl Store {
    /// Replaces the read offsets of a log probe (one row per file it reads).
    pub fn log_offsets_put(&self, component: &str, saved: &Saved) {
        let component = component.to_string();
        let saved = saved.clone();
        let saved_ms = (saved.saved_at * 1000.0).round() as i64;
        self.write("log offsets", move |tx| {
            tx.prepare_cached("DELETE FROM log_offsets WHERE component = ?1")?
                .execute(params![component])?;
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO log_offsets
                     (component, dev, ino, path, offset, fp_len, fp, saved_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            if saved.files.is_empty() {
                // No file right now (all rotated away): a marker row keeps
                // `saved_ms`, so files that appear while depwatch is down are
                // read whole rather than treated as a first start.
                ins.execute(params![
                    component, 0i64, 0i64, "", 0i64, 0u32, 0i64, saved_ms
                ])?;
            }
            for f in &saved.files {
                // SQLite integers are signed: u64 values are stored bit for bit.
                ins.execute(params![
                    component,
                    f.dev as i64,
                    f.ino as i64,
                    f.path,
                    f.offset as i64,
                    f.fp_len,
                    f.fp as i64,
                    saved_ms
                ])?;
            }
            Ok(())
        });
    }

    /// The read offsets of a log probe; `None` when it never saved any.
    pub async fn log_offsets_get(&self, component: &str) -> Result<Option<Saved>, StoreError> {
        let component = component.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT dev, ino, path, offset, fp_len, fp, saved_ms FROM log_offsets
                 WHERE component = ?1",
            )?;
            let mut saved_ms = None;
            let files = st
                .query_map(params![component], |r| {
                    Ok((
                        FileMark {
                            dev: r.get::<_, i64>(0)? as u64,
                            ino: r.get::<_, i64>(1)? as u64,
                            path: r.get(2)?,
                            offset: r.get::<_, i64>(3)?.max(0) as u64,
                            fp_len: r.get(4)?,
                            fp: r.get::<_, i64>(5)? as u64,
                        },
                        r.get::<_, i64>(6)?,
                    ))
                })?
                .map(|row| {
                    row.map(|(f, ms)| {
                        saved_ms = Some(saved_ms.map_or(ms, |m: i64| m.max(ms)));
                        f
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let files = files.into_iter().filter(|f| !f.path.is_empty()).collect();
            Ok(saved_ms.map(|ms| Saved {
                saved_at: ms as f64 / 1000.0,
                files,
            }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[tokio::test]
    async fn log_offsets_replace_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.log_offsets_get("app-log").await.unwrap(), None);
        let mark = |ino: u64, offset: u64| FileMark {
            path: format!("/var/log/{ino}.log"),
            dev: u64::MAX - 1,
            ino,
            offset,
            fp_len: 256,
            fp: u64::MAX - 7,
        };
        // Recent: older rows go at open (retention).
        let now = (crate::util::time::unix_now() * 1000.0).round() / 1000.0;
        let first = Saved {
            saved_at: now - 1.5,
            files: vec![mark(1, 10), mark(2, 20)],
        };
        s.log_offsets_put("app-log", &first);
        let second = Saved {
            saved_at: now,
            files: vec![mark(2, 25)],
        };
        s.log_offsets_put("app-log", &second);
        s.log_offsets_put("other", &first);
        let none = Saved {
            saved_at: now,
            files: vec![],
        };
        s.log_offsets_put("rotated-away", &none);
        s.close().await.unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.log_offsets_get("app-log").await.unwrap(), Some(second));
        assert_eq!(s.log_offsets_get("rotated-away").await.unwrap(), Some(none));
        assert_eq!(
            s.log_offsets_get("other")
                .await
                .unwrap()
                .map(|x| x.files.len()),
            Some(2)
        );
    }
}
