//! Exports the simulation binary's randomness interposer (`src/interpose.rs`)
//! in its dynamic symbol table, where `dlsym(RTLD_DEFAULT, "getrandom")` (std,
//! the `getrandom` crate) finds it before libc's. The seed runner and
//! `tests/scenarios.rs` (so a CI seed replays exactly with `--seed S --trace`)
//! include it; the library and production link nothing of it.

fn main() {
    for symbol in ["getrandom", "getentropy"] {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={symbol}");
        println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic-symbol={symbol}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
