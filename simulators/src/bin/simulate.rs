//! `simulate`: one app simulator in a process of its own, for measuring offboard as users
//! run it (the bench's separate-process mode uses the same code). Prints the API root,
//! answers `calls` / `clear` on stdin, exits when stdin closes:
//!
//! ```text
//! simulate smartsheet --port 8089 --users 1000 --token bench-token
//! ```

use clap::{Parser, ValueEnum};
use offboard_simulators::standalone::{serve, App, Seed};

#[derive(Clone, Copy, ValueEnum)]
enum AppArg {
    Smartsheet,
    Postman,
}

/// Serves one app's simulated API on 127.0.0.1, seeded with an admin and `users` people
/// named user{i}@bench.example.
#[derive(Parser)]
struct Args {
    /// The API to serve.
    app: AppArg,
    /// The port on 127.0.0.1 (0: any free one; the printed root says which).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// How many people to create.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// The admin's token (Smartsheet bearer token; Postman API and SCIM key).
    #[arg(long, default_value = "bench-token")]
    token: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let app = match args.app {
        AppArg::Smartsheet => App::Smartsheet,
        AppArg::Postman => App::Postman,
    };
    serve(&Seed {
        app,
        port: args.port,
        users: args.users,
        token: args.token,
    })
    .await
}
