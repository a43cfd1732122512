//! The `/etc/resolv.conf` and `/etc/hosts` kubelet writes for a pod, and the hostname
//! it gives the pod's UTS namespace: from its `dnsPolicy`, `dnsConfig`, `hostname`,
//! `subdomain` and `setHostnameAsFQDN`.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{PodDNSConfig, PodSpec};

/// What of a pod's spec its two files depend on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodDns {
    pub policy: Option<String>,
    pub config: Option<PodDNSConfig>,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    pub set_hostname_as_fqdn: bool,
}

// Plans compare pods; the DNS config compares as data.
impl Eq for PodDns {}

impl PodDns {
    pub fn of(spec: Option<&PodSpec>) -> Self {
        spec.map(|s| PodDns {
            policy: s.dns_policy.clone(),
            config: s.dns_config.clone(),
            hostname: s.hostname.clone(),
            subdomain: s.subdomain.clone(),
            set_hostname_as_fqdn: s.set_hostname_as_fqdn == Some(true),
        })
        .unwrap_or_default()
    }
}

/// What kubelet's `--cluster-dns` and `--cluster-domain` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    pub ip: Ipv4Addr,
    pub domain: String,
}

/// What kubelet makes for pod `namespace/name` at `ip`: its resolv.conf (with the
/// node's, this machine's, for `dnsPolicy: Default`), its hosts file and its names;
/// an error where kubelet refuses to start it.
pub fn files(
    pod: &PodDns,
    namespace: &str,
    name: &str,
    ip: Ipv4Addr,
    cluster: &ClusterDns,
) -> Result<(String, String, PodNames), String> {
    static NODE_RESOLV: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let node =
        NODE_RESOLV.get_or_init(|| std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let names = names(pod, name, namespace, &cluster.domain)?;
    Ok((
        resolv_conf(pod, namespace, cluster.ip, &cluster.domain, node),
        hosts(&names, ip),
        names,
    ))
}

/// Kubelet's limits (`validation.MaxDNSNameservers`, `MaxDNSSearchPaths`).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The pod's resolv.conf. `cluster_dns` and `domain` serve `ClusterFirst` (the
/// default); `node_resolv` (the node's own file) serves `Default`; `None` uses only
/// `dnsConfig`. `dnsConfig` is merged into the others as kubelet does.
pub fn resolv_conf(
    pod: &PodDns,
    namespace: &str,
    cluster_dns: Ipv4Addr,
    domain: &str,
    node_resolv: &str,
) -> String {
    let domain = domain.trim_end_matches('.');
    let (mut servers, mut searches, mut options): (Vec<String>, Vec<String>, Vec<String>) =
        match pod.policy.as_deref().unwrap_or("ClusterFirst") {
            "None" => Default::default(),
            "Default" => {
                let mut s = (Vec::new(), Vec::new(), Vec::new());
                for line in node_resolv.lines() {
                    let mut words = line.split_whitespace();
                    match words.next() {
                        Some("nameserver") => s.0.extend(words.map(str::to_string)),
                        Some("search") | Some("domain") => {
                            s.1 = words.map(str::to_string).collect()
                        }
                        Some("options") => s.2.extend(words.map(str::to_string)),
                        _ => {}
                    }
                }
                s
            }
            // ClusterFirst, and ClusterFirstWithHostNet for a pod on the pod network.
            _ => (
                vec![cluster_dns.to_string()],
                vec![
                    format!("{namespace}.svc.{domain}"),
                    format!("svc.{domain}"),
                    domain.to_string(),
                ],
                vec!["ndots:5".to_string()],
            ),
        };
    if let Some(c) = &pod.config {
        servers.extend(c.nameservers.iter().flatten().cloned());
        for s in c.searches.iter().flatten() {
            if !searches.contains(s) {
                searches.push(s.clone());
            }
        }
        for o in c.options.iter().flatten() {
            let Some(name) = o.name.as_deref() else {
                continue;
            };
            let value = match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.to_string(),
            };
            options.retain(|have| have.split(':').next() != Some(name));
            options.push(value);
        }
    }
    servers.dedup();
    servers.truncate(MAX_NAMESERVERS);
    searches.truncate(MAX_SEARCHES);
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// Kubelet's limits on a pod's hostname (`hostnameMaxLen`) and on the FQDN it is set
/// to with `setHostnameAsFQDN` (Linux's `HOST_NAME_MAX` + 1).
const HOSTNAME_MAX: usize = 63;
const FQDN_MAX: usize = 64;

/// A pod's names, as kubelet's `GeneratePodHostNameAndDomain` makes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNames {
    /// `spec.hostname`, or the pod's name, cut to 63 characters.
    pub hostname: String,
    /// `<hostname>.<subdomain>.<namespace>.svc.<domain>`, with a subdomain.
    pub fqdn: Option<String>,
    /// What `hostname` prints in the pod: the FQDN with `setHostnameAsFQDN`, else the
    /// hostname.
    pub uts: String,
}

/// The names of pod `namespace/name`; an error where kubelet refuses to start it.
pub fn names(pod: &PodDns, name: &str, namespace: &str, domain: &str) -> Result<PodNames, String> {
    let domain = domain.trim_end_matches('.');
    let mut hostname = pod.hostname.clone().unwrap_or_else(|| name.to_string());
    if hostname.len() > HOSTNAME_MAX {
        // truncatePodHostnameIfNeeded: cut, then no trailing '-' or '.'.
        hostname.truncate(HOSTNAME_MAX);
        let kept = hostname.trim_end_matches(['-', '.']).len();
        hostname.truncate(kept);
        if hostname.is_empty() {
            return Err(format!("hostname for pod {name:?} was invalid: \"\""));
        }
    }
    let fqdn = pod
        .subdomain
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|sub| format!("{hostname}.{sub}.{namespace}.svc.{domain}"));
    let uts = match &fqdn {
        Some(f) if pod.set_hostname_as_fqdn => {
            if f.len() > FQDN_MAX {
                return Err(format!(
                    "failed to construct FQDN from pod hostname and cluster domain, FQDN {f} is too long ({FQDN_MAX} characters is the max, {} characters requested)",
                    f.len()
                ));
            }
            f.clone()
        }
        _ => hostname.clone(),
    };
    Ok(PodNames {
        hostname,
        fqdn,
        uts,
    })
}

