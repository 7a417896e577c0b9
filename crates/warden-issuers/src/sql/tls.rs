//! TLS on Warden's connections to database targets: the `tls` and `tls_ca_file` connection
//! settings, the CAs a server's certificate is checked against, rustls client configurations,
//! and errors that say what is wrong with a server's certificate and how to fix it.
//!
//! `tls` is one of:
//! - `"verify-full"`: encrypted, and the server's certificate must chain to a trusted CA (those
//!   in `tls_ca_file`, else the system's) and name the `host` Warden connects to. The default
//!   for every host but a loopback one.
//! - `"require"`: encrypted, the certificate not checked. It keeps out a passive listener, not
//!   an active attacker, who can present a certificate of its own.
//! - `"disable"`: plaintext. The default for a loopback host (`localhost`, `127.0.0.0/8`,
//!   `::1`) or a Unix socket directory, where the traffic never leaves the machine.
//!
//! Nothing ever falls back: a mode that encrypts fails when the server offers no TLS, since an
//! attacker on the path can make a server seem to offer none.
//!
//! rustls runs with AWS-LC, the workspace's one crypto provider, which is also installed as the
//! process default for the MariaDB driver, which builds its configurations with the default.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::settings::Problems;
use crate::{Error, Settings};

/// How Warden's connections to one database target are protected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Tls {
    /// Plaintext.
    Disable,
    /// Encrypted; the server's certificate is not checked.
    Require,
    /// Encrypted to a server whose certificate chains to a CA in `ca_file` (none: one the
    /// system trusts) and names the host connected to.
    VerifyFull { ca_file: Option<PathBuf> },
}

impl Tls {
    /// The setting's value, as written in `targets.toml`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Tls::Disable => "disable",
            Tls::Require => "require",
            Tls::VerifyFull { .. } => "verify-full",
        }
    }
}

/// The values `tls` takes.
const MODES: &str = "\"verify-full\", \"require\" or \"disable\"";

/// Reads `tls` and `tls_ca_file` from a target's connection table whose host is `host`, noting
/// every problem in `problems` (a value that could not be read is left out meanwhile).
pub(crate) fn read(kind: &str, settings: &Settings, host: &str, problems: &mut Problems) -> Tls {
    let ca_file = match settings.get("tls_ca_file") {
        None => None,
        Some(serde_json::Value::String(s)) if Path::new(s).is_absolute() => Some(PathBuf::from(s)),
        Some(_) => {
            problems.add(
                Some("tls_ca_file"),
                format!(
                    "connection setting `tls_ca_file` of a {kind} target must be the absolute \
                     path of a PEM file of CA certificates"
                ),
            );
            None
        }
    };
    let mode = match settings.get("tls") {
        None => None,
        Some(serde_json::Value::String(s)) => problems.check("tls", mode(kind, s)),
        Some(_) => {
            problems.add(
                Some("tls"),
                format!("connection setting `tls` of a {kind} target must be {MODES}"),
            );
            None
        }
    };
    let mode = mode.unwrap_or(if ca_file.is_some() || !is_local(host) {
        "verify-full"
    } else {
        "disable"
    });
    if mode != "verify-full" && ca_file.is_some() {
        problems.add(
            Some("tls_ca_file"),
            format!(
                "connection setting `tls_ca_file` of a {kind} target is used only with \
                 `tls = \"verify-full\"`: with `tls = \"{mode}\"` no certificate is checked"
            ),
        );
    }
    let tls = match mode {
        "verify-full" => Tls::VerifyFull { ca_file },
        "require" => Tls::Require,
        _ => Tls::Disable,
    };
    if host.starts_with('/') && tls != Tls::Disable {
        // Set by `tls`, or else by `tls_ca_file`, which asks for `verify-full`.
        let key = if settings.contains_key("tls") {
            "tls"
        } else {
            "tls_ca_file"
        };
        problems.add(
            Some(key),
            format!(
                "the host of a {kind} target, {host}, is a Unix socket directory, which carries \
                 no TLS: set `tls = \"disable\"`"
            ),
        );
    }
    tls
}

