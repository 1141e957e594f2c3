//! The command-line flags of `serve`: one per key that declares a [`Flag`], built from
//! the declarations for clap (`#[command(flatten)] flags: Flags`), so that no flag, its
//! key or its environment variable is spelled anywhere else.
//!
//! A flag's value is read like the key's environment variable (lists comma-separated),
//! except integers, which clap parses, times the flag's scale.

use clap::{Arg, ArgMatches, Command};

use super::keys::{Flag, Key, Kind};
use super::{env_value, KEYS};

/// The values of the flags given (or filled from their `env`), each for its key.
#[derive(Clone, Debug, Default)]
pub struct Flags(Vec<(&'static Key, toml::Value)>);

impl Flags {
    /// What each flag sets, in the order of the declarations.
    pub fn values(&self) -> impl Iterator<Item = (&'static Key, &toml::Value)> {
        self.0.iter().map(|(key, value)| (*key, value))
    }
}

/// Every key with a flag.
fn flagged() -> impl Iterator<Item = (&'static Key, Flag)> {
    KEYS.iter()
        .filter_map(|key| key.flag.map(|flag| (key, flag)))
}

/// The flag's clap argument; its id is the key's `section.key`.
fn arg(key: &'static Key, flag: Flag) -> Arg {
    let unit = flag.unit.map(|u| format!(", in {u}")).unwrap_or_default();
    let mut arg = Arg::new(key.path())
        .long(flag.long)
        .value_name(flag.unit.unwrap_or(key.name).to_ascii_uppercase())
        .help(format!(
            "{} (`{}`{unit}).",
            key.help().trim_end_matches('.'),
            key.path()
        ))
        .num_args(1);
    if key.kind == Kind::Int {
        arg = arg.value_parser(clap::value_parser!(u64));
    }
    if let Some(env) = flag.env {
        arg = arg.env(env).hide_env_values(flag.secret);
    }
    arg
}

impl clap::Args for Flags {
    fn augment_args(cmd: Command) -> Command {
        flagged().fold(cmd, |cmd, (key, flag)| cmd.arg(arg(key, flag)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for Flags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut values = Vec::new();
        for (key, flag) in flagged() {
            let id = key.path();
            let value = if key.kind == Kind::Int {
                let Some(n) = matches.get_one::<u64>(&id) else {
                    continue;
                };
                let n = n.saturating_mul(flag.scale);
                toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
            } else {
                let Some(text) = matches.get_one::<String>(&id) else {
                    continue;
                };
                env_value(&format!("--{}", flag.long), key.kind, text).map_err(|e| {
                    clap::Error::raw(clap::error::ErrorKind::ValueValidation, e.to_string())
                })?
            };
            values.push((key, value));
        }
        Ok(Flags(values))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}
