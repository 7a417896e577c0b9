//! `warden`: the server (`warden serve`) and the command-line client in one binary.
//!
//! Every client command accepts `--json` for machine-readable output (`serve`, no client,
//! refuses it and `--server`; so does `sessions watch`, a live terminal). Exit codes are listed
//! in [`exit`].

mod client;
mod commands;
mod exit;
mod output;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// mimalloc instead of the system allocator: a grant allocates and frees many short-lived
/// buffers on whichever runtime thread polls it, and glibc's malloc spent a seventh of the
/// machine's time on that under load. Built without transparent huge pages (`no_thp`): with
/// them an idle SSH session held 180-227 KiB against glibc's 101-156; without, 126-161.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version,
    about = "Just-in-time privileged access: request, approve, connect, revoke, audit."
)]
struct Cli {
    /// Server URL (else WARDEN_SERVER, else the saved login's, else http://127.0.0.1:8443).
    // WARDEN_SERVER is read below, not by clap, which would show `--server` as required in
    // the usage line of every error while the variable is set.
    #[arg(long, global = true)]
    server: Option<String>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Warden server.
    Serve(ServeArgs),
    /// Log in and save an API token.
    Login(commands::auth::LoginArgs),
    /// Revoke the saved token and forget it.
    Logout,
    /// Show who the saved token belongs to.
    Whoami,
    /// Manage your second factor (TOTP).
    #[command(subcommand)]
    Mfa(commands::auth::MfaCommand),
    /// List the roles you may request, with tier, maximum TTL and MFA requirement, as policy
    /// decides them for the shortest TTL and no ticket (a rule that asks more of the request
    /// itself shows in `warden policy explain TARGET --role R --ttl T --ticket X`).
    Targets,
    /// Create and act on access requests.
    #[command(subcommand)]
    Request(commands::requests::RequestCommand),
    /// Emergency access: granted at once after MFA, recorded in full at SSH targets (Warden
    /// records no database sessions), security notified, and a postmortem opened. `--drill` for
    /// a drill.
    Breakglass(commands::breakglass::BreakglassArgs),
    /// List, show and close the postmortems of break-glass grants.
    #[command(subcommand)]
    Postmortem(commands::breakglass::PostmortemCommand),
    /// The notification outbox.
    #[command(subcommand)]
    Notify(commands::breakglass::NotifyCommand),
    /// Check, test, explain and reload policy.
    #[command(subcommand)]
    Policy(commands::policy::PolicyCommand),
    /// Connect to a database target with your active grant.
    #[command(subcommand)]
    Db(commands::db::DbCommand),
    /// Manage target admin credentials (administrators).
    #[command(subcommand)]
    Target(commands::db::TargetCommand),
    /// Offboarding: end every open request and grant of a user (administrators).
    Revoke {
        /// The user whose requests and grants end.
        #[arg(long)]
        user: String,
        /// Required, to make the scope explicit.
        #[arg(long, required = true)]
        all: bool,
    },
    /// Master key rotation (offline, server stopped).
    #[command(subcommand)]
    Vault(commands::vault::VaultCommand),
    /// Manage the public keys you log in to Warden's SSH proxy with.
    #[command(subcommand)]
    Keys(commands::ssh::KeysCommand),
    /// ssh to TARGET through Warden's SSH proxy (a remote command may follow `--`).
    Ssh {
        /// The target you hold a grant for.
        target: String,
        /// The Unix account on the target (default: the role's first principal).
        #[arg(long)]
        login: Option<String>,
        /// The grant to log in under, by its request id, when you hold several for the target
        /// (default: the one that ends last, of those that log in as --login).
        #[arg(long, value_parser = commands::request_id)]
        request: Option<String>,
        /// The private key to log in with: a grant's, or one registered with `warden keys
        /// add` (default: the key `warden request create` saved with the grant's
        /// certificate, else ssh's own choice).
        #[arg(long, short = 'i')]
        identity: Option<PathBuf>,
        /// Ask for a terminal for the remote command too, as `ssh -t` does: a role that checks
        /// each command line needs one for a command that starts a shell.
        #[arg(short = 't')]
        terminal: bool,
        /// A remote command to run instead of a shell.
        #[arg(last = true)]
        command: Vec<String>,
        /// Print a failure found before ssh starts (no grant for TARGET, not logged in) as
        /// JSON; the session itself is ssh's.
        // The global option under its own words: ssh's output is no table.
        #[arg(long)]
        json: bool,
    },
    /// List (the default), watch and end live SSH sessions.
    Sessions {
        #[command(subcommand)]
        command: Option<commands::ssh::SessionsCommand>,
    },
    /// Play a session's recording on this terminal, or save it with --out. With --json, print
    /// the recording itself (asciicast v2: one JSON value per line) instead of playing it.
    Replay {
        /// The session's id, as `sessions list` or the audit log names it.
        #[arg(value_parser = commands::session_id)]
        session: String,
        /// Save the asciicast file instead of playing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Playback speed (0.01 to 100).
        #[arg(long, default_value_t = 1.0, value_parser = commands::playback_speed)]
        speed: f64,
        /// Longest pause, in seconds (0 to 3600).
        #[arg(long, default_value_t = 2.0, value_parser = commands::idle_limit)]
        idle_limit: f64,
        /// Play or save a recording that no longer matches the SHA-256 its session's end
        /// recorded in the audit log (refused otherwise), with a warning.
        #[arg(long)]
        even_if_altered: bool,
    },
    /// Print the SSH user CA public key, for sshd's TrustedUserCAKeys.
    SshCa,
    /// Write the key revocation list (KRL) of SSH grants revoked early, for sshd's RevokedKeys
    /// (refresh it often, e.g. from cron).
    SshRevokedKeys {
        /// Where to write it, replaced atomically (the file sshd's RevokedKeys names); without
        /// it, the binary list goes to standard output, which must not be a terminal.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// The zero-standing-privilege scorecard of a period, or `report drills` (administrators
    /// and security).
    Report(commands::report::ReportArgs),
    /// The audit log: search, checkpoints, proofs, offline verification, export and archive.
    #[command(subcommand)]
    Audit(commands::audit::AuditCommand),
    /// Administer users.
    #[command(subcommand)]
    User(commands::auth::UserCommand),
    /// Hash a password for a config file's `password_hash`: asked for without echo at a
    /// terminal, else read from stdin.
    HashPassword,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (default ./warden-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// API listen address (default 127.0.0.1:8443).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// SSH proxy listen address (default 127.0.0.1:2222; port 0 picks a free one).
    #[arg(long)]
    ssh_listen: Option<SocketAddr>,
    /// Development server: temporary data, demo users and demo policy.
    #[arg(long)]
    dev: bool,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    // The global `--server` and `--json` are for clients: hidden from this command's help
    // under its own, and refused ([`serve_alone`]).
    #[arg(long, hide = true)]
    server: Option<String>,
    #[arg(long, hide = true)]
    json: bool,
}

/// Refuses the client's options given to `warden serve`, which would otherwise start as if
/// they were not there: `--server` (a server listens where `--listen` says) and `--json` (its
/// log lines are JSON with `--log-format json`).
fn serve_alone(server: bool, json: bool) -> anyhow::Result<()> {
    let refused = match (server, json) {
        (false, false) => return Ok(()),
        (true, false) => "--server",
        (false, true) => "--json",
        (true, true) => "--server and --json",
    };
    let mut why = Vec::new();
    if server {
        why.push(
            "--server names the server a client command talks to; the server listens where --listen (or the config's `listen`) says",
        );
    }
    if json {
        why.push("for log lines in JSON, pass --log-format json");
    }
    Err(exit::Failure::new(
        exit::USAGE,
        format!("`warden serve` takes no {refused}: {}", why.join("; ")),
    )
    .into())
}

/// Sets up the server's log lines. A `WARDEN_LOG` that does not parse stops the start: logging
/// at the default level instead would leave whoever asked for debug lines thinking they had them.
fn init_logging(json: bool) -> anyhow::Result<()> {
    use tracing_subscriber::prelude::*;
    let filter = match std::env::var("WARDEN_LOG") {
        Ok(asked) if !asked.trim().is_empty() => tracing_subscriber::EnvFilter::try_new(&asked)
            .map_err(|e| {
                exit::Failure::new(
                    exit::USAGE,
                    format!(
                        "WARDEN_LOG={asked:?} is no log filter ({e}); give a level (error, warn, \
                         info, debug, trace) or comma-separated TARGET=LEVEL pairs, e.g. \
                         warn,warden_server=debug"
                    ),
                )
            })?,
        _ => tracing_subscriber::EnvFilter::new("warn,warden_server=info"),
    };
    // Colours only for a person at a terminal, never in a log file or a collector.
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let logged =
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::filter::filter_fn(|m| {
                libraries_above_debug(m.target(), *m.level())
            }));
    if json {
        logged.with(lines.json()).init();
    } else {
        logged.with(lines).init();
    }
    Ok(())
}

/// Whether a line of `target` at `level` may be logged: Warden's own at any level the filter
/// lets through, other libraries' at info and above only, whatever `WARDEN_LOG` asks. Their debug
/// lines carry what Warden hands them, such as a database driver's statement setting a grant's
/// password, and only Warden's own lines are written knowing which values are secret.
fn libraries_above_debug(target: &str, level: tracing::Level) -> bool {
    target.starts_with("warden") || level <= tracing::Level::INFO
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = output::Output { json: cli.json };
    // Given on the command line, not by WARDEN_SERVER, which a client's shell may well set.
    let asked_server = cli.server.is_some();
    // An empty WARDEN_SERVER (a CI variable set but empty) is unset, as an empty WARDEN_HOME is.
    let server = match cli.server {
        Some(s) => Some(s),
        None => match std::env::var("WARDEN_SERVER") {
            Ok(s) => Some(s),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(exit::Failure::new(
                    exit::USAGE,
                    "WARDEN_SERVER is not valid UTF-8: set it to the server's URL, e.g. http://127.0.0.1:8443",
                )
                .into());
            }
        },
    }
    .filter(|s| !s.is_empty());
    match cli.command {
        Command::Serve(a) => {
            serve_alone(asked_server, out.json)?;
            init_logging(a.log_format == "json")?;
            warden_server::serve(warden_server::ServeOptions {
                config: a.config,
                data_dir: a.data_dir,
                listen: a.listen,
                ssh_listen: a.ssh_listen,
                dev: a.dev,
            })
            .await
        }
        Command::Login(a) => commands::auth::login(server, a, out).await,
        Command::Logout => commands::auth::logout(server, out).await,
        Command::Whoami => commands::auth::whoami(server, out).await,
        Command::Mfa(c) => commands::auth::mfa(server, c, out).await,
        Command::User(c) => commands::auth::user(server, c, out).await,
        Command::HashPassword => commands::auth::hash_password(out),
        Command::Targets => commands::requests::targets(server, out).await,
        Command::Request(c) => commands::requests::run(server, c, out).await,
        Command::Policy(c) => commands::policy::run(server, c, out).await,
        Command::Breakglass(a) => commands::breakglass::breakglass(server, a, out).await,
        Command::Postmortem(c) => commands::breakglass::postmortem(server, c, out).await,
        Command::Notify(c) => commands::breakglass::notify(server, c, out).await,
        Command::SshRevokedKeys { out: file } => {
            commands::ssh::revoked_keys(server, file.as_deref(), out).await
        }
        Command::SshCa => commands::ssh::ca(server, out).await,
        Command::Audit(c) => commands::audit::run(server, c, out).await,
        Command::Report(a) => commands::report::run(server, a, out).await,
        Command::Keys(c) => commands::ssh::keys(server, c, out).await,
        Command::Ssh {
            target,
            login,
            request,
            identity,
            terminal,
            command,
            json: _,
        } => {
            let to = commands::ssh::To {
                target,
                login,
                request,
            };
            commands::ssh::ssh(server, to, identity, terminal, command).await
        }
        Command::Sessions { command } => {
            let c = command.unwrap_or(commands::ssh::SessionsCommand::List);
            commands::ssh::sessions(server, c, out).await
        }
        Command::Replay {
            session,
            out: file,
            speed,
            idle_limit,
            even_if_altered,
        } => {
            let pace = commands::ssh::Pace { speed, idle_limit };
            commands::ssh::replay(server, session, file, pace, even_if_altered, out).await
        }
        Command::Db(c) => commands::db::db(server, c).await,
        Command::Vault(c) => {
            // Works on the data dir offline, as a start does: what the store warns of (a
            // database others could read, made private) is said here too.
            init_logging(false)?;
            commands::vault::run(c, out)
        }
        Command::Target(c) => commands::db::target(server, c, out).await,
        Command::Revoke { user, all: _ } => commands::db::revoke_all(server, user, out).await,
    }
}

