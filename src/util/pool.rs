//! A fixed set of named threads for short blocking work (reading /proc,
//! polling log files). tokio's blocking pool starts a thread for every task
//! that finds none idle, and a burst of tasks (a reload that starts hundreds
//! of probes together) leaves those threads behind, growing malloc arenas
//! with them. Here the threads are started once, at the first job, and a
//! burst waits in a bounded queue instead.

use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// Why a job did not run to its end.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("{0} jobs are waiting already")]
    Full(usize),
    #[error("the worker threads stopped")]
    Stopped,
    #[error("the job panicked")]
    Panicked,
    #[error("cannot start a worker thread: {0}")]
    Start(String),
}

/// `threads` worker threads (0: one per core, at least two) named `name`,
/// with room for `capacity` waiting jobs.
pub struct Workers {
    name: &'static str,
    threads: usize,
    capacity: usize,
    queue: OnceLock<Result<SyncSender<Job>, PoolError>>,
}

impl Workers {
    pub const fn new(name: &'static str, threads: usize, capacity: usize) -> Workers {
        Workers {
            name,
            threads,
            capacity,
            queue: OnceLock::new(),
        }
    }

    /// One per core, at least two: for work that is CPU in the kernel or a
    /// quick read, where more at once would not go faster.
    pub fn per_core() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
    }

    fn start(&self) -> Result<SyncSender<Job>, PoolError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(self.capacity);
        let rx = Arc::new(Mutex::new(rx));
        let threads = match self.threads {
            0 => Self::per_core(),
            n => n,
        };
        for _ in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(self.name.into())
                .spawn(move || {
                    loop {
                        // The lock is held to take a job, not to run it.
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| PoolError::Start(e.to_string()))?;
        }
        Ok(tx)
    }

    /// Runs `f` on a worker thread and waits for its result. A job whose
    /// caller stopped waiting (a timeout, a reload) before its turn came is
    /// skipped; a panic ends the job, not the thread.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let tx = self
            .queue
            .get_or_init(|| self.start())
            .as_ref()
            .map_err(Clone::clone)?;
        let (done, wait) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if done.is_closed() {
                return;
            }
            if let Ok(r) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let _ = done.send(r);
            }
        });
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => PoolError::Full(self.capacity),
            TrySendError::Disconnected(_) => PoolError::Stopped,
        })?;
        wait.await.map_err(|_| PoolError::Panicked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_named_threads_and_panics_are_errors() {
        static W: Workers = Workers::new("test-worker", 2, 8);
        let name = W
            .run(|| std::thread::current().name().map(str::to_string))
            .await;
        assert_eq!(name, Ok(Some("test-worker".to_string())));
        assert_eq!(
            W.run(|| panic!("boom")).await,
            Err::<(), _>(PoolError::Panicked)
        );
        assert_eq!(W.run(|| 2 + 2).await, Ok(4));
    }
}
