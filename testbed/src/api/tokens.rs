//! ServiceAccount tokens, as the API server issues them to kubelets for pods
//! (`TokenRequest`) and checks them on every request: a JWT naming the pod's
//! namespace, its ServiceAccount and the pod, bound to the pod (it stops working
//! when the pod is gone, as a bound token does).
//!
//! Upstream signs with an RSA key (RS256) whose public half it publishes; here the
//! key is a per-testbed HMAC secret (HS256) that never leaves the process. Clients
//! treat a token as opaque, so kubectl, client-go, kube-rs and the Python client
//! cannot tell the difference.

use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How long a token is valid: the API server extends kubelets' tokens to a year.
const LIFETIME_SECONDS: u64 = 365 * 24 * 3600;

/// Who a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub namespace: String,
    pub service_account: String,
    pub pod: String,
}

impl Subject {
    /// The user name the API server sees: `system:serviceaccount:NS:NAME`.
    pub fn user(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

#[derive(Serialize, Deserialize)]
struct PodRef {
    name: String,
}

#[derive(Serialize, Deserialize)]
struct AccountRef {
    name: String,
}

#[derive(Serialize, Deserialize)]
struct Bound {
    namespace: String,
    pod: PodRef,
    serviceaccount: AccountRef,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    aud: Vec<String>,
    exp: u64,
    iat: u64,
    iss: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Bound,
    nbf: u64,
    sub: String,
}

/// The testbed's token issuer.
pub struct Tokens {
    key: hmac::Key,
    issuer: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Tokens {
    /// An issuer with a fresh random key; `issuer` is the `iss` and `aud` of its
    /// tokens (`https://kubernetes.default.svc.<domain>`, as kubeadm sets it).
    pub fn new(issuer: &str) -> Result<Tokens, ring::error::Unspecified> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)?;
        Ok(Tokens {
            key,
            issuer: issuer.to_string(),
        })
    }

    /// A token for pod `namespace/pod` running as ServiceAccount `account`.
    pub fn issue(&self, namespace: &str, account: &str, pod: &str) -> String {
        self.issue_at(namespace, account, pod, now())
    }

    fn issue_at(&self, namespace: &str, account: &str, pod: &str, iat: u64) -> String {
        let header = json!({"alg": "HS256", "kid": "testbed", "typ": "JWT"});
        let claims = Claims {
            aud: vec![self.issuer.clone()],
            exp: iat + LIFETIME_SECONDS,
            iat,
            iss: self.issuer.clone(),
            kubernetes: Bound {
                namespace: namespace.into(),
                pod: PodRef { name: pod.into() },
                serviceaccount: AccountRef {
                    name: account.into(),
                },
            },
            nbf: iat,
            sub: format!("system:serviceaccount:{namespace}:{account}"),
        };
        let signed = format!(
            "{}.{}",
            BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
            BASE64URL_NOPAD.encode(&serde_json::to_vec(&claims).expect("claims serialize")),
        );
        let tag = hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", BASE64URL_NOPAD.encode(tag.as_ref()))
    }

    /// Who `token` names, when this issuer signed it and it has not expired.
    pub fn verify(&self, token: &str) -> Option<Subject> {
        self.verify_at(token, now())
    }

    fn verify_at(&self, token: &str, at: u64) -> Option<Subject> {
        // Bounded before anything is decoded: a token is a few hundred bytes.
        if token.len() > 4096 {
            return None;
        }
        let (signed, tag) = token.rsplit_once('.')?;
        let tag = BASE64URL_NOPAD.decode(tag.as_bytes()).ok()?;
        hmac::verify(&self.key, signed.as_bytes(), &tag).ok()?;
        let (_, claims) = signed.split_once('.')?;
        let claims: Claims =
            serde_json::from_slice(&BASE64URL_NOPAD.decode(claims.as_bytes()).ok()?).ok()?;
        let fresh = claims.nbf <= at + 60 && at < claims.exp;
        (fresh && claims.iss == self.issuer).then_some(Subject {
            namespace: claims.kubernetes.namespace,
            service_account: claims.kubernetes.serviceaccount.name,
            pod: claims.kubernetes.pod.name,
        })
    }
}

/// What the kubelet puts in every pod (unless it opts out with
/// `automountServiceAccountToken: false`): the token, the cluster's CA and the pod's
/// namespace under `/var/run/secrets/kubernetes.io/serviceaccount`, and the
/// `kubernetes` Service's address in `KUBERNETES_SERVICE_HOST/PORT`.
#[derive(Debug)]
pub struct ServiceAccounts {
    pub tokens: Tokens,
    pub ca_pem: String,
    /// The `kubernetes` Service's ClusterIP (its port is 443).
    pub service_ip: Ipv4Addr,
}

/// Where the files are in a pod.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

    #[test]
    fn a_token_names_its_pod_and_account_and_only_its_issuer_accepts_it() {
        let tokens = Tokens::new(ISSUER).unwrap();
        let token = tokens.issue_at("team-a", "default", "client", 1_000_000);
        let subject = tokens.verify_at(&token, 1_000_010).unwrap();
        assert_eq!(
            subject,
            Subject {
                namespace: "team-a".into(),
                service_account: "default".into(),
                pod: "client".into()
            }
        );
        assert_eq!(subject.user(), "system:serviceaccount:team-a:default");
        // A JWT whose claims clients can read, as they can upstream's.
        let claims = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&BASE64URL_NOPAD.decode(claims.as_bytes()).unwrap()).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:team-a:default");
        assert_eq!(claims["kubernetes.io"]["pod"]["name"], "client");
        assert_eq!(claims["aud"][0], ISSUER);

        // Another testbed's issuer, a changed claim, an expired token, garbage.
        let other = Tokens::new(ISSUER).unwrap();
        assert_eq!(other.verify_at(&token, 1_000_010), None);
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = BASE64URL_NOPAD.encode(
            String::from_utf8(BASE64URL_NOPAD.decode(parts[1].as_bytes()).unwrap())
                .unwrap()
                .replace("team-a", "kube-system")
                .as_bytes(),
        );
        parts[1] = &forged;
        assert_eq!(tokens.verify_at(&parts.join("."), 1_000_010), None);
        assert_eq!(tokens.verify_at(&token, 1_000_000 + LIFETIME_SECONDS), None);
        for junk in ["", ".", "a.b.c", "....", &"x".repeat(10_000)] {
            assert_eq!(tokens.verify_at(junk, 1_000_010), None, "{junk:.20}");
        }
    }
}
