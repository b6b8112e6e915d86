//! Login and text negotiation of session and connection parameters
//! (RFC 7143 section 13), shared by the target and the initiator.
//!
//! Each key has a kind that fixes how an offer and a local setting combine:
//! a list (first offered value we accept), a numeric minimum or maximum, a
//! boolean AND / OR, or a declaration that is not negotiated at all. The
//! side that answers calls [`answer`]; the side that offered applies the
//! answer with [`Negotiated::apply`].

use std::fmt;

/// How a key's value is settled (RFC 7143 6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// Comma-separated list in order of preference; the answer is the first
    /// offered value the answerer supports.
    List,
    /// Numeric, the result is the smaller value.
    Min { lo: u32, hi: u32 },
    /// Numeric, the result is the larger value.
    Max { lo: u32, hi: u32 },
    /// Boolean, the result is the AND of both.
    And,
    /// Boolean, the result is the OR of both.
    Or,
    /// Declarative: each side states its own value (names, aliases,
    /// MaxRecvDataSegmentLength, TargetPortalGroupTag).
    Declarative,
}

/// The kind of every key this implementation knows; `None` for unknown keys,
/// which are answered `NotUnderstood`.
pub fn key_kind(key: &str) -> Option<KeyKind> {
    Some(match key {
        "HeaderDigest" | "DataDigest" | "AuthMethod" => KeyKind::List,
        "MaxConnections" => KeyKind::Min { lo: 1, hi: 65535 },
        "MaxBurstLength" | "FirstBurstLength" => KeyKind::Min {
            lo: 512,
            hi: (1 << 24) - 1,
        },
        "MaxRecvDataSegmentLength" => KeyKind::Declarative,
        "DefaultTime2Wait" => KeyKind::Max { lo: 0, hi: 3600 },
        "DefaultTime2Retain" => KeyKind::Min { lo: 0, hi: 3600 },
        "MaxOutstandingR2T" => KeyKind::Min { lo: 1, hi: 65535 },
        "ErrorRecoveryLevel" => KeyKind::Min { lo: 0, hi: 2 },
        "InitialR2T" | "DataPDUInOrder" | "DataSequenceInOrder" => KeyKind::Or,
        "ImmediateData" | "IFMarker" | "OFMarker" => KeyKind::And,
        "TargetName"
        | "InitiatorName"
        | "TargetAlias"
        | "InitiatorAlias"
        | "SessionType"
        | "TargetAddress"
        | "TargetPortalGroupTag"
        | "SendTargets"
        | "IFMarkInt"
        | "OFMarkInt" => KeyKind::Declarative,
        _ => return None,
    })
}

/// Errors in a peer's offer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("{key}={value}: not a number")]
    NotANumber { key: String, value: String },
    #[error("{key}={value}: out of range {lo}..={hi}")]
    OutOfRange {
        key: String,
        value: String,
        lo: u32,
        hi: u32,
    },
    #[error("{key}={value}: not Yes or No")]
    NotBoolean { key: String, value: String },
    #[error("{key}={value}: no acceptable value in the list")]
    NoAcceptableValue { key: String, value: String },
}

/// The operational parameters of a session and connection, with RFC 7143
/// defaults until negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub header_digest: bool,
    pub data_digest: bool,
    pub max_connections: u32,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u32,
    pub default_time2retain: u32,
    pub max_outstanding_r2t: u32,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u32,
    /// What the peer may send us in one data segment (our declaration).
    pub max_recv_data_segment_length: u32,
    /// What we may send the peer in one data segment (its declaration).
    pub max_xmit_data_segment_length: u32,
}

impl Default for Negotiated {
    fn default() -> Self {
        Negotiated {
            header_digest: false,
            data_digest: false,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            max_recv_data_segment_length: 8192,
            max_xmit_data_segment_length: 8192,
        }
    }
}

