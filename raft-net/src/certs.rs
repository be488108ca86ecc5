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
use std::time::SystemTime;

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

/// File name of node `id`'s certificate for its client port (`server-<id>.crt`).
///
/// ```
/// assert_eq!(raft_net::certs::server_cert_file(3), "server-3.crt");
/// ```
pub fn server_cert_file(id: NodeId) -> String {
    format!("server-{id}.crt")
}

/// File name of the private key of node `id`'s client-port certificate (`server-<id>.key`).
pub fn server_key_file(id: NodeId) -> String {
    format!("server-{id}.key")
}

/// File name of client `name`'s certificate (`client-<name>.crt`).
///
/// ```
/// assert_eq!(raft_net::certs::client_cert_file("alice"), "client-alice.crt");
/// ```
pub fn client_cert_file(name: &str) -> String {
    format!("client-{name}.crt")
}

/// File name of client `name`'s private key (`client-<name>.key`).
pub fn client_key_file(name: &str) -> String {
    format!("client-{name}.key")
}

/// Names every client-port certificate carries besides the ones asked for:
/// the loopback names, so that a client on the node's own machine can always
/// connect by `localhost` or `127.0.0.1`.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

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
    /// A client name or a host name cannot go into a certificate.
    BadName(String),
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
            CertError::BadName(reason) => write!(f, "{reason}"),
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
    generate_with(out_dir, ids, None::<fn(NodeId) -> Vec<String>>)
}

/// Like [`generate`], and also a certificate for each node's client port
/// (`server-<id>.crt`, `server-<id>.key`, see [`issue_server`]) naming the
/// hosts `client_hosts(id)` gives (host names or IP addresses) and
/// [`LOOPBACK_NAMES`].
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// raft_net::certs::generate_with_servers(dir.path(), &[1, 2], |id| vec![format!("db{id}.example")]).unwrap();
/// assert!(dir.path().join("server-2.crt").exists());
/// ```
pub fn generate_with_servers(
    out_dir: &Path,
    ids: &[NodeId],
    client_hosts: impl Fn(NodeId) -> Vec<String>,
) -> Result<(), CertError> {
    generate_with(out_dir, ids, Some(client_hosts))
}