/// Ends on arguments that do not parse: clap's own words and usage, or, when `--json` was
/// among them, the same error envelope every other failure prints.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let asked_json = std::env::args_os().any(|a| a == "--json");
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let unknown = unknown_option(e, &argv);
    if !asked_json {
        let Some(unknown) = unknown else { e.exit() };
        eprint!("{}", unknown.rendered);
        return ExitCode::from(exit::USAGE);
    }
    let rendered = e.render().to_string();
    // The error is the first paragraph (a list of missing arguments runs over several lines);
    // usage and hints follow.
    let message = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.trim_start_matches("error: ");
    // A group called without its subcommand renders its help, whose first paragraph is only
    // what the group is for.
    let missing;
    let message = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        missing = missing_subcommand(&rendered);
        missing
    } else if let Some(unknown) = unknown {
        format!("{message}: {}", unknown.tip)
    } else {
        message.to_owned()
    };
    let body = serde_json::json!({ "error": { "code": exit::name_of(exit::USAGE), "message": message, "exit_code": exit::USAGE } });
    eprintln!("{body}");
    ExitCode::from(exit::USAGE)
}

/// An argument beginning with `-` that the command does not take, told with a true tip in
/// place of clap's: its `-- VALUE` is for positional arguments, and its guess at a similar
/// option can name one that does something else (`--json` for `--reason`).
struct UnknownOption {
    /// The tip alone, for a `--json` error's message.
    tip: String,
    /// The whole error as clap lays it out, with this tip.
    rendered: String,
}

