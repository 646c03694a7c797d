//! One `protocol` fuzz input (N2): both message parsers on arbitrary bytes must not panic, and
//! whatever they accept must encode and parse back to the same message.

/// Runs one input.
pub fn run(data: &[u8]) {
    use zonepki::protocol::{decode_agent_message, decode_zone_answer, encode};
    if let Ok(m) = decode_agent_message(data) {
        let again = decode_agent_message(&encode(&m)).expect("an accepted message re-parses");
        assert_eq!(again, m, "an agent message survives a round trip");
    }
    if let Ok(a) = decode_zone_answer(data) {
        let again = decode_zone_answer(&encode(&a)).expect("an accepted answer re-parses");
        assert_eq!(again, a, "a zone answer survives a round trip");
    }
}
