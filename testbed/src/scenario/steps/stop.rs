//! `stop`: stop a `traffic` step's traffic and report it, interval by interval, with
//! the steps that ran in each, then check what it must have seen.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::traffic::Declared;
use super::{expect, schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind, StepMark};
use crate::probe::traffic::{by_interval, Record};

pub const KIND: StepKind = StepKind {
    key: "stop",
    about: "Stop a `traffic` step's traffic, named by its step's name, and report it interval by interval.",
    schema: schema_of::<String>,
    expects: &["failures", "backends", "backendsAfter"],
    parse,
};

#[derive(Debug)]
struct Stop(Declared);

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let name: String = cx.value(value, at.path)?;
    match cx.stop_traffic(&name) {
        Ok(d) => Some(Box::new(Stop(d))),
        Err(why) => {
            cx.fail(at.path, why);
            None
        }
    }
}

/// `0.00–0.25 s`.
fn span(i: usize, width: Duration) -> String {
    let w = width.as_secs_f64();
    format!("{:.2}–{:.2} s", i as f64 * w, (i + 1) as f64 * w)
}

/// The report's rows: each interval's tally, with a line before it for each step
/// that started in it (but sleeps).
pub fn rows(records: &[Record], width: Duration, started: Instant, steps: &[StepMark]) -> Vec<String> {
    let groups = by_interval(records, width);
    let mut out = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        let (lo, hi) = (width.mul_f64(i as f64), width.mul_f64((i + 1) as f64));
        for s in steps.iter().filter(|s| s.start >= started && !s.title.starts_with("sleep")) {
            let t = s.start - started;
            if t >= lo && t < hi {
                out.push(format!("  at {:.2} s: step {}, {}", t.as_secs_f64(), s.number, s.title));
            }
        }
        let outcomes: Vec<_> = group.iter().map(|r| r.outcome.clone()).collect();
        let (b, e) = expect::tally(&outcomes);
        out.push(format!("    {}  {}", span(i, width), expect::describe(&b, &e)));
    }
    out
}

/// Which pods answered requests that started after the step `step` (its name, or
/// its number) ended.
fn answered_after(records: &[Record], started: Instant, steps: &[StepMark], step: &str) -> Result<Vec<String>, String> {
    let mark = steps
        .iter()
        .find(|s| s.name.as_deref() == Some(step) || s.number.to_string() == step)
        .ok_or_else(|| format!("no step named {step:?} ran before this one"))?;
    let after = mark.end.saturating_duration_since(started);
    let mut pods: Vec<String> = records
        .iter()
        .filter(|r| r.at >= after)
        .filter_map(|r| match &r.outcome {
            crate::probe::connect::Outcome::Answered(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    pods.sort();
    pods.dedup();
    Ok(pods)
}

/// What the traffic must have seen.
fn check(e: &Expect, records: &[Record], started: Instant, steps: &[StepMark]) -> Result<Vec<expect::Mismatch>, String> {
    let outcomes: Vec<_> = records.iter().map(|r| r.outcome.clone()).collect();
    let (b, errors) = expect::tally(&outcomes);
    let mut out = Vec::new();
    if let Some(count) = &e.failures {
        let failed: u32 = errors.values().sum();
        if !expect::count_holds(count, failed) {
            out.push(expect::mismatch(
                "failures",
                count.to_string(),
                format!("{failed} of {} ({})", records.len(), expect::describe(&BTreeMap::new(), &errors)),
            ));
        }
    }
    if let Some(want) = &e.backends {
        let seen: Vec<String> = b.keys().cloned().collect();
        let mut w = want.clone();
        w.sort();
        w.dedup();
        if w != seen {
            out.push(expect::mismatch("backends", expect::list(want), expect::list(&seen)));
        }
    }
    for (step, allowed) in e.backends_after.iter().flatten() {
        let seen = answered_after(records, started, steps, step)?;
        if seen.iter().any(|p| !allowed.contains(p)) {
            out.push(expect::mismatch(
                &format!("backendsAfter.{step}"),
                format!("only {}", expect::list(allowed)),
                expect::list(&seen),
            ));
        }
    }
    Ok(out)
}

#[async_trait::async_trait(?Send)]
impl Action for Stop {
    fn title(&self) -> String {
        format!("stop traffic {}", self.0.id)
    }

    async fn run(&self, cx: &mut dyn Context, e: &Expect) -> Result<Seen, String> {
        let (what, running) = cx
            .background()
            .traffic
            .remove(&self.0.id)
            .ok_or_else(|| format!("traffic {} is not running (did its step run?)", self.0.id))?;
        let started = running.started;
        let took = started.elapsed();
        let records = running.stop(self.0.timeout).await;
        let steps = cx.background().steps.clone();
        let outcomes: Vec<_> = records.iter().map(|r| r.outcome.clone()).collect();
        let (b, errs) = expect::tally(&outcomes);
        let mut lines = vec![format!(
            "{} requests in {:.1} s ({what}): {}",
            records.len(),
            took.as_secs_f64(),
            expect::describe(&b, &errs)
        )];
        lines.extend(rows(&records, self.0.interval, started, &steps));
        Ok(Seen {
            detail: Some(lines.join("\n")),
            mismatches: check(e, &records, started, &steps)?,
            lines,
            ..Default::default()
        })
    }
}
