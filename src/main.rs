//! The `sockloop` command line: the commands, one file each under `cli/`.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use log::LevelFilter;

use cli::bench::BenchCommand;
use cli::chat::{chat, ChatArgs};
use cli::rudp::{rudp_client, RudpArgs};
use cli::serve::{serve, ServeArgs};
use sockloop::Error;

#[derive(Parser)]
#[command(name = "sockloop", version, about = "A TCP + UDP server core on mio")]
struct Cli {
    /// Log level (error, warn, info, debug, trace); overrides RUST_LOG.
    #[arg(long, global = true)]
    log_level: Option<LevelFilter>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (with no listener flags: TCP and UDP echo on 127.0.0.1:7000, chat on
    /// 7001, chat-proto on 7002, json on 7003, rudp on UDP 7004).
    Serve(Box<ServeArgs>),
    /// Join a chat room: stdin lines become messages, received ones print as
    /// `[HH:MM:SS from]: content`.
    Chat(ChatArgs),
    /// Send messages reliably to a rudp echo server, wait for every echo, and
    /// report delivery, retransmissions and round-trip times.
    Rudp(RudpArgs),
    /// Load an echo server and measure it: every echoed byte is checked.
    #[command(subcommand)]
    Bench(BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(level) = cli.log_level {
        logger.filter_level(level);
    }
    if let Command::Serve(args) = &cli.command {
        if let Some(worker) = args.worker() {
            // A worker's lines share the supervisor's stderr: say whose.
            logger.format(move |out, record| {
                use std::io::Write;
                let (time, level) = (out.timestamp(), record.level());
                let target = record.target();
                writeln!(
                    out,
                    "[{time} {level:<5} {target} worker {worker}] {}",
                    record.args()
                )
            });
        }
    }
    // Trace lines are asked for with `--trace`, so they show whatever the
    // level of the rest.
    logger.filter_module(sockloop::TRACE_TARGET, LevelFilter::Info);
    logger.init();
    let result = match cli.command {
        Command::Serve(args) => serve(*args).map_err(Failure::from),
        Command::Chat(args) => chat(args),
        Command::Rudp(args) => rudp_client(args),
        Command::Bench(command) => cli::bench::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Why a command failed, and its exit code: 2 for usage and
/// configuration errors, 1 for the rest.
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    /// A usage error (exit 2) a command found itself: a flag out of range.
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 2,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let code = if e.is_usage() { 2 } else { 1 };
        Failure {
            message: e.to_string(),
            code,
        }
    }
}

/// A client's failure: what the network or the peer did.
impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure {
            message: e.to_string(),
            code: 1,
        }
    }
}
