//! `haneul user …` and `haneul token …`: accounts and API tokens, stored in
//! the archive's catalog. They work beside a running server.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use haneul_core::audit;
use haneul_core::users::{generate_password, unix_ms_now, ApiToken, NewUser, Role, User, Users};

use crate::ArchiveOptions;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user; without --password-stdin a random password is printed once.
    Add(AddArgs),
    /// Set a user's password; without --password-stdin a random one is printed once.
    Passwd(PasswdArgs),
    /// Stop a user from signing in (their API tokens stop working too).
    Disable(NameArgs),
    /// Let a disabled user sign in again.
    Enable(NameArgs),
    /// List the users.
    List(ListArgs),
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an API token acting as a user; the token is printed once.
    Create(TokenCreateArgs),
    /// Revoke an API token for good.
    Revoke(TokenRevokeArgs),
    /// List the API tokens (never their secrets).
    List(ListArgs),
}

#[derive(Args)]
pub struct AddArgs {
    #[command(flatten)]
    archive: ArchiveOptions,
    /// User name: letters, digits, '.', '_', '-' or '@'.
    name: String,
    /// admin, radiologist, clinician, technologist, researcher or service.
    #[arg(long)]
    role: String,
    /// Read the password from standard input (one line).
    #[arg(long)]
    password_stdin: bool,
    /// Limit the user to a site (repeat for several); without it, every site.
    #[arg(long = "site", value_name = "SITE")]
    sites: Vec<String>,
}

#[derive(Args)]
pub struct PasswdArgs {
    #[command(flatten)]
    archive: ArchiveOptions,
    name: String,
    /// Read the new password from standard input (one line).
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Args)]
pub struct NameArgs {
    #[command(flatten)]
    archive: ArchiveOptions,
    name: String,
}

/// The arguments of every `list` command (`user`, `token`, `ae`).
#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub archive: ArchiveOptions,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    archive: ArchiveOptions,
    /// The user the token acts as.
    user: String,
    /// What the token is for, e.g. "nightly export".
    #[arg(long)]
    name: String,
    /// Days until the token expires; 0: never.
    #[arg(long, default_value_t = 365)]
    expires_days: u64,
}

#[derive(Args)]
pub struct TokenRevokeArgs {
    #[command(flatten)]
    archive: ArchiveOptions,
    /// The token's id (the part after `hnl_`, as `haneul token list` shows it).
    id: String,
}

/// Open the accounts of the configured archive. Only `user add` may start
/// a new archive; the others refuse a data directory without one.
fn open(options: &ArchiveOptions, create: bool) -> anyhow::Result<Users> {
    let (data_dir, location) = catalog_of(options, create)?;
    Users::open(&data_dir, &location).with_context(|| format!("cannot open the archive in {}", data_dir.display()))
}

/// Where the configured archive keeps its catalog; `create` makes its data
/// directory, else one without a catalog is refused.
pub(crate) fn catalog_of(
    options: &ArchiveOptions,
    create: bool,
) -> anyhow::Result<(std::path::PathBuf, haneul_core::CatalogLocation)> {
    let config = options.load()?;
    let data_dir = config.storage.data_dir;
    let location = config.catalog.location()?;
    if create {
        std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    } else if !location.exists(&data_dir) {
        bail!("no archive in {} (check --data or the configuration)", data_dir.display());
    }
    Ok((data_dir, location))
}

/// The password from standard input (one line), or a generated one to print.
fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((generate_password(), true));
    }
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("reading the password from standard input")?;
    let line = input.strip_suffix('\n').unwrap_or(&input);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        bail!("no password on standard input");
    }
    if line.contains('\n') {
        bail!("the password on standard input must be a single line");
    }
    Ok((line.to_string(), false))
}

/// Record a change of accounts, tokens or shared AEs in the audit trail, as done by the
/// operating-system user at the command line.
pub(crate) fn record_change(options: &ArchiveOptions, change: &str, details: &[(&str, &str)]) -> anyhow::Result<()> {
    let config = options.load()?;
    let mut entry = command_line_entry(audit::Action::ConfigChange).detail("change", change);
    for (key, value) in details {
        entry = entry.detail(key, *value);
    }
    record_command(&config, &format!("{change} was done"), entry)
}

/// An audit record of what the operating-system user does at the command line.
pub(crate) fn command_line_entry(action: audit::Action) -> audit::Entry {
    audit::Entry::new(action, command_line_actor(), "localhost", format!("cli-{}", std::process::id()))
}

/// Append `entry` to the audit trail of the node `config` describes, unless
/// auditing is off; the running server appends it (through the trail's inbox)
/// when it owns the trail. `done` says what happened, for the error.
pub(crate) fn record_command(config: &crate::config::Config, done: &str, entry: audit::Entry) -> anyhow::Result<()> {
    if !config.audit.enabled {
        return Ok(());
    }
    let dir = config.storage.data_dir.join(audit::AUDIT_DIR);
    audit::submit(&dir, entry)
        .with_context(|| format!("{done}, but recording it in the audit trail in {} failed", dir.display()))?;
    Ok(())
}

