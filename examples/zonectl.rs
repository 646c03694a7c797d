//! zonectl: the administrator's command line over zonepki (the contract is
//! `../shared/ZONECTL.md`). It parses arguments and prints; every rule lives in the library.
//!
//! Exit status: 0 done; 1 refused or failed (`error: ...` on stderr, store unchanged);
//! 2 usage error; 3 only from `warnings --fail-on expired|expiring` when a certificate matches
//! (for monitoring scripts). With `--json`, an error is one JSON object on stderr,
//! `{"error": "..."}` (usage errors add `"usage": true`), with the same exit status.
//!
//! The store: `--store` (or `$ZONECTL_STORE`) names a file, the embedded store, or a PostgreSQL
//! database as `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`, shared by several servers (D1);
//! zonectl never prints a URL's password. `store copy --from STORE --to STORE` moves a zone
//! between any two (D3). A second zonectl waits for one that holds a store file, up to
//! `--wait SECONDS` (default 10, `$ZONECTL_WAIT`), announced on stderr, then is refused saying
//! so. A missing store is told to `init`, a damaged one is named damaged. Commands that only
//! show the zone open the store read-only (a read-only file works, and its modification time
//! stays), and write only when an activation is due.
//!
//! Output files (`--out`, `--zip`) are never replaced without `--force`; `-` is standard
//! output, which then holds the data alone. `op baseline --force` and `ca restore` ask for
//! confirmation when standard input is a terminal (`--yes` does not ask; scripts without a
//! terminal are never asked). `zonectl completions bash|zsh|fish` prints a completion script;
//! every command's help ends with examples.
//!
//! Commands that show the zone (`server list/show/cert`, `device list`, `ca show/export`,
//! `warnings`, `op show`) first run the work due at `--now` (activation, O8), as the
//! library's `op` commands and `fleet refresh` do; `plan` and `store dump` never do.
//!
//! The subject options of CSRs (`--org`, `--ou`, `--locality`, `--state`, `--country`) may
//! each be left out: the library checks those given (C must be two letters, CE2). Given
//! without `--csr auto` (or `--key` with `--csr manual`, where the administrator makes the
//! keys) they are a usage error (exit 2), since they would have no effect.
//!
//! CA custody (MV1, BK1, BK2): `ca backup` and `ca restore` take the passphrase from
//! `$ZONECTL_PASSPHRASE` (a backup also needs `$ZONECTL_PASSPHRASE_CONFIRM`, the same text: the
//! passphrase is "typed twice") or, when neither is set and standard input is a terminal, from
//! a prompt without echo; never from an argument, and it is never printed. A backup file is
//! created with mode 0600 once the archive is made, and never replaces an existing file.
//!
//! Emergency replacement (SR6): `server replace FQDN [--file FILE]` replaces an expired server
//! certificate at once, outside the staged operations. With an internal CA give no file: the
//! server's agent makes a new key and the certificate server issues. With an external CA run
//! `csr generate FQDN ...` first, have the current CA sign the CSR, and give the certificate
//! (with any subordinate CAs) as FILE. It prints the new certificate and the members that must
//! re-establish trust with the server.
//!
//! Through a zone server (issue 11): `--server https://HOST:PORT --admin-token-file FILE
//! --ca-sha256 FP` runs the command against the zone's store through zoned's admin API (same
//! output, JSON and exit codes), after checking that the server holds the CA with that
//! SHA-256. `init`, `fleet refresh`, `chain verify`, `lint` and `completions` run where the
//! files are and refuse it. `member token NAME... --out-dir DIR` writes one-time registration
//! tokens for `zone-agent enroll`, locally or through `--server`.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::IsTerminal;

/// `println!` that exits quietly when stdout is closed (`zonectl op show | head`): a broken
/// pipe is not an error worth a backtrace.
macro_rules! println {
    () => { out(format_args!("\n")) };
    ($($t:tt)*) => { out(format_args!("{}\n", format_args!($($t)*))) };
}

fn out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        print_error(&format!("cannot write output: {e}"));
        std::process::exit(1);
    }
}
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::error::ErrorKind;
use clap::{ArgGroup, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use time::UtcOffset;
use zeroize::Zeroizing;
use zonepki::backup::{self, Passphrase};
use zonepki::ca::ValidityYears;
use zonepki::cert::bundle;
use zonepki::cert::{CertDetails, Certificate};
use zonepki::chain::verify_chain;
use zonepki::clock::{ManualClock, Timestamp};
use zonepki::csr::{CsrDer, VerifiedCsr};
use zonepki::fsio;
use zonepki::key::KeySpec;
use zonepki::lint::{Rule, lint_chain};
use zonepki::ops::{ActivationRequest, CsrFields, CsrMode, OpError};
use zonepki::ops::{AtDeadline, Gate, ServerQuota};
use zonepki::service::{
    ChangeCaRequest, ChangeCaTarget, DumpError, InitExternal, InitInternal, NewServer, OpView,
    Plan, RemintCaRequest, Replacement, ServerRemintRequest, ZoneService,
};
use zonepki::store::{CopyError, MemoryStore, PostgresStore, RedbStore, Storage, StoreError};
use zonepki::transport::{Fleet, Outcome, RefreshOptions, RefreshOutcome};
use zonepki::transport::{LoopbackTransport, Transport};
use zonepki::view::{
    CaView, DEFAULT_WARNING_WINDOW, DeviceQuery, ServerView, UpdateStatus, WARNING_HEADER,
};
use zonepki::zone::{Fqdn, ServerRole};

/// The zone as a command sees it: the embedded store and the members' agents in this process,
/// or, with `--server`, the zone server's store and agents through its admin API.
type Service = ZoneService<Box<dyn Storage>, Arc<dyn Transport>, ManualClock>;
/// The zone in this process only (`init`, `fleet refresh`: they run where the files are).
type LocalService = ZoneService<Box<dyn Storage>, LoopbackTransport, ManualClock>;
type CmdResult = Result<(), String>;

#[derive(Parser)]
#[command(
    name = "zonectl",
    version,
    about = "Manage a zone's PKI (zonepki reference frontend)"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// The zone's store: a file (the embedded store), or postgres://USER@HOST:PORT/DB (a
    /// PostgreSQL database shared by several servers).
    #[arg(
        long,
        global = true,
        env = "ZONECTL_STORE",
        default_value = "./zone.db"
    )]
    store: PathBuf,
    /// Act as if the clock read TIME (RFC 3339).
    #[arg(long, global = true, value_parser = parse_time)]
    now: Option<Timestamp>,
    /// Machine-readable output: one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Where members' files live: DIR/<name>/current/{cert,key,trust}.pem.
    #[arg(long, global = true, default_value = "./fleet")]
    root: PathBuf,
    /// UTC offset for times in tables, e.g. +02:00 (JSON is always UTC).
    #[arg(long, global = true, value_parser = parse_offset, allow_hyphen_values = true)]
    utc_offset: Option<UtcOffset>,
    /// Start operations without B1 bridges: members that miss activation are then stranded,
    /// as the manuals describe, instead of validating the servers through the bridge.
    #[arg(long, global = true)]
    no_bridge: bool,
    /// While another zonectl (or zoned) holds the store, wait up to SECONDS for it, then give
    /// up (exit 1); 0 gives up at once.
    #[arg(
        long,
        global = true,
        env = "ZONECTL_WAIT",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    wait: u64,
    /// Run the command through the zone server at https://HOST:PORT (zoned's admin API)
    /// instead of opening --store: same output, JSON and exit codes. Needs
    /// --admin-token-file and --ca-sha256. Refused by the commands that run where the files
    /// are: init, fleet refresh, chain verify, lint, completions. Give it before the command
    /// (`ca change internal --server FQDN` is that command's own option).
    #[arg(long, env = "ZONECTL_SERVER", value_name = "URL")]
    server: Option<String>,
    /// With --server: the file holding the administrator's token (zoned writes it to
    /// DIR/admin-token). Read, never printed.
    #[arg(
        long,
        global = true,
        env = "ZONECTL_ADMIN_TOKEN_FILE",
        value_name = "FILE"
    )]
    admin_token_file: Option<PathBuf>,
    /// With --server: the zone CA's SHA-256 (as `ca show --json` prints `sha256`), which the
    /// server must prove it holds before anything is sent to it.
    #[arg(long, global = true, env = "ZONECTL_CA_SHA256", value_name = "FP")]
    ca_sha256: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a zone: with an internal CA held by its first Primary Server (Z2), or with
    /// --external-chain, --server-chain and --server-key, with an external CA (Z3).
    ///
    /// A refused init leaves no store file.
    Init(InitArgs),
    /// Servers: add, list, show, certificates.
    #[command(subcommand)]
    Server(ServerCmd),
    /// Managed devices.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// The zone CA.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Certificates about to expire or expired (V3).
    ///
    /// Exit status 0 whatever is listed, unless --fail-on is given: then 3 when a listed
    /// certificate matches it (the list is printed all the same), so a monitoring script can
    /// alert on it. 1 and 2 keep their meanings (refused or failed; usage error).
    Warnings {
        /// Warning window in days.
        #[arg(long, default_value_t = 90)]
        within_days: u32,
        /// Exit 3 when the CA or a server certificate has expired (`expired`), or when any
        /// warning is listed, expired or expiring within the window (`expiring`).
        #[arg(long, value_enum, value_name = "WHAT")]
        fail_on: Option<FailOn>,
    },
    /// The staged operation (O1-O12): show it and act on it.
    #[command(subcommand)]
    Op(OpCmd),
    /// CSRs for an external CA (SR5): generate, export as a zip, show.
    #[command(subcommand)]
    Csr(CsrCmd),
    /// Server certificates from an external CA (SR5, CE3).
    #[command(subcommand)]
    Cert(CertCmd),
    /// Play the members' agents (A1, A2, O8, O9).
    #[command(subcommand)]
    Fleet(FleetCmd),
    /// Members on their own hosts (N3): registration tokens for `zone-agent enroll`.
    #[command(subcommand)]
    Member(MemberCmd),
    /// Dry run (B3): per member of the running operation, whether it would still communicate
    /// after activation, with what members have applied now. Changes nothing.
    Plan {
        /// The time asked about (default: --now, or the clock).
        #[arg(long, value_parser = parse_time)]
        at: Option<Timestamp>,
    },
    /// Chain tools.
    #[command(subcommand)]
    Chain(ChainCmd),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// The store.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Print a shell completion script: `zonectl completions bash > /etc/bash_completion.d/zonectl`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Pre-flight lint (B4) of certificates or chains (PEM, DER or PKCS#7): the checks every
    /// certificate the zone makes or imports passes. One line per finding; exit 0 when clean,
    /// 1 with findings.
    Lint(LintArgs),
}

