//! `mainstay-api`: see the library's documentation and `mainstay-api --help`.

fn main() -> std::process::ExitCode {
    mainstay_api::cli::main()
}
