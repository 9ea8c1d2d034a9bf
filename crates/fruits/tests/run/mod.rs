//! Running the `fruits` binary under test, shared by the tests that drive it as a user does.

use std::process::{Command, Output};

/// `fruits ARGS...`, with no weights from the environment or the user's cache.
pub fn fruits(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fruits"))
        .args(args)
        .env_remove("FRUITS_WEIGHTS")
        .env("XDG_CACHE_HOME", "/nonexistent-fruits-cache")
        .output()
        .expect("run fruits")
}

/// Bytes a process printed, as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What a successful run printed on stdout; panics with its stderr otherwise.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}
