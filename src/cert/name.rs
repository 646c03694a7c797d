//! Distinguished name matching for chaining (RFC 5280 7.1, with RFC 4518 string preparation).
//!
//! A CA that renews its certificate may re-encode its own subject (a `PrintableString` common
//! name becomes a `UTF8String`, a tool upper-cases the organisation, an administrator adds a
//! trailing space), while the certificates it issued earlier keep the old encoding in their
//! issuer field. RFC 5280 7.1 says such names still match. [`names_match`] decides it wherever a
//! name is compared for chaining: path building (issuer candidates, loop detection, self-issued
//! certificates) and directoryName constraints in [`crate::chain`],
//! [`Certificate::is_self_signed`](crate::cert::Certificate::is_self_signed), the service's
//! lookup of the certificates a retired CA issued (B7) and the agent's check that a bridge
//! certificate certifies the new CA (B1). Where the crate issues a certificate, it copies the
//! issuer's subject exactly (RFC 5280 4.1.2.4), so its own chains match byte for byte.

use der::asn1::ObjectIdentifier;
use der::{Encode, Tag, Tagged};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::Name;

/// Whether two distinguished names match under RFC 5280 7.1.
///
/// Exact equality (the same DER) is the fast path. Otherwise the names match when they have
/// the same number of RDNs and, RDN by RDN in order, the same multiset of attributes, each
/// attribute compared by its type OID (exactly) and its value after the preparation below. A
/// multi-valued RDN (`CN=a+OU=b`) is compared as a set, whatever the order of its values.
///
/// # What is folded
/// A value whose ASN.1 type is one of these string types is decoded to Unicode first, so the
/// encodings compare alike: `PrintableString` and `UTF8String` (which RFC 5280 7.1 requires),
/// `IA5String` and `VisibleString` (ASCII), `BMPString` (UCS-2, big-endian) and
/// `TeletexString`, read as ISO 8859-1 (Latin-1) as OpenSSL and Go do, since RFC 4518 2.1
/// leaves its transcoding to the implementation. (`UniversalString` never gets here: the `der`
/// crate cannot decode its tag, so a certificate whose name holds one does not parse.) Then the
/// steps of RFC 4518 2.2 and 2.6.1 apply, for the caseIgnoreMatch rule:
/// - mapped to nothing: U+00AD soft hyphen, U+1806, U+034F, U+180B-180D, U+FE00-FE0F, U+FFFC,
///   U+200B and the control and format characters RFC 4518 2.2 lists (U+0000-0008,
///   U+000E-001F, U+007F-0084, U+0086-009F, U+061C, U+180E, U+200C-200F, U+202A-202E,
///   U+2060-2063, U+206A-206F, U+FEFF, U+FFF9-FFFB, U+1D173-1D17A, U+E0001, U+E0020-E007F);
/// - mapped to a space: U+0009-000D, U+0085 and the separators U+00A0, U+1680, U+2000-200A,
///   U+2028, U+2029, U+202F, U+205F, U+3000;
/// - case folded with Unicode lower-casing (`char::to_lowercase`);
/// - insignificant spaces: leading and trailing spaces removed, every inner run of spaces
///   reduced to one.
///
/// # What is not folded
/// - No NFKC normalisation (RFC 4518 2.3): a precomposed `é` and `e` + U+0301 differ, and the
///   full case folding of RFC 3454 table B.2 is not applied (`ß` does not match `ss`). This
///   crate carries no Unicode normalisation tables; both forms are rare in CA names, and a
///   mismatch only means a renewed CA is not recognised (an error), never a false link.
/// - The prohibited code points of RFC 4518 2.4 are not refused: they are compared as they
///   are.
/// - A value of any other ASN.1 type, or a string value that does not decode (invalid UTF-8,
///   an odd-length `BMPString`, a non-ASCII byte in a `PrintableString`, ...), compares by its
///   tag and bytes only.
/// - Attribute types are never folded: `CN` and `OU` with the same value differ, and the RDN
///   structure must be the same (`CN=a+OU=b` is not `CN=a,OU=b`).
///
/// A false match cannot forge a link: the issuer's signature is still verified. Matching only
/// decides which certificates are tried as issuers, and which are self-issued.
pub fn names_match(a: &Name, b: &Name) -> bool {
    a == b || NameKey::of(a) == NameKey::of(b)
}

/// A name in the comparable form [`names_match`] uses; computed once per certificate when the
/// same name is compared many times (path building).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct NameKey(Vec<Vec<(ObjectIdentifier, Value)>>);

/// One attribute value, prepared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Value {
    /// A string value after RFC 4518 preparation.
    Text(String),
    /// Anything else: the whole DER encoding (tag, length, content), compared exactly.
    Raw(Vec<u8>),
}

