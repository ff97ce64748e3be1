//! TLS to PostgreSQL with rustls (managed PostgreSQL services require it):
//! `sslmode` and `sslrootcert` in the URL, read as libpq reads them.
//!
//! | `sslmode` | TLS | server certificate |
//! | --- | --- | --- |
//! | absent, `disable` | never | — |
//! | `prefer` | tried first, plain if the server has none | not checked, or as `verify-ca` with `sslrootcert` |
//! | `require` | always | not checked, or as `verify-ca` with `sslrootcert` (libpq does the same) |
//! | `verify-ca` | always | signed by `sslrootcert` |
//! | `verify-full` | always | signed by `sslrootcert` and naming the host connected to |
//!
//! `sslrootcert=FILE` is a PEM file of CA certificates (required by
//! `verify-ca` and `verify-full`). Without `sslmode` the connection is plain,
//! as it was before this option existed (libpq's default is `prefer`).
//! The `postgres` client does not know these options itself (its `Config`
//! knows `disable`, `prefer`, `require` and no CA file), so they are taken
//! out of the URL here and the rest is parsed by `postgres::Config`.

use std::path::PathBuf;
use std::sync::Arc;

use postgres::config::SslMode;
use postgres::{Client, NoTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How the server's certificate is checked (`sslmode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No TLS (also when `sslmode` is absent).
    Disable,
    /// TLS when the server offers it.
    Prefer,
    /// TLS always.
    Require,
    /// TLS, certificate signed by `sslrootcert`.
    VerifyCa,
    /// TLS, certificate signed by `sslrootcert` and valid for the host.
    VerifyFull,
}

/// The TLS options of a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) mode: Mode,
    pub(crate) root_cert: Option<PathBuf>,
}

/// How connections are made: plain or over rustls.
#[derive(Clone)]
pub(crate) enum Connector {
    Plain,
    Tls(MakeRustlsConnect),
}

/// A TLS option that cannot be used; the message names it.
fn invalid(msg: impl std::fmt::Display) -> crate::Error {
    crate::Error::storage(super::BACKEND, format!("invalid PostgreSQL URL: {msg}"))
}

/// Decodes `%XX` escapes (a CA file path in a URL query).
fn percent_decode(s: &str) -> Result<String, crate::Error> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid("a bad %-escape in sslrootcert"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid("sslrootcert is not UTF-8"))
}

/// Takes `sslmode` and `sslrootcert` out of `url` (a `postgres://` URL or a
/// `key=value` string); returns the rest and the settings.
pub(crate) fn split_url(url: &str) -> Result<(String, Settings), crate::Error> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> Result<bool, crate::Error> {
        match key {
            "sslmode" => {
                mode = Some(match value {
                    "disable" => Mode::Disable,
                    "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => {
                        return Err(invalid(format!(
                            "sslmode {other:?} (disable, prefer, require, verify-ca or verify-full)"
                        )))
                    }
                })
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(k, &percent_decode(v)?)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for pair in url.split_whitespace() {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(k.trim(), v.trim_matches('\''))? {
                kept.push(pair);
            }
        }
        kept.join(" ")
    };
    let mode = mode.unwrap_or(Mode::Disable);
    if matches!(mode, Mode::VerifyCa | Mode::VerifyFull) && root_cert.is_none() {
        return Err(invalid(
            "sslmode=verify-ca and verify-full need sslrootcert=FILE (the CA certificates, PEM)",
        ));
    }
    Ok((rest, Settings { mode, root_cert }))
}