/// Options of one command given under another's name: approving, denying and revoking take a
/// `--comment`, asking for access a `--reason`.
const SAID_OTHERWISE: &[(&str, &str)] = &[("reason", "comment"), ("comment", "reason")];

/// What `e`, an unknown argument in `argv` (the arguments after the program's name), means,
/// when it begins with `-`: a value that begins with `-` given to the option before it, which
/// takes it with `=` (a reason like "-1 node down", a TTL of -5m), or an option the command does
/// not take, said with the options it does take. `None` for any other error.
fn unknown_option(e: &clap::Error, argv: &[String]) -> Option<UnknownOption> {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    if e.kind() != ErrorKind::UnknownArgument || !arg.starts_with('-') {
        return None;
    }
    // The word as typed: clap names `--verbose` for `--verbose=1`, and `-5` for `-5m`.
    let at = argv.iter().position(|w| {
        w == arg
            || w.strip_prefix(arg.as_str())
                .is_some_and(|rest| rest.starts_with('=') || !arg.starts_with("--"))
    });
    let word = at.map_or(arg.as_str(), |i| argv[i].as_str());
    // The command it was given to: the one named before it (`warden --verbose request list`
    // gives it to `warden`).
    let mut root = Cli::command();
    root.build();
    let (command, path) = command_of(&root, &argv[..at.unwrap_or(argv.len())]);
    let name = std::iter::once("warden")
        .chain(path.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let before = at.and_then(|i| i.checked_sub(1)).map(|i| argv[i].as_str());
    let taking_value = before.and_then(|b| {
        let option = if let Some(long) = b.strip_prefix("--") {
            command.get_arguments().find(|a| {
                !long.contains('=')
                    && (a.get_long() == Some(long)
                        || a.get_all_aliases().is_some_and(|all| all.contains(&long)))
            })
        } else {
            let mut chars = b.strip_prefix('-')?.chars();
            let short = chars.next().filter(|_| chars.next().is_none())?;
            command
                .get_arguments()
                .find(|a| a.get_short() == Some(short))
        }?;
        option.get_action().takes_values().then_some(b)
    });
    let tip = if let Some(option) = taking_value {
        format!(
            "a value that begins with '-' is given to its option with '=': {option}={}",
            output::shell_word(word)
        )
    } else {
        let long = word
            .strip_prefix("--")
            .map(|l| l.split('=').next().unwrap_or(l));
        let instead = long.and_then(|l| {
            SAID_OTHERWISE
                .iter()
                .filter(|(asked, _)| *asked == l)
                .find_map(|(_, meant)| {
                    command
                        .get_arguments()
                        .find(|a| a.get_long() == Some(meant))
                })
        });
        let shown = word.split('=').next().unwrap_or(word);
        match instead {
            Some(meant) => {
                let what = meant.get_help().map(|h| h.to_string()).unwrap_or_default();
                let mut what = what.trim_end_matches('.').to_owned();
                if let Some(first) = what.get_mut(0..1) {
                    first.make_ascii_lowercase();
                }
                format!(
                    "`{name}` takes no {shown}: use --{} instead ({what})",
                    meant.get_long().unwrap_or_default()
                )
            }
            None => format!(
                "`{name}` takes no option {shown}; it takes {} (`{name} --help` says what each does)",
                options_of(command)
            ),
        }
    };
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let usage = command.clone().render_usage().to_string();
    let rendered = format!(
        "{first}\n\n  tip: {tip}\n\n{}\n\nFor more information, try '--help'.\n",
        usage.trim_end()
    );
    Some(UnknownOption { tip, rendered })
}

/// The command `argv` names (`warden request approve`: `approve` under `request`) and the
/// names of the subcommands on the way to it.
fn command_of<'c>(root: &'c clap::Command, argv: &[String]) -> (&'c clap::Command, Vec<String>) {
    let mut command = root;
    let mut path = Vec::new();
    let mut words = argv.iter();
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            // An option's value is no subcommand: skip it.
            let takes_value = !long.contains('=')
                && command
                    .get_arguments()
                    .any(|a| a.get_long() == Some(long) && a.get_action().takes_values());
            if takes_value {
                words.next();
            }
            continue;
        }
        if word.starts_with('-') {
            let short = word.chars().nth(1);
            let takes_value = word.chars().count() == 2
                && command
                    .get_arguments()
                    .any(|a| a.get_short() == short && a.get_action().takes_values());
            if takes_value {
                words.next();
            }
            continue;
        }
        match command.find_subcommand(word) {
            Some(sub) => {
                path.push(sub.get_name().to_owned());
                command = sub;
            }
            None => break,
        }
    }
    (command, path)
}

