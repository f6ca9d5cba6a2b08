//! Records the git revision and the compiler version for `--version` and
//! `depwatch_build_info`, and hands release links the order of the
//! functions the default run executes (`link/hot-functions.txt`, written by
//! `scripts/order-functions`).
use std::path::Path;
use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let revision = std::env::var("DEPWATCH_REVISION")
        .ok()
        .or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DEPWATCH_REVISION={revision}");
    println!("cargo:rustc-env=DEPWATCH_RUSTC={rustc_version}");
    println!("cargo:rerun-if-env-changed=DEPWATCH_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    link_layout(&rustc_version);
}

/// The layout of a release binary, for a smaller resident set (idle RSS
/// 12.6 MiB before, 7.6 after; NOTES.md "Memory"):
/// - the functions of `link/hot-functions.txt` together at the start of the
///   text (lld's `--symbol-ordering-file`): the kernel maps code 64 KiB
///   around each page a fault touches, and the default run's code spread
///   over the whole binary kept 7 MiB of it resident instead of 2.6;
/// - relative relocations packed (`-z pack-relative-relocs`, 423 KiB of
///   `.rela.dyn` read at every start become 5 KiB), when the glibc here
///   (the one it will run on) is 2.36 or later, as it needs.
///
/// Release builds for x86_64-unknown-linux-gnu only, whose default linker
/// is lld since Rust 1.90; `DEPWATCH_LINK_LAYOUT=0` turns both off (another
/// linker, or a binary for an older glibc than the build machine's).
fn link_layout(rustc_version: &str) {
    const ORDER: &str = "link/hot-functions.txt";
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-env-changed=DEPWATCH_LINK_LAYOUT");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let minor = |v: &str| v.split('.').nth(1).and_then(|m| m.parse::<u32>().ok());
    let lld = env("TARGET") == "x86_64-unknown-linux-gnu"
        && minor(rustc_version).is_some_and(|m| m >= 90);
    if env("PROFILE") != "release" || env("DEPWATCH_LINK_LAYOUT") == "0" || !lld {
        return;
    }
    let order = Path::new(&env("CARGO_MANIFEST_DIR")).join(ORDER);
    if order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // Names of another build (other crate hashes) are not an error.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    // "glibc 2.36"; a cross build cannot ask the glibc it will run on.
    let glibc = (env("HOST") == env("TARGET"))
        .then(|| output("getconf", &["GNU_LIBC_VERSION"]))
        .flatten();
    let relr = glibc
        .as_deref()
        .and_then(|g| g.strip_prefix("glibc 2."))
        .and_then(|m| m.split('.').next()?.parse::<u32>().ok())
        .is_some_and(|m| m >= 36);
    if relr {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
