//! The main job: a whole zone lifecycle on the embedded default store (redb), with every
//! member's agent in this process and its files on disk.
//!
//! ```text
//! cargo run --release --example lifecycle            # works in target/lifecycle-demo/
//! cargo run --release --example lifecycle -- DIR     # or in DIR (emptied first)
//! ```
//!
//! It creates a zone whose CA key is generated on, and held by, the first Primary Server's
//! agent; enrols servers whose keys are generated on their own agents; adds managed devices;
//! shows the CA and server views (V1, V2) and the expiry warnings (V3) at several times;
//! validates every server's chain (S7); shows a refused command leaving the store unchanged;
//! walks the zone through a whole staged Remint CA (O1-O12): replication, assignment, a failed
//! device redeployed, a laptop offline through activation (stranded, then recovered with the
//! authenticated recovery bundle), activation, baseline; and verifies the audit log (S6).

use std::path::PathBuf;
use std::time::Duration;

use zonepki::cert::bundle;
use zonepki::chain::verify_chain;
use zonepki::clock::{Clock, ManualClock, Timestamp};
use zonepki::key::KeySpec;
use zonepki::ops::ActivationRequest;
use zonepki::service::{InitInternal, NewServer, OpView, RemintCaRequest, ZoneService};
use zonepki::store::RedbStore;
use zonepki::transport::LoopbackTransport;
use zonepki::transport::{Fleet, RefreshOptions};
use zonepki::view::WARNING_HEADER;
use zonepki::zone::{Fqdn, ServerRole};

type Error = Box<dyn std::error::Error>;
type Zone<'a> = ZoneService<RedbStore, LoopbackTransport, &'a ManualClock>;

fn fqdn(s: &str) -> Result<Fqdn, Error> {
    Ok(s.parse()?)
}

