//! zone-agent: a member's agent on its own host (ZONECTL.md "Running a zone on real hosts";
//! N1, N3, N5, S1). Thin over `zonepki::net::agent`: argument parsing, logs and exit codes.
//!
//! ```text
//! zone-agent enroll --server https://HOST:PORT [--server https://HOST2:PORT ...] --name NAME \
//!     --token-file FILE --ca-sha256 FP --state DIR [--key p256|rsa2048|rsa3072|rsa4096]
//! zone-agent refresh --state DIR
//! zone-agent run --state DIR [--interval SECONDS]
//! ```
//!
//! Exit status: 0 done (for `refresh`: the poll was answered); 1 refused or failed, with one
//! line `error: ...` on stderr; 2 usage error. Logs (tracing) go to stderr; `RUST_LOG`
//! chooses what is logged (default `info`). `run` stops on SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use zeroize::Zeroizing;
use zonepki::clock::Timestamp;
use zonepki::key::KeySpec;
use zonepki::net::agent::{self, AgentOptions, RunOptions};
use zonepki::net::client::{CaPin, ServerUrl};
use zonepki::protocol::RegistrationToken;

#[derive(Parser)]
#[command(
    name = "zone-agent",
    version,
    about = "A zone member's agent on its own host (zonepki)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// First contact: trust the zone CA whose SHA-256 is FP, make this member's own key and
    /// CSR (the key never leaves), enrol with the one-time token and save the member in DIR.
    Enroll {
        /// The zone server, https://HOST:PORT. Repeat it to name the zone's other Primary
        /// Servers (one store, D1): the agent enrols with the first and polls the next ones
        /// when it cannot reach it.
        #[arg(long, value_name = "URL", required = true)]
        server: Vec<String>,
        /// The member's name (a server's FQDN or a device's name).
        #[arg(long)]
        name: String,
        /// The file `zonectl member token` wrote for this member.
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
        /// The zone CA's SHA-256, as `zonectl ca show --json` prints `sha256`.
        #[arg(long, value_name = "FP")]
        ca_sha256: String,
        /// The member's state directory.
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        /// The key type.
        #[arg(long, default_value = "p256", value_parser = parse_key)]
        key: KeySpec,
    },
    /// One poll: fetch, stage, report, and switch if the activation time has come.
    Refresh {
        /// The member's state directory.
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
    },
    /// Poll for ever (with jitter and backoff); switch at the activation time by this host's
    /// clock even when no server answers then.
    Run {
        /// The member's state directory.
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        /// Seconds between polls.
        #[arg(long, default_value_t = 60, value_name = "SECONDS",
              value_parser = clap::value_parser!(u64).range(1..))]
        interval: u64,
    },
}

fn parse_key(s: &str) -> Result<KeySpec, String> {
    s.parse().map_err(|e: zonepki::key::KeyError| e.to_string())
}

/// The largest token file read.
const MAX_TOKEN_FILE: u64 = 4096;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(1)
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Enroll {
            server,
            name,
            token_file,
            ca_sha256,
            state,
            key,
        } => {
            let urls = server
                .iter()
                .map(|s| s.parse::<ServerUrl>().map_err(|e| format!("--server: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            let url = urls[0].clone();
            let pin: CaPin = ca_sha256.parse().map_err(|e| format!("--ca-sha256: {e}"))?;
            let bytes = Zeroizing::new(
                zonepki::fsio::read(&token_file, MAX_TOKEN_FILE, "a token file")
                    .map_err(|e| format!("--token-file: {e}"))?,
            );
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| format!("{} does not hold a token", token_file.display()))?;
            let token = RegistrationToken::parse(text)
                .map_err(|e| format!("{}: {e}", token_file.display()))?;
            let got = agent::enroll(
                &url,
                &name,
                token,
                &pin,
                &state,
                key,
                AgentOptions::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
            if urls.len() > 1 {
                agent::AgentConfig::set_other_servers(&state, &urls[1..])
                    .map_err(|e| e.to_string())?;
            }
            println!(
                "enrolled {} (certificate SHA-256 {}) in {}",
                got.name,
                got.certificate_sha256,
                state.display()
            );
            Ok(())
        }
        Command::Refresh { state } => {
            let r = agent::refresh(&state, Timestamp::now_utc(), AgentOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            match r.standing.detail() {
                Some(d) => println!("{}: {d}", r.standing.name()),
                None => println!("{}", r.standing.name()),
            }
            Ok(())
        }
        Command::Run { state, interval } => {
            let options = RunOptions::every(Duration::from_secs(interval));
            agent::run(&state, options, shutdown())
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
