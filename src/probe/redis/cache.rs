//! What Redis INFO says about the cache: INFO's `key:value` lines, the cache
//! families (keyspace hits and misses, evictions, expirations, memory,
//! clients, keys per database), the details of a check, and the hit rate
//! over recent lookups (depwatch's own queue reads left out) with its
//! `hit_rate_degraded_below` threshold.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};

use super::config::Spec;
use crate::metrics::kit::{AbsCounter, ComponentOnly, SeriesGate};
use crate::probe::core::{Outcome, Status};
use crate::util::sync::lock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DbLabels {
    component: String,
    db: String,
}

/// The cache families, labelled by component (and database).
#[derive(Clone)]
pub(super) struct Families {
    hits: Family<ComponentOnly, AbsCounter>,
    misses: Family<ComponentOnly, AbsCounter>,
    evicted: Family<ComponentOnly, AbsCounter>,
    expired: Family<ComponentOnly, AbsCounter>,
    memory_used: Family<ComponentOnly, Gauge>,
    memory_max: Family<ComponentOnly, Gauge>,
    clients: Family<ComponentOnly, Gauge>,
    keys: Family<DbLabels, Gauge>,
}

impl Families {
    pub(super) fn register(r: &mut Registry) -> Self {
        let m = Families {
            hits: Family::default(),
            misses: Family::default(),
            evicted: Family::default(),
            expired: Family::default(),
            memory_used: Family::default(),
            memory_max: Family::default(),
            clients: Family::default(),
            keys: Family::default(),
        };
        r.register(
            "redis_keyspace_hits",
            "Successful key lookups (Redis INFO keyspace_hits).",
            m.hits.clone(),
        );
        r.register(
            "redis_keyspace_misses",
            "Failed key lookups (Redis INFO keyspace_misses).",
            m.misses.clone(),
        );
        r.register(
            "redis_evicted_keys",
            "Keys evicted for maxmemory (Redis INFO evicted_keys).",
            m.evicted.clone(),
        );
        r.register(
            "redis_expired_keys",
            "Keys expired by their TTL (Redis INFO expired_keys).",
            m.expired.clone(),
        );
        r.register(
            "redis_memory_used_bytes",
            "Memory used by Redis (INFO used_memory).",
            m.memory_used.clone(),
        );
        r.register(
            "redis_memory_max_bytes",
            "Redis maxmemory (0: no limit).",
            m.memory_max.clone(),
        );
        r.register(
            "redis_connected_clients",
            "Clients connected to Redis.",
            m.clients.clone(),
        );
        r.register("redis_keys", "Keys per database.", m.keys.clone());
        m
    }
}

/// Hit-rate bookkeeping: the rate over the lookups since the last judged
/// sample, judged only once at least `min_lookups` happened.
#[derive(Default)]
struct HitWindow {
    /// Hits and misses (without depwatch's own) at the last judged sample.
    base: Option<(f64, f64)>,
    rate: Option<f64>,
    /// Lookups made by depwatch's own queue reads since the server started:
    /// they are Redis's keyspace hits and misses too, but not the cache's.
    own: (f64, f64),
    last: (f64, f64),
}

/// One probe's view of the cache: its series and its hit-rate window.
pub(super) struct Cache {
    component: String,
    label: ComponentOnly,
    families: Families,
    hit_rate_degraded_below: Option<f64>,
    hit_rate_min_lookups: u64,
    memory_degraded_above: Option<f64>,
    hits: Mutex<HitWindow>,
    /// INFO's `rejected_connections` at the last check.
    rejected: Mutex<Option<f64>>,
    /// Whether the probe reads queues (their keys must not be evicted),
    /// and INFO's `evicted_keys` at the last check.
    queues: bool,
    evictions: Mutex<Option<f64>>,
    /// The databases INFO listed so far (an emptied one is shown as 0).
    dbs: Mutex<BTreeSet<String>>,
    gate: SeriesGate,
}

