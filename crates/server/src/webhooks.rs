//! Webhooks: an app's events, POSTed to its endpoints in signed JSON batches, at least once
//! and in order per key.
//!
//! Every node runs a [`Dispatcher`]. For each endpoint in the configuration in force and each
//! partition of the app's event log, one worker at a time in the cluster holds the lease
//! ([`Store::event_lease`]) and delivers: it reads the partition after the endpoint's cursor,
//! leaves out what the endpoint does not want and the offline/online pairs of a connection
//! back within `presence_grace_secs`, POSTs a batch (at most `webhook_batch_max_events`,
//! waiting `webhook_batch_linger_ms` for more), retries it with backoff (1 s doubling to
//! `webhook_retry_max_secs`, with jitter) until it is taken or its oldest event is older than
//! `webhook_retention_secs` (then dropped and counted), and only then moves the cursor. A
//! node that dies mid-batch leaves the cursor where it was: whoever takes the lease next
//! delivers the batch again, with the same event ids.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use hmac::{Hmac, Mac};
use opensig_protocol::ident::AppId;
use opensig_protocol::names::domain;
use opensig_protocol::names::domain::{DELIVERY_HEADER, SIGNATURE_HEADER};
use parking_lot::Mutex;
use serde_json::Value;
use sha2::Sha256;
use tokio::time::Instant;

use crate::config::{LimitsNow, Webhook};
use crate::events::{render, Happened};
use crate::signaling::Signaling;
use crate::store::{now_ms, Store};

/// How long a worker's lease lasts without renewal (a dead node's partitions move after it).
const LEASE: Duration = Duration::from_secs(5);
/// How often a lease is renewed while a worker lives.
const RENEW: Duration = Duration::from_secs(1);
/// Events read from a partition at a time (the look-ahead of the presence debounce).
const READ_MAX: usize = 500;
/// The longest a delivery's answer body is kept (the test endpoint's reply, the last error).
const BODY_KEPT: usize = 1024;

/// `t=<ts>,v1=<hex>`: the signature of `body` sent at `ts` (Unix seconds) with `secret`.
pub fn sign(secret: &str, ts: u64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("t={ts},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Latency buckets of the delivery histogram (milliseconds from the event to its delivery).
const BUCKETS_MS: [u64; 10] = [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000];

/// What one endpoint's deliveries did on this node.
#[derive(Default)]
pub struct EndpointStats {
    /// Events delivered (taken with a 2xx).
    pub delivered: AtomicU64,
    /// Batches delivered.
    pub batches: AtomicU64,
    /// Tries that failed and were retried.
    pub retried: AtomicU64,
    /// Events dropped: past the retention window, or pushed out of the log by its caps.
    pub dropped: AtomicU64,
    /// Events waiting, per partition this node delivers (at the last read).
    depth: Mutex<BTreeMap<u32, u64>>,
    /// Latency histogram: counts per bucket (the last one is +Inf), and the sum in ms.
    latency: Mutex<([u64; BUCKETS_MS.len() + 1], u64)>,
    /// The last failure (status and body, or the connection error).
    pub last_error: Mutex<Option<String>>,
}

impl EndpointStats {
    fn observe(&self, ms: u64) {
        let mut l = self.latency.lock();
        let i = BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BUCKETS_MS.len());
        l.0[i] += 1;
        l.1 += ms;
    }

    /// Events waiting in the partitions this node delivers.
    pub fn depth(&self) -> u64 {
        self.depth.lock().values().sum()
    }
}

/// The answer of an endpoint to one delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Answer {
    /// The endpoint.
    pub endpoint: String,
    /// Its HTTP status (none: no answer).
    pub status: Option<u16>,
    /// The start of its body.
    pub body: String,
    /// Why there was no answer.
    pub error: Option<String>,
}

