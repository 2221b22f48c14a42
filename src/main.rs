fn main() -> std::process::ExitCode {
    aegis_relay::cli::main()
}
