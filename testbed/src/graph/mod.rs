//! A picture of the cluster: its nodes as boxes holding their pods (addresses,
//! ready or not), its Services (ClusterIP, ports, the cluster DNS marked) with an
//! arrow to each endpoint, as SVG laid out here ([`svg`], no external program) or
//! as Mermaid or Graphviz text ([`text`]). A trace's path can be drawn on it.

pub mod svg;
pub mod text;

use crate::trace::world::{key, pod_ip, pod_node, ready, World};

/// What the picture shows, in the order it shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    pub title: String,
    pub nodes: Vec<NodeBox>,
    pub services: Vec<ServiceBox>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBox {
    pub name: String,
    /// `172.18.0.2 · pods 10.244.1.0/24 · iptables`.
    pub detail: String,
    pub pods: Vec<PodBox>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodBox {
    /// `default/web-1`.
    pub key: String,
    pub ip: String,
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceBox {
    /// `default/web`.
    pub key: String,
    /// `ClusterIP 10.96.0.2 · 80/TCP→8080`.
    pub detail: String,
    /// The cluster DNS Service.
    pub dns: bool,
    /// Its endpoints: the pod (its key) and whether it is ready.
    pub endpoints: Vec<(String, bool)>,
}

impl Picture {
    /// The picture of `world`.
    pub fn of(world: &World) -> Picture {
        let mut nodes: Vec<NodeBox> = world
            .plan
            .nodes
            .iter()
            .map(|n| NodeBox {
                name: n.name.clone(),
                detail: format!("{} · pods {} · {}", n.ip, n.pod_cidr, n.proxy_mode.name()),
                pods: Vec::new(),
            })
            .collect();
        for p in &world.pods {
            let Some(n) = pod_node(p).and_then(|n| nodes.iter_mut().find(|b| b.name == n)) else {
                continue;
            };
            n.pods.push(PodBox {
                key: key(&p.metadata),
                ip: pod_ip(p)
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "no address".into()),
                ready: ready(p),
            });
        }
        let services = world
            .services
            .iter()
            .map(|s| {
                let spec = s.spec.clone().unwrap_or_default();
                let endpoints = world
                    .endpoints(s)
                    .into_iter()
                    .filter_map(|e| Some((e.pod?, e.ready)))
                    .collect();
                ServiceBox {
                    key: key(&s.metadata),
                    detail: service_detail(&spec),
                    dns: spec.cluster_ip.as_deref() == Some(&world.plan.dns_ip.to_string()),
                    endpoints,
                }
            })
            .collect();
        Picture {
            title: format!("testbed {}", world.plan.testbed),
            nodes,
            services,
        }
    }

    /// Every name the picture shows: nodes, pods and Services.
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        out.extend(
            self.nodes
                .iter()
                .flat_map(|n| n.pods.iter().map(|p| p.key.clone())),
        );
        out.extend(self.services.iter().map(|s| s.key.clone()));
        out
    }
}