fn main() -> Result<(), Error> {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/lifecycle-demo"), PathBuf::from);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let store_path = dir.join("zone.db");
    let fleet = dir.join("fleet");
    let start: Timestamp = "2027-01-04T09:00:00Z".parse()?;
    let clock = ManualClock::new(start);
    let zone = ZoneService::new(
        RedbStore::create(&store_path)?,
        LoopbackTransport::with_root(&fleet),
        &clock,
    );

    println!("== 1. A new zone with an internal CA (Z2): the key is made on ps1's agent");
    let mut ps1 = NewServer::new(fqdn("ps1.acme.example")?, ServerRole::Primary);
    ps1.dns_names = vec!["zenworks.acme.example".into()];
    ps1.agent_version = "24.4".into();
    zone.init_internal(
        InitInternal::new("Acme Zone", ps1)
            .with_ca_key(KeySpec::P256)
            .with_validity(5.try_into()?),
    )?;
    let ca = zone.ca_view()?;
    println!(
        "   CA {} ({}, {} bits), held by {}",
        ca.details.subject,
        ca.details.key_algorithm,
        ca.details.key_bits,
        ca.certificate_server.as_deref().unwrap_or("-")
    );
    println!(
        "   valid {} .. {}, SHA-1 {}",
        ca.details.not_before, ca.details.not_after, ca.details.sha1
    );

    println!("\n== 2. Servers join; each agent makes its own key and CSR (S1)");
    let mut ps2 = NewServer::new(fqdn("ps2.acme.example")?, ServerRole::Primary);
    // RSA for interoperability (S2), in a build with the `rsa` feature (the default).
    ps2.key = if cfg!(feature = "rsa") {
        KeySpec::Rsa2048
    } else {
        KeySpec::P256
    };
    ps2.agent_version = "24.4".into();
    zone.add_server(ps2)?;
    let mut sat = NewServer::new(fqdn("sat1.branch.acme.example")?, ServerRole::AuthSatellite);
    sat.parent = Some(fqdn("ps2.acme.example")?);
    sat.agent_version = "23.4".into();
    zone.add_server(sat)?;
    zone.add_server(NewServer::new(
        fqdn("content1.acme.example")?,
        ServerRole::ContentSatellite,
    ))?;
    let devices: Vec<String> = (1..=25).map(|i| format!("laptop-{i:03}")).collect();
    zone.add_devices(&devices, "24.2")?;
    // Each member's agent refreshes once after joining and learns the zone's trust anchors.
    zone.refresh(&[], &RefreshOptions::default(), |_, _| {})?;
    for s in zone.servers()? {
        println!(
            "   {:28} {:18} {:8} expires {}  SHA-1 {}",
            s.fqdn,
            s.role,
            s.status,
            s.not_after.map_or("-".into(), |t| t.to_string()),
            s.sha1.as_deref().map_or("-", |f| &f[..23])
        );
    }
    println!("   {} managed devices", zone.devices()?.len());

    println!("\n== 3. Every server certificate validates against the zone CA (S7)");
    let anchor = zone.ca_certificate()?;
    for s in zone.servers()? {
        let chain = zone.server_chain(&s.fqdn.parse()?)?;
        let Some(leaf) = chain.first() else { continue };
        let leaf = zonepki::cert::Certificate::try_from(leaf)?;
        let path = verify_chain(&leaf, &[], std::slice::from_ref(&anchor), clock.now())?;
        println!("   {} -> {}", s.fqdn, path.subjects().join(" -> "));
    }

    println!("\n== 4. The members' files (keys never leave their owner; key.pem is 0600)");
    for name in ["ps1.acme.example", "sat1.branch.acme.example"] {
        let cur = fleet.join(name).join("current");
        for f in ["cert.pem", "key.pem", "trust.pem"] {
            let p = cur.join(f);
            let meta = std::fs::metadata(&p)?;
            #[cfg(unix)]
            let mode = {
                use std::os::unix::fs::PermissionsExt;
                format!("{:o}", meta.permissions().mode() & 0o777)
            };
            #[cfg(not(unix))]
            let mode = String::from("-");
            let certs = if f == "key.pem" {
                0
            } else {
                bundle::read_file(&p)?.len()
            };
            println!("   {}  mode {mode}  {} certificate(s)", p.display(), certs);
        }
    }
    println!(
        "   the CA key: {} (only on ps1)",
        fleet.join("ps1.acme.example/ca/key.pem").display()
    );

    println!("\n== 5. Expiry warnings (V3) as time passes");
    for (label, at) in [
        ("today", start),
        ("4 years 10 months on", "2031-11-01T00:00:00Z".parse()?),
        ("5 years 1 month on", "2032-02-01T00:00:00Z".parse()?),
    ] {
        clock.set(at);
        let w = zone.warnings(Duration::from_secs(90 * 86_400))?;
        println!("   {label} ({at}): {} warning(s)", w.len());
        if !w.is_empty() {
            println!("     {WARNING_HEADER}");
            for x in w.iter().take(3) {
                println!("     - {}", x.message);
            }
        }
    }
    clock.set(start.plus(Duration::from_secs(3600)));

    println!("\n== 6. A refused command changes nothing");
    let before = zone.dump()?;
    let mut bad = NewServer::new(fqdn("sat2.acme.example")?, ServerRole::AuthSatellite);
    bad.parent = Some(fqdn("content1.acme.example")?);
    match zone.add_server(bad) {
        Ok(_) => return Err("a satellite under a content server must be refused".into()),
        Err(e) => println!("   refused: {e}"),
    }
    assert_eq!(
        before,
        zone.dump()?,
        "a refused command must leave the store as it was"
    );
    println!(
        "   store unchanged: {} records",
        before.as_object().map_or(0, |m| m.len())
    );

    remint_ca(&zone, &clock, &fleet)?;

    println!("\n== 9. The audit log (S6)");
    let report = zone.verify_audit()?;
    println!(
        "   {} entries, hash chain intact, head {}",
        report.entries,
        &report.head[..16]
    );
    println!(
        "\nDone. Store: {}  Fleet: {}",
        store_path.display(),
        fleet.display()
    );
    println!(
        "Try: cargo run --example zonectl -- --store {} --root {} server list",
        store_path.display(),
        fleet.display()
    );
    Ok(())
}

fn summary(v: &OpView) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for (_, status) in v.members() {
        *counts.entry(status.name()).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    format!("state {}; members: {}", v.state, parts.join(", "))
}

/// Refreshes the whole fleet until nothing changes (bounded), as agents would over time.
fn drive(zone: &Zone<'_>, opts: &RefreshOptions) -> Result<OpView, Error> {
    let mut last = None;
    for _ in 0..4 {
        zone.refresh(&[], opts, |_, _| {})?;
        let v = zone.op_show()?;
        if last.as_ref() == Some(&v) {
            break;
        }
        last = Some(v);
    }
    Ok(last.ok_or("no operation")?)
}

