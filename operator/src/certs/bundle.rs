//! The certificate material itself, without I/O: generating a CA and a serving
//! certificate, reading back what a Secret holds, and deciding what to renew.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, PublicKeyData,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::{Error, Result};

/// Secret keys, as CONTRACT.md fixes them.
pub const CA_CRT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

/// Lifetime of the operator's CA: long, because replacing it means every client that
/// trusts it (the webhook's caBundle, agents' mounted ConfigMap) must follow.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Certificates start this long before they are made, so a node whose clock is a little
/// behind still accepts them.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The four PEM documents kept in the Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    pub ca_crt: String,
    pub ca_key: String,
    pub tls_crt: String,
    pub tls_key: String,
}

impl std::fmt::Debug for Bundle {
    // Keys never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("ca_crt", &self.ca_crt)
            .field("tls_crt", &self.tls_crt)
            .finish_non_exhaustive()
    }
}

impl Bundle {
    /// A new CA and a serving certificate for `names` signed by it.
    pub fn generate(names: &[String], now: SystemTime, validity: Duration) -> Result<Self> {
        let (ca_crt, ca_key) = new_ca(names, now, CA_VALIDITY)?;
        let (tls_crt, tls_key) = issue_serving(&ca_crt, &ca_key, names, now, validity)?;
        Ok(Self {
            ca_crt,
            ca_key,
            tls_crt,
            tls_key,
        })
    }

    /// The same CA with a new serving certificate (and key) for `names`.
    pub fn renew_serving(
        &self,
        names: &[String],
        now: SystemTime,
        validity: Duration,
    ) -> Result<Self> {
        let (tls_crt, tls_key) = issue_serving(&self.ca_crt, &self.ca_key, names, now, validity)?;
        Ok(Self {
            tls_crt,
            tls_key,
            ..self.clone()
        })
    }

    /// Reads the four PEM documents out of a Secret's data.
    pub fn from_data(data: Option<&BTreeMap<String, ByteString>>) -> Result<Self, String> {
        let get = |key: &str| -> Result<String, String> {
            let bytes = data
                .and_then(|d| d.get(key))
                .ok_or_else(|| format!("the Secret has no {key}"))?;
            String::from_utf8(bytes.0.clone()).map_err(|_| format!("{key} is not PEM text"))
        };
        Ok(Self {
            ca_crt: get(CA_CRT)?,
            ca_key: get(CA_KEY)?,
            tls_crt: get(TLS_CRT)?,
            tls_key: get(TLS_KEY)?,
        })
    }

