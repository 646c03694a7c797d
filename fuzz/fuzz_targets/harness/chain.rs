//! One `chain` fuzz input: up to 4 DER pieces, each parsed with `Certificate::from_der`; the
//! first that parses is the leaf, the last the trust anchor (the leaf itself when it is the only
//! one), those between are intermediates. `verify_chain` must not panic; its verdict is ignored.

use zonepki::cert::Certificate;
use zonepki::clock::Timestamp;

/// Splits `data` into at most 4 pieces at DER TLV boundaries (a piece whose header does not
/// parse, and the 4th piece, take the rest), so concatenated certificate DERs are good seeds.
pub fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && pieces.len() < 4 {
        let n = if pieces.len() == 3 {
            rest.len()
        } else {
            tlv_len(rest).unwrap_or(rest.len())
        };
        let (piece, tail) = rest.split_at(n.clamp(1, rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// The length of the DER TLV at the start of `b` (definite lengths of up to 3 bytes).
fn tlv_len(b: &[u8]) -> Option<usize> {
    let first = usize::from(*b.get(1)?);
    if first < 0x80 {
        return Some(2 + first);
    }
    let n = first - 0x80;
    if !(1..=3).contains(&n) {
        return None;
    }
    let len = b
        .get(2..2 + n)?
        .iter()
        .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
    Some(2 + n + len)
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let certs: Vec<Certificate> = split(data)
        .into_iter()
        .filter_map(|p| Certificate::from_der(p).ok())
        .collect();
    let Some((leaf, rest)) = certs.split_first() else {
        return;
    };
    let (intermediates, anchors) = match rest.split_last() {
        Some((root, middle)) => (middle, std::slice::from_ref(root)),
        None => (&[][..], std::slice::from_ref(leaf)),
    };
    let at = Timestamp::from_unix(1_800_000_000).expect("1_800_000_000 is a valid time");
    let _ = zonepki::chain::verify_chain(leaf, intermediates, anchors, at);
}
