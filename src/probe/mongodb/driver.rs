//! The MongoDB driver as the probe uses it: the client, created on the first
//! check with connect and server-selection timeouts inside the check's, its
//! collections, and what a driver error means (a failure reason, and a
//! message with the URI's secrets scrubbed).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mongodb::bson::{Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};

use super::config::Spec;
use crate::config::units::Secret;
use crate::probe::core::{CheckError, Reason};
use crate::util::redact::{redact_url, scrub};

/// Why a query or queue could not be read (see [`Driver::failed`]).
pub(super) enum Failed {
    /// The check fails with this.
    Check(CheckError),
    /// This query or queue alone: the component is degraded with it.
    Own(String),
}

pub(super) struct Driver {
    uri: Secret,
    password: Option<Secret>,
    /// The check's timeout; also each operation's `maxTimeMS`.
    pub(super) timeout: Duration,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl Driver {
    pub(super) fn new(spec: &Spec, timeout: Duration) -> Self {
        Driver {
            uri: spec.uri.clone(),
            password: spec.password.clone(),
            timeout,
            client: tokio::sync::Mutex::new(None),
        }
    }

    fn secrets(&self) -> Vec<&str> {
        let mut s = vec![self.uri.expose()];
        if let Some(p) = &self.password {
            s.push(p.expose());
        }
        s
    }

    pub(super) fn error(&self, what: &str, e: &mongodb::error::Error) -> CheckError {
        use mongodb::error::ErrorKind as K;
        // The kind only: the whole error adds labels and empty fields.
        let mut text = scrub(&e.kind.to_string(), &self.secrets());
        if let K::ServerSelection { .. } = e.kind.as_ref()
            && let Some(short) = selection_summary(&text)
        {
            text = short;
        }
        let reason = match e.kind.as_ref() {
            K::Authentication { .. } => Reason::Auth,
            // AuthenticationFailed, Unauthorized.
            K::Command(c) if c.code == 18 || c.code == 13 => Reason::Auth,
            // MaxTimeMSExpired: the server gave up within our time limit.
            K::Command(c) if c.code == 50 => Reason::Timeout,
            K::ServerSelection { message, .. } if message.to_ascii_lowercase().contains("auth") => {
                Reason::Auth
            }
            // rustls says why a server was refused: "invalid peer certificate".
            K::ServerSelection { .. } | K::Io(_) | K::ConnectionPoolCleared { .. }
                if text.to_ascii_lowercase().contains("certificate") =>
            {
                Reason::Tls
            }
            K::ServerSelection { .. }
            | K::Io(_)
            | K::ConnectionPoolCleared { .. }
            | K::DnsResolve { .. } => Reason::Connect,
            K::InvalidTlsConfig { .. } => Reason::Tls,
            _ => Reason::BadResponse,
        };
        CheckError::new(reason, format!("{what}: {text}"))
    }

    /// [`Driver::error`] for a query's or a queue's read, told apart: the
    /// server refusing that command alone (a bad operator or stage, no
    /// privilege on that collection, a result that does not decode) is
    /// that query's failure, named while the others are still read; the
    /// database unreachable, shutting down, stepping down or too slow
    /// (`maxTimeMS`) fails the check.
    pub(super) fn failed(&self, what: &str, e: &mongodb::error::Error) -> Failed {
        use mongodb::error::ErrorKind as K;
        // HostUnreachable, HostNotFound, MaxTimeMSExpired, NetworkTimeout,
        // ShutdownInProgress, PrimarySteppedDown, ExceededTimeLimit,
        // SocketException, NotWritablePrimary, InterruptedAtShutdown,
        // InterruptedDueToReplStateChange, NotPrimaryNoSecondaryOk,
        // NotPrimaryOrSecondary.
        const DATABASE: &[i32] = &[
            6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
        ];
        let own = match e.kind.as_ref() {
            K::Command(c) => !DATABASE.contains(&c.code),
            K::BsonDeserialization(_) => true,
            _ => false,
        };
        let err = self.error(what, e);
        match own {
            true => Failed::Own(err.message),
            false => Failed::Check(err),
        }
    }

    /// The driver client, created on the first check: the driver keeps its
    /// own pool and monitors and reconnects after an outage by itself.
    pub(super) async fn client(&self) -> Result<Client, CheckError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let bad = |e: mongodb::error::Error| {
            CheckError::new(
                Reason::Internal,
                format!(
                    "invalid MongoDB URI {}: {}",
                    redact_url(self.uri.expose()),
                    scrub(&e.to_string(), &self.secrets())
                ),
            )
        };
        let mut o = ClientOptions::parse(self.uri.expose()).await.map_err(bad)?;
        // Inside the check's timeout: an unreachable server is `connect`.
        let inner = (self.timeout * 3 / 4).max(Duration::from_millis(50));
        o.server_selection_timeout = Some(inner);
        o.connect_timeout = Some(inner);
        o.app_name = Some("depwatch".into());
        if let Some(p) = &self.password {
            let mut cred = o.credential.take().unwrap_or_default();
            cred.password = Some(p.expose().to_string());
            o.credential = Some(cred);
        }
        let client = Client::with_options(o).map_err(bad)?;
        *slot = Some(client.clone());
        Ok(client)
    }

