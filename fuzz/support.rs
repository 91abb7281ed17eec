//! Shared by every fuzz test (each includes it with `#[path]`): the proptest runner (case count
//! from `GAUNTLET_FUZZ_CASES`, a fixed seed unless `GAUNTLET_FUZZ_SEED` says otherwise, no
//! failure files written) and the committed seed corpus under `fuzz/corpus/<target>/`.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};

/// The seed used when `GAUNTLET_FUZZ_SEED` is unset, so that every CI run tries the same cases.
pub const DEFAULT_SEED: u64 = 0x6761_756e_746c_6574; // "gauntlet"

/// Random cases to run: `GAUNTLET_FUZZ_CASES` if set, else `default` (small, so that a plain
/// `cargo test` stays fast).
pub fn cases(default: u32) -> u32 {
    match std::env::var("GAUNTLET_FUZZ_CASES") {
        Ok(n) => n
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("GAUNTLET_FUZZ_CASES={n:?} is not a number")),
        Err(_) => default,
    }
}

/// A deterministic runner for `cases(default)` cases. `GAUNTLET_FUZZ_SEED=N` picks another
/// seed, `GAUNTLET_FUZZ_SEED=random` a fresh one each run (printed with any failure). Failures
/// are reported with their shrunk input and never persisted: add one to the corpus by hand.
pub fn runner(default: u32) -> TestRunner {
    let rng_seed = match std::env::var("GAUNTLET_FUZZ_SEED").as_deref() {
        Ok("random") => RngSeed::Random,
        Ok(n) => RngSeed::Fixed(
            n.trim()
                .parse()
                .unwrap_or_else(|_| panic!("GAUNTLET_FUZZ_SEED={n:?} is not a number")),
        ),
        Err(_) => RngSeed::Fixed(DEFAULT_SEED),
    };
    TestRunner::new(Config {
        cases: cases(default),
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed,
        // Shrinking is bounded too: a failure is reported within a minute at worst.
        max_shrink_time: 60_000,
        ..Config::default()
    })
}

/// The corpus folder of `target`.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Every seed of `target` as `(file name, bytes)`, sorted by name; panics when there is none
/// (a missing corpus must not pass silently).
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// Result of a property, as the runner wants it.
pub type Outcome = Result<(), proptest::test_runner::TestCaseError>;

/// Runs `strategy` through `runner` and panics with the shrunk input and the seed on a failure.
pub fn run<S: proptest::strategy::Strategy>(
    runner: &mut TestRunner,
    strategy: &S,
    test: impl Fn(S::Value) -> Outcome,
) where
    S::Value: std::fmt::Debug,
{
    if let Err(e) = runner.run(strategy, test) {
        panic!(
            "{e}\n(seed: GAUNTLET_FUZZ_SEED={}; add the input above to fuzz/corpus/ once fixed)",
            std::env::var("GAUNTLET_FUZZ_SEED").unwrap_or_else(|_| DEFAULT_SEED.to_string())
        );
    }
}