/// The pod's /etc/hosts, as kubelet's `managedHostsFileContent`: localhost, then the
/// pod's IP with its hostname (its fully qualified name first when it has a
/// subdomain), so that `hostname -f` prints the FQDN.
pub fn hosts(names: &PodNames, ip: Ipv4Addr) -> String {
    let host = &names.hostname;
    let own = match &names.fqdn {
        Some(fqdn) => format!("{ip}\t{fqdn}\t{host}"),
        None => format!("{ip}\t{host}"),
    };
    format!(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n\
         {own}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodDNSConfigOption;

    const DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
    const NODE: &str = "# the host's\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";

    #[test]
    fn cluster_first_is_the_default() {
        assert_eq!(
            resolv_conf(&PodDns::default(), "shop", DNS, "cluster.local", NODE),
            "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn default_takes_the_nodes_and_none_only_its_own() {
        let pod = PodDns {
            policy: Some("Default".into()),
            ..Default::default()
        };
        assert_eq!(
            resolv_conf(&pod, "shop", DNS, "cluster.local", NODE),
            "search corp.example\nnameserver 192.0.2.53\noptions edns0\n"
        );
        let pod = PodDns {
            policy: Some("None".into()),
            config: Some(PodDNSConfig {
                nameservers: Some(vec!["1.2.3.4".into()]),
                searches: Some(vec!["ns1.svc.cluster-domain.example".into()]),
                options: Some(vec![PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                }]),
            }),
            ..Default::default()
        };
        assert_eq!(
            resolv_conf(&pod, "shop", DNS, "cluster.local", NODE),
            "search ns1.svc.cluster-domain.example\nnameserver 1.2.3.4\noptions ndots:2\n"
        );
    }

    #[test]
    fn dns_config_merges_into_cluster_first() {
        let pod = PodDns {
            config: Some(PodDNSConfig {
                nameservers: Some(vec!["1.2.3.4".into()]),
                searches: Some(vec!["extra.example".into(), "svc.cluster.local".into()]),
                options: Some(vec![
                    PodDNSConfigOption {
                        name: Some("ndots".into()),
                        value: Some("1".into()),
                    },
                    PodDNSConfigOption {
                        name: Some("edns0".into()),
                        value: None,
                    },
                ]),
            }),
            ..Default::default()
        };
        assert_eq!(
            resolv_conf(&pod, "default", DNS, "cluster.local.", NODE),
            "search default.svc.cluster.local svc.cluster.local cluster.local extra.example\nnameserver 10.96.0.10\nnameserver 1.2.3.4\noptions ndots:1 edns0\n"
        );
    }

    #[test]
    fn hosts_has_the_pod_and_its_subdomain_name() {
        let ip = Ipv4Addr::new(10, 244, 1, 3);
        let plain = names(&PodDns::default(), "web-1", "default", "cluster.local").unwrap();
        assert_eq!(plain.uts, "web-1");
        assert_eq!(plain.fqdn, None);
        let text = hosts(&plain, ip);
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("\n10.244.1.3\tweb-1\n"), "{text}");
        let pod = PodDns {
            hostname: Some("db-0".into()),
            subdomain: Some("db".into()),
            ..Default::default()
        };
        let named = names(&pod, "db-0-pod", "prod", "cluster.local.").unwrap();
        assert_eq!(named.uts, "db-0", "the hostname, not the FQDN");
        assert_eq!(
            named.fqdn.as_deref(),
            Some("db-0.db.prod.svc.cluster.local")
        );
        let text = hosts(&named, Ipv4Addr::new(10, 244, 2, 6));
        assert!(
            text.ends_with("\n10.244.2.6\tdb-0.db.prod.svc.cluster.local\tdb-0\n"),
            "{text}"
        );
    }

    #[test]
    fn hostnames_are_cut_and_set_as_fqdn_as_kubelet_does() {
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        let cut = names(&PodDns::default(), &long, "default", "cluster.local").unwrap();
        assert_eq!(
            cut.hostname,
            "a".repeat(62),
            "63 characters, the trailing '-' dropped"
        );
        let fqdn = PodDns {
            subdomain: Some("db".into()),
            set_hostname_as_fqdn: true,
            ..Default::default()
        };
        let n = names(&fqdn, "db-0", "prod", "cluster.local").unwrap();
        assert_eq!(n.uts, "db-0.db.prod.svc.cluster.local");
        assert_eq!(n.hostname, "db-0", "/etc/hosts keeps the short name too");
        // Without a subdomain there is no FQDN to set.
        let alone = PodDns {
            set_hostname_as_fqdn: true,
            ..Default::default()
        };
        assert_eq!(
            names(&alone, "db-0", "prod", "cluster.local").unwrap().uts,
            "db-0"
        );
        let too_long = names(&fqdn, &"x".repeat(40), "prod", "cluster.local").unwrap_err();
        assert_eq!(
            too_long,
            "failed to construct FQDN from pod hostname and cluster domain, FQDN xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.db.prod.svc.cluster.local is too long (64 characters is the max, 66 characters requested)"
        );
    }
}
