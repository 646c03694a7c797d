//! The web console's server time with 100,000 devices (issue 13 item 5): every page and
//! partial renders in < 200 ms (median), and the device table pages.
//!
//! The zone (one Primary Server holding the CA, 100,000 devices, a Remint CA running so every
//! device has an update status) is in a redb store; the console is driven through
//! `Console::respond`, zoned's own handler, without the network: what is measured is the
//! server's time for a page, the Argon2id sign-in excluded (it is done once in the setup).
//!
//! `cargo bench --bench console` (`CONSOLE_DEVICES=N` for another size).

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use zonepki::clock::{SystemClock, Timestamp};
use zonepki::key::KeySpec;
use zonepki::net::console::{Console, ConsolePassword, ConsoleRequest};
use zonepki::ops::ActivationRequest;
use zonepki::service::{InitInternal, NewServer, RemintCaRequest, ZoneService};
use zonepki::store::RedbStore;
use zonepki::transport::LoopbackTransport;
use zonepki::view::{DEFAULT_WARNING_WINDOW, DeviceQuery};
use zonepki::zone::ServerRole;

const PASSWORD: &str = "a console password for the bench";
const HOST: &str = "ps1.zone.example:8443";

fn request(
    method: Method,
    path: &str,
    query: Option<&str>,
    cookie: Option<&str>,
    body: &str,
) -> ConsoleRequest {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static(HOST));
    headers.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://ps1.zone.example:8443"),
    );
    if let Some(c) = cookie {
        headers.insert(header::COOKIE, HeaderValue::from_str(c).unwrap());
    }
    ConsoleRequest {
        method,
        path: path.into(),
        query: query.map(str::to_string),
        headers,
        body: Bytes::from(body.to_string()),
        peer: IpAddr::from([127, 0, 0, 1]),
    }
}

fn console(c: &mut Criterion) {
    let devices: usize = std::env::var("CONSOLE_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let svc = ZoneService::new(
        RedbStore::create(dir.path().join("zone.redb")).unwrap(),
        LoopbackTransport::in_memory(),
        SystemClock,
    );
    svc.init_internal(
        InitInternal::new(
            "Bench Zone",
            NewServer::new("ps1.zone.example".parse().unwrap(), ServerRole::Primary),
        )
        .with_ca_key(KeySpec::P256),
    )
    .unwrap();
    let names: Vec<String> = (1..=devices).map(|i| format!("dev-{i}")).collect();
    for chunk in names.chunks(5_000) {
        svc.add_devices(chunk, "24.4").unwrap();
    }
    svc.start_remint_ca(RemintCaRequest::new(ActivationRequest::At(
        Timestamp::now_utc().plus(Duration::from_secs(7 * 24 * 3600)),
    )))
    .unwrap();

    let console = Console::new(ConsolePassword::new(PASSWORD).unwrap());
    let signin = console.respond(
        &svc,
        &request(
            Method::POST,
            "/console/signin",
            None,
            None,
            &format!("password={}", PASSWORD.replace(' ', "+")),
        ),
    );
    assert_eq!(signin.status(), StatusCode::SEE_OTHER);
    let cookie = signin.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();

    let mut g = c.benchmark_group(format!("console_{devices}_devices"));
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    for (name, query) in [
        ("page", None),
        ("page_devices_after_50000", Some("after=dev-50000")),
        (
            "page_devices_status_not_assigned",
            Some("status=not+assigned"),
        ),
        ("page_devices_status_failed_empty", Some("status=failed")),
    ] {
        let req = request(Method::GET, "/console", query, Some(&cookie), "");
        let r = console.respond(&svc, &req);
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        g.bench_function(name, |b| b.iter(|| black_box(console.respond(&svc, &req))));
    }
    let req = request(Method::GET, "/console/ca.pem", None, Some(&cookie), "");
    g.bench_function("ca_pem", |b| {
        b.iter(|| black_box(console.respond(&svc, &req)))
    });
    g.finish();

    // The same operation assigned, and half the devices taken out of it ("ignore device"):
    // 50,000 per-member update records, so a status filter has records to read.
    svc.assign_now().unwrap();
    for chunk in names[..devices / 2].chunks(5_000) {
        svc.ignore(chunk).unwrap();
    }
    let mut g = c.benchmark_group(format!("console_{devices}_devices_assigned"));
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    for (name, query) in [
        ("page", None),
        ("page_devices_status_ignored_half", Some("status=ignored")),
        ("page_devices_status_assigned_half", Some("status=assigned")),
        ("page_devices_status_failed_empty", Some("status=failed")),
    ] {
        let req = request(Method::GET, "/console", query, Some(&cookie), "");
        let r = console.respond(&svc, &req);
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        g.bench_function(name, |b| b.iter(|| black_box(console.respond(&svc, &req))));
    }
    // B3's plan for a time, and the CA pane's and server pane's downloads.
    let at = Timestamp::now_utc()
        .plus(Duration::from_secs(3600))
        .to_rfc3339();
    for (name, path, query) in [
        ("plan", "/console/plan", Some(format!("at={}", &at[..16]))),
        ("ca_pem", "/console/ca.pem", None),
        (
            "chain_pem",
            "/console/chain.pem",
            Some("server=ps1.zone.example".to_string()),
        ),
    ] {
        let req = request(Method::GET, path, query.as_deref(), Some(&cookie), "");
        let r = console.respond(&svc, &req);
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        g.bench_function(name, |b| b.iter(|| black_box(console.respond(&svc, &req))));
    }
    g.finish();

    // The library calls one page makes, each alone: where a page's time goes.
    let mut g = c.benchmark_group(format!("console_calls_{devices}_devices"));
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("op_show", |b| b.iter(|| black_box(svc.op_show().unwrap())));
    g.bench_function("op_summary", |b| {
        b.iter(|| black_box(svc.op_summary().unwrap()))
    });
    g.bench_function("device_list_page", |b| {
        b.iter(|| black_box(svc.device_list(&DeviceQuery::all().with_limit(50)).unwrap()))
    });
    g.bench_function("servers", |b| b.iter(|| black_box(svc.servers().unwrap())));
    g.bench_function("ca_view", |b| b.iter(|| black_box(svc.ca_view().unwrap())));
    g.bench_function("warnings", |b| {
        b.iter(|| black_box(svc.warnings(DEFAULT_WARNING_WINDOW).unwrap()))
    });
    g.bench_function("audit_recent_20", |b| {
        b.iter(|| black_box(svc.audit_recent(20).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, console);
criterion_main!(benches);
