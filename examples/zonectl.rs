//! zonectl: the administrator's command line over zonepki (the contract is
//! `../shared/ZONECTL.md`). It parses arguments and prints; every rule lives in the library.
//!
//! Exit status: 0 done; 1 refused or failed (`error: ...` on stderr, store unchanged);
//! 2 usage error.
//!
//! Commands that show the zone (`server list/show/cert`, `device list`, `ca show/export`,
//! `warnings`, `op show`) first run the work due at `--now` (activation, O8), as the
//! library's `op` commands and `fleet refresh` do; `plan` and `store dump` never do.

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
        eprintln!("error: cannot write output: {e}");
        std::process::exit(1);
    }
}
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use time::UtcOffset;
use zonepki::ca::ValidityYears;
use zonepki::cert::bundle;
use zonepki::cert::{CertDetails, Certificate};
use zonepki::chain::verify_chain;
use zonepki::clock::{ManualClock, Timestamp};
use zonepki::key::KeySpec;
use zonepki::ops::ActivationRequest;
use zonepki::service::{
    InitInternal, NewServer, OpView, Plan, RefreshOptions, RefreshOutcome, RemintCaRequest,
    ServerRemintRequest, ZoneService,
};
use zonepki::store::RedbStore;
use zonepki::transport::LoopbackTransport;
use zonepki::view::{CaView, DEFAULT_WARNING_WINDOW, ServerView, WARNING_HEADER};
use zonepki::zone::{CaKind, Fqdn, ServerRole};

type Service = ZoneService<RedbStore, LoopbackTransport, ManualClock>;
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
    /// The zone's embedded store.
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
}

#[derive(Subcommand)]
enum Command {
    /// Create a zone with an internal CA held by its first Primary Server (Z2).
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
    Warnings {
        /// Warning window in days.
        #[arg(long, default_value_t = 90)]
        within_days: u32,
    },
    /// The staged operation (O1-O12): show it and act on it.
    #[command(subcommand)]
    Op(OpCmd),
    /// Play the members' agents (A1, A2, O8, O9).
    #[command(subcommand)]
    Fleet(FleetCmd),
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
}

#[derive(Args)]
struct InitArgs {
    /// Zone name (also the CA's CN).
    #[arg(long)]
    zone: String,
    /// FQDN of the first Primary Server: it holds the CA role.
    #[arg(long)]
    first_server: String,
    /// Additional DNS names of the first server.
    #[arg(long = "dns", num_args = 1..)]
    dns: Vec<String>,
    /// CA key type.
    #[arg(long, value_parser = parse_key, default_value = "p256")]
    key: KeySpec,
    /// CA validity, 1 to 10 years.
    #[arg(long, default_value_t = 10)]
    valid_years: u32,
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
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// The future certificate staged by a running remint.
        #[arg(long)]
        future: bool,
        /// DER instead of PEM.
        #[arg(long)]
        der: bool,
    },
    /// Start a Server Remint (SR1-SR3): new keys and certificates for the selected Primary
    /// Servers and Authentication Satellites, current at the activation time.
    Remint(ServerRemintArgs),
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
    /// Key type of the new server keys.
    #[arg(long, value_parser = parse_key, default_value = "p256")]
    key: KeySpec,
    /// Put the servers' additional DNS names into their SANs.
    #[arg(long)]
    include_dns: bool,
    /// CSR mode (external CA only, SR3): manual or auto.
    #[arg(long, value_parser = ["manual", "auto"])]
    csr: Option<String>,
    /// Organisation (O), for --csr auto.
    #[arg(long, requires = "csr")]
    org: Option<String>,
    /// Organisational unit (OU), for --csr auto.
    #[arg(long, requires = "csr")]
    ou: Option<String>,
    /// Locality (L), for --csr auto.
    #[arg(long, requires = "csr")]
    locality: Option<String>,
    /// State or province (ST), for --csr auto.
    #[arg(long, requires = "csr")]
    state: Option<String>,
    /// Country (C, two letters), for --csr auto.
    #[arg(long, requires = "csr")]
    country: Option<String>,
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Add managed devices by name, or --count N of them named PREFIX-1 .. PREFIX-N.
    Add {
        /// Device names.
        names: Vec<String>,
        /// How many to add.
        #[arg(long, conflicts_with = "names")]
        count: Option<usize>,
        /// Name prefix for --count.
        #[arg(long, default_value = "dev", requires = "count")]
        prefix: String,
        /// Agent version.
        #[arg(long, default_value = "unknown")]
        agent_version: String,
    },
    /// Managed devices.
    List,
}