impl Answer {
    fn taken(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    fn describe(&self) -> String {
        match (&self.status, &self.error) {
            (Some(s), _) => format!("HTTP {s}: {}", self.body),
            (None, Some(e)) => e.clone(),
            (None, None) => "no answer".into(),
        }
    }
}

/// One delivery of `body` to `w` (no redirects; `timeout`).
pub async fn post(http: &reqwest::Client, w: &Webhook, body: String, delivery: &str) -> Answer {
    let ts = now_ms() / 1000;
    let signature = sign(&w.secret, ts, &body);
    let r = http
        .post(&w.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header(DELIVERY_HEADER, delivery)
        .body(body)
        .send()
        .await;
    match r {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let mut body = resp.text().await.unwrap_or_default();
            if body.len() > BODY_KEPT {
                let mut end = BODY_KEPT;
                while !body.is_char_boundary(end) {
                    end -= 1;
                }
                body.truncate(end);
            }
            Answer {
                endpoint: w.name.clone(),
                status: Some(status),
                body,
                error: None,
            }
        }
        Err(e) => Answer {
            endpoint: w.name.clone(),
            status: None,
            body: String::new(),
            error: Some(error_chain(&e)),
        },
    }
}

/// [`post`], given up after `timeout`.
async fn post_within(
    http: &reqwest::Client,
    w: &Webhook,
    body: String,
    delivery: &str,
    timeout: Duration,
) -> Answer {
    match tokio::time::timeout(timeout, post(http, w, body, delivery)).await {
        Ok(a) => a,
        Err(_) => Answer {
            endpoint: w.name.clone(),
            status: None,
            body: String::new(),
            error: Some(format!("no answer within {timeout:?}")),
        },
    }
}

/// An error with its causes (reqwest's own message says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The body of a delivery: `{"app": …, "events": [ … ]}` (each event as it was logged).
pub fn batch_body(app: &str, events: &[&str]) -> String {
    let mut body = String::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 64);
    body.push_str("{\"app\":");
    body.push_str(&Value::String(app.to_string()).to_string());
    body.push_str(",\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(e);
    }
    body.push_str("]}");
    body
}

/// A metric of every endpoint: name, Prometheus type, how to read it.
type Row = (&'static str, &'static str, fn(&EndpointStats) -> u64);

/// The webhook deliveries of this node.
pub struct Dispatcher {
    /// This node's name in leases.
    holder: String,
    http: reqwest::Client,
    /// Per (app, endpoint name): what its deliveries did on this node.
    stats: Mutex<BTreeMap<(String, String), Arc<EndpointStats>>>,
    /// When this node first saw each endpoint (ms): an endpoint without a cursor starts there.
    seen: Mutex<HashMap<(String, String), u64>>,
}

