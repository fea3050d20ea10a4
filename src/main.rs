//! The `unicred` command; see `unicred --help`. Everything happens in the library.

fn main() -> std::process::ExitCode {
    unicred::cli::main()
}
