//! The `aegis-relay` binary: everything lives in the library (`cli` parses the
//! command line and maps outcomes to exit codes).

fn main() -> std::process::ExitCode {
    aegis_relay::cli::main()
}
