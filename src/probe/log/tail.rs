//! Tailing: glob expansion (repeated, so new files are picked up), reading
//! what was appended, and every rotation form — rename-and-create (the old
//! file is drained to its end), copytruncate (the file shrinks), deletion and
//! re-creation. Files are known by identity (device, inode and a fingerprint
//! of their first bytes), so a different file at the same path is noticed
//! even when the inode number is reused. A partial last line is held until
//! its newline arrives; a line over `max_line_bytes` is skipped as invalid.
//!
//! Offsets (after the last complete line) are checkpointed through
//! [`OffsetStore`] (the state store's `log_offsets` table), so a restart
//! resumes where it stopped.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::config::StartAt;
use crate::probe::core::BoxFuture;
pub use crate::store::{FileMark, Saved};

/// The first bytes of a file hashed to tell files apart (Vector and Fluent
/// Bit do the same): an inode number can be reused after a deletion.
const FP_MAX: usize = 256;
/// Bytes read per call: large enough to amortize syscalls, small enough to
/// stay in cache.
const CHUNK: usize = 256 * 1024;
/// A poll reads at most this much before it yields (to checkpoint and to
/// notice a stop), then resumes at once.
const POLL_BUDGET: u64 = 64 * 1024 * 1024;
/// A rotated-away or deleted file is kept open this long after its last
/// growth: writers keep appending to the old file until they reopen.
const ROTATE_WAIT: Duration = Duration::from_secs(5);

/// Persists read offsets: the state store in depwatch, something simpler in
/// tests. Saving only queues the write (it never blocks a reader).
pub trait OffsetStore: Send + Sync {
    fn load<'a>(
        &'a self,
        component: &'a str,
    ) -> BoxFuture<'a, Result<Option<Saved>, crate::store::StoreError>>;
    fn save(&self, component: &str, saved: &Saved);
    /// Waits until what was saved so far is durable.
    fn committed(&self) -> BoxFuture<'_, ()>;
}

impl OffsetStore for crate::store::Store {
    fn load<'a>(
        &'a self,
        component: &'a str,
    ) -> BoxFuture<'a, Result<Option<Saved>, crate::store::StoreError>> {
        Box::pin(self.log_offsets_get(component))
    }

    fn save(&self, component: &str, saved: &Saved) {
        self.log_offsets_put(component, saved);
    }

    fn committed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "Log offsets may not be saved: the state store is closed.");
            }
        })
    }
}

/// FNV-1a: stable across builds and Rust versions (std's hasher is not).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn read_prefix(file: &File, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[got..], got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// A file being read.
#[derive(Debug)]
struct Tracked {
    path: PathBuf,
    dev: u64,
    ino: u64,
    file: File,
    /// After the last complete line (what a checkpoint records).
    offset: u64,
    /// Bytes of an unfinished line, read after `offset`.
    partial: Vec<u8>,
    /// Inside a line longer than `max_line_bytes`: drop up to its newline.
    skipping: bool,
    fp_len: u32,
    fp: u64,
    size: u64,
    /// Seen by the latest glob expansion at a matching path.
    in_glob: bool,
    last_growth: Instant,
}

impl Tracked {
    fn read_pos(&self) -> u64 {
        self.offset + self.partial.len() as u64
    }

    fn mark(&self) -> FileMark {
        FileMark {
            path: self.path.display().to_string(),
            dev: self.dev,
            ino: self.ino,
            offset: self.offset,
            fp_len: self.fp_len,
            fp: self.fp,
        }
    }

    /// Re-reads the fingerprint when the file is still shorter than
    /// `FP_MAX` bytes was: `false` when the first bytes changed (a new file
    /// in the same inode, or a rewrite after a truncation).
    fn refresh_fp(&mut self) -> std::io::Result<bool> {
        if self.fp_len as usize >= FP_MAX && self.size >= FP_MAX as u64 {
            let prefix = read_prefix(&self.file, FP_MAX)?;
            return Ok(prefix.len() == FP_MAX && fnv(&prefix) == self.fp);
        }
        let prefix = read_prefix(&self.file, FP_MAX)?;
        let old = self.fp_len as usize;
        if prefix.len() < old || fnv(&prefix[..old]) != self.fp {
            return Ok(false);
        }
        self.fp_len = prefix.len() as u32;
        self.fp = fnv(&prefix);
        Ok(true)
    }
}

