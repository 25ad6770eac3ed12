//! Every Redis key and topic of a cluster, by name. Keys are `<prefix><kind> {<prefix><app>}
//! <name…>` (names never contain spaces): the part in braces is the key's Redis Cluster hash
//! tag, so every key of an app is in one hash slot and a script about an app (a message, a
//! join, a login) touches one slot however the keys are named; different apps spread over the
//! primaries. What is about the nodes rather than an app (the registry, reports, reaping
//! locks) is `<prefix><kind> {<prefix>~} <name…>`: one slot of its own. The Lua scripts get
//! every key they touch as `KEYS`, in the order each struct's `all()` gives, which the
//! script's header names; none builds a key (debug builds check every `redis.call` of every
//! script, `lua/keys_declared.lua`). What a script publishes to is a topic, not a key: built
//! from a prefix given here, in the app's slot.

/// Key names of one cluster (one prefix).
#[derive(Clone, Debug)]
pub(super) struct Keys {
    p: String,
    /// Topics are sharded pub/sub channels (a Redis Cluster): one per app and node, in the
    /// app's slot, so a script of the app can `SPUBLISH` to it.
    sharded: bool,
}

/// A session's keys.
pub(super) struct SessionKeys {
    /// `"node conn"` of the account's session (with expiry).
    pub session: String,
    /// The node's index of its sessions.
    pub node_index: String,
}

/// A mailbox's keys.
pub(super) struct MailboxKeys {
    /// Messages: a sorted set, score = version, member = `"<expiry ms> <id> <text>"`.
    pub messages: String,
    /// `last` and `cleared` versions.
    pub meta: String,
    /// The app's ledger of stored mail (mail.lua): a hash of its totals and of its messages
    /// counted in groups by when they expire.
    pub ledger: String,
    /// The ledger's groups: a sorted set, score = member = the group's end (ms).
    pub ledger_index: String,
}

impl MailboxKeys {
    /// The keys a mail script takes first, in its order (mail.lua's `box_at`).
    pub fn all(&self) -> [&str; 4] {
        [&self.messages, &self.meta, &self.ledger, &self.ledger_index]
    }
}

/// A channel's keys (script order: members … changed).
pub(super) struct ChannelKeys {
    /// Members: account → join order.
    pub members: String,
    /// The join-order counter.
    pub order: String,
    /// Member → `"node conn"`.
    pub location: String,
    /// Node → how many members it holds (where events go).
    pub nodes: String,
    /// Attributes.
    pub attrs: String,
    /// Settings (`notify`, `ttl`, `msg_rate`, `attr_rate`, `auto`).
    pub settings: String,
    /// The event sequence.
    pub seq: String,
    /// "The membership changed" flag.
    pub changed: String,
    /// Kept messages: a stream, entry id `<n>-0`, fields `t` (ms), `s` (sequence), `f`
    /// (sender), `m` (text).
    pub history: String,
    /// The history's counters: `n` (the latest message number), `b` (bytes of kept text).
    pub history_meta: String,
    /// The channel's message rate bucket.
    pub msg_rate: String,
    /// The app's ledger of channels with attributes: a sorted set, member = channel, score =
    /// when its state expires (ms; 2^53 - 1 while it has members).
    pub ledger: String,
    /// The ledger's attribute bytes per channel (a hash).
    pub ledger_bytes: String,
    /// The ledger's total attribute bytes.
    pub ledger_total: String,
    /// The app's channels that have members, for listing them: a sorted set, score 0,
    /// member = the channel's name (so pages go by name, as `ZRANGEBYLEX` reads them).
    pub occupied: String,
}

impl ChannelKeys {
    /// The keys a channel script takes first, in its order (channel.lua's header).
    pub fn all(&self) -> [&str; 15] {
        [
            &self.members,
            &self.order,
            &self.location,
            &self.nodes,
            &self.attrs,
            &self.settings,
            &self.seq,
            &self.changed,
            &self.ledger,
            &self.ledger_bytes,
            &self.ledger_total,
            &self.history,
            &self.history_meta,
            &self.msg_rate,
            &self.occupied,
        ]
    }
}

