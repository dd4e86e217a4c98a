//! TLS for the stealth transport: the listener's certificate (the operator's, or a self-signed
//! one generated once and kept in the data directory), and the rustls configurations of both
//! ends.
//!
//! Both ends use rustls with the aws-lc-rs provider, the one libp2p's QUIC brings, and offer
//! only the ALPN a browser uses for a WebSocket connection, `http/1.1`. Early data (0-RTT) is
//! off on both sides, so a replayed first flight can never carry a request.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::{Error, Result};
use crate::transport::secret::write_private;

/// The ALPN protocol both ends offer: what a browser offers for a WebSocket connection.
pub const ALPN: &[u8] = b"http/1.1";

/// The generated certificate and key, relative to the data directory.
pub const CERT_FILE: &str = "stealth/cert.pem";
/// See [`CERT_FILE`].
pub const KEY_FILE: &str = "stealth/key.pem";

/// A generated certificate is valid this long, as Debian's own self-signed "snakeoil"
/// certificate is: a renewal changes the certificate's hash, and with it every address that
/// pins it.
pub const GENERATED_VALIDITY_DAYS: i64 = 3650;

/// The name in a generated certificate when the operator named none.
pub const DEFAULT_NAME: &str = "localhost";

/// Largest certificate or key file read.
const MAX_PEM_LEN: u64 = 256 * 1024;

/// The crypto provider of every stealth TLS connection.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The listener's certificate chain and key.
pub struct Identity {
    /// The chain, end-entity certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// Whether Kolokol generated it (so no public root vouches for it).
    pub generated: bool,
}

impl Identity {
    /// SHA-256 of the end-entity certificate: the pin that `/certhash/` carries.
    pub fn hash(&self) -> [u8; 32] {
        sha256(self.chain.first().map(|c| c.as_ref()).unwrap_or_default())
    }

    /// The operator's certificate and key from PEM files, or else the generated one in the
    /// data directory, created on first use for `name`.
    pub fn load(
        data_dir: &Path,
        cert: Option<&Path>,
        key: Option<&Path>,
        name: &str,
        now: u64,
    ) -> Result<Self> {
        match (cert, key) {
            (Some(cert), Some(key)) => Self::read(cert, key, false),
            (None, None) => {
                let (cert, key) = (data_dir.join(CERT_FILE), data_dir.join(KEY_FILE));
                if !cert.exists() {
                    generate(&cert, &key, name, now)?;
                }
                Self::read(&cert, &key, true)
            }
            _ => Err(Error::Address(
                "a stealth certificate needs both --stealth-cert and --stealth-key (PEM files)"
                    .into(),
            )),
        }
    }

    fn read(cert: &Path, key: &Path, generated: bool) -> Result<Self> {
        let text = |path: &Path| -> Result<Vec<u8>> {
            let bad = |detail: String| Error::Config { path: path.to_owned(), detail };
            let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
            if meta.len() > MAX_PEM_LEN {
                return Err(bad(format!("is {} bytes; is it really a PEM file?", meta.len())));
            }
            std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text(cert)?)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Config {
                path: cert.to_owned(),
                detail: format!("not a PEM certificate chain: {e}"),
            })?;
        if chain.is_empty() {
            return Err(Error::Config {
                path: cert.to_owned(),
                detail: "holds no `BEGIN CERTIFICATE` block".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&text(key)?).map_err(|e| Error::Config {
            path: key.to_owned(),
            detail: format!("not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        })?;
        Ok(Self { chain, key, generated })
    }

    /// The server configuration for this certificate.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth().with_single_cert(self.chain.clone(), self.key.clone_key())
            })
            .map_err(|e| Error::Address(format!("the stealth certificate is unusable: {e}")))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(config))
    }
}

/// Generates a self-signed ECDSA P-256 certificate for `name`, valid from a day ago for
/// [`GENERATED_VALIDITY_DAYS`], with a random serial number, as an ordinary self-signed web
/// server certificate is (not rcgen's defaults, whose subject and dates are recognisable).
fn generate(cert: &Path, key: &Path, name: &str, now: u64) -> Result<()> {
    let fail = |e: rcgen::Error| Error::Address(format!("cannot generate a certificate: {e}"));
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(fail)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let today = (now / 86_400) as i64;
    let date = |days: i64| {
        let (y, m, d) = crate::transport::civil_from_days(days);
        rcgen::date_time_ymd(y, m, d)
    };
    params.not_before = date(today - 1);
    params.not_after = date(today + GENERATED_VALIDITY_DAYS);
    let certificate = params.self_signed(&pair).map_err(fail)?;
    write_private(key, pair.serialize_pem().as_bytes())?;
    write_private(cert, certificate.pem().as_bytes())?;
    tracing::info!(path = %cert.display(), %name, "generated a self-signed certificate for the stealth transport");
    Ok(())
}

/// The client configuration for a listener: pinned to `certhash` if given, else checked
/// against the public roots for the server name.
pub fn client_config(certhash: Option<[u8; 32]>) -> Arc<rustls::ClientConfig> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    #[allow(clippy::expect_used)] // The default provider supports the default versions.
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3");
    let mut config = match certhash {
        Some(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { pin, algorithms }))
            .with_no_client_auth(),
        None => {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Arc::new(config)
}

/// The server name to send: the SNI if the address has one, else the IP address, which
/// rustls does not send (as browsers do not).
pub fn server_name(sni: Option<&str>, host: &str) -> std::io::Result<ServerName<'static>> {
    let name = sni.unwrap_or(host);
    ServerName::try_from(name.to_owned()).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad TLS name {name:?}: {e}"))
    })
}

/// Accepts exactly the certificate whose SHA-256 is `pin`, whatever its names and dates: the
/// pin came with the address, from someone who knows the listener.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if sha256(end_entity.as_ref()) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Paths of the generated certificate files, for messages.
pub fn generated_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join(CERT_FILE), data_dir.join(KEY_FILE))
}
