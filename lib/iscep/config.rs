//! The commands iscepd may run, from a TOML file (iscepd.toml(5)):
//!
//! ```toml
//! [commands.test_task]
//! exec = ["/usr/local/libexec/test-task", "--fixed"]   # absolute path, fixed arguments
//! args = { message = "str", numb = "int" }              # what DISCOVER shows; checked
//! output = "json"          # stdout is one JSON object, the response; or "text"
//! timeout = 10             # seconds
//! max_output = 65536       # bytes of stdout + stderr
//! user = "nobody"          # run as this user (iscepd must be root)
//! allow = ["alice"]        # token owners who may run it; "*" = anyone authorized
//! log_args = false         # log the arguments with each run
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::Ordered;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgType {
    Str,
    Int,
    Float,
    Bool,
    Dict,
    List,
    /// Any JSON value; DISCOVER shows `_empty`, as the original does for an unannotated
    /// parameter.
    Any,
}

impl ArgType {
    fn parse(s: &str) -> Option<ArgType> {
        Some(match s {
            "str" => ArgType::Str,
            "int" => ArgType::Int,
            "float" => ArgType::Float,
            "bool" => ArgType::Bool,
            "dict" => ArgType::Dict,
            "list" => ArgType::List,
            "any" | "_empty" => ArgType::Any,
            _ => return None,
        })
    }

    /// The Python type name DISCOVER reports.
    pub fn name(self) -> &'static str {
        match self {
            ArgType::Str => "str",
            ArgType::Int => "int",
            ArgType::Float => "float",
            ArgType::Bool => "bool",
            ArgType::Dict => "dict",
            ArgType::List => "list",
            ArgType::Any => "_empty",
        }
    }

    pub fn accepts(self, v: &Value) -> bool {
        match self {
            ArgType::Str => v.is_string(),
            ArgType::Int => v.is_i64() || v.is_u64(),
            ArgType::Float => v.is_number(),
            ArgType::Bool => v.is_boolean(),
            ArgType::Dict => v.is_object(),
            ArgType::List => v.is_array(),
            ArgType::Any => true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Text,
}

#[derive(Clone, Debug)]
pub struct Command {
    pub name: String,
    pub exec: Vec<String>,
    pub args: Vec<(String, ArgType)>,
    pub output: Output,
    pub timeout: Duration,
    pub max_output: usize,
    pub user: Option<(String, u32, u32)>,
    /// Owners allowed; `*` = any caller the server accepts (with --no-auth: anyone).
    pub allow: Vec<String>,
    pub log_args: bool,
}

impl Command {
    pub fn allows(&self, owner: Option<&str>) -> bool {
        self.allow
            .iter()
            .any(|a| a == "*" || Some(a.as_str()) == owner)
    }

    /// Checks `args` (missing or null = none) against the declared arguments: every one
    /// present with its type, nothing else. Returns the object the command gets on stdin.
    pub fn check_args(&self, args: Option<&Value>) -> Result<Value, String> {
        let empty = serde_json::Map::new();
        let given = match args {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(m)) => m,
            Some(_) => return Err("args is not an object".into()),
        };
        for k in given.keys() {
            if !self.args.iter().any(|(n, _)| n == k) {
                return Err(format!("unexpected argument {k:?}"));
            }
        }
        for (n, t) in &self.args {
            match given.get(n) {
                None => return Err(format!("missing argument {n:?}")),
                Some(v) if !t.accepts(v) => {
                    return Err(format!("argument {n:?} is not of type {}", t.name()))
                }
                Some(_) => {}
            }
        }
        Ok(Value::Object(given.clone()))
    }
}

#[derive(Clone, Debug, Default)]
pub struct Config {
    pub commands: Vec<Command>,
}

impl Config {
    pub fn get(&self, name: &str) -> Option<&Command> {
        self.commands.iter().find(|c| c.name == name)
    }
}

const DEFAULT_TIMEOUT: f64 = 30.0;
const DEFAULT_MAX_OUTPUT: usize = 64 * 1024;

/// The file is also iscepd's configuration file (crate::config): the top-level keys other
/// than `commands` are iscepd's options, checked there; here they are skipped, and only a
/// table other than `commands` (a misspelt `[command.x]`) is refused.
#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    commands: Ordered<RawCommand>,
    #[serde(flatten)]
    options: std::collections::BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    exec: Vec<String>,
    #[serde(default)]
    args: Ordered<String>,
    #[serde(default)]
    output: Option<String>,
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    max_output: Option<usize>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    allow: Option<Vec<String>>,
    #[serde(default)]
    log_args: bool,
}

