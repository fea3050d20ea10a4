//! The `unicred` command; see `unicred --help`. Everything happens in the library.

/// mimalloc instead of glibc's malloc: requests allocate on a Tokio thread and free on the
/// SQLite or hashing threads (and back), which contends glibc's arena locks (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    unicred::cli::main()
}