fn remint_ca(zone: &Zone<'_>, clock: &ManualClock, fleet: &std::path::Path) -> Result<(), Error> {
    println!("\n== 7. Remint CA, staged (RC1, O1-O12)");
    let now = clock.now();
    let activation = now.plus(Duration::from_secs(7 * 86_400));
    let v = zone.start_remint_ca(
        RemintCaRequest::new(ActivationRequest::At(activation))
            .with_key(KeySpec::P256)
            .with_validity(5.try_into()?)
            .with_include_dns(true)
            .with_update_name("Remint CA 2027"),
    )?;
    println!(
        "   started: update {:?}, activation {}, cancel until {}",
        v.update_name,
        v.activation,
        v.cancel_deadline.map_or("-".into(), |t| t.to_string())
    );
    println!(
        "   the future CA is on {} only; recovery bundle on {:?}",
        v.recovery_available_on[0], v.recovery_available_on
    );
    println!(
        "   replication (O3): {}",
        v.replication
            .iter()
            .map(|r| format!("{} {}", r.server, r.status))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let second = zone.start_remint_ca(
        RemintCaRequest::new(ActivationRequest::At(activation))
            .with_key(KeySpec::P256)
            .with_validity(5.try_into()?),
    );
    if let Err(e) = second {
        println!("   a second operation is refused (O1): {e}");
    }

    clock.set(now.plus(Duration::from_secs(3600)));
    let offline = RefreshOptions::new().offline(["laptop-007"]);
    let mut flaky = offline.clone();
    flaky.fail.insert("laptop-013".into());
    let v = drive(zone, &flaky)?;
    println!("   after the fleet refreshed: {}", summary(&v));
    let failed = v
        .devices
        .iter()
        .find(|d| d.status == zonepki::view::UpdateStatus::Failed);
    if let Some(d) = failed {
        println!(
            "   {} failed: {}",
            d.name,
            d.reason.as_deref().unwrap_or("-")
        );
    }
    for s in &v.servers {
        println!("   {:28} {}", s.fqdn, s.certificate_status);
    }
    zone.redeploy(&[])?;
    let v = drive(zone, &offline)?;
    println!("   after redeploy (O5): {}", summary(&v));
    let repo = fleet.join("ps2.acme.example/remint-repo");
    println!(
        "   staged on ps2 (A1): {}",
        ["server.cer", "ca.cert"]
            .iter()
            .filter(|f| repo.join(f).exists())
            .copied()
            .collect::<Vec<_>>()
            .join(", ")
    );
    let plan = zone.plan(activation)?;
    println!(
        "   plan for {} (B3): {} member(s) would be stranded: {}",
        plan.at,
        plan.stranded.len(),
        plan.members
            .iter()
            .filter(|m| !m.communicates)
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    clock.set(activation.minus(Duration::from_secs(300)));
    if let Err(e) = zone.cancel() {
        println!("   five minutes before activation: {e}");
    }

    println!("\n== 8. Activation (O8), the bridge (B1) and recovery (O6)");
    clock.set(activation);
    let v = drive(zone, &offline)?;
    println!("   at {}: {}", activation, summary(&v));
    println!("   stranded: {:?}", v.stranded);
    for n in &v.notices {
        println!(
            "   notice for the application: {}",
            serde_json::to_string(n)?
        );
    }
    // laptop-007 missed the update and trusts only the old CA, yet it validates the servers:
    // they present the bridge (the new CA certified by the old one) in their chains.
    let laptop_trust = bundle::read_file(&fleet.join("laptop-007/current/trust.pem"))?;
    for server in ["ps1.acme.example", "sat1.branch.acme.example"] {
        let chain = bundle::read_file(&fleet.join(server).join("current/cert.pem"))?;
        let path = verify_chain(&chain[0], &chain[1..], &laptop_trust, clock.now())?;
        println!(
            "   laptop-007 (old trust only) accepts {server}: {}",
            path.subjects().join(" <- ")
        );
    }
    let v = drive(zone, &RefreshOptions::default())?;
    println!(
        "   laptop-007 is back and takes the new trust with the bundle: {}",
        summary(&v)
    );
    let new_ca = zone.ca_certificate()?;
    for s in zone.servers()? {
        let chain = zone.server_chain(&s.fqdn.parse()?)?;
        let Some(leaf) = chain.first() else { continue };
        let leaf = zonepki::cert::Certificate::try_from(leaf)?;
        verify_chain(&leaf, &[], std::slice::from_ref(&new_ca), clock.now())?;
    }
    println!(
        "   every server certificate now chains to the new CA (SHA-256 {}...)",
        &new_ca.fingerprints().sha256.to_string()[..23]
    );
    let v = zone.baseline(false)?;
    println!("   {}", summary(&v));
    Ok(())
}