/// Parses a numeric value (decimal, or 0x-prefixed hexadecimal).
pub fn parse_number(key: &str, value: &str) -> Result<u32, ParamError> {
    let parsed = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => value.parse(),
    };
    parsed.map_err(|_| ParamError::NotANumber {
        key: key.into(),
        value: value.into(),
    })
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ParamError> {
    match value {
        "Yes" => Ok(true),
        "No" => Ok(false),
        _ => Err(ParamError::NotBoolean {
            key: key.into(),
            value: value.into(),
        }),
    }
}

fn yes_no(b: bool) -> String {
    if b { "Yes" } else { "No" }.to_string()
}

fn in_range(key: &str, value: &str, lo: u32, hi: u32) -> Result<u32, ParamError> {
    let n = parse_number(key, value)?;
    if n < lo || n > hi {
        return Err(ParamError::OutOfRange {
            key: key.into(),
            value: value.into(),
            lo,
            hi,
        });
    }
    Ok(n)
}

/// The answer to one offered key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Send `key=value` back.
    Value(String),
    /// Send `key=NotUnderstood`.
    NotUnderstood,
    /// Send `key=Reject`.
    Reject,
    /// A declaration that needs no answer (e.g. MaxRecvDataSegmentLength).
    Irrelevant,
}

/// Combines a peer's offer for a negotiated key with our local setting
/// (RFC 7143 6.2 rules). For list keys `local` is our own list of acceptable
/// values. Declarative and unknown keys are not answered here.
pub fn answer(key: &str, offered: &str, local: &str) -> Result<Answer, ParamError> {
    let Some(kind) = key_kind(key) else {
        return Ok(Answer::NotUnderstood);
    };
    let value = match kind {
        KeyKind::List => {
            let ours: Vec<&str> = local.split(',').collect();
            match offered.split(',').find(|v| ours.contains(v)) {
                Some(v) => v.to_string(),
                None => "Reject".to_string(),
            }
        }
        KeyKind::Min { lo, hi } => in_range(key, offered, lo, hi)?
            .min(parse_number(key, local)?)
            .to_string(),
        KeyKind::Max { lo, hi } => in_range(key, offered, lo, hi)?
            .max(parse_number(key, local)?)
            .to_string(),
        KeyKind::And => yes_no(parse_bool(key, offered)? && parse_bool(key, local)?),
        KeyKind::Or => yes_no(parse_bool(key, offered)? || parse_bool(key, local)?),
        KeyKind::Declarative => return Ok(Answer::Irrelevant),
    };
    if value == "Reject" {
        return Ok(Answer::Reject);
    }
    Ok(Answer::Value(value))
}

impl Negotiated {
    /// Records the settled value of a key (from our answer, or from the
    /// peer's answer to our offer). `MaxRecvDataSegmentLength` from the peer
    /// is its declaration, so it sets what we may transmit.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<(), ParamError> {
        let num = |lo, hi| in_range(key, value, lo, hi);
        match key {
            "HeaderDigest" => self.header_digest = value == "CRC32C",
            "DataDigest" => self.data_digest = value == "CRC32C",
            "MaxConnections" => self.max_connections = num(1, 65535)?,
            "InitialR2T" => self.initial_r2t = parse_bool(key, value)?,
            "ImmediateData" => self.immediate_data = parse_bool(key, value)?,
            "MaxBurstLength" => self.max_burst_length = num(512, (1 << 24) - 1)?,
            "FirstBurstLength" => self.first_burst_length = num(512, (1 << 24) - 1)?,
            "DefaultTime2Wait" => self.default_time2wait = num(0, 3600)?,
            "DefaultTime2Retain" => self.default_time2retain = num(0, 3600)?,
            "MaxOutstandingR2T" => self.max_outstanding_r2t = num(1, 65535)?,
            "DataPDUInOrder" => self.data_pdu_in_order = parse_bool(key, value)?,
            "DataSequenceInOrder" => self.data_sequence_in_order = parse_bool(key, value)?,
            "ErrorRecoveryLevel" => self.error_recovery_level = num(0, 2)?,
            "MaxRecvDataSegmentLength" => {
                self.max_xmit_data_segment_length = num(512, (1 << 24) - 1)?
            }
            _ => {}
        }
        Ok(())
    }

    /// FirstBurstLength may not exceed MaxBurstLength (RFC 7143 13.14).
    pub fn first_burst(&self) -> u32 {
        self.first_burst_length.min(self.max_burst_length)
    }
}

