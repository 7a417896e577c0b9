//! A sink's `ca_file`: a PEM file of the only CA certificates trusted for its TLS peer, for a
//! receiver or relay whose certificate comes from a private CA. Read and checked when the
//! configuration is, so a wrong path stops start-up instead of failing every delivery.

use std::path::Path;

/// The file's bytes, once they are known to hold at least one certificate.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read `ca_file` {shown}: {e}"))?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        Ok(_) => Err(format!(
            "`ca_file` {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )),
        Err(e) => Err(format!("`ca_file` {shown} is not a valid PEM file: {e}")),
    }
}
