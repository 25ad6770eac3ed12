//! `opensig-bench script`: where a p2p message's Redis CPU goes inside the script that stores
//! it. The server's own `mail_append.lua` (with the helpers the server prepends, as a release
//! build runs it) stores one message per call, many calls in flight (pipelined, as the calls
//! of a busy node are), on a private redis-server; then the same script cut short after each
//! of its steps, an empty script, calls of several messages (a busy node's), and the three
//! commands no design can leave out (the resend marker, the number, the mailbox entry) in a
//! script and without one. The differences are what each step costs Redis; the whole script
//! against the floor is what is left to cut.

use anyhow::{bail, Context, Result};
use std::process::Command;

use crate::cluster::{start_redis, RedisWork};
// The server's scripts as compiled into it, and the text a release build sends (one place
// for each).
use opensig_server::store::redis::{release_text, MAIL_LUA as LUA};

#[derive(clap::Args, Clone)]
pub struct ScriptArgs {
    /// Messages per measurement (in calls of one message, of 4 or of 16).
    #[arg(long, default_value_t = 40_000)]
    messages: usize,
    /// Calls each connection keeps in flight (redis-benchmark -P).
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Runs of every variant (alternating): the median and the range are printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Read the scripts (clock.lua, bundle.lua, events.lua, mail.lua, mail_append.lua) from
    /// this folder instead of the server's, compiled in: to measure an edit against a copy of
    /// the scripts before it.
    #[arg(long)]
    lua: Option<std::path::PathBuf>,
}

/// The scripts by name, from `dir` or the server's.
fn scripts(dir: Option<&std::path::Path>) -> Result<Vec<(&'static str, String)>> {
    LUA.iter()
        .map(|(name, text)| match dir {
            None => Ok((*name, text.to_string())),
            Some(d) => {
                let path = d.join(format!("{name}.lua"));
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok((*name, text))
            }
        })
        .collect()
}

/// The steps of `append_mail` (mail.lua), each named by the line that follows it: the script
/// cut there returns as if it stored the message.
const STEPS: [(&str, &str); 6] = [
    (
        "+ clock, resend marker",
        "  -- the numbering, until when the meta hash itself",
    ),
    (
        "+ mailbox's numbering read",
        "  if held_here >= t.max or last",
    ),
    (
        "+ app's ledger read, quota",
        "  -- the recipient's session (read for the whole call",
    ),
    ("+ recipient's session", "  last = last + 1\n"),
    ("+ numbering written, stored", "  -- counted in its group;"),
    ("+ ledger written", "  if s then\n    local node"),
];