/// The CA certificates of a PEM file.
fn load_roots(path: &std::path::Path) -> Result<RootCertStore, crate::Error> {
    let pem = std::fs::read(path)
        .map_err(|e| invalid(format!("cannot read sslrootcert {}: {e}", path.display())))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            invalid(format!(
                "sslrootcert {}: not PEM certificates: {e}",
                path.display()
            ))
        })?;
        roots.add(cert).map_err(|e| {
            invalid(format!(
                "sslrootcert {}: unusable certificate: {e}",
                path.display()
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(invalid(format!(
            "sslrootcert {} holds no certificate",
            path.display()
        )));
    }
    Ok(roots)
}

/// Sets `config`'s TLS mode and returns the connector for `settings`.
pub(crate) fn connector(
    settings: &Settings,
    config: &mut postgres::Config,
) -> Result<Connector, crate::Error> {
    config.ssl_mode(match settings.mode {
        Mode::Disable => SslMode::Disable,
        Mode::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    });
    if settings.mode == Mode::Disable {
        return Ok(Connector::Plain);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match &settings.root_cert {
        None => Arc::new(Unverified(provider)),
        Some(path) => {
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(load_roots(path)?), provider)
                    .build()
                    .map_err(|e| invalid(format!("TLS: {e}")))?;
            if settings.mode == Mode::VerifyFull {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            }
        }
    };
    let tls = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Connector::Tls(MakeRustlsConnect::new(tls)))
}

/// A connection error with its causes ("db error: FATAL: ...", "error
/// performing TLS handshake: invalid peer certificate: ..."): the client's
/// own message alone names neither.
pub(crate) fn describe(e: &postgres::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

/// Opens one connection with `connector`.
pub(crate) fn connect(
    config: &postgres::Config,
    connector: &Connector,
) -> Result<Client, postgres::Error> {
    match connector {
        Connector::Plain => config.connect(NoTls),
        Connector::Tls(t) => config.connect(t.clone()),
    }
}

/// `require`/`prefer` without a CA file: the connection is encrypted but the
/// certificate is not checked (libpq's meaning). The handshake signatures
/// still are, so the server holds the key of the certificate it sent.
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
        verify_tls12_signature(
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
        verify_tls13_signature(
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

/// `verify-ca`: the chain must lead to a trusted CA; the name is not checked.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, Settings) {
        split_url(url).unwrap()
    }

    #[test]
    fn takes_the_tls_options_out_of_urls() {
        let (rest, s) = split("postgres://u@h:5432/db");
        assert_eq!(rest, "postgres://u@h:5432/db");
        assert_eq!(
            s,
            Settings {
                mode: Mode::Disable,
                root_cert: None
            }
        );
        let (rest, s) = split(
            "postgresql://u:p@db.example.com/q?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem&options=-csearch_path%3Dq",
        );
        assert_eq!(
            rest,
            "postgresql://u:p@db.example.com/q?options=-csearch_path%3Dq"
        );
        assert_eq!(s.mode, Mode::VerifyFull);
        assert_eq!(s.root_cert, Some(PathBuf::from("/etc/ca x.pem")));
        let (rest, s) = split("postgres://h/db?sslmode=require");
        assert_eq!((rest.as_str(), s.mode), ("postgres://h/db", Mode::Require));
        let (rest, s) = split("host=h user=u sslmode=verify-ca sslrootcert=/ca.pem dbname=d");
        assert_eq!(rest, "host=h user=u dbname=d");
        assert_eq!(s.mode, Mode::VerifyCa);
        assert_eq!(s.root_cert, Some(PathBuf::from("/ca.pem")));
        for (m, want) in [("disable", Mode::Disable), ("prefer", Mode::Prefer)] {
            assert_eq!(split(&format!("postgres://h/d?sslmode={m}")).1.mode, want);
        }
    }

    #[test]
    fn refuses_unknown_modes_and_verification_without_a_ca() {
        let e = split_url("postgres://h/d?sslmode=allow")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode \"allow\""), "{e}");
        for m in ["verify-ca", "verify-full"] {
            let e = split_url(&format!("postgres://h/d?sslmode={m}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("sslrootcert"), "{e}");
        }
        let e = split_url("postgres://h/d?sslrootcert=%zz")
            .unwrap_err()
            .to_string();
        assert!(e.contains("%-escape"), "{e}");
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let s = Settings {
            mode: Mode::VerifyFull,
            root_cert: Some(f.clone()),
        };
        let mut c = postgres::Config::new();
        let e = connector(&s, &mut c).err().unwrap().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        let missing = Settings {
            mode: Mode::VerifyCa,
            root_cert: Some(dir.path().join("none.pem")),
        };
        let e = connector(&missing, &mut c).err().unwrap().to_string();
        assert!(e.contains("cannot read sslrootcert"), "{e}");
        let plain = Settings {
            mode: Mode::Require,
            root_cert: None,
        };
        assert!(matches!(connector(&plain, &mut c), Ok(Connector::Tls(_))));
        assert_eq!(c.get_ssl_mode(), SslMode::Require);
    }
}
