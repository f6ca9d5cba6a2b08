//! The one field of a certificate depwatch reads: its notAfter (when it
//! expires), from the DER the TLS handshake saw.

/// The notAfter of an X.509 certificate (DER) as Unix seconds. A dozen
/// lines of DER walking instead of a full X.509 parser: only this one
/// field is needed, and the certificate was already parsed by webpki.
pub fn cert_not_after(der: &[u8]) -> Option<i64> {
    let (_, cert, _) = tlv(der).filter(|(t, _, _)| *t == 0x30)?;
    let (_, tbs, _) = tlv(cert).filter(|(t, _, _)| *t == 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2; // version
    }
    rest = tlv(rest)?.2; // serialNumber
    rest = tlv(rest)?.2; // signature algorithm
    rest = tlv(rest)?.2; // issuer
    let (_, validity, _) = tlv(rest).filter(|(t, _, _)| *t == 0x30)?;
    let after = tlv(validity)?.2; // skip notBefore
    let (tag, time, _) = tlv(after)?;
    parse_der_time(tag, std::str::from_utf8(time).ok()?)
}

/// One DER element: (tag, content, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, head) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = head.checked_add(len)?;
    Some((tag, b.get(head..end)?, b.get(end..)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn parse_der_time(tag: u8, s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(0..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(0..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let num = |r: std::ops::Range<usize>| rest.get(r)?.parse::<i64>().ok();
    let (mo, d, h, mi, se) = (num(0..2)?, num(2..4)?, num(4..6)?, num(6..8)?, num(8..10)?);
    Some(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_time_and_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(parse_der_time(0x17, "491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_der_time(0x18, "20500101000000Z"), Some(2_524_608_000));
        assert_eq!(parse_der_time(0x17, "500101000000Z"), Some(-631_152_000));
    }

    #[test]
    fn cert_not_after_reads_rcgen_certificates() {
        for (y, m, d) in [(2031, 7, 15), (2049, 12, 31), (2051, 1, 2)] {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
            params.not_after = rcgen::date_time_ymd(y, m, d);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            assert_eq!(
                cert_not_after(cert.der()),
                Some(days_from_civil(i64::from(y), i64::from(m), i64::from(d)) * 86_400),
                "{y}-{m}-{d}"
            );
        }
        assert_eq!(cert_not_after(b"\x30\x03\x02\x01"), None);
    }
}