fn generate_with(
    out_dir: &Path,
    ids: &[NodeId],
    client_hosts: Option<impl Fn(NodeId) -> Vec<String>>,
) -> Result<(), CertError> {
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
    let mut servers = Vec::new();
    for &id in ids {
        check_absent(&out_dir.join(node_cert_file(id)))?;
        check_absent(&out_dir.join(node_key_file(id)))?;
        if let Some(hosts) = &client_hosts {
            check_absent(&out_dir.join(server_cert_file(id)))?;
            check_absent(&out_dir.join(server_key_file(id)))?;
            servers.push((id, server_params(id, &hosts(id))?));
        }
    }
    let ca_key = KeyPair::generate().map_err(crypto)?;
    let ca_cert = ca_params().self_signed(&ca_key).map_err(crypto)?;
    write_new(&out_dir.join(CA_KEY_FILE), &ca_key.serialize_pem(), 0o600)?;
    write_new(&out_dir.join(CA_CERT_FILE), &ca_cert.pem(), 0o644)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    for &id in ids {
        write_node(out_dir, id, &issuer)?;
    }
    for (id, params) in servers {
        write_signed(
            out_dir,
            &server_cert_file(id),
            &server_key_file(id),
            params,
            &issuer,
        )?;
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
    let issuer = load_issuer(dir)?;
    check_absent(&dir.join(node_cert_file(id)))?;
    check_absent(&dir.join(node_key_file(id)))?;
    write_node(dir, id, &issuer)
}

/// The issuer that signs with the CA key [`generate`] left in `dir`.
fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, CertError> {
    let key_path = dir.join(CA_KEY_FILE);
    let pem = fs::read_to_string(&key_path).map_err(|source| CertError::Io {
        path: key_path.clone(),
        source,
    })?;
    let ca_key = KeyPair::from_pem(&pem).map_err(|e| CertError::BadCa {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    Ok(Issuer::new(ca_params(), ca_key))
}

/// Signs `params` with a new key and writes the key (mode 0600) and the
/// certificate; refuses to overwrite either.
fn write_signed(
    dir: &Path,
    cert_file: &str,
    key_file: &str,
    params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(), CertError> {
    check_absent(&dir.join(cert_file))?;
    check_absent(&dir.join(key_file))?;
    let key = KeyPair::generate().map_err(crypto)?;
    let cert = params.signed_by(&key, issuer).map_err(crypto)?;
    write_new(&dir.join(key_file), &key.serialize_pem(), 0o600)?;
    write_new(&dir.join(cert_file), &cert.pem(), 0o644)
}

/// A certificate for node `id`'s client port: a TLS server certificate whose
/// subject alternative names are `hosts` (DNS names or IP addresses, as
/// clients dial the node), [`LOOPBACK_NAMES`] and `node-<id>.raft`.
fn server_params(id: NodeId, hosts: &[String]) -> Result<CertificateParams, CertError> {
    let mut names: Vec<String> = Vec::new();
    for h in hosts
        .iter()
        .map(|h| h.trim().to_string())
        .chain(LOOPBACK_NAMES.iter().map(|n| n.to_string()))
        .chain([node_server_name(id)])
    {
        if h.is_empty() || h.contains(|c: char| c.is_whitespace() || c == '/' || c == ',') {
            return Err(CertError::BadName(format!(
                "{h:?} is not a host name or IP address"
            )));
        }
        if !names.contains(&h) {
            names.push(h);
        }
    }
    let mut params = CertificateParams::new(names)
        .map_err(|e| CertError::BadName(format!("client hosts of node {id}: {e}")))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("raft-node {id} client API"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Issues the certificate of node `id`'s client port (`server-<id>.crt`,
/// `server-<id>.key`) with the CA that [`generate`] left in `dir`, naming
/// `hosts` (host names or IP addresses clients use to reach it) besides
/// [`LOOPBACK_NAMES`]. Refuses to overwrite the files.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// raft_net::certs::generate(dir.path(), &[1]).unwrap();
/// raft_net::certs::issue_server(dir.path(), 1, &["10.0.0.1".into(), "db1.example".into()]).unwrap();
/// assert!(dir.path().join("server-1.key").exists());
/// assert!(raft_net::certs::issue_server(dir.path(), 1, &[]).is_err(), "never overwritten");
/// ```
pub fn issue_server(dir: &Path, id: NodeId, hosts: &[String]) -> Result<(), CertError> {
    let issuer = load_issuer(dir)?;
    let params = server_params(id, hosts)?;
    write_signed(
        dir,
        &server_cert_file(id),
        &server_key_file(id),
        params,
        &issuer,
    )
}

/// Checks that `name` can be a client's common name and part of a file name:
/// 1 to 64 characters among letters, digits, `.`, `_`, `-` and `@`.
pub fn check_client_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(CertError::BadName(format!(
            "client name {name:?}: use 1 to 64 letters, digits, '.', '_', '-' or '@' (not starting with '.')"
        )))
    }
}

/// Issues a client certificate whose common name is `name` (`client-<name>.crt`,
/// `client-<name>.key`) with the CA that [`generate`] left in `dir`. With
/// client-certificate authentication on, a node takes the common name as the
/// user, as etcd does. `validity` (not before, not after) defaults to the same
/// long span as the node certificates. Refuses to overwrite the files.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// raft_net::certs::generate(dir.path(), &[1]).unwrap();
/// raft_net::certs::issue_client(dir.path(), "alice", None).unwrap();
/// assert!(dir.path().join("client-alice.crt").exists());
/// assert!(raft_net::certs::issue_client(dir.path(), "../x", None).is_err());
/// ```
pub fn issue_client(
    dir: &Path,
    name: &str,
    validity: Option<(SystemTime, SystemTime)>,
) -> Result<(), CertError> {
    check_client_name(name)?;
    let issuer = load_issuer(dir)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    if let Some((not_before, not_after)) = validity {
        if not_after <= not_before {
            return Err(CertError::BadName(
                "a certificate's validity must end after it starts".into(),
            ));
        }
        params.not_before = time::OffsetDateTime::from(not_before);
        params.not_after = time::OffsetDateTime::from(not_after);
    }
    write_signed(
        dir,
        &client_cert_file(name),
        &client_key_file(name),
        params,
        &issuer,
    )
}
