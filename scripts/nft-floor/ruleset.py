"""Writes N Services of 3 endpoints each in the shape of kube-proxy's nftables mode
(a service chain with a `numgen` vmap, endpoint chains with DNAT, map elements) as
`nft -f` files: cold<N>.<k>.nft, the first with the table's base. Usage: ruleset.py
N CHUNKS."""
import sys, hashlib
T = "ip kube-proxy"
n = int(sys.argv[1]); chunks = int(sys.argv[2]) if len(sys.argv) > 2 else 1
def h(s): return hashlib.sha256(s.encode()).hexdigest()[:8].upper()
base = [f'add table {T} {{ comment "rules for kube-proxy" ; }}']
for name, kind, hook, prio in [("filter-prerouting-pre-dnat","filter","prerouting",-110),("filter-output-pre-dnat","filter","output",-110),("filter-forward","filter","forward",0),("filter-input","filter","input",0),("filter-output","filter","output",0),("nat-output","nat","output",-100),("nat-postrouting","nat","postrouting",100),("nat-prerouting","nat","prerouting",-100)]:
    base.append(f"add chain {T} {name} {{ type {kind} hook {hook} priority {prio} ; }}")
for c in ["cluster-ips-check","firewall-check","mark-for-masquerade","masquerading","nodeport-endpoints-check","reject-chain","services","service-endpoints-check"]:
    base.append(f"add chain {T} {c}")
base += [f'add set {T} cluster-ips {{ type ipv4_addr ; comment "Active ClusterIPs" ; }}',
 f'add set {T} nodeport-ips {{ type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }}',
 f'add map {T} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "x" ; }}',
 f'add map {T} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment "x" ; }}',
 f'add map {T} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "x" ; }}',
 f'add map {T} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "x" ; }}',
 f'add map {T} service-nodeports {{ type inet_proto . inet_service : verdict ; comment "x" ; }}']
rules = [("filter-prerouting-pre-dnat","ct state new jump firewall-check"),("filter-forward","ct state new jump service-endpoints-check"),("filter-forward","ct state new jump cluster-ips-check"),("filter-input","ct state new jump nodeport-endpoints-check"),("filter-output","ct state new jump service-endpoints-check"),("nat-output","jump services"),("nat-prerouting","jump services"),("nat-postrouting","jump masquerading"),("mark-for-masquerade","mark set mark or 0x4000"),("masquerading","mark and 0x4000 == 0 return"),("masquerading","mark set mark xor 0x4000"),("masquerading","masquerade fully-random"),("cluster-ips-check",'ip daddr @cluster-ips reject comment "Reject"'),("cluster-ips-check",'ip daddr { 172.30.0.0/16 } drop comment "Drop"'),("reject-chain","reject"),("service-endpoints-check","ip daddr . meta l4proto . th dport vmap @no-endpoint-services"),("nodeport-endpoints-check","ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports"),("firewall-check","ip daddr . meta l4proto . th dport vmap @firewall-ips"),("services","ip daddr . meta l4proto . th dport vmap @service-ips"),("services","ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports")]
base += [f"add rule {T} {c} {r}" for c, r in rules]
svcs = []
for i in range(n):
    ip = f"172.30.{i // 250}.{i % 250 + 1}"
    name = f"ns{i%50}/svc{i}/tcp/p80"
    sc = f"service-{h(name)}-{name}"
    out = [f"add chain {T} {sc}", f"add rule {T} {sc} ip daddr {ip} ip saddr != 10.0.0.0/8 jump mark-for-masquerade"]
    eps = []
    for e in range(3):
        ep = f"10.{1 + e}.{i // 250}.{i % 250 + 1}"
        ec = f"endpoint-{h(name+ep)}-{name}__{ep}/8080"
        eps.append(ec)
        out += [f"add chain {T} {ec}", f"add rule {T} {ec} ip saddr {ep} jump mark-for-masquerade", f"add rule {T} {ec} meta l4proto tcp dnat to {ep}:8080"]
    out.append(f"add rule {T} {sc} numgen random mod 3 vmap {{ 0 : goto {eps[0]} , 1 : goto {eps[1]} , 2 : goto {eps[2]} }}")
    out += [f"add element {T} cluster-ips {{ {ip} }}", f"add element {T} service-ips {{ {ip} . tcp . 80 : goto {sc} }}"]
    svcs.append("\n".join(out))
per = (n + chunks - 1) // chunks
for k in range(chunks):
    body = svcs[k*per:(k+1)*per]
    with open(f"cold{n}.{k}.nft", "w") as f:
        f.write("\n".join((base if k == 0 else []) + body) + "\n")
