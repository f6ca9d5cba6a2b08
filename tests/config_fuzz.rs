//! Fuzzes the configuration loader with mutations of the README's examples:
//! no input may panic, take over a second, or allocate over 100 MB.
//!
//! A test binary of its own (the others live in `tests/it/`) because it
//! installs a counting global allocator to measure each input's peak.
//! `DEPWATCH_FUZZ_CASES=200000 cargo test --test config_fuzz -- --nocapture`
//! runs a longer campaign; the default (10,000) runs in the suite.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters are plain atomics that never influence the returned memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const MAX_TIME: Duration = Duration::from_secs(1);
const MAX_BYTES: usize = 100 << 20;

/// Pieces that have broken YAML loaders and config checkers before.
const DICTIONARY: &[&str] = &[
    "*a",
    "&a ",
    "&a [x, *a, *a]",
    "<<: *a",
    "${SET_URL}",
    "${SET_BIG}",
    "${UNSET}",
    "${",
    "---\n",
    "...\n",
    "\u{feff}",
    "\0",
    "\t",
    "18446744073709551616s",
    "9999999999999999d",
    "1e400",
    "-1",
    "NaN",
    "0",
    "0ms",
    "99999999999999999999TB",
    "[",
    "]",
    "{",
    "}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    ": ",
    "\n  ",
    "\n- ",
    "- ",
    "? ",
    "|\n",
    ">-\n",
    "!!binary ",
    "!tag ",
    "'",
    "\"",
    "\\",
    "#",
    "%YAML 1.2\n",
    "kind: ",
    "http",
    "redis",
    "mongodb",
    "log",
    "storage",
    "process",
    "url: ",
    "rediss//:pw@h:1",
    "user:pw@h",
    "http://u:p@127.0.0.1:1/",
    "password_file: /dev/zero",
    "ca_file: /dev/zero",
    "name: ",
    "interval: ",
    "timeout: ",
    "probes:",
    "modules:",
    "queues:",
    "rules:",
    "labels:",
    "buckets: [",
    "é",
    "\u{202e}",
];