/// The EXAMPLES section of each command's help, by command path (kept apart from the
/// options so each command's help ends with what an administrator types).
const EXAMPLES: &[(&[&str], &str)] = &[
    (&["init"], "zonectl init --zone Acme --first-server ps1.acme.example --dns zone.acme.example
zonectl init --zone Acme --first-server ps1.acme.example --external-chain root.pem \\
  --server-chain ps1.pem --server-key ps1.key"),
    (&["server", "add"], "zonectl server add ps2.acme.example --role primary
zonectl server add sat1.acme.example --role auth-satellite --parent ps2.acme.example
zonectl server add content1.acme.example --role content-satellite"),
    (&["server", "list"], "zonectl server list
zonectl server list --json --utc-offset +02:00"),
    (&["server", "show"], "zonectl server show ps1.acme.example"),
    (&["server", "cert"], "zonectl server cert ps1.acme.example --out ps1.pem
zonectl server cert ps1.acme.example --future --out - | openssl x509 -noout -text"),
    (&["server", "remint"], "zonectl server remint sat1.acme.example --update-name sat-2027 \\
  --activate-at 2027-06-01T02:00:00Z"),
    (&["server", "replace"], "zonectl server replace sat1.acme.example
zonectl server replace sat1.acme.example --file sat1-new.pem   # external CA"),
    (&["device", "add"], "zonectl device add laptop-a laptop-b
zonectl device add --count 100 --prefix laptop
zonectl device add --count 50 --prefix laptop --start 101   # laptop-101 .. laptop-150"),
    (&["device", "list"], "zonectl device list --limit 50
zonectl device list --limit 50 --after laptop-50
zonectl device list --status failed --json"),
    (&["ca", "show"], "zonectl ca show
zonectl ca show --json | jq -r .sha256"),
    (&["ca", "export"], "zonectl ca export --out ca.pem
zonectl ca export --der --out - > ca.der"),
    (&["ca", "remint"], "zonectl ca remint --activate-at 2027-06-01T02:00:00Z
zonectl ca remint --activate-at immediate   # only once the CA has expired"),
    (&["ca", "change", "internal"], "zonectl ca change internal --server ps2.acme.example \\
  --activate-at 2027-06-01T02:00:00Z"),
    (&["ca", "change", "external"], "zonectl ca change external --chain corp-root.pem \\
  --activate-at 2027-06-01T02:00:00Z --csr auto --org Acme --country US
zonectl ca change external --chain corp.p7b --activate-at 2027-06-01T02:00:00Z --csr manual"),
    (&["ca", "move"], "zonectl ca move --to ps2.acme.example"),
    (&["ca", "backup"], "ZONECTL_PASSPHRASE=... ZONECTL_PASSPHRASE_CONFIRM=... zonectl ca backup --out ca-2027.zip
zonectl ca backup --out ca-2027.zip   # on a terminal: prompts twice"),
    (&["ca", "restore"], "zonectl ca restore --file ca-2027.zip --to ps2.acme.example
zonectl ca restore --file ca-2027.zip --to ps2.acme.example --yes   # no confirmation"),
    (&["warnings"], "zonectl warnings --within-days 120
zonectl warnings --fail-on expired || alert 'zone certificate expired'"),
    (&["op", "show"], "zonectl op show
zonectl op show --json | jq '.servers[], .devices[] | select(.status == \"failed\")'"),
    (&["op", "assign-now"], "zonectl op assign-now"),
    (&["op", "cancel"], "zonectl op cancel"),
    (&["op", "redeploy"], "zonectl op redeploy
zonectl op redeploy laptop-7 laptop-9"),
    (&["op", "ignore"], "zonectl op ignore laptop-7"),
    (&["op", "baseline"], "zonectl op baseline
zonectl op baseline --force --yes   # stranded members lose their recovery bundle"),
    (&["op", "replicate"], "zonectl op replicate content1.acme.example"),
    (&["csr", "generate"], "zonectl csr generate sat1.acme.example --org Acme --ou IT --locality Provo \\
  --state UT --country US"),
    (&["csr", "export"], "zonectl csr export --zip csrs.zip
zonectl csr export --zip csrs.zip sat1.acme.example"),
    (&["csr", "show"], "zonectl csr show sat1.acme.example
zonectl csr show sat1.acme.example --out sat1.csr"),
    (&["cert", "import"], "zonectl cert import sat1.acme.example --file sat1.p7b"),
    (&["member", "token"], "zonectl member token laptop-1 laptop-2 --out-dir tokens/
zonectl member token sat1.acme.example --out-dir tokens/ --valid-hours 24
zonectl --server https://ps1.acme.example:8443 --admin-token-file admin-token \\
  --ca-sha256 AB:CD:... member token laptop-3 --out-dir tokens/"),
    (&["fleet", "refresh"], "zonectl fleet refresh --all
zonectl fleet refresh laptop-7 laptop-9 --offline laptop-9
zonectl fleet refresh --all --fail laptop-3 --now 2027-06-01T02:00:00Z"),
    (&["plan"], "zonectl plan --at 2027-06-01T02:00:00Z"),
    (&["chain", "verify"], "zonectl chain verify --trust ca.pem --leaf ps1.pem
zonectl chain verify --trust root.pem --untrusted int.pem --leaf server.p7b --at 2027-06-01T00:00:00Z"),
    (&["audit", "verify"], "zonectl audit verify"),
    (&["store", "dump"], "zonectl store dump > before.json"),
    (&["store", "copy"], "zonectl store copy --from zone.db --to postgres://zonepki@db.acme.example/zone
zonectl store copy --from postgres://zonepki@db.acme.example/zone --to zone-copy.db"),
    (&["lint"], "zonectl lint ca.pem
zonectl lint server.p7b --fqdn ps1.acme.example --external
zonectl lint --json chain.pem"),
    (&["completions"], "zonectl completions bash > /etc/bash_completion.d/zonectl
zonectl completions zsh > \"${fpath[1]}/_zonectl\"
zonectl completions fish > ~/.config/fish/completions/zonectl.fish"),
];

/// zonectl's command line: the derived parser with each command's EXAMPLES section.
fn command() -> clap::Command {
    fn with_examples(cmd: clap::Command, path: &[&str], text: &'static str) -> clap::Command {
        match path.split_first() {
            None => cmd.after_help(format!("Examples:\n{}", indent(text))),
            Some((first, rest)) => cmd.mut_subcommand(*first, |sub| with_examples(sub, rest, text)),
        }
    }
    fn indent(text: &str) -> String {
        text.lines().map(|l| format!("  {l}\n")).collect()
    }
    EXAMPLES.iter().fold(Cli::command(), |cmd, (path, text)| {
        with_examples(cmd, path, text)
    })
}

/// What makes `warnings` exit 3.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FailOn {
    /// A certificate has expired.
    Expired,
    /// A certificate has expired or expires within the window.
    Expiring,
}

/// The exit status of `warnings --fail-on` when a warning matches.
const EXIT_WARNING: i32 = 3;

#[derive(Args)]
struct InitArgs {
    /// Zone name (also the internal CA's CN).
    #[arg(long)]
    zone: String,
    /// FQDN of the first Primary Server: it holds the CA role of an internal CA.
    #[arg(long)]
    first_server: String,
    /// Additional DNS names of the first server.
    #[arg(long = "dns", num_args = 1..)]
    dns: Vec<String>,
    /// Agent version of the first server.
    #[arg(long, default_value = "unknown")]
    agent_version: String,
    /// Internal CA key type [default: p256]; not with --external-chain.
    #[arg(long, value_parser = parse_key)]
    key: Option<KeySpec>,
    /// Internal CA validity, 1 to 10 years [default: 10]; not with --external-chain.
    #[arg(long, value_name = "N", value_parser = parse_years)]
    valid_years: Option<u64>,
    /// The external CA (Z3): its trusted root, or the complete chain (intermediate(s) and
    /// root); PEM, DER or PKCS#7, whatever the file's name (CE1). Needs --server-chain and
    /// --server-key.
    #[arg(long, value_name = "FILE", help_heading = "External CA (Z3)")]
    external_chain: Option<PathBuf>,
    /// The first server's certificate from the external CA, with any subordinate CAs not in
    /// --external-chain; it must chain to the external CA (CE3) and name the server.
    #[arg(long, value_name = "FILE", help_heading = "External CA (Z3)")]
    server_chain: Option<PathBuf>,
    /// The first server's private key (PKCS#8, PEM or DER), matching its certificate.
    #[arg(long, value_name = "FILE", help_heading = "External CA (Z3)")]
    server_key: Option<PathBuf>,
    /// Accept a lint warning (B4) for the external certificates, by rule name; repeat for
    /// several.
    #[arg(long, value_name = "RULE", value_parser = parse_rule, help_heading = "External CA (Z3)")]
    accept_lint_warning: Vec<Rule>,
}

#[derive(Subcommand)]
enum ServerCmd {
    /// Add a server; Primary and Authentication Satellite servers are enrolled at once.
    Add {
        /// FQDN.
        fqdn: String,
        /// Role.
        #[arg(long, value_parser = ["primary", "auth-satellite", "content-satellite"])]
        role: String,
        /// Parent Primary Server (Authentication Satellites).
        #[arg(long)]
        parent: Option<String>,
        /// Additional DNS names.
        #[arg(long = "dns", num_args = 1..)]
        dns: Vec<String>,
        /// Agent version.
        #[arg(long, default_value = "unknown")]
        agent_version: String,
        /// Key type its agent generates.
        #[arg(long, value_parser = parse_key, default_value = "p256")]
        key: KeySpec,
    },
    /// The server list (V2).
    List,
    /// One server (V2).
    Show {
        /// FQDN.
        fqdn: String,
    },
    /// Write a server's certificate chain (PEM; --der writes the leaf alone as DER).
    Cert {
        /// FQDN.
        fqdn: String,
        /// Output file; `-` is standard output.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists (without it an existing file is refused).
        #[arg(long)]
        force: bool,
        /// The future certificate staged by a running remint.
        #[arg(long)]
        future: bool,
        /// DER instead of PEM.
        #[arg(long)]
        der: bool,
    },
    /// Start a Server Remint (SR1-SR3): new keys and certificates for the selected Primary
    /// Servers and Authentication Satellites, current at the activation time.
    ///
    /// With an internal CA leave --csr out: the certificate server issues. With an external
    /// CA give --csr manual (each server's chain and key placed in its remint repository) or
    /// --csr auto (the agents make keys and CSRs with the subject options; then `csr export`,
    /// have them signed, `cert import`). The library refuses the wrong one for the zone.
    Remint(ServerRemintArgs),
    /// Emergency replacement of an expired server certificate (SR6), at once and outside the
    /// staged operations (an expired certificate cannot be reminted by them).
    ///
    /// Internal CA: give no file; the server's agent makes a new key and the certificate
    /// server issues a new certificate. External CA: first `zonectl csr generate FQDN ...`,
    /// have the zone's current CA sign that CSR, then give the certificate (with any
    /// subordinate CAs not in the zone's chain; PEM, DER or PKCS#7) as --file. Prints the new
    /// certificate and the members that must re-establish trust with the server. Refused
    /// while a staged operation runs, and for a certificate that has not expired.
    Replace {
        /// The server whose certificate has expired.
        fqdn: String,
        /// External CA only: the new certificate, issued by the current CA for the server's
        /// CSR.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServerRemintArgs {
    /// The servers to remint (Primary Servers, Authentication Satellites).
    #[arg(required = true, num_args = 1..)]
    servers: Vec<String>,
    /// The system update's name (O3).
    #[arg(long)]
    update_name: String,
    /// When the new certificates become current: RFC 3339, or `immediate` (accepted only
    /// once the current CA has expired, O2).
    #[arg(long, value_parser = parse_activation)]
    activate_at: ActivationRequest,
    /// Common name (default: each server's FQDN); only for one server without satellites.
    #[arg(long)]
    cn: Option<String>,
    /// Key type of the new server keys [default: p256]; not with --csr manual.
    #[arg(long, value_parser = parse_key)]
    key: Option<KeySpec>,
    /// Put the servers' additional DNS names into their SANs.
    #[arg(long)]
    include_dns: bool,
    /// CSR mode, external CA only (SR3).
    #[arg(long, value_enum)]
    csr: Option<CsrModeArg>,
    #[command(flatten)]
    subject: CsrSubjectArgs,
    #[command(flatten)]
    gate: GateArgs,
}

/// How server certificates are requested from an external CA (CE2).
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CsrModeArg {
    /// The administrator makes keys and CSRs elsewhere and places each server's chain
    /// (`server.<ext>`) and key (`key.der`) in its remint repository.
    Manual,
    /// Each server's agent makes a key and CSR (subject options below); `csr export`, have
    /// them signed, then `cert import`.
    Auto,
}

/// Subject fields of the CSRs that zonepki makes (CE2, SR5); the CN is the server's FQDN.
/// Each may be left out; the library checks those given.
#[derive(Args, Default)]
#[command(next_help_heading = "CSR subject (--csr auto, csr generate)")]
struct CsrSubjectArgs {
    /// Organisation (O).
    #[arg(long)]
    org: Option<String>,
    /// Organisational unit (OU).
    #[arg(long)]
    ou: Option<String>,
    /// Locality (L).
    #[arg(long)]
    locality: Option<String>,
    /// State or province (ST).
    #[arg(long)]
    state: Option<String>,
    /// Country (C): two letters, e.g. US.
    #[arg(long)]
    country: Option<String>,
}

impl CsrSubjectArgs {
    /// The options given, by flag, for usage errors.
    fn given(&self) -> Vec<&'static str> {
        [
            ("--org", &self.org),
            ("--ou", &self.ou),
            ("--locality", &self.locality),
            ("--state", &self.state),
            ("--country", &self.country),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(flag, _)| flag)
        .collect()
    }

    fn fields(self) -> CsrFields {
        let mut fields = CsrFields::default();
        fields.organization = self.org;
        fields.organizational_unit = self.ou;
        fields.locality = self.locality;
        fields.state = self.state;
        fields.country = self.country;
        fields
    }
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Add managed devices by name, or --count N of them named PREFIX-K .. PREFIX-(K+N-1)
    /// (K is --start, 1 by default; a later --start extends a series).
    Add {
        /// Device names.
        names: Vec<String>,
        /// How many to add (at least 1).
        #[arg(long, conflicts_with = "names", value_parser = parse_count)]
        count: Option<u64>,
        /// Name prefix for --count.
        #[arg(long, default_value = "dev", requires = "count")]
        prefix: String,
        /// The number of the first device of --count.
        #[arg(long, default_value_t = 1, requires = "count", value_name = "K")]
        start: u64,
        /// Agent version.
        #[arg(long, default_value = "unknown")]
        agent_version: String,
    },
    /// Managed devices, in natural name order (laptop-2 before laptop-10), optionally filtered
    /// by update status and one page at a time: --limit N, then --after the last name shown.
    List {
        /// Only devices with this update status: none, "not assigned", assigned, downloading,
        /// applied, failed, ignored, activated, stranded, bridged, recovered.
        #[arg(long, value_parser = parse_update_status)]
        status: Option<UpdateStatus>,
        /// At most N devices; a table then says how to get the next page.
        #[arg(long, value_name = "N", value_parser = parse_count)]
        limit: Option<u64>,
        /// Only devices after NAME in the list's order (the last name of the previous page).
        #[arg(long, value_name = "NAME")]
        after: Option<String>,
    },
}

#[derive(Subcommand)]
enum CaCmd {
    /// CA certificate details (V1).
    Show,
    /// Write the CA certificate (PEM unless --der).
    Export {
        /// Output file; `-` is standard output.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists (without it an existing file is refused).
        #[arg(long)]
        force: bool,
        /// DER instead of PEM.
        #[arg(long)]
        der: bool,
    },
    /// Start a Remint CA (RC1): a new CA key and certificate on the certificate server, and
    /// every server certificate reminted under it, current at the activation time.
    Remint(CaRemintArgs),
    /// Start a Change CA, to a new internal CA (CI1) or to an external CA (CE1, CE2).
    #[command(subcommand)]
    Change(CaChangeCmd),
    /// Move the CA role, and the CA key with it, to another Primary Server (MV1).
    ///
    /// Internal CA only, and not while a staged operation runs. The key travels between the
    /// two agents encrypted; the old holder erases its copy.
    Move {
        /// The Primary Server that takes the CA role.
        #[arg(long, value_name = "FQDN")]
        to: String,
    },
    /// Back up the CA certificate and key into an encrypted zip archive (BK1, S5).
    ///
    /// The passphrase (at least 10 characters) is given twice: in $ZONECTL_PASSPHRASE and
    /// $ZONECTL_PASSPHRASE_CONFIRM, or, when neither is set and standard input is a terminal,
    /// typed at two prompts without echo. It is never taken from an argument. The key is
    /// encrypted as PKCS#8 (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC): `openssl pkey -in
    /// ca-key.p8.pem` decrypts it. The file is created with mode 0600 once the archive is made,
    /// and an existing file is never replaced.
    Backup {
        /// The archive to create (it must not exist); `-` is standard output.
        #[arg(long, value_name = "FILE.zip")]
        out: PathBuf,
    },
    /// Restore the CA from a backup archive onto a Primary Server (BK2), which takes the CA
    /// role if another server held it.
    ///
    /// The passphrase comes from $ZONECTL_PASSPHRASE or, when it is not set and standard
    /// input is a terminal, from a prompt without echo; never from an argument. A wrong
    /// passphrase, a damaged or altered archive, or another zone's CA is refused and changes
    /// nothing.
    Restore {
        /// The backup archive.
        #[arg(long, value_name = "FILE.zip")]
        file: PathBuf,
        /// The Primary Server that receives the CA key and holds the CA role.
        #[arg(long, value_name = "FQDN")]
        to: String,
        /// Do not ask for confirmation on a terminal (without a terminal nothing is asked).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum CaChangeCmd {
    /// Change CA to internal (CI1, CI2): a new CA created on a Primary Server, which becomes
    /// the certificate server; every Primary Server and Authentication Satellite certificate
    /// is reminted under it, current at the activation time.
    Internal(ChangeInternalArgs),
    /// Change CA to external (CE1-CE3): the uploaded root (or complete chain) becomes the
    /// zone CA at the activation time; server certificates come from the external CA.
    ///
    /// --csr manual: place each server's complete chain (`server.<ext>`) and key (`key.der`)
    /// in its remint repository before its agent refreshes. --csr auto: the agents make keys
    /// and CSRs with the subject options (each may be left out; C must be two letters); then
    /// `csr export`, have them signed, and `cert import` each certificate.
    External(ChangeExternalArgs),
}

#[derive(Args)]
struct ChangeInternalArgs {
    /// The Primary Server that creates and holds the new CA (the new certificate server).
    #[arg(long)]
    server: String,
    /// When the new CA becomes current: RFC 3339, or `immediate` (accepted only once the
    /// current CA has expired, O2).
    #[arg(long, value_parser = parse_activation)]
    activate_at: ActivationRequest,
    /// Subject (CN) of the new CA (default: the zone name).
    #[arg(long)]
    subject: Option<String>,
    /// Key type of the new CA.
    #[arg(long, value_parser = parse_key, default_value = "p256")]
    key: KeySpec,
    /// Validity of the new CA, 1 to 10 years.
    #[arg(long, default_value_t = 10, value_parser = parse_years)]
    valid_years: u64,
    /// Put servers' additional DNS names into their new certificates' SANs.
    #[arg(long)]
    include_dns: bool,
    /// The system update's name (default: "Change CA").
    #[arg(long)]
    update_name: Option<String>,
    #[command(flatten)]
    gate: GateArgs,
}

#[derive(Args)]
struct ChangeExternalArgs {
    /// The external CA: its trusted root, or the complete chain (server -> intermediate(s)
    /// -> root); PEM, DER or PKCS#7, whatever the file's name (CE1).
    #[arg(long)]
    chain: PathBuf,
    /// When the external CA becomes current: RFC 3339, or `immediate` (accepted only once
    /// the current CA has expired, O2).
    #[arg(long, value_parser = parse_activation)]
    activate_at: ActivationRequest,
    /// How server certificates are requested (CE2).
    #[arg(long, value_enum)]
    csr: CsrModeArg,
    /// Key type of the keys the agents make [default: p256]; --csr auto only.
    #[arg(long, value_parser = parse_key)]
    key: Option<KeySpec>,
    /// Put servers' additional DNS names into their CSRs' SANs.
    #[arg(long)]
    include_dns: bool,
    /// The system update's name (default: "Change CA").
    #[arg(long)]
    update_name: Option<String>,
    #[command(flatten)]
    subject: CsrSubjectArgs,
    #[command(flatten)]
    gate: GateArgs,
}

#[derive(Subcommand)]
enum CsrCmd {
    /// Generate CSR (SR5): each named server's agent makes a new key and CSR, replacing an
    /// earlier one. For servers in a running operation with an external CA, or in a zone
    /// whose CA is external. The subject options may each be left out (C: two letters).
    Generate {
        /// The servers.
        #[arg(required = true, num_args = 1..)]
        servers: Vec<String>,
        /// Common name (default: each server's FQDN); only for a single server.
        #[arg(long)]
        cn: Option<String>,
        /// Key type of the new keys.
        #[arg(long, value_parser = parse_key, default_value = "p256")]
        key: KeySpec,
        #[command(flatten)]
        subject: CsrSubjectArgs,
    },
    /// Download CSRs (SR5): one zip with `<fqdn>.csr` (PEM) per server, for the named servers
    /// or every server that has a CSR.
    Export {
        /// The zip file to write; `-` is standard output.
        #[arg(long, value_name = "FILE")]
        zip: PathBuf,
        /// Replace FILE if it exists (without it an existing file is refused).
        #[arg(long)]
        force: bool,
        /// The servers (default: every server with a CSR).
        servers: Vec<String>,
    },
    /// One server's CSR, PEM: written to --out, or printed.
    Show {
        /// The server.
        fqdn: String,
        /// The file to write (default, or `-`: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace FILE if it exists (without it an existing file is refused).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum CertCmd {
    /// Import Certificate (SR5, CE3): the external CA's certificate for a server's CSR, with
    /// any subordinate CAs not in the zone's uploaded chain; PEM, DER or PKCS#7, whatever the
    /// file's name. It must chain to the (future) zone CA.
    Import {
        /// The server.
        fqdn: String,
        /// The certificate file.
        #[arg(long)]
        file: PathBuf,
        /// Accept a lint warning (B4) for this certificate, by rule name (e.g.
        /// san_wildcard); repeat for several.
        #[arg(long, value_name = "RULE", value_parser = parse_rule)]
        accept_lint_warning: Vec<Rule>,
    },
}

#[derive(Args)]
struct CaRemintArgs {
    /// When the new CA becomes current: RFC 3339, or `immediate` (accepted only once the
    /// current CA has expired, O2).
    #[arg(long, value_parser = parse_activation)]
    activate_at: ActivationRequest,
    /// Common name of the new CA (default: the zone name).
    #[arg(long)]
    cn: Option<String>,
    /// Key type of the new CA.
    #[arg(long, value_parser = parse_key, default_value = "p256")]
    key: KeySpec,
    /// Validity of the new CA, 1 to 10 years.
    #[arg(long, default_value_t = 10, value_parser = parse_years)]
    valid_years: u64,
    /// Put servers' additional DNS names into their new certificates' SANs.
    #[arg(long)]
    include_dns: bool,
    /// The system update's name (default: "Remint CA").
    #[arg(long)]
    update_name: Option<String>,
    #[command(flatten)]
    gate: GateArgs,
}

#[derive(Subcommand)]
enum OpCmd {
    /// The running operation, or else the last one with its final state.
    Show,
    /// Assign the update before replication completes (O4).
    AssignNow,
    /// Cancel, until ten minutes before activation (O7).
    Cancel,
    /// Send the update again to failed members (all failed ones when none is named) (O5).
    Redeploy {
        /// Members to redeploy.
        names: Vec<String>,
    },
    /// Take members out of the update (O5); allowed even inside the cancel cut-off (O7).
    Ignore {
        /// Members to take out.
        #[arg(required = true, num_args = 1..)]
        names: Vec<String>,
    },
    /// Finish the update (O10); refused while members are stranded unless --force.
    Baseline {
        /// Baseline although members are stranded (their recovery bundle goes away); asks
        /// for confirmation on a terminal.
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation on a terminal (without a terminal nothing is asked).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Record that the update's content reached these Primary Servers or Content Satellites
    /// (O3); the update is assigned once every one has it (O4).
    Replicate {
        /// The content servers.
        #[arg(required = true, num_args = 1..)]
        servers: Vec<String>,
    },
}

#[derive(Subcommand)]
enum FleetCmd {
    /// Refresh members as their agents would: pull, stage, report, activate (A1, A2, O8, O9).
    ///
    /// Name the members, or give --all; giving neither (or both) is a usage error (exit 2).
    /// Options that take names (--fail, --offline) take every following value up to the
    /// next option, so put member names before them. Exit 0 when every member was tried;
    /// the per-member outcomes say how each fared.
    #[command(group(ArgGroup::new("who").required(true).args(["names", "all"])))]
    Refresh {
        /// Members to refresh.
        names: Vec<String>,
        /// Every member of the zone.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// These members report a failure.
        #[arg(long, num_args = 1.., value_name = "NAME")]
        fail: Vec<String>,
        /// These members are not reached.
        #[arg(long, num_args = 1.., value_name = "NAME")]
        offline: Vec<String>,
    },
}

#[derive(Subcommand)]
enum MemberCmd {
    /// One-time registration tokens (N3) for members already added (servers by FQDN, devices
    /// by name): one file DIR/NAME.token each (mode 0600, the token and a newline), for the
    /// member's `zone-agent enroll --token-file`. A new token replaces the member's earlier
    /// one. Prints one line per member (with --json: name, file, expires_at), never a token.
    Token {
        /// The members.
        #[arg(required = true, num_args = 1.., value_name = "NAME")]
        names: Vec<String>,
        /// Where the token files go (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        /// How long the tokens stay valid, in hours (1 to 2160).
        #[arg(long, default_value_t = 168, value_name = "N")]
        valid_hours: u64,
        /// Replace existing token files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum ChainCmd {
    /// Validate a chain (S7): exit 0 and the path, or exit 1 and the reason.
    Verify {
        /// Trust anchors (files of certificates, any format).
        #[arg(long, num_args = 1.., required = true)]
        trust: Vec<PathBuf>,
        /// Untrusted intermediates.
        #[arg(long, num_args = 1..)]
        untrusted: Vec<PathBuf>,
        /// The leaf (further certificates in the file count as intermediates).
        #[arg(long)]
        leaf: PathBuf,
        /// Validation time (default: --now, or the clock).
        #[arg(long, value_parser = parse_time)]
        at: Option<Timestamp>,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the audit log's hash chain (S6).
    Verify,
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Every record as one JSON document, secrets left out.
    Dump,
    /// Copy a whole zone into an empty store (D3): a file or a postgres:// URL each, e.g. the
    /// embedded store into a PostgreSQL database. Refuses a target that holds records.
    Copy {
        /// The store holding the zone (read only).
        #[arg(long, value_name = "STORE")]
        from: PathBuf,
        /// The empty store to copy it into: a new file, or a database without a zone.
        #[arg(long, value_name = "STORE")]
        to: PathBuf,
    },
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    s.parse()
        .map_err(|e: zonepki::clock::TimeError| e.to_string())
}

fn parse_activation(s: &str) -> Result<ActivationRequest, String> {
    s.parse().map_err(|e: zonepki::clock::TimeError| {
        format!("{e} (give an RFC 3339 time, or `immediate`)")
    })
}

/// A count of at least 1.
fn parse_count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?} is not a number of at least 1: {e}")),
    }
}

/// A CA validity in years: any number here; the library says which it accepts (1 to 10),
/// also for a number too large for it.
fn parse_years(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|e| format!("{s:?} is not a number of years (1 to 10): {e}"))
}

fn validity(years: u64) -> Result<ValidityYears, String> {
    // A number beyond u32 is refused with the library's words and the number given.
    let years32 = u32::try_from(years).unwrap_or(u32::MAX);
    ValidityYears::try_from(years32).map_err(|e| {
        if u64::from(years32) == years {
            e.to_string()
        } else {
            e.to_string()
                .replace(&u32::MAX.to_string(), &years.to_string())
        }
    })
}

fn parse_key(s: &str) -> Result<KeySpec, String> {
    s.parse().map_err(|e: zonepki::key::KeyError| e.to_string())
}

fn parse_offset(s: &str) -> Result<UtcOffset, String> {
    let fmt = time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]");
    if s == "Z" || s == "UTC" {
        return Ok(UtcOffset::UTC);
    }
    UtcOffset::parse(s, &fmt).map_err(|e| format!("{s:?} is not a UTC offset like +02:00: {e}"))
}

/// A usage error found after parsing (options that cannot go together): clap's message and
/// usage for the subcommand at `path`, exit 2. Called before the store is opened.
fn usage_error(path: &[&str], message: impl Display) -> ! {
    let mut cmd = command();
    cmd.build();
    for name in path {
        match cmd.find_subcommand(name) {
            Some(sub) => cmd = sub.clone(),
            None => break,
        }
    }
    exit_clap(cmd.error(ErrorKind::ArgumentConflict, message))
}

/// `--csr` with its subject and key options as the library's CSR mode: subject options need
/// `--csr auto`, and `--key` has no effect with `--csr manual` (usage errors). Returns the
/// mode and the key type for keys zonepki makes (default p256).
fn csr_mode(
    path: &[&str],
    csr: Option<CsrModeArg>,
    subject: CsrSubjectArgs,
    key: Option<KeySpec>,
) -> (Option<CsrMode>, KeySpec) {
    let given = subject.given();
    if csr != Some(CsrModeArg::Auto) && !given.is_empty() {
        usage_error(
            path,
            format!(
                "{} set{} the subject of CSRs that zonepki makes: only with --csr auto",
                given.join(", "),
                if given.len() == 1 { "s" } else { "" }
            ),
        );
    }
    if csr == Some(CsrModeArg::Manual) && key.is_some() {
        usage_error(
            path,
            "--key has no effect with --csr manual: the administrator makes the keys",
        );
    }
    let key = key.unwrap_or_default();
    let mode = csr.map(|m| match m {
        CsrModeArg::Manual => CsrMode::Manual,
        CsrModeArg::Auto => CsrMode::Auto {
            fields: subject.fields(),
            key,
        },
    });
    (mode, key)
}

/// Whether `--json` was given: errors and notices on stderr are then JSON as well.
static JSON: AtomicBool = AtomicBool::new(false);

fn json_mode() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Prints a refusal or failure: `error: ...`, or with --json one object `{"error": ...}`.
fn print_error(message: &str) {
    if json_mode() {
        eprintln!("{}", serde_json::json!({ "error": message }));
    } else {
        eprintln!("error: {message}");
    }
}

/// A clap error: help and version are printed as clap does; a usage error is clap's text,
/// or with --json one object `{"error": ..., "usage": true}`; exit 2 either way.
fn exit_clap(e: clap::Error) -> ! {
    if json_mode() && e.use_stderr() {
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        let message = first.strip_prefix("error: ").unwrap_or(first);
        eprintln!(
            "{}",
            serde_json::json!({ "error": message, "usage": true, "details": text.trim_end() })
        );
        std::process::exit(2);
    }
    e.exit()
}

fn main() -> ExitCode {
    // Before parsing: a usage error of a --json command is JSON too.
    JSON.store(
        std::env::args_os().skip(1).any(|a| a == "--json"),
        Ordering::Relaxed,
    );
    let cli = command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
        .unwrap_or_else(|e| exit_clap(e));
    JSON.store(cli.global.json, Ordering::Relaxed);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            print_error(&msg);
            ExitCode::from(1)
        }
    }
}

fn clock(g: &Global) -> ManualClock {
    ManualClock::new(g.now.unwrap_or_else(Timestamp::now_utc))
}

/// Opens the store for a command that changes the zone.
fn open(g: &Global) -> Result<Service, String> {
    if let Some(url) = &g.server {
        return remote_service(g, url);
    }
    service(g, open_store(g, false)?)
}

/// Opens the store read-only, for a command that only reads it (`store dump`, `audit verify`,
/// `plan`, `csr show`): it works on a read-only file and leaves the file untouched.
fn open_read(g: &Global) -> Result<Service, String> {
    if let Some(url) = &g.server {
        return remote_service(g, url);
    }
    service(g, open_store(g, true)?)
}

/// Opens the store for a command that shows the zone: read-only, after the scheduled work due at
/// `--now` (activation, O8), so what it shows is the state at that time. Only when an
/// activation is due is the store opened writable to record it.
fn open_shown(g: &Global) -> Result<Service, String> {
    let svc = open_read(g)?;
    match svc.handle_timeout() {
        Ok(_) => Ok(svc),
        Err(zonepki::Error::Store(StoreError::ReadOnly { .. })) => {
            drop(svc);
            let svc = open(g)?;
            svc.handle_timeout().map_err(msg)?;
            Ok(svc)
        }
        Err(e) => Err(msg(e)),
    }
}

fn service(g: &Global, store: Box<dyn Storage>) -> Result<Service, String> {
    let transport: Arc<dyn Transport> = Arc::new(LoopbackTransport::with_root(&g.root));
    let svc = ZoneService::new(store, transport, clock(g));
    Ok(if g.no_bridge {
        svc.without_bridges()
    } else {
        svc
    })
}

/// The zone in this process, for the commands that run where the files are.
fn open_local(g: &Global) -> Result<LocalService, String> {
    let svc = ZoneService::new(
        open_store(g, false)?,
        LoopbackTransport::with_root(&g.root),
        clock(g),
    );
    Ok(if g.no_bridge {
        svc.without_bridges()
    } else {
        svc
    })
}

/// The largest admin token file read.
const MAX_TOKEN_FILE: u64 = 4096;

/// With `--server`: the zone through the zone server's admin API. Every command's rules run
/// here, against the zone's store there (each commit conditioned on what it read, B6); the
/// members' agents are reached through the server.
fn remote_service(g: &Global, url: &str) -> Result<Service, String> {
    use zonepki::net::client::{BearerToken, CaPin, ServerUrl};
    use zonepki::net::remote::{AdminClient, RemoteStore, RemoteTransport};
    let url: ServerUrl = url.parse().map_err(msg)?;
    let (Some(token_file), Some(pin)) = (&g.admin_token_file, &g.ca_sha256) else {
        return Err(format!(
            "--server {url} needs --admin-token-file FILE (the administrator's token zoned \
             wrote) and --ca-sha256 FP (the zone CA's SHA-256 from `zonectl ca show --json`)"
        ));
    };
    let pin: CaPin = pin.parse().map_err(msg)?;
    let token = fsio::read(token_file, MAX_TOKEN_FILE, "an admin token file")
        .map_err(|e| format!("--admin-token-file: {e}"))?;
    let token = Zeroizing::new(token);
    let token = std::str::from_utf8(&token)
        .map_err(|_| format!("{} does not hold a token (not text)", token_file.display()))?;
    if token.trim().is_empty() {
        return Err(format!(
            "{} is empty: it holds no token",
            token_file.display()
        ));
    }
    let client = AdminClient::connect_default(url, &pin, BearerToken::new(token)).map_err(msg)?;
    let transport: Arc<dyn Transport> = Arc::new(RemoteTransport::new(Arc::clone(&client)));
    let store: Box<dyn Storage> = Box::new(RemoteStore::new(client));
    let svc = ZoneService::new(store, transport, clock(g));
    Ok(if g.no_bridge {
        svc.without_bridges()
    } else {
        svc
    })
}

/// Opens `--store` (see [`open_any`]).
fn open_store(g: &Global, read_only: bool) -> Result<Box<dyn Storage>, String> {
    open_any(g, &g.store, read_only)
}

/// The PostgreSQL URL that `name` is, if it is one (`postgres://` or `postgresql://`).
fn pg_url(name: &Path) -> Option<&str> {
    name.to_str()
        .filter(|s| zonepki::store::postgres::is_url(s))
}

/// A store's name as zonectl shows it: a file's path, or a URL without its password.
fn shown(name: &Path) -> String {
    match pg_url(name) {
        Some(url) => zonepki::store::postgres::redact(url),
        None => name.display().to_string(),
    }
}

/// Opens the store `name` (a file, or a postgres:// URL), the one place that tells the kinds
/// apart. A file is waited for up to `--wait` seconds (announced on stderr) while another
/// process holds it; a database is shared and never held. The library's error says what is
/// wrong with the store; zonectl adds what to do about it on the command line.
fn open_any(g: &Global, name: &Path, read_only: bool) -> Result<Box<dyn Storage>, String> {
    if let Some(url) = pg_url(name) {
        // No read-only mode: a database's permissions decide.
        return match PostgresStore::open(url) {
            Ok(store) => Ok(Box::new(store)),
            Err(e) => Err(store_error(g, name, e)),
        };
    }
    let open = |path: &Path| {
        if read_only {
            RedbStore::open_read_only(path)
        } else {
            RedbStore::open(path)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(g.wait);
    let mut announced = false;
    loop {
        match open(name) {
            Ok(store) => return Ok(Box::new(store)),
            Err(StoreError::Busy { .. }) if Instant::now() < deadline => {
                if !announced {
                    announced = true;
                    notice(&format!(
                        "waiting for another zonectl holding {} (up to {}s)",
                        name.display(),
                        g.wait
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // A file left unclean by a crash needs a recovery, which is a write.
            Err(StoreError::Backend { .. }) if read_only && writable(name) => {
                return open_any(g, name, false);
            }
            Err(e) => return Err(store_error(g, name, e)),
        }
    }
}

fn writable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.permissions().readonly())
}

/// A store error with zonectl's advice.
fn store_error(g: &Global, name: &Path, e: StoreError) -> String {
    match &e {
        StoreError::NotFound { .. } => format!(
            "{e}: create a zone with `zonectl init`, or point --store / $ZONECTL_STORE at an \
             existing store"
        ),
        StoreError::Busy { .. } => format!(
            "{e}: another zonectl (or zoned) is using it{}; run the command again when it has \
             finished, or give --wait SECONDS to wait longer",
            if g.wait > 0 {
                format!(" (waited {}s)", g.wait)
            } else {
                String::new()
            }
        ),
        StoreError::Damaged { .. } => format!(
            "{e} (zonectl does not repair a store; --store / $ZONECTL_STORE names the file it \
             opened)"
        ),
        _ if pg_url(name).is_none() && !writable(name) && name.exists() => format!(
            "{e}: {} is read-only, and this command changes the zone; commands that only show \
             it work on a read-only store",
            name.display()
        ),
        _ => e.to_string(),
    }
}

/// A line for the administrator on stderr that is not an error (JSON with --json).
fn notice(text: &str) {
    if json_mode() {
        eprintln!("{}", serde_json::json!({ "notice": text }));
    } else {
        eprintln!("{text}");
    }
}

fn msg(e: impl Display) -> String {
    e.to_string()
}

/// A refusal of the staged operation's rules (O7, O10), with the zonectl command that is
/// still possible: the library says what and why in its own words.
fn op_error(e: zonepki::Error) -> String {
    match &e {
        zonepki::Error::Op(OpError::CancelCutoff { .. } | OpError::InsideCutoff { .. }) => {
            format!("{e}; take members out of the update with `zonectl op ignore NAME...`")
        }
        zonepki::Error::Op(OpError::StrandedBaseline { .. }) => {
            format!("{e} (`zonectl op baseline --force`)")
        }
        zonepki::Error::Op(OpError::MissingUpdateName) => format!("{e}: give --update-name"),
        zonepki::Error::Op(OpError::CsrModeRequired) => {
            format!("{e}: give --csr manual or --csr auto")
        }
        zonepki::Error::Op(OpError::CsrModeWithInternalCa) => format!("{e}: leave out --csr"),
        zonepki::Error::Op(OpError::NoCsr { fqdn, manual }) => format!(
            "{e} (`zonectl csr generate {fqdn} ...`{})",
            if *manual {
                ", or place server.<ext> and key.der in its remint-repo/"
            } else {
                ""
            }
        ),
        zonepki::Error::Op(OpError::NoCsrs) => format!("{e} (`zonectl csr generate FQDN...`)"),
        _ => e.to_string(),
    }
}

fn parse_update_status(s: &str) -> Result<UpdateStatus, String> {
    s.parse()
        .map_err(|e: zonepki::view::UnknownStatus| e.to_string())
}

fn parse_fqdn(s: &str) -> Result<Fqdn, String> {
    s.parse()
        .map_err(|e: zonepki::zone::ZoneError| e.to_string())
}

/// The commands that run where the files are, and so refuse `--server`: why, for the error.
fn local_only(command: &Command) -> Option<&'static str> {
    match command {
        Command::Init(_) => Some(
            "init creates the zone's store and the first server's files on this host; run it \
             there, then start zoned on that store",
        ),
        Command::Fleet(_) => Some(
            "fleet refresh plays the members' agents over their files on this host; members on \
             their own hosts run `zone-agent refresh`",
        ),
        Command::Chain(_) => Some("chain verify checks local files and needs no zone"),
        Command::Lint(_) => Some("lint checks local files and needs no zone"),
        Command::Completions { .. } => Some("completions prints a script and needs no zone"),
        Command::Store(StoreCmd::Copy { .. }) => Some(
            "store copy opens both stores itself (a file or a postgres:// URL); run it where \
             they can be opened, with zoned stopped",
        ),
        _ => None,
    }
}

fn run(cli: Cli) -> CmdResult {
    let g = &cli.global;
    if g.server.is_some()
        && let Some(why) = local_only(&cli.command)
    {
        return Err(format!("--server cannot be used here: {why}"));
    }
    match cli.command {
        Command::Member(MemberCmd::Token {
            names,
            out_dir,
            valid_hours,
            force,
        }) => member_token(g, &names, &out_dir, valid_hours, force),
        Command::Init(args) => init(g, args),
        Command::Server(cmd) => server(g, cmd),
        Command::Device(cmd) => device(g, cmd),
        Command::Ca(cmd) => ca(g, cmd),
        Command::Warnings {
            within_days,
            fail_on,
        } => warnings(g, within_days, fail_on),
        Command::Op(cmd) => op(g, cmd),
        Command::Csr(cmd) => csr(g, cmd),
        Command::Cert(CertCmd::Import {
            fqdn,
            file,
            accept_lint_warning,
        }) => cert_import(g, &fqdn, &file, &accept_lint_warning),
        Command::Fleet(FleetCmd::Refresh {
            names,
            all,
            fail,
            offline,
        }) => fleet_refresh(g, names, all, fail, offline),
        Command::Plan { at } => plan(g, at),
        Command::Chain(ChainCmd::Verify {
            trust,
            untrusted,
            leaf,
            at,
        }) => chain_verify(g, &trust, &untrusted, &leaf, at),
        Command::Audit(AuditCmd::Verify) => {
            let svc = open_read(g)?;
            let report = svc.verify_audit().map_err(|e| e.to_string())?;
            if g.json {
                print_json(&report);
            } else {
                println!(
                    "audit log OK: {} entries, head {}",
                    report.entries, report.head
                );
            }
            Ok(())
        }
        Command::Lint(args) => lint_files(g, &args),
        Command::Completions { shell } => {
            // Made in memory (clap_complete panics on a write error), then printed.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "zonectl", &mut script);
            out(format_args!("{}", String::from_utf8_lossy(&script)));
            Ok(())
        }
        Command::Store(StoreCmd::Copy { from, to }) => store_copy(g, &from, &to),
        Command::Store(StoreCmd::Dump) => {
            let svc = open_read(g)?;
            // Streamed as the store is read: a large zone's dump is never held in memory.
            let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
            let written = svc.dump_to(&mut stdout).and_then(|()| {
                use std::io::Write as _;
                stdout
                    .write_all(b"\n")
                    .and_then(|()| stdout.flush())
                    .map_err(DumpError::Write)
            });
            match written {
                Err(DumpError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    std::process::exit(0)
                }
                other => other.map_err(msg),
            }
        }
    }
}

fn init(g: &Global, args: InitArgs) -> CmdResult {
    let path = ["init"];
    let external = match (&args.external_chain, &args.server_chain, &args.server_key) {
        (None, None, None) => None,
        (Some(chain), Some(server_chain), Some(server_key)) => {
            Some((chain.clone(), server_chain.clone(), server_key.clone()))
        }
        (Some(_), _, _) => usage_error(
            &path,
            "--external-chain needs --server-chain and --server-key: the first server's \
             certificate chain and key from the external CA (Z3)",
        ),
        (None, _, _) => usage_error(
            &path,
            "--server-chain and --server-key go with --external-chain (a zone with an external \
             CA, Z3); an internal CA issues the first server's certificate itself",
        ),
    };
    if external.is_some() {
        let given: Vec<&str> = [
            ("--key", args.key.is_some()),
            ("--valid-years", args.valid_years.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        if !given.is_empty() {
            usage_error(
                &path,
                format!(
                    "{} set{} the internal CA that init creates; with --external-chain the \
                     external CA's key and validity are its own",
                    given.join(" and "),
                    if given.len() == 1 { "s" } else { "" }
                ),
            );
        }
    }
    if let Some(url) = pg_url(&g.store) {
        // Checked before the zone is built (its agents' files written): a database that
        // holds records is refused as a file that exists is.
        match PostgresStore::open(url) {
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(store_error(g, &g.store, e)),
            Ok(store) => {
                if !store.scan("", None, 1).map_err(msg)?.is_empty() {
                    return Err(format!(
                        "{} already holds a zone: a store holds one zone",
                        shown(&g.store)
                    ));
                }
            }
        }
    } else if g.store.exists() {
        return Err(format!(
            "{} already exists: a store holds one zone",
            g.store.display()
        ));
    }
    let fqdn = parse_fqdn(&args.first_server)?;
    let first = NewServer::new(fqdn, ServerRole::Primary)
        .with_dns_names(args.dns)
        .with_agent_version(args.agent_version);
    let view = match external {
        None => {
            let validity = validity(args.valid_years.unwrap_or(10))?;
            let init = InitInternal::new(args.zone, first)
                .with_ca_key(args.key.unwrap_or_default())
                .with_validity(validity);
            create_zone(g, |svc| svc.init_internal(init).map(|_| ()).map_err(msg))?
        }
        Some((chain, server_chain, server_key)) => {
            let init = InitExternal::new(
                args.zone,
                first,
                read_input(&chain)?,
                read_input(&server_chain)?,
                Zeroizing::new(read_key_input(&server_key)?),
            )
            .with_acknowledge(args.accept_lint_warning);
            create_zone(g, |svc| svc.init_external(init).map(|_| ()).map_err(msg))?
        }
    };
    if g.json {
        print_json(&view);
    } else {
        match &view.certificate_server {
            Some(server) => println!("zone created; CA held by {server}"),
            None => println!(
                "zone created with an external CA; {} holds its certificate",
                args.first_server
            ),
        }
        print_details(&view.details, g.utc_offset);
    }
    Ok(())
}

/// Builds a new zone with `build` in a temporary store file and moves it into place only when
/// everything succeeded: a refused init leaves no store file.
fn create_zone(
    g: &Global,
    build: impl FnOnce(&LocalService) -> Result<(), String>,
) -> Result<CaView, String> {
    if pg_url(&g.store).is_some() {
        // Built in memory, then copied with the zone record last: a refused init writes
        // nothing, and a copy cut short is no zone.
        let svc = ZoneService::new(
            Box::new(MemoryStore::new()) as Box<dyn Storage>,
            LoopbackTransport::with_root(&g.root),
            clock(g),
        );
        build(&svc)?;
        let view = svc.ca_view().map_err(msg)?;
        let (store, _, _) = svc.into_parts();
        copy_into(g, &*store, &g.store)?;
        return Ok(view);
    }
    // A fixed temporary name, so that a killed init leaves nothing the next one does not
    // remove (issue 9 item 3).
    let tmp = remove_stale_tmp(&g.store)?;
    let mut created = None;
    let result = (|| {
        let store = std::sync::Arc::new(RedbStore::create(&tmp).map_err(msg)?);
        created = file_id(&tmp);
        let svc = ZoneService::new(
            Box::new(std::sync::Arc::clone(&store)) as Box<dyn Storage>,
            LoopbackTransport::with_root(&g.root),
            clock(g),
        );
        build(&svc)?;
        let view = svc.ca_view().map_err(msg)?;
        drop(svc);
        let store = std::sync::Arc::into_inner(store)
            .expect("the service, the store's only other holder, was dropped");
        store.close().map_err(msg)?;
        Ok::<CaView, String>(view)
    })();
    let view = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // Another init of the same store meanwhile removed this run's temporary store as a stale
    // one: link nothing.
    if file_id(&tmp) != created {
        return Err(format!(
            "another `zonectl init` is creating {} at the same time; let it finish",
            g.store.display()
        ));
    }
    if let Err(e) = std::fs::hard_link(&tmp, &g.store) {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot create {}: {e}", g.store.display()));
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(view)
}

/// `path`'s temporary file (`path` + `.zonepki-tmp`: a fixed name, not a process id), with
/// what a killed run left there removed. Anything but a plain file there is refused, never
/// followed.
fn remove_stale_tmp(path: &Path) -> Result<PathBuf, String> {
    let tmp = fsio::temp_path(path);
    match tmp.symlink_metadata() {
        Ok(m) if m.file_type().is_file() => std::fs::remove_file(&tmp)
            .map_err(|e| format!("cannot remove {}: {e}", tmp.display()))?,
        Ok(_) => {
            return Err(format!(
                "{} is in the way of the temporary file zonectl writes there: move it away",
                tmp.display()
            ));
        }
        Err(_) => {}
    }
    Ok(tmp)
}

/// The identity (device, inode) of the file at `path`, to tell whether a name still refers to
/// the file this run created.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        path.symlink_metadata().ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// `store copy` (D3): the whole zone of `from` into the empty store `to`.
fn store_copy(g: &Global, from: &Path, to: &Path) -> CmdResult {
    let source = open_any(g, from, true)?;
    let copied = copy_into(g, &*source, to)?;
    if g.json {
        print_json(&serde_json::json!({
            "from": shown(from),
            "to": shown(to),
            "records": copied.records,
        }));
    } else {
        println!(
            "copied {} records from {} to {}",
            copied.records,
            shown(from),
            shown(to)
        );
    }
    Ok(())
}

/// Copies the zone in `source` into the store `to`, which must hold no records. A new file is
/// written under a temporary name and moved into place once complete; a database's tables are
/// made if it has none, and removed again if this run made them and the copy failed. So a
/// refused or failed copy leaves the target as it was, short of a crash in the middle of a
/// copy into a database (then the target holds no zone, and a copy refuses it as incomplete).
fn copy_into(
    g: &Global,
    source: &dyn Storage,
    to: &Path,
) -> Result<zonepki::store::Copied, String> {
    let copy_error = |e: CopyError| format!("{e} (copying into {})", shown(to));
    if let Some(url) = pg_url(to) {
        let (target, created) = match PostgresStore::create(url) {
            Ok(store) => (store, true),
            Err(StoreError::AlreadyExists { .. }) => (
                PostgresStore::open(url).map_err(|e| store_error(g, to, e))?,
                false,
            ),
            Err(e) => return Err(store_error(g, to, e)),
        };
        return match zonepki::store::copy(source, &target) {
            Ok(copied) => Ok(copied),
            Err(e) => {
                if created {
                    // Best effort: the tables are this run's and hold no zone.
                    let _ = target.destroy();
                }
                Err(copy_error(e))
            }
        };
    }
    if to.exists() {
        let target = open_any(g, to, false)?;
        return zonepki::store::copy(source, &*target).map_err(copy_error);
    }
    let tmp = remove_stale_tmp(to)?;
    let result = (|| {
        let target = RedbStore::create(&tmp).map_err(msg)?;
        let copied = zonepki::store::copy(source, &target).map_err(copy_error)?;
        target.close().map_err(msg)?;
        Ok::<_, String>(copied)
    })();
    let copied = match result {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // A hard link, not a rename: it refuses a name that appeared meanwhile.
    let linked = std::fs::hard_link(&tmp, to);
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    Ok(copied)
}

fn server(g: &Global, cmd: ServerCmd) -> CmdResult {
    let cmd = match cmd {
        ServerCmd::Remint(args) => return server_remint(g, args),
        ServerCmd::Replace { fqdn, file } => return server_replace(g, &fqdn, file.as_deref()),
        other => other,
    };
    let svc = match &cmd {
        ServerCmd::Add { .. } => open(g)?,
        ServerCmd::Cert { out, force, .. } => {
            check_output(out, *force)?;
            open_shown(g)?
        }
        _ => open_shown(g)?,
    };
    match cmd {
        ServerCmd::Add {
            fqdn,
            role,
            parent,
            dns,
            agent_version,
            key,
        } => {
            let fqdn: Fqdn = fqdn
                .parse()
                .map_err(|e: zonepki::zone::ZoneError| e.to_string())?;
            let role: ServerRole = role
                .parse()
                .map_err(|e: zonepki::zone::ZoneError| e.to_string())?;
            let mut new = NewServer::new(fqdn, role);
            new.parent = parent
                .map(|p| p.parse())
                .transpose()
                .map_err(|e: zonepki::zone::ZoneError| e.to_string())?;
            new.dns_names = dns;
            new.agent_version = agent_version;
            new.key = key;
            if g.server.is_some() {
                // Its agent runs on its own host and enrols there with a token (N3).
                new = new.without_enrolment();
            }
            let view = svc.add_server(new).map_err(|e| e.to_string())?;
            if g.server.is_some() {
                notice(&format!(
                    "{} is recorded; its agent enrols on its own host: `zonectl member token {} \
                     --out-dir DIR`, then `zone-agent enroll --name {} --token-file \
                     DIR/{}.token ...`",
                    view.fqdn, view.fqdn, view.fqdn, view.fqdn
                ));
            }
            if g.json {
                print_json(&view);
            } else if g.server.is_some() && view.sha256.is_none() {
                // Recorded only: the notice above says how its agent enrols.
                println!("{} added as {}", view.fqdn, view.role);
            } else if view.sha256.is_none() && role != ServerRole::ContentSatellite {
                // An external CA issues its certificate: say how, rather than show an empty
                // certificate view.
                println!(
                    "{} added as {}; its certificate comes from the external CA:",
                    view.fqdn, view.role
                );
                println!(
                    "  1. zonectl csr generate {} --org O --ou OU --locality L --state ST \
                     --country CC",
                    view.fqdn
                );
                println!(
                    "  2. zonectl csr show {} --out {}.csr, and have the external CA sign it",
                    view.fqdn, view.fqdn
                );
                println!("  3. zonectl cert import {} --file CERTIFICATE", view.fqdn);
            } else {
                print_server(&view, g.utc_offset);
            }
        }
        ServerCmd::List => {
            let list = svc.servers().map_err(|e| e.to_string())?;
            if g.json {
                print_json(&list);
            } else {
                print_server_table(&list, g.utc_offset);
            }
        }
        ServerCmd::Show { fqdn } => {
            let fqdn: Fqdn = fqdn
                .parse()
                .map_err(|e: zonepki::zone::ZoneError| e.to_string())?;
            let view = svc.server(&fqdn).map_err(|e| e.to_string())?;
            if g.json {
                print_json(&view);
            } else {
                print_server(&view, g.utc_offset);
            }
        }
        ServerCmd::Remint(_) | ServerCmd::Replace { .. } => unreachable!("handled above"),
        ServerCmd::Cert {
            fqdn,
            out,
            future,
            der,
            force,
        } => {
            let fqdn: Fqdn = fqdn
                .parse()
                .map_err(|e: zonepki::zone::ZoneError| e.to_string())?;
            let chain = if future {
                // Unknown servers are refused as such, before "no future certificate".
                svc.server(&fqdn).map_err(msg)?;
                svc.future_chain(&fqdn).map_err(msg)?.ok_or_else(|| {
                    format!(
                        "{fqdn} has no future certificate: no running remint has staged one \
                         for it yet (it is made when the server applies the assigned update, \
                         see `op show` and `fleet refresh`)"
                    )
                })?
            } else {
                svc.server_chain(&fqdn).map_err(msg)?
            };
            let Some(leaf) = chain.first() else {
                return Err(format!("{fqdn} has no certificate"));
            };
            let data = if der {
                leaf.as_bytes().to_vec()
            } else {
                bundle::to_pem(&chain).into_bytes()
            };
            if write_output(&out, &data, force)? == Written::Stdout {
                return Ok(());
            }
            if !g.json {
                println!(
                    "wrote {} ({} certificate(s))",
                    out.display(),
                    if der { 1 } else { chain.len() }
                );
            } else {
                let certificates = if der { 1 } else { chain.len() };
                print_json(&serde_json::json!({ "out": out, "certificates": certificates }));
            }
        }
    }
    Ok(())
}

fn device(g: &Global, cmd: DeviceCmd) -> CmdResult {
    let svc = match cmd {
        DeviceCmd::Add { .. } => open(g)?,
        DeviceCmd::List { .. } => open_shown(g)?,
    };
    match cmd {
        DeviceCmd::Add {
            names,
            count,
            prefix,
            start,
            agent_version,
        } => {
            let names: Vec<String> = match count {
                Some(n) => {
                    let end = start.checked_add(n - 1).ok_or_else(|| {
                        format!("--start {start} with --count {n} goes past {}", u64::MAX)
                    })?;
                    (start..=end).map(|i| format!("{prefix}-{i}")).collect()
                }
                None if names.is_empty() => {
                    return Err("name the devices to add, or give --count N".into());
                }
                None => names,
            };
            let n = svc
                .add_devices(&names, &agent_version)
                .map_err(|e| e.to_string())?;
            if g.json {
                print_json(&serde_json::json!({ "added": n }));
            } else {
                println!("added {n} device(s)");
            }
        }
        DeviceCmd::List {
            status,
            limit,
            after,
        } => {
            let mut query = DeviceQuery::all();
            if let Some(status) = status {
                query = query.with_status(status);
            }
            if let Some(after) = after {
                query = query.with_after(after);
            }
            if let Some(n) = limit {
                query = query.with_limit(usize::try_from(n).unwrap_or(usize::MAX));
            }
            let page = svc.device_list(&query).map_err(msg)?;
            if g.json {
                print_json(&page.devices);
            } else {
                let rows: Vec<Vec<String>> = page
                    .devices
                    .iter()
                    .map(|d| {
                        vec![
                            d.name.clone(),
                            d.update_status.to_string(),
                            d.agent_version.clone(),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "UPDATE", "AGENT"], &rows);
                if let (true, Some(last)) = (page.more, page.devices.last()) {
                    println!("(more devices: --after {})", last.name);
                }
            }
        }
    }
    Ok(())
}

fn ca(g: &Global, cmd: CaCmd) -> CmdResult {
    let cmd = match cmd {
        CaCmd::Change(cmd) => return ca_change(g, cmd),
        CaCmd::Move { to } => return ca_move(g, &to),
        CaCmd::Backup { out } => return ca_backup(g, &out),
        CaCmd::Restore { file, to, yes } => return ca_restore(g, &file, &to, yes),
        other => other,
    };
    let svc = match &cmd {
        CaCmd::Show => open_shown(g)?,
        CaCmd::Export { out, force, .. } => {
            check_output(out, *force)?;
            open_shown(g)?
        }
        _ => open(g)?,
    };
    match cmd {
        CaCmd::Show => {
            let view = svc.ca_view().map_err(|e| e.to_string())?;
            if g.json {
                print_json(&view);
            } else {
                println!("Kind:               {}", view.kind);
                if let Some(s) = &view.certificate_server {
                    println!("Certificate server: {s}");
                }
                print_details(&view.details, g.utc_offset);
            }
        }
        CaCmd::Export { out, der, force } => {
            let ca = svc.ca_certificate().map_err(|e| e.to_string())?;
            let data = if der {
                ca.der().as_bytes().to_vec()
            } else {
                ca.der().to_pem().into_bytes()
            };
            if write_output(&out, &data, force)? == Written::Stdout {
                return Ok(());
            }
            if g.json {
                print_json(&serde_json::json!({ "out": out }));
            } else {
                println!("wrote {}", out.display());
            }
        }
        CaCmd::Remint(args) => {
            let validity = validity(args.valid_years)?;
            let mut req = RemintCaRequest::new(args.activate_at)
                .with_key(args.key)
                .with_validity(validity)
                .with_include_dns(args.include_dns)
                .with_acknowledge(args.gate.accept_lint_warning.clone());
            req.common_name = args.cn;
            req.update_name = args.update_name;
            req.gate = args.gate.gate()?;
            let view = svc.start_remint_ca(req).map_err(msg)?;
            print_started(g, &view);
        }
        CaCmd::Change(_) | CaCmd::Move { .. } | CaCmd::Backup { .. } | CaCmd::Restore { .. } => {
            unreachable!("handled above")
        }
    }
    Ok(())
}

fn ca_change(g: &Global, cmd: CaChangeCmd) -> CmdResult {
    // Options are checked (usage errors, exit 2) and files read before the store is opened.
    let req = match cmd {
        CaChangeCmd::Internal(a) => {
            let to = ChangeCaTarget::Internal {
                server: parse_fqdn(&a.server)?,
                common_name: a.subject,
                key: a.key,
                validity: validity(a.valid_years)?,
            };
            let mut req = ChangeCaRequest::new(to, a.activate_at)
                .with_include_dns(a.include_dns)
                .with_acknowledge(a.gate.accept_lint_warning.clone());
            req.update_name = a.update_name;
            req.gate = a.gate.gate()?;
            req
        }
        CaChangeCmd::External(a) => {
            let (mode, _) = csr_mode(&["ca", "change", "external"], Some(a.csr), a.subject, a.key);
            let Some(csr) = mode else {
                unreachable!("--csr is required")
            };
            let chain = read_input(&a.chain)?;
            let to = ChangeCaTarget::External { chain, csr };
            let mut req = ChangeCaRequest::new(to, a.activate_at)
                .with_include_dns(a.include_dns)
                .with_acknowledge(a.gate.accept_lint_warning.clone());
            req.update_name = a.update_name;
            req.gate = a.gate.gate()?;
            req
        }
    };
    let svc = open(g)?;
    let view = svc.start_change_ca(req).map_err(msg)?;
    print_started(g, &view);
    Ok(())
}

/// A certificate file's bytes; the library decides the format by content (CE1). Bounded
/// whatever the file is (a pipe, /dev/zero): at most the limit plus one byte is read.
fn read_input(path: &Path) -> Result<Vec<u8>, String> {
    fsio::read(path, fsio::MAX_CERTIFICATE_FILE_BYTES, "a certificate file").map_err(msg)
}

/// A private key file's bytes, bounded as [`read_input`].
fn read_key_input(path: &Path) -> Result<Vec<u8>, String> {
    fsio::read(path, fsio::MAX_KEY_FILE_BYTES, "a key file").map_err(msg)
}

/// Where [`write_output`] put the data.
#[derive(PartialEq, Eq)]
enum Written {
    File,
    /// `-`: standard output, which then holds the data alone (no summary is printed).
    Stdout,
}

/// Refuses an output file that exists unless `force` (checked before the store is opened, so
/// the refusal changes nothing); `-` is standard output.
fn check_output(path: &Path, force: bool) -> CmdResult {
    if path != Path::new("-") && !force && path.symlink_metadata().is_ok() {
        return Err(format!(
            "{} exists: give --force to replace it, or choose another name",
            path.display()
        ));
    }
    Ok(())
}

/// Writes an output file: `-` is standard output; an existing file is replaced only with
/// `force` (without it the file is created new, so a file made meanwhile is not replaced
/// either).
fn write_output(path: &Path, data: &[u8], force: bool) -> Result<Written, String> {
    use std::io::Write as _;
    if path == Path::new("-") {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(data)
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot write standard output: {e}"))?;
        return Ok(Written::Stdout);
    }
    check_output(path, force)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    opts.open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!(
                "{} exists: give --force to replace it, or choose another name",
                path.display()
            ),
            _ => format!("cannot write {}: {e}", path.display()),
        })?;
    Ok(Written::File)
}

fn server_remint(g: &Global, args: ServerRemintArgs) -> CmdResult {
    let gate = args.gate.gate()?;
    let acknowledge = args.gate.accept_lint_warning;
    let (csr, key) = csr_mode(&["server", "remint"], args.csr, args.subject, args.key);
    let servers = args
        .servers
        .iter()
        .map(|s| parse_fqdn(s))
        .collect::<Result<Vec<_>, _>>()?;
    let svc = open(g)?;
    let view = svc
        .start_server_remint({
            let mut req = ServerRemintRequest::new(servers, args.update_name, args.activate_at)
                .with_key(key)
                .with_include_dns(args.include_dns)
                .with_acknowledge(acknowledge);
            req.common_name = args.cn;
            req.csr = csr;
            req.gate = gate;
            req
        })
        .map_err(op_error)?;
    print_started(g, &view);
    Ok(())
}

/// A CSR's subject, for output; the library verified the CSR when it was made.
fn csr_subject(csr: &CsrDer) -> String {
    VerifiedCsr::from_der(csr.as_bytes())
        .map(|v| v.subject().to_string())
        .unwrap_or_else(|e| format!("(unreadable: {e})"))
}

fn csr(g: &Global, cmd: CsrCmd) -> CmdResult {
    let svc = match &cmd {
        CsrCmd::Generate { .. } => open(g)?,
        CsrCmd::Export { zip, force, .. } => {
            check_output(zip, *force)?;
            open_read(g)?
        }
        CsrCmd::Show { out, force, .. } => {
            if let Some(out) = out {
                check_output(out, *force)?;
            }
            open_read(g)?
        }
    };
    match cmd {
        CsrCmd::Generate {
            servers,
            subject,
            cn,
            key,
        } => {
            let fqdns = servers
                .iter()
                .map(|s| parse_fqdn(s))
                .collect::<Result<Vec<_>, _>>()?;
            let made = svc
                .generate_csr(&fqdns, &subject.fields(), cn, key)
                .map_err(msg)?;
            if g.json {
                let list: Vec<_> = made
                    .iter()
                    .map(|(f, c)| {
                        serde_json::json!({
                            "fqdn": f.as_str(),
                            "subject": csr_subject(c),
                            "pem": c.to_pem(),
                        })
                    })
                    .collect();
                print_json(&list);
            } else {
                for (f, c) in &made {
                    println!("CSR generated for {f}: {}", csr_subject(c));
                }
                println!(
                    "{} CSR(s); download them with `zonectl csr export --zip FILE`",
                    made.len()
                );
            }
        }
        CsrCmd::Export {
            zip,
            servers,
            force,
        } => {
            let fqdns = servers
                .iter()
                .map(|s| parse_fqdn(s))
                .collect::<Result<Vec<_>, _>>()?;
            // The names come from the same selection the zip is made of.
            let names: Vec<String> = svc
                .csrs(&fqdns)
                .map_err(op_error)?
                .into_iter()
                .map(|(f, _)| f.to_string())
                .collect();
            let data = svc.csr_zip(&fqdns).map_err(op_error)?;
            if write_output(&zip, &data, force)? == Written::Stdout {
                return Ok(());
            }
            if g.json {
                print_json(&serde_json::json!({ "out": zip, "servers": names }));
            } else {
                println!(
                    "wrote {} ({} CSR(s): {})",
                    zip.display(),
                    names.len(),
                    names.join(", ")
                );
            }
        }
        CsrCmd::Show {
            fqdn,
            out: dest,
            force,
        } => {
            let fqdn = parse_fqdn(&fqdn)?;
            let found = svc.csrs(std::slice::from_ref(&fqdn)).map_err(op_error)?;
            let Some((_, csr)) = found.into_iter().next() else {
                return Err(format!("{fqdn} has no CSR"));
            };
            let pem = csr.to_pem();
            let dest = dest.filter(|d| d != Path::new("-"));
            match (&dest, g.json) {
                (Some(path), json) => {
                    write_output(path, pem.as_bytes(), force)?;
                    if json {
                        print_json(&serde_json::json!({
                            "fqdn": fqdn.as_str(),
                            "subject": csr_subject(&csr),
                            "out": path,
                        }));
                    } else {
                        println!(
                            "wrote {} (CSR of {fqdn}: {})",
                            path.display(),
                            csr_subject(&csr)
                        );
                    }
                }
                (None, true) => print_json(&serde_json::json!({
                    "fqdn": fqdn.as_str(),
                    "subject": csr_subject(&csr),
                    "pem": pem,
                })),
                // PEM ends with a newline.
                (None, false) => out(format_args!("{pem}")),
            }
        }
    }
    Ok(())
}

fn cert_import(g: &Global, fqdn: &str, file: &Path, acknowledge: &[Rule]) -> CmdResult {
    let fqdn = parse_fqdn(fqdn)?;
    let bytes = read_input(file)?;
    let svc = open(g)?;
    let chain = svc
        .import_certificate_acknowledging(&fqdn, &bytes, acknowledge)
        .map_err(op_error)?;
    let subjects: Vec<String> = chain
        .iter()
        .map(|c| {
            Certificate::try_from(c)
                .map(|c| c.subject())
                .unwrap_or_else(|e| format!("(unreadable: {e})"))
        })
        .collect();
    if g.json {
        print_json(&serde_json::json!({ "fqdn": fqdn.as_str(), "path": subjects }));
    } else {
        println!("certificate imported for {fqdn}; path to the zone CA:");
        for (i, s) in subjects.iter().enumerate() {
            println!("{:indent$}{s}", "", indent = (i + 1) * 2);
        }
    }
    Ok(())
}

/// On a terminal, asks before an action that cannot be undone (`op baseline --force`, `ca
/// restore`); with --yes, or without a terminal (scripts, ZONECTL.md), goes on at once.
fn confirm(question: &str, yes: bool) -> CmdResult {
    if yes || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err("not confirmed; nothing was changed (--yes confirms without asking)".into()),
    }
}

/// The environment variable holding the backup passphrase (BK1, BK2).
const PASSPHRASE_ENV: &str = "ZONECTL_PASSPHRASE";
/// The environment variable holding the backup passphrase a second time (BK1: typed twice).
const PASSPHRASE_CONFIRM_ENV: &str = "ZONECTL_PASSPHRASE_CONFIRM";

/// A secret from the environment, zeroized when dropped; `None` when the variable is unset.
fn env_secret(name: &str) -> Result<Option<Zeroizing<String>>, String> {
    match std::env::var_os(name) {
        None => Ok(None),
        Some(v) => match v.into_string() {
            Ok(s) => Ok(Some(Zeroizing::new(s))),
            Err(v) => {
                drop(Zeroizing::new(v.into_encoded_bytes()));
                Err(format!(
                    "${name} is not valid UTF-8: a passphrase is used as UTF-8 text"
                ))
            }
        },
    }
}

/// A passphrase typed at a prompt on the terminal, without echo.
fn prompt_secret(prompt: &str) -> Result<Zeroizing<String>, String> {
    rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .map_err(|e| format!("cannot read the passphrase from the terminal: {e}"))
}

/// The refusal when no passphrase was given in any accepted way.
fn no_passphrase(backup: bool) -> String {
    let vars = if backup {
        format!("${PASSPHRASE_ENV} and ${PASSPHRASE_CONFIRM_ENV} (the same passphrase twice)")
    } else {
        format!("${PASSPHRASE_ENV}")
    };
    format!(
        "no passphrase given: set {vars}, or run the command on a terminal to be prompted for \
         it; a passphrase is never taken from the command line"
    )
}

/// BK1: the backup passphrase, given twice: both environment variables, or two prompts on a
/// terminal. Never printed.
fn backup_passphrase() -> Result<Passphrase, String> {
    let first = env_secret(PASSPHRASE_ENV)?;
    let second = env_secret(PASSPHRASE_CONFIRM_ENV)?;
    match (first, second) {
        (Some(a), Some(b)) => backup::confirm(&a, &b).map_err(msg),
        (Some(_), None) => Err(format!(
            "${PASSPHRASE_CONFIRM_ENV} is not set: a backup passphrase is given twice (BK1); \
             set it to the same passphrase as ${PASSPHRASE_ENV}"
        )),
        (None, Some(_)) => Err(format!(
            "${PASSPHRASE_ENV} is not set: set it and ${PASSPHRASE_CONFIRM_ENV} to the same \
             passphrase"
        )),
        (None, None) if std::io::stdin().is_terminal() => {
            let a = prompt_secret(&format!(
                "Passphrase for the CA backup (at least {} characters): ",
                backup::MIN_PASSPHRASE_CHARS
            ))?;
            // Checked before the second prompt, so a too short one is not typed twice.
            Passphrase::new(a.as_str()).map_err(msg)?;
            let b = prompt_secret("Type the passphrase again: ")?;
            backup::confirm(&a, &b).map_err(msg)
        }
        (None, None) => Err(no_passphrase(true)),
    }
}

/// BK2: the passphrase of a backup: the environment variable, or a prompt on a terminal.
fn restore_passphrase() -> Result<Passphrase, String> {
    let given = match env_secret(PASSPHRASE_ENV)? {
        Some(p) => p,
        None if std::io::stdin().is_terminal() => prompt_secret("Passphrase of the CA backup: ")?,
        None => return Err(no_passphrase(false)),
    };
    Passphrase::new(given.as_str()).map_err(msg)
}

fn ca_move(g: &Global, to: &str) -> CmdResult {
    let to = parse_fqdn(to)?;
    let svc = open(g)?;
    let from = svc.ca_view().map_err(msg)?.certificate_server;
    let view = svc.move_ca(&to).map_err(msg)?;
    if g.json {
        print_json(&view);
    } else {
        println!(
            "CA role moved from {} to {to}; the CA key is now held by {to} only",
            from.as_deref().unwrap_or("-")
        );
        print_details(&view.details, g.utc_offset);
    }
    Ok(())
}

/// A temporary file beside `path`, created new with mode 0600 (a secret is never readable by
/// others, not even briefly). Its name is fixed (`path` + `.zonepki-tmp`), so a run killed
/// before it finished leaves nothing that the next run does not remove (issue 9 item 3); two
/// runs cannot share it, as each holds the store open exclusively meanwhile.
fn create_secret_tmp(path: &Path) -> Result<(PathBuf, std::fs::File), String> {
    let tmp = remove_stale_tmp(path)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((tmp, file))
}

/// Fills `tmp` with `data` and links it to `path`, which must not exist (a backup never
/// replaces a file).
fn finish_secret(tmp: &Path, mut file: std::fs::File, path: &Path, data: &[u8]) -> CmdResult {
    use std::io::Write as _;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    drop(file);
    std::fs::hard_link(tmp, path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{} exists: a backup never replaces a file; choose another name",
                path.display()
            )
        } else {
            format!("cannot create {}: {e}", path.display())
        }
    })
}

fn ca_backup(g: &Global, out: &Path) -> CmdResult {
    let svc = open(g)?;
    if out != Path::new("-") && out.symlink_metadata().is_ok() {
        return Err(format!(
            "{} exists: a backup never replaces a file; choose another name, or move the old \
             file away first",
            out.display()
        ));
    }
    // What needs no passphrase is checked before asking for it.
    svc.check_backup_ca().map_err(msg)?;
    let passphrase = backup_passphrase()?;
    if out == Path::new("-") {
        // Standard output holds the (encrypted) archive alone.
        let archive = svc.backup_ca(&passphrase).map_err(msg)?;
        write_output(out, &archive, false)?;
        return Ok(());
    }
    // The file is created (empty, mode 0600) before the backup is made, so an unwritable
    // place is refused before the backup is recorded in the audit log.
    let (tmp, file) = create_secret_tmp(out)?;
    let result = svc.backup_ca(&passphrase).map_err(msg).and_then(|archive| {
        finish_secret(&tmp, file, out, &archive)?;
        Ok(archive)
    });
    let _ = std::fs::remove_file(&tmp);
    let archive = result?;
    let info = backup::inspect(&archive).map_err(msg)?;
    if g.json {
        print_json(&serde_json::json!({
            "out": out,
            "ca_subject": info.ca_subject,
            "ca_sha256": info.ca_sha256,
            "created_at": info.created_at,
            "kdf_iterations": info.kdf_iterations,
        }));
    } else {
        println!(
            "wrote {} (mode 0600): CA backup of {}, SHA-256 {}",
            out.display(),
            info.ca_subject,
            info.ca_sha256
        );
        println!(
            "Keep it and its passphrase apart: both are needed to restore the CA \
             (`zonectl ca restore --file {} --to FQDN`).",
            out.display()
        );
    }
    Ok(())
}

fn ca_restore(g: &Global, file: &Path, to: &str, yes: bool) -> CmdResult {
    let to = parse_fqdn(to)?;
    let svc = open(g)?;
    // Read at most one byte more than the library accepts, so a huge or endless file is
    // refused as too large without being read whole.
    let archive = fsio::read(
        file,
        backup::MAX_ARCHIVE_BYTES as u64,
        "a CA backup archive",
    )
    .map_err(msg)?;
    // What needs no passphrase is checked before asking for it.
    backup::inspect(&archive).map_err(|e| format!("{}: {e}", file.display()))?;
    svc.check_restore_ca(&to).map_err(msg)?;
    confirm(
        &format!(
            "Restore the CA from {} onto {to}, which then holds the CA role?",
            file.display()
        ),
        yes,
    )?;
    let passphrase = restore_passphrase()?;
    let from = svc.ca_view().map_err(msg)?.certificate_server;
    let view = svc.restore_ca(&archive, &passphrase, &to).map_err(msg)?;
    if g.json {
        print_json(&view);
    } else {
        match from.as_deref() {
            Some(from) if from != to.as_str() => {
                println!("CA restored on {to}; the CA role moved from {from} to {to}")
            }
            _ => println!("CA restored on {to}, which holds the CA role"),
        }
        print_details(&view.details, g.utc_offset);
    }
    Ok(())
}

fn server_replace(g: &Global, fqdn: &str, file: Option<&Path>) -> CmdResult {
    let fqdn = parse_fqdn(fqdn)?;
    let certificate = file.map(read_input).transpose()?;
    let svc = open(g)?;
    let replacement: Replacement = svc
        .replace_expired(&fqdn, certificate.as_deref())
        .map_err(op_error)?;
    if g.json {
        print_json(&replacement);
        return Ok(());
    }
    println!(
        "replaced the certificate of {} that expired at {}; the new one is current now:",
        replacement.fqdn,
        show_time(replacement.expired_at, g.utc_offset)
    );
    if let Some(leaf) = replacement.chain.first() {
        let leaf = Certificate::try_from(leaf).map_err(msg)?;
        print_details(&leaf.details(svc.now()), g.utc_offset);
    }
    let list = &replacement.must_reestablish;
    println!();
    if list.is_empty() {
        println!("Devices that must re-establish trust: none");
    } else {
        println!(
            "Devices that must re-establish trust with {} ({}):",
            replacement.fqdn,
            list.len()
        );
        let shown = if list.len() <= TABLE_LIMIT {
            list.len()
        } else {
            TABLE_LIMIT
        };
        for name in &list[..shown] {
            println!("  {name}");
        }
        if shown < list.len() {
            println!(
                "  ... and {} more (--json lists every one)",
                list.len() - shown
            );
        }
    }
    Ok(())
}

fn op(g: &Global, cmd: OpCmd) -> CmdResult {
    if let OpCmd::Show = cmd {
        return op_show(g, &open_shown(g)?);
    }
    let svc = open(g)?;
    let (view, done) = match cmd {
        OpCmd::Show => unreachable!("handled above"),
        OpCmd::AssignNow => (svc.assign_now(), "update assigned".to_string()),
        OpCmd::Cancel => (
            svc.cancel(),
            "cancelled; members drop what they staged at their next refresh".to_string(),
        ),
        OpCmd::Redeploy { names } => {
            let what = if names.is_empty() {
                "every failed member".to_string()
            } else {
                names.join(", ")
            };
            (svc.redeploy(&names), format!("redeployed to {what}"))
        }
        OpCmd::Ignore { names } => (
            svc.ignore(&names),
            format!("taken out of the update: {}", names.join(", ")),
        ),
        OpCmd::Baseline { force, yes } => (
            {
                if force {
                    confirm(
                        "Baseline even if members are stranded? Their recovery bundle goes \
                         away and they must be re-enrolled.",
                        yes,
                    )?;
                }
                svc.baseline(force)
            },
            "baselined: the update is finished and the recovery bundle is gone".to_string(),
        ),
        OpCmd::Replicate { servers } => {
            let fqdns = servers
                .iter()
                .map(|s| parse_fqdn(s))
                .collect::<Result<Vec<_>, _>>()?;
            (
                svc.replicate(&fqdns),
                format!("replication recorded for {}", servers.join(", ")),
            )
        }
    };
    let view = view.map_err(op_error)?;
    if g.json {
        print_json(&view);
    } else {
        println!("{done}");
        print_op_brief(&view, g.utc_offset);
    }
    Ok(())
}

fn op_show(g: &Global, svc: &Service) -> CmdResult {
    let view = match svc.op_show() {
        Ok(view) => view,
        Err(zonepki::Error::Op(OpError::NoOperation)) => {
            if g.json {
                print_json(&serde_json::json!({ "state": "none" }));
            } else {
                println!("No staged operation has run in this zone.");
            }
            return Ok(());
        }
        Err(e) => return Err(msg(e)),
    };
    if g.json {
        print_json(&view);
    } else {
        print_op(&view, g.utc_offset);
    }
    Ok(())
}

/// `member token` (N3): one-time registration tokens, each in its own file `DIR/NAME.token`
/// (mode 0600 from the moment it exists, created new: never through a symbolic link, never
/// over an existing file without `--force`). The files are checked before the tokens are
/// made, so a refusal writes nothing and leaves the store unchanged.
fn member_token(
    g: &Global,
    names: &[String],
    out_dir: &Path,
    valid_hours: u64,
    force: bool,
) -> CmdResult {
    let file_of = |name: &str| out_dir.join(format!("{}.token", name.trim().to_ascii_lowercase()));
    for name in names {
        let path = file_of(name);
        match path.symlink_metadata() {
            Ok(m) if m.is_dir() => {
                return Err(format!("{} is a directory", path.display()));
            }
            Ok(_) if !force => {
                return Err(format!(
                    "{} exists: give --force to replace it, or choose another --out-dir",
                    path.display()
                ));
            }
            _ => {}
        }
    }
    let svc = open(g)?;
    let valid_for = Duration::from_secs(valid_hours.saturating_mul(3600));
    let tokens = svc.issue_tokens(names, valid_for).map_err(msg)?;
    let expires_at = svc.now().plus(valid_for);
    std::fs::create_dir_all(out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let mut written = Vec::new();
    for (name, token) in &tokens {
        let path = file_of(name);
        write_secret_file(&path, format!("{}\n", token.as_str()).as_bytes(), force)?;
        written.push(serde_json::json!({
            "name": name,
            "file": path.display().to_string(),
            "expires_at": expires_at,
        }));
    }
    if g.json {
        print_json(&written);
    } else {
        for w in &written {
            println!(
                "{}: {} (valid until {})",
                w["name"].as_str().unwrap_or_default(),
                w["file"].as_str().unwrap_or_default(),
                show_time(expires_at, g.utc_offset)
            );
        }
    }
    Ok(())
}

/// Writes a secret file: created new with mode 0600 (O_EXCL: a symbolic link at the name is
/// not followed); with `force` an existing file (or link) there is removed first.
fn write_secret_file(path: &Path, data: &[u8], force: bool) -> CmdResult {
    use std::io::Write as _;
    if force {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot replace {}: {e}", path.display()));
            }
            _ => {}
        }
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn fleet_refresh(
    g: &Global,
    names: Vec<String>,
    all: bool,
    fail: Vec<String>,
    offline: Vec<String>,
) -> CmdResult {
    let svc = open_local(g)?;
    let opts = RefreshOptions::new().failing(fail).offline(offline);
    // Fleet-wide work reports progress on stderr: a bar for a person at a terminal, else a
    // line per batch the library commits (with --json, JSON notices), so a log shows it.
    let total = if all {
        usize::try_from(svc.member_count().map_err(msg)?).unwrap_or(usize::MAX)
    } else {
        0
    };
    let bar = if all && std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} refreshing {pos}/{len} [{bar:30}] {elapsed}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    let lines = all && bar.is_none();
    let started = Instant::now();
    if lines {
        notice(&format!("refreshing {total} member(s)"));
    }
    let result = svc.refresh(&names, &opts, |done, total| {
        if let Some(b) = &bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
        } else if lines {
            notice(&format!(
                "refreshed {done}/{total} member(s) ({}s)",
                started.elapsed().as_secs()
            ));
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let outcomes = result.map_err(msg)?;
    if g.json {
        print_json(&outcomes);
    } else {
        print_outcomes(&outcomes);
    }
    Ok(())
}

fn plan(g: &Global, at: Option<Timestamp>) -> CmdResult {
    // A dry run: no tick, so asking about a time past activation activates nothing.
    let svc = open_read(g)?;
    let at = at.unwrap_or_else(|| svc.now());
    let plan = svc.plan(at).map_err(msg)?;
    if g.json {
        print_json(&plan);
    } else {
        print_plan(&plan, g.utc_offset);
    }
    Ok(())
}

fn warnings(g: &Global, within_days: u32, fail_on: Option<FailOn>) -> CmdResult {
    let svc = open_shown(g)?;
    let window = if within_days == 90 {
        DEFAULT_WARNING_WINDOW
    } else {
        Duration::from_secs(u64::from(within_days) * 24 * 3600)
    };
    let list = svc.warnings(window).map_err(|e| e.to_string())?;
    if g.json {
        print_json(&list);
    } else if list.is_empty() {
        println!("No certificate expires within {within_days} days.");
    } else {
        println!("{WARNING_HEADER}");
        for w in &list {
            println!("  {}", w.message);
        }
    }
    let failing = match fail_on {
        None => false,
        Some(FailOn::Expired) => list.iter().any(|w| w.expired),
        Some(FailOn::Expiring) => !list.is_empty(),
    };
    if failing {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        std::process::exit(EXIT_WARNING);
    }
    Ok(())
}

fn chain_verify(
    g: &Global,
    trust: &[PathBuf],
    untrusted: &[PathBuf],
    leaf: &Path,
    at: Option<Timestamp>,
) -> CmdResult {
    let read = |p: &Path| bundle::read_file(p).map_err(|e| e.to_string());
    let mut anchors = Vec::new();
    for p in trust {
        anchors.extend(read(p)?);
    }
    let mut leaf_file = read(leaf)?;
    let leaf_cert: Certificate = leaf_file.remove(0);
    let mut intermediates = leaf_file;
    for p in untrusted {
        intermediates.extend(read(p)?);
    }
    let at = at.or(g.now).unwrap_or_else(Timestamp::now_utc);
    let chain =
        verify_chain(&leaf_cert, &intermediates, &anchors, at).map_err(|e| e.to_string())?;
    let subjects = chain.subjects();
    if g.json {
        print_json(&serde_json::json!({ "valid": true, "at": at, "path": subjects }));
    } else {
        println!("OK at {at}");
        for (i, s) in subjects.iter().enumerate() {
            println!("{:indent$}{s}", "", indent = i * 2);
        }
    }
    Ok(())
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("views serialise")
    );
}

fn show_time(t: Timestamp, offset: Option<UtcOffset>) -> String {
    match offset {
        Some(o) => t.to_rfc3339_in(o),
        None => t.to_rfc3339(),
    }
}

fn print_details(d: &CertDetails, offset: Option<UtcOffset>) {
    println!("Subject:            {}", d.subject);
    println!("Issued by:          {}", d.issuer);
    println!("Valid from:         {}", show_time(d.not_before, offset));
    println!("Expires:            {}", show_time(d.not_after, offset));
    println!(
        "Key:                {} {} bits",
        d.key_algorithm, d.key_bits
    );
    println!("MD5 fingerprint:    {}", d.md5);
    println!("SHA1 fingerprint:   {}", d.sha1);
    println!("SHA256 fingerprint: {}", d.sha256);
    println!("Certificate status: {}", d.status);
}

fn print_server(v: &ServerView, offset: Option<UtcOffset>) {
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let time = |t: Option<Timestamp>| t.map_or_else(|| "-".into(), |t| show_time(t, offset));
    println!("Server:             {} ({})", v.fqdn, v.role);
    if let Some(p) = &v.parent {
        println!("Parent:             {p}");
    }
    if v.certificate_server {
        println!("CA role:            certificate server");
    }
    println!("Issued to:          {}", opt(&v.issued_to));
    println!(
        "DNS names:          {}",
        if v.dns_names.is_empty() {
            "-".into()
        } else {
            v.dns_names.join(", ")
        }
    );
    println!("Subject:            {}", opt(&v.subject));
    println!("Issued by:          {}", opt(&v.issuer));
    println!("Valid from:         {}", time(v.not_before));
    println!("Expires on:         {}", time(v.not_after));
    println!("MD5 fingerprint:    {}", opt(&v.md5));
    println!("SHA1 fingerprint:   {}", opt(&v.sha1));
    println!("SHA256 fingerprint: {}", opt(&v.sha256));
    println!("Certificate status: {}", v.status);
    println!(
        "Options:            {}",
        if v.options.is_empty() {
            "-".into()
        } else {
            v.options
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!("Update status:      {}", v.update_status);
    println!("Agent version:      {}", v.agent_version);
}

fn print_server_table(list: &[ServerView], offset: Option<UtcOffset>) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            vec![
                v.fqdn.clone(),
                v.role.to_string(),
                v.issuer.clone().unwrap_or_else(|| "-".into()),
                v.not_after
                    .map_or_else(|| "-".into(), |t| show_time(t, offset)),
                v.status.to_string(),
                v.update_status.to_string(),
                v.agent_version.clone(),
                v.sha1.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(
        &[
            "ISSUED TO",
            "ROLE",
            "ISSUED BY",
            "EXPIRES ON",
            "STATUS",
            "UPDATE",
            "AGENT",
            "SHA1",
        ],
        &rows,
    );
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
    if rows.is_empty() && std::io::stdout().is_terminal() {
        println!("(none)");
    }
}

/// More rows than this and tables for people list only the rows that need attention.
const TABLE_LIMIT: usize = 100;

fn print_started(g: &Global, v: &OpView) {
    if g.json {
        print_json(v);
        return;
    }
    println!(
        "{} started: update \"{}\", activation at {}{}",
        v.kind.title(),
        v.update_name,
        show_time(v.activation, g.utc_offset),
        if v.immediate { " (immediate)" } else { "" }
    );
    print_op_brief(v, g.utc_offset);
}

fn status_counts<S: Display>(statuses: impl Iterator<Item = S>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in statuses {
        *counts.entry(s.to_string()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_op_brief(v: &OpView, offset: Option<UtcOffset>) {
    let cancel = if let (true, Some(deadline)) = (v.cancellable, v.cancel_deadline) {
        format!("; cancel possible before {}", show_time(deadline, offset))
    } else {
        String::new()
    };
    println!(
        "{} (update \"{}\"): {}; activation {}{cancel}",
        v.kind.title(),
        v.update_name,
        v.state,
        show_time(v.activation, offset),
    );
    println!(
        "Members: {} ({})",
        v.servers.len() + v.devices.len(),
        status_counts(v.members().map(|(_, s)| s))
    );
    if !v.stranded.is_empty() {
        println!("Stranded: {}", v.stranded.join(", "));
    }
}

fn print_op(v: &OpView, offset: Option<UtcOffset>) {
    let list = |l: &[String]| {
        if l.is_empty() {
            "-".to_string()
        } else {
            l.join(", ")
        }
    };
    println!("Operation:          {} ({})", v.id, v.kind.title());
    println!("Update:             {}", v.update_name);
    println!("State:              {}", v.state);
    println!(
        "Activation:         {}{}",
        show_time(v.activation, offset),
        if v.immediate { " (immediate)" } else { "" }
    );
    if let (true, Some(deadline)) = (v.cancellable, v.cancel_deadline) {
        println!("Cancel before:      {}", show_time(deadline, offset));
    }
    print_gate(v, offset);
    println!("Started:            {}", show_time(v.started_at, offset));
    println!("Recovery bundle on: {}", list(&v.recovery_available_on));
    println!("Stranded:           {}", list(&v.stranded));
    println!();
    let rows: Vec<Vec<String>> = v
        .replication
        .iter()
        .map(|r| vec![r.server.clone(), r.status.to_string()])
        .collect();
    print_table(&["CONTENT SERVER", "REPLICATION"], &rows);
    println!();
    println!(
        "Members: {} ({})",
        v.servers.len() + v.devices.len(),
        status_counts(v.members().map(|(_, s)| s))
    );
    if !v.servers.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = v
            .servers
            .iter()
            .map(|s| {
                vec![
                    s.fqdn.clone(),
                    s.status.to_string(),
                    s.certificate_status.to_string(),
                    s.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print_table(&["SERVER", "STATUS", "CERTIFICATE STATUS", "REASON"], &rows);
    }
    if !v.devices.is_empty() {
        println!();
        let shown: Vec<_> = v
            .devices
            .iter()
            .filter(|d| v.devices.len() <= TABLE_LIMIT || !d.status.is_settled())
            .collect();
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|d| {
                vec![
                    d.name.clone(),
                    d.status.to_string(),
                    d.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print_table(&["DEVICE", "STATUS", "REASON"], &rows);
        if shown.len() < v.devices.len() {
            println!(
                "({} devices that applied or activated not listed; --json lists every member)",
                v.devices.len() - shown.len()
            );
        }
    }
    if !v.notices.is_empty() {
        println!();
        println!("Notices:");
        for n in &v.notices {
            // Printed generically from the record, so new kinds of notice show up as well.
            let value = serde_json::to_value(n).unwrap_or_default();
            let Some(fields) = value.as_object() else {
                continue;
            };
            let event = fields
                .get("event")
                .and_then(|e| e.as_str())
                .unwrap_or("notice");
            let rest: Vec<String> = fields
                .iter()
                .filter(|(k, _)| k.as_str() != "event")
                .map(|(k, v)| match v.as_str() {
                    Some(s) => format!("{k} {s}"),
                    None => format!("{k} {v}"),
                })
                .collect();
            println!("  {event}: {}", rest.join(", "));
        }
    }
}

fn print_outcomes(outcomes: &[RefreshOutcome]) {
    let notable = |o: &RefreshOutcome| {
        matches!(
            o.outcome,
            Outcome::Failed | Outcome::Stranded | Outcome::Offline
        )
    };
    let shown: Vec<_> = outcomes
        .iter()
        .filter(|o| outcomes.len() <= TABLE_LIMIT || notable(o))
        .collect();
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|o| {
            vec![
                o.name.clone(),
                o.outcome.to_string(),
                o.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["MEMBER", "OUTCOME", "DETAIL"], &rows);
    if shown.len() < outcomes.len() {
        println!(
            "({} members without failures not listed; --json lists every member)",
            outcomes.len() - shown.len()
        );
    }
    println!(
        "Refreshed {} member(s): {}",
        outcomes.len(),
        status_counts(outcomes.iter().map(|o| o.outcome.name()))
    );
}

fn print_plan(p: &Plan, offset: Option<UtcOffset>) {
    println!(
        "At {}: activation {}; {} member(s) would be stranded",
        show_time(p.at, offset),
        if p.activated_by_then {
            "will have happened"
        } else {
            "will not have happened yet (shown as if it had)"
        },
        p.stranded.len()
    );
    let rows: Vec<Vec<String>> = p
        .members
        .iter()
        .filter(|m| p.members.len() <= TABLE_LIMIT || !m.communicates)
        .map(|m| {
            vec![
                m.name.clone(),
                m.status.to_string(),
                if m.communicates { "yes" } else { "no" }.to_string(),
                m.reason.clone(),
            ]
        })
        .collect();
    print_plan_gate(p, offset);
    print_table(&["MEMBER", "STATUS", "COMMUNICATES", "REASON"], &rows);
    if rows.len() < p.members.len() {
        println!(
            "({} members that will communicate not listed; --json lists every member)",
            p.members.len() - rows.len()
        );
    }
}

// ---- B2 coverage gate and B4 lint (issue 14): kept together for easy merging ----

/// B2: the coverage gate of an operation, and B4's acknowledged lint warnings.
#[derive(Args)]
struct GateArgs {
    /// Coverage gate (B2): activate only once at least PCT% of the devices (managed devices
    /// and Content Satellites) have applied the update; otherwise postpone by --gate-step.
    #[arg(long, value_name = "PCT", help_heading = "Coverage gate (B2)")]
    gate_devices: Option<u8>,
    /// With the gate: the Primary Servers and Authentication Satellites that must have
    /// applied: `all`, or `PRIMARY,AUTH` counts (e.g. `2,1`).
    #[arg(
        long,
        value_name = "all|P,A",
        default_value = "all",
        help_heading = "Coverage gate (B2)"
    )]
    gate_servers: String,
    /// How far an unmet gate moves activation: e.g. 30m, 1h, 2d.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration, help_heading = "Coverage gate (B2)")]
    gate_step: u64,
    /// The gate never postpones past the current CA's expiry minus this margin.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration, help_heading = "Coverage gate (B2)")]
    gate_deadline_margin: u64,
    /// At the deadline with the gate unmet: `activate` (report who is stranded) or `hold`
    /// (stay put and raise an alarm).
    #[arg(
        long,
        value_name = "activate|hold",
        default_value = "activate",
        help_heading = "Coverage gate (B2)"
    )]
    gate_at_deadline: String,
    /// Accept a lint warning (B4) for this operation's certificates, by rule name
    /// (e.g. san_wildcard); repeat for several.
    #[arg(long, value_name = "RULE", value_parser = parse_rule)]
    accept_lint_warning: Vec<Rule>,
}

impl GateArgs {
    fn gate(&self) -> Result<Option<Gate>, String> {
        let Some(min_devices_percent) = self.gate_devices else {
            return Ok(None);
        };
        let servers = match self.gate_servers.trim() {
            "all" => ServerQuota::All,
            counts => {
                let parsed = counts
                    .split_once(',')
                    .and_then(|(p, a)| Some((p.trim().parse().ok()?, a.trim().parse().ok()?)));
                let Some((primary, auth_satellite)) = parsed else {
                    return Err(format!(
                        "--gate-servers {counts:?}: give `all`, or the counts of Primary Servers \
                         and Authentication Satellites as P,A (e.g. 2,1)"
                    ));
                };
                ServerQuota::AtLeast {
                    primary,
                    auth_satellite,
                }
            }
        };
        let at_deadline: AtDeadline = self
            .gate_at_deadline
            .parse()
            .map_err(|e| format!("--gate-at-deadline: {e}"))?;
        Ok(Some(
            Gate::new(min_devices_percent, servers)
                .with_step_secs(self.gate_step)
                .with_deadline_margin_secs(self.gate_deadline_margin)
                .with_at_deadline(at_deadline),
        ))
    }
}

/// `90s`, `30m`, `1h`, `7d` (or plain seconds) as seconds.
fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: use e.g. 90s, 30m, 1h, 7d"))?;
    let mul = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too long"))
}

fn parse_rule(s: &str) -> Result<Rule, String> {
    s.parse()
        .map_err(|e: zonepki::lint::UnknownRule| e.to_string())
}

#[derive(Args)]
struct LintArgs {
    /// Certificate or chain files (leaf first in a chain).
    #[arg(required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// The server's FQDN, which a server certificate's SAN must hold.
    #[arg(long)]
    fqdn: Option<String>,
    /// The certificates come from an external CA (a wildcard SAN is then a warning, CE4).
    #[arg(long)]
    external: bool,
}

fn lint_files(g: &Global, args: &LintArgs) -> CmdResult {
    let mut all = Vec::new();
    for f in &args.files {
        let certs = bundle::read_file(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for finding in lint_chain(&certs, args.fqdn.as_deref(), args.external) {
            all.push((f.display().to_string(), finding));
        }
    }
    if g.json {
        let list: Vec<_> = all
            .iter()
            .map(|(file, f)| serde_json::json!({ "file": file, "finding": f }))
            .collect();
        print_json(&list);
    } else if all.is_empty() {
        println!("no findings");
    } else {
        for (file, f) in &all {
            println!("{file}: {f}");
        }
    }
    if all.is_empty() {
        Ok(())
    } else {
        // Exit 1 with findings: the lines above are the report.
        std::process::exit(1)
    }
}

fn print_gate(v: &OpView, offset: Option<UtcOffset>) {
    let Some(g) = &v.gate else { return };
    let settings = &g.state.gate;
    let servers = match settings.servers {
        ServerQuota::All => "every Primary Server and Authentication Satellite".to_string(),
        ServerQuota::AtLeast {
            primary,
            auth_satellite,
        } => format!("{primary} Primary Server(s), {auth_satellite} Authentication Satellite(s)"),
    };
    println!(
        "Gate:               {}% of devices and {servers}; step {}s; deadline {} ({})",
        settings.min_devices_percent,
        settings.step_secs,
        show_time(g.state.deadline, offset),
        match settings.at_deadline {
            AtDeadline::Activate => "then activate",
            AtDeadline::Hold => "then hold",
        }
    );
    println!("Gate now:           {}", g.verdict_now);
    if g.state.activation_moved() {
        println!(
            "Requested:          {} (postponed {} time(s))",
            show_time(g.state.requested_activation, offset),
            g.state.postponements.len()
        );
    }
    if let Some(p) = g.state.postponements.last() {
        println!(
            "Last postponed:     at {}: {}",
            show_time(p.at, offset),
            p.verdict
        );
    }
    if let Some(at) = g.state.held_since {
        println!(
            "ALARM:              held at the deadline since {}: cancel, ignore members, or \
             wait for them",
            show_time(at, offset)
        );
    }
}

fn print_plan_gate(p: &Plan, offset: Option<UtcOffset>) {
    let Some(g) = &p.gate else { return };
    match g.postponed_to {
        Some(to) => println!(
            "Gate: {} (to {}): {}",
            g.outcome,
            show_time(to, offset),
            g.verdict
        ),
        None => println!("Gate: {}: {}", g.outcome, g.verdict),
    }
}
