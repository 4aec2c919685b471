use std::process::ExitCode;

fn main() -> ExitCode {
    pipe::cli::main()
}
