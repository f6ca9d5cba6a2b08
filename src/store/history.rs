//! Storage history (table `storage_samples`, migration 1): the used bytes
//! of a disk over time, for the storage probe's forecast.

use rusqlite::params;

use super::core::{Store, StoreError};

/// One storage snapshot as kept in the store.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StorageSample {
    pub at_ms: i64,
    pub used: u64,
    pub size: u64,
    pub available: u64,
}

impl Store {
    pub fn storage_append(&self, component: &str, target: &str, s: StorageSample) {
        let (component, target) = (component.to_string(), target.to_string());
        self.write("storage sample", move |tx| {
            tx.prepare_cached(
                "INSERT INTO storage_samples (component, target, at_ms, used, size, available)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                component,
                target,
                s.at_ms,
                s.used as i64,
                s.size as i64,
                s.available as i64
            ])
            .map(drop)
        });
    }

    /// The samples of `component` on `target` since `since_ms`, oldest first.
    pub async fn storage_history(
        &self,
        component: &str,
        target: &str,
        since_ms: i64,
    ) -> Result<Vec<StorageSample>, StoreError> {
        let (component, target) = (component.to_string(), target.to_string());
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT at_ms, used, size, available FROM storage_samples
                 WHERE component = ?1 AND target = ?2 AND at_ms >= ?3 ORDER BY at_ms",
            )?;
            let rows = st.query_map(params![component, target, since_ms], |r| {
                Ok(StorageSample {
                    at_ms: r.get(0)?,
                    used: r.get::<_, i64>(1)?.max(0) as u64,
                    size: r.get::<_, i64>(2)?.max(0) as u64,
                    available: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Drops the samples of `component` older than `before_ms`, and those of
    /// any other target it watched before (its configuration changed).
    pub fn storage_prune(&self, component: &str, target: &str, before_ms: i64) {
        let (component, target) = (component.to_string(), target.to_string());
        self.write("storage retention", move |tx| {
            tx.execute(
                "DELETE FROM storage_samples WHERE component = ?1 AND (at_ms < ?2 OR target <> ?3)",
                params![component, before_ms, target],
            )
            .map(drop)
        });
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::SystemTime;

    use super::super::schema::MIGRATIONS;
    use super::*;
    use crate::util::time::unix_ms;

    /// A day ago, fixed for the whole test run.
    pub(crate) fn t0() -> i64 {
        static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
        *T0.get_or_init(|| unix_ms(SystemTime::now()) - 86_400_000)
    }

    /// A sample `at_ms` after [`t0`] (recent: the retention at open would
    /// delete samples of 1970).
    pub(crate) fn sample(at_ms: i64, used: u64) -> StorageSample {
        StorageSample {
            at_ms: t0() + at_ms,
            used,
            size: 1000,
            available: 1000 - used,
        }
    }

    #[tokio::test]
    async fn writes_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for i in 0..10 {
            s.storage_append("disk", "/", sample(i * 1000, i as u64));
        }
        s.close().await.unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        let h = s.storage_history("disk", "/", 0).await.unwrap();
        assert_eq!(h.len(), 10);
        assert_eq!(h[9], sample(9000, 9));
        assert!(
            s.storage_history("disk", "/other", 0)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(s.status_json()["status"], "ok");
        assert_eq!(s.status_json()["schema_version"], MIGRATIONS.len());
    }

    #[tokio::test]
    async fn prune_keeps_the_window_and_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for i in 0..10 {
            s.storage_append("disk", "/", sample(i * 1000, i as u64));
            s.storage_append("disk", "/old", sample(i * 1000, i as u64));
        }
        s.storage_prune("disk", "/", t0() + 5000);
        s.flush().await.unwrap();
        let h = s.storage_history("disk", "/", 0).await.unwrap();
        assert_eq!(h.first().map(|x| x.at_ms), Some(t0() + 5000));
        assert!(
            s.storage_history("disk", "/old", 0)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
