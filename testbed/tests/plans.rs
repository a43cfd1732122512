//! The address plan of every scenario in `scenarios/`, as snapshots in `snapshots/`.
//! A change to any address, name or route shows up as a diff to review. No root.

use std::path::Path;

use testbed::scenario;

#[test]
fn plans_of_every_scenario() {
    let mut seen = 0;
    insta::glob!("../../scenarios", "*.yaml", |path| {
        seen += 1;
        let s = scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
        let plan = s.plan(&s.name);
        insta::with_settings!({
            snapshot_path => "../../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => format!("{}: {}", s.name, s.description),
        }, {
            let stem = path.file_stem().unwrap().to_string_lossy().to_string();
            insta::assert_yaml_snapshot!(format!("plan-{stem}"), plan);
        });
    });
    assert!(seen >= 1, "no scenario found");
}

#[test]
fn the_cli_plan_matches() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/two-nodes.yaml");
    let s = scenario::load(&path).unwrap();
    let text = testbed::cli::render_plan(&s.plan("two-nodes"), usize::MAX);
    insta::with_settings!({snapshot_path => "../../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("two-nodes-plan-text", text);
    });
}
