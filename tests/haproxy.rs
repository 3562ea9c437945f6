//! A real HAProxy (`mode tcp`, `send-proxy-v2`) in front of two `serve`
//! processes taking PROXY headers from 127.0.0.1 (`--proxy-from`): the
//! per-IP cap and bans apply to the clients behind it (bound to 127.0.0.2
//! and 127.0.0.3), not to HAProxy's own address; and a header HAProxy
//! sends from an address outside `--proxy-from` is refused and counted.
//!
//! HAProxy is started on free loopback ports with a generated config and
//! killed after; where it is not installed the test says so and passes.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::external::free_port;
use common::process::Served;
use common::IO_TIMEOUT;

/// HAProxy, or `None` if it is not installed.
fn haproxy() -> Option<PathBuf> {
    let installed = Path::new("/usr/sbin/haproxy");
    if installed.exists() {
        return Some(installed.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.exists())
}

/// HAProxy with its config file; killed, and the file removed, on drop.
struct HaProxy {
    child: Child,
    config: PathBuf,
}

impl HaProxy {
    /// Starts HAProxy on `config` and waits until it accepts on port
    /// `ready` (a frontend that rejects every connection: probing the
    /// others would reach the backends and be counted there).
    fn start(binary: &Path, config: &str, ready: u16) -> HaProxy {
        let path =
            std::env::temp_dir().join(format!("sockloop-haproxy-{}.cfg", std::process::id()));
        std::fs::write(&path, config).unwrap();
        let child = Command::new(binary)
            .args(["-db", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start haproxy");
        let mut haproxy = HaProxy {
            child,
            config: path,
        };
        let deadline = Instant::now() + IO_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", ready)).is_err() {
            if let Some(status) = haproxy.child.try_wait().unwrap() {
                panic!("haproxy exited: {status}\n{config}");
            }
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen on {ready}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        haproxy
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

fn line(client: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    client.read_line(&mut line).unwrap();
    line
}

/// One JSON message there and back.
fn echo(client: &mut BufReader<TcpStream>, n: u32) {
    let message = format!("{{\"n\":{n}}}\n");
    client.get_mut().write_all(message.as_bytes()).unwrap();
    assert_eq!(line(client), message);
}

/// Everything until the connection ends.
fn rest(mut client: BufReader<TcpStream>) -> String {
    let mut rest = String::new();
    let _ = client.read_to_string(&mut rest);
    rest
}

/// A counter summed over a `serve`'s shards, from its /metrics.
fn metric(metrics: &str, name: &str) -> u64 {
    let mut http = TcpStream::connect(metrics).unwrap();
    http.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    http.read_to_string(&mut text).unwrap();
    let prefix = format!("sockloop_{name}_total{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn serve() -> Served {
    Served::start(
        &[
            "--tcp",
            "127.0.0.1:0=json",
            "--metrics",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--trusted",
            "none",
            "--proxy-from",
            "127.0.0.1/32",
            "--max-conns-per-ip",
            "2",
            "--conn-rate",
            "0",
            "--ban-after",
            "2",
            "--ban-for",
            "60s",
        ],
        2,
    )
}

#[test]
fn haproxy_in_front_limits_and_bans_apply_to_the_real_client() {
    let Some(binary) = haproxy() else {
        println!("skipping: haproxy not found");
        return;
    };
    let (a, b) = (serve(), serve());
    let (front, outside, ready) = (free_port(), free_port(), free_port());
    let config = format!(
        "global\n\
         \x20   maxconn 256\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   source 0.0.0.0\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 30s\n\
         \x20   timeout server 30s\n\
         frontend front\n\
         \x20   bind 127.0.0.1:{front}\n\
         \x20   default_backend both\n\
         backend both\n\
         \x20   balance source\n\
         \x20   server a {} send-proxy-v2\n\
         \x20   server b {} send-proxy-v2\n\
         frontend outside\n\
         \x20   bind 127.0.0.1:{outside}\n\
         \x20   default_backend stranger\n\
         backend stranger\n\
         \x20   server a {} send-proxy-v2 source 127.0.0.5\n\
         frontend ready\n\
         \x20   bind 127.0.0.1:{ready}\n\
         \x20   tcp-request connection reject\n\
         \x20   default_backend stranger\n",
        a.addr(0),
        b.addr(0),
        a.addr(0),
    );
    let haproxy = HaProxy::start(&binary, &config, ready);
    let front: SocketAddr = format!("127.0.0.1:{front}").parse().unwrap();

    // Two connections from 127.0.0.2 through the proxy: served; the third
    // is over its cap of two, though every connection comes from HAProxy.
    let mut first = common::connect_from("127.0.0.2", front);
    let mut second = common::connect_from("127.0.0.2", front);
    echo(&mut first, 1);
    echo(&mut second, 2);
    let third = common::connect_from("127.0.0.2", front);
    assert_eq!(
        rest(third),
        "{\"error\":\"too many connections from your address\"}\n"
    );
    // 127.0.0.3 is someone else: served.
    let mut other = common::connect_from("127.0.0.3", front);
    echo(&mut other, 3);

    // Two invalid messages ban 127.0.0.3 (and close it), not 127.0.0.2.
    other.get_mut().write_all(b"nope\nnope\n").unwrap();
    let closing = rest(other);
    assert_eq!(closing.lines().count(), 2, "{closing}");
    assert!(closing
        .lines()
        .all(|l| l.starts_with("{\"error\":\"invalid message\"")));
    let banned = common::connect_from("127.0.0.3", front);
    assert_eq!(
        rest(banned),
        "{\"error\":\"your address is banned for a while\"}\n"
    );
    echo(&mut first, 4);
    echo(&mut second, 5);

    let sum = |name| metric(a.addr(1), name) + metric(b.addr(1), name);
    assert_eq!(sum("refused_per_ip"), 1);
    assert_eq!(sum("refused_banned"), 1);
    assert_eq!(sum("proxy_headers"), 5);
    assert_eq!(sum("proxy_untrusted"), 0);

    // A header from 127.0.0.5, outside --proxy-from: refused, counted.
    let stranger =
        common::connect_from("127.0.0.2", format!("127.0.0.1:{outside}").parse().unwrap());
    assert_eq!(rest(stranger), "");
    common::wait_until("the stranger counted", || {
        metric(a.addr(1), "proxy_untrusted") == 1
    });
    assert_eq!(sum("proxy_headers"), 5);

    drop((first, second));
    drop(haproxy);
    for served in [a, b] {
        let output = served.stop();
        assert!(output.status.success(), "{output:?}");
    }
}
