//! The picture as SVG, laid out here: Services in rows at the top, nodes side by
//! side below them, each node's pods stacked in it, and a curve from each Service
//! to each of its endpoints (solid green when ready, dashed grey when not). A
//! trace's path is drawn over it in orange, its places outlined and numbered.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::Picture;

const MARGIN: f64 = 20.0;
const SVC_W: f64 = 240.0;
/// About how wide a character of the 12px font is (bold, to be safe).
const CHAR_W: f64 = 7.8;
const SVC_H: f64 = 48.0;
const GAP: f64 = 20.0;
const POD_W: f64 = 230.0;
const POD_H: f64 = 38.0;
const POD_GAP: f64 = 8.0;
const NODE_PAD: f64 = 15.0;
const NODE_HEAD: f64 = 48.0;
/// The space between the Services and the nodes, where the arrows fan out.
const FAN: f64 = 90.0;

/// A box's place: x, y, width, height.
#[derive(Debug, Clone, Copy)]
struct Rect(f64, f64, f64, f64);

impl Rect {
    fn center(self) -> (f64, f64) {
        (self.0 + self.2 / 2.0, self.1 + self.3 / 2.0)
    }
}

/// Where everything is: by `node/NAME`, `pod/KEY`, `service/KEY`.
struct Layout {
    places: BTreeMap<String, Rect>,
    width: f64,
    height: f64,
}

/// The width `texts` need, at least `min`, with `pad` on each side.
fn fit<'a>(texts: impl Iterator<Item = &'a str>, min: f64, pad: f64) -> f64 {
    texts
        .map(|t| t.chars().count() as f64 * CHAR_W + 2.0 * pad)
        .fold(min, f64::max)
}

fn layout(p: &Picture) -> Layout {
    let pod_texts = p
        .nodes
        .iter()
        .flat_map(|n| n.pods.iter())
        .flat_map(|x| [x.key.as_str(), x.ip.as_str()]);
    let pod_w = fit(pod_texts, POD_W, 8.0);
    let node_w = fit(
        p.nodes
            .iter()
            .flat_map(|n| [n.name.as_str(), n.detail.as_str()]),
        pod_w + 2.0 * NODE_PAD,
        NODE_PAD,
    );
    let labels: Vec<String> = p
        .services
        .iter()
        .map(|s| format!("{} (cluster DNS)", s.key))
        .collect();
    let svc_w = fit(
        labels
            .iter()
            .map(String::as_str)
            .chain(p.services.iter().map(|s| s.detail.as_str())),
        SVC_W,
        12.0,
    );
    let nodes_w = p.nodes.len() as f64 * (node_w + GAP) - GAP;
    let width = (2.0 * MARGIN + nodes_w).max(2.0 * MARGIN + 3.0 * (svc_w + GAP) - GAP);
    let per_row = (((width - 2.0 * MARGIN + GAP) / (svc_w + GAP)).floor() as usize).max(1);
    let mut places = BTreeMap::new();
    let top = 50.0;
    for (i, s) in p.services.iter().enumerate() {
        let (row, col) = (i / per_row, i % per_row);
        let x = MARGIN + col as f64 * (svc_w + GAP);
        let y = top + row as f64 * (SVC_H + GAP);
        places.insert(format!("service/{}", s.key), Rect(x, y, svc_w, SVC_H));
    }
    let rows = p.services.len().div_ceil(per_row) as f64;
    let nodes_top = top + rows * (SVC_H + GAP) + FAN;
    let mut bottom = nodes_top;
    for (i, n) in p.nodes.iter().enumerate() {
        let x = MARGIN + i as f64 * (node_w + GAP);
        let h = NODE_HEAD + n.pods.len() as f64 * (POD_H + POD_GAP) + NODE_PAD;
        places.insert(format!("node/{}", n.name), Rect(x, nodes_top, node_w, h));
        for (j, pod) in n.pods.iter().enumerate() {
            let y = nodes_top + NODE_HEAD + j as f64 * (POD_H + POD_GAP);
            places.insert(
                format!("pod/{}", pod.key),
                Rect(x + NODE_PAD, y, pod_w, POD_H),
            );
        }
        bottom = bottom.max(nodes_top + h);
    }
    Layout {
        places,
        width,
        height: bottom + MARGIN,
    }
}

/// Text safe in XML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The picture as an SVG document; `path` (a trace's places, in order) is drawn
/// over it when given.
pub fn render(p: &Picture, path: &[String]) -> String {
    let l = layout(p);
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">
<defs>
<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#2b7a0b"/></marker>
<marker id="arrow-off" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#999"/></marker>
<marker id="arrow-trace" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#e8590c"/></marker>
</defs>
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{MARGIN}" y="30" font-size="16" font-weight="bold">{title}</text>
"##,
        w = l.width,
        h = l.height,
        title = escape(&p.title)
    );
    nodes(&mut out, p, &l);
    services(&mut out, p, &l);
    arrows(&mut out, p, &l);
    trace_path(&mut out, &l, path);
    out += "</svg>\n";
    out
}

