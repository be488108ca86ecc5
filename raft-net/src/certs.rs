//! Creation of the cluster CA and the node certificates.
//!
//! Every node certificate is signed by one cluster CA and carries its node id as the
//! DNS subject alternative name `node-<id>.raft` (see [`node_server_name`]). Files are
//! PEM; private keys are written with mode 0600 and never overwritten.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! raft_net::certs::generate(dir.path(), &[1, 2, 3]).unwrap();
//! assert!(dir.path().join("ca.crt").exists());
//! assert!(dir.path().join("node-2.key").exists());
//! // A node added later gets a certificate from the same CA.
//! raft_net::certs::issue(dir.path(), 4).unwrap();
//! let tls = raft_net::TlsConfig::load(dir.path(), 4).unwrap();
//! assert_eq!(tls.node_id(), 4);
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::NodeId;

/// File name of the CA certificate inside a certificate directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA private key inside a certificate directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// Common name of the CA that [`generate`] creates; [`issue`] relies on it.
const CA_COMMON_NAME: &str = "raft-net cluster CA";

/// DNS name that a node certificate carries for node `id`: `node-<id>.raft`.
///
/// ```
/// assert_eq!(raft_net::certs::node_server_name(7), "node-7.raft");
/// ```
pub fn node_server_name(id: NodeId) -> String {
    format!("node-{id}.raft")
}

/// File name of node `id`'s certificate (`node-<id>.crt`).
///
/// ```
/// assert_eq!(raft_net::certs::node_cert_file(3), "node-3.crt");
/// ```
pub fn node_cert_file(id: NodeId) -> String {
    format!("node-{id}.crt")
}

/// File name of node `id`'s private key (`node-<id>.key`).
///
/// ```
/// assert_eq!(raft_net::certs::node_key_file(3), "node-3.key");
/// ```
pub fn node_key_file(id: NodeId) -> String {
    format!("node-{id}.key")
}

/// Why certificates could not be created.
#[derive(Debug)]
pub enum CertError {
    /// Reading or writing a file failed.
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file that would be written exists already (keys are never overwritten).
    Exists(PathBuf),
    /// The CA key or certificate in the directory could not be used.
    BadCa {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Key generation or signing failed.
    Crypto(String),
    /// The list of ids was empty or repeated an id.
    BadIds(String),
}

impl std::fmt::Display for CertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            CertError::Exists(path) => {
                write!(
                    f,
                    "{} exists already; refusing to overwrite",
                    path.display()
                )
            }
            CertError::BadCa { path, reason } => write!(f, "{}: {reason}", path.display()),
            CertError::Crypto(reason) => write!(f, "certificate generation failed: {reason}"),
            CertError::BadIds(reason) => write!(f, "bad node ids: {reason}"),
        }
    }
}

impl std::error::Error for CertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CertError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn crypto(e: rcgen::Error) -> CertError {
    CertError::Crypto(e.to_string())
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn node_params(id: NodeId) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(vec![node_server_name(id)]).map_err(crypto)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_server_name(id));
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Writes `contents` to a new file; fails if it exists. `mode` is applied at creation.
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CertError::Exists(path.to_path_buf())
            } else {
                io(e)
            }
        })?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn check_absent(path: &Path) -> Result<(), CertError> {
    if path.exists() {
        return Err(CertError::Exists(path.to_path_buf()));
    }
    Ok(())
}

fn write_node(dir: &Path, id: NodeId, issuer: &Issuer<'_, KeyPair>) -> Result<(), CertError> {
    let key = KeyPair::generate().map_err(crypto)?;
    let cert = node_params(id)?.signed_by(&key, issuer).map_err(crypto)?;
    write_new(&dir.join(node_key_file(id)), &key.serialize_pem(), 0o600)?;
    write_new(&dir.join(node_cert_file(id)), &cert.pem(), 0o644)
}

/// Creates `out_dir` (if needed), a new cluster CA (`ca.crt`, `ca.key`) and one
/// certificate and key per id (`node-<id>.crt`, `node-<id>.key`), keys with mode 0600.
///
/// Refuses to overwrite any existing file, so an existing CA is never replaced by
/// accident. Keys are ECDSA P-256.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// raft_net::certs::generate(dir.path(), &[1, 2]).unwrap();
/// use std::os::unix::fs::PermissionsExt;
/// let mode = std::fs::metadata(dir.path().join("node-1.key")).unwrap().permissions().mode();
/// assert_eq!(mode & 0o777, 0o600);
/// // A second run would replace the CA: refused.
/// assert!(raft_net::certs::generate(dir.path(), &[1, 2]).is_err());
/// ```
pub fn generate(out_dir: &Path, ids: &[NodeId]) -> Result<(), CertError> {
    if ids.is_empty() {
        return Err(CertError::BadIds("no ids given".into()));
    }
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(CertError::BadIds(format!("id {} given twice", w[0])));
    }
    fs::create_dir_all(out_dir).map_err(|source| CertError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    // Check everything first so that a refusal leaves the directory untouched.
    check_absent(&out_dir.join(CA_CERT_FILE))?;
    check_absent(&out_dir.join(CA_KEY_FILE))?;
    for &id in ids {
        check_absent(&out_dir.join(node_cert_file(id)))?;
        check_absent(&out_dir.join(node_key_file(id)))?;
    }
    let ca_key = KeyPair::generate().map_err(crypto)?;
    let ca_cert = ca_params().self_signed(&ca_key).map_err(crypto)?;
    write_new(&out_dir.join(CA_KEY_FILE), &ca_key.serialize_pem(), 0o600)?;
    write_new(&out_dir.join(CA_CERT_FILE), &ca_cert.pem(), 0o644)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    for &id in ids {
        write_node(out_dir, id, &issuer)?;
    }
    Ok(())
}

/// Issues a certificate for one more node with the CA that [`generate`] left in `dir`
/// (for a node added to the cluster later). Refuses to overwrite the node's files.
///
/// The issuer is rebuilt from `ca.key` and the fixed CA name that [`generate`] uses; a CA
/// made by another tool is not supported here.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// raft_net::certs::generate(dir.path(), &[1]).unwrap();
/// raft_net::certs::issue(dir.path(), 9).unwrap();
/// assert!(dir.path().join("node-9.crt").exists());
/// ```
pub fn issue(dir: &Path, id: NodeId) -> Result<(), CertError> {
    let key_path = dir.join(CA_KEY_FILE);
    let pem = fs::read_to_string(&key_path).map_err(|source| CertError::Io {
        path: key_path.clone(),
        source,
    })?;
    let ca_key = KeyPair::from_pem(&pem).map_err(|e| CertError::BadCa {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    check_absent(&dir.join(node_cert_file(id)))?;
    check_absent(&dir.join(node_key_file(id)))?;
    let issuer = Issuer::new(ca_params(), ca_key);
    write_node(dir, id, &issuer)
}
