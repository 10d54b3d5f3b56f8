//! The `sid2` binary; the command itself lives in `pipeline::cli`.

fn main() -> std::process::ExitCode {
    pipeline::cli::main()
}
