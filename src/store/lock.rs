//! One depwatch per state directory: a lock on `depwatch.lock` there, held
//! for as long as the store is open and given back by the kernel when the
//! process ends (even by `kill -9`). Two processes on one database would
//! each resume the other's log offsets and alert state.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside `state_dir`; it holds the PID of the
/// process that has the lock.
pub const LOCK_NAME: &str = "depwatch.lock";

/// Why the lock of a directory was not taken.
#[derive(Debug)]
pub enum Refused {
    /// Another process has it: who, as far as the file says.
    Held(String),
    /// The lock file could not be opened or written.
    Io(PathBuf, io::Error),
}

/// Takes the lock of `dir` and writes this process' PID into its file.
/// `None`: a directory depwatch may not write to, where the store runs
/// read-only and there is nothing to guard, or a filesystem without locks
/// (some network mounts), used unguarded with a warning.
pub fn take(dir: &Path) -> Result<Option<File>, Refused> {
    let path = dir.join(LOCK_NAME);
    let mut file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(Refused::Io(path, e)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(Refused::Held(match pid.trim().parse::<u32>() {
                Ok(pid) => format!("another depwatch (pid {pid})"),
                Err(_) => "another process".into(),
            }));
        }
        Err(TryLockError::Error(e)) => {
            tracing::warn!(path = %path.display(), error = %e, "Cannot lock the state directory; make sure no other depwatch uses it.");
            return Ok(None);
        }
    }
    let pid = format!("{}\n", std::process::id());
    match file
        .set_len(0)
        .and_then(|()| file.write_all(pid.as_bytes()))
    {
        Ok(()) => Ok(Some(file)),
        Err(e) => Err(Refused::Io(path, e)),
    }
}