impl fmt::Display for Negotiated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digest = |on| if on { "CRC32C" } else { "None" };
        writeln!(f, "HeaderDigest={}", digest(self.header_digest))?;
        writeln!(f, "DataDigest={}", digest(self.data_digest))?;
        writeln!(f, "InitialR2T={}", yes_no(self.initial_r2t))?;
        writeln!(f, "ImmediateData={}", yes_no(self.immediate_data))?;
        writeln!(
            f,
            "MaxRecvDataSegmentLength={}",
            self.max_recv_data_segment_length
        )?;
        writeln!(
            f,
            "MaxXmitDataSegmentLength={}",
            self.max_xmit_data_segment_length
        )?;
        writeln!(f, "MaxBurstLength={}", self.max_burst_length)?;
        writeln!(f, "FirstBurstLength={}", self.first_burst_length)?;
        writeln!(f, "MaxOutstandingR2T={}", self.max_outstanding_r2t)?;
        write!(f, "ErrorRecoveryLevel={}", self.error_recovery_level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(key: &str, offered: &str, local: &str) -> String {
        match answer(key, offered, local).unwrap() {
            Answer::Value(v) => v,
            other => panic!("{key}: {other:?}"),
        }
    }

    #[test]
    fn rfc7143_6_2_numeric_min_and_max() {
        assert_eq!(value("MaxBurstLength", "1048576", "262144"), "262144");
        assert_eq!(value("FirstBurstLength", "4096", "65536"), "4096");
        assert_eq!(value("DefaultTime2Wait", "0", "2"), "2");
        assert_eq!(value("ErrorRecoveryLevel", "2", "0"), "0");
        assert_eq!(value("MaxOutstandingR2T", "0x10", "1"), "1");
    }

    #[test]
    fn rfc7143_6_2_boolean_and_or() {
        assert_eq!(value("ImmediateData", "Yes", "No"), "No");
        assert_eq!(value("ImmediateData", "Yes", "Yes"), "Yes");
        assert_eq!(value("InitialR2T", "No", "Yes"), "Yes");
        assert_eq!(value("InitialR2T", "No", "No"), "No");
    }

    #[test]
    fn rfc7143_6_2_lists_take_first_acceptable() {
        assert_eq!(
            value("HeaderDigest", "CRC32C,None", "None,CRC32C"),
            "CRC32C"
        );
        assert_eq!(value("DataDigest", "None", "None,CRC32C"), "None");
        assert_eq!(
            answer("AuthMethod", "KRB5", "CHAP,None"),
            Ok(Answer::Reject)
        );
    }

    #[test]
    fn bad_offers_are_errors_and_unknown_keys_not_understood() {
        assert!(matches!(
            answer("MaxBurstLength", "12", "262144"),
            Err(ParamError::OutOfRange { .. })
        ));
        assert!(matches!(
            answer("MaxBurstLength", "lots", "262144"),
            Err(ParamError::NotANumber { .. })
        ));
        assert!(matches!(
            answer("ImmediateData", "Maybe", "Yes"),
            Err(ParamError::NotBoolean { .. })
        ));
        assert_eq!(answer("X-Vendor", "1", ""), Ok(Answer::NotUnderstood));
        assert_eq!(answer("TargetName", "iqn.x", ""), Ok(Answer::Irrelevant));
    }

    #[test]
    fn apply_records_settled_values() {
        let mut n = Negotiated::default();
        n.apply("HeaderDigest", "CRC32C").unwrap();
        n.apply("MaxRecvDataSegmentLength", "65536").unwrap();
        n.apply("MaxBurstLength", "4096").unwrap();
        assert!(n.header_digest && !n.data_digest);
        assert_eq!(n.max_xmit_data_segment_length, 65536);
        assert_eq!(n.first_burst(), 4096);
    }
}
