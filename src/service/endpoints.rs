//! Where each Primary Server's zone service listens (D1, D2): recorded in the zone's store, so
//! that the other Primary Servers sharing the store reach it for server-to-server calls (the
//! certificate server's signatures, D2) without any address configured on them.
//!
//! One record per server, `endpoint/<fqdn>`, written by that server's own zone service when it
//! starts (and only when its address changed: a restart at the same address writes nothing),
//! with an audit entry like every other change of the zone.

use serde::{Deserialize, Serialize};

use super::{Result, ZoneService, decode, encode};
use crate::clock::{Clock, Timestamp};
use crate::store::{Expect, Storage, Write};
use crate::transport::Transport;
use crate::zone::{Fqdn, ServerRole, ZoneError, keys};

/// How many times a write of the record runs again after losing a race with another commit.
const MAX_ATTEMPTS: usize = 8;

/// The longest address recorded.
pub const MAX_ENDPOINT_URL: usize = 256;

/// Where a Primary Server's zone service listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Endpoint {
    /// Record version (1).
    pub v: u32,
    /// `https://HOST:PORT`.
    pub url: String,
    /// When the server recorded it.
    pub since: Timestamp,
}

/// Why an address was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Not an `https://HOST:PORT` address.
    #[error(
        "{url:?} is not a zone server's address: give https://HOST:PORT (at most \
         {MAX_ENDPOINT_URL} characters, no path)"
    )]
    BadUrl {
        /// The address given (cut to the limit).
        url: String,
    },
    /// Only Primary Servers run a zone service that others call.
    #[error("{fqdn} is a {role}: only Primary Servers run a zone service and record its address")]
    NotPrimary {
        /// The server.
        fqdn: String,
        /// Its role.
        role: String,
    },
}

fn check_url(url: &str) -> std::result::Result<(), EndpointError> {
    let bad = || EndpointError::BadUrl {
        url: url.chars().take(MAX_ENDPOINT_URL).collect(),
    };
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    if url.len() > MAX_ENDPOINT_URL || !host_ok || !port_ok {
        return Err(bad());
    }
    Ok(())
}

impl<S: Storage, T: Transport, C: Clock> ZoneService<S, T, C> {
    /// Records that Primary Server `server`'s zone service listens at `url`
    /// (`https://HOST:PORT`). Writes nothing when that is already recorded; otherwise one
    /// conditioned commit with an audit entry (B6), run again when another commit came first.
    pub fn record_endpoint(&self, server: &Fqdn, url: &str) -> Result<()> {
        check_url(url)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.record_endpoint_once(server, url) {
                Err(e) if e.is_retryable() && attempt < MAX_ATTEMPTS => continue,
                r => return r,
            }
        }
    }

    fn record_endpoint_once(&self, server: &Fqdn, url: &str) -> Result<()> {
        let mut epoch = self.begin()?;
        let record = self
            .server_record(server)?
            .ok_or_else(|| ZoneError::UnknownServer {
                fqdn: server.to_string(),
            })?;
        if record.role != ServerRole::Primary {
            return Err(EndpointError::NotPrimary {
                fqdn: server.to_string(),
                role: record.role.to_string(),
            }
            .into());
        }
        let key = keys::endpoint(server.as_str());
        let stored = self.store.get(&key)?;
        let expect = match &stored {
            Some(rec) => {
                let old: Endpoint = decode(&key, &rec.value)?;
                if old.url == url {
                    return Ok(());
                }
                Expect::Version(rec.version)
            }
            None => Expect::Absent,
        };
        let endpoint = Endpoint {
            v: 1,
            url: url.to_string(),
            since: self.clock.now(),
        };
        let detail = serde_json::json!({ "server": server.as_str(), "url": url });
        self.commit(
            &mut epoch,
            vec![Write::put(key, expect, encode(&endpoint))],
            "server.endpoint",
            detail,
        )
    }

    /// A mark that moves with every change committed to the zone, by any frontend or server
    /// process (the audit log head's version, one read): a process sharing the store with
    /// others watches it to learn of their commits (D1: a zoned wakes its scheduled work and
    /// its own agent when another server started or moved an operation).
    pub fn change_mark(&self) -> Result<Option<u64>> {
        Ok(crate::audit::Epoch::read(&self.store)?.version())
    }

    /// Where Primary Server `server`'s zone service listens, if it ever recorded it.
    pub fn endpoint(&self, server: &str) -> Result<Option<Endpoint>> {
        let key = keys::endpoint(&crate::zone::member_lookup_name(server));
        match self.store.get(&key)? {
            Some(rec) => Ok(Some(decode(&key, &rec.value)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        for good in [
            "https://ps1.zone.example:8443",
            "https://127.0.0.1:4433",
            "https://[::1]:443",
        ] {
            check_url(good).unwrap();
        }
        for bad in [
            "",
            "http://ps1:80",
            "https://ps1",
            "https://ps1:0",
            "https://ps1:99999",
            "https://ps1:443/path",
            "https://:443",
            "https://a b:443",
        ] {
            let e = check_url(bad).unwrap_err().to_string();
            assert!(e.contains("https://HOST:PORT"), "{bad}: {e}");
        }
        let long = format!("https://{}:443", "a".repeat(300));
        let e = check_url(&long).unwrap_err().to_string();
        assert!(e.len() < 500, "{e}");
    }
}
