//! The subject of an X.509 certificate as an RFC 4514 string, for logs and
//! the audit trail. A small bounded DER walk instead of an X.509 crate: only
//! the subject Name is read, every length is checked, and anything
//! unexpected gives `None`, never a panic.

/// DER tags used here.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xA0;
const UTF8_STRING: u8 = 0x0C;
const PRINTABLE_STRING: u8 = 0x13;
const TELETEX_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const BMP_STRING: u8 = 0x1E;

/// Short names of RFC 4514 section 3; other attribute types are written as
/// their dotted OID.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// One DER element: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // Multi-byte tags do not occur in the parts of a certificate read here.
    if tag & 0x1F == 0x1F {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7F);
        // Indefinite lengths are not DER; four bytes cover any certificate.
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count].iter().fold(0usize, |length, byte| (length << 8) | usize::from(*byte));
        (length, &rest[count..])
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

/// An element that must have `tag`.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = element(input)?;
    (found == tag).then_some((contents, rest))
}

/// The subject of a DER certificate in RFC 4514 form (`CN=…,O=…,C=KR`: the
/// last RDN first, multi-valued RDNs joined by `+`, special characters
/// escaped); `None` if the certificate cannot be read that far.
pub fn subject_name(certificate: &[u8]) -> Option<String> {
    let (certificate, _) = expect(certificate, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if let Some((VERSION, _, after)) = element(rest) {
        rest = after;
    }
    // serialNumber, signature, issuer, validity
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (subject, _) = expect(rest, SEQUENCE)?;
    name(subject)
}

fn name(mut rdns: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (mut set, rest) = expect(rdns, SET)?;
        rdns = rest;
        let mut attributes = Vec::new();
        while !set.is_empty() {
            let (attribute, rest) = expect(set, SEQUENCE)?;
            set = rest;
            let (oid, value) = expect(attribute, OID)?;
            let oid = dotted(oid)?;
            let kind = SHORT_NAMES.iter().find(|(dotted, _)| *dotted == oid).map_or(oid.as_str(), |(_, short)| short);
            attributes.push(format!("{kind}={}", value_text(value)?));
        }
        parts.push(attributes.join("+"));
    }
    parts.reverse();
    Some(parts.join(","))
}

/// A DER OBJECT IDENTIFIER as dotted decimal.
fn dotted(oid: &[u8]) -> Option<String> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for (index, byte) in oid.iter().enumerate() {
        if value > u64::MAX >> 7 {
            return None;
        }
        value = (value << 7) | u64::from(byte & 0x7F);
        if byte & 0x80 != 0 {
            if index + 1 == oid.len() {
                return None;
            }
            continue;
        }
        if arcs.is_empty() {
            let first = (value / 40).min(2);
            arcs.push(first);
            arcs.push(value - first * 40);
        } else {
            arcs.push(value);
        }
        value = 0;
    }
    if arcs.is_empty() {
        return None;
    }
    Some(arcs.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
}

/// An attribute value: strings decoded and escaped, anything else as `#`
/// and the hex of its DER encoding (RFC 4514 2.4).
fn value_text(encoded: &[u8]) -> Option<String> {
    let (tag, contents, rest) = element(encoded)?;
    if !rest.is_empty() {
        return None;
    }
    let text = match tag {
        UTF8_STRING | PRINTABLE_STRING | IA5_STRING => std::str::from_utf8(contents).ok().map(str::to_string),
        // T.61 in theory; Latin-1 in every certificate seen in practice.
        TELETEX_STRING => Some(contents.iter().map(|&byte| char::from(byte)).collect()),
        BMP_STRING if contents.len() % 2 == 0 => {
            let units = contents.chunks_exact(2).map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            char::decode_utf16(units).collect::<Result<String, _>>().ok()
        }
        _ => None,
    };
    Some(match text {
        Some(text) => escape(&text),
        None => {
            let der = &encoded[..encoded.len() - rest.len()];
            format!("#{}", der.iter().map(|byte| format!("{byte:02x}")).collect::<String>())
        }
    })
}

