//! zonectl: the administrator's command line over zonepki (the contract is
//! `../shared/ZONECTL.md`). It parses arguments and prints; every rule lives in the library.
//!
//! Exit status: 0 done; 1 refused or failed (`error: ...` on stderr, store unchanged);
//! 2 usage error.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use time::UtcOffset;
use zonepki::ca::ValidityYears;
use zonepki::cert::bundle;
use zonepki::cert::{CertDetails, Certificate};
use zonepki::chain::verify_chain;
use zonepki::clock::{ManualClock, Timestamp};
use zonepki::key::KeySpec;
use zonepki::service::{InitInternal, NewServer, ZoneService};
use zonepki::store::RedbStore;
use zonepki::transport::LoopbackTransport;
use zonepki::view::{CaView, DEFAULT_WARNING_WINDOW, ServerView, WARNING_HEADER};
use zonepki::zone::{Fqdn, ServerRole};

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

fn run(cli: Cli) -> CmdResult {
    let g = &cli.global;
    match cli.command {
        Command::Init(args) => init(g, args),
        Command::Server(cmd) => server(g, cmd),
        Command::Device(cmd) => device(g, cmd),
        Command::Ca(cmd) => ca(g, cmd),
        Command::Warnings { within_days } => warnings(g, within_days),
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
        ServerCmd::Cert {
            fqdn,
            out,
            future,
            der,
        } => {
            let fqdn: Fqdn = fqdn
                .parse()
                .map_err(|e: zonepki::zone::ZoneError| e.to_string())?;
            if future {
                return Err(format!(
                    "{fqdn} has no future certificate: no remint operation is running"
                ));
            }
            let chain = svc.server_chain(&fqdn).map_err(|e| e.to_string())?;
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
                print_json(
                    &serde_json::json!({"out": out, "certificates": if der { 1 } else { chain.len() }}),
                );
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
    }
    Ok(())
}

fn warnings(g: &Global, within_days: u32) -> CmdResult {
    let svc = open(g)?;
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
