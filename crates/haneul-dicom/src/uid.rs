//! UID generation and the two checks on UIDs: strict syntax, and what the
//! archive accepts as an identifier.

/// A new globally unique UID in the `2.25` arc (ISO/IEC 9834-8: a UUID as one integer).
pub fn generate() -> String {
    format!("2.25.{}", uuid::Uuid::new_v4().as_u128())
}

/// Whether a string is a syntactically valid UID (PS3.5 9.1): at most 64
/// characters, dot-separated numeric components without leading zeros.
pub fn is_valid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.split('.').all(|component| {
            !component.is_empty()
                && component.bytes().all(|b| b.is_ascii_digit())
                && (component == "0" || !component.starts_with('0'))
        })
}

/// Longest UID (PS3.5 9.1), in bytes.
pub const MAX_LEN: usize = 64;

/// Whether the archive takes `uid` as an instance, series or study
/// identifier. Looser than [`is_valid`] on purpose: legacy archives hold UIDs
/// with letters or leading zeros, and an image stored with one must stay
/// findable, retrievable, removable and replicable. Refused is only what
/// would break storage, a multi-valued attribute, a URL path or matching:
/// an empty value, more than 64 bytes, a value separator `\`, a path
/// separator `/`, control characters, and leading or trailing spaces (stored
/// values are trimmed, and a blank one would match every study). Every edge
/// that takes a UID (ingest, REST, the replication API) asks this one rule,
/// so whatever was stored can be named.
pub fn is_acceptable(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= MAX_LEN
        && uid.trim() == uid
        && !uid.contains(['\\', '/'])
        && !uid.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_uids_are_valid_and_distinct() {
        let a = generate();
        assert!(is_valid(&a), "{a}");
        assert_ne!(a, generate());
    }

    #[test]
    fn validity_rules() {
        assert!(is_valid("1.2.840.10008.1.2"));
        assert!(is_valid("1.2.0.3"));
        assert!(!is_valid("1.02.3"));
        assert!(!is_valid("1..2"));
        assert!(!is_valid("1.2.a"));
        assert!(!is_valid(&"1.".repeat(40)));
    }

    #[test]
    fn acceptable_identifiers_include_what_legacy_archives_hold() {
        for uid in ["1.2.840.10008.1.2", "1.02.3", "1.2.840.LEGACY.7", "not-a-uid", &"9".repeat(64)] {
            assert!(is_acceptable(uid), "{uid:?}");
        }
        for uid in ["", " ", "1.2.3 ", " 1.2.3", "1.2\\3.4", "1.2/3", "1.2\n", "1.2\0", &"9".repeat(65)] {
            assert!(!is_acceptable(uid), "{uid:?}");
        }
    }
}