fn cli(url: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut c = Command::new("redis-cli");
    c.args(["-u", url]).args(args);
    c.stdin(std::process::Stdio::piped());
    c.stdout(std::process::Stdio::piped());
    let mut child = c.spawn().context("redis-cli (scripts/setup installs it)")?;
    if let Some(text) = input {
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(text.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn load(url: &str, src: &str) -> Result<String> {
    let sha = cli(url, &["-x", "SCRIPT", "LOAD"], Some(src))?;
    if sha.len() != 40 {
        bail!("SCRIPT LOAD: {sha}");
    }
    Ok(sha)
}

/// `count` messages as the server passes them to mail_append.lua (mail.lua's `mail_at`), each
/// to its own recipient: KEYS mailbox, meta, ledger, its index, the recipient's session, the
/// resend marker, the sender's offline window; ARGV the count, then each message's, then the
/// count of its events (0). `__rand_int__` is redis-benchmark's: each call new resend markers
/// and ids. The mailboxes' cap is set past what a run stores, so that every call takes the
/// path of a mailbox below its cap.
fn message_args(count: usize) -> Vec<String> {
    let text = "msg-v3 benchA-2c45 sames8 0 samer8 instant v1:E:3600 2961459648";
    let before = format!("p6:bench06:samer823:[\"notify\",[\"recvmsg\",\"[72:,\\\"{text}\\\"]\"]]");
    let (mut keys, mut argv) = (Vec::new(), vec![count.to_string()]);
    for i in 0..count {
        keys.extend([
            format!("b:mb {{b:a}} r{i}"),
            format!("b:mbm {{b:a}} r{i}"),
            "b:mq {b:a}".to_string(),
            "b:mqi {b:a}".to_string(),
            format!("b:s {{b:a}} r{i}"),
            format!("b:dd {{b:a}} s {i}-__rand_int__"),
            "b:mo {b:a} s".to_string(),
        ]);
        argv.extend(
            [
                "604800000",
                "300000",
                "3600000",
                "100000000",
                &format!("id{i}-__rand_int__"),
                text,
                "b:n:",
                &before,
                ";",
                "100000000",
                "1073741824",
                "1000",
                "3600000",
                "0",
                "0",
            ]
            .map(String::from),
        );
    }
    let mut a = vec![keys.len().to_string()];
    a.extend(keys);
    a.extend(argv);
    a
}

/// The recipients' sessions (`count` of them, on one node): each message is pushed.
fn sessions(url: &str, count: usize) -> Result<()> {
    for i in 0..count {
        cli(url, &["SET", &format!("b:s {{b:a}} r{i}"), "nodeA 1"], None)?;
    }
    Ok(())
}

/// The most messages of one call measured (a busy node's calls carry several).
const BATCHED: usize = 16;

/// Redis CPU µs per call of `cmd` (redis-benchmark's arguments), `calls` times, on an emptied
/// Redis.
fn measure(url: &str, port: &str, a: &ScriptArgs, calls: usize, cmd: &[String]) -> Result<f64> {
    cli(url, &["FLUSHALL"], None)?;
    sessions(url, BATCHED)?;
    let before = RedisWork::read(url)?;
    let st = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", port, "-c", "4", "-q"])
        .args(["-P", &a.pipeline.to_string(), "-n", &calls.to_string()])
        .args(["-r", "100000000"])
        .args(cmd)
        .stdout(std::process::Stdio::null())
        .status()
        .context("redis-benchmark (installed with redis-server)")?;
    if !st.success() {
        bail!("redis-benchmark failed");
    }
    let after = RedisWork::read(url)?;
    let stats = cli(url, &["INFO", "commandstats"], None)?;
    let failed = stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_"))
        .filter_map(|l| l.split("failed_calls=").nth(1))
        .any(|n| n.trim() != "0");
    if failed {
        bail!("a call failed: {stats}");
    }
    Ok((after.cpu_secs - before.cpu_secs) * 1e6 / calls as f64)
}

pub fn run(a: ScriptArgs) -> Result<()> {
    let (_redis, url) = start_redis()?;
    let port = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .context("port")?
        .to_string();
    let scripts = scripts(a.lua.as_deref())?;
    let lua = |name: &str| {
        let found = scripts.iter().find(|(n, _)| *n == name);
        found.map(|(_, s)| s.clone()).unwrap_or_default()
    };
    let (mail, append) = (lua("mail"), lua("mail_append"));
    let full = load(&url, &release_text(&lua, &[&mail, &append]))?;
    let evalsha = |sha: &str, count: usize| {
        let mut c = vec!["EVALSHA".to_string(), sha.to_string()];
        c.extend(message_args(count));
        c
    };
    // the script as it is must store the messages: {0, version 1, 0 (the recipient is online)}
    // each
    cli(&url, &["FLUSHALL"], None)?;
    sessions(&url, 2)?;
    let two: Vec<String> = evalsha(&full, 2)
        .iter()
        .map(|s| s.replace("__rand_int__", "1"))
        .collect();
    let got = cli(
        &url,
        &two.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        None,
    )?;
    if got.split_whitespace().collect::<Vec<_>>() != ["0", "1", "0", "0", "1", "0"] {
        bail!("mail_append.lua did not store the messages: {got}");
    }
    // (name, messages per call, the command)
    let mut variants: Vec<(String, usize, Vec<String>)> = Vec::new();
    let empty = load(&url, "#!lua\nreturn 1")?;
    variants.push(("an empty script".into(), 1, evalsha(&empty, 1)));
    let helpers = load(&url, &release_text(&lua, &[&mail, "return 1"]))?;
    variants.push(("+ the helpers defined".into(), 1, evalsha(&helpers, 1)));
    for (name, line) in STEPS {
        if mail.matches(line).count() != 1 {
            bail!("mail.lua no longer has the step before {line:?}: update STEPS");
        }
        let cut = mail.replace(line, &format!("  do return {{0, 1, 0}} end\n{line}"));
        let sha = load(&url, &release_text(&lua, &[&cut, &append]))?;
        variants.push((name.into(), 1, evalsha(&sha, 1)));
    }
    variants.push(("+ pushed: the whole script".into(), 1, evalsha(&full, 1)));
    for n in [4, BATCHED] {
        let name = format!("the whole script, calls of {n} messages");
        variants.push((name, n, evalsha(&full, n)));
    }
    let floor = "#!lua\nredis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[3])\n\
                 local v = redis.call('HINCRBY', KEYS[2], 'last', 1)\n\
                 redis.call('ZADD', KEYS[1], v, ARGV[6] .. ' ' .. ARGV[7])\nreturn v";
    let floor = load(&url, floor)?;
    variants.push((
        "floor: SET NX, HINCRBY, ZADD in a script".into(),
        1,
        evalsha(&floor, 1),
    ));
    let member = "id__rand_int__ msg-v3 benchA-2c45 sames8 0 samer8 instant v1:E:3600 2961459648";
    let plain: [(&str, &[&str]); 3] = [
        (
            "SET NX PX",
            &[
                "SET",
                "b:dd {b:a} s __rand_int__",
                "1",
                "NX",
                "PX",
                "300000",
            ],
        ),
        ("HINCRBY", &["HINCRBY", "b:mbm {b:a} r", "last", "1"]),
        ("ZADD", &["ZADD", "b:mb {b:a} r", "__rand_int__", member]),
    ];
    for (name, c) in plain {
        let name = format!("floor without a script: {name}");
        variants.push((name, 1, c.iter().map(|s| s.to_string()).collect()));
    }
    let mut got: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..a.runs {
        for (i, (_, n, cmd)) in variants.iter().enumerate() {
            // the same number of messages in each
            let calls = (a.messages / n).max(1000);
            got[i].push(measure(&url, &port, &a, calls, cmd)? / *n as f64);
        }
    }
    println!(
        "Redis CPU per p2p message stored by mail_append.lua ({} messages a run, calls {} in \
         flight per connection, 4 connections; median and range of {} runs)\n",
        a.messages, a.pipeline, a.runs
    );
    println!("| the script | µs per message | range |");
    println!("|---|---|---|");
    for (i, (name, _, _)) in variants.iter().enumerate() {
        let mut v = got[i].clone();
        v.sort_by(|x, y| x.total_cmp(y));
        let (lo, mid, hi) = (v[0], v[v.len() / 2], v[v.len() - 1]);
        println!("| {name} | {mid:.1} | {lo:.1}–{hi:.1} |");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps `opensig-bench script` cuts the server's mail.lua at are each there once: an
    /// edit of the script that moves one fails here, not in a benchmark run.
    #[test]
    fn every_step_is_in_the_servers_script_once() {
        let scripts = scripts(None).unwrap();
        let mail = &scripts.iter().find(|(n, _)| *n == "mail").unwrap().1;
        for (name, line) in STEPS {
            assert_eq!(mail.matches(line).count(), 1, "{name}: {line:?}");
        }
    }

    /// A call's arguments as mail_append.lua reads them: the key count, then per message its
    /// keys; the message count, then per message its arguments and its events' count.
    #[test]
    fn a_calls_arguments_are_laid_out_per_message() {
        let a = message_args(3);
        assert_eq!(a[0], "21");
        assert_eq!(a[1 + 21], "3");
        assert_eq!(a.len(), 1 + 21 + 1 + 3 * 15);
        assert!(a[1 + 5].contains("__rand_int__") && a[1 + 7 + 5].starts_with("b:dd"));
    }
}
