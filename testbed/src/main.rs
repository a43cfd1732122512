use std::process::ExitCode;

fn main() -> ExitCode {
    testbed::cli::main()
}