#[derive(Subcommand)]
enum CaCmd {
    /// CA certificate details (V1).
    Show,
    /// Write the CA certificate (PEM unless --der).
    Export {
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// DER instead of PEM.
        #[arg(long)]
        der: bool,
    },
    /// Start a Remint CA (RC1): a new CA key and certificate on the certificate server, and
    /// every server certificate reminted under it, current at the activation time.
    Remint(CaRemintArgs),
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
    #[arg(long, default_value_t = 10)]
    valid_years: u32,
    /// Put servers' additional DNS names into their new certificates' SANs.
    #[arg(long)]
    include_dns: bool,
    /// The system update's name (default: "Remint CA").
    #[arg(long)]
    update_name: Option<String>,
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
        /// Baseline although members are stranded (their recovery bundle goes away).
        #[arg(long)]
        force: bool,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn clock(g: &Global) -> ManualClock {
    ManualClock::new(g.now.unwrap_or_else(Timestamp::now_utc))
}

fn open(g: &Global) -> Result<Service, String> {
    let store = RedbStore::open(&g.store).map_err(|e| {
        format!("{e} (create a zone with `zonectl init`, or point --store / $ZONECTL_STORE at it)")
    })?;
    Ok(ZoneService::new(
        store,
        LoopbackTransport::with_root(&g.root),
        clock(g),
    ))
}

/// Runs scheduled work that is due at `--now` (activation, O8) before a command that shows
/// the zone, so what it shows is the state at that time. Idempotent: commits only when an
/// activation is due.
fn tick(svc: &Service) -> CmdResult {
    svc.tick().map(|_| ()).map_err(msg)
}

fn msg(e: impl Display) -> String {
    e.to_string()
}

fn parse_fqdn(s: &str) -> Result<Fqdn, String> {
    s.parse()
        .map_err(|e: zonepki::zone::ZoneError| e.to_string())
}

fn run(cli: Cli) -> CmdResult {
    let g = &cli.global;
    match cli.command {
        Command::Init(args) => init(g, args),
        Command::Server(cmd) => server(g, cmd),
        Command::Device(cmd) => device(g, cmd),
        Command::Ca(cmd) => ca(g, cmd),
        Command::Warnings { within_days } => warnings(g, within_days),
        Command::Op(cmd) => op(g, cmd),
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
            let svc = open(g)?;
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
        Command::Store(StoreCmd::Dump) => {
            let svc = open(g)?;
            print_json(&svc.dump().map_err(|e| e.to_string())?);
            Ok(())
        }
    }
}

fn init(g: &Global, args: InitArgs) -> CmdResult {
    if g.store.exists() {
        return Err(format!(
            "{} already exists: a store holds one zone",
            g.store.display()
        ));
    }
    let validity = ValidityYears::try_from(args.valid_years).map_err(|e| e.to_string())?;
    let fqdn: Fqdn = args
        .first_server
        .parse()
        .map_err(|e: zonepki::zone::ZoneError| e.to_string())?;
    let mut first = NewServer::new(fqdn, ServerRole::Primary);
    first.dns_names = args.dns;
    let init = InitInternal {
        zone: args.zone,
        ca_subject: None,
        first_server: first,
        ca_key: args.key,
        validity,
    };
    // Build the zone in a temporary file and move it into place only when everything
    // succeeded: a refused init leaves no store file.
    let tmp = tmp_path(&g.store);
    let result = (|| {
        let store = RedbStore::create(&tmp).map_err(|e| e.to_string())?;
        let svc = ZoneService::new(store, LoopbackTransport::with_root(&g.root), clock(g));
        svc.init_internal(init).map_err(|e| e.to_string())?;
        let view = svc.ca_view().map_err(|e| e.to_string())?;
        let (store, _, _) = svc.into_parts();
        store.close().map_err(|e| e.to_string())?;
        Ok::<CaView, String>(view)
    })();
    let view = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::hard_link(&tmp, &g.store) {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot create {}: {e}", g.store.display()));
    }
    let _ = std::fs::remove_file(&tmp);
    if g.json {
        print_json(&view);
    } else {
        println!(
            "zone created; CA held by {}",
            view.certificate_server.as_deref().unwrap_or("-")
        );
        print_details(&view.details, g.utc_offset);
    }
    Ok(())
}

fn tmp_path(store: &Path) -> PathBuf {
    let mut name = store
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".init-{}.tmp", std::process::id()));
    store.with_file_name(name)
}