    pub(super) fn collection(&self, client: &Client, db: &str, coll: &str) -> Collection<Document> {
        client.database(db).collection::<Document>(coll)
    }

    /// Of `colls` (database, collection), those that do not exist: one
    /// `listCollections` per database, names only, the collections the
    /// user may read (`authorizedCollections`: no privilege beyond `find`
    /// needed). Where the server will not say, none is called missing.
    pub(super) async fn missing<'a>(
        &self,
        client: &Client,
        colls: &BTreeSet<(&'a str, &'a str)>,
    ) -> BTreeSet<(&'a str, &'a str)> {
        let mut by_db: BTreeMap<&'a str, Vec<&'a str>> = BTreeMap::new();
        for &(db, coll) in colls {
            by_db.entry(db).or_default().push(coll);
        }
        let mut missing = BTreeSet::new();
        for (db, names) in by_db {
            let found = client
                .database(db)
                .list_collection_names()
                .filter(doc! { "name": { "$in": &names } })
                .authorized_collections(true)
                .await;
            match found {
                Ok(found) => missing.extend(
                    names
                        .into_iter()
                        .filter(|n| !found.iter().any(|f| f == n))
                        .map(|n| (db, n)),
                ),
                Err(e) => tracing::debug!(
                    database = db,
                    error = %self.error("listCollections", &e).message,
                    "Cannot tell whether the collections of empty results exist."
                ),
            }
        }
        missing
    }
}

/// A server selection error with the driver's topology dump (types,
/// labels, empty fields of every server) boiled down to each server's
/// address and error, or its type when it has none: `Server selection
/// timeout: No available servers (db1:27017: I/O error: timed out)`.
/// `None` when the text is not of that form (it is then shown whole).
fn selection_summary(text: &str) -> Option<String> {
    let (head, topology) = text.split_once(" Topology: ")?;
    let mut servers = Vec::new();
    for server in topology.split("{ Address: ").skip(1) {
        let address = server.split([',', ' ']).next().filter(|a| !a.is_empty())?;
        let about = match server.split_once("Error: ") {
            Some((_, error)) => {
                let error = error.split(", labels:").next().unwrap_or(error);
                error
                    .trim_start_matches("Kind: ")
                    .trim_end_matches([' ', '}', ']'])
                    .to_string()
            }
            None => server
                .split_once("Type: ")
                .and_then(|(_, rest)| rest.split(", ").next())
                .unwrap_or("unknown")
                .to_string(),
        };
        servers.push(format!("{address}: {about}"));
    }
    if servers.is_empty() {
        return None;
    }
    Some(format!(
        "{} ({})",
        head.trim_end_matches('.'),
        servers.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::selection_summary;

    #[test]
    fn the_topology_dump_is_boiled_down_to_each_servers_error() {
        assert_eq!(
            selection_summary(
                "Server selection timeout: No available servers. Topology: { Type: Unknown, Servers: [ { Address: 127.0.0.1:16390, Type: Unknown, Error: Kind: I/O error: timed out, labels: {}, source: None, server response: None } ] }"
            )
            .as_deref(),
            Some("Server selection timeout: No available servers (127.0.0.1:16390: I/O error: timed out)")
        );
        assert_eq!(
            selection_summary(
                "Server selection timeout: None of the available servers suitable for criteria Primary. Topology: { Type: ReplicaSetNoPrimary, Set Name: rs0, Servers: [ { Address: db1:27017, Type: RsSecondary, Average RTT: 1ms }, { Address: db2:27017, Type: Unknown, Error: Kind: I/O error: Connection refused (os error 111), labels: {}, source: None } ] }"
            )
            .as_deref(),
            Some("Server selection timeout: None of the available servers suitable for criteria Primary (db1:27017: RsSecondary; db2:27017: I/O error: Connection refused (os error 111))")
        );
        assert_eq!(
            selection_summary("Server selection timeout: no topology"),
            None
        );
    }
}
