//! CHAP (RFC 1994) as iSCSI uses it (RFC 7143 12.1.3): MD5 only
//! (CHAP_A=5), binary values written as `0x` hex or `0b` base64.

use md5::{Digest, Md5};

/// The only CHAP algorithm supported: MD5.
pub const CHAP_A_MD5: &str = "5";

/// CHAP_R for identifier `id`, `secret` and challenge `challenge`:
/// MD5(id || secret || challenge).
pub fn response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

/// Errors decoding a CHAP binary value.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChapError {
    #[error("CHAP value {0:?} is neither 0x-hex nor 0b-base64")]
    BadEncoding(String),
    #[error("CHAP value is longer than 1024 bytes")]
    TooLong,
}

/// Encodes binary as iSCSI hex (`0x...`, lowercase).
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Decodes an iSCSI binary value: `0x`/`0X` hex or `0b`/`0B` base64.
pub fn decode_binary(value: &str) -> Result<Vec<u8>, ChapError> {
    let bad = || ChapError::BadEncoding(value.chars().take(40).collect());
    let out = if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        // An odd number of digits has an implied leading zero.
        let padded = if hex.len() % 2 == 1 {
            format!("0{hex}")
        } else {
            hex.to_string()
        };
        (0..padded.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&padded[i..i + 2], 16).map_err(|_| bad()))
            .collect::<Result<Vec<u8>, _>>()?
    } else if let Some(b64) = value
        .strip_prefix("0b")
        .or_else(|| value.strip_prefix("0B"))
    {
        decode_base64(b64).ok_or_else(bad)?
    } else {
        return Err(bad());
    };
    if out.len() > 1024 {
        return Err(ChapError::TooLong);
    }
    Ok(out)
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1994_md5_response() {
        // MD5(0x01 || "secret" || 0x00..0x0f), computed independently.
        let challenge: Vec<u8> = (0..16).collect();
        let r = response(1, b"secret", &challenge);
        let mut h = Md5::new();
        h.update([1u8]);
        h.update(b"secret");
        h.update(&challenge);
        assert_eq!(r.to_vec(), h.finalize().to_vec());
        assert_ne!(r, response(2, b"secret", &challenge));
    }

    #[test]
    fn binary_encodings_rfc7143_6_1() {
        assert_eq!(decode_binary("0x0aFF").unwrap(), vec![0x0a, 0xff]);
        assert_eq!(decode_binary("0xabc").unwrap(), vec![0x0a, 0xbc]);
        assert_eq!(decode_binary("0bAQID").unwrap(), vec![1, 2, 3]);
        assert_eq!(decode_binary("0bAQI=").unwrap(), vec![1, 2]);
        assert!(decode_binary("1234").is_err());
        assert!(decode_binary("0xzz").is_err());
        assert_eq!(encode_hex(&[0, 0xab]), "0x00ab");
        assert_eq!(decode_binary(&encode_hex(&[7; 300])).unwrap(), vec![7; 300]);
    }
}