impl Cache {
    pub(super) fn new(component: &str, families: Families, spec: &Spec, gate: SeriesGate) -> Self {
        Cache {
            component: component.to_string(),
            label: ComponentOnly {
                component: component.into(),
            },
            families,
            hit_rate_degraded_below: spec.hit_rate_degraded_below,
            hit_rate_min_lookups: spec.hit_rate_min_lookups,
            memory_degraded_above: spec.memory_degraded_above,
            hits: Mutex::new(HitWindow::default()),
            rejected: Mutex::new(None),
            queues: !spec.queues.is_empty(),
            evictions: Mutex::new(None),
            dbs: Mutex::new(BTreeSet::new()),
            gate,
        }
    }

    /// Sets the cache series from INFO, adds the details and judges the
    /// hit rate.
    pub(super) fn record(&self, info: &BTreeMap<String, String>, out: &mut Outcome) {
        let m = &self.families;
        let num = |k: &str| info.get(k).and_then(|v| v.parse::<f64>().ok());
        let hits = num("keyspace_hits").unwrap_or(0.0);
        let misses = num("keyspace_misses").unwrap_or(0.0);
        let used = num("used_memory").unwrap_or(0.0);
        let max = num("maxmemory").unwrap_or(0.0);
        let clients = num("connected_clients").unwrap_or(0.0);
        // A removed component's series stay removed (see `SeriesGate`).
        let live = self.gate.open();
        if live.is_some() {
            m.hits.get_or_create(&self.label).set(hits);
            m.misses.get_or_create(&self.label).set(misses);
            m.evicted
                .get_or_create(&self.label)
                .set(num("evicted_keys").unwrap_or(0.0));
            m.expired
                .get_or_create(&self.label)
                .set(num("expired_keys").unwrap_or(0.0));
            m.memory_used.get_or_create(&self.label).set(used as i64);
            m.memory_max.get_or_create(&self.label).set(max as i64);
            m.clients.get_or_create(&self.label).set(clients as i64);
        }

        let mut keys = Map::new();
        let mut dbs = BTreeSet::new();
        for (k, v) in info.iter().filter(|(k, _)| is_db(k)) {
            let n = v
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or(0);
            if live.is_some() {
                m.keys
                    .get_or_create(&DbLabels {
                        component: self.component.clone(),
                        db: k.clone(),
                    })
                    .set(n);
            }
            keys.insert(k.clone(), json!(n));
            dbs.insert(k.clone());
        }
        // A database emptied since the last check leaves INFO: show it as 0.
        let mut known = lock(&self.dbs);
        for gone in known.difference(&dbs) {
            if live.is_some() {
                m.keys
                    .get_or_create(&DbLabels {
                        component: self.component.clone(),
                        db: gone.clone(),
                    })
                    .set(0);
            }
            keys.insert(gone.clone(), json!(0));
        }
        known.extend(dbs);
        drop(known);
        drop(live);

        let d = out.details.map_mut();
        for k in ["redis_version", "role"] {
            if let Some(v) = info.get(k) {
                d.insert(k.into(), json!(v));
            }
        }
        d.insert(
            "uptime_seconds".into(),
            json!(num("uptime_in_seconds").map(|v| v as u64)),
        );
        d.insert("connected_clients".into(), json!(clients as i64));
        for k in ["maxclients", "rejected_connections"] {
            if let Some(v) = num(k) {
                d.insert(k.into(), json!(v as u64));
            }
        }
        d.insert("used_memory_bytes".into(), json!(used as u64));
        d.insert("maxmemory_bytes".into(), json!(max as u64));
        let policy = info.get("maxmemory_policy").map(String::as_str);
        if let Some(p) = policy {
            d.insert("maxmemory_policy".into(), json!(p));
        }
        d.insert(
            "evicted_keys".into(),
            json!(num("evicted_keys").map(|v| v as u64)),
        );
        d.insert("keys".into(), Value::Object(keys));
        let lifetime = (hits + misses > 0.0).then(|| round4(hits / (hits + misses)));
        d.insert("lifetime_hit_rate".into(), json!(lifetime));

        let (rate, lookups) = self.hit_rate(hits, misses);
        d.insert("hit_rate".into(), json!(rate.map(round4)));
        d.insert("hit_rate_lookups".into(), json!(lookups as u64));
        if let (Some(rate), Some(limit)) = (rate, self.hit_rate_degraded_below)
            && rate < limit
        {
            out.raise(
                Status::Degraded,
                format!(
                    "cache hit rate {:.1}% below {:.1}%",
                    rate * 100.0,
                    limit * 100.0
                ),
            );
        }
        if let Some(why) = self.memory_problem(info, used, max, policy) {
            out.raise(Status::Degraded, why);
        }
        // Queue keys have no TTL: only an `allkeys-` policy evicts them.
        let evicted = grew(&self.evictions, num("evicted_keys"));
        if let (true, Some(n), Some(p)) = (self.queues, evicted, policy)
            && p.starts_with("allkeys-")
        {
            out.raise(
                Status::Degraded,
                format!(
                    "Redis evicted {n} key{} since the last check under maxmemory-policy {p}: \
                     queue keys can be among them (jobs lost); a Redis that holds queues needs \
                     noeviction (BullMQ requires it) or room to spare",
                    if n == 1.0 { "" } else { "s" }
                ),
            );
        }
        for why in server_problems(info) {
            out.raise(Status::Degraded, why);
        }
        if let Some(why) = client_problem(
            &self.rejected,
            clients,
            num("maxclients"),
            num("rejected_connections"),
        ) {
            out.raise(Status::Degraded, why);
        }
    }

