//! Name lookups of http checks: one in flight per name and port, shared
//! by every check that needs it meanwhile, and a bound on how many wait.
//!
//! A lookup is getaddrinfo on the runtime's blocking pool, which a check's
//! timeout cannot take back: the check stops waiting, the lookup still
//! waits for a thread. Where lookups came faster than the pool finished
//! them (10,000 probes of a few host names against a slow resolver), the
//! queue grew for as long as the resolver was slow and every check failed
//! as `timeout`. Now the checks of one name share its lookup, and past
//! [`MAX_IN_FLIGHT`] names being looked up a new one fails at once as
//! `dns`. Nothing is cached: a lookup that ended is not reused.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::watch;

use crate::util::sync::lock;

/// Names looked up at once, at most; the checks runtime has 64 blocking
/// threads, so this allows a queue a few times that deep.
pub const MAX_IN_FLIGHT: usize = 256;

type Answer = Result<Arc<[SocketAddr]>, String>;
/// Where the checks of one name wait for its answer.
type Pending = watch::Receiver<Option<Answer>>;

/// The lookups in flight, by name and port.
pub struct Lookups {
    in_flight: Mutex<HashMap<(String, u16), Pending>>,
    limit: usize,
}

/// Why a lookup gave no address.
#[derive(Debug, PartialEq)]
pub enum Failed {
    /// The resolver's error.
    Resolver(String),
    /// The resolver knew the name, with no address.
    NoAddress,
    /// [`MAX_IN_FLIGHT`] names were being looked up already.
    Overloaded(usize),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Resolver(e) => f.write_str(e),
            Failed::NoAddress => f.write_str("no address"),
            Failed::Overloaded(n) => write!(
                f,
                "{n} name lookups are waiting for the resolver already (it is slow or down): not asked"
            ),
        }
    }
}

static SHARED: LazyLock<Arc<Lookups>> = LazyLock::new(|| Lookups::new(MAX_IN_FLIGHT));

impl Lookups {
    pub fn new(limit: usize) -> Arc<Lookups> {
        Arc::new(Lookups {
            in_flight: Mutex::new(HashMap::new()),
            limit,
        })
    }

