//! The `offboard` command; see `offboard --help` and the README.

fn main() {
    std::process::exit(offboard::cli::main());
}