fn server(g: &Global, cmd: ServerCmd) -> CmdResult {
    let svc = open(g)?;
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
            let view = svc.add_server(new).map_err(|e| e.to_string())?;
            if g.json {
                print_json(&view);
            } else {
                print_server(&view, g.utc_offset);
            }
        }
        ServerCmd::List => {
            tick(&svc)?;
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
            tick(&svc)?;
            let view = svc.server(&fqdn).map_err(|e| e.to_string())?;
            if g.json {
                print_json(&view);
            } else {
                print_server(&view, g.utc_offset);
            }
        }
        ServerCmd::Remint(args) => server_remint(g, &svc, args)?,
        ServerCmd::Cert {
            fqdn,
            out,
            future,
            der,
        } => {
            let fqdn: Fqdn = fqdn
                .parse()
                .map_err(|e: zonepki::zone::ZoneError| e.to_string())?;
            tick(&svc)?;
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
            std::fs::write(&out, data).map_err(|e| format!("{}: {e}", out.display()))?;
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
    let svc = open(g)?;
    match cmd {
        DeviceCmd::Add {
            names,
            count,
            prefix,
            agent_version,
        } => {
            let names: Vec<String> = match count {
                Some(n) => (1..=n).map(|i| format!("{prefix}-{i}")).collect(),
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
        DeviceCmd::List => {
            tick(&svc)?;
            let list = svc.devices().map_err(|e| e.to_string())?;
            if g.json {
                print_json(&list);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|d| {
                        vec![
                            d.name.clone(),
                            d.update_status.clone(),
                            d.agent_version.clone(),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "UPDATE", "AGENT"], &rows);
            }
        }
    }
    Ok(())
}

fn ca(g: &Global, cmd: CaCmd) -> CmdResult {
    let svc = open(g)?;
    match cmd {
        CaCmd::Show => {
            tick(&svc)?;
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
        CaCmd::Export { out, der } => {
            tick(&svc)?;
            let ca = svc.ca_certificate().map_err(|e| e.to_string())?;
            let data = if der {
                ca.der().as_bytes().to_vec()
            } else {
                ca.der().to_pem().into_bytes()
            };
            std::fs::write(&out, data).map_err(|e| format!("{}: {e}", out.display()))?;
            if g.json {
                print_json(&serde_json::json!({ "out": out }));
            } else {
                println!("wrote {}", out.display());
            }
        }
        CaCmd::Remint(args) => {
            let validity = ValidityYears::try_from(args.valid_years).map_err(msg)?;
            let view = svc
                .start_remint_ca(RemintCaRequest {
                    common_name: args.cn,
                    key: args.key,
                    validity,
                    include_dns: args.include_dns,
                    activation: args.activate_at,
                    update_name: args.update_name,
                })
                .map_err(msg)?;
            print_started(g, &view);
        }
    }
    Ok(())
}

fn server_remint(g: &Global, svc: &Service, args: ServerRemintArgs) -> CmdResult {
    if let Some(mode) = &args.csr {
        // CSR modes belong to an external CA (SR3, issue 4), which the library does not
        // offer yet: refuse rather than start half an operation.
        return Err(match svc.zone().map_err(msg)?.ca {
            CaKind::Internal { .. } => format!(
                "--csr {mode} applies to a zone with an external CA; this zone's CA is \
                 internal, so its agents make keys and CSRs themselves: leave --csr out"
            ),
            CaKind::External => format!(
                "--csr {mode}: a Server Remint with an external CA (SR3) is not yet supported"
            ),
        });
    }
    let servers = args
        .servers
        .iter()
        .map(|s| parse_fqdn(s))
        .collect::<Result<Vec<_>, _>>()?;
    let view = svc
        .start_server_remint(ServerRemintRequest {
            servers,
            update_name: args.update_name,
            common_name: args.cn,
            key: args.key,
            include_dns: args.include_dns,
            activation: args.activate_at,
            csr: None,
        })
        .map_err(msg)?;
    print_started(g, &view);
    Ok(())
}

fn op(g: &Global, cmd: OpCmd) -> CmdResult {
    let svc = open(g)?;
    let (view, done) = match cmd {
        OpCmd::Show => return op_show(g, &svc),
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
        OpCmd::Baseline { force } => (
            svc.baseline(force),
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
    let view = view.map_err(msg)?;
    if g.json {
        print_json(&view);
    } else {
        println!("{done}");
        print_op_brief(&view, g.utc_offset);
    }
    Ok(())
}

fn op_show(g: &Global, svc: &Service) -> CmdResult {
    tick(svc)?;
    if svc.op().map_err(msg)?.is_none() {
        if g.json {
            print_json(&serde_json::json!({ "state": "none" }));
        } else {
            println!("No staged operation has run in this zone.");
        }
        return Ok(());
    }
    let view = svc.op_show().map_err(msg)?;
    if g.json {
        print_json(&view);
    } else {
        print_op(&view, g.utc_offset);
    }
    Ok(())
}

fn fleet_refresh(
    g: &Global,
    names: Vec<String>,
    all: bool,
    fail: Vec<String>,
    offline: Vec<String>,
) -> CmdResult {
    let svc = open(g)?;
    let opts = RefreshOptions {
        fail: fail.into_iter().collect(),
        offline: offline.into_iter().collect(),
    };
    // A progress bar for fleet-wide work, on stderr, only for a person at a terminal.
    let bar = if all && std::io::stdout().is_terminal() {
        let total =
            svc.server_records().map_err(msg)?.len() + svc.device_records().map_err(msg)?.len();
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
    let result = svc.refresh(&names, &opts, |done, total| {
        if let Some(b) = &bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
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
    let svc = open(g)?;
    let at = at.unwrap_or_else(|| svc.now());
    let plan = svc.plan(at).map_err(msg)?;
    if g.json {
        print_json(&plan);
    } else {
        print_plan(&plan, g.utc_offset);
    }
    Ok(())
}

fn warnings(g: &Global, within_days: u32) -> CmdResult {
    let svc = open(g)?;
    tick(&svc)?;
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
            v.options.join(", ")
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
                v.role.clone(),
                v.issuer.clone().unwrap_or_else(|| "-".into()),
                v.not_after
                    .map_or_else(|| "-".into(), |t| show_time(t, offset)),
                v.status.clone(),
                v.update_status.clone(),
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

fn kind_text(kind: &str) -> &str {
    match kind {
        "remint_ca" => "Remint CA",
        "server_remint" => "Server Remint",
        other => other,
    }
}

fn print_started(g: &Global, v: &OpView) {
    if g.json {
        print_json(v);
        return;
    }
    println!(
        "{} started: update \"{}\", activation at {}{}",
        kind_text(&v.kind),
        v.update_name,
        show_time(v.activation, g.utc_offset),
        if v.immediate { " (immediate)" } else { "" }
    );
    print_op_brief(v, g.utc_offset);
}

fn status_counts<'a>(statuses: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in statuses {
        *counts.entry(s).or_default() += 1;
    }
    counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the cancel deadline is worth showing: the state still allows a cancel (O7).
fn cancellable(v: &OpView) -> bool {
    !v.immediate && matches!(v.state.as_str(), "replicating" | "assigned")
}

fn print_op_brief(v: &OpView, offset: Option<UtcOffset>) {
    let cancel = if let (true, Some(deadline)) = (cancellable(v), v.cancel_deadline) {
        format!("; cancel possible before {}", show_time(deadline, offset))
    } else {
        String::new()
    };
    println!(
        "{} (update \"{}\"): {}; activation {}{cancel}",
        kind_text(&v.kind),
        v.update_name,
        v.state,
        show_time(v.activation, offset),
    );
    println!(
        "Members: {} ({})",
        v.devices.len(),
        status_counts(v.devices.iter().map(|d| d.status.as_str()))
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
    println!("Operation:          {} ({})", v.id, kind_text(&v.kind));
    println!("Update:             {}", v.update_name);
    println!("State:              {}", v.state);
    println!(
        "Activation:         {}{}",
        show_time(v.activation, offset),
        if v.immediate { " (immediate)" } else { "" }
    );
    if let (true, Some(deadline)) = (cancellable(v), v.cancel_deadline) {
        println!("Cancel before:      {}", show_time(deadline, offset));
    }
    println!("Started:            {}", show_time(v.started_at, offset));
    println!("Recovery bundle on: {}", list(&v.recovery_available_on));
    println!("Stranded:           {}", list(&v.stranded));
    println!();
    let rows: Vec<Vec<String>> = v
        .replication
        .iter()
        .map(|r| vec![r.server.clone(), r.status.clone()])
        .collect();
    print_table(&["CONTENT SERVER", "REPLICATION"], &rows);
    if !v.servers.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = v
            .servers
            .iter()
            .map(|s| vec![s.fqdn.clone(), s.certificate_status.clone()])
            .collect();
        print_table(&["SERVER", "CERTIFICATE STATUS"], &rows);
    }
    println!();
    println!(
        "Members: {} ({})",
        v.devices.len(),
        status_counts(v.devices.iter().map(|d| d.status.as_str()))
    );
    let fine = ["applied", "activated", "recovered"];
    let shown: Vec<_> = v
        .devices
        .iter()
        .filter(|d| v.devices.len() <= TABLE_LIMIT || !fine.contains(&d.status.as_str()))
        .collect();
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                d.status.clone(),
                d.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["MEMBER", "STATUS", "REASON"], &rows);
    if shown.len() < v.devices.len() {
        println!(
            "({} members that applied or activated not listed; --json lists every member)",
            v.devices.len() - shown.len()
        );
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
    let notable = ["failed", "stranded", "offline"];
    let shown: Vec<_> = outcomes
        .iter()
        .filter(|o| outcomes.len() <= TABLE_LIMIT || notable.contains(&o.outcome.as_str()))
        .collect();
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|o| {
            vec![
                o.name.clone(),
                o.outcome.clone(),
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
        status_counts(outcomes.iter().map(|o| o.outcome.as_str()))
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
        p.stranded
    );
    let rows: Vec<Vec<String>> = p
        .members
        .iter()
        .filter(|m| p.members.len() <= TABLE_LIMIT || !m.communicates)
        .map(|m| {
            vec![
                m.name.clone(),
                m.status.clone(),
                if m.communicates { "yes" } else { "no" }.to_string(),
                m.reason.clone(),
            ]
        })
        .collect();
    print_table(&["MEMBER", "STATUS", "COMMUNICATES", "REASON"], &rows);
    if rows.len() < p.members.len() {
        println!(
            "({} members that will communicate not listed; --json lists every member)",
            p.members.len() - rows.len()
        );
    }
}
