//! The API from inside the cluster: the `kubernetes` Service reaches the API server
//! through the nodes' rules, and every pod has a ServiceAccount token, the CA and its
//! namespace where in-cluster clients look, so the machine's kubectl run inside a
//! pod works with no configuration. Needs root.

mod common;

use std::process::Command;

use common::kubectl::Kubectl;
use common::running::Running;
use common::*;

const SA: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[test]
// Long because one testbed shows the whole in-cluster path: the Service and its
// endpoints, the files and variables, reads and refused writes from both nodes, the
// opt-out, and the token dying with its pod.
fn pods_use_the_api_with_their_service_account() {
    if !root() {
        return;
    }
    let tb = Running::up("in-cluster");
    let k = Kubectl::for_testbed(&tb);
    k.ok(&[
        "apply",
        "-f",
        &repo()
            .join("testbed/tests/kubectl/in-cluster.yaml")
            .display()
            .to_string(),
    ]);
    for pod in ["inside-1", "inside-2", "no-token"] {
        k.wait(&["get", "pod", pod], "running", |v| {
            v["status"]["phase"] == "Running"
        });
    }
    // The API server wrote its own endpoint: the first node's address, port 6443.
    let eps = k.json(&["get", "endpoints", "kubernetes"]);
    assert_eq!(
        eps["subsets"][0]["addresses"][0]["ip"], "172.18.0.2",
        "{eps}"
    );
    assert_eq!(eps["subsets"][0]["ports"][0]["port"], 6443, "{eps}");
    let slice = k.json(&["get", "endpointslice", "kubernetes"]);
    assert_eq!(
        slice["endpoints"][0]["addresses"][0], "172.18.0.2",
        "{slice}"
    );
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "kubernetes"
    );

    // What the kubelet gave the pod.
    let exec = |pod: &str, script: &str| k.out(&["exec", pod, "--", "sh", "-c", script]);
    let text = |o: std::process::Output| {
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(
        text(exec("inside-1", &format!("ls {SA}; cat {SA}/namespace"))),
        "ca.crt\nnamespace\ntoken\ndefault"
    );
    assert_eq!(
        text(exec(
            "inside-2",
            "echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT $KUBERNETES_PORT_443_TCP; echo ${KUBECONFIG:-none}"
        )),
        "10.96.0.1:443 tcp://10.96.0.1:443\nnone\n"
    );
    // The token is a JWT naming the pod's ServiceAccount.
    let claims = text(exec(
        "inside-1",
        &format!("cut -d. -f2 {SA}/token | tr '_-' '/+' | base64 -d 2>/dev/null; true"),
    ));
    assert!(
        claims.contains(r#""sub":"system:serviceaccount:default:default""#),
        "{claims}"
    );

    // kubectl inside a pod finds the API by itself (in-cluster config), from the
    // API server's node and across the underlay, by name and with the CA.
    for pod in ["inside-1", "inside-2"] {
        let names = text(k.out(&["exec", pod, "--", "kubectl", "get", "svc", "-o", "name"]));
        assert!(names.lines().any(|l| l == "service/kubernetes"), "{names}");
        let whoami = text(exec(
            pod,
            &format!(
                "curl -s --cacert {SA}/ca.crt -H \"Authorization: Bearer $(cat {SA}/token)\" https://kubernetes.default.svc/api/v1/namespaces/default/pods/{pod} | grep -o '\"nodeName\": *\"[^\"]*\"'"
            ),
        ));
        assert!(
            whoami.contains(&format!("node-{}", &pod[pod.len() - 1..])),
            "{whoami}"
        );
        // Reads only: a write is refused as RBAC refuses it.
        let out = k.out(&[
            "exec",
            pod,
            "--",
            "kubectl",
            "create",
            "service",
            "clusterip",
            "x",
            "--tcp=80",
        ]);
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
        assert!(
            said.contains(r#"error: failed to create ClusterIP service: services is forbidden: User "system:serviceaccount:default:default" cannot create resource "services" in API group "" in the namespace "default""#),
            "{said}"
        );
    }
    assert!(k.out(&["get", "svc", "x"]).status.code() != Some(0));

    // A pod that opts out has no token, and in-cluster kubectl has nothing to use.
    assert_eq!(
        text(exec("no-token", &format!("ls {SA} 2>&1 || true"))),
        format!("ls: cannot access '{SA}': No such file or directory\n")
    );

    // A bound token stops working when its pod is gone.
    let token = text(exec("inside-1", &format!("cat {SA}/token")));
    let server = k.server();
    let ask = || {
        let out = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(format!("{server}/api/v1/namespaces/default/services"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(ask(), "200");
    k.ok(&["delete", "pod", "inside-1"]);
    assert_eq!(ask(), "401");
}
