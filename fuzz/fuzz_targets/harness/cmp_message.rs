//! One `cmp_message` fuzz input (E1): the PKIMessage parser and the parsers of the bodies
//! zoned answers (CertReqMessages, CertConfirmContent, GenMsgContent, PKCS #10) must not panic
//! on arbitrary bytes, and must refuse more than `MAX_MESSAGE_BYTES`.

use zonepki::cmp::asn1;

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(msg) = asn1::PkiMessage::from_der(data) else {
        return;
    };
    assert!(data.len() <= asn1::MAX_MESSAGE_BYTES);
    let _ = msg.protected_part();
    let _ = msg.sender_kid();
    let _ = msg.header.implicit_confirm();
    let _ = asn1::cert_req_messages(&msg.body);
    let _ = asn1::cert_conf(&msg.body);
    let _ = asn1::general_message(&msg.body);
    let _ = zonepki::csr::VerifiedCsr::from_der(&msg.body);
}
