//! Exports the simulation binary's randomness interposer (`src/interpose.rs`)
//! in its dynamic symbol table, where `dlsym(RTLD_DEFAULT, "getrandom")` (std,
//! the `getrandom` crate) finds it before libc's. Binaries only: the library
//! and the tests link nothing of it.

fn main() {
    for symbol in ["getrandom", "getentropy"] {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={symbol}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