fn nodes(out: &mut String, p: &Picture, l: &Layout) {
    for n in &p.nodes {
        let Rect(x, y, w, h) = l.places[&format!("node/{}", n.name)];
        let _ = writeln!(
            out,
            r##"<g class="node"><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="8" fill="#f1f3f5" stroke="#495057"/><text x="{tx}" y="{ty}" font-size="14" font-weight="bold">{name}</text><text x="{tx}" y="{ty2}" fill="#495057">{detail}</text></g>"##,
            tx = x + NODE_PAD,
            ty = y + 20.0,
            ty2 = y + 37.0,
            name = escape(&n.name),
            detail = escape(&n.detail)
        );
        for pod in &n.pods {
            let Rect(x, y, w, h) = l.places[&format!("pod/{}", pod.key)];
            let (fill, stroke, state) = if pod.ready {
                ("#e6f4ea", "#2b7a0b", "ready")
            } else {
                ("#fdecea", "#c92a2a", "not ready")
            };
            let _ = writeln!(
                out,
                r##"<g class="pod"><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="5" fill="{fill}" stroke="{stroke}"/><text x="{tx}" y="{ty}" font-weight="bold">{name}</text><text x="{tx}" y="{ty2}" fill="#495057">{ip} · {state}</text></g>"##,
                tx = x + 8.0,
                ty = y + 15.0,
                ty2 = y + 30.0,
                name = escape(&pod.key),
                ip = escape(&pod.ip),
            );
        }
    }
}

fn services(out: &mut String, p: &Picture, l: &Layout) {
    for s in &p.services {
        let Rect(x, y, w, h) = l.places[&format!("service/{}", s.key)];
        let (fill, label) = if s.dns {
            ("#fff3bf", format!("{} (cluster DNS)", s.key))
        } else {
            ("#e7f5ff", s.key.clone())
        };
        let _ = writeln!(
            out,
            r##"<g class="service"><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="18" fill="{fill}" stroke="#1864ab"/><text x="{tx}" y="{ty}" font-weight="bold">{label}</text><text x="{tx}" y="{ty2}" fill="#495057">{detail}</text></g>"##,
            tx = x + 12.0,
            ty = y + 20.0,
            ty2 = y + 36.0,
            label = escape(&label),
            detail = escape(&s.detail),
        );
    }
}

/// A curve from a Service's bottom to the left side of each of its endpoints.
fn arrows(out: &mut String, p: &Picture, l: &Layout) {
    for s in &p.services {
        let Rect(x, y, w, h) = l.places[&format!("service/{}", s.key)];
        let (sx, sy) = (x + w / 2.0, y + h);
        for (pod, ready) in &s.endpoints {
            let Some(&Rect(px, py, _, ph)) = l.places.get(&format!("pod/{pod}")) else {
                continue;
            };
            let (ex, ey) = (px, py + ph / 2.0);
            let (stroke, dash, marker) = if *ready {
                ("#2b7a0b", "", "arrow")
            } else {
                ("#999", r#" stroke-dasharray="5,4""#, "arrow-off")
            };
            let _ = writeln!(
                out,
                r##"<path class="endpoint" d="M{sx},{sy} C{sx},{c1y} {c2x},{ey} {ex},{ey}" fill="none" stroke="{stroke}" stroke-width="1.4"{dash} marker-end="url(#{marker})"/>"##,
                c1y = sy + FAN * 0.8,
                c2x = ex - 50.0,
            );
        }
    }
}

/// The trace's places outlined and numbered in order, and its pods and Services
/// joined by arrows from edge to edge (a node holds its pods, so an arrow to it
/// would point inside; its outline and number say the packet passed it).
fn trace_path(out: &mut String, l: &Layout, path: &[String]) {
    let places: Vec<(&String, Rect)> = path
        .iter()
        .filter_map(|p| Some((p, *l.places.get(p)?)))
        .collect();
    for (i, (_, r)) in places.iter().enumerate() {
        let Rect(x, y, w, h) = *r;
        let _ = writeln!(
            out,
            r##"<rect class="trace" x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="none" stroke="#e8590c" stroke-width="3"/><circle cx="{x}" cy="{y}" r="10" fill="#e8590c"/><text x="{x}" y="{ty}" text-anchor="middle" fill="#fff" font-weight="bold">{n}</text>"##,
            ty = y + 4.0,
            n = i + 1
        );
    }
    let ends: Vec<Rect> = places
        .iter()
        .filter(|(p, _)| !p.starts_with("node/"))
        .map(|(_, r)| *r)
        .collect();
    for pair in ends.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let (x1, y1) = edge(a, b.center());
        let (x2, y2) = edge(b, a.center());
        let _ = writeln!(
            out,
            r##"<line class="trace" x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="#e8590c" stroke-width="3" stroke-opacity="0.85" marker-end="url(#arrow-trace)"/>"##
        );
    }
}

/// Where the line from `r`'s center toward `to` leaves `r`.
fn edge(r: Rect, to: (f64, f64)) -> (f64, f64) {
    let (cx, cy) = r.center();
    let (dx, dy) = (to.0 - cx, to.1 - cy);
    let sx = if dx == 0.0 {
        f64::INFINITY
    } else {
        (r.2 / 2.0) / dx.abs()
    };
    let sy = if dy == 0.0 {
        f64::INFINITY
    } else {
        (r.3 / 2.0) / dy.abs()
    };
    let k = sx.min(sy).min(1.0);
    (cx + dx * k, cy + dy * k)
}
