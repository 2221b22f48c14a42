//! The same seed replays the same run bit for bit: the seed runner replays
//! one seed twice in fresh processes (the binary interposes libc's
//! randomness) and both print the same trace.

use std::hash::{DefaultHasher, Hasher};
use std::process::Command;

type Error = Box<dyn std::error::Error>;

/// One replay: its stdout (the whole trace, then the report).
fn replay(seed: u64) -> Result<String, Error> {
    let output = Command::new(env!("CARGO_BIN_EXE_aegis-relay-simulation"))
        .args(["--seed", &seed.to_string(), "--trace"])
        .args(["--duration", "30", "--edges", "20", "--tenants", "4"])
        .output()?;
    let stdout = String::from_utf8(output.stdout)?;
    if !output.status.success() {
        return Err(format!(
            "seed {seed} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(stdout)
}

/// A hash fixed across processes (SipHash with zero keys).
fn hash(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(text.as_bytes());
    hasher.finish()
}

#[test]
fn one_seed_twice_in_fresh_processes_gives_the_same_trace() -> Result<(), Error> {
    const SEED: u64 = 1;
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| replay(SEED).map_err(|err| err.to_string()));
        let second = replay(SEED).map_err(|err| err.to_string());
        (first.join(), second)
    });
    let first = first.map_err(|_| "the first replay panicked")??;
    let second = second?;
    eprintln!(
        "seed {SEED}: {} trace lines, hashes {:016x} and {:016x}",
        first.lines().count(),
        hash(&first),
        hash(&second)
    );
    assert!(first.contains(" runs "), "no command ran:\n{first}");
    assert!(first.contains("r0 serving"), "{first}");
    if first != second {
        let diverged = first
            .lines()
            .zip(second.lines())
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("first divergence:\n  {a}\n  {b}"))
            .unwrap_or_else(|| "one trace is a prefix of the other".to_owned());
        return Err(format!("seed {SEED} replayed differently; {diverged}").into());
    }
    Ok(())
}