impl NameKey {
    /// Whether `prefix`'s RDNs are this name's first RDNs, matched as [`names_match`] matches
    /// (a directoryName subtree of RFC 5280 4.2.1.10).
    pub(crate) fn starts_with(&self, prefix: &NameKey) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// The prepared form of `name`: each RDN's attributes sorted, so multi-valued RDNs compare
    /// as multisets.
    pub(crate) fn of(name: &Name) -> Self {
        NameKey(
            name.iter_rdn()
                .map(|rdn| {
                    let mut atvs: Vec<(ObjectIdentifier, Value)> =
                        rdn.iter().map(|atv| (atv.oid, prepare(atv))).collect();
                    atvs.sort();
                    atvs
                })
                .collect(),
        )
    }
}

fn prepare(atv: &AttributeTypeAndValue) -> Value {
    let tag = atv.value.tag();
    let bytes = atv.value.value();
    match transcode(tag, bytes) {
        Some(text) => Value::Text(fold(&text)),
        None => Value::Raw(
            atv.value
                .to_der()
                .expect("a decoded attribute value re-encodes"),
        ),
    }
}

/// RFC 4518 2.1: the value as Unicode, or `None` for non-string types and undecodable values.
fn transcode(tag: Tag, bytes: &[u8]) -> Option<String> {
    match tag {
        Tag::Utf8String => std::str::from_utf8(bytes).ok().map(str::to_owned),
        Tag::PrintableString | Tag::Ia5String | Tag::VisibleString => bytes
            .is_ascii()
            .then(|| bytes.iter().map(|&b| char::from(b)).collect()),
        // ISO 8859-1: every byte is the code point of the same number.
        Tag::TeletexString => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            if !bytes.len().is_multiple_of(2) {
                return None;
            }
            bytes
                .chunks_exact(2)
                .map(|c| char::from_u32(u32::from(u16::from_be_bytes([c[0], c[1]]))))
                .collect()
        }
        _ => None,
    }
}

/// RFC 4518 2.2 (map), case folding, and 2.6.1 (insignificant space handling).
fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        match map(c) {
            Mapped::Nothing => {}
            Mapped::Space => pending_space = !out.is_empty(),
            Mapped::Char(c) => {
                if pending_space {
                    out.push(' ');
                    pending_space = false;
                }
                out.extend(c.to_lowercase());
            }
        }
    }
    out
}

enum Mapped {
    Nothing,
    Space,
    Char(char),
}

