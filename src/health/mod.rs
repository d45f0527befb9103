//! What `meshbpf health` checks: the machine and kernel ([`system`]),
//! meshbpf's own pinned state ([`attachments`]) and every hook, probed by
//! really loading and attaching ([`hooks`]).

use serde::Serialize;

pub mod attachments;
pub mod hooks;
pub mod host;
pub mod loaded;
pub mod system;

/// A table this full is about to evict, or to refuse, entries.
const NEAR_FULL_PERCENT: f64 = 90.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One finding. `hint` is null when there is nothing to do.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub hint: Option<String>,
    /// The attachment a state check is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
}

impl Check {
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            hint: None,
            interface: None,
            program: None,
        }
    }

    pub fn warn(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Check {
            status: Status::Warn,
            hint: Some(hint.into()),
            ..Check::ok(name, detail)
        }
    }

    pub fn fail(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Check {
            status: Status::Fail,
            ..Check::warn(name, detail, hint)
        }
    }

    pub fn about(mut self, interface: &str, program: &str) -> Self {
        self.interface = Some(interface.to_string());
        self.program = Some(program.to_string());
        self
    }

    /// "bpffs", or "attachment eth0/xdp_counter" for a state check.
    pub fn title(&self) -> String {
        match (&self.interface, &self.program) {
            (Some(i), Some(p)) => format!("{} {i}/{p}", self.name),
            _ => self.name.to_string(),
        }
    }
}

/// What `--fix` did, or tried to do.
#[derive(Debug, Clone, Serialize)]
pub struct Fix {
    pub action: &'static str,
    pub done: bool,
    pub detail: String,
}

impl Fix {
    pub fn of(action: &'static str, result: anyhow::Result<String>) -> Self {
        match result {
            Ok(detail) => Fix {
                action,
                done: true,
                detail,
            },
            Err(err) => Fix {
                action,
                done: false,
                detail: format!("{err:#}"),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    Ok,
    /// Nothing failed, but something warns or a hook is unavailable.
    Degraded,
    Fail,
}

impl Overall {
    pub fn of(checks: &[Check], all_hooks_available: bool) -> Self {
        match checks.iter().map(|c| c.status).max() {
            Some(Status::Fail) => Overall::Fail,
            Some(Status::Warn) => Overall::Degraded,
            _ if !all_hooks_available => Overall::Degraded,
            _ => Overall::Ok,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Overall::Ok => "ok",
            Overall::Degraded => "degraded",
            Overall::Fail => "fail",
        }
    }
}

pub fn fullness(
    name: &'static str,
    what: &str,
    used: u64,
    capacity: u64,
    consequence: &str,
    hint: &str,
) -> Check {
    let percent = used as f64 * 100.0 / capacity.max(1) as f64;
    let detail = format!("{used} of {capacity} {what} ({percent:.0}%)");
    if percent >= NEAR_FULL_PERCENT {
        Check::warn(
            name,
            format!("{detail}: near capacity, {consequence}"),
            hint,
        )
    } else {
        Check::ok(name, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_warn_from_ninety_percent() {
        let check = |used| fullness("flow_table", "flows", used, 100, "evicting", "grow it");
        assert_eq!(check(89).status, Status::Ok);
        assert_eq!(check(89).detail, "89 of 100 flows (89%)");
        let full = check(90);
        assert_eq!(full.status, Status::Warn);
        assert_eq!(
            full.detail,
            "90 of 100 flows (90%): near capacity, evicting"
        );
        assert_eq!(full.hint.as_deref(), Some("grow it"));
    }

    #[test]
    fn the_worst_check_decides_and_missing_hooks_degrade() {
        let ok = Check::ok("btf", "fine");
        let warn = Check::warn("tracefs", "not mounted", "mount it");
        let fail = Check::fail("bpffs", "not mounted", "mount it");
        assert_eq!(Overall::of(std::slice::from_ref(&ok), true), Overall::Ok);
        assert_eq!(
            Overall::of(std::slice::from_ref(&ok), false),
            Overall::Degraded
        );
        assert_eq!(
            Overall::of(&[ok.clone(), warn.clone()], true),
            Overall::Degraded
        );
        assert_eq!(Overall::of(&[warn, fail, ok], true), Overall::Fail);
    }

    #[test]
    fn checks_serialize_with_a_null_hint_and_name_their_attachment() {
        let plain = serde_json::to_value(Check::ok("jit", "enabled")).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({"name": "jit", "status": "ok", "detail": "enabled", "hint": null})
        );
        let state = Check::fail("attachment", "orphaned", "--fix").about("eth0", "xdp_counter");
        assert_eq!(state.title(), "attachment eth0/xdp_counter");
        let v = serde_json::to_value(&state).unwrap();
        assert_eq!(v["interface"], "eth0");
        assert_eq!(v["program"], "xdp_counter");
        assert_eq!(v["status"], "fail");
    }
}
