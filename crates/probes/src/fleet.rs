//! `[fleet]`: the instances of one deployment share their checks of shared dependencies through
//! Redis, so a fleet of N makes one call per interval, not N.
//!
//! Each interval (aligned on the wall clock), every instance asks for the dependency's lease
//! (`SET lease NX PX 0.9·interval`); the one that gets it checks and publishes the result with
//! its wall-clock time and its identity (`SET result PX stale_after`); the others wait for the
//! check's timeout and read it. A single lease key, expiring on Redis' own clock, keeps it at one
//! performer per interval even when the instances' clocks disagree by a few seconds: whoever
//! asks first after it expires gets it. A performer that dies mid-check leaves the lease to
//! expire: the next interval has another performer.
//!
//! The age of a result read is taken from its published time, so it goes stale exactly as a
//! local one would (`stale_after` after it was checked, give or take the clocks' skew). A value
//! that is not vitals' is ignored with a warning, never trusted.
//!
//! Redis that cannot be reached, or does not answer within 250 ms, never blocks a probe route
//! (they read the snapshot) and never stops the checks: each instance checks for itself, at its
//! own interval, and says so (a log line on each change, `vitals_fleet_connected`,
//! `vitals_fleet_checks_total{role="fallback"}`); it rejoins on the first answer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use vitals_core::config::{Check, Dependency};
use vitals_core::contract::metrics as names;
use vitals_core::lifecycle::{Outcome, Spread};

use crate::checks::Report;

/// The most of a published result's value that is read: vitals writes a few hundred bytes.
const RESULT_BYTES: usize = 16 * 1024;

/// How many instances check a failed result for themselves, to tell a fleet-wide outage from
/// one instance's broken path: at most this many extra calls an interval during an outage.
pub const CONFIRMERS: u64 = 2;

/// One instance's own latest result of a shared dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub instance: String,
    pub at_ms: u64,
    pub up: bool,
}

/// What the fleet's views say of this instance's own failed result: local when another
/// instance sees it up, fleet-wide when others see it down too.
pub fn spread_of_own(instance: &str, views: &[View]) -> Spread {
    let others = views.iter().filter(|v| v.instance != instance);
    let (mut up, mut down) = (false, false);
    for v in others {
        if v.up {
            up = true;
        } else {
            down = true;
        }
    }
    match (up, down) {
        (true, _) => Spread::Local,
        (false, true) => Spread::FleetWide,
        (false, false) => Spread::Unknown,
    }
}

/// What the fleet's views say of a failed result this instance only read: `Ok(at)` when an
/// instance saw it up lately (the failure is the performer's own), else the failure's spread:
/// fleet-wide when at least two instances see it down.
pub fn verdict_of_read(views: &[View]) -> Result<u64, Spread> {
    if let Some(at) = views.iter().filter(|v| v.up).map(|v| v.at_ms).max() {
        return Ok(at);
    }
    let down: std::collections::HashSet<&str> = views
        .iter()
        .filter(|v| !v.up)
        .map(|v| v.instance.as_str())
        .collect();
    Err(if down.len() >= 2 {
        Spread::FleetWide
    } else {
        Spread::Unknown
    })
}

/// How long one Redis command may take before the instance checks for itself.
const OP_TIMEOUT: Duration = Duration::from_millis(250);

/// What one instance did for a shared dependency in one interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It held the lease and checked.
    Performed,
    /// It read the performer's result.
    Read,
    /// Redis was unreachable: it checked for itself.
    Fallback,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Performed => "performed",
            Role::Read => "read",
            Role::Fallback => "fallback",
        }
    }
}

/// A result as published in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Milliseconds since the epoch, on the performer's clock, when its check finished.
    pub at_ms: u64,
    pub ok: bool,
    /// Why it failed (scrubbed as every reason vitals shows).
    pub reason: Option<String>,
    pub latency_ms: u64,
    /// The performer's identity.
    pub by: String,
}

impl Published {
    fn to_json(&self) -> String {
        serde_json::json!({
            "vitals": 1,
            "at_ms": self.at_ms,
            "ok": self.ok,
            "reason": self.reason,
            "latency_ms": self.latency_ms,
            "by": self.by,
        })
        .to_string()
    }

