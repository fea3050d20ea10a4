//! The `unicred` command; see `unicred --help`. Everything happens in the library.

/// mimalloc instead of glibc's malloc: requests allocate on a Tokio thread and free on the
/// SQLite or hashing threads (and back), which contends glibc's arena locks. Built without its
/// MADV_HUGEPAGE on arenas (`no_thp`): every thread's first page would otherwise cost a 2 MiB
/// huge page of RSS. Only the Argon2 workers ask for huge pages (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    unicred::cli::main()
}
