//! `haneul ae …`: the remote AEs every node of a catalog knows (modalities,
//! workstations, C-MOVE destinations), kept in the catalog. A running server
//! picks changes up within seconds; AEs of a node's own configuration file
//! (`[[known_ae]]`) are listed there and win over a shared one of the same title.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use haneul_core::aes::{KnownAe, SharedAes};
use haneul_core::Role;

use crate::users::{catalog_of, command_line_actor, record_change};
use crate::ArchiveOptions;

#[derive(Subcommand)]
pub enum AeCommand {
    /// Add an AE every node knows, or change the one with this title.
    Add(AddArgs),
    /// Remove a shared AE.
    Remove(RemoveArgs),
    /// List the shared AEs.
    List(crate::users::ListArgs),
}

#[derive(Args)]
pub struct AddArgs {
    #[command(flatten)]
    archive: ArchiveOptions,
    /// Its AE title.
    title: String,
    /// Its host name or IP address (associations from it are checked against it).
    #[arg(long)]
    host: String,
    /// The port it listens on (C-MOVE destinations, storage commitment results).
    #[arg(long)]
    port: u16,
    /// What its associations may do: admin, radiologist, clinician, technologist, researcher or service.
    #[arg(long, default_value = "service")]
    role: String,
    /// Site of the studies it stores (default: storage.site).
    #[arg(long, default_value = "")]
    site: String,
    /// What it is, for the PACS team (e.g. "CT, 3rd floor").
    #[arg(long, default_value = "")]
    description: String,
}

#[derive(Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    archive: ArchiveOptions,
    title: String,
}

fn open(options: &ArchiveOptions, create: bool) -> anyhow::Result<SharedAes> {
    let (data_dir, location) = catalog_of(options, create)?;
    SharedAes::open(&data_dir, &location).with_context(|| format!("cannot open the archive in {}", data_dir.display()))
}

pub fn run(command: AeCommand) -> anyhow::Result<ExitCode> {
    match command {
        AeCommand::Add(args) => {
            let role: Role = args.role.parse()?;
            let ae = KnownAe { title: args.title, host: args.host, port: args.port, role, site: args.site };
            let configured = args.archive.load()?.known_aes.into_iter().any(|known| known.title == ae.title);
            let created = open(&args.archive, true)?.put(&ae, &args.description, &command_line_actor())?;
            let verb = if created { "added" } else { "changed" };
            println!("{verb} shared AE {} ({}, role {})", ae.title, ae.address(), ae.role);
            if configured {
                eprintln!("note: this node's configuration file lists {} too; its entry wins on this node", ae.title);
            }
            let (address, role) = (ae.address(), ae.role.to_string());
            let details = [("ae_title", ae.title.as_str()), ("address", address.as_str()), ("role", role.as_str())];
            record_change(&args.archive, &format!("shared AE {verb}"), &details)?;
        }
        AeCommand::Remove(args) => {
            if !open(&args.archive, false)?.remove(&args.title)? {
                eprintln!("haneul: no shared AE {:?} (AEs of a configuration file are removed there)", args.title);
                return Ok(ExitCode::from(1));
            }
            println!("removed shared AE {}", args.title);
            record_change(&args.archive, "shared AE removed", &[("ae_title", args.title.as_str())])?;
        }
        AeCommand::List(args) => {
            let aes = open(&args.archive, false)?.list()?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&aes)?);
            } else if aes.is_empty() {
                println!("no shared AE (add one with `haneul ae add`)");
            } else {
                println!("{:<16}  {:<28}  {:<12}  {:<12}  description", "title", "address", "role", "site");
                for shared in aes {
                    let ae = &shared.ae;
                    let role = ae.role.to_string();
                    println!(
                        "{:<16}  {:<28}  {:<12}  {:<12}  {}",
                        ae.title,
                        ae.address(),
                        role,
                        ae.site,
                        shared.description
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