    /// The value, if it is one vitals wrote; anything else is `None`.
    pub fn parse(text: &str) -> Option<Published> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        if v.get("vitals")?.as_u64()? != 1 {
            return None;
        }
        let reason = match v.get("reason")? {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(clean(s)),
            _ => return None,
        };
        let ok = v.get("ok")?.as_bool()?;
        if !ok && reason.is_none() {
            return None;
        }
        Some(Published {
            at_ms: v.get("at_ms")?.as_u64()?,
            ok,
            reason,
            latency_ms: v.get("latency_ms")?.as_u64()?.min(3_600_000),
            by: clean(v.get("by")?.as_str()?),
        })
    }
}

/// A reason or identity from Redis, made safe to show: no control characters, at most 200.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The counts of one shared dependency, for the metrics.
#[derive(Debug, Default)]
struct Counts {
    performed: AtomicU64,
    read: AtomicU64,
    fallback: AtomicU64,
    /// The last role: 0 none yet, 1 performed, 2 read, 3 fallback.
    last: std::sync::atomic::AtomicU8,
    /// The published time of the result last used (ms since the epoch; 0: none yet).
    result_at_ms: AtomicU64,
    /// Where the last result taken places a failure: see [`Outage`].
    outage: std::sync::atomic::AtomicU8,
}

/// Where the fleet's view places the failure of a shared dependency this instance last took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Up (or nothing taken yet).
    None = 0,
    /// Down, and the views could not place it (too few instances checked lately, or Redis gone).
    Unplaced = 1,
    /// Down for this instance while others see it up: its own path.
    ThisInstance = 2,
    /// Down for everyone who checked lately.
    FleetWide = 3,
}

impl Outage {
    pub fn of(ok: bool, spread: Spread) -> Outage {
        match (ok, spread) {
            (true, _) => Outage::None,
            (false, Spread::Unknown) => Outage::Unplaced,
            (false, Spread::Local) => Outage::ThisInstance,
            (false, Spread::FleetWide) => Outage::FleetWide,
        }
    }

    fn from_u8(v: u8) -> Outage {
        match v {
            1 => Outage::Unplaced,
            2 => Outage::ThisInstance,
            3 => Outage::FleetWide,
            _ => Outage::None,
        }
    }

    /// The `scope` label; `None` while up.
    pub fn scope(self) -> Option<&'static str> {
        match self {
            Outage::None => None,
            Outage::Unplaced => Some("unplaced"),
            Outage::ThisInstance => Some("this-instance"),
            Outage::FleetWide => Some("fleet-wide"),
        }
    }
}

#[derive(Debug)]
struct Shared {
    name: String,
    key: String,
    counts: Counts,
    /// The hour (since the epoch) in which running out of budget was last logged.
    budget_told: AtomicU64,
}

/// The fleet of one runtime: its Redis, its identity, and its shared dependencies.
#[derive(Debug, Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    instance: String,
    connected: AtomicBool,
    /// Whether the state was ever logged (the first failure is logged even at start).
    told: AtomicBool,
    shared: Vec<Shared>,
}

/// Why the fleet could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct FleetError {
    /// The key of `[fleet]` at fault (`fleet.redis_url`, `fleet.ca_file`).
    pub key: &'static str,
    pub reason: String,
}

impl Fleet {
    /// The fleet `config` asks for, for its shared dependencies; `None` without `[fleet]`.
    pub fn new(config: &vitals_core::Config) -> Result<Option<Fleet>, FleetError> {
        let Some(f) = &config.fleet else {
            return Ok(None);
        };
        use crate::checks::redis::{client, ClientError};
        let client = client(
            f.redis_url.as_str(),
            f.password.as_ref(),
            f.ca_file.as_deref(),
        )
        .map_err(|e| match e {
            ClientError::Url(e) | ClientError::Open(e) => FleetError {
                key: "fleet.redis_url",
                reason: e.to_string(),
            },
            ClientError::Ca(reason) => FleetError {
                key: "fleet.ca_file",
                reason,
            },
        })?;
        let shared = config
            .dependencies
            .iter()
            .filter(|d| d.shared)
            .map(|d| Shared {
                name: d.name.clone(),
                key: format!("{}:{}:{:016x}", f.key_prefix, d.name, fnv(&identity(d))),
                counts: Counts::default(),
                budget_told: AtomicU64::new(u64::MAX),
            })
            .collect();
        Ok(Some(Fleet {
            inner: Arc::new(Inner {
                client,
                conn: tokio::sync::Mutex::new(None),
                instance: instance_id(),
                connected: AtomicBool::new(false),
                told: AtomicBool::new(false),
                shared,
            }),
        }))
    }

