//! The client port's TLS configuration: the node's server certificate and
//! key, and (with client-certificate authentication) the CA whose
//! certificates clients must present.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

/// What the client port's TLS is made of (the config's `client_*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain the port presents (`client_cert`).
    pub cert: PathBuf,
    /// PEM private key of that certificate (`client_key`).
    pub key: PathBuf,
    /// PEM CA certificate(s) that client certificates are checked against
    /// (`client_trusted_ca`).
    pub trusted_ca: Option<PathBuf>,
    /// Refuse clients without a certificate from `trusted_ca` (`client_cert_auth`).
    pub client_cert_auth: bool,
}

/// ALPN protocols offered: gRPC needs HTTP/2, the `/v1` API and the JSON
/// gateway also take HTTP/1.1, all on one port.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

fn certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

impl TlsFiles {
    /// Loads the files and builds the server configuration; every problem
    /// (missing file, not PEM, key not matching the certificate, unusable
    /// CA) is one line naming the config key and the file.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let chain = certs("client_cert", &self.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&read("client_key", &self.key)?)
            .map_err(|e| format!("client_key {}: {e}", self.key.display()))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = match &self.trusted_ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for ca in certs("client_trusted_ca", path)? {
                    roots
                        .add(ca)
                        .map_err(|e| format!("client_trusted_ca {}: {e}", path.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                // Without client_cert_auth a certificate is optional, but
                // one that is presented must be valid (and names the user).
                let verifier = if self.client_cert_auth {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| format!("client_trusted_ca {}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None if self.client_cert_auth => {
                return Err("client_cert_auth needs client_trusted_ca".into());
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            format!(
                "client_cert {} with client_key {}: {e}",
                self.cert.display(),
                self.key.display()
            )
        })?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, auth: bool) -> TlsFiles {
        TlsFiles {
            cert: dir.join("server-1.crt"),
            key: dir.join("server-1.key"),
            trusted_ca: Some(dir.join("ca.crt")),
            client_cert_auth: auth,
        }
    }

    #[test]
    fn loads_what_certs_writes() {
        let dir = tempfile::tempdir().unwrap();
        raft_net::certs::generate_with_servers(dir.path(), &[1], |_| vec![]).unwrap();
        let cfg = files(dir.path(), true).server_config().unwrap();
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(files(dir.path(), false).server_config().is_ok());
    }

    #[test]
    fn bad_files_are_one_clear_line() {
        let dir = tempfile::tempdir().unwrap();
        raft_net::certs::generate_with_servers(dir.path(), &[1, 2], |_| vec![]).unwrap();
        let d = dir.path();
        let mut f = files(d, true);
        f.cert = d.join("missing.crt");
        let e = f.server_config().unwrap_err();
        assert!(
            e.starts_with("client_cert ") && e.contains("missing.crt"),
            "{e}"
        );
        // A key that is not the certificate's.
        let mut f = files(d, true);
        f.key = d.join("server-2.key");
        let e = f.server_config().unwrap_err();
        assert!(e.contains("client_key"), "{e}");
        // Not PEM at all.
        std::fs::write(d.join("junk.pem"), "hello").unwrap();
        let mut f = files(d, true);
        f.trusted_ca = Some(d.join("junk.pem"));
        let e = f.server_config().unwrap_err();
        assert!(
            e.contains("client_trusted_ca") && e.contains("junk.pem"),
            "{e}"
        );
        let mut f = files(d, true);
        f.trusted_ca = None;
        assert!(f.server_config().unwrap_err().contains("client_trusted_ca"));
    }
}
