//! Making a fault's changes in the testbed's namespaces, and removing them.

use super::Change;
use crate::kernel::exec::{NodeExec, Nsenter};
use crate::netns::netns_path;

fn ns(netns: &str) -> Nsenter {
    Nsenter {
        netns: netns_path(netns),
    }
}

async fn make(c: &Change) -> Result<(), String> {
    let fail =
        |e: crate::kernel::exec::CommandError| format!("{} in {}: {e}", c.command(), c.netns());
    match c {
        Change::Table { netns, text, .. } => {
            ns(netns)
                .run("nft", &["-f", "-"], Some(text))
                .await
                .map_err(fail)?;
        }
        Change::Qdisc { netns, dev, args } => {
            let mut argv = vec!["qdisc", "add", "dev", dev, "root"];
            argv.extend(args.iter().map(String::as_str));
            ns(netns).run("tc", &argv, None).await.map_err(fail)?;
        }
    }
    Ok(())
}

/// Makes every change, in order; on a failure, removes those made and says why.
pub async fn apply(changes: &[Change]) -> Result<(), String> {
    for (i, c) in changes.iter().enumerate() {
        if let Err(e) = make(c).await {
            remove(&changes[..i]).await;
            return Err(e);
        }
    }
    Ok(())
}

/// The packets a table's counters counted (`counter packets N bytes M`).
pub fn counted(listing: &str) -> u64 {
    let words: Vec<&str> = listing.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "packets")
        .filter_map(|w| w[1].parse::<u64>().ok())
        .sum()
}

/// Removes the changes (those whose namespace is gone went with it): how many
/// packets their tables had dropped.
pub async fn remove(changes: &[Change]) -> u64 {
    let mut dropped = 0;
    for c in changes {
        if !netns_path(c.netns()).exists() {
            continue;
        }
        let n = ns(c.netns());
        match c {
            Change::Table { family, name, .. } => {
                if let Ok(listing) = n.run("nft", &["list", "table", family, name], None).await {
                    dropped += counted(&listing);
                }
                let _ = n.run("nft", &["delete", "table", family, name], None).await;
            }
            Change::Qdisc { dev, .. } => {
                let _ = n
                    .run("tc", &["qdisc", "del", "dev", dev, "root"], None)
                    .await;
            }
        }
    }
    dropped
}