/// `ClusterIP 10.96.0.2 · http 80/TCP→8080`.
fn service_detail(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> String {
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return format!(
            "ExternalName → {}",
            spec.external_name.as_deref().unwrap_or("?")
        );
    }
    let ports: Vec<String> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let target = match &p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i)) => {
                    i.to_string()
                }
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => {
                    s.clone()
                }
                None => p.port.to_string(),
            };
            format!(
                "{}/{}→{target}",
                p.port,
                p.protocol.as_deref().unwrap_or("TCP")
            )
        })
        .collect();
    format!(
        "{kind} {} · {}",
        spec.cluster_ip.as_deref().unwrap_or("-"),
        ports.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two nodes, 50 pods, a Service over some of them (one not ready), the DNS.
    pub(crate) fn sample() -> Picture {
        let nodes = (1..=2)
            .map(|n| NodeBox {
                name: format!("node-{n}"),
                detail: format!("172.18.0.{} · pods 10.244.{n}.0/24 · iptables", n + 1),
                pods: (0..25)
                    .map(|i| PodBox {
                        key: format!("default/web-{n}-{i}"),
                        ip: format!("10.244.{n}.{}", i + 2),
                        ready: i != 3,
                    })
                    .collect(),
            })
            .collect();
        Picture {
            title: "testbed <a&b>".into(),
            nodes,
            services: vec![
                ServiceBox {
                    key: "default/web".into(),
                    detail: "ClusterIP 10.96.0.2 · 80/TCP→8080".into(),
                    dns: false,
                    endpoints: vec![
                        ("default/web-1-0".into(), true),
                        ("default/web-2-3".into(), false),
                    ],
                },
                ServiceBox {
                    key: "kube-system/kube-dns".into(),
                    detail: "ClusterIP 10.96.0.10 · 53/UDP→53".into(),
                    dns: true,
                    endpoints: vec![],
                },
            ],
        }
    }

    #[test]
    fn the_svg_is_valid_xml_and_names_everything() {
        let p = sample();
        let svg = svg::render(&p, &[]);
        let doc = roxmltree::Document::parse(&svg).expect("valid XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let texts: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .collect();
        for name in p.names() {
            assert!(
                texts.iter().any(|t| t.contains(&name)),
                "no text names {name}"
            );
        }
        assert!(
            texts.contains(&"testbed <a&b>"),
            "the title is escaped and read back"
        );
        assert!(texts.iter().any(|t| t.contains("(cluster DNS)")));
        // One curve per endpoint, the not-ready one dashed.
        let curves: Vec<_> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("endpoint"))
            .collect();
        assert_eq!(curves.len(), 2);
        assert_eq!(
            curves
                .iter()
                .filter(|c| c.attribute("stroke-dasharray").is_some())
                .count(),
            1
        );
    }

    #[test]
    fn pods_never_overlap_and_fit_in_the_picture() {
        let p = sample();
        let svg = svg::render(&p, &[]);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let num = |n: &roxmltree::Node, a: &str| n.attribute(a).unwrap().parse::<f64>().unwrap();
        let root = doc.root_element();
        let (w, h) = (num(&root, "width"), num(&root, "height"));
        let pods: Vec<(f64, f64, f64, f64)> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("pod"))
            .map(|g| g.first_element_child().unwrap())
            .map(|r| {
                (
                    num(&r, "x"),
                    num(&r, "y"),
                    num(&r, "width"),
                    num(&r, "height"),
                )
            })
            .collect();
        assert_eq!(pods.len(), 50);
        for (i, a) in pods.iter().enumerate() {
            assert!(
                a.0 + a.2 <= w && a.1 + a.3 <= h,
                "pod {i} is outside the picture"
            );
            for b in &pods[i + 1..] {
                let apart =
                    a.0 + a.2 <= b.0 || b.0 + b.2 <= a.0 || a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1;
                assert!(apart, "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn a_trace_path_is_numbered_in_order() {
        let p = sample();
        let path = [
            "pod/default/web-1-0",
            "node/node-1",
            "service/default/web",
            "pod/default/web-2-3",
        ]
        .map(String::from);
        let svg = svg::render(&p, &path);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let outlined = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("class") == Some("trace"))
            .count();
        assert_eq!(outlined, 4);
        // Nodes are outlined, not joined: web-1-0 -> web -> web-2-3.
        let joins = doc.descendants().filter(|n| n.has_tag_name("line")).count();
        assert_eq!(joins, 2);
    }

    #[test]
    fn mermaid_and_dot_have_every_box_and_edge() {
        let p = sample();
        let m = text::mermaid(&p);
        assert!(m.starts_with("flowchart TB\n"));
        assert!(m.contains("  subgraph node_node_1[\"node-1 "));
        assert!(m.contains("  svc_default_web --> pod_default_web_1_0\n"));
        assert!(m.contains("  svc_default_web -.-> pod_default_web_2_3\n"));
        let d = text::dot(&p);
        assert!(d.contains("subgraph cluster_node_node_2 {"));
        assert!(d.contains("  svc_default_web -> pod_default_web_2_3 [style=dashed];\n"));
        assert_eq!(d.matches('{').count(), d.matches('}').count());
    }
}
