//! A bundle's `linux.seccomp` profile, compiled for this machine into the classic BPF programs the
//! container's init installs last before it executes the workload.
//!
//! OCI gives each `syscalls` entry its own action and the rest `defaultAction`; seccompiler compiles
//! a filter with one action for what matches and one for what does not. The profile becomes one
//! filter per distinct entry action (its entries' calls get that action, everything else is allowed)
//! and, unless the default is to allow, one more that allows every listed call and gives the rest the
//! default. The kernel runs every installed filter and takes the strictest answer, and allowing is
//! the weakest, so a listed call gets its entry's action and an unlisted one the default.
//!
//! Names are resolved with seccompiler's table for this architecture: a name it does not know is an
//! error naming the entry, never a call silently left out of the profile.

use std::collections::BTreeMap;

use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall};
use seccompiler::{BpfProgram, TargetArch};
use serde_json::{Value, json};

/// The architecture the filters are compiled for: this build's.
#[cfg(target_arch = "x86_64")]
const ARCH: (TargetArch, Arch) = (TargetArch::x86_64, Arch::ScmpArchX86_64);
#[cfg(target_arch = "aarch64")]
const ARCH: (TargetArch, Arch) = (TargetArch::aarch64, Arch::ScmpArchAarch64);

/// `EPERM`, the errno of `SCMP_ACT_ERRNO` without `errnoRet`, as runc and crun answer.
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

/// A part of the profile that cannot be compiled: the field (under `linux.seccomp`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompError {
    /// The field, relative to `linux.seccomp` (`syscalls[3].names[1]`).
    pub field: String,
    /// Why.
    pub reason: String,
}

fn error(field: impl Into<String>, reason: impl Into<String>) -> SeccompError {
    SeccompError { field: field.into(), reason: reason.into() }
}

/// seccompiler's JSON form of an action, or why OCI's cannot be honoured.
fn action(field: &str, action: LinuxSeccompAction, errno: Option<u32>) -> Result<Value, SeccompError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => json!("allow"),
        LinuxSeccompAction::ScmpActErrno => json!({"errno": errno.unwrap_or(DEFAULT_ERRNO)}),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => json!("kill_thread"),
        LinuxSeccompAction::ScmpActKillProcess => json!("kill_process"),
        LinuxSeccompAction::ScmpActTrap => json!("trap"),
        LinuxSeccompAction::ScmpActLog => json!("log"),
        LinuxSeccompAction::ScmpActTrace => json!({"trace": errno.unwrap_or(0)}),
        LinuxSeccompAction::ScmpActNotify => {
            return Err(error(field, "SCMP_ACT_NOTIFY is not supported (it needs a listener)"));
        }
    })
}

/// seccompiler's JSON form of one entry's argument conditions (all must hold).
fn conditions(index: usize, entry: &LinuxSyscall) -> Result<Vec<Value>, SeccompError> {
    let Some(args) = entry.args() else { return Ok(Vec::new()) };
    args.iter()
        .enumerate()
        .map(|(n, arg)| {
            let field = format!("syscalls[{index}].args[{n}]");
            if arg.index() > 5 {
                return Err(error(field, format!("argument index {} past the sixth", arg.index())));
            }
            let (op, value) = match arg.op() {
                LinuxSeccompOperator::ScmpCmpNe => (json!("ne"), arg.value()),
                LinuxSeccompOperator::ScmpCmpLt => (json!("lt"), arg.value()),
                LinuxSeccompOperator::ScmpCmpLe => (json!("le"), arg.value()),
                LinuxSeccompOperator::ScmpCmpEq => (json!("eq"), arg.value()),
                LinuxSeccompOperator::ScmpCmpGe => (json!("ge"), arg.value()),
                LinuxSeccompOperator::ScmpCmpGt => (json!("gt"), arg.value()),
                // OCI: (argument & value) == valueTwo.
                LinuxSeccompOperator::ScmpCmpMaskedEq => {
                    (json!({"masked_eq": arg.value()}), arg.value_two().unwrap_or_default())
                }
            };
            Ok(json!({"index": arg.index(), "type": "qword", "op": op, "val": value}))
        })
        .collect()
}

/// One filter's rules by call name: `None` where one entry matches the call whatever its
/// arguments (which then covers any conditional entry for it), else each entry's conditions.
type Rules = BTreeMap<String, Option<Vec<Vec<Value>>>>;

fn add_rule(rules: &mut Rules, name: &str, conds: &[Value]) {
    let slot = rules.entry(name.to_owned()).or_insert_with(|| Some(Vec::new()));
    match slot {
        Some(list) if conds.is_empty() => {
            list.clear();
            *slot = None;
        }
        Some(list) => list.push(conds.to_vec()),
        None => {}
    }
}

fn filter_json(mismatch: Value, matched: Value, rules: &Rules) -> Value {
    let rules: Vec<Value> = rules
        .iter()
        .flat_map(|(name, conds)| match conds {
            None => vec![json!({"syscall": name})],
            Some(list) => list.iter().map(|args| json!({"syscall": name, "args": args})).collect(),
        })
        .collect();
    json!({"filter": {"mismatch_action": mismatch, "match_action": matched, "filter": rules}})
}

