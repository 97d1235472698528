//! Certificates for TLS test servers, generated at test time with `rcgen`.
//!
//! A [`TestCa`] is a throw-away certificate authority; it issues a server certificate
//! (for the names the test chooses) and a client certificate (for mutual TLS). Nothing
//! is read from or written to the system trust store.

use std::fmt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::error::{Result, TestkitError};

/// The names a test server's certificate is valid for by default.
pub const DEFAULT_SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// A PEM certificate with its PEM private key.
#[derive(Clone)]
pub struct CertAndKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
}

impl fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAndKey").finish_non_exhaustive()
    }
}

/// A throw-away certificate authority with a server and a client certificate it issued.
#[derive(Clone, Debug)]
pub struct TestCa {
    /// The CA certificate, PEM: what a client trusts.
    pub ca_pem: String,
    /// The server's certificate and key.
    pub server: CertAndKey,
    /// A client certificate and key, for mutual TLS.
    pub client: CertAndKey,
}

fn tls_error(what: &str, e: &rcgen::Error) -> TestkitError {
    TestkitError::Tls(format!("{what}: {e}"))
}

fn leaf(
    cn: &str,
    names: &[&str],
    purposes: &[ExtendedKeyUsagePurpose],
    ca: &CertifiedIssuer<'_, KeyPair>,
) -> Result<CertAndKey> {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .map_err(|e| tls_error("certificate names", &e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.extended_key_usages = purposes.to_vec();
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().map_err(|e| tls_error("generating a key", &e))?;
    let cert = params
        .signed_by(&key, ca)
        .map_err(|e| tls_error("signing a certificate", &e))?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl TestCa {
    /// A new CA, a server certificate valid for `server_names` (DNS names or IP
    /// addresses) and a client certificate.
    pub fn generate(server_names: &[&str]) -> Result<TestCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| tls_error("CA parameters", &e))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "rivulet test CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(|e| tls_error("generating the CA key", &e))?;
        let ca = CertifiedIssuer::self_signed(params, key)
            .map_err(|e| tls_error("signing the CA certificate", &e))?;
        // Client use too: cluster nodes and replicas present it to each other.
        let server = leaf(
            "rivulet test server",
            server_names,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            &ca,
        )?;
        let client = leaf(
            "rivulet test client",
            &["rivulet-client"],
            &[ExtendedKeyUsagePurpose::ClientAuth],
            &ca,
        )?;
        Ok(TestCa {
            ca_pem: ca.pem(),
            server,
            client,
        })
    }

    /// Writes the CA certificate and the server's certificate and key into `dir`,
    /// returning their paths (ca, cert, key) for `redis-server`'s `tls-*-file` options.
    pub fn write_server_files(&self, dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| TestkitError::io(format!("writing {}", path.display()), e))?;
            Ok::<_, TestkitError>(path)
        };
        Ok((
            write("ca.pem", &self.ca_pem)?,
            write("server.pem", &self.server.cert_pem)?,
            write("server.key", &self.server.key_pem)?,
        ))
    }

    /// The certificates a `redis` client needs to reach a server of this CA (with the
    /// client certificate, for servers that require one).
    pub fn client_certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: self.client.cert_pem.clone().into_bytes(),
                client_key: self.client.key_pem.clone().into_bytes(),
            }),
            root_cert: Some(self.ca_pem.clone().into_bytes()),
        }
    }
}

/// Makes `ring` the process's rustls crypto provider unless one is installed already.
pub(crate) fn install_crypto_provider() {
    // An error only means another provider is installed, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