/// A `tls` value, checked.
fn mode(kind: &str, value: &str) -> Result<&'static str, Error> {
    let why_not = match value {
        "verify-full" => return Ok("verify-full"),
        "require" => return Ok("require"),
        "disable" => return Ok("disable"),
        "prefer" | "allow" => {
            " (Warden never falls back to plaintext: an attacker on the path could make the \
             server seem to offer no TLS)"
        }
        "verify-ca" => " (Warden checks the host name as well as the CA: use \"verify-full\")",
        _ => "",
    };
    Err(Error::Settings(format!(
        "connection setting `tls` of a {kind} target must be {MODES}, not {value:?}{why_not}"
    )))
}

/// Whether a connection to `host` stays on this machine: a loopback address, `localhost`, or a
/// Unix socket directory.
pub(crate) fn is_local(host: &str) -> bool {
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// AWS-LC, the workspace's crypto provider.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// Makes AWS-LC the process's default crypto provider unless one is already, for libraries
/// that build their TLS configurations with the default (the MariaDB driver).
pub(crate) fn install_default_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Another provider installed first is as good: the driver needs one, not this one.
        let _ = CryptoProvider::install_default(rustls::crypto::aws_lc_rs::default_provider());
    });
}

/// The CA certificates a server's certificate is checked against: those in `ca_file`, read at
/// every call (a renewed CA file is taken without a restart), or else the system's, read once.
/// Each is one rustls accepts as a trust anchor.
pub(crate) fn trusted(ca_file: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, String> {
    match ca_file {
        Some(path) => read_ca_file(path),
        None => system_roots(),
    }
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read tls_ca_file {shown}: {e}"))?;
    let mut certs = Vec::new();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| format!("tls_ca_file {shown} is not a valid PEM file: {e}"))?;
        RootCertStore::empty().add(cert.clone()).map_err(|e| {
            format!(
                "certificate {} in tls_ca_file {shown} cannot be a trusted CA: {e}",
                i + 1
            )
        })?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(format!(
            "tls_ca_file {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

fn system_roots() -> Result<Vec<CertificateDer<'static>>, String> {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    if let Some(roots) = ROOTS.get() {
        return Ok(roots.clone());
    }
    let found = rustls_native_certs::load_native_certs();
    let usable: Vec<_> = found
        .certs
        .into_iter()
        .filter(|c| RootCertStore::empty().add(c.clone()).is_ok())
        .collect();
    if usable.is_empty() {
        let mut why = String::new();
        for e in found.errors.iter().take(3) {
            let _ = write!(why, "; {e}");
        }
        // Not kept: the system's store may be installed later.
        return Err(format!(
            "no CA certificate was found in this system's trust store{why}: install one (e.g. \
             Debian's ca-certificates) or set tls_ca_file to the CA that signed the server's \
             certificate"
        ));
    }
    Ok(ROOTS.get_or_init(|| usable).clone())
}

/// `certs` as one PEM text, for a library that reads CAs from PEM.
pub(crate) fn to_pem(certs: &[CertificateDer<'_>]) -> Vec<u8> {
    use base64::Engine as _;
    let mut out = String::new();
    for cert in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let text = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        for line in text.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out.into_bytes()
}

/// The rustls client configuration for `tls`, `None` for plaintext.
pub(crate) fn client_config(tls: &Tls) -> Result<Option<ClientConfig>, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("setting up TLS: {e}"))?;
    Ok(Some(match tls {
        Tls::Disable => return Ok(None),
        Tls::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth(),
        Tls::VerifyFull { ca_file } => {
            let mut roots = RootCertStore::empty();
            for cert in trusted(ca_file.as_deref())? {
                // Each was checked to be one.
                let _ = roots.add(cert);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    }))
}

/// `tls = "require"`: any certificate is taken, though the server must still prove it holds
/// the key of the one it shows (which PostgreSQL's channel binding relies on).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a failed TLS handshake with `host` under `tls` says, and how to fix it, when `e` or
/// what caused it is a rustls error.
pub(crate) fn explain(
    e: &(dyn std::error::Error + 'static),
    host: &str,
    tls: &Tls,
) -> Option<String> {
    let failure = rustls_error(e)?;
    let trusted = match tls {
        Tls::VerifyFull {
            ca_file: Some(path),
        } => format!("a CA in {}", path.display()),
        _ => "a CA this system trusts (tls_ca_file is not set)".to_owned(),
    };
    const UNVERIFIED: &str = "or tls = \"require\" to encrypt without verifying (which does not \
                              protect against an active attacker)";
    Some(match failure {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => format!(
            "TLS: the server's certificate is not signed by {trusted}: set tls_ca_file to the \
             CA that signed it, {UNVERIFIED}"
        ),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented,
            ..
        }) => format!(
            "TLS: the server's certificate is not valid for {host} (it names {}): set host to a \
             name the certificate holds or give the server a certificate for {host}, \
             {UNVERIFIED}",
            if presented.is_empty() {
                "no host".to_owned()
            } else {
                presented
                    .iter()
                    .map(|name| plain_name(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => format!(
            "TLS: the server's certificate is not valid for {host}: set host to a name the \
             certificate holds or give the server a certificate for {host}, {UNVERIFIED}"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "TLS: the server's certificate has expired: renew it (or check this machine's clock)"
            .to_owned(),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "TLS: the server's certificate is not valid yet: check the clocks of this machine \
              and of whoever issued it"
            .to_owned(),
        rustls::Error::InvalidCertificate(other) => format!(
            "TLS: the server's certificate was refused ({other:?}): give the server a \
             certificate for {host} signed by {trusted}, {UNVERIFIED}"
        ),
        other => format!("TLS: the handshake with the server failed: {other}"),
    })
}

/// A name a certificate holds as rustls shows it (`DnsName("db.internal")`,
/// `IpAddress(10.0.0.5)`), as it would be written as a host.
fn plain_name(shown: &str) -> &str {
    shown
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            shown
                .strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        })
        .unwrap_or(shown)
}

/// A server that answered a TLS request with plaintext only, though `tls` demands TLS.
pub(crate) fn not_offered(tls: &Tls) -> String {
    format!(
        "TLS: the server does not offer TLS, which tls = \"{}\" demands: turn TLS on at the \
         server, or set tls = \"disable\" to send everything, passwords included, in plaintext",
        tls.name()
    )
}

/// Said with a refusal that `maybe` was the server's demand for TLS, when `tls` is `disable`.
pub(crate) fn demanded(maybe: &str) -> String {
    format!(
        "{maybe}, and tls = \"disable\": set tls = \"verify-full\" (with tls_ca_file if the \
         server's certificate is from a private CA)"
    )
}

/// The rustls error in `e`'s chain of causes, looking inside I/O errors too (whose `source`
/// skips the error they carry).
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(found) = e.downcast_ref::<rustls::Error>() {
        return Some(found);
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        && let Some(found) = rustls_error(inner)
    {
        return Some(found);
    }
    rustls_error(e.source()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_in(v: serde_json::Value) -> Result<Tls, String> {
        let settings = v.as_object().cloned().unwrap();
        let host = settings["host"].as_str().unwrap().to_owned();
        let mut problems = Problems::default();
        let tls = read("postgres", &settings, &host, &mut problems);
        problems.or_first(tls).map_err(|e| e.to_string())
    }

    #[test]
    fn the_default_verifies_unless_the_host_is_this_machine() {
        for host in [
            "db.internal",
            "10.0.0.5",
            "::ffff:10.0.0.5",
            "localhost.example",
        ] {
            assert_eq!(
                read_in(serde_json::json!({"host": host})),
                Ok(Tls::VerifyFull { ca_file: None }),
                "{host}"
            );
        }
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
            "/var/run/postgresql",
        ] {
            assert_eq!(
                read_in(serde_json::json!({"host": host})),
                Ok(Tls::Disable),
                "{host}"
            );
        }
        // A CA file says what is meant, on loopback too.
        assert_eq!(
            read_in(serde_json::json!({"host": "127.0.0.1", "tls_ca_file": "/etc/ca.pem"})),
            Ok(Tls::VerifyFull {
                ca_file: Some("/etc/ca.pem".into())
            })
        );
        assert_eq!(
            read_in(serde_json::json!({"host": "db", "tls": "disable"})),
            Ok(Tls::Disable)
        );
        assert_eq!(
            read_in(serde_json::json!({"host": "127.0.0.1", "tls": "require"})),
            Ok(Tls::Require)
        );
        assert_eq!(
            read_in(serde_json::json!({"host": "127.0.0.1", "tls": "verify-full"})),
            Ok(Tls::VerifyFull { ca_file: None })
        );
    }

    #[test]
    fn wrong_values_are_refused() {
        let err = |v| read_in(v).unwrap_err();
        assert!(
            err(serde_json::json!({"host": "db", "tls": "prefer"})).contains("never falls back")
        );
        assert!(err(serde_json::json!({"host": "db", "tls": "verify-ca"})).contains("host name"));
        assert!(
            err(serde_json::json!({"host": "db", "tls": "on"}))
                .contains("must be \"verify-full\", \"require\" or \"disable\", not \"on\"")
        );
        assert!(err(serde_json::json!({"host": "db", "tls": true})).contains("`tls`"));
        assert!(
            err(serde_json::json!({"host": "db", "tls_ca_file": "ca.pem"}))
                .contains("absolute path")
        );
        assert!(err(serde_json::json!({"host": "db", "tls_ca_file": 1})).contains("absolute"));
        assert!(
            err(serde_json::json!({"host": "db", "tls": "require", "tls_ca_file": "/ca.pem"}))
                .contains("used only with `tls = \"verify-full\"`")
        );
        assert!(
            err(serde_json::json!({"host": "/run/postgresql", "tls": "require"}))
                .contains("Unix socket")
        );
    }

    #[test]
    fn a_ca_file_must_hold_certificates_and_is_named_when_it_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = trusted(Some(&missing)).unwrap_err();
        assert!(
            err.starts_with(&format!("cannot read tls_ca_file {}", missing.display())),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = trusted(Some(&empty)).unwrap_err();
        assert!(err.contains(&empty.display().to_string()), "{err}");
        assert!(err.contains("no PEM certificate"), "{err}");

        let ca = warden_testkit::TestCa::new();
        let certs = trusted(Some(&ca.ca_file())).unwrap();
        assert_eq!(certs.len(), 1);
        // What is handed on as PEM reads back as the same certificates.
        let again: Vec<_> = CertificateDer::pem_slice_iter(&to_pem(&certs))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(again, certs);
        assert!(
            client_config(&Tls::VerifyFull {
                ca_file: Some(ca.ca_file())
            })
            .is_ok_and(|c| c.is_some())
        );
        assert!(client_config(&Tls::Require).is_ok_and(|c| c.is_some()));
        assert!(client_config(&Tls::Disable).is_ok_and(|c| c.is_none()));
    }

    #[test]
    fn handshake_failures_say_what_to_do() {
        let tls = Tls::VerifyFull {
            ca_file: Some("/etc/warden/db-ca.pem".into()),
        };
        let wrapped = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let unknown = wrapped(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        let text = explain(&unknown, "db", &tls).unwrap();
        assert!(
            text.contains("not signed by a CA in /etc/warden/db-ca.pem: set tls_ca_file"),
            "{text}"
        );
        assert!(text.contains("tls = \"require\""), "{text}");
        let text = explain(&unknown, "db", &Tls::VerifyFull { ca_file: None }).unwrap();
        assert!(text.contains("a CA this system trusts"), "{text}");
        let name = wrapped(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("db").unwrap().to_owned(),
                presented: vec![
                    "IpAddress(127.0.0.1)".into(),
                    "DnsName(\"db.internal\")".into(),
                ],
            },
        ));
        let text = explain(&name, "db", &tls).unwrap();
        assert!(
            text.contains("not valid for db (it names 127.0.0.1, db.internal): set host"),
            "{text}"
        );
        let plain = std::io::Error::other("connection reset");
        assert_eq!(explain(&plain, "db", &tls), None);
    }
}