    /// This instance's identity in the fleet: host, pid and a random part.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Whether the last Redis command succeeded.
    pub fn connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// The Redis key prefix of shared dependency `name` (its result is at `KEY:result`).
    pub fn key(&self, name: &str) -> Option<&str> {
        self.shared(name).map(|s| s.key.as_str())
    }

    fn shared(&self, name: &str) -> Option<&Shared> {
        self.inner.shared.iter().find(|s| s.name == name)
    }

    pub(crate) fn is_shared(&self, name: &str) -> bool {
        self.shared(name).is_some()
    }

    /// `/status`'s `fleet` section: whether Redis answers, this instance's identity, and per
    /// shared dependency what it did last, how often, and the age of the result it used.
    pub fn status(&self) -> serde_json::Value {
        let inner = &self.inner;
        let now = now_ms();
        serde_json::json!({
            "connected": inner.connected.load(Ordering::Relaxed),
            "mode": if inner.connected.load(Ordering::Relaxed) { "shared" } else { "fallback: checking shared dependencies itself" },
            "instance": inner.instance,
            "dependencies": inner.shared.iter().map(|s| {
                let at = s.counts.result_at_ms.load(Ordering::Relaxed);
                serde_json::json!({
                    "name": s.name,
                    "key": s.key,
                    "last_role": match s.counts.last.load(Ordering::Relaxed) {
                        1 => Some("performed"),
                        2 => Some("read"),
                        3 => Some("fallback"),
                        _ => None,
                    },
                    "performed": s.counts.performed.load(Ordering::Relaxed),
                    "read": s.counts.read.load(Ordering::Relaxed),
                    "fallback": s.counts.fallback.load(Ordering::Relaxed),
                    "result_age_seconds": (at > 0).then(|| now.saturating_sub(at) as f64 / 1000.0),
                    "outage": Outage::from_u8(s.counts.outage.load(Ordering::Relaxed)).scope(),
                })
            }).collect::<Vec<_>>(),
        })
    }

