//! The network edge (feature `net`): what zoned, zone-agent and `zonectl --server` share, so a
//! further frontend repeats none of it. The core stays synchronous and sans-IO; everything
//! here is async (tokio) and TLS (rustls).

pub mod agent;
pub mod api;
pub mod client;
pub mod console;
pub mod metrics;
pub mod peer;
pub mod remote;
pub mod server;
pub mod tls;
