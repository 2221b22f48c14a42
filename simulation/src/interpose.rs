//! The libc randomness symbols (`getrandom`, `getentropy`), replaced in the
//! simulation binary only, so that what dependencies draw from the OS is
//! fixed by the seed: std's `HashMap` keys, tokio's `select!` order,
//! chitchat's `rand::rng()` and peer choice, turmoil's own maps. std, the
//! `getrandom` crate and libc callers find these through the dynamic
//! symbol table (`build.rs` exports them) or by static linking.
//!
//! Each thread draws from its own stream once [`seed_this_thread`] set it
//! (a seed's thread and everything it runs); other threads share one
//! stream. Production binaries never link this module; the seed runner
//! and `tests/scenarios.rs` do.
//!
//! `unsafe` is allowed here and nowhere else: exporting C symbols and
//! writing through the raw pointer libc's contract hands us cannot be done
//! without it.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// This thread's stream; 0 = not seeded (the shared stream is used).
    static STREAM: Cell<u64> = const { Cell::new(0) };
}

/// The stream of threads never seeded.
static SHARED: AtomicU64 = AtomicU64::new(0x5eed_0000_0000_0001);

/// Makes this thread's OS randomness a function of `seed` from now on.
/// Call it first thing on a fresh thread: std and rand seed their
/// per-thread state once.
pub fn seed_this_thread(seed: u64) {
    STREAM.with(|stream| stream.set(splitmix(seed ^ 0xa5a5_5a5a_0f0f_f0f0) | 1));
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The next 8 bytes of this thread's stream.
fn next() -> u64 {
    let own = STREAM.with(|stream| {
        let state = stream.get();
        if state == 0 {
            return None;
        }
        let advanced = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        stream.set(advanced);
        Some(splitmix(advanced))
    });
    own.unwrap_or_else(|| splitmix(SHARED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)))
}

fn fill(dest: &mut [u8]) {
    for chunk in dest.chunks_mut(8) {
        let bytes = next().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// `getrandom(2)`: always fills the whole buffer.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes (libc's contract).
#[no_mangle]
pub unsafe extern "C" fn getrandom(buf: *mut c_void, len: usize, _flags: c_uint) -> isize {
    if len == 0 {
        return 0;
    }
    if buf.is_null() {
        return -1;
    }
    // SAFETY: the caller hands a buffer valid for `len` bytes.
    let dest = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    fill(dest);
    isize::try_from(len).unwrap_or(isize::MAX)
}

/// `getentropy(3)`: at most 256 bytes, as libc's.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes (libc's contract).
#[no_mangle]
pub unsafe extern "C" fn getentropy(buf: *mut c_void, len: usize) -> c_int {
    if len > 256 || (buf.is_null() && len > 0) {
        return -1;
    }
    if len > 0 {
        // SAFETY: the caller hands a buffer valid for `len` bytes.
        let dest = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
        fill(dest);
    }
    0
}
