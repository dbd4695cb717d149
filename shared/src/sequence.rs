//! Stream sequence numbers: decimal strings too long for any integer type.
//!
//! Kinesis numbers are ~56 digits and DynamoDB stream numbers 21–40 (beyond u128 and beyond
//! DynamoDB's 38-digit numbers); the emulator counts 1, 2, 3. Without leading zeros, a longer
//! number is a larger one, so (length, text) order is numeric order.

use std::cmp::Ordering;

/// Numeric order of two sequence numbers.
pub fn cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// `seq` zero-padded to 40 digits, so that string order is numeric order (for DynamoDB
/// condition expressions). `None` when it is not 1..=40 decimal digits.
pub fn padded(seq: &str) -> Option<String> {
    if seq.is_empty() || seq.len() > 40 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{seq:0>40}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longer_numbers_are_larger() {
        assert_eq!(cmp("9", "10"), Ordering::Less);
        assert_eq!(
            cmp(
                "49590338271490256608559692538361571095921575989136588898",
                "4959033827149025660855969253836157109592157598913658889"
            ),
            Ordering::Greater
        );
        assert_eq!(cmp("007", "7"), Ordering::Equal);
    }

    #[test]
    fn padding_keeps_order_as_strings() {
        let (a, b) = (padded("9").unwrap(), padded("10").unwrap());
        assert_eq!(a.len(), 40);
        assert!(a < b);
        assert_eq!(padded("x1"), None);
        assert_eq!(padded(&"1".repeat(41)), None);
    }
}