/// RFC 4514 2.4 escaping; control characters as `\XX` so a subject cannot
/// break a log line.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let last = text.chars().count().saturating_sub(1);
    for (index, c) in text.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if index == 0 => out.push_str("\\#"),
            ' ' if index == 0 || index == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buffer = [0u8; 4];
                for byte in c.encode_utf8(&mut buffer).bytes() {
                    out.push_str(&format!("\\{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    /// `openssl req -x509 -utf8 -multivalue-rdn -subj
    /// "/C=KR/O=Haneul Test, Inc./OU=Radiology+CN=scanner #1/CN=하늘-CT 1"`.
    const CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----
MIICIzCCAcmgAwIBAgIUE3Bi09/sqz6lEDKBK29Ll1BTKEQwCgYIKoZIzj0EAwIw
ZjELMAkGA1UEBhMCS1IxGjAYBgNVBAoMEUhhbmV1bCBUZXN0LCBJbmMuMSUwEAYD
VQQLDAlSYWRpb2xvZ3kwEQYDVQQDDApzY2FubmVyICMxMRQwEgYDVQQDDAvtlZjr
ipgtQ1QgMTAgFw0yNjExMjMxMTAyNTBaGA8yMTI2MTAzMDExMDI1MFowZjELMAkG
A1UEBhMCS1IxGjAYBgNVBAoMEUhhbmV1bCBUZXN0LCBJbmMuMSUwEAYDVQQLDAlS
YWRpb2xvZ3kwEQYDVQQDDApzY2FubmVyICMxMRQwEgYDVQQDDAvtlZjripgtQ1Qg
MTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNNnW6HUiGzGcS9/40YWz61q+eK7
yMZcDIkOKLImjiELFJwFAodCgGYg2EBell3bRfJECOg8/wk4t5gMtvQKeqyjUzBR
MB0GA1UdDgQWBBTU9ACpwbldbombDzSOx76cpJUp8TAfBgNVHSMEGDAWgBTU9ACp
wbldbombDzSOx76cpJUp8TAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gA
MEUCIFCKPfw9u4VM5enwEvTECMtfaOlp1sZtLA9esSw8KwhTAiEA7AoZZ2vhb6YL
8dccn2oTlZhmi/DpVlI3izBYd9m7o4g=
-----END CERTIFICATE-----
";

    fn der() -> Vec<u8> {
        CertificateDer::from_pem_slice(CERTIFICATE.as_bytes()).expect("PEM certificate").to_vec()
    }

    #[test]
    fn subjects_read_in_rfc_4514_form() {
        assert_eq!(
            subject_name(&der()).as_deref(),
            Some("CN=하늘-CT 1,OU=Radiology+CN=scanner #1,O=Haneul Test\\, Inc.,C=KR")
        );
    }

    #[test]
    fn truncated_or_garbled_certificates_give_none() {
        let der = der();
        for length in 0..der.len() {
            // Cut anywhere: never a panic; cut inside the subject: no subject.
            let _ = subject_name(&der[..length]);
        }
        assert_eq!(subject_name(&der[..200]), None);
        assert_eq!(subject_name(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(subject_name(b"\x30\x80\x00\x00"), None);
        let mut flipped = der.clone();
        flipped[4] ^= 0xFF;
        assert_eq!(subject_name(&flipped), None);
    }

    #[test]
    fn values_are_escaped_and_oids_dotted() {
        assert_eq!(escape("#1, \"x\" "), "\\#1\\, \\\"x\\\"\\ ");
        assert_eq!(escape("a\nb"), "a\\0Ab");
        assert_eq!(dotted(&[0x55, 0x04, 0x03]).as_deref(), Some("2.5.4.3"));
        assert_eq!(dotted(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D]).as_deref(), Some("1.2.840.113549"));
        assert_eq!(dotted(&[0x2A, 0x86]), None);
        assert_eq!(value_text(&[0x04, 0x02, 0xAB, 0xCD]).as_deref(), Some("#0402abcd"));
        assert_eq!(value_text(&[0x1E, 0x04, 0xD5, 0x58, 0xB2, 0x98]).as_deref(), Some("하늘"));
    }
}
