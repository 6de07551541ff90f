//! `presence token`: a signed login token for a user (what the host hands its client, like
//! Tencent's UserSig), or the host's bearer for the friendship endpoint.

use std::path::PathBuf;
use std::process::ExitCode;

use presence_gateway::token::TOKEN_TTL_S_MAX;
use presence_gateway::Secret;

/// Arguments of `presence token`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The secret file `presence serve` was given.
    #[arg(long)]
    secret_file: PathBuf,
    /// The user the token logs in as.
    #[arg(long, required_unless_present = "host", conflicts_with = "host")]
    user: Option<String>,
    /// How long the token is good for, in seconds (at most a year).
    #[arg(long = "ttl-s", default_value_t = 86_400)]
    ttl_s: u64,
    /// Print the host's bearer instead (`Authorization: Bearer ...` on /friends, /stats and
    /// /metrics).
    #[arg(long)]
    host: bool,
}

/// Runs `presence token`.
pub fn run(args: Args) -> ExitCode {
    let secret = match Secret::from_file(&args.secret_file) {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("presence token: {e}");
            return ExitCode::from(2);
        }
    };
    if args.ttl_s > TOKEN_TTL_S_MAX {
        eprintln!("presence token: --ttl-s is at most {TOKEN_TTL_S_MAX} (a year)");
        return ExitCode::from(2);
    }
    match args.user {
        Some(user) => println!("{}", secret.mint_for(&user, args.ttl_s)),
        None => println!("{}", secret.host_bearer()),
    }
    ExitCode::SUCCESS
}
