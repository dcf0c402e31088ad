//! What a row of the settings table is, and what is made from the table besides the
//! [`Config`](super::Config): the list of `APP_ENV_*` names with its "did you mean" check,
//! the configuration part of `ledger --help`, and the tables of README.md and
//! docs/configuration.md.

use super::table::TABLE;

/// One setting: an environment variable, what it accepts, its default and its documentation.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The variable (`APP_ENV_PORT`, `RUN_MODE`).
    pub name: &'static str,
    /// The section of the documentation (and line of `--help`) it belongs to.
    pub group: Group,
    /// What a set value must be; anything else is a configuration error naming the variable.
    pub accepts: Accepts,
    /// The value when unset or empty.
    pub default: Default,
    /// A short note after the name in `ledger --help` (`(3000)`), or empty.
    pub help: &'static str,
    /// The README's one-line meaning.
    pub summary: &'static str,
    /// docs/configuration.md's full meaning.
    pub doc: &'static str,
}

/// What a setting accepts. The error message of a refused value is made from it, so every
/// setting of one kind says the same thing.
#[derive(Debug, Clone, Copy)]
pub enum Accepts {
    /// Any text; checked further by the code that reads it, where a check applies.
    Text,
    /// Any text, kept as a secret: never printed, not even in `Debug`.
    Secret,
    /// A decimal integer within `min..=max` (durations are integers of their unit).
    Integer {
        /// The smallest accepted value.
        min: u64,
        /// The largest accepted value.
        max: u64,
    },
    /// One of these words, exactly.
    OneOf(&'static [&'static str]),
    /// An `http://` or `https://` URL with a host.
    HttpUrl,
    /// A `redis://` or `rediss://` URL (it may hold a password: a secret).
    RedisUrl,
}

/// A setting's default.
#[derive(Debug, Clone, Copy)]
pub enum Default {
    /// None: unset means "not configured".
    None,
    /// This text.
    Text(&'static str),
    /// This integer.
    Integer(u64),
    /// Worked out from other settings or at run time, as described (`leased`, `AWS`).
    Described(&'static str),
}

impl Default {
    /// The default as the documentation shows it.
    pub fn documented(&self) -> String {
        match self {
            Default::None => "—".into(),
            Default::Text(t) => format!("`{t}`"),
            Default::Integer(n) => format!("`{n}`"),
            Default::Described(d) => (*d).into(),
        }
    }
}

/// A section of the documentation and line of `--help`, in their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Roles, address, node id, shutdown.
    Process,
    /// The job store's database.
    JobStore,
    /// The queue of generation jobs.
    Queue,
    /// Object storage and the master keys.
    Storage,
    /// Where entries come from.
    Source,
    /// The worker's timing and concurrency.
    Worker,
    /// Tokens, grants and the policy cache.
    Auth,
    /// Live events and WebSockets.
    Events,
    /// Webhook deliveries.
    Webhooks,
    /// Log lines.
    Logging,
}

impl Group {
    /// Every group, in the order of the documentation.
    pub const ALL: [Group; 10] = [
        Group::Process,
        Group::JobStore,
        Group::Queue,
        Group::Storage,
        Group::Source,
        Group::Worker,
        Group::Auth,
        Group::Events,
        Group::Webhooks,
        Group::Logging,
    ];

    /// The heading of its section in docs/configuration.md.
    pub fn title(self) -> &'static str {
        match self {
            Group::Process => "Process and roles",
            Group::JobStore => "Job store",
            Group::Queue => "Queue",
            Group::Storage => "Object storage and encryption",
            Group::Source => "Source of entries",
            Group::Worker => "Worker",
            Group::Auth => "Authentication and authorization",
            Group::Events => "Events and WebSocket",
            Group::Webhooks => "Webhooks",
            Group::Logging => "Logging",
        }
    }

    /// Its label in `ledger --help`.
    fn label(self) -> &'static str {
        match self {
            Group::Process => "process",
            Group::JobStore => "job store",
            Group::Queue => "queue",
            Group::Storage => "storage",
            Group::Source => "source",
            Group::Worker => "worker",
            Group::Auth => "auth",
            Group::Events => "live events",
            Group::Webhooks => "webhooks",
            Group::Logging => "logging",
        }
    }
}

const PREFIX: &str = "APP_ENV_";

