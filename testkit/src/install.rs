//! Where PostgreSQL's binaries are and which user runs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::FixtureError;

/// Environment variable naming a directory that holds `initdb`, `postgres`
/// and `psql`, overriding the search under `/usr/lib/postgresql`.
pub const BIN_DIR_ENV: &str = "PAPERBOT_PG_BIN";

/// Where Debian installs the server binaries, one directory per major version.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// A PostgreSQL installation: its binaries and the OS user that runs them.
#[derive(Clone, Debug)]
pub struct Installation {
    /// Directory of `initdb`, `postgres` and `psql`.
    pub bin: PathBuf,
    /// `(uid, gid)` to switch to before running the server: `Some` when this
    /// process is root (initdb and postgres refuse to run as root), the
    /// `postgres` system user; `None` otherwise.
    pub run_as: Option<(u32, u32)>,
}

impl Installation {
    /// Find the binaries (`$PAPERBOT_PG_BIN`, else the newest
    /// `/usr/lib/postgresql/<major>/bin`) and, when running as root, the
    /// `postgres` user.
    ///
    /// # Errors
    /// [`FixtureError::NotInstalled`] naming the `postgresql` package when no
    /// binaries are found; [`FixtureError::NoUser`] when running as root
    /// without a `postgres` user.
    pub fn find() -> Result<Self, FixtureError> {
        let bin = match std::env::var_os(BIN_DIR_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => newest_debian_bin().ok_or_else(|| FixtureError::NotInstalled {
                looked_in: format!("{DEBIAN_ROOT}/*/bin"),
            })?,
        };
        for tool in ["initdb", "postgres", "psql"] {
            if !bin.join(tool).is_file() {
                return Err(FixtureError::NotInstalled {
                    looked_in: format!("{} (no {tool})", bin.display()),
                });
            }
        }
        let run_as = if current_uid()? == 0 {
            Some(postgres_user()?)
        } else {
            None
        };
        Ok(Self { bin, run_as })
    }

    /// A command running the tool `name` of this installation as the server's
    /// user (through `setpriv` when this process is root).
    pub fn command(&self, name: &str) -> Command {
        let tool = self.bin.join(name);
        match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(tool);
                c
            }
            None => Command::new(tool),
        }
    }

    /// Path of one of the binaries (clients such as `psql` run as any user).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Give `path` to the server's user (no-op when not root).
    pub(crate) fn hand_over(&self, path: &Path) -> Result<(), FixtureError> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| {
                FixtureError::Io {
                    what: format!("chown {} to the postgres user", path.display()),
                    source,
                }
            })?;
        }
        Ok(())
    }
}

/// `/usr/lib/postgresql/<highest major>/bin`, if it holds a server.
fn newest_debian_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_ROOT)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn current_uid() -> Result<u32, FixtureError> {
    id(&["-u"])
}

/// uid and gid of the `postgres` user.
fn postgres_user() -> Result<(u32, u32), FixtureError> {
    let uid = id(&["-u", "postgres"]).map_err(|_| FixtureError::NoUser)?;
    let gid = id(&["-g", "postgres"]).map_err(|_| FixtureError::NoUser)?;
    Ok((uid, gid))
}

/// Run `id ARGS` and parse the number it prints.
fn id(args: &[&str]) -> Result<u32, FixtureError> {
    let out = Command::new("id")
        .args(args)
        .output()
        .map_err(|source| FixtureError::Io {
            what: "run `id`".into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), text.trim().parse()) {
        (true, Ok(n)) => Ok(n),
        _ => Err(FixtureError::Command {
            what: format!("id {}", args.join(" ")),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
    }
}