/// Who acts at the command line: the operating-system user.
pub(crate) fn command_line_actor() -> String {
    let os_user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    format!("{os_user} (command line)")
}

fn print_generated(name: &str, password: &str) {
    println!("password for {name}: {password}");
    eprintln!("this password is shown only once; {name} must change it at the next sign-in");
}

pub fn run_user(command: UserCommand) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Add(args) => {
            let role: Role = args.role.parse()?;
            let users = open(&args.archive, true)?;
            let (password, generated) = password(args.password_stdin)?;
            let new = NewUser { name: args.name, role, password, sites: args.sites, must_change_password: generated };
            let user = users.create_user(&new)?;
            println!("added user {} (role {})", user.name, user.role);
            let sites = user.sites.join(",");
            let role = user.role.to_string();
            record_change(&args.archive, "user add", &[("user", &user.name), ("role", &role), ("sites", &sites)])?;
            if generated {
                print_generated(&user.name, &new.password);
            }
        }
        UserCommand::Passwd(args) => {
            let users = open(&args.archive, false)?;
            let (password, generated) = password(args.password_stdin)?;
            users.change_password(&args.name, &password, generated)?;
            println!("changed the password of {}", args.name);
            record_change(&args.archive, "user passwd", &[("user", &args.name)])?;
            if generated {
                print_generated(&args.name, &password);
            }
        }
        UserCommand::Disable(args) => {
            open(&args.archive, false)?.set_disabled(&args.name, true)?;
            println!("disabled user {}", args.name);
            record_change(&args.archive, "user disable", &[("user", &args.name)])?;
        }
        UserCommand::Enable(args) => {
            open(&args.archive, false)?.set_disabled(&args.name, false)?;
            println!("enabled user {}", args.name);
            record_change(&args.archive, "user enable", &[("user", &args.name)])?;
        }
        UserCommand::List(args) => {
            let users = open(&args.archive, false)?.list()?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                print_users(&users);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create(args) => {
            let users = open(&args.archive, false)?;
            let valid_for =
                (args.expires_days > 0).then(|| Duration::from_secs(args.expires_days.saturating_mul(86_400)));
            let created = users.create_token(&args.user, &args.name, valid_for)?;
            let expires = created.token.expires_ms.map(date).unwrap_or_else(|| "never".into());
            println!("{}", created.secret);
            eprintln!(
                "created token {} for {} (expires {expires}); it is shown only once, keep it now",
                created.token.id, created.token.user
            );
            let token = &created.token;
            let details = [("token", token.id.as_str()), ("user", token.user.as_str()), ("name", token.name.as_str())];
            record_change(&args.archive, "token create", &details)?;
        }
        TokenCommand::Revoke(args) => {
            open(&args.archive, false)?.revoke_token(&args.id)?;
            println!("revoked token {}", args.id.trim());
            record_change(&args.archive, "token revoke", &[("token", args.id.trim())])?;
        }
        TokenCommand::List(args) => {
            let tokens = open(&args.archive, false)?.tokens()?;
            if args.json {
                let now = unix_ms_now();
                let listed: Vec<_> = tokens
                    .iter()
                    .map(|token| {
                        let mut value = serde_json::to_value(token).unwrap_or_default();
                        value["state"] = token.state_at(now).as_str().into();
                        value
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else {
                print_tokens(&tokens);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM UTC`.
fn date(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|at| at.format(format).ok())
        .unwrap_or_else(|| ms.to_string())
}

fn print_users(users: &[User]) {
    println!("{:<24} {:<13} {:<9} {:<12} {:<20} created", "name", "role", "status", "password", "sites");
    for user in users {
        let sites = if user.sites.is_empty() { "all".to_string() } else { user.sites.join(",") };
        println!(
            "{:<24} {:<13} {:<9} {:<12} {:<20} {}",
            user.name,
            user.role.as_str(),
            if user.disabled { "disabled" } else { "enabled" },
            if user.must_change_password { "must change" } else { "set" },
            sites,
            date(user.created_ms)
        );
    }
}

fn print_tokens(tokens: &[ApiToken]) {
    let now = unix_ms_now();
    println!("{:<16} {:<24} {:<8} {:<20} {:<20} name", "id", "user", "state", "created", "expires");
    for token in tokens {
        println!(
            "{:<16} {:<24} {:<8} {:<20} {:<20} {}",
            token.id,
            token.user,
            token.state_at(now).as_str(),
            date(token.created_ms),
            token.expires_ms.map(date).unwrap_or_else(|| "never".into()),
            token.name
        );
    }
}