/// What one poll saw, beyond the lines themselves.
#[derive(Debug, Default, Clone, Copy)]
pub struct PollStats {
    pub read_bytes: u64,
    pub rotations: u64,
    pub truncations: u64,
    /// The poll stopped at its budget: poll again at once.
    pub more: bool,
}

/// A file as shown in the component's details.
#[derive(Debug, Clone, PartialEq)]
pub struct FileView {
    pub path: String,
    pub offset: u64,
    pub size: u64,
    pub draining: bool,
}

/// The tailer of one probe: its files and where it stands in each.
#[derive(Debug)]
pub struct Tailer {
    patterns: Vec<String>,
    start_at: StartAt,
    max_line_bytes: usize,
    files: Vec<Tracked>,
    first_scan: bool,
    restored: Option<Saved>,
    buf: Vec<u8>,
    /// Regular files the latest scan found at the patterns (directories
    /// and the like are not read).
    pub matched_paths: usize,
    /// A directory the latest scan found at the patterns (`files:
    /// [/var/log/app]`): named when no file matches.
    pub matched_dir: Option<PathBuf>,
    pub last_error: Option<String>,
}

impl Tailer {
    pub fn new(patterns: Vec<String>, start_at: StartAt, max_line_bytes: usize) -> Self {
        Tailer {
            patterns,
            start_at,
            max_line_bytes,
            files: Vec::new(),
            first_scan: true,
            restored: None,
            buf: Vec::new(),
            matched_paths: 0,
            matched_dir: None,
            last_error: None,
        }
    }

    /// Resumes from a checkpoint: applied to the files of the first scan.
    pub fn restore(&mut self, saved: Option<Saved>) {
        self.restored = saved;
    }

    pub fn marks(&self) -> Vec<FileMark> {
        self.files.iter().map(Tracked::mark).collect()
    }

    pub fn view(&self) -> Vec<FileView> {
        self.files
            .iter()
            .map(|t| FileView {
                path: t.path.display().to_string(),
                offset: t.offset,
                size: t.size,
                draining: !t.in_glob,
            })
            .collect()
    }

    /// Ends reading (replay): a last line without its newline is a line.
    pub fn finish(&mut self, line: &mut dyn FnMut(Option<&[u8]>)) {
        for t in &mut self.files {
            if !t.partial.is_empty() && !t.skipping {
                line(Some(&t.partial));
            }
            t.offset += t.partial.len() as u64;
            t.partial.clear();
        }
    }

