//! `testbed trace POD TARGET[:PORT]`: one real connection from a pod, hop by hop
//! (see [`crate::trace`]), and `testbed graph`, the cluster's picture ([`crate::graph`]). The cluster's objects come from its API; the trace runs
//! here, in the testbed's namespaces, and removes what it added to them even when
//! interrupted.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use super::client::{Call, Client};
use crate::api::{Kind, Object};
use crate::state::Record;
use crate::trace::{Request, World};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
    /// The cluster's picture with the connection's path drawn on it
    Svg,
}

/// The forms of `testbed graph`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum GraphOutput {
    Svg,
    Mermaid,
    Dot,
}

/// `testbed graph`: the cluster's picture.
pub fn graph(testbed: Option<String>, output: GraphOutput) -> Result<ExitCode> {
    let name = super::pick_testbed(testbed)?;
    let picture = crate::graph::Picture::of(&world(&name)?);
    let text = match output {
        GraphOutput::Svg => crate::graph::svg::render(&picture, &[]),
        GraphOutput::Mermaid => crate::graph::text::mermaid(&picture),
        GraphOutput::Dot => crate::graph::text::dot(&picture),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// The cluster as its API shows it now, with the testbed's plan.
pub(super) fn world(testbed: &str) -> Result<World> {
    let record = Record::load(testbed)
        .map_err(|_| anyhow!("no testbed named {testbed} (see `testbed ls`)"))?;
    let mut client = Client::connect(testbed)?;
    let mut objects = Vec::new();
    for kind in [Kind::Pod, Kind::Service, Kind::EndpointSlice] {
        let reply = client.call(&Call::get(&super::objects::path(kind, None, None)))?;
        if !reply.ok() {
            return Err(reply.error());
        }
        for item in reply.body["items"].as_array().into_iter().flatten() {
            let o = Object::from_value(kind, item.clone()).map_err(|e| {
                anyhow!("the API sent a {} that does not read: {e}", kind.singular())
            })?;
            objects.push(o);
        }
    }
    Ok(World::new(record.plan, objects))
}

pub fn trace(
    testbed: Option<String>,
    from: &str,
    target: &str,
    udp: bool,
    timeout: Duration,
    output: Output,
) -> Result<ExitCode> {
    let name = super::pick_testbed(testbed)?;
    let world = world(&name)?;
    let req = Request {
        from: from.to_string(),
        target: target.to_string(),
        udp,
        timeout,
    };
    crate::trace::gather::split_target(target).map_err(|e| anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let traced = rt.block_on(async {
        tokio::select! {
            t = crate::trace::trace(&world, &req) => Some(t),
            // Dropping the trace removes its tables and stops its monitors.
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    let t = match traced {
        None => bail!("interrupted; the trace tables are removed"),
        Some(Err(e)) => bail!("{e}"),
        Some(Ok(t)) => t,
    };
    match output {
        Output::Text => print!("{}", t.text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&t)?),
        Output::Svg => print!(
            "{}",
            crate::graph::svg::render(&crate::graph::Picture::of(&world), &t.path)
        ),
    }
    Ok(if t.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