const fn is_app_env(name: &str) -> bool {
    let (name, prefix) = (name.as_bytes(), PREFIX.as_bytes());
    if name.len() < prefix.len() {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if name[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn count_app_env() -> usize {
    let (mut i, mut n) = (0, 0);
    while i < TABLE.len() {
        if is_app_env(TABLE[i].name) {
            n += 1;
        }
        i += 1;
    }
    n
}

const APP_ENV_COUNT: usize = count_app_env();

const APP_ENV_NAMES: [&str; APP_ENV_COUNT] = {
    let mut names = [""; APP_ENV_COUNT];
    let (mut i, mut n) = (0, 0);
    while i < TABLE.len() {
        if is_app_env(TABLE[i].name) {
            names[n] = TABLE[i].name;
            n += 1;
        }
        i += 1;
    }
    names
};

/// Every `APP_ENV_*` variable the service reads, from the table. Any other `APP_ENV_*` name
/// in the environment is a configuration error: a misspelt setting would otherwise be
/// ignored without a word and its default used.
pub const SETTINGS: &[&str] = &APP_ENV_NAMES;

/// Whether `name` is an `APP_ENV_*` variable that is not a setting.
pub(super) fn is_unknown(name: &str) -> bool {
    name.starts_with(PREFIX) && !SETTINGS.contains(&name)
}

/// The setting nearest to a name that is not one (at most three edits away).
pub(super) fn nearest_setting(name: &str) -> Option<&'static str> {
    fn distance(a: &[u8], b: &[u8]) -> usize {
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, x) in a.iter().enumerate() {
            let mut diagonal = row[0];
            row[0] = i + 1;
            for (j, y) in b.iter().enumerate() {
                let above = row[j + 1];
                row[j + 1] = (above + 1)
                    .min(row[j] + 1)
                    .min(diagonal + usize::from(x != y));
                diagonal = above;
            }
        }
        row[b.len()]
    }
    SETTINGS
        .iter()
        .map(|s| (distance(name.as_bytes(), s.as_bytes()), *s))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, s)| s)
}

/// Width of the configuration text of `ledger --help`.
const HELP_WIDTH: usize = 92;
/// Where a group's names start on each line of it.
const HELP_INDENT: usize = 14;

/// The configuration part of `ledger serve --help` and `ledger migrate --help`: every
/// variable of the table, by group, with its note.
pub fn help() -> String {
    let mut text = String::from(
        "Configuration comes from APP_ENV_* environment variables, read once at start-up; a bad or
unknown one exits with status 2, listing every problem (values of secrets are never printed).
Each setting's default and meaning: docs/configuration.md. Unset, the service runs on its
embedded defaults (SQLite, local files, in-database queue, local dev key).
",
    );
    for group in Group::ALL {
        let mut line = format!("\n  {:<width$}", group.label(), width = HELP_INDENT - 2);
        let settings: Vec<&Setting> = TABLE.iter().filter(|s| s.group == group).collect();
        for (i, s) in settings.iter().enumerate() {
            let mut item = match s.help {
                "" => s.name.to_owned(),
                note => format!("{} {note}", s.name),
            };
            if i + 1 < settings.len() {
                item.push(',');
            }
            if line.trim_end().len() > HELP_INDENT && line.len() + item.len() > HELP_WIDTH {
                text.push_str(line.trim_end());
                line = format!("\n{:HELP_INDENT$}", "");
            }
            line.push_str(&item);
            line.push(' ');
        }
        text.push_str(line.trim_end());
    }
    text.push_str(
        "
  TLS         postgres://…?sslmode=verify-full&sslrootcert=ca.pem, rediss://… with
              APP_ENV_REDIS_TLS_CA_FILE for a private CA (system roots when unset)",
    );
    text
}

const TABLE_HEAD: &str = "| variable | default | meaning |\n|---|---|---|\n";

fn markdown_row(s: &Setting, meaning: &str) -> String {
    format!(
        "| `{}` | {} | {} |\n",
        s.name,
        s.default.documented(),
        meaning
    )
}

/// The README's table: every setting with its one-line meaning.
pub fn readme_table() -> String {
    let rows: String = TABLE.iter().map(|s| markdown_row(s, s.summary)).collect();
    format!("{TABLE_HEAD}{rows}")
}

/// docs/configuration.md's table of one group: its settings with their full meaning.
pub fn docs_table(group: Group) -> String {
    let rows: String = TABLE
        .iter()
        .filter(|s| s.group == group)
        .map(|s| markdown_row(s, s.doc))
        .collect();
    format!("{TABLE_HEAD}{rows}")
}