/// An invitation's keys.
pub(super) struct InviteKeys {
    /// The record: `extra`, `state`, `version`, `gen`.
    pub record: String,
    /// The caller's index of its invitations.
    pub by_caller: String,
}

impl Keys {
    pub fn new(prefix: &str, sharded: bool) -> Keys {
        Keys {
            p: prefix.into(),
            sharded,
        }
    }

    /// A key of an app: `<prefix><kind> {<prefix><app>} <parts…>`.
    fn k(&self, kind: &str, parts: &[&str]) -> String {
        let (app, rest) = parts.split_first().map_or(("", &[][..]), |(a, r)| (*a, r));
        let mut s = String::with_capacity(2 * self.p.len() + kind.len() + 48);
        s.push_str(&self.p);
        s.push_str(kind);
        s.push_str(" {");
        s.push_str(&self.p);
        s.push_str(app);
        s.push('}');
        for part in rest {
            s.push(' ');
            s.push_str(part);
        }
        s
    }

    /// A key about the nodes: `<prefix><kind> {<prefix>~} <parts…>`.
    fn g(&self, kind: &str, parts: &[&str]) -> String {
        let mut s = self.k(kind, &["~"]);
        for part in parts {
            s.push(' ');
            s.push_str(part);
        }
        s
    }