    /// The Secret's data for this bundle.
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        [
            (CA_CRT, &self.ca_crt),
            (CA_KEY, &self.ca_key),
            (TLS_CRT, &self.tls_crt),
            (TLS_KEY, &self.tls_key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect()
    }
}

/// The DNS names the API server and agents use for the operator's Service.
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Whether a certificate ending at `not_after` must be replaced at `now`.
pub fn needs_renewal(now: SystemTime, not_after: SystemTime, renew_before: Duration) -> bool {
    now.checked_add(renew_before)
        .is_none_or(|deadline| deadline >= not_after)
}

/// A new self-signed CA: (certificate PEM, key PEM). It may sign only for `names` (the
/// Service's) and no IP address (name constraints, RFC 5280 4.2.1.10): its key is read by
/// every replica from the Secret, and were it stolen, it could not vouch for any other
/// server to the API server, the agents or nescli.
pub fn new_ca(names: &[String], now: SystemTime, validity: Duration) -> Result<(String, String)> {
    let key = KeyPair::generate().map_err(gen_error("generate the CA key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("nes-operator CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: names.iter().cloned().map(GeneralSubtree::DnsName).collect(),
        excluded_subtrees: vec![
            GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
            GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
        ],
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, now, validity)?;
    let cert = params
        .self_signed(&key)
        .map_err(gen_error("self-sign the CA"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `names` signed by the CA: (certificate PEM, key PEM).
pub fn issue_serving(
    ca_crt: &str,
    ca_key: &str,
    names: &[String],
    now: SystemTime,
    validity: Duration,
) -> Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key).map_err(gen_error("read the CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(ca_crt, ca_key).map_err(gen_error("read the CA"))?;
    let key = KeyPair::generate().map_err(gen_error("generate the serving key"))?;
    let mut params =
        CertificateParams::new(names.to_vec()).map_err(gen_error("use the Service names"))?;
    params.distinguished_name = name(names.last().map_or("nes-operator", String::as_str));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now, validity)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(gen_error("sign the serving certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "nes");
    dn
}

fn set_validity(params: &mut CertificateParams, now: SystemTime, validity: Duration) -> Result<()> {
    let not_after = now
        .checked_add(validity)
        .ok_or_else(|| Error::CertConfig(format!("validity {validity:?} is out of range")))?;
    params.not_before = now.checked_sub(BACKDATE).unwrap_or(now).into();
    params.not_after = not_after.into();
    Ok(())
}

fn gen_error(context: &'static str) -> impl Fn(rcgen::Error) -> Error {
    move |source| Error::Certificate {
        context: context.into(),
        source,
    }
}

/// What the operator reads back from a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub dns_names: Vec<String>,
    pub is_ca: bool,
}

/// Reads the first certificate of a PEM document.
pub fn cert_info(pem: &str) -> Result<CertInfo, String> {
    with_cert(pem, |cert| {
        let validity = cert.validity();
        let dns_names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(error) => return Err(format!("unreadable subjectAltName: {error}")),
        };
        Ok(CertInfo {
            not_before: at(validity.not_before.timestamp()),
            not_after: at(validity.not_after.timestamp()),
            dns_names,
            is_ca: cert.is_ca(),
        })
    })
}

fn at(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

fn with_cert<T>(
    pem: &str,
    read: impl FnOnce(&X509Certificate<'_>) -> Result<T, String>,
) -> Result<T, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|error| format!("not a PEM certificate: {error}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|error| format!("not an X.509 certificate: {error}"))?;
    read(&cert)
}

/// Whether `cert_pem` carries the public key of `key_pem`.
fn key_matches(cert_pem: &str, key_pem: &str) -> Result<(), String> {
    let key = KeyPair::from_pem(key_pem).map_err(|error| format!("unreadable key: {error}"))?;
    with_cert(cert_pem, |cert| {
        if cert.public_key().raw == key.subject_public_key_info().as_slice() {
            Ok(())
        } else {
            Err("the key does not belong to the certificate".into())
        }
    })
}

/// Whether `cert_pem` was signed by the CA in `ca_pem`.
fn signed_by(cert_pem: &str, ca_pem: &str) -> Result<(), String> {
    with_cert(ca_pem, |ca| {
        with_cert(cert_pem, |cert| {
            cert.verify_signature(Some(ca.public_key()))
                .map_err(|_| "it is not signed by the CA".into())
        })
    })
}

/// What to do with the material a Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Everything is current; look again at `renew_at`.
    Keep { renew_at: SystemTime },
    /// Keep the CA, issue a new serving certificate.
    RenewServing { reason: String },
    /// Start over with a new CA (and a serving certificate signed by it).
    NewCa { reason: String },
}

/// Decides whether the bundle can keep serving `names` at `now`.
pub fn plan(bundle: &Bundle, names: &[String], now: SystemTime, renew_before: Duration) -> Plan {
    let ca = match inspect_ca(bundle) {
        Ok(ca) => ca,
        Err(reason) => return Plan::NewCa { reason },
    };
    if needs_renewal(now, ca.not_after, renew_before) {
        return Plan::NewCa {
            reason: "the CA expires soon".into(),
        };
    }
    let serving = match inspect_serving(bundle) {
        Ok(serving) => serving,
        Err(reason) => return Plan::RenewServing { reason },
    };
    let mut have = serving.dns_names.clone();
    let mut want = names.to_vec();
    have.sort();
    want.sort();
    if have != want {
        return Plan::RenewServing {
            reason: format!("the serving certificate names {have:?}, not {want:?}"),
        };
    }
    if needs_renewal(now, serving.not_after, renew_before) {
        return Plan::RenewServing {
            reason: "the serving certificate expires soon".into(),
        };
    }
    let first_expiry = ca.not_after.min(serving.not_after);
    Plan::Keep {
        renew_at: first_expiry
            .checked_sub(renew_before)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

fn inspect_ca(bundle: &Bundle) -> Result<CertInfo, String> {
    let ca = cert_info(&bundle.ca_crt).map_err(|e| format!("{CA_CRT}: {e}"))?;
    if !ca.is_ca {
        return Err(format!("{CA_CRT} is not a CA certificate"));
    }
    key_matches(&bundle.ca_crt, &bundle.ca_key).map_err(|e| format!("{CA_KEY}: {e}"))?;
    Ok(ca)
}

fn inspect_serving(bundle: &Bundle) -> Result<CertInfo, String> {
    let serving = cert_info(&bundle.tls_crt).map_err(|e| format!("{TLS_CRT}: {e}"))?;
    key_matches(&bundle.tls_crt, &bundle.tls_key).map_err(|e| format!("{TLS_KEY}: {e}"))?;
    signed_by(&bundle.tls_crt, &bundle.ca_crt).map_err(|e| format!("{TLS_CRT}: {e}"))?;
    Ok(serving)
}

#[cfg(test)]
mod tests;
