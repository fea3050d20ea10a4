//! The `unicred` command; see `unicred --help`. Everything happens in the library.

// mimalloc: glibc's allocator spent ~15 % of the token path's CPU (malloc_consolidate, arena
// contention between the runtime's workers and SQLite's thread).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    unicred::cli::main()
}
