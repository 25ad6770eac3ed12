//! One user of the native driver, for tests written in other languages (the operator
//! console's browser test): logs in, prints every event it gets as one line of Rust debug
//! text on standard output (`LoginSuccess { … }`, `Logout { ecode: 103 }`, …), and obeys
//! commands read from standard input, one per line:
//!
//! - `join <channel>` — join a channel;
//! - `send <channel> <n>` — send `n` channel messages, about 200 a second;
//! - `logout` — log out (the process ends after the `Logout` event).
//!
//! `cargo run -p opensig-server --example native_user -- ws://127.0.0.1:8080/ <app> <account>`

use opensig_protocol::client::{Config, Event};
use opensig_protocol::driver::Session;
use tokio::io::AsyncBufReadExt;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, app, account] = &args[..] else {
        eprintln!("usage: native_user <ws url> <app> <account>");
        std::process::exit(2);
    };
    let mut config = Config::new(app, account, "_no_need_token");
    config.servers = vec![url.clone()];
    let mut session = Session::login(config);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            e = session.next_event() => {
                let Some(e) = e else { return };
                if matches!(e, Event::Log { .. }) {
                    continue;
                }
                println!("{e:?}");
                if matches!(e, Event::Logout { .. } | Event::LoginFailed { .. }) {
                    return;
                }
            }
            line = lines.next_line(), if stdin_open => {
                let Ok(Some(line)) = line else {
                    stdin_open = false;
                    continue;
                };
                let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
                match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                    ["join", ch] => {
                        let ch = ch.to_string();
                        session.with(move |c, now| c.channel_join(&ch, now)).await;
                    }
                    ["send", ch, n] => {
                        let n: usize = n.parse().unwrap_or(1);
                        for i in 0..n {
                            let (ch, text) = (ch.to_string(), format!("load {i}"));
                            session.with(move |c, now| c.channel_send(&ch, &text, false, now)).await;
                            // about 200 a second: a load a chart can show for a while
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        }
                    }
                    ["logout"] => {
                        session.with(|c, now| c.logout(now)).await;
                    }
                    _ => eprintln!("unknown command: {line}"),
                }
            }
        }
    }
}