    fn expand(&mut self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for pat in &self.patterns {
            match glob::glob(pat) {
                Ok(paths) => out.extend(paths.flatten()),
                Err(e) => self.last_error = Some(format!("bad pattern {pat}: {e}")),
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Reads whatever was appended to every file; `line` gets each complete
    /// line (without its newline) or `None` for a line skipped as too long.
    pub fn poll(&mut self, line: &mut dyn FnMut(Option<&[u8]>)) -> PollStats {
        let mut stats = PollStats::default();
        self.last_error = None;
        self.scan(&mut stats);
        let mut budget = POLL_BUDGET;
        let mut i = 0;
        while i < self.files.len() {
            match self.read_file(i, &mut budget, &mut stats, line) {
                Ok(()) => {}
                Err(e) => {
                    self.last_error =
                        Some(format!("cannot read {}: {e}", self.files[i].path.display()));
                }
            }
            if budget == 0 {
                stats.more = true;
            }
            i += 1;
        }
        // Files rotated away or deleted: drop them once drained and quiet.
        let now = Instant::now();
        let mut kept = Vec::with_capacity(self.files.len());
        for mut t in std::mem::take(&mut self.files) {
            let drained = t.size <= t.read_pos();
            if !t.in_glob && drained && now.duration_since(t.last_growth) >= ROTATE_WAIT {
                // A last line without its newline is complete now.
                if !t.partial.is_empty() && !t.skipping {
                    line(Some(&t.partial));
                }
                t.partial.clear();
                tracing::debug!(path = %t.path.display(), "Stopped reading a rotated or deleted log file.");
                continue;
            }
            kept.push(t);
        }
        self.files = kept;
        self.first_scan = false;
        stats
    }

    fn scan(&mut self, stats: &mut PollStats) {
        let paths = self.expand();
        self.matched_paths = 0;
        self.matched_dir = None;
        for t in &mut self.files {
            t.in_glob = false;
        }
        for path in paths {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                if meta.is_dir() && self.matched_dir.is_none() {
                    self.matched_dir = Some(path);
                }
                continue;
            }
            self.matched_paths += 1;
            let (dev, ino) = (meta.dev(), meta.ino());
            if let Some(t) = self.files.iter_mut().find(|t| t.dev == dev && t.ino == ino) {
                // Seen under another matching name in this scan already (a
                // symlink and its target): one file, read once.
                if !t.in_glob && t.path != path {
                    stats.rotations += 1;
                    t.path = path;
                }
                t.in_glob = true;
                continue;
            }
            // A file at a path some tracked file had: that one was rotated away.
            if !self.first_scan && self.files.iter().any(|t| t.path == path) {
                stats.rotations += 1;
            }
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    self.last_error = Some(format!("cannot open {}: {e}", path.display()));
                    continue;
                }
            };
            let size = meta.len();
            let prefix = read_prefix(&file, FP_MAX).unwrap_or_default();
            let (fp_len, fp) = (prefix.len() as u32, fnv(&prefix));
            let offset = self.start_offset(dev, ino, &file, size, &meta);
            tracing::debug!(path = %path.display(), offset, "Reading a log file.");
            self.files.push(Tracked {
                path,
                dev,
                ino,
                file,
                offset,
                partial: Vec::new(),
                skipping: false,
                fp_len,
                fp,
                size,
                in_glob: true,
                last_growth: Instant::now(),
            });
        }
    }

    /// Where to start in a file seen for the first time.
    fn start_offset(
        &self,
        dev: u64,
        ino: u64,
        file: &File,
        size: u64,
        meta: &std::fs::Metadata,
    ) -> u64 {
        if let Some(saved) = &self.restored
            && let Some(m) = saved.files.iter().find(|m| m.dev == dev && m.ino == ino)
        {
            {
                let same = read_prefix(file, m.fp_len as usize)
                    .map(|p| p.len() == m.fp_len as usize && fnv(&p) == m.fp)
                    .unwrap_or(false);
                if same && m.offset <= size {
                    return m.offset;
                }
                // Another file in that inode, or truncated while we were away.
                return 0;
            }
        }
        if !self.first_scan {
            // New since we started: all of it is new.
            return 0;
        }
        match (&self.restored, self.start_at) {
            // Written since the checkpoint: it appeared while we were down.
            (Some(saved), _) if mtime(meta) > saved.saved_at => 0,
            (_, StartAt::Beginning) => 0,
            (_, StartAt::End) => size,
        }
    }

    fn read_file(
        &mut self,
        i: usize,
        budget: &mut u64,
        stats: &mut PollStats,
        line: &mut dyn FnMut(Option<&[u8]>),
    ) -> std::io::Result<()> {
        let max = self.max_line_bytes;
        let t = &mut self.files[i];
        let size = t.file.metadata()?.len();
        let grew = size != t.size;
        t.size = size;
        if size < t.read_pos() || (grew && !t.refresh_fp()?) {
            // copytruncate (or a rewrite in place): start over.
            stats.truncations += 1;
            t.offset = 0;
            t.partial.clear();
            t.skipping = false;
            let prefix = read_prefix(&t.file, FP_MAX)?;
            t.fp_len = prefix.len() as u32;
            t.fp = fnv(&prefix);
            tracing::debug!(path = %t.path.display(), "Log file truncated; reading it from the start.");
        }
        if size <= t.read_pos() {
            return Ok(());
        }
        t.last_growth = Instant::now();
        t.file.seek(SeekFrom::Start(t.read_pos()))?;
        let buf = &mut self.buf;
        while *budget > 0 {
            buf.clear();
            buf.append(&mut t.partial);
            let held = buf.len();
            buf.resize(held + CHUNK, 0);
            let n = t.file.read(&mut buf[held..])?;
            buf.truncate(held + n);
            if n == 0 {
                t.partial.extend_from_slice(buf);
                break;
            }
            stats.read_bytes += n as u64;
            *budget = budget.saturating_sub(n as u64);
            let mut start = 0;
            while let Some(nl) = memchr(b'\n', &buf[start..]) {
                let end = start + nl;
                if t.skipping {
                    t.skipping = false;
                } else if end - start > max {
                    line(None);
                } else {
                    line(Some(&buf[start..end]));
                }
                start = end + 1;
            }
            t.offset += start as u64;
            let rest = buf.len() - start;
            if t.skipping || rest > max {
                // Too long to ever be a line: drop what we have of it.
                if !t.skipping {
                    line(None);
                    t.skipping = true;
                }
                t.offset += rest as u64;
                t.partial.clear();
            } else {
                t.partial.clear();
                t.partial.extend_from_slice(&buf[start..]);
            }
        }
        Ok(())
    }
}