/// Parses a configuration; `resolve_user` maps a user name to (uid, gid).
pub fn parse(
    text: &str,
    resolve_user: &dyn Fn(&str) -> Option<(u32, u32)>,
) -> Result<Config, String> {
    let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string().replace('\n', " "))?;
    if let Some((k, _)) = raw.options.iter().find(|(_, v)| v.is_table()) {
        return Err(format!(
            "unknown table [{k}] (commands are [commands.NAME])"
        ));
    }
    let mut commands = Vec::new();
    for (name, c) in raw.commands.0 {
        let bad = |why: String| format!("command {name:?}: {why}");
        if name.is_empty() {
            return Err("a command has an empty name".into());
        }
        match c.exec.first() {
            Some(p) if p.starts_with('/') => {}
            _ => return Err(bad("exec must start with an absolute path".into())),
        }
        let mut args = Vec::new();
        for (a, t) in c.args.0 {
            let ty = ArgType::parse(&t).ok_or_else(|| {
                bad(format!(
                    "argument {a:?}: unknown type {t:?} (str, int, float, bool, dict, list, any)"
                ))
            })?;
            args.push((a, ty));
        }
        let output = match c.output.as_deref() {
            None | Some("json") => Output::Json,
            Some("text") => Output::Text,
            Some(o) => return Err(bad(format!("output {o:?}: must be \"json\" or \"text\""))),
        };
        let secs = c.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if !(secs > 0.0 && secs <= 86400.0) {
            return Err(bad("timeout must be between 0 and 86400 seconds".into()));
        }
        let user = match c.user {
            None => None,
            Some(u) => {
                let (uid, gid) =
                    resolve_user(&u).ok_or_else(|| bad(format!("no such user {u:?}")))?;
                Some((u, uid, gid))
            }
        };
        commands.push(Command {
            exec: c.exec,
            args,
            output,
            timeout: Duration::from_secs_f64(secs),
            max_output: c.max_output.unwrap_or(DEFAULT_MAX_OUTPUT),
            user,
            allow: c.allow.unwrap_or_else(|| vec!["*".into()]),
            log_args: c.log_args,
            name,
        });
    }
    Ok(Config { commands })
}

/// The system's user database (NSS).
fn system_user(name: &str) -> Option<(u32, u32)> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
}

/// Reads `path`; a file that does not exist is an empty configuration (no command), as for
/// every daemon's configuration file (crate::config); iscepd refuses a named one at start.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => return Err(LoadError::Read(path.into(), e)),
    };
    parse(&text, &system_user).map_err(|e| LoadError::Parse(path.into(), e))
}

/// Why [`load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read configuration {}: {1}", .0.display())]
    Read(std::path::PathBuf, std::io::Error),
    #[error("configuration {}: {1}", .0.display())]
    Parse(std::path::PathBuf, String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLE: &str = r#"
[commands.test_task]
exec = ["/bin/test-task", "-x"]
args = { numb = "int", message = "str" }
allow = ["user"]
log_args = true

[commands.boom]
exec = ["/bin/false"]
output = "text"
timeout = 1.5
user = "nobody"
"#;

    #[test]
    fn parses_in_file_order() {
        let c = parse(EXAMPLE, &|u| (u == "nobody").then_some((65534, 65534))).unwrap();
        let names: Vec<_> = c.commands.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["test_task", "boom"]);
        let t = c.get("test_task").unwrap();
        assert_eq!(
            t.args,
            [
                ("numb".to_string(), ArgType::Int),
                ("message".to_string(), ArgType::Str)
            ]
        );
        assert!(t.allows(Some("user")) && !t.allows(Some("other")) && !t.allows(None));
        let b = c.get("boom").unwrap();
        assert!(b.allows(None));
        assert_eq!(b.output, Output::Text);
        assert_eq!(b.timeout, Duration::from_millis(1500));
        assert_eq!(b.user, Some(("nobody".into(), 65534, 65534)));
    }

    #[test]
    fn checks_arguments() {
        let c = parse(EXAMPLE, &|_| Some((0, 0))).unwrap();
        let t = c.get("test_task").unwrap();
        assert!(t
            .check_args(Some(&json!({"message": "m", "numb": 1})))
            .is_ok());
        assert!(t.check_args(Some(&json!({"message": "m"}))).is_err());
        assert!(t
            .check_args(Some(&json!({"message": "m", "numb": "1"})))
            .is_err());
        assert!(t
            .check_args(Some(&json!({"message": "m", "numb": 1, "x": 2})))
            .is_err());
        assert!(t.check_args(None).is_err());
        let b = c.get("boom").unwrap();
        assert_eq!(b.check_args(None).unwrap(), json!({}));
        assert!(b.check_args(Some(&json!([1]))).is_err());
    }

    #[test]
    fn refuses_bad_files() {
        let r = |t: &str| parse(t, &|_| None);
        assert!(r("[commands.a]\nexec = [\"rel\"]").is_err());
        assert!(r("[commands.a]\nexec = []").is_err());
        assert!(r("[commands.a]\nexec = [\"/x\"]\nargs = { a = \"tuple\" }").is_err());
        assert!(r("[commands.a]\nexec = [\"/x\"]\nfoo = 1").is_err());
        assert!(r("[commands.a]\nexec = [\"/x\"]\nuser = \"nosuch\"").is_err());
        assert!(r("[commands.a]\nexec = [\"/x\"]\noutput = \"xml\"").is_err());
        assert!(r("[commands.a]\nexec = [\"/x\"]\ntimeout = 0").is_err());
        assert!(r("").unwrap().commands.is_empty());
        assert!(r("[command.a]\nexec = [\"/x\"]").is_err());
        // iscepd's options beside the commands.
        let c = r("idle-exit = 300\nlisten = [\"127.0.0.1:1\"]\n[commands.a]\nexec = [\"/x\"]")
            .unwrap();
        assert_eq!(c.commands.len(), 1);
    }
}