    /// What the memory figures of INFO say is wrong, if anything: a Redis
    /// at `maxmemory` under `noeviction` refuses every write that needs
    /// memory (`OOM command not allowed`: a queue takes no new job), and
    /// with `memory_degraded_above` any Redis past that share of it. At
    /// `maxmemory` under an eviction policy a cache works as it should.
    fn memory_problem(
        &self,
        info: &BTreeMap<String, String>,
        used: f64,
        max: f64,
        policy: Option<&str>,
    ) -> Option<String> {
        if max <= 0.0 {
            return None;
        }
        let human = |k: &str, v: f64| {
            info.get(k)
                .cloned()
                .unwrap_or_else(|| format!("{} bytes", v as u64))
        };
        let (used_h, max_h) = (
            human("used_memory_human", used),
            human("maxmemory_human", max),
        );
        let share = used / max;
        if used >= max && policy == Some("noeviction") {
            return Some(format!(
                "memory full: {used_h} used of maxmemory {max_h} under maxmemory-policy \
                 noeviction, so Redis refuses writes (OOM): raise maxmemory, or find what \
                 grows (queues that are not drained, keys without a TTL)"
            ));
        }
        let limit = self.memory_degraded_above?;
        (share > limit).then(|| {
            format!(
                "memory {:.1}% of maxmemory ({used_h} of {max_h}), above {:.1}% \
                 (maxmemory-policy {})",
                share * 100.0,
                limit * 100.0,
                policy.unwrap_or("unknown")
            )
        })
    }

    /// Counts the lookups of depwatch's own queue reads (INFO stats `before`
    /// and `after` them), kept out of the hit rate.
    pub(super) fn count_own(
        &self,
        before: &BTreeMap<String, String>,
        after: &BTreeMap<String, String>,
    ) {
        let get = |i: &BTreeMap<String, String>, k: &str| {
            i.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        };
        let dh = get(after, "keyspace_hits") - get(before, "keyspace_hits");
        let dm = get(after, "keyspace_misses") - get(before, "keyspace_misses");
        let mut w = lock(&self.hits);
        w.own.0 += dh.max(0.0);
        w.own.1 += dm.max(0.0);
    }