fn mtime(meta: &std::fs::Metadata) -> f64 {
    meta.mtime() as f64 + meta.mtime_nsec() as f64 / 1e9
}

/// The position of `needle` in `hay` (std's iterator search vectorizes well
/// enough for lines of a few hundred bytes).
fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == needle)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;

    use super::*;

    fn collect(t: &mut Tailer) -> Vec<Option<String>> {
        let mut out = Vec::new();
        t.poll(&mut |l| out.push(l.map(|b| String::from_utf8_lossy(b).into_owned())));
        out
    }

    fn append(p: &Path, b: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(b).unwrap();
    }

    #[test]
    fn partial_lines_wait_and_long_lines_are_skipped_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        append(&p, b"one\ntw");
        let mut t = Tailer::new(vec![p.display().to_string()], StartAt::Beginning, 1024);
        assert_eq!(collect(&mut t), vec![Some("one".into())]);
        assert_eq!(t.marks()[0].offset, 4);
        append(&p, b"o\n");
        assert_eq!(collect(&mut t), vec![Some("two".into())]);
        // A line of 3 chunks, twice the limit at each step: one `None`.
        let long = vec![b'x'; CHUNK * 3];
        append(&p, &long);
        assert_eq!(collect(&mut t), vec![None]);
        append(&p, b"xxx\nthree\n");
        assert_eq!(collect(&mut t), vec![Some("three".into())]);
        assert_eq!(t.marks()[0].offset, std::fs::metadata(&p).unwrap().len());
    }

    #[test]
    fn restore_resumes_and_notices_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        append(&p, b"one\ntwo\n");
        let pat = vec![p.display().to_string()];
        let mut t = Tailer::new(pat.clone(), StartAt::Beginning, 1024);
        assert_eq!(collect(&mut t).len(), 2);
        let saved = Saved {
            saved_at: 0.0,
            files: t.marks(),
        };
        append(&p, b"three\n");
        let mut t2 = Tailer::new(pat.clone(), StartAt::End, 1024);
        t2.restore(Some(saved.clone()));
        assert_eq!(collect(&mut t2), vec![Some("three".into())]);
        // Same inode, other first bytes: a different file, read whole.
        std::fs::write(&p, b"ONE\nTWO\nTHREE\nFOUR\n").unwrap();
        let mut t3 = Tailer::new(pat, StartAt::End, 1024);
        t3.restore(Some(saved));
        assert_eq!(collect(&mut t3).len(), 4);
    }

    #[test]
    fn a_symlink_and_its_target_are_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("app-1.log");
        append(&p, b"one\n");
        std::os::unix::fs::symlink(&p, dir.path().join("app.log")).unwrap();
        let pat = vec![dir.path().join("*.log").display().to_string()];
        let mut t = Tailer::new(pat, StartAt::Beginning, 1024);
        assert_eq!(collect(&mut t), vec![Some("one".into())]);
        append(&p, b"two\n");
        let mut rotations = 0;
        let mut lines = Vec::new();
        for _ in 0..3 {
            rotations += t.poll(&mut |l| lines.push(l.map(<[u8]>::to_vec))).rotations;
        }
        assert_eq!(lines, vec![Some(b"two".to_vec())]);
        assert_eq!(rotations, 0);
    }
}
