//! x509-limbo conformance of the chain validator (REQUIREMENTS.md S7; docs/conformance.md).
//!
//! Reads `tests/data/conformance/limbo-must-pass.json` and `limbo-optional.json` (vendored from
//! x509-limbo, Apache-2.0: see the README and licence there), validates every case's peer certificate with [`verify_chain_with`], prints
//! one line per mismatch and the two scores, and fails on any must-pass mismatch (optional
//! mismatches are reported, not fatal: docs/conformance.md says which ones are deliberate).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use zonepki::cert::Certificate;
use zonepki::chain::{Limits, verify_chain_with};
use zonepki::clock::Timestamp;

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/conformance")
}

/// Parses one PEM certificate.
fn parse_pem(pem: &str) -> Result<Certificate, String> {
    let (label, der) = pem_rfc7468::decode_vec(pem.trim().as_bytes()).map_err(|e| e.to_string())?;
    if label != "CERTIFICATE" {
        return Err(format!("PEM label {label:?}"));
    }
    Certificate::from_der(&der).map_err(|e| e.to_string())
}

/// One case's outcome: `Ok(())` when the result is as expected, else a one-line explanation.
struct Outcome {
    id: String,
    mismatch: Option<String>,
    elapsed: Duration,
}

fn run_case(case: &Value, honour_depth: bool) -> Outcome {
    let id = case["id"]
        .as_str()
        .expect("every case has an id")
        .to_string();
    let expected = case["expected_result"]
        .as_str()
        .expect("every case has an expected result");
    let want_success = match expected {
        "SUCCESS" => true,
        "FAILURE" => false,
        other => panic!("{id}: unknown expected_result {other:?}"),
    };
    let pems = |field: &str| -> Vec<String> {
        case[field]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Certificates the crate cannot parse are left out of the trust and intermediate sets (a
    // real import would refuse the file; here the rest of the case still says something).
    let anchors: Vec<Certificate> = pems("trusted_certs")
        .iter()
        .filter_map(|p| parse_pem(p).ok())
        .collect();
    let intermediates: Vec<Certificate> = pems("untrusted_intermediates")
        .iter()
        .filter_map(|p| parse_pem(p).ok())
        .collect();
    let at = match case["validation_time"].as_str() {
        Some(t) => t
            .parse::<Timestamp>()
            .unwrap_or_else(|e| panic!("{id}: {e}")),
        None => Timestamp::now_utc(),
    };
    let mut limits = Limits::default();
    if honour_depth && let Some(depth) = case["max_chain_depth"].as_u64() {
        limits.max_depth = usize::try_from(depth).expect("a small depth");
    }
    let start = Instant::now();
    let result = match parse_pem(case["peer_certificate"].as_str().unwrap_or_default()) {
        Ok(leaf) => verify_chain_with(&leaf, &intermediates, &anchors, at, limits)
            .map(|chain| chain.subjects().join(" <- "))
            .map_err(|e| e.to_string()),
        Err(e) => Err(format!("peer certificate does not parse: {e}")),
    };
    let elapsed = start.elapsed();
    if std::env::var_os("LIMBO_VERBOSE").is_some() {
        println!("{id} [{expected}] {:?}: {result:?}", start.elapsed());
    }
    let mismatch = match (&result, want_success) {
        (Ok(_), true) | (Err(_), false) => None,
        (Ok(path), false) => Some(format!("expected FAILURE, got SUCCESS: {path}")),
        (Err(e), true) => Some(format!("expected SUCCESS, got: {e}")),
    };
    Outcome {
        id,
        mismatch,
        elapsed,
    }
}

/// Runs a file; returns (passed, total, outcomes).
fn run_file(name: &str, honour_depth: bool) -> (usize, usize, Vec<Outcome>) {
    let path = conformance_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).expect("the conformance file is JSON");
    assert_eq!(doc["version"], 1, "{name}: unknown format version");
    let cases = doc["testcases"].as_array().expect("testcases is an array");
    let outcomes: Vec<Outcome> = cases.iter().map(|c| run_case(c, honour_depth)).collect();
    let passed = outcomes.iter().filter(|o| o.mismatch.is_none()).count();
    (passed, cases.len(), outcomes)
}

#[test]
fn limbo_conformance() {
    // The must-pass file has one max_chain_depth (255, on a cycle case); the README says only
    // the optional depth cases set it for the validator.
    let (must_passed, must_total, must) = run_file("limbo-must-pass.json", false);
    let (opt_passed, opt_total, optional) = run_file("limbo-optional.json", true);
    for o in &must {
        if let Some(m) = &o.mismatch {
            println!("MUST-PASS MISMATCH {}: {m}", o.id);
        }
    }
    for o in &optional {
        if let Some(m) = &o.mismatch {
            println!("optional mismatch {}: {m}", o.id);
        }
    }
    // For information only: hostile cases are bounded by the validator's work budget
    // (`Limits`), which tests/chain.rs asserts by count; no test here asserts on time.
    let slowest = must.iter().chain(&optional).max_by_key(|o| o.elapsed);
    if let Some(o) = slowest {
        println!("slowest case: {} ({:?})", o.id, o.elapsed);
    }
    println!("must-pass: {must_passed}/{must_total}, optional: {opt_passed}/{opt_total}");
    assert_eq!(
        must_passed, must_total,
        "every must-pass case must give the expected result"
    );
}
