//! What a configuration key is, and the macro that declares keys.
//!
//! A key is declared once, in `settings.rs`, as a field of its section:
//!
//! ```text
//! /// What the key is for (its documentation, and its flag's help).
//! name: Type = default, flag(Flag::new("long-name")), rule(rule_fn);
//! ```
//!
//! `declare_settings!` turns the declarations into the section structs (serde, `Default`
//! from the declared defaults), `Settings`, and [`KEYS`](super::KEYS): one [`Key`] per
//! field, from which the file's type check, the `BEAMLINE_<SECTION>_<KEY>` environment
//! overrides, the command-line flags (`flags.rs`), validation and the documentation test
//! all derive. The type of a key's value ([`Kind`]) is the field's Rust type's
//! ([`KeyType`]); its environment variable is derived from its name.

use std::path::PathBuf;

use super::{ConfigError, Settings};

/// The TOML type of a key's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Bool,
    StrList,
    IntList,
}

/// The [`Kind`] of a field's Rust type; an `Option` is the kind of its content (unset
/// when absent).
pub trait KeyType {
    const KIND: Kind;
}

impl KeyType for String {
    const KIND: Kind = Kind::Str;
}
impl KeyType for PathBuf {
    const KIND: Kind = Kind::Str;
}
impl KeyType for u64 {
    const KIND: Kind = Kind::Int;
}
impl KeyType for bool {
    const KIND: Kind = Kind::Bool;
}
impl KeyType for Vec<String> {
    const KIND: Kind = Kind::StrList;
}
impl KeyType for Vec<u64> {
    const KIND: Kind = Kind::IntList;
}
impl<T: KeyType> KeyType for Option<T> {
    const KIND: Kind = T::KIND;
}

/// A command-line flag of `serve` that sets a key; it wins over the file and the
/// `BEAMLINE_*` environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flag {
    /// `--<long>`.
    pub long: &'static str,
    /// An environment variable that fills the flag when it is not given (clap's `env`).
    pub env: Option<&'static str>,
    /// The flag's value times `scale` is the key's: 1000 for seconds given to a `_ms` key.
    pub scale: u64,
    /// The flag's unit, when it differs from the key's (for the help text).
    pub unit: Option<&'static str>,
    /// The value is a secret: clap never shows the environment's value in `--help`.
    pub secret: bool,
}

impl Flag {
    pub const fn new(long: &'static str) -> Flag {
        Flag {
            long,
            env: None,
            scale: 1,
            unit: None,
            secret: false,
        }
    }

    pub const fn env(self, env: &'static str) -> Flag {
        Flag {
            env: Some(env),
            ..self
        }
    }

    /// Given in `unit`, `scale` times the key's value.
    pub const fn scaled(self, scale: u64, unit: &'static str) -> Flag {
        Flag {
            scale,
            unit: Some(unit),
            ..self
        }
    }

    pub const fn secret(self) -> Flag {
        Flag {
            secret: true,
            ..self
        }
    }
}

/// One key of the file, as declared.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub section: &'static str,
    pub name: &'static str,
    pub kind: Kind,
    /// The declaration's doc comment.
    pub doc: &'static str,
    pub flag: Option<Flag>,
    /// The key's validation rule (a rule relating several keys sits on the last of
    /// them, or on the one it names); `Ok` for a key without one.
    pub check: fn(&Settings) -> Result<(), ConfigError>,
}

impl Key {
    /// `section.key`, as errors and the documentation name it.
    pub fn path(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }

    /// `BEAMLINE_<SECTION>_<KEY>`.
    pub fn env(&self) -> String {
        env_name(self.section, self.name)
    }

    /// The doc comment on one line.
    pub fn help(&self) -> String {
        self.doc.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

pub fn env_name(section: &str, key: &str) -> String {
    format!("BEAMLINE_{section}_{key}").to_ascii_uppercase()
}

/// A key's check: its rule applied to its value, or nothing.
macro_rules! check {
    ($settings:ident, $section:ident, $key:ident,) => {{
        let _ = $settings;
        Ok(())
    }};
    ($settings:ident, $section:ident, $key:ident, $rule:expr) => {
        ($rule)(
            concat!(stringify!($section), ".", stringify!($key)),
            &$settings.$section.$key,
            $settings,
        )
    };
}

/// `Some(flag)` or `None`.
macro_rules! flag {
    () => {
        None
    };
    ($flag:expr) => {
        Some($flag)
    };
}

/// Declares every section and key; see the module documentation.
macro_rules! declare_settings {
    ($(
        $(#[$section_meta:meta])*
        $section:ident: $Section:ident {
            $(
                $(#[doc = $doc:literal])+
                $key:ident: $ty:ty = $default:expr
                $(, flag($flag:expr))?
                $(, rule($rule:expr))?
                ;
            )+
        }
    )+) => {
        $(
            $(#[$section_meta])*
            #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
            #[serde(default, deny_unknown_fields)]
            pub struct $Section {
                $(
                    $(#[doc = $doc])+
                    pub $key: $ty,
                )+
            }

            impl Default for $Section {
                fn default() -> Self {
                    $Section {
                        $($key: $default,)+
                    }
                }
            }
        )+

        /// The whole file: one field per `[section]`.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Settings {
            $(pub $section: $Section,)+
        }

        /// Every key, in the order of the declarations (which is the order of
        /// validation: the first broken rule is reported).
        pub const KEYS: &[$crate::shell::config::keys::Key] = &[
            $($(
                $crate::shell::config::keys::Key {
                    section: stringify!($section),
                    name: stringify!($key),
                    kind: <$ty as $crate::shell::config::keys::KeyType>::KIND,
                    doc: concat!($($doc, "\n"),+),
                    flag: $crate::shell::config::keys::flag!($($flag)?),
                    check: |settings: &Settings| {
                        $crate::shell::config::keys::check!(settings, $section, $key, $($rule)?)
                    },
                },
            )+)+
        ];
    };
}

pub(super) use {check, declare_settings, flag};