    /// Registers `vitals_fleet_*` into `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(FleetCollector(self.inner.clone())));
    }

    fn state_changed(&self, ok: bool, error: Option<&str>) {
        let was = self.inner.connected.swap(ok, Ordering::Relaxed);
        let told = self.inner.told.swap(true, Ordering::Relaxed);
        if was != ok || !told {
            if ok {
                tracing::info!(
                    instance = %self.inner.instance,
                    "fleet: Redis answers; shared dependencies are checked once per interval for the fleet"
                );
            } else {
                tracing::warn!(
                    error = error.unwrap_or(""),
                    "fleet: Redis unreachable; this instance checks its shared dependencies itself until it answers"
                );
            }
        }
    }

    async fn command<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, String> {
        let attempt = async {
            let mut guard = self.inner.conn.lock().await;
            if guard.is_none() {
                *guard = Some(
                    self.inner
                        .client
                        .get_multiplexed_async_connection()
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            let mut conn = guard.clone().expect("set above");
            drop(guard);
            cmd.query_async::<T>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        let result = match tokio::time::timeout(OP_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {}ms", OP_TIMEOUT.as_millis())),
        };
        if result.is_err() {
            // A fresh connection next time.
            *self.inner.conn.lock().await = None;
        }
        self.state_changed(result.is_ok(), result.as_ref().err().map(String::as_str));
        result
    }

    /// Asks for the lease of `name` for `hold`: `Ok(true)` when this instance got it.
    pub(crate) async fn lease(&self, name: &str, hold: Duration) -> Result<bool, String> {
        let key = self.key(name).ok_or("not shared")?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{key}:lease"))
            .arg(&self.inner.instance)
            .arg("NX")
            .arg("PX")
            .arg(hold.as_millis().max(1) as u64);
        let reply: Option<String> = self.command(cmd).await?;
        Ok(reply.is_some())
    }

    /// Publishes a result of `name`, kept for `keep`.
    pub(crate) async fn publish(&self, name: &str, result: &Published, keep: Duration) {
        let Some(key) = self.key(name) else { return };
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{key}:result"))
            .arg(result.to_json())
            .arg("PX")
            .arg(keep.as_millis().max(1) as u64);
        if let Err(e) = self.command::<()>(cmd).await {
            tracing::debug!(dependency = name, error = %e, "fleet: cannot publish the result");
        }
    }

    /// The published result of `name`: `Ok(None)` when there is none, or when the value is not
    /// vitals' (warned about).
    pub(crate) async fn read(&self, name: &str) -> Result<Option<Published>, String> {
        let key = self.key(name).ok_or("not shared")?;
        // At most RESULT_BYTES of it: vitals' values are a few hundred bytes, and a huge value
        // someone else put there is neither read whole nor held.
        let mut cmd = redis::cmd("GETRANGE");
        cmd.arg(format!("{key}:result"))
            .arg(0)
            .arg(RESULT_BYTES - 1);
        let value: Vec<u8> = self.command(cmd).await?;
        // An empty string is a missing key.
        let value = (!value.is_empty()).then(|| String::from_utf8_lossy(&value).into_owned());
        Ok(value.and_then(|text| {
            let parsed = Published::parse(&text);
            if parsed.is_none() {
                tracing::warn!(
                    dependency = name,
                    key = format!("{key}:result"),
                    "fleet: the value there is not a vitals result; ignored"
                );
            }
            parsed
        }))
    }

    /// Publishes this instance's own result of `name` in the fleet's view of it.
    pub(crate) async fn publish_view(&self, name: &str, at_ms: u64, ok: bool, keep: Duration) {
        let Some(key) = self.key(name) else { return };
        let mut set = redis::cmd("HSET");
        set.arg(format!("{key}:views"))
            .arg(&self.inner.instance)
            .arg(format!("{at_ms} {}", u8::from(ok)));
        if self.command::<()>(set).await.is_ok() {
            let mut expire = redis::cmd("PEXPIRE");
            expire
                .arg(format!("{key}:views"))
                .arg(keep.as_millis().max(1) as u64);
            let _ = self.command::<()>(expire).await;
        }
    }

    /// The fleet's views of `name` no older than `fresh`: (instance, published at, up).
    pub(crate) async fn views(&self, name: &str, fresh: Duration) -> Result<Vec<View>, String> {
        let key = self.key(name).ok_or("not shared")?;
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(format!("{key}:views"));
        let all: std::collections::HashMap<String, String> = self.command(cmd).await?;
        let now = now_ms();
        let fresh_ms = u64::try_from(fresh.as_millis()).unwrap_or(u64::MAX);
        let mut views = Vec::new();
        // Instances gone long ago (each start has its own identity) leave entries behind: pruned
        // here, so the hash does not grow with every restart of the fleet.
        let mut gone = Vec::new();
        for (instance, value) in all {
            let parsed = value.split_once(' ').and_then(|(at, up)| {
                let up = match up {
                    "1" => true,
                    "0" => false,
                    _ => return None,
                };
                Some((at.parse::<u64>().ok()?, up))
            });
            match parsed {
                Some((at, up)) if now.saturating_sub(at) < fresh_ms => views.push(View {
                    instance: clean(&instance),
                    at_ms: at,
                    up,
                }),
                Some((at, _)) if now.saturating_sub(at) < fresh_ms.saturating_mul(10) => {}
                _ => gone.push(instance),
            }
        }
        if !gone.is_empty() {
            let mut del = redis::cmd("HDEL");
            del.arg(format!("{key}:views")).arg(gone);
            let _ = self.command::<()>(del).await;
        }
        Ok(views)
    }

    /// One of at most [`CONFIRMERS`] own checks of the failed result published at `at_ms`.
    pub(crate) async fn confirm(
        &self,
        name: &str,
        at_ms: u64,
        hold: Duration,
    ) -> Result<bool, String> {
        let key = self.key(name).ok_or("not shared")?;
        let confirm = format!("{key}:confirm:{at_ms}");
        let mut incr = redis::cmd("INCR");
        incr.arg(&confirm);
        let n: u64 = self.command(incr).await?;
        if n == 1 {
            let mut expire = redis::cmd("PEXPIRE");
            expire.arg(&confirm).arg(hold.as_millis().max(1) as u64);
            let _ = self.command::<()>(expire).await;
        }
        Ok(n <= CONFIRMERS)
    }

    /// Spends one call of `name`'s fleet-wide `max_probes_per_hour` (`budget`), counted in Redis
    /// per wall-clock hour. The performer's call always counts and is always made (its interval
    /// already fits the budget). An `extra` call (a confirmation of a failure, an instance
    /// re-checking its own path) is made only while the hour has room for it and for every
    /// performer slot still to come in the hour: `Ok(false)` says to do without it.
    pub(crate) async fn spend(
        &self,
        name: &str,
        budget: u32,
        interval: Duration,
        extra: bool,
    ) -> Result<bool, String> {
        let key = self.key(name).ok_or("not shared")?;
        let now = now_ms();
        let hour = now / HOUR_MS;
        let reserve = if extra {
            performer_slots_left(now, interval)
        } else {
            0
        };
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SPEND)
            .arg(1)
            .arg(format!("{key}:spent:{hour}"))
            .arg(u8::from(extra))
            .arg(reserve)
            .arg(2 * HOUR_MS)
            .arg(budget);
        let allowed: i64 = self.command(cmd).await?;
        if allowed == 0 {
            if let Some(s) = self.shared(name) {
                if s.budget_told.swap(hour, Ordering::Relaxed) != hour {
                    tracing::info!(
                        dependency = name,
                        max_probes_per_hour = budget,
                        "fleet: the hour's probe budget has no room for extra checks; failures go unconfirmed and instances do not re-check their own path until the next hour"
                    );
                }
            }
        }
        Ok(allowed == 1)
    }

    /// Notes where the result this instance just took places a failure.
    pub(crate) fn note_outage(&self, name: &str, outage: Outage) {
        if let Some(s) = self.shared(name) {
            s.counts.outage.store(outage as u8, Ordering::Relaxed);
        }
    }

    pub(crate) fn count(&self, name: &str, role: Role, result_at_ms: Option<u64>) {
        let Some(s) = self.shared(name) else { return };
        let counter = match role {
            Role::Performed => &s.counts.performed,
            Role::Read => &s.counts.read,
            Role::Fallback => &s.counts.fallback,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        s.counts.last.store(
            match role {
                Role::Performed => 1,
                Role::Read => 2,
                Role::Fallback => 3,
            },
            Ordering::Relaxed,
        );
        if let Some(at) = result_at_ms {
            s.counts.result_at_ms.store(at, Ordering::Relaxed);
        }
    }

    /// A result to publish from this instance's own check.
    pub(crate) fn published(&self, report: &Report, latency: Duration) -> Published {
        Published {
            at_ms: now_ms(),
            ok: report.outcome.is_success(),
            // As readers take it (at most 200 characters): the value stays within RESULT_BYTES.
            reason: report.outcome.reason().map(|r| clean(&r)),
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            by: self.inner.instance.clone(),
        }
    }
}

/// A published result as a report of this instance, valid for what is left of `stale_after`;
/// `None` when it is already stale.
pub(crate) fn report_of(
    p: &Published,
    stale_after: Duration,
) -> Option<(Report, Duration, Duration)> {
    let age = Duration::from_millis(now_ms().saturating_sub(p.at_ms));
    let left = stale_after.checked_sub(age).filter(|d| !d.is_zero())?;
    let outcome = if p.ok {
        Outcome::Success
    } else {
        Outcome::Failed {
            reason: p.reason.clone().unwrap_or_default(),
        }
    };
    Some((
        Report::from(outcome),
        Duration::from_millis(p.latency_ms),
        left,
    ))
}

const HOUR_MS: u64 = 3_600_000;

/// Counts a call in the hour's counter; an extra call (ARGV[1] = 1) is taken back and refused
/// when it and the performer slots still to come (ARGV[2]) would pass the budget (ARGV[4]).
const SPEND: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
if ARGV[1] == '1' and n + tonumber(ARGV[2]) > tonumber(ARGV[4]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return 1
";

/// How many slots of `interval` start after `now_ms` and before the end of its wall-clock hour.
pub(crate) fn performer_slots_left(now_ms: u64, interval: Duration) -> u64 {
    let slot = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let hour_end = (now_ms / HOUR_MS + 1) * HOUR_MS;
    let next = (now_ms / slot + 1) * slot;
    if next >= hour_end {
        0
    } else {
        (hour_end - next).div_ceil(slot)
    }
}

/// Milliseconds until the next multiple of `interval` on the wall clock.
pub(crate) fn until_next_slot(interval: Duration) -> Duration {
    let slot = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let now = now_ms();
    Duration::from_millis(slot - now % slot)
}

/// What makes two instances' checks the same check: the kind and what it reaches (not its
/// secrets). Two deployments that share a Redis and a prefix but check different things get
/// different keys.
fn identity(d: &Dependency) -> String {
    let target = match &d.check {
        Check::Http(c) => c.url.to_string(),
        Check::Llm(c) => format!("{} {}", c.base_url, c.model.as_deref().unwrap_or("")),
        Check::Redis(c) => c.url.to_string(),
        Check::Postgres(c) => c.url.to_string(),
        Check::Tcp(c) => c.address.clone(),
        Check::Exec(c) => c.command.join(" "),
    };
    format!("{}|{target}|{:?}", d.kind.as_str(), d.interval.std())
}

/// FNV-1a, 64 bits: a stable short name for an identity (not a security boundary).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "vitals".to_owned());
    format!(
        "{}:{}:{:04x}",
        clean(&host),
        std::process::id(),
        fastrand::u16(..)
    )
}

#[derive(Debug)]
struct FleetCollector(Arc<Inner>);

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let inner = &self.0;
        let mut e = encoder.encode_descriptor(
            names::counter_base(names::FLEET_CHECKS_TOTAL),
            "Checks of shared dependencies by what this instance did: performed (held the lease and checked), read (used the performer's result), fallback (Redis unreachable: checked itself)",
            None,
            MetricType::Counter,
        )?;
        for s in &inner.shared {
            for (role, n) in [
                (Role::Performed, &s.counts.performed),
                (Role::Read, &s.counts.read),
                (Role::Fallback, &s.counts.fallback),
            ] {
                ConstCounter::new(n.load(Ordering::Relaxed)).encode(e.encode_family(&[
                    ("dependency", s.name.as_str()),
                    ("role", role.as_str()),
                ])?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            names::FLEET_RESULT_AGE,
            "Age of the shared dependency's result this instance last used, from its published time",
            None,
            MetricType::Gauge,
        )?;
        let now = now_ms();
        for s in &inner.shared {
            let at = s.counts.result_at_ms.load(Ordering::Relaxed);
            if at > 0 {
                ConstGauge::new(now.saturating_sub(at) as f64 / 1000.0)
                    .encode(e.encode_family(&[("dependency", s.name.as_str())])?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            names::FLEET_OUTAGE,
            "1 for where the fleet's view places this instance's last failure of a shared dependency: fleet-wide (everyone who checked sees it down), this-instance (others see it up), unplaced (too few checked lately); 0 for the other scopes and while it is up",
            None,
            MetricType::Gauge,
        )?;
        for s in &inner.shared {
            let now_at = Outage::from_u8(s.counts.outage.load(Ordering::Relaxed));
            for o in [Outage::FleetWide, Outage::ThisInstance, Outage::Unplaced] {
                ConstGauge::new(i64::from(o == now_at)).encode(e.encode_family(&[
                    ("dependency", s.name.as_str()),
                    ("scope", o.scope().unwrap_or_default()),
                ])?)?;
            }
        }
        let e = encoder.encode_descriptor(
            names::FLEET_CONNECTED,
            "1 while Redis answers this instance's fleet commands",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(inner.connected.load(Ordering::Relaxed))).encode(e)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vitals_values_are_read() {
        let p = Published {
            at_ms: 1_700_000_000_000,
            ok: false,
            reason: Some("HTTP 503".into()),
            latency_ms: 120,
            by: "host:1:abcd".into(),
        };
        assert_eq!(Published::parse(&p.to_json()), Some(p));
        for hostile in [
            "OK",
            "{}",
            r#"{"vitals":2,"at_ms":1,"ok":true,"reason":null,"latency_ms":1,"by":"x"}"#,
            r#"{"vitals":1,"at_ms":-1,"ok":true,"reason":null,"latency_ms":1,"by":"x"}"#,
            r#"{"vitals":1,"at_ms":1,"ok":"yes","reason":null,"latency_ms":1,"by":"x"}"#,
            r#"{"vitals":1,"at_ms":1,"ok":false,"reason":null,"latency_ms":1,"by":"x"}"#,
            r#"{"vitals":1,"at_ms":1,"ok":true,"reason":7,"latency_ms":1,"by":"x"}"#,
        ] {
            assert_eq!(Published::parse(hostile), None, "{hostile}");
        }
        let odd = r#"{"vitals":1,"at_ms":1,"ok":false,"reason":"a\u001b[31mred\nline","latency_ms":99999999999,"by":"x"}"#;
        let p = Published::parse(odd).unwrap();
        assert_eq!(p.reason.as_deref(), Some("a [31mred line"));
        assert_eq!(p.latency_ms, 3_600_000);
    }

    /// However long a check's reason, the value published is one a reader takes whole.
    #[test]
    fn a_published_result_fits_in_what_a_reader_takes() {
        let config = vitals_core::config::from_toml(
            "[fleet]\nredis_url = \"redis://127.0.0.1:1/0\"\n[[dependencies]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\n",
            &|_| None,
        )
        .unwrap();
        let fleet = Fleet::new(&config).unwrap().unwrap();
        let report = Report::from(Outcome::Failed {
            reason: "\u{1F4A5}\"\\".repeat(10_000),
        });
        let json = fleet.published(&report, Duration::from_millis(5)).to_json();
        assert!(json.len() < RESULT_BYTES, "{} bytes", json.len());
        let read = Published::parse(&json).unwrap();
        assert_eq!(read.reason.unwrap().chars().count(), 200);
    }

    #[test]
    fn the_budget_reserves_every_performer_slot_left_in_the_hour() {
        let hour = 1_700_000_000_000 / HOUR_MS * HOUR_MS;
        let m = Duration::from_secs(60);
        // At the hour's start, the 59 slots after this one.
        assert_eq!(performer_slots_left(hour, m), 59);
        assert_eq!(performer_slots_left(hour + 59_999, m), 59);
        assert_eq!(performer_slots_left(hour + 60_000, m), 58);
        // In the last slot, none.
        assert_eq!(performer_slots_left(hour + HOUR_MS - 1, m), 0);
        // An interval that does not divide the hour: slots starting before its end count.
        let seven = Duration::from_secs(7 * 60);
        assert_eq!(performer_slots_left(hour, seven), 8);
        // An hour-long interval leaves none; a longer one too.
        assert_eq!(performer_slots_left(hour + 5, Duration::from_secs(3600)), 0);
        assert_eq!(performer_slots_left(hour + 5, Duration::from_secs(7200)), 0);
    }

    #[test]
    fn a_result_is_valid_for_what_is_left_of_stale_after() {
        let fresh = Published {
            at_ms: now_ms() - 10_000,
            ok: true,
            reason: None,
            latency_ms: 5,
            by: "b".into(),
        };
        let (report, latency, left) = report_of(&fresh, Duration::from_secs(65)).unwrap();
        assert!(report.outcome.is_success());
        assert_eq!(latency, Duration::from_millis(5));
        assert!(
            left <= Duration::from_secs(55) && left > Duration::from_secs(54),
            "{left:?}"
        );
        let old = Published {
            at_ms: now_ms() - 70_000,
            ..fresh.clone()
        };
        assert!(report_of(&old, Duration::from_secs(65)).is_none());
        // A performer whose clock runs ahead: its result is not older than now.
        let ahead = Published {
            at_ms: now_ms() + 3_000,
            ..fresh
        };
        let (_, _, left) = report_of(&ahead, Duration::from_secs(65)).unwrap();
        assert_eq!(left, Duration::from_secs(65));
    }

    #[test]
    fn the_views_tell_a_fleet_outage_from_one_broken_path() {
        let view = |i: &str, up: bool| View {
            instance: i.into(),
            at_ms: 1000,
            up,
        };
        // My check failed; another instance sees it up: my path.
        assert_eq!(
            spread_of_own("a", &[view("a", false), view("b", true)]),
            Spread::Local
        );
        // Others see it down too: the fleet's.
        assert_eq!(
            spread_of_own("a", &[view("a", false), view("b", false), view("c", false)]),
            Spread::FleetWide
        );
        // Nobody else checked lately: cannot tell.
        assert_eq!(spread_of_own("a", &[view("a", false)]), Spread::Unknown);
        // A reader of a failed result: someone sees it up, so it is the performer's path.
        assert_eq!(
            verdict_of_read(&[view("p", false), view("c", true)]),
            Ok(1000)
        );
        assert_eq!(
            verdict_of_read(&[view("p", false), view("c", false)]),
            Err(Spread::FleetWide)
        );
        assert_eq!(verdict_of_read(&[view("p", false)]), Err(Spread::Unknown));
    }

    #[test]
    fn slots_are_aligned_on_the_wall_clock() {
        let d = until_next_slot(Duration::from_secs(30));
        assert!(d > Duration::ZERO && d <= Duration::from_secs(30));
        assert!((now_ms() + d.as_millis() as u64) % 30_000 < 50);
    }
}