    /// The name of a unit: partition `p` of an app's keys. Partition 0 is the app's id (the
    /// keys an app had before partitions); another is `"<app> <p>"` — a space, which no app
    /// id holds, so no unit is another app's. Every key of a unit is in the unit's hash slot:
    /// the functions below that take an `app` take a unit's name alike (ARCHITECTURE.md,
    /// "Partitioning an app").
    pub fn unit(app: &str, p: u32) -> std::borrow::Cow<'_, str> {
        match p {
            0 => app.into(),
            p => format!("{app} {p}").into(),
        }
    }

    /// The app of a unit's name ([`Keys::unit`]).
    pub fn unit_app(unit: &str) -> &str {
        unit.split_once(' ').map_or(unit, |(app, _)| app)
    }

    /// `true` when every key's hash tag is the one `k` and `g` mean (a prefix with a brace
    /// would move it).
    pub fn prefix_ok(prefix: &str) -> bool {
        !prefix.contains(['{', '}'])
    }

    pub fn session(&self, app: &str, account: &str, node: &str) -> SessionKeys {
        SessionKeys {
            session: self.k("s", &[app, account]),
            node_index: self.node_sessions(app, node),
        }
    }

    /// The node's index of its sessions of an app.
    pub fn node_sessions(&self, app: &str, node: &str) -> String {
        self.k("ns", &[app, node])
    }

    /// The node's index of its channel memberships in an app.
    pub fn node_members(&self, app: &str, node: &str) -> String {
        self.k("nc", &[app, node])
    }

    /// The node's registration (its public URL, with expiry).
    pub fn node(&self, node: &str) -> String {
        self.g("node", &[node])
    }

    /// The cluster's number of units per app (`RedisConfig::partitions`), as its first node
    /// recorded it.
    pub fn partitions(&self) -> String {
        self.g("partitions", &[])
    }

    /// The apps with timers, by when they need asking next (a sorted set, `timers_due.lua`):
    /// how a node finds the timers another node scheduled without asking every app.
    pub fn timers_due(&self) -> String {
        self.g("due", &[])
    }

    /// Every app any node had served, as versions before the index of timers kept it (a set):
    /// read once by a node that starts, which asks those apps and drops the list.
    pub fn apps_before_the_index(&self) -> String {
        self.g("apps", &[])
    }

    /// The apps a node has indexed sessions or memberships of (what reaping it reads).
    pub fn node_apps(&self, node: &str) -> String {
        self.g("napps", &[node])
    }

    /// The sessions watching an account's presence (`"node conn"` each).
    pub fn watchers(&self, app: &str, account: &str) -> String {
        self.k("wt", &[app, account])
    }

    /// How many watches an app holds.
    pub fn app_watches(&self, app: &str) -> String {
        self.k("wc", &[app])
    }

    /// Set (expiring) while an account's dropped connection is within its grace period.
    pub fn unreachable(&self, account_app: &str, account: &str) -> String {
        self.k("ur", &[account_app, account])
    }

    /// A node's console report (JSON, expiring).
    pub fn node_report(&self, node: &str) -> String {
        self.g("report", &[node])
    }

    /// Every node ever registered (the reaper's list).
    pub fn nodes(&self) -> String {
        self.g("nodes", &[])
    }

    /// The lock of reaping a dead node.
    pub fn reap(&self, node: &str) -> String {
        self.g("reap", &[node])
    }

    /// The pub/sub topic of a node on one Redis: all it hears. (On a cluster a node has a
    /// topic per app, `app_topic`, and none of its own: nothing it hears needs the slot of
    /// the nodes' registry.)
    pub fn topic(&self, node: &str) -> String {
        format!("{}n:{node}", self.p)
    }

    /// The pub/sub topic of a node for an app's deliveries (one Redis: the node's topic).
    pub fn app_topic(&self, app: &str, node: &str) -> String {
        let mut s = self.topic_prefix(app);
        s.push_str(node);
        s
    }

    /// Prefix of `app_topic` (the scripts add the node).
    pub fn topic_prefix(&self, app: &str) -> String {
        match self.sharded {
            false => format!("{}n:", self.p),
            true => self.k("n", &[app, ""]),
        }
    }

    pub fn user_attrs(&self, app: &str, account: &str) -> String {
        self.k("ua", &[app, account])
    }

    pub fn mailbox(&self, app: &str, account: &str) -> MailboxKeys {
        MailboxKeys {
            messages: self.k("mb", &[app, account]),
            meta: self.k("mbm", &[app, account]),
            ledger: self.k("mq", &[app]),
            ledger_index: self.k("mqi", &[app]),
        }
    }

    /// How many messages a sender left for offline recipients in the current window.
    pub fn offline_sent(&self, app: &str, sender: &str) -> String {
        self.k("mo", &[app, sender])
    }

    /// A key of the app's slot that is never written: what a script gets in place of a key
    /// it does not need this time (keys must be in the slot even then).
    pub fn unused(&self, app: &str) -> String {
        self.k("-", &[app])
    }

    /// "Seen" marker of a client message id.
    pub fn dedup(&self, app: &str, from: &str, id: &str) -> String {
        self.k("dd", &[app, from, id])
    }

    /// A channel's members alone (what an event asks before running the channel's script).
    pub fn channel_members(&self, app: &str, channel: &str) -> String {
        self.k("cm", &[app, channel])
    }

    pub fn channel(&self, app: &str, channel: &str) -> ChannelKeys {
        let k = |kind| self.k(kind, &[app, channel]);
        ChannelKeys {
            members: self.channel_members(app, channel),
            order: k("co"),
            location: k("cn"),
            nodes: k("cd"),
            attrs: k("ca"),
            settings: k("cf"),
            seq: k("cs"),
            changed: k("cc"),
            history: k("ch"),
            history_meta: k("cx"),
            msg_rate: format!("{} m", k("cr")),
            ledger: self.k("cl", &[app]),
            ledger_bytes: self.k("clb", &[app]),
            ledger_total: self.k("clt", &[app]),
            occupied: self.channels_occupied(app),
        }
    }

    /// The app's channels that have members (`ChannelKeys::occupied`).
    pub fn channels_occupied(&self, app: &str) -> String {
        self.k("clo", &[app])
    }

    /// Set once `channels_occupied` holds every channel of the app that has members: the
    /// first listing adds those occupied before the index was kept (found in the keyspace).
    pub fn channels_indexed(&self, app: &str) -> String {
        self.k("cli", &[app])
    }

    /// The rate bucket of a channel's attribute `name` (next to its message bucket).
    pub fn channel_attr_rate(&self, app: &str, channel: &str, name: &str) -> String {
        format!("{} a {name}", self.k("cr", &[app, channel]))
    }

    pub fn invite(&self, app: &str, caller: &str, channel: &str, callee: &str) -> InviteKeys {
        InviteKeys {
            record: self.k("inv", &[app, caller, channel, callee]),
            by_caller: self.k("invby", &[app, caller]),
        }
    }

    /// One partition of an app's event log: the stream (ids `<sequence>-0`, fields `e` the
    /// event and `t` when it was appended) and its meta hash (`last` sequence, `bytes`).
    pub fn event_log(&self, app: &str, partition: u32) -> [String; 2] {
        let p = partition.to_string();
        [self.k("ev", &[app, &p]), self.k("evm", &[app, &p])]
    }

    /// The consumers' cursors on a partition of an app's event log (consumer → sequence).
    pub fn event_cursors(&self, app: &str, partition: u32) -> String {
        self.k("evc", &[app, &partition.to_string()])
    }

    /// Who consumes a partition of an app's event log for `consumer` (a node id, with
    /// expiry).
    pub fn event_lease(&self, app: &str, consumer: &str, partition: u32) -> String {
        self.k("evl", &[app, &partition.to_string(), consumer])
    }

    /// An app's timers.
    pub fn timers(&self, app: &str) -> String {
        self.k("timers", &[app])
    }

    /// The Redis Cluster hash slot of a key or topic: CRC16 (XMODEM) of its hash tag (the
    /// first `{…}` with something inside, else the whole name), mod 16384.
    pub fn slot(key: impl AsRef<[u8]>) -> u16 {
        let b = key.as_ref();
        let tag = b
            .iter()
            .position(|&c| c == b'{')
            .and_then(|open| {
                let len = b[open + 1..].iter().position(|&c| c == b'}')?;
                (len > 0).then(|| &b[open + 1..open + 1 + len])
            })
            .unwrap_or(b);
        crc16::State::<crc16::XMODEM>::calculate(tag) % 16384
    }

    /// Key patterns for counting what the cluster holds (`footprint`).
    pub fn pattern(&self, kind: &str) -> String {
        format!("{}{kind} *", self.p)
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn slots_are_redis_s() {
        // as `CLUSTER KEYSLOT` answers them (redis-server 7.0)
        for (key, slot) in [
            ("foo", 12182),
            ("somekey", 11058),
            ("hello", 866),
            ("{opensig:app}x", 3483),
            ("os:s {os:myapp} bob", 12838),
            ("a{}b", 13694),
            ("{}x{y}", 2166),
        ] {
            assert_eq!(Keys::slot(key), slot, "{key}");
        }
        let k = Keys::new("os:", true);
        assert_eq!(
            Keys::slot(k.app_topic("myapp", "n1")),
            Keys::slot(&k.mailbox("myapp", "bob").messages),
            "an app's topic is in its slot"
        );
        // a unit past the first is a slot of its own (here: another than partition 0's)
        let unit = Keys::unit("myapp", 2);
        assert_eq!(k.channel(&unit, "room").members, "os:cm {os:myapp 2} room");
        assert_eq!(Keys::unit("myapp", 0), "myapp");
        assert_eq!(Keys::unit_app(&unit), "myapp");
        assert_eq!(Keys::unit_app("myapp"), "myapp");
        assert_ne!(
            Keys::slot(k.channel(&unit, "room").members),
            Keys::slot(k.channel("myapp", "room").members)
        );
        assert_eq!(
            Keys::slot(k.app_topic(&unit, "n1")),
            Keys::slot(k.channel(&unit, "room").ledger),
            "a unit's topic and ledgers are in its slot"
        );
        assert_eq!(
            Keys::slot(k.channel_attr_rate("myapp", "room", "colour")),
            Keys::slot(&k.channel("myapp", "room").members),
            "an attribute's rate bucket is in its channel's slot"
        );
    }
}
