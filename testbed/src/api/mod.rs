//! The API server's core: objects, the store with resource versions and watches, and
//! admission (validation, defaulting, ClusterIP allocation).

pub mod admission;
pub mod events;
pub mod graceful;
mod ignored;
pub mod ipalloc;
pub mod kubernetes;
pub mod labels;
pub mod nodeports;
pub mod object;
pub mod refusals;
pub mod server;
pub mod service_slices;
pub mod store;
pub mod taints;
pub mod tokens;

pub use object::{Key, Kind, Object};
pub use store::{Event, EventType, Store};
