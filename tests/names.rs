//! Member names and membership (issue 9 item 6, issue 10 item 6): device names fold like server
//! FQDNs, a Primary Server takes no parent, an IP literal is not a
//! server name, and a long FQDN gets a certificate (FQDN in the SAN, a CN within X.509's bound).
#![allow(clippy::unwrap_used)]

use zonepki::cert::Certificate;
use zonepki::chain::verify_chain;
use zonepki::clock::{ManualClock, Timestamp};
use zonepki::error::Error;
use zonepki::key::KeySpec;
use zonepki::service::{InitInternal, NewServer, ZoneService};
use zonepki::store::MemoryStore;
use zonepki::transport::LoopbackTransport;
use zonepki::transport::{Fleet, RefreshOptions};
use zonepki::zone::{Fqdn, ServerRole, ZoneError};

type Svc = ZoneService<MemoryStore, LoopbackTransport, ManualClock>;

fn zone() -> Svc {
    let now: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
    let svc = ZoneService::new(
        MemoryStore::new(),
        LoopbackTransport::in_memory(),
        ManualClock::new(now),
    );
    svc.init_internal(
        InitInternal::new(
            "Names",
            NewServer::new("ps1.names.example".parse().unwrap(), ServerRole::Primary),
        )
        .with_ca_key(KeySpec::P256)
        .with_validity(2.try_into().unwrap()),
    )
    .unwrap();
    svc
}

#[test]
fn device_names_are_case_insensitive() {
    let svc = zone();
    let before = svc.dump().unwrap();
    // One command naming both spellings is refused whole.
    let err = svc
        .add_devices(&["D1".into(), "d1".into()], "24.4")
        .unwrap_err();
    assert!(
        matches!(err, Error::Zone(ZoneError::DuplicateMember { .. })),
        "{err}"
    );
    assert_eq!(
        svc.dump().unwrap(),
        before,
        "a refused command changes nothing"
    );

    svc.add_devices(&["Laptop-7".into()], "24.4").unwrap();
    let names: Vec<String> = svc.devices().unwrap().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["laptop-7"], "stored folded, as server FQDNs are");
    let err = svc.add_devices(&["LAPTOP-7".into()], "24.4").unwrap_err();
    assert!(
        matches!(err, Error::Zone(ZoneError::DuplicateMember { .. })),
        "{err}"
    );
    // Any spelling finds the member.
    let out = svc
        .refresh(&["LaPtOp-7".into()], &RefreshOptions::default(), |_, _| {})
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].name, "laptop-7");
}

#[test]
fn an_ip_literal_is_refused_as_a_server_name() {
    let err = "192.0.2.10".parse::<Fqdn>().unwrap_err().to_string();
    assert!(err.contains("IP address, not a DNS name"), "{err}");
    // Nor as an additional DNS name of a server.
    let svc = zone();
    let before = svc.dump().unwrap();
    let mut s = NewServer::new("ps2.names.example".parse().unwrap(), ServerRole::Primary);
    s.dns_names = vec!["192.0.2.11".into()];
    let err = svc.add_server(s).unwrap_err().to_string();
    assert!(err.contains("IP address"), "{err}");
    assert_eq!(svc.dump().unwrap(), before);
}

#[test]
fn a_73_character_fqdn_gets_a_certificate() {
    let svc = zone();
    let fqdn = format!("{}.{}.names.example", "h".repeat(40), "s".repeat(18));
    assert_eq!(fqdn.len(), 73);
    let view = svc
        .add_server(NewServer::new(fqdn.parse().unwrap(), ServerRole::Primary))
        .unwrap();
    assert_eq!(view.status, "active");
    assert_eq!(view.issued_to.as_deref(), Some("h".repeat(40).as_str()));
    let chain = svc.server_chain(&fqdn.parse().unwrap()).unwrap();
    let leaf = Certificate::try_from(&chain[0]).unwrap();
    assert_eq!(
        leaf.dns_names().unwrap(),
        vec![fqdn.clone()],
        "the FQDN is in the SAN"
    );
    let ca = svc.ca_certificate().unwrap();
    verify_chain(&leaf, &[], &[ca], "2027-01-02T00:00:00Z".parse().unwrap()).unwrap();
}

#[test]
fn a_primary_server_with_a_parent_is_refused_for_what_it_is() {
    // Issue 10 item 6: this said "ps1 is not a Primary Server", while ps1 is one; the fault
    // is that a Primary Server takes no parent (Z1).
    let svc = zone();
    let before = svc.dump().unwrap();
    let mut s = NewServer::new("ps2.names.example".parse().unwrap(), ServerRole::Primary);
    s.parent = Some("ps1.names.example".parse().unwrap());
    let err = svc.add_server(s).unwrap_err();
    assert!(
        matches!(err, Error::Zone(ZoneError::PrimaryTakesNoParent { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("takes no parent"), "{err}");
    assert_eq!(svc.dump().unwrap(), before);
}
