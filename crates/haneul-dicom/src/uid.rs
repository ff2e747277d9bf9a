//! UID generation.

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
}
