//! The testbed's certificates, made fresh for each testbed as kubeadm makes a
//! cluster's: a CA, the API server's serving certificate (for loopback, the
//! `kubernetes` Service's names and ClusterIP, and the address pods reach it at), and
//! the owner's client certificate (`kubernetes-admin` in `system:masters`), written
//! into a kubeconfig only the owner (and root) can read.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The user the owner's certificate names, as kubeadm's admin.conf does.
pub const ADMIN_USER: &str = "kubernetes-admin";
pub const ADMIN_GROUP: &str = "system:masters";

pub struct Pki {
    /// The CA's certificate (PEM): `ca.crt` in the kubeconfig and in every pod.
    pub ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
    /// The owner's certificate, DER (how the server knows it) and PEM, and its key.
    pub admin_der: CertificateDer<'static>,
    admin_pem: String,
    admin_key_pem: String,
}

#[derive(Debug, thiserror::Error)]
#[error("make the testbed's certificates: {0}")]
pub struct PkiError(#[from] rcgen::Error);

impl Pki {
    /// A CA and the certificates it signs; the server's is valid for `addresses`
    /// and the `kubernetes` Service's DNS names under `domain`.
    pub fn make(testbed: &str, domain: &str, addresses: &[IpAddr]) -> Result<Pki, PkiError> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("testbed-{testbed}-ca"));
        ca.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate()?;
        let mut names: Vec<String> = vec![
            "localhost".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            format!("kubernetes.default.svc.{domain}"),
        ];
        names.dedup();
        let mut server = CertificateParams::new(names)?;
        server
            .subject_alt_names
            .extend(addresses.iter().map(|ip| SanType::IpAddress(*ip)));
        server
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server.use_authority_key_identifier_extension = true;
        server.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin
            .distinguished_name
            .push(DnType::CommonName, ADMIN_USER);
        admin
            .distinguished_name
            .push(DnType::OrganizationName, ADMIN_GROUP);
        admin.use_authority_key_identifier_extension = true;
        admin.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        Ok(Pki {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            server_cert: server_cert.der().clone(),
            server_key: server_key.serialize_der(),
            admin_der: admin_cert.der().clone(),
            admin_pem: admin_cert.pem(),
            admin_key_pem: admin_key.serialize_pem(),
        })
    }

    /// The TLS configuration of the API server: its certificate, and a client
    /// certificate asked for (not required: a pod's token is another way in).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, rustls::Error> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.server_cert.clone(), self.ca_der.clone()], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// A kubeconfig for the owner, as kind and kubeadm write one: cluster, user
    /// and context named after the testbed, the `default` namespace.
    pub fn kubeconfig(&self, testbed: &str, server: &str) -> String {
        let b64 = |s: &str| data_encoding::BASE64.encode(s.as_bytes());
        let name = format!("testbed-{testbed}");
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {name}-admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}-admin
    namespace: default
current-context: {name}
preferences: {{}}
",
            ca = b64(&self.ca_pem),
            cert = b64(&self.admin_pem),
            key = b64(&self.admin_key_pem),
        )
    }
}

/// Writes `text` to `path` with `mode`, owned by `uid` (the file is made fresh: an
/// old one, or a link in its place, is removed first).
pub fn write_private(path: &Path, text: &str, mode: u32, uid: u32) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.gid)
        .unwrap_or(nix::unistd::Gid::from_raw(0));
    nix::unistd::fchown(
        std::os::fd::AsRawFd::as_raw_fd(&f),
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(gid),
    )
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_config_takes_the_certificates_it_made() {
        let pki = Pki::make("t", "cluster.local", &["127.0.0.1".parse().unwrap()]).unwrap();
        pki.server_config().unwrap();
        let kc = pki.kubeconfig("t", "https://127.0.0.1:1234");
        assert!(kc.contains("server: https://127.0.0.1:1234"), "{kc}");
        assert!(kc.contains("current-context: testbed-t\n"), "{kc}");
        assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