    /// The lookups of the process.
    pub fn shared() -> &'static Arc<Lookups> {
        &SHARED
    }

    /// The addresses of `host`, through the system's resolver.
    pub async fn resolve(
        self: &Arc<Self>,
        host: &str,
        port: u16,
    ) -> Result<Arc<[SocketAddr]>, Failed> {
        self.resolve_with(host, port, |h, p| async move {
            tokio::net::lookup_host((h.as_str(), p))
                .await
                .map(|a| a.collect::<Vec<_>>())
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// As [`Lookups::resolve`], asking `ask` (in a task of its own, which
    /// ends whether or not anyone still waits for it).
    pub async fn resolve_with<F, Fut>(
        self: &Arc<Self>,
        host: &str,
        port: u16,
        ask: F,
    ) -> Result<Arc<[SocketAddr]>, Failed>
    where
        F: FnOnce(String, u16) -> Fut,
        Fut: Future<Output = Result<Vec<SocketAddr>, String>> + Send + 'static,
    {
        let key = (host.to_string(), port);
        let mut rx = {
            let mut in_flight = lock(&self.in_flight);
            match in_flight.get(&key) {
                Some(rx) => rx.clone(),
                None if in_flight.len() >= self.limit => {
                    return Err(Failed::Overloaded(in_flight.len()));
                }
                None => {
                    let (tx, rx) = watch::channel(None);
                    in_flight.insert(key.clone(), rx.clone());
                    let asked = ask(key.0.clone(), port);
                    let me = self.clone();
                    tokio::spawn(async move {
                        let answer = asked.await.map(Arc::from);
                        // Out of the map first: a check that comes after
                        // the answer asks anew.
                        lock(&me.in_flight).remove(&key);
                        let _ = tx.send(Some(answer));
                    });
                    rx
                }
            }
        };
        let answer = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Failed::Resolver("the lookup ended without an answer".into()))?;
        match answer.as_ref() {
            Some(Ok(a)) if a.is_empty() => Err(Failed::NoAddress),
            Some(Ok(a)) => Ok(a.clone()),
            Some(Err(e)) => Err(Failed::Resolver(e.clone())),
            None => Err(Failed::Resolver("no answer".into())),
        }
    }

    /// Names being looked up now.
    pub fn in_flight(&self) -> usize {
        lock(&self.in_flight).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    type Asked = std::pin::Pin<Box<dyn Future<Output = Result<Vec<SocketAddr>, String>> + Send>>;

    /// A resolver that counts its questions and answers after `wait`.
    fn slow(asked: &Arc<AtomicUsize>, wait: Duration) -> impl FnOnce(String, u16) -> Asked + use<> {
        let asked = asked.clone();
        move |host, port| {
            asked.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(wait).await;
                match host.as_str() {
                    "gone.example" => Err("failed to lookup address information".into()),
                    "empty.example" => Ok(Vec::new()),
                    _ => Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]),
                }
            })
        }
    }

    #[tokio::test]
    async fn checks_of_one_name_share_its_lookup_and_nothing_is_kept() {
        let l = Lookups::new(8);
        let asked = Arc::new(AtomicUsize::new(0));
        let wait = Duration::from_millis(100);
        let all: Vec<_> = (0..50)
            .map(|_| {
                let (l, f) = (l.clone(), slow(&asked, wait));
                tokio::spawn(async move { l.resolve_with("api.example", 443, f).await })
            })
            .collect();
        for a in all {
            let a = a.await.unwrap().unwrap();
            assert_eq!(&a[..], [SocketAddr::from(([127, 0, 0, 1], 443))]);
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert_eq!(l.in_flight(), 0);
        // Another port is another lookup; a later check asks anew.
        l.resolve_with("api.example", 80, slow(&asked, wait))
            .await
            .unwrap();
        l.resolve_with("api.example", 443, slow(&asked, wait))
            .await
            .unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        assert_eq!(
            l.resolve_with("gone.example", 443, slow(&asked, wait))
                .await,
            Err(Failed::Resolver(
                "failed to lookup address information".into()
            ))
        );
        assert_eq!(
            l.resolve_with("empty.example", 443, slow(&asked, wait))
                .await,
            Err(Failed::NoAddress)
        );
    }

    #[tokio::test]
    async fn a_check_that_stops_waiting_leaves_the_lookup_to_the_others() {
        let l = Lookups::new(8);
        let asked = Arc::new(AtomicUsize::new(0));
        let wait = Duration::from_millis(200);
        // The first asker gives up (its check's timeout).
        let first = tokio::time::timeout(
            Duration::from_millis(20),
            l.resolve_with("api.example", 443, slow(&asked, wait)),
        )
        .await;
        assert!(first.is_err());
        assert_eq!(l.in_flight(), 1);
        l.resolve_with("api.example", 443, slow(&asked, wait))
            .await
            .unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn past_the_limit_a_new_name_fails_at_once() {
        let l = Lookups::new(2);
        let asked = Arc::new(AtomicUsize::new(0));
        let wait = Duration::from_millis(300);
        let a = tokio::spawn({
            let (l, f) = (l.clone(), slow(&asked, wait));
            async move { l.resolve_with("a.example", 443, f).await }
        });
        let b = tokio::spawn({
            let (l, f) = (l.clone(), slow(&asked, wait));
            async move { l.resolve_with("b.example", 443, f).await }
        });
        while l.in_flight() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t0 = std::time::Instant::now();
        let c = l.resolve_with("c.example", 443, slow(&asked, wait)).await;
        assert_eq!(c, Err(Failed::Overloaded(2)));
        assert!(t0.elapsed() < Duration::from_millis(100));
        assert!(
            c.unwrap_err()
                .to_string()
                .contains("2 name lookups are waiting")
        );
        // A name already being looked up still joins its lookup.
        l.resolve_with("a.example", 443, slow(&asked, wait))
            .await
            .unwrap();
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        l.resolve_with("c.example", 443, slow(&asked, wait))
            .await
            .unwrap();
    }
}
