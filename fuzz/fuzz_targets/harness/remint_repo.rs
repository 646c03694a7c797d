//! One `remint_repo` fuzz input (CE2 manual mode): a remint repository of up to 3 named files,
//! read with `agent::read_manual_material`, which must not panic and must keep its promises.
//!
//! Input format (what the seeds in `fuzz/corpus/remint_repo/` encode):
//!
//! ```text
//! byte 0          names: bits 0-2 file 1, bits 3-5 file 2 (index into NAMES),
//!                        bits 6-7 file 3 (index into THIRD)
//! u16 BE, bytes   file 1 (its length, then its content)
//! u16 BE, bytes   file 2
//! rest            file 3 (only when something is left)
//! ```
//!
//! A length beyond the input takes what is left; when the input ends early there are fewer
//! files (never files with no name).

use zonepki::agent::{MANUAL_CHAIN_FILES, ManualError, read_manual_material};
use zonepki::cert::bundle;
use zonepki::key::Signer;

/// Names of files 1 and 2: the six chain names CE2 allows, the key, and a file the agent
/// ignores.
pub const NAMES: [&str; 8] = [
    "server.der",
    "server.cer",
    "server.crt",
    "server.p7b",
    "server.pem",
    "server.cert",
    "key.der",
    "other.txt",
];

/// Names of file 3.
pub const THIRD: [&str; 4] = ["key.der", "server.pem", "server.der", "other.txt"];

/// Splits an input into named files (see the module documentation).
pub fn split(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let Some((&names, mut rest)) = data.split_first() else {
        return Vec::new();
    };
    let name = |i: usize| match i {
        0 => NAMES[usize::from(names & 7)],
        1 => NAMES[usize::from((names >> 3) & 7)],
        _ => THIRD[usize::from(names >> 6)],
    };
    let mut files = Vec::new();
    for i in 0..3 {
        if rest.is_empty() {
            break;
        }
        let content = if i < 2 && rest.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let body = &rest[2..];
            let (content, tail) = body.split_at(len.min(body.len()));
            rest = tail;
            content
        } else {
            std::mem::take(&mut rest)
        };
        files.push((name(i).to_string(), content.to_vec()));
    }
    files
}

/// The inverse of [`split`], to make seeds: `files` as (name index, content), file 3's index
/// into [`THIRD`].
#[allow(dead_code)] // used by tests/fuzz_corpus_remint_repo.rs, not by the fuzz target
pub fn join(files: &[(usize, &[u8])]) -> Vec<u8> {
    let mut names = 0u8;
    let mut out = vec![0];
    for (i, (n, content)) in files.iter().enumerate() {
        let shift = [0, 3, 6][i];
        names |= u8::try_from(*n).expect("a name index") << shift;
        if i < 2 {
            let len = u16::try_from(content.len()).expect("a seed file under 64 KiB");
            out.extend(len.to_be_bytes());
        }
        out.extend_from_slice(content);
    }
    out[0] = names;
    out
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let files = split(data);
    let result = read_manual_material(&files);
    let chain_files: Vec<&(String, Vec<u8>)> = files
        .iter()
        .filter(|(n, _)| MANUAL_CHAIN_FILES.contains(&n.as_str()))
        .collect();
    let key_file = files.iter().find(|(n, _)| n == "key.der");
    match &result {
        Ok(m) => {
            let [(_, chain_bytes)] = chain_files.as_slice() else {
                panic!("accepted {} chain files", chain_files.len());
            };
            assert!(key_file.is_some(), "accepted without key.der");
            // The chain is the file's certificates, the key's own first.
            let mut read: Vec<Vec<u8>> = bundle::read_certificates(chain_bytes)
                .expect("an accepted chain file reads")
                .iter()
                .map(|c| c.der().as_bytes().to_vec())
                .collect();
            let mut got: Vec<Vec<u8>> = m
                .chain
                .iter()
                .map(|c| c.der().as_bytes().to_vec())
                .collect();
            assert_eq!(
                &m.key.public_key_info(),
                m.chain[0].public_key(),
                "the first certificate is not the key's"
            );
            read.sort();
            got.sort();
            assert!(read == got, "the chain is not the file's certificates");
            assert!(format!("{m:?}").contains("[secret key elided]"));
        }
        Err(e) => {
            match e {
                ManualError::MissingChain => assert!(chain_files.is_empty()),
                ManualError::SeveralChains(_) => assert!(chain_files.len() > 1),
                ManualError::MissingKey => assert!(key_file.is_none()),
                _ => assert_eq!(chain_files.len(), 1, "{e:?}"),
            }
            // The reason never echoes the key file: no base64 line of a PEM secret.
            let shown = e.to_string();
            let base64 = |b: u8| b.is_ascii_alphanumeric() || b"+/=".contains(&b);
            if let Some((_, key)) = key_file
                && let Ok(text) = std::str::from_utf8(key)
            {
                for line in text.lines().map(str::trim) {
                    if line.len() >= 24 && line.bytes().all(base64) {
                        assert!(!shown.contains(line), "the key file echoed: {shown}");
                    }
                }
            }
        }
    }
    // Pure: the same files give the same answer.
    let again = read_manual_material(&files);
    match (&result, &again) {
        (Ok(a), Ok(b)) => {
            assert!(a.chain == b.chain, "a second read gave another chain");
            assert!(a.key.public_key_info() == b.key.public_key_info());
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("a second read gave another verdict"),
    }
}
