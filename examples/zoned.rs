//! zoned: a Primary Server's zone service over HTTPS (`../shared/ZONECTL.md`, "Running a zone
//! on real hosts"; N1-N7). Thin over `zonepki::net::server::ZoneServer`, which holds every rule:
//! this file parses flags, sets up logs, opens the store and prints one line when ready.
//!
//! ```text
//! zoned --store PATH|postgres://... --fqdn FQDN --state DIR --listen ADDR:PORT
//!       [--advertise-host HOST] [--admin-token-file FILE] [--console-password-file FILE]
//!       [--log-format text|json]
//! ```
//!
//! - `--store PATH`: the zone's embedded store, held exclusively while zoned runs (a second
//!   zoned, or a zonectl writing to it, is refused as busy).
//! - `--store postgres://USER@HOST:PORT/DB`: the zone's shared store (D1; the zone made there
//!   by `zonectl init` or `zonectl store copy`). Several zoned, one per Primary Server, may
//!   run on it; the certificate server's signs for the others over server-to-server calls
//!   (D2), and the zone's scheduled work runs once per zone (N6).
//! - `--advertise-host HOST`: the host the other Primary Servers reach this one at, recorded
//!   in the zone's store with the port listened on (default: the FQDN).
//! - `--state DIR`: the server's member directory (`<fleet root>/<FQDN>`: its key and chain,
//!   on the certificate server also the CA key).
//! - `--admin-token-file FILE`: the administrator's token; without it the token is
//!   `DIR/admin-token`, written (mode 0600) on the first start.
//! - `--console-password-file FILE`: serve the web console at `https://ADDR:PORT/console`,
//!   signing in with the password on the file's first line (kept as an Argon2id hash; W3).
//!   Without it there is no console.
//! - Logs go to stderr (`RUST_LOG`, default `info`), as text or JSON lines. Standard output
//!   holds one line, `listening on https://ADDR:PORT`, once the server accepts connections.
//! - SIGTERM or SIGINT stop it gracefully (exit 0). Exit 1 with one `error:` line on stderr
//!   when it cannot start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use zonepki::net::console::ConsolePassword;
use zonepki::net::server::{AdminToken, ZoneServer};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// A Primary Server's zone service: the agent API (mutual TLS), the admin API, health and
/// metrics, and the zone's scheduled work.
#[derive(Debug, Parser)]
#[command(name = "zoned", version)]
struct Cli {
    /// The zone's store: a redb file, or postgres://USER@HOST:PORT/DB (shared by several
    /// zoned, D1).
    #[arg(long, value_name = "PATH|postgres://...")]
    store: String,
    /// This server's FQDN (a Primary Server of the zone).
    #[arg(long)]
    fqdn: String,
    /// This server's member directory (`<fleet root>/<FQDN>`).
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// Where to listen (port 0: any free port, printed when ready).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// The host other Primary Servers reach this one at (default: the FQDN).
    #[arg(long, value_name = "HOST")]
    advertise_host: Option<String>,
    /// The administrator's token file (default: DIR/admin-token, created on first start).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Serve the web console (/console), signing in with the password in this file.
    #[arg(long, value_name = "FILE")]
    console_password_file: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    // The URL's password (if any) never reaches a message.
    let shown = zonepki::store::display_name(&cli.store);
    let store = zonepki::store::open(&cli.store).map_err(|e| format!("--store {shown}: {e}"))?;
    let token = match &cli.admin_token_file {
        Some(file) => AdminToken::read(file).map_err(|e| format!("--admin-token-file: {e}"))?,
        None => {
            let (token, created) =
                AdminToken::load_or_create(&cli.state).map_err(|e| e.to_string())?;
            if created {
                eprintln!(
                    "zoned: wrote the administrator's token to {}",
                    cli.state.join("admin-token").display()
                );
            }
            token
        }
    };
    let mut builder = ZoneServer::builder(store, &cli.fqdn, &cli.state)
        .listen(cli.listen)
        .admin_token(token);
    if let Some(host) = &cli.advertise_host {
        builder = builder.advertise(host);
    }
    if let Some(file) = &cli.console_password_file {
        let password =
            ConsolePassword::read(file).map_err(|e| format!("--console-password-file: {e}"))?;
        builder = builder.console(password);
    }
    let server = builder.build().map_err(|e| e.to_string())?;
    println!("listening on https://{}", server.local_addr());
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    server.run_until_signal().map_err(|e| e.to_string())
}
