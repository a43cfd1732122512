//! Refusals, logged a few lines at a time however many there are.

/// Counts refusals so a stranger who keeps knocking adds a log line now and then,
/// not one per connection.
#[derive(Default)]
pub struct Refusals {
    last_logged: Option<std::time::Instant>,
    unlogged: u64,
}

impl Refusals {
    /// The line to log for one more refusal, when one is due.
    pub fn note(&mut self, what: &str) -> Option<String> {
        let now = std::time::Instant::now();
        let due = self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(10));
        if !due {
            self.unlogged += 1;
            return None;
        }
        self.last_logged = Some(now);
        let more = std::mem::take(&mut self.unlogged);
        Some(if more > 0 {
            format!("{what} (and {more} more refusals in the last 10 s)")
        } else {
            what.to_string()
        })
    }
}
