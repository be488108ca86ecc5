//! Loading a node's TLS material and building the QUIC client and server configurations.
//!
//! Both directions use mutual TLS 1.3 against the cluster CA with the `ring` provider:
//! the server requires a client certificate signed by the CA, and a dialer checks that
//! the server's certificate names the node it meant to reach (`node-<id>.raft`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::RootCertStore;

use crate::certs::{node_cert_file, node_key_file, node_server_name, CA_CERT_FILE};
use crate::NodeId;

/// ALPN protocol id of the peer transport.
pub(crate) const ALPN: &[u8] = b"raft-net/1";

/// Why TLS material could not be loaded or used.
#[derive(Debug)]
pub enum TlsError {
    /// A file is missing or unreadable.
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file does not hold what it should (no PEM item, wrong kind of item).
    BadPem {
        /// The file concerned (or a placeholder when loaded from memory).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The node certificate is not signed by the CA or does not name the node.
    BadCertificate(String),
    /// rustls or quinn refused the configuration.
    Config(String),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            TlsError::BadPem { path, reason } => write!(f, "{}: {reason}", path.display()),
            TlsError::BadCertificate(reason) => write!(f, "unusable node certificate: {reason}"),
            TlsError::Config(reason) => write!(f, "TLS configuration refused: {reason}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A node's TLS identity: the cluster CA, its certificate and its private key.
///
/// Cloning is cheap enough for start-up; the key is held in memory.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// raft_net::certs::generate(dir.path(), &[1, 2]).unwrap();
/// let tls = raft_net::TlsConfig::load(dir.path(), 2).unwrap();
/// assert_eq!(tls.node_id(), 2);
/// // Missing files give an error naming the file.
/// let err = raft_net::TlsConfig::load(dir.path(), 5).unwrap_err();
/// assert!(err.to_string().contains("node-5.crt"));
/// ```
#[derive(Debug)]
pub struct TlsConfig {
    id: NodeId,
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Clone for TlsConfig {
    fn clone(&self) -> Self {
        TlsConfig {
            id: self.id,
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn bad_pem(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::BadPem {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsConfig {
    /// Loads `ca.crt`, `node-<id>.crt` and `node-<id>.key` from `dir` (as written by
    /// [`certs::generate`](crate::certs::generate)) and checks that the certificate is
    /// signed by the CA and names node `id`.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// raft_net::certs::generate(dir.path(), &[1]).unwrap();
    /// assert!(raft_net::TlsConfig::load(dir.path(), 1).is_ok());
    /// ```
    pub fn load(dir: &Path, id: NodeId) -> Result<Self, TlsError> {
        let ca_path = dir.join(CA_CERT_FILE);
        let cert_path = dir.join(node_cert_file(id));
        let key_path = dir.join(node_key_file(id));
        let ca =
            CertificateDer::from_pem_slice(&read(&ca_path)?).map_err(|e| bad_pem(&ca_path, e))?;
        let cert = CertificateDer::from_pem_slice(&read(&cert_path)?)
            .map_err(|e| bad_pem(&cert_path, e))?;
        let key =
            PrivateKeyDer::from_pem_slice(&read(&key_path)?).map_err(|e| bad_pem(&key_path, e))?;
        Self::from_der(id, ca, cert, key)
    }

    /// Builds the identity from PEM text (CA certificate, node certificate, node key),
    /// with the same checks as [`TlsConfig::load`].
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// raft_net::certs::generate(dir.path(), &[1]).unwrap();
    /// let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    /// let tls = raft_net::TlsConfig::from_pem(1, &read("ca.crt"), &read("node-1.crt"), &read("node-1.key"));
    /// assert!(tls.is_ok());
    /// // The certificate of node 1 does not name node 2.
    /// assert!(raft_net::TlsConfig::from_pem(2, &read("ca.crt"), &read("node-1.crt"), &read("node-1.key")).is_err());
    /// ```
    pub fn from_pem(
        id: NodeId,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Self, TlsError> {
        let mem = Path::new("<memory>");
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| bad_pem(mem, e))?;
        let cert =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| bad_pem(mem, e))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad_pem(mem, e))?;
        Self::from_der(id, ca, cert, key)
    }

    fn from_der(
        id: NodeId,
        ca: CertificateDer<'static>,
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone())
            .map_err(|e| TlsError::BadCertificate(format!("CA certificate: {e}")))?;
        let parsed = ParsedCertificate::try_from(&cert)
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &[],
            UnixTime::now(),
            provider().signature_verification_algorithms.all,
        )
        .map_err(|e| TlsError::BadCertificate(format!("not signed by the cluster CA: {e}")))?;
        if !cert_names_node(&cert, id) {
            return Err(TlsError::BadCertificate(format!(
                "certificate does not name {}",
                node_server_name(id)
            )));
        }
        Ok(TlsConfig { id, ca, cert, key })
    }

    /// The node id this identity belongs to.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// raft_net::certs::generate(dir.path(), &[3]).unwrap();
    /// assert_eq!(raft_net::TlsConfig::load(dir.path(), 3).unwrap().node_id(), 3);
    /// ```
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Arc::new(roots))
    }

    /// QUIC server side: requires a client certificate signed by the cluster CA.
    pub(crate) fn server_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ServerConfig, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(transport);
        Ok(config)
    }

    /// QUIC client side: presents this node's certificate, trusts only the cluster CA.
    pub(crate) fn client_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ClientConfig, TlsError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(transport);
        Ok(config)
    }
}

/// Whether `cert` (already chain-verified by the TLS handshake, or about to be) carries
/// the DNS name of node `id`.
pub(crate) fn cert_names_node(cert: &CertificateDer<'_>, id: NodeId) -> bool {
    let Ok(parsed) = ParsedCertificate::try_from(cert) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(node_server_name(id)) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

/// The end-entity certificate the peer of `conn` presented (verified by the handshake).
pub(crate) fn peer_certificate(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.into_iter().next()
}