/// Compiles `profile` for this machine: the programs to install, in order (none if it allows
/// everything).
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>, SeccompError> {
    if profile.flags().as_ref().is_some_and(|flags| !flags.is_empty()) {
        return Err(error("flags", "seccomp filter flags are not supported"));
    }
    if profile.listener_path().is_some() || profile.listener_metadata().is_some() {
        return Err(error("listenerPath", "a seccomp notify listener is not supported"));
    }
    if let Some(arches) = profile.architectures() {
        if !arches.is_empty() && !arches.contains(&ARCH.1) {
            return Err(error("architectures", format!("does not list this machine's {:?}", ARCH.1)));
        }
    }
    let default = action("defaultAction", profile.default_action(), profile.default_errno_ret())?;
    let allow = json!("allow");
    // Per distinct action (its JSON text as the key), the rules of the entries that have it.
    let mut by_action: BTreeMap<String, (Value, Rules)> = BTreeMap::new();
    let mut listed = Rules::new();
    let mut first_entry: BTreeMap<String, String> = BTreeMap::new();
    for (index, entry) in profile.syscalls().iter().flatten().enumerate() {
        let field = format!("syscalls[{index}]");
        let errno = entry.errno_ret().or(profile.default_errno_ret());
        let entry_action = action(&format!("{field}.action"), entry.action(), errno)?;
        let conds = conditions(index, entry)?;
        if entry.names().is_empty() {
            return Err(error(format!("{field}.names"), "must list at least one system call"));
        }
        for (n, name) in entry.names().iter().enumerate() {
            first_entry.entry(name.clone()).or_insert_with(|| format!("{field}.names[{n}]"));
            add_rule(&mut listed, name, &conds);
            if entry_action != allow {
                let slot =
                    by_action.entry(entry_action.to_string()).or_insert_with(|| (entry_action.clone(), Rules::new()));
                add_rule(&mut slot.1, name, &conds);
            }
        }
    }
    let mut filters: Vec<Value> =
        by_action.into_values().map(|(matched, rules)| filter_json(allow.clone(), matched, &rules)).collect();
    if default != allow {
        filters.push(filter_json(default, allow.clone(), &listed));
    }
    filters
        .iter()
        .map(|filter| {
            let text = filter.to_string();
            let mut map = seccompiler::compile_from_json(text.as_bytes(), ARCH.0).map_err(|e| {
                // seccompiler's frontend error type is private; its message names the call.
                let message = e.to_string();
                match unknown_name(&message).and_then(|name| first_entry.get(name).map(|field| (name, field))) {
                    Some((name, field)) => {
                        error(field.clone(), format!("unknown system call {name:?} on this architecture"))
                    }
                    None => error("syscalls", message),
                }
            })?;
            map.remove("filter").ok_or_else(|| error("syscalls", "seccompiler returned no program"))
        })
        .collect()
}

/// The call named by seccompiler's "Invalid syscall name: NAME for given arch" message.
fn unknown_name(message: &str) -> Option<&str> {
    let rest = message.split_once("Invalid syscall name: ")?.1;
    Some(rest.split_once(" for given arch").map_or(rest, |(name, _)| name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(value: Value) -> LinuxSeccomp {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn an_allow_list_is_one_filter_and_a_deny_list_one_filter() {
        let allow_list = profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read", "write", "exit_group", "execve"], "action": "SCMP_ACT_ALLOW"}]
        }));
        assert_eq!(compile(&allow_list).unwrap().len(), 1);
        let deny_list = profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        }));
        assert_eq!(compile(&deny_list).unwrap().len(), 1);
        assert!(compile(&profile(json!({"defaultAction": "SCMP_ACT_ALLOW"}))).unwrap().is_empty());
    }

    #[test]
    fn mixed_actions_are_one_filter_each_plus_the_default() {
        let mixed = profile(json!({
            "defaultAction": "SCMP_ACT_KILL_PROCESS",
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 65535, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}
            ]
        }));
        // EPERM and EACCES are two actions, plus the default's filter.
        assert_eq!(compile(&mixed).unwrap().len(), 3);
    }

    #[test]
    fn unknown_calls_and_unsupported_parts_name_their_field() {
        let unknown = profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["rmdir", "teleport"], "action": "SCMP_ACT_ERRNO"}
            ]
        }));
        let err = compile(&unknown).unwrap_err();
        assert_eq!(err.field, "syscalls[1].names[1]");
        assert!(err.reason.contains("\"teleport\""), "{}", err.reason);
        let notify = profile(json!({"defaultAction": "SCMP_ACT_NOTIFY"}));
        assert_eq!(compile(&notify).unwrap_err().field, "defaultAction");
        let flags = profile(json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]}));
        assert_eq!(compile(&flags).unwrap_err().field, "flags");
        let arm = profile(json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_ARM"]}));
        assert_eq!(compile(&arm).unwrap_err().field, "architectures");
    }

    #[test]
    fn an_unconditional_entry_covers_a_conditional_one_for_the_same_call() {
        let mut rules = Rules::new();
        add_rule(&mut rules, "ioctl", &[json!({"index": 1})]);
        add_rule(&mut rules, "ioctl", &[]);
        add_rule(&mut rules, "ioctl", &[json!({"index": 2})]);
        assert_eq!(rules["ioctl"], None);
    }
}