/// The YAML examples of the README, and the built-in default.
fn seeds() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut out = vec![depwatch::config::DEFAULT_YAML.to_string()];
    let mut block: Option<String> = None;
    for line in readme.lines() {
        match &mut block {
            None if line.trim_start().starts_with("```yaml") => block = Some(String::new()),
            Some(b) if line.trim_start().starts_with("```") => {
                out.push(std::mem::take(b));
                block = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    assert!(out.len() > 3, "the README has no yaml examples?");
    out
}

#[derive(Clone, Debug)]
enum Op {
    Insert { at: usize, word: usize },
    Delete { at: usize, len: usize },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
    Indent { line: usize, by: usize },
    Number { nth: usize, word: usize },
    FlipByte { at: usize, bits: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let word = 0..DICTIONARY.len();
    prop_oneof![
        4 => (any::<usize>(), word.clone()).prop_map(|(at, word)| Op::Insert { at, word }),
        2 => (any::<usize>(), 1usize..64).prop_map(|(at, len)| Op::Delete { at, len }),
        1 => any::<usize>().prop_map(|line| Op::DuplicateLine { line }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::SwapLines { a, b }),
        1 => (any::<usize>(), 0usize..6).prop_map(|(line, by)| Op::Indent { line, by }),
        2 => (any::<usize>(), word).prop_map(|(nth, word)| Op::Number { nth, word }),
        1 => (any::<usize>(), 1u8..=255).prop_map(|(at, bits)| Op::FlipByte { at, bits }),
    ]
}

fn apply(text: &mut Vec<u8>, op: &Op) {
    let n = text.len().max(1);
    let lines =
        |t: &[u8]| -> Vec<Vec<u8>> { t.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect() };
    match *op {
        Op::Insert { at, word } => {
            let at = at % (text.len() + 1);
            text.splice(at..at, DICTIONARY[word].bytes());
        }
        Op::Delete { at, len } => {
            let at = at % n;
            let end = (at + len).min(text.len());
            text.drain(at.min(end)..end);
        }
        Op::DuplicateLine { line } => {
            let mut ls = lines(text);
            let i = line % ls.len();
            ls.insert(i, ls[i].clone());
            *text = ls.join(&b'\n');
        }
        Op::SwapLines { a, b } => {
            let mut ls = lines(text);
            let len = ls.len();
            ls.swap(a % len, b % len);
            *text = ls.join(&b'\n');
        }
        Op::Indent { line, by } => {
            let mut ls = lines(text);
            let i = line % ls.len();
            ls[i].splice(0..0, std::iter::repeat_n(b' ', by * 2));
            *text = ls.join(&b'\n');
        }
        Op::Number { nth, word } => {
            // Replace one number or duration of the text by a dictionary word.
            let starts: Vec<usize> = (0..text.len())
                .filter(|&i| {
                    text[i].is_ascii_digit() && (i == 0 || !text[i - 1].is_ascii_alphanumeric())
                })
                .collect();
            if let Some(&s) = starts.get(nth % starts.len().max(1)) {
                let e = (s..text.len())
                    .find(|&i| !text[i].is_ascii_alphanumeric() && text[i] != b'.')
                    .unwrap_or(text.len());
                text.splice(s..e, DICTIONARY[word].bytes());
            }
        }
        Op::FlipByte { at, bits } => {
            if !text.is_empty() {
                let at = at % text.len();
                text[at] ^= bits;
            }
        }
    }
}

fn env(name: &str) -> Option<String> {
    match name {
        "SET_URL" => Some("rediss//:FuzzSecret@host:6379".into()),
        "SET_BIG" => Some("x".repeat(100_000)),
        n if n.starts_with("SET") => Some("15s".into()),
        _ => None,
    }
}

#[derive(Default)]
struct Stats {
    inputs: usize,
    valid: usize,
    not_utf8: usize,
    slowest: Duration,
    slowest_input: String,
    peak: usize,
    peak_input: String,
}

#[test]
fn mutated_readme_examples_never_panic_hang_or_balloon() {
    let seeds = seeds();
    let cases: u32 = std::env::var("DEPWATCH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let base = tempfile::tempdir().unwrap();
    let stats = std::cell::RefCell::new(Stats::default());
    let strategy = (0..seeds.len(), proptest::collection::vec(op(), 1..5));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |(seed, ops)| {
        let mut bytes = seeds[seed].clone().into_bytes();
        for op in &ops {
            apply(&mut bytes, op);
        }
        let baseline = CURRENT.load(Ordering::Relaxed);
        PEAK.store(baseline, Ordering::Relaxed);
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(|| {
            depwatch::config::utf8_text(bytes.clone()).map(|text| {
                depwatch::config::from_str(&text, "fuzz.yml", None, base.path(), &env).is_ok()
            })
        });
        let took = started.elapsed();
        let used = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
        let input = String::from_utf8_lossy(&bytes).into_owned();
        let valid = outcome
            .map_err(|_| TestCaseError::fail(format!("the loader panicked on:\n{input}")))?;
        prop_assert!(took < MAX_TIME, "took {took:?} on:\n{input}");
        prop_assert!(used < MAX_BYTES, "allocated {used} bytes on:\n{input}");
        let mut s = stats.borrow_mut();
        s.inputs += 1;
        match valid {
            Ok(true) => s.valid += 1,
            Ok(false) => {}
            Err(_) => s.not_utf8 += 1,
        }
        if took > s.slowest {
            s.slowest = took;
            s.slowest_input = input.chars().take(400).collect();
        }
        if used > s.peak {
            s.peak = used;
            s.peak_input = input.chars().take(400).collect();
        }
        Ok(())
    });
    let s = stats.borrow();
    println!(
        "config fuzz: {} inputs from {} seeds ({} valid, {} not UTF-8); slowest {:?}, peak {} KiB",
        s.inputs,
        seeds.len(),
        s.valid,
        s.not_utf8,
        s.slowest,
        s.peak >> 10
    );
    if std::env::var_os("DEPWATCH_FUZZ_SHOW").is_some() {
        println!(
            "slowest input:\n{}\n---\nlargest input:\n{}",
            s.slowest_input, s.peak_input
        );
    }
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(s.inputs >= cases as usize);
}