/// RFC 4518 2.2, the complete lists of code points mapped to nothing and to SPACE.
fn map(c: char) -> Mapped {
    match u32::from(c) {
        0x00AD | 0x1806 | 0x034F | 0x180B..=0x180D | 0xFE00..=0xFE0F | 0xFFFC | 0x200B => {
            Mapped::Nothing
        }
        0x0009..=0x000D | 0x0085 => Mapped::Space,
        0x0000..=0x0008
        | 0x000E..=0x001F
        | 0x007F..=0x0084
        | 0x0086..=0x009F
        | 0x061C
        | 0x180E
        | 0x200C..=0x200F
        | 0x202A..=0x202E
        | 0x2060..=0x2063
        | 0x206A..=0x206F
        | 0xFEFF
        | 0xFFF9..=0xFFFB
        | 0x1D173..=0x1D17A
        | 0xE0001
        | 0xE0020..=0xE007F => Mapped::Nothing,
        0x0020 | 0x00A0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000 => {
            Mapped::Space
        }
        _ => Mapped::Char(c),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use der::Decode;
    use der::asn1::{Any, SetOfVec};
    use x509_cert::name::{RdnSequence, RelativeDistinguishedName};

    const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
    const O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
    const OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");

    fn atv(oid: ObjectIdentifier, tag: Tag, bytes: &[u8]) -> AttributeTypeAndValue {
        AttributeTypeAndValue {
            oid,
            value: Any::new(tag, bytes.to_vec()).unwrap(),
        }
    }

    /// A name from RDNs of (type, tag, value bytes).
    fn name(rdns: &[&[(ObjectIdentifier, Tag, &[u8])]]) -> Name {
        let mut seq = RdnSequence::default();
        for rdn in rdns {
            let mut set = SetOfVec::new();
            for (oid, tag, bytes) in *rdn {
                set.insert(atv(*oid, *tag, bytes)).unwrap();
            }
            seq.push(RelativeDistinguishedName::try_from(set.into_vec()).unwrap());
        }
        Name::from_der(&seq.to_der().unwrap()).unwrap()
    }

    fn cn(tag: Tag, value: &[u8]) -> Name {
        name(&[&[(CN, tag, value)], &[(O, Tag::Utf8String, b"Example")]])
    }

    fn bmp(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }

    #[test]
    fn string_types_case_and_spaces_fold() {
        let base = cn(Tag::PrintableString, b"Zone Root CA");
        for other in [
            cn(Tag::Utf8String, b"Zone Root CA"),
            cn(Tag::Utf8String, b"zone root ca"),
            cn(Tag::PrintableString, b"  ZONE   Root\tCA "),
            cn(Tag::Ia5String, b"Zone Root CA"),
            cn(Tag::VisibleString, b"Zone Root CA"),
            cn(Tag::TeletexString, b"Zone Root CA"),
            cn(Tag::BmpString, &bmp("Zone Root CA")),
            cn(
                Tag::Utf8String,
                "Zone\u{00A0}Root\u{00AD} CA\u{200B}".as_bytes(),
            ),
        ] {
            assert_ne!(base, other);
            assert!(names_match(&base, &other), "{other}");
            assert!(names_match(&other, &base), "{other}");
        }
        // Non-ASCII: Unicode lower-casing, Latin-1 Teletex.
        let e = cn(Tag::Utf8String, "ÉCOLE".as_bytes());
        assert!(names_match(&e, &cn(Tag::BmpString, &bmp("école"))));
        assert!(names_match(&e, &cn(Tag::TeletexString, b"\xe9cole")));
    }

    #[test]
    fn different_names_stay_different() {
        let base = cn(Tag::Utf8String, b"Zone Root CA");
        for other in [
            cn(Tag::Utf8String, b"Zone Root CA 2"),
            cn(Tag::Utf8String, b"ZoneRoot CA"),
            cn(Tag::Utf8String, b"Zone-Root CA"),
            // Same value, other attribute type.
            name(&[
                &[(OU, Tag::Utf8String, b"Zone Root CA")],
                &[(O, Tag::Utf8String, b"Example")],
            ]),
            // Same attributes, other RDN structure or order.
            name(&[&[
                (CN, Tag::Utf8String, b"Zone Root CA"),
                (O, Tag::Utf8String, b"Example"),
            ]]),
            name(&[
                &[(O, Tag::Utf8String, b"Example")],
                &[(CN, Tag::Utf8String, b"Zone Root CA")],
            ]),
            name(&[&[(CN, Tag::Utf8String, b"Zone Root CA")]]),
            // A non-string value is compared exactly.
            cn(Tag::OctetString, b"Zone Root CA"),
            // Not folded: NFKC (e + combining acute is not é).
        ] {
            assert!(!names_match(&base, &other), "{other}");
            assert!(!names_match(&other, &base), "{other}");
        }
        let nfc = cn(Tag::Utf8String, "é".as_bytes());
        let nfd = cn(Tag::Utf8String, "e\u{301}".as_bytes());
        assert!(
            !names_match(&nfc, &nfd),
            "no NFKC normalisation (documented)"
        );
    }

    #[test]
    fn multi_valued_rdns_are_sets() {
        let a = name(&[&[
            (CN, Tag::PrintableString, b"Int"),
            (OU, Tag::Utf8String, b"PKI"),
        ]]);
        let b = name(&[&[
            (OU, Tag::PrintableString, b"pki"),
            (CN, Tag::Utf8String, b"INT"),
        ]]);
        assert!(names_match(&a, &b));
        // Multisets: {x, x} is not {x, y}.
        let c = name(&[&[
            (OU, Tag::Utf8String, b"x"),
            (OU, Tag::PrintableString, b"X"),
        ]]);
        let d = name(&[&[
            (OU, Tag::Utf8String, b"x"),
            (OU, Tag::PrintableString, b"Y"),
        ]]);
        assert!(!names_match(&c, &d));
    }

    proptest::proptest! {
        /// Any printable ASCII value matches itself re-encoded as UTF8String or BMPString, in
        /// another case, with spaces added around and inside runs; changing one letter or digit
        /// (not only its case) breaks the match.
        #[test]
        fn reencoding_matches_and_a_changed_character_does_not(
            value in "[A-Za-z0-9][A-Za-z0-9 .-]{0,30}",
            pad in 1usize..4,
            pick in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let base = cn(Tag::PrintableString, value.as_bytes());
            let spaced = format!(
                "{}{}{}",
                " ".repeat(pad),
                value.to_uppercase().replace(' ', &" ".repeat(pad)),
                " ".repeat(pad),
            );
            proptest::prop_assert!(names_match(&base, &cn(Tag::Utf8String, spaced.as_bytes())));
            proptest::prop_assert!(names_match(&base, &cn(Tag::BmpString, &bmp(&value.to_lowercase()))));
            let positions: Vec<usize> = value
                .char_indices()
                .filter(|(_, c)| c.is_ascii_alphanumeric())
                .map(|(i, _)| i)
                .collect();
            let i = positions[pick.index(positions.len())];
            let mut changed = value.clone().into_bytes();
            changed[i] = if changed[i].eq_ignore_ascii_case(&b'q') { b'z' } else { b'q' };
            proptest::prop_assert!(!names_match(&base, &cn(Tag::Utf8String, &changed)));
        }
    }

    #[test]
    fn undecodable_strings_compare_exactly() {
        let bad = cn(Tag::Utf8String, b"Zone \xff");
        assert!(names_match(&bad, &bad.clone()));
        assert!(!names_match(&bad, &cn(Tag::Utf8String, b"zone \xff")));
        assert!(!names_match(
            &cn(Tag::BmpString, b"\x00Z\x00"),
            &cn(Tag::Utf8String, b"Z")
        ));
        // Only spaces, and empty, fold alike (RFC 4518 2.6.1).
        assert!(names_match(
            &cn(Tag::Utf8String, b"   "),
            &cn(Tag::Utf8String, b"")
        ));
    }
}