impl Dispatcher {
    /// A dispatcher for the node `holder`.
    pub fn new(holder: String) -> Dispatcher {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("opensig-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds");
        Dispatcher {
            holder,
            http,
            stats: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The statistics of one endpoint (created on first use).
    pub fn stats_of(&self, app: &str, endpoint: &str) -> Arc<EndpointStats> {
        self.stats
            .lock()
            .entry((app.to_string(), endpoint.to_string()))
            .or_default()
            .clone()
    }

    /// Every endpoint's statistics.
    pub fn all_stats(&self) -> Vec<((String, String), Arc<EndpointStats>)> {
        self.stats
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Prometheus text of every endpoint's deliveries.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let all = self.all_stats();
        let counters: [Row; 5] = [
            ("opensig_webhook_events_delivered_total", "counter", |s| {
                s.delivered.load(Ordering::Relaxed)
            }),
            ("opensig_webhook_batches_delivered_total", "counter", |s| {
                s.batches.load(Ordering::Relaxed)
            }),
            ("opensig_webhook_retries_total", "counter", |s| {
                s.retried.load(Ordering::Relaxed)
            }),
            ("opensig_webhook_events_dropped_total", "counter", |s| {
                s.dropped.load(Ordering::Relaxed)
            }),
            ("opensig_webhook_queue_depth", "gauge", |s| s.depth()),
        ];
        let label = |app: &str, ep: &str| {
            format!(
                "app=\"{}\",endpoint=\"{}\"",
                prom_escape(app),
                prom_escape(ep)
            )
        };
        for (name, kind, get) in counters {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for ((app, ep), s) in &all {
                let _ = writeln!(out, "{name}{{{}}} {}", label(app, ep), get(s));
            }
        }
        let name = "opensig_webhook_latency_ms";
        let _ = writeln!(out, "# TYPE {name} histogram");
        for ((app, ep), s) in &all {
            let l = label(app, ep);
            let (counts, sum) = *s.latency.lock();
            let mut acc = 0;
            for (i, c) in counts.iter().enumerate() {
                acc += c;
                let le = BUCKETS_MS
                    .get(i)
                    .map_or("+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"{le}\"}} {acc}");
            }
            let _ = writeln!(out, "{name}_sum{{{l}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{l}}} {acc}");
        }
    }

    /// Send a signed `webhook.test` event to each endpoint of `app` and say what each
    /// answered (outside the log: nothing is retried).
    pub async fn test(
        &self,
        app: &AppId,
        endpoints: &[Webhook],
        id: &str,
        timeout: Duration,
    ) -> Vec<Answer> {
        let event = render(id, app, now_ms(), &Happened::WebhookTest);
        let body = batch_body(app, &[&event]);
        let mut answers = Vec::new();
        for w in endpoints {
            answers.push(post_within(&self.http, w, body.clone(), id, timeout).await);
        }
        answers
    }

    /// Keep one worker per endpoint and partition of the configuration in force, until the
    /// rules are gone.
    pub fn run<S: Store>(self: &Arc<Self>, signaling: &Arc<Signaling<S>>) {
        let me = self.clone();
        let weak = Arc::downgrade(signaling);
        tokio::spawn(async move {
            let mut workers: HashMap<(Webhook, u32), tokio::task::JoinHandle<()>> = HashMap::new();
            loop {
                let Some(sig) = weak.upgrade() else { break };
                let config = sig.config();
                let partitions = sig.store().event_partitions();
                drop(sig);
                let wanted: HashSet<(Webhook, u32)> = config
                    .webhooks
                    .iter()
                    .flat_map(|w| (0..partitions).map(move |p| (w.clone(), p)))
                    .collect();
                // an endpoint removed, or changed (a new secret, URL or filter), stops here
                workers.retain(|k, task| {
                    let keep = wanted.contains(k) && !task.is_finished();
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                for (w, p) in wanted {
                    if workers.contains_key(&(w.clone(), p)) {
                        continue;
                    }
                    let since = *me
                        .seen
                        .lock()
                        .entry((w.app.clone(), w.name.clone()))
                        // events appended while this loop caught up with a reload count
                        .or_insert_with(|| now_ms().saturating_sub(1000));
                    let worker = Worker {
                        dispatcher: me.clone(),
                        signaling: weak.clone(),
                        app: AppId::from_stored(&w.app)
                            .unwrap_or_else(|| AppId::from_stored("-").expect("a valid app id")),
                        stats: me.stats_of(&w.app, &w.name),
                        endpoint: w.clone(),
                        partition: p,
                        since,
                        suppressed: HashSet::new(),
                        buffer: VecDeque::new(),
                    };
                    workers.insert((w, p), tokio::spawn(worker.run()));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            for (_, task) in workers {
                task.abort();
            }
        });
    }
}

/// Prometheus label value escaping.
fn prom_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What a worker needs of a logged event.
struct Seen {
    seq: u64,
    text: Arc<str>,
    kind: String,
    time: u64,
    channel: Option<String>,
    account: Option<String>,
    reason: Option<String>,
}

/// The fields of a logged event a worker reads (the rest is passed on as it is).
#[derive(serde::Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: String,
    time: u64,
    #[serde(default)]
    data: HeadData,
}

#[derive(serde::Deserialize, Default)]
struct HeadData {
    channel: Option<String>,
    account: Option<String>,
    reason: Option<String>,
}

impl Seen {
    fn parse(seq: u64, text: Arc<str>) -> Seen {
        let head = serde_json::from_str::<Head>(&text).unwrap_or(Head {
            kind: String::new(),
            time: 0,
            data: HeadData::default(),
        });
        Seen {
            seq,
            kind: head.kind,
            time: head.time,
            channel: head.data.channel,
            account: head.data.account,
            reason: head.data.reason,
            text,
        }
    }

    /// An offline that a quick reconnect may take back.
    fn debounced_offline(&self) -> bool {
        self.kind == domain::USER_OFFLINE
            && matches!(
                self.reason.as_deref(),
                Some(domain::offline::CONNECTION_LOST | domain::offline::NODE_DIED)
            )
    }
}

/// What to do with the events read.
struct Plan {
    /// To deliver now, in order.
    batch: Vec<Seen>,
    /// The last sequence number handled once the batch is taken.
    through: u64,
    /// Held back until then (ms): an offline still inside its grace period.
    hold_until: Option<u64>,
}

/// Delivers one partition of one app's events to one endpoint, while it holds the lease.
struct Worker<S: Store> {
    dispatcher: Arc<Dispatcher>,
    signaling: Weak<Signaling<S>>,
    app: AppId,
    endpoint: Webhook,
    partition: u32,
    stats: Arc<EndpointStats>,
    /// When this node first saw the endpoint (ms).
    since: u64,
    /// Onlines of users whose offline was left out (a reconnect inside the grace period).
    suppressed: HashSet<u64>,
    /// Events read after the cursor and not handled yet, parsed once.
    buffer: VecDeque<Seen>,
}

/// What a worker does next.
enum Step {
    /// Read again at once.
    Again,
    /// Wait for an event of this node, at most this long (other nodes' are polled).
    Wait(Duration),
    /// The lease is another node's, or the store failed: try again later.
    Lost,
    /// The rules are gone (the server stopped).
    Gone,
}

impl<S: Store> Worker<S> {
    fn consumer(&self) -> &str {
        &self.endpoint.name
    }

    async fn run(mut self) {
        let Some(appended) = self
            .signaling
            .upgrade()
            .map(|s| s.events().appended.clone())
        else {
            return;
        };
        let mut leased: Option<Instant> = None;
        loop {
            let step = match self.signaling.upgrade() {
                None => Step::Gone,
                Some(sig) if leased.is_none_or(|t| t.elapsed() >= RENEW) => {
                    if self.lease(&sig).await {
                        leased = Some(Instant::now());
                        Step::Again
                    } else {
                        Step::Lost
                    }
                }
                Some(sig) => self.step(&sig).await,
            };
            match step {
                Step::Again => {}
                Step::Wait(d) => {
                    let woken = appended.notified();
                    tokio::select! {
                        _ = woken => {}
                        _ = tokio::time::sleep(d) => {}
                    }
                }
                Step::Lost => {
                    leased = None;
                    tokio::time::sleep(RENEW).await;
                }
                Step::Gone => return,
            }
        }
    }

    async fn lease(&self, sig: &Signaling<S>) -> bool {
        let r = sig
            .store()
            .event_lease(
                &self.app,
                self.consumer(),
                self.partition,
                &self.dispatcher.holder,
                LEASE,
            )
            .await;
        matches!(r, Ok(true))
    }

    async fn set_cursor(&self, sig: &Signaling<S>, seq: u64, keep: Duration) -> bool {
        let r = sig
            .store()
            .event_cursor_set(&self.app, self.consumer(), self.partition, seq, keep)
            .await;
        if let Err(e) = &r {
            tracing::warn!(app = %self.app, endpoint = %self.endpoint.name, "webhook cursor: {e}");
        }
        r.is_ok()
    }

    /// Read the partition after the cursor and deliver one batch of it.
    async fn step(&mut self, sig: &Arc<Signaling<S>>) -> Step {
        let limits = LimitsNow(sig.config());
        let store = sig.store();
        let cursor = match store
            .event_cursor(&self.app, self.consumer(), self.partition)
            .await
        {
            Ok(c) => c,
            Err(_) => return Step::Lost,
        };
        let fresh = cursor.is_none();
        let cursor = cursor.unwrap_or(0);
        // what was read before and not handled yet stays parsed; read only what follows it
        // (a cursor moved elsewhere empties the buffer)
        self.buffer.retain(|e| e.seq > cursor);
        if self.buffer.front().is_some_and(|e| e.seq != cursor + 1) {
            self.buffer.clear();
        }
        let after = self.buffer.back().map_or(cursor, |e| e.seq);
        let room = READ_MAX.saturating_sub(self.buffer.len()).max(1);
        let page = match store
            .event_read(&self.app, self.partition, after, room)
            .await
        {
            Ok(p) => p,
            Err(_) => return Step::Lost,
        };
        depth_set(
            &self.stats,
            self.partition,
            page.last.saturating_sub(cursor),
        );
        let first = self
            .buffer
            .front()
            .map(|e| e.seq)
            .or_else(|| page.events.first().map(|(s, _)| *s))
            .unwrap_or(page.last + 1);
        let keep = Duration::from_secs(limits.webhook_retention_secs);
        if fresh {
            // a new endpoint starts after the events logged before its configuration
            let start = page
                .events
                .iter()
                .map(|(seq, text)| (*seq, Seen::parse(*seq, text.clone()).time))
                .take_while(|(_, time)| *time < self.since)
                .last()
                .map_or(first.saturating_sub(1), |(seq, _)| seq);
            return match self.set_cursor(sig, start, keep).await {
                true => Step::Again,
                false => Step::Lost,
            };
        }
        // what the log no longer has after what was read was pushed out by its caps (also
        // while the buffer waits for the endpoint: the gap is between the buffer and the page)
        let read_first = page
            .events
            .first()
            .map_or(page.last.max(after) + 1, |(s, _)| *s);
        if read_first > after + 1 {
            let lost = read_first - after - 1;
            self.stats.dropped.fetch_add(lost, Ordering::Relaxed);
            tracing::warn!(app = %self.app, endpoint = %self.endpoint.name,
                "{lost} events dropped before delivery (app_events_max, app_events_max_bytes)");
        }
        self.buffer.extend(
            page.events
                .into_iter()
                .map(|(seq, text)| Seen::parse(seq, text)),
        );
        let now = now_ms();
        let plan = self.plan(&limits, now);
        if plan.batch.is_empty() {
            if plan.through > cursor {
                return match self.set_cursor(sig, plan.through, keep).await {
                    true => Step::Again,
                    false => Step::Lost,
                };
            }
            let linger = Duration::from_millis(limits.webhook_batch_linger_ms.max(10));
            let wait = plan.hold_until.map_or(linger, |t| {
                Duration::from_millis(t.saturating_sub(now).max(1))
            });
            return Step::Wait(wait.min(RENEW));
        }
        // a batch closes at its size, or once its first event has waited the linger
        let linger = limits.webhook_batch_linger_ms;
        let full = plan.batch.len() >= limits.webhook_batch_max_events.max(1);
        let waited = now.saturating_sub(plan.batch[0].time);
        if !full && plan.hold_until.is_none() && waited < linger {
            return Step::Wait(Duration::from_millis(linger - waited));
        }
        drop(limits);
        match self.send(&plan.batch).await {
            Sent::Done => {}
            Sent::Lost => return Step::Lost,
            Sent::Gone => return Step::Gone,
        }
        if !self.set_cursor(sig, plan.through, keep).await {
            return Step::Lost;
        }
        self.suppressed.retain(|s| *s > plan.through);
        Step::Again
    }

    /// Which of `seen` (in log order) to deliver now, which to leave out, and where to stop.
    fn plan(&mut self, l: &LimitsNow, now: u64) -> Plan {
        let seen = &self.buffer;
        let max = l.webhook_batch_max_events.max(1);
        let grace = l.presence_grace_secs * 1000;
        let mut batch = Vec::new();
        let mut through = 0;
        let mut hold_until = None;
        // onlines that take back an offline found in this read
        for i in 0..seen.len() {
            let e = &seen[i];
            if self.suppressed.contains(&e.seq) {
                through = e.seq;
                continue;
            }
            let wanted = self.endpoint.wants(&e.kind, e.channel.as_deref());
            if wanted && e.debounced_offline() {
                let back = seen.range(i + 1..).find(|o| {
                    o.kind == domain::USER_ONLINE
                        && o.account == e.account
                        && o.time <= e.time + grace
                });
                if let Some(back) = back {
                    self.suppressed.insert(back.seq);
                    through = e.seq;
                    continue;
                }
                if now < e.time + grace {
                    hold_until = Some(e.time + grace);
                    break;
                }
            }
            if wanted {
                if batch.len() >= max {
                    break;
                }
                batch.push(Seen {
                    seq: e.seq,
                    text: e.text.clone(),
                    kind: String::new(),
                    time: e.time,
                    channel: None,
                    account: None,
                    reason: None,
                });
            }
            through = e.seq;
        }
        Plan {
            batch,
            through,
            hold_until,
        }
    }

    /// Deliver `batch` until the endpoint takes it or its oldest event is past the
    /// retention window (then it is dropped and counted), keeping the lease meanwhile.
    async fn send(&self, batch: &[Seen]) -> Sent {
        let texts: Vec<&str> = batch.iter().map(|e| &*e.text).collect();
        let body = batch_body(&self.app, &texts);
        let delivery = delivery_id(&batch[0].text);
        let mut attempt: u32 = 0;
        loop {
            let Some(config) = self.signaling.upgrade().map(|s| s.config()) else {
                return Sent::Gone;
            };
            let l = &config.limits;
            let timeout = Duration::from_secs(l.webhook_timeout_secs.max(1));
            let http = &self.dispatcher.http;
            let answer = post_within(http, &self.endpoint, body.clone(), &delivery, timeout).await;
            let now = now_ms();
            if answer.taken() {
                let n = batch.len() as u64;
                self.stats.delivered.fetch_add(n, Ordering::Relaxed);
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                for e in batch {
                    self.stats.observe(now.saturating_sub(e.time));
                }
                return Sent::Done;
            }
            let why = answer.describe();
            *self.stats.last_error.lock() = Some(why.clone());
            if now.saturating_sub(batch[0].time) > l.webhook_retention_secs * 1000 {
                let n = batch.len() as u64;
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(app = %self.app, endpoint = %self.endpoint.name,
                    "{n} events dropped: not delivered within webhook_retention_secs ({why})");
                return Sent::Done;
            }
            self.stats.retried.fetch_add(1, Ordering::Relaxed);
            tracing::info!(app = %self.app, endpoint = %self.endpoint.name,
                attempt, "webhook delivery failed, retrying: {why}");
            let until = Instant::now() + backoff(attempt, l.webhook_retry_max_secs);
            attempt = attempt.saturating_add(1);
            drop(config);
            // keep the lease while waiting: no other node delivers this partition meanwhile
            loop {
                let Some(sig) = self.signaling.upgrade() else {
                    return Sent::Gone;
                };
                if !self.lease(&sig).await {
                    return Sent::Lost;
                }
                drop(sig);
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                tokio::time::sleep(left.min(RENEW)).await;
            }
        }
    }
}

/// How a batch's delivery ended.
enum Sent {
    /// Taken, or dropped past the retention window: the cursor moves past it.
    Done,
    /// The lease was lost: another node delivers it.
    Lost,
    /// The rules are gone.
    Gone,
}

fn depth_set(stats: &EndpointStats, partition: u32, depth: u64) {
    stats.depth.lock().insert(partition, depth);
}

/// The wait before try `attempt + 2`: 1 s doubling up to `max_secs`, each a random point in
/// its upper half (retrying endpoints do not all come back at once).
pub fn backoff(attempt: u32, max_secs: u64) -> Duration {
    let full = 1000u64
        .saturating_mul(1u64 << attempt.min(20))
        .min(max_secs.max(1) * 1000);
    let ms = full / 2 + rand::random_range(0..=full / 2);
    Duration::from_millis(ms)
}

/// A delivery's id: its first event's id.
fn delivery_id(event: &str) -> String {
    serde_json::from_str::<Value>(event)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        for _ in 0..100 {
            let first = backoff(0, 60);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
            let later = backoff(10, 60);
            assert!(later >= Duration::from_secs(30) && later <= Duration::from_secs(60));
        }
    }

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
        let s = sign("Jefe", 0, "what do ya want for nothing?");
        // our data is "0." + body, so compare with a known recomputation instead
        assert!(s.starts_with("t=0,v1="));
        assert_eq!(s.len(), "t=0,v1=".len() + 64);
        assert_ne!(s, sign("Jefe", 1, "what do ya want for nothing?"));
    }

    #[test]
    fn batch_bodies_hold_the_events_as_logged() {
        let body = batch_body("a\"pp", &[r#"{"id":"x"}"#, r#"{"id":"y"}"#]);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["app"], "a\"pp");
        assert_eq!(v["events"][1]["id"], "y");
        assert_eq!(delivery_id(r#"{"id":"n.1"}"#), "n.1");
    }
}