/// The options `command` takes, as its help lists them: "--comment, --totp, --json, --server
/// and --help".
fn options_of(command: &clap::Command) -> String {
    let mut names: Vec<String> = command
        .get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set())
        .filter_map(|a| {
            a.get_long()
                .map(|l| format!("--{l}"))
                .or_else(|| a.get_short().map(|s| format!("-{s}")))
        })
        .collect();
    // Help last, as the help lists it.
    names.retain(|n| n != "--help");
    names.push("--help".to_owned());
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Says which subcommands a group called without one has, from its rendered help.
fn missing_subcommand(help: &str) -> String {
    let group = help
        .lines()
        .find_map(|l| l.strip_prefix("Usage: "))
        .map(|usage| {
            usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<']))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "warden".to_owned());
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    format!(
        "`{group}` needs a subcommand, one of: {}",
        commands.join(", ")
    )
}

/// What a program killed by `SIGPIPE` exits with, as shells report it (128 + 13).
const BROKEN_PIPE_EXIT: i32 = 141;

/// Ends the process quietly when the reader of our output goes away (`warden targets | head`),
/// as tools that die of `SIGPIPE` do, instead of panicking on the failed print; any other
/// panic is reported as usual.
fn quiet_on_broken_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(BROKEN_PIPE_EXIT);
        }
        report(info);
    }));
}

/// Stack of each runtime thread, which evaluates policy: Cedar evaluates a rule by recursion
/// and refuses to go on (the rule then decides nothing) with less than 100 KiB left, and a
/// rule as large as `policy check` lets through needs more than the 2 MiB threads get by
/// default. Only what is used is ever backed by memory.
const RUNTIME_STACK: usize = 16 * 1024 * 1024;

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(RUNTIME_STACK)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // A write to a reader that went away (`warden replay ID | head`), as above.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::exit(BROKEN_PIPE_EXIT)
        }
        Err(e) => {
            let code = exit::code_of(&e);
            if json {
                let failure = e.downcast_ref::<exit::Failure>();
                let api = failure.and_then(|f| f.api_code.clone());
                let mut body = serde_json::json!({ "error": { "code": api.unwrap_or_else(|| exit::name_of(code).into()), "message": format!("{e:#}"), "exit_code": code } });
                if let Some(d) = failure.and_then(|f| f.diagnostics.clone()) {
                    body["error"]["diagnostics"] = d;
                }
                if let Some(id) = failure.and_then(|f| f.request_id.clone()) {
                    body["error"]["request_id"] = id.into();
                }
                eprintln!("{body}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(code)
        }
    }
}