    /// The hit rate over the lookups since the last judged sample, once at
    /// least `hit_rate_min_lookups` happened (else the previous rate stands).
    fn hit_rate(&self, hits: f64, misses: f64) -> (Option<f64>, f64) {
        let mut w = lock(&self.hits);
        if hits < w.last.0 || misses < w.last.1 {
            // Counters went down: the server restarted or was reset.
            w.own = (0.0, 0.0);
            w.base = None;
        }
        w.last = (hits, misses);
        let (hits, misses) = ((hits - w.own.0).max(0.0), (misses - w.own.1).max(0.0));
        let (h0, m0) = match w.base {
            Some((h0, m0)) if hits >= h0 && misses >= m0 => (h0, m0),
            _ => (0.0, 0.0),
        };
        let (dh, dm) = (hits - h0, misses - m0);
        let lookups = dh + dm;
        if lookups >= self.hit_rate_min_lookups.max(1) as f64 {
            w.rate = Some(dh / lookups);
            w.base = Some((hits, misses));
        } else if w.base.is_none() {
            w.base = Some((h0, m0));
        }
        (w.rate, lookups)
    }

    /// Removes the component's cache series.
    pub(super) fn forget(&self) {
        let m = &self.families;
        for f in [&m.hits, &m.misses, &m.evicted, &m.expired] {
            f.remove(&self.label);
        }
        for f in [&m.memory_used, &m.memory_max, &m.clients] {
            f.remove(&self.label);
        }
        for db in lock(&self.dbs).iter() {
            m.keys.remove(&DbLabels {
                component: self.component.clone(),
                db: db.clone(),
            });
        }
    }
}

/// How much the counter `now` grew since the check before (`last`, which
/// takes `now`): `None` at the first check, without growth, and after a
/// restart (the counter started over).
fn grew(last: &Mutex<Option<f64>>, now: Option<f64>) -> Option<f64> {
    let now = now?;
    let before = lock(last).replace(now)?;
    (now > before).then_some(now - before)
}

/// What INFO's client numbers say is wrong (`last`: `rejected_connections`
/// at the check before). A Redis at `maxclients` refuses new connections
/// ("ERR max number of clients reached"): the service cannot connect
/// while depwatch, on the connection it keeps, reads everything as fine.
/// Degraded while it is there, and for the check after connections were
/// refused.
fn client_problem(
    last: &Mutex<Option<f64>>,
    clients: f64,
    max: Option<f64>,
    rejected: Option<f64>,
) -> Option<String> {
    let max = max.filter(|m| *m > 0.0);
    let refused = grew(last, rejected);
    let told = |n: f64| {
        format!(
            "refused {n} connection{} since the last check",
            if n == 1.0 { "" } else { "s" }
        )
    };
    match (max, refused) {
        (Some(m), refused) if clients >= m => Some(format!(
            "at maxclients: {clients} clients connected of {m}, so Redis refuses new \
             connections (ERR max number of clients reached){}: look for a client that \
             leaks connections, or raise maxclients",
            refused.map_or(String::new(), |n| format!("; it {}", told(n)))
        )),
        (_, Some(n)) => Some(format!(
            "Redis {} (rejected_connections: at maxclients{}, or protected mode)",
            told(n),
            max.map_or(String::new(), |m| format!(" {m}"))
        )),
        _ => None,
    }
}

/// What INFO's persistence and replication sections say is wrong: a
/// failed save or append-only write (Redis then refuses writes with
/// `MISCONF` under its defaults, and a restart loses what was not saved:
/// most often a full disk), or a replica cut off from its master (it
/// serves the data of its last sync as if current).
fn server_problems(info: &BTreeMap<String, String>) -> Vec<String> {
    let get = |k: &str| info.get(k).map(String::as_str);
    let mut out = Vec::new();
    if get("rdb_last_bgsave_status") == Some("err") {
        out.push(
            "the last RDB save failed (rdb_last_bgsave_status:err): with save points and \
             stop-writes-on-bgsave-error, Redis's defaults, it refuses writes (MISCONF); \
             check the disk and permissions of its dir, and its log"
                .to_string(),
        );
    }
    if get("aof_enabled") == Some("1") && get("aof_last_write_status") == Some("err") {
        out.push(
            "the last append-only file write failed (aof_last_write_status:err): Redis \
             refuses writes (MISCONF) until one succeeds; check the disk of its dir, and its log"
                .to_string(),
        );
    }
    if get("role") == Some("slave") && get("master_link_status") == Some("down") {
        let master = format!(
            "{}:{}",
            get("master_host").unwrap_or("?"),
            get("master_port").unwrap_or("?")
        );
        let since = get("master_link_down_since_seconds")
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|s| *s >= 0)
            .map_or("since it became a replica".to_string(), |s| {
                format!("for {s}s")
            });
        out.push(format!(
            "replica of {master} with its link to the master down {since}: it serves the \
             data of its last sync (check the master, and the network and auth between them)"
        ));
    }
    out
}

