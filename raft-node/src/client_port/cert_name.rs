//! The common name in a client certificate's subject: with client-certificate
//! authentication it is the user, as etcd takes it.
//!
//! The certificate has already been verified by the TLS handshake; this only
//! walks its DER far enough to read the subject (no X.509 library needed).

/// One DER element: its tag, contents, and what follows it.
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

/// The subject's common name (the last one, as Go's crypto/x509 and so etcd
/// read it), if the certificate has one as a UTF-8, printable, IA5 or T61 string.
pub fn common_name(cert_der: &[u8]) -> Option<String> {
    let (SEQUENCE, cert, _) = element(cert_der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(cert)? else {
        return None;
    };
    let mut fields = tbs;
    if fields.first() == Some(&VERSION) {
        fields = element(fields)?.2;
    }
    // serial number, signature algorithm, issuer, validity, then subject
    for _ in 0..4 {
        fields = element(fields)?.2;
    }
    let (SEQUENCE, mut rdns, _) = element(fields)? else {
        return None;
    };
    let mut found = None;
    while !rdns.is_empty() {
        let (tag, mut set, rest) = element(rdns)?;
        rdns = rest;
        if tag != SET {
            return None;
        }
        while !set.is_empty() {
            let (SEQUENCE, pair, rest) = element(set)? else {
                return None;
            };
            set = rest;
            let (OID, oid, value) = element(pair)? else {
                return None;
            };
            if oid != COMMON_NAME {
                continue;
            }
            let (tag, text, _) = element(value)?;
            // UTF8String, PrintableString, T61String, IA5String
            if matches!(tag, 0x0c | 0x13 | 0x14 | 0x16) {
                found = Some(String::from_utf8(text.to_vec()).ok()?);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert_with(dn: DistinguishedName) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["example.test".into()]).unwrap();
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_subject_common_name() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Example Org");
        dn.push(DnType::CommonName, "alice");
        assert_eq!(common_name(&cert_with(dn)).as_deref(), Some("alice"));
    }

    #[test]
    fn no_common_name_or_garbage_is_none() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Example Org");
        assert_eq!(common_name(&cert_with(dn)), None);
        assert_eq!(common_name(b""), None);
        assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        let good = {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "bob");
            cert_with(dn)
        };
        // Any truncation is refused or still parses, never panics.
        for n in 0..good.len() {
            let _ = common_name(&good[..n]);
        }
    }

    #[test]
    fn the_cn_of_a_cert_from_raft_net_certs() {
        let dir = tempfile::tempdir().unwrap();
        raft_net::certs::generate(dir.path(), &[1]).unwrap();
        raft_net::certs::issue_client(dir.path(), "carol", None).unwrap();
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let pem = std::fs::read(dir.path().join("client-carol.crt")).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(common_name(&der).as_deref(), Some("carol"));
    }
}
