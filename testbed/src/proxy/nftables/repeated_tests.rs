//! Upstream's `TestSyncProxyRulesRepeated`, transcribed in
//! `testbed/tests/kube-proxy/nftables-repeated.yaml`: one proxier syncing again and
//! again as Services and EndpointSlices change, the table, the size of each sync's
//! transaction and the stale chains checked after each.

use serde_json::Value;

use super::state::Table;
use super::sync::Proxier;
use super::tests::{config, diff_lines, full_table, sort_transaction};
use crate::proxy::tracker::{port_key, PortKey};
use crate::proxy::upstream_tests::{ports, text};

const FILE: &str = include_str!("../../../tests/kube-proxy/nftables-repeated.yaml");

/// One sync of `proxier` to `services` and `slices`, applied to `table`: a full one
/// at first, then partial ones. Returns the transaction.
fn sync(
    proxier: &mut Proxier,
    table: &mut Table,
    node: &str,
    (services, slices): (&[Value], &[Value]),
    before: &mut Vec<PortKey>,
) -> String {
    let now = ports(node, services, slices);
    let keys: Vec<PortKey> = now.iter().map(port_key).collect();
    let update = if proxier.in_sync() {
        let removed = before.iter().filter(|k| !keys.contains(k)).cloned();
        proxier.partial(now, removed.collect())
    } else {
        proxier.full_in_one(&now)
    };
    let transaction = update.one().to_string();
    table
        .apply(&transaction)
        .unwrap_or_else(|e| panic!("{e}\n{transaction}"));
    proxier.commit(update);
    *before = keys;
    transaction
}

fn values<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v[k].as_array().map_or(&[], Vec::as_slice)
}

#[test]
fn upstreams_repeated_syncs_pass() {
    let (doc, _) = crate::yaml::load(FILE).expect("valid YAML");
    let (node, _, cfg) = config(&doc);
    let base = full_table(&cfg, &[]).dump();
    let mut proxier = Proxier::new(cfg);
    let (mut table, mut before) = (Table::default(), Vec::new());
    let steps = doc["steps"].as_array().unwrap();
    for step in steps {
        let at = text(step, "do");
        let services = values(step, "services");
        if let Some(empty) = step.get("emptyFirst") {
            let empty = empty.as_array().unwrap();
            sync(
                &mut proxier,
                &mut table,
                &node,
                (services, empty),
                &mut before,
            );
        }
        if step["ageStaleChains"].as_bool() == Some(true) {
            proxier.age_stale_chains();
        }
        let slices = values(step, "slices");
        let tx = sync(
            &mut proxier,
            &mut table,
            &node,
            (services, slices),
            &mut before,
        );
        let want = format!(
            "{base}{}{}",
            text(&doc, "svc1Rules"),
            text(step, "expected")
        );
        let diff = diff_lines(&sort_transaction(&want), &sort_transaction(&table.dump()));
        assert!(diff.is_empty(), "{at}:\n{}", diff.join("\n"));
        if let Some(n) = step["operations"].as_u64() {
            // Ours: upstream's, plus the stale chains deleted, less the unchanged
            // endpoint chains upstream writes again (add, flush, 2 rules each).
            let deleted = step["staleDeleted"].as_u64().unwrap_or(0);
            let unchanged = values(step, "unchangedChains");
            for c in unchanged {
                let c = c.as_str().unwrap();
                let own = format!("kube-proxy {c}");
                assert!(!tx.contains(&own), "{at}: {c} is written again:\n{tx}");
            }
            let want = n + deleted - 4 * unchanged.len() as u64;
            assert_eq!(tx.lines().count() as u64, want, "{at}: operations\n{tx}");
        }
        if let Some(stale) = step.get("staleChains") {
            let want: Vec<&str> = stale
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            let mut want = want;
            want.sort();
            let got: Vec<&str> = proxier.stale_chains().collect();
            assert_eq!(got, want, "{at}: stale chains");
        }
    }
    assert_eq!(steps.len(), 12);
}