fn is_db(k: &str) -> bool {
    k.strip_prefix("db")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `key:value` lines of INFO (sections and comments skipped).
pub(super) fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_parsed() {
        let i = parse_info(
            "# Stats\r\nkeyspace_hits:5\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n",
        );
        assert_eq!(i["keyspace_hits"], "5");
        assert!(is_db("db0") && !is_db("db") && !is_db("dbx"));
        assert_eq!(i["db0"], "keys=3,expires=0,avg_ttl=0");
    }

    #[test]
    fn a_counter_grew_since_the_check_before() {
        let last = Mutex::new(None);
        assert_eq!(grew(&last, Some(4.0)), None, "the first check takes note");
        assert_eq!(grew(&last, Some(4.0)), None);
        assert_eq!(grew(&last, Some(9.0)), Some(5.0));
        assert_eq!(grew(&last, None), None, "INFO without it");
        assert_eq!(grew(&last, Some(2.0)), None, "a restart");
        assert_eq!(grew(&last, Some(3.0)), Some(1.0));
    }

    #[test]
    fn refused_connections_are_told_once() {
        let last = Mutex::new(None);
        let at = |clients: f64, max: f64, rejected: f64| {
            client_problem(&last, clients, Some(max), Some(rejected))
        };
        // The first check only takes note.
        assert_eq!(at(5.0, 100.0, 7.0), None);
        assert_eq!(at(5.0, 100.0, 7.0), None);
        let told = at(5.0, 100.0, 10.0).unwrap();
        assert!(
            told.starts_with("Redis refused 3 connections since the last check (rejected_connections: at maxclients 100"),
            "{told}"
        );
        assert_eq!(at(5.0, 100.0, 10.0), None, "told once");
        // A restart starts the counter over: nothing refused.
        assert_eq!(at(5.0, 100.0, 0.0), None);
        let full = at(100.0, 100.0, 1.0).unwrap();
        assert!(
            full.starts_with("at maxclients: 100 clients connected of 100")
                && full.contains("; it refused 1 connection since the last check"),
            "{full}"
        );
    }

    #[test]
    fn persistence_and_replication_problems() {
        let problems = |text: &str| server_problems(&parse_info(text));
        let fine = "# Persistence\r\nrdb_last_bgsave_status:ok\r\naof_enabled:1\r\n\
                    aof_last_write_status:ok\r\n# Replication\r\nrole:master\r\n";
        assert!(problems(fine).is_empty());
        // A failed append-only write counts only where AOF is on.
        let aof = problems("aof_enabled:1\r\naof_last_write_status:err\r\n");
        assert_eq!(aof.len(), 1);
        assert!(
            aof[0]
                .starts_with("the last append-only file write failed (aof_last_write_status:err)"),
            "{aof:?}"
        );
        assert!(problems("aof_enabled:0\r\naof_last_write_status:err\r\n").is_empty());
        let replica = problems(
            "role:slave\r\nmaster_host:10.0.0.5\r\nmaster_port:6379\r\n\
             master_link_status:down\r\nmaster_link_down_since_seconds:42\r\n",
        );
        assert_eq!(replica.len(), 1);
        assert!(
            replica[0]
                .starts_with("replica of 10.0.0.5:6379 with its link to the master down for 42s"),
            "{replica:?}"
        );
        assert!(
            problems("role:slave\r\nmaster_link_status:up\r\n").is_empty(),
            "a replica in sync"
        );
        assert_eq!(
            problems(
                "rdb_last_bgsave_status:err\r\naof_enabled:1\r\naof_last_write_status:err\r\n"
            )
            .len(),
            2
        );
    }
}
