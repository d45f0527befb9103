//! `--set NAME=VALUE`: a global variable of an opened object (in .rodata,
//! .data or .bss) given its value before load. The variable is found in the
//! object's BTF data sections; VALUE is read by the variable's BTF type.

use std::collections::BTreeMap;

use anyhow::Result;
use libbpf_rs::btf::types::{DataSec, Enum, Enum64, Int, IntEncoding, Var};
use libbpf_rs::btf::{BtfKind, BtfType, ReferencesType};
use libbpf_rs::OpenObject;

use crate::error::Failure;
use crate::kernel::btf;

/// One `--set` from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub name: String,
    pub value: String,
}

/// clap's parser for `NAME=VALUE`.
pub fn parse_assignment(text: &str) -> Result<Assignment, String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() && !value.is_empty() => Ok(Assignment {
            name: name.to_string(),
            value: value.to_string(),
        }),
        _ => Err(format!("'{text}' is not NAME=VALUE (e.g. --set verdict=1)")),
    }
}

/// How a variable's bytes are read.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Int {
        signed: bool,
        bits: u32,
    },
    Bool,
    Enum {
        name: String,
        signed: bool,
        members: Vec<(String, i128)>,
    },
    /// Anything else (structs, arrays, pointers, floats): not settable.
    Other(String),
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::Int { signed: true, bits } => format!("s{bits}"),
            Kind::Int {
                signed: false,
                bits,
            } => format!("u{bits}"),
            Kind::Bool => "bool".into(),
            Kind::Enum { name, .. } => format!("enum {name}"),
            Kind::Other(what) => what.clone(),
        }
    }
}

/// A global variable of the object.
#[derive(Debug, Clone)]
struct Global {
    name: String,
    section: String,
    /// The libbpf map that backs the section.
    map: String,
    offset: usize,
    size: usize,
    kind: Kind,
}

/// Sections whose contents libbpf computes itself.
const RESERVED_SECTIONS: [&str; 2] = [".kconfig", ".ksyms"];

fn name_of(t: &BtfType<'_>) -> String {
    t.name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn kind_of(t: BtfType<'_>) -> Kind {
    let t = t.skip_mods_and_typedefs();
    match t.kind() {
        BtfKind::Int => {
            let int = Int::try_from(t).expect("kind checked");
            match int.encoding {
                IntEncoding::Bool => Kind::Bool,
                IntEncoding::Signed => Kind::Int {
                    signed: true,
                    bits: int.bits.into(),
                },
                IntEncoding::None | IntEncoding::Char => Kind::Int {
                    signed: false,
                    bits: int.bits.into(),
                },
            }
        }
        BtfKind::Enum => {
            let e = Enum::try_from(t).expect("kind checked");
            let members = (0..e.len())
                .filter_map(|i| e.get(i))
                .map(|m| (os_name(m.name), i128::from(m.value)))
                .collect();
            Kind::Enum {
                name: name_of(&t),
                signed: e.is_signed(),
                members,
            }
        }
        BtfKind::Enum64 => {
            let e = Enum64::try_from(t).expect("kind checked");
            let members = (0..e.len())
                .filter_map(|i| e.get(i))
                .map(|m| (os_name(m.name), m.value))
                .collect();
            Kind::Enum {
                name: name_of(&t),
                signed: e.is_signed(),
                members,
            }
        }
        other => Kind::Other(format!("{other:?}").to_lowercase()),
    }
}

fn os_name(name: Option<&std::ffi::OsStr>) -> String {
    name.map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every global in the object's data sections, from its BTF.
fn globals(open: &OpenObject) -> Result<Vec<Global>> {
    let Some(btf) = btf::of_object(open)? else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for map in open.maps() {
        if map.initial_value().is_none() {
            continue;
        }
        let Some(sec) = btf.type_by_id::<DataSec<'_>>(btf::value_type_id(&map).into()) else {
            continue;
        };
        let section = name_of(&sec);
        if RESERVED_SECTIONS.contains(&section.as_str()) {
            continue;
        }
        for info in (0..sec.len()).filter_map(|i| sec.get(i)) {
            let Some(var) = btf.type_by_id::<Var<'_>>(info.ty) else {
                continue;
            };
            found.push(Global {
                name: name_of(&var),
                section: section.clone(),
                map: map.name().to_string_lossy().into_owned(),
                offset: info.offset as usize,
                size: info.size,
                kind: kind_of(var.referenced_type()),
            });
        }
    }
    Ok(found)
}

/// Sets each assignment in the object's data maps, before load. Returns the
/// values set, by variable, for the record.
pub fn apply(
    open: &mut OpenObject,
    assignments: &[Assignment],
) -> Result<BTreeMap<String, serde_json::Value>> {
    let mut set = BTreeMap::new();
    if assignments.is_empty() {
        return Ok(set);
    }
    let globals = globals(open)?;
    let mut writes = Vec::new();
    for a in assignments {
        let global = globals
            .iter()
            .find(|g| g.name == a.name)
            .ok_or_else(|| unknown(a, &globals))?;
        let (bytes, value) = encode(&global.kind, global.size, &a.value).map_err(|why| {
            Failure::new(format!("--set {}={}: {why}", a.name, a.value)).hint(format!(
                "{} is {} in {}",
                global.name,
                global.kind.describe(),
                global.section
            ))
        })?;
        writes.push((global.map.clone(), global.offset, bytes));
        set.insert(a.name.clone(), value);
    }
    for mut map in open.maps_mut() {
        let name = map.name().to_string_lossy().into_owned();
        for (_, offset, bytes) in writes.iter().filter(|(m, _, _)| *m == name) {
            let data = map
                .initial_value_mut()
                .ok_or_else(|| anyhow::anyhow!("map {name} lost its initial value"))?;
            data[*offset..*offset + bytes.len()].copy_from_slice(bytes);
        }
    }
    Ok(set)
}

fn unknown(a: &Assignment, globals: &[Global]) -> Failure {
    let message = format!(
        "--set {}: the object has no global variable '{}'",
        a.name, a.name
    );
    if globals.is_empty() {
        return Failure::new(message).hint(
            "the object has no global variables; declare one in C, e.g. `const volatile __u32 verdict = 2;`",
        );
    }
    let known = globals
        .iter()
        .map(|g| format!("{} ({}, {})", g.name, g.kind.describe(), g.section))
        .collect::<Vec<_>>()
        .join(", ");
    Failure::new(message).hint(format!("its global variables: {known}"))
}

/// VALUE as the variable's bytes in host order, and as JSON for the record;
/// Err says why it does not fit.
fn encode(kind: &Kind, size: usize, text: &str) -> Result<(Vec<u8>, serde_json::Value), String> {
    let (number, value) = match kind {
        Kind::Bool => {
            let b = match text {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(format!("'{text}' is not a bool: use true, false, 1 or 0")),
            };
            (i128::from(b), serde_json::Value::Bool(b))
        }
        Kind::Int { signed, bits } => {
            let n = parse_integer(text)
                .ok_or_else(|| format!("'{text}' is not an integer (decimal, or hex with 0x)"))?;
            check_range(n, *signed, *bits)?;
            (n, integer_json(n))
        }
        Kind::Enum {
            name,
            signed,
            members,
        } => match members.iter().find(|(m, _)| m == text) {
            Some((_, n)) => (*n, serde_json::Value::String(text.to_string())),
            None => {
                let n = parse_integer(text).ok_or_else(|| {
                    let names: Vec<&str> = members.iter().map(|(m, _)| m.as_str()).collect();
                    format!(
                        "'{text}' is neither an enumerator of enum {name} ({}) nor an integer",
                        names.join(", ")
                    )
                })?;
                check_range(n, *signed, size as u32 * 8)?;
                (n, integer_json(n))
            }
        },
        Kind::Other(what) => {
            return Err(format!(
                "the variable is a {what}; --set takes integers, bools and enums"
            ))
        }
    };
    Ok((native_bytes(number, size), value))
}

fn integer_json(n: i128) -> serde_json::Value {
    i64::try_from(n)
        .map(serde_json::Value::from)
        .or_else(|_| u64::try_from(n).map(serde_json::Value::from))
        .unwrap_or_else(|_| serde_json::Value::String(n.to_string()))
}

/// Decimal or 0x-hex, with an optional minus sign.
fn parse_integer(text: &str) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let magnitude = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => i128::from_str_radix(hex, 16).ok()?,
        None if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse().ok()?
        }
        None => return None,
    };
    Some(if negative { -magnitude } else { magnitude })
}

fn check_range(n: i128, signed: bool, bits: u32) -> Result<(), String> {
    let bits = bits.min(127);
    let (min, max) = if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    if n < min || n > max {
        let kind = if signed { "a signed" } else { "an unsigned" };
        return Err(format!(
            "{n} does not fit {kind} {bits}-bit variable ({min} to {max})"
        ));
    }
    Ok(())
}

/// The low `size` bytes of `n`, in host byte order (two's complement).
fn native_bytes(n: i128, size: usize) -> Vec<u8> {
    let size = size.min(16);
    if cfg!(target_endian = "little") {
        n.to_le_bytes()[..size].to_vec()
    } else {
        n.to_be_bytes()[16 - size..].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U8: Kind = Kind::Int {
        signed: false,
        bits: 8,
    };
    const S32: Kind = Kind::Int {
        signed: true,
        bits: 32,
    };

    #[test]
    fn assignments_need_a_name_and_a_value() {
        assert_eq!(
            parse_assignment("verdict=1").unwrap(),
            Assignment {
                name: "verdict".into(),
                value: "1".into()
            }
        );
        assert_eq!(parse_assignment("a=b=c").unwrap().value, "b=c");
        for bad in ["verdict", "=1", "verdict="] {
            assert!(parse_assignment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn integers_are_decimal_or_hex_and_may_be_negative() {
        assert_eq!(parse_integer("42"), Some(42));
        assert_eq!(parse_integer("0x2A"), Some(42));
        assert_eq!(parse_integer("-0x10"), Some(-16));
        assert_eq!(parse_integer("-7"), Some(-7));
        for bad in ["", "-", "0x", "4 2", "1e3", "+1", "ten"] {
            assert_eq!(parse_integer(bad), None, "{bad}");
        }
    }

    #[test]
    fn values_must_fit_the_variable() {
        assert_eq!(encode(&U8, 1, "255").unwrap().0, vec![255]);
        assert_eq!(
            encode(&U8, 1, "256").unwrap_err(),
            "256 does not fit an unsigned 8-bit variable (0 to 255)"
        );
        assert_eq!(
            encode(&U8, 1, "-1").unwrap_err(),
            "-1 does not fit an unsigned 8-bit variable (0 to 255)"
        );
        assert_eq!(encode(&S32, 4, "-2").unwrap().0, native_bytes(-2, 4));
        assert_eq!(
            encode(&S32, 4, "0x80000000").unwrap_err(),
            "2147483648 does not fit a signed 32-bit variable (-2147483648 to 2147483647)"
        );
        assert_eq!(
            encode(&S32, 4, "many").unwrap_err(),
            "'many' is not an integer (decimal, or hex with 0x)"
        );
    }

    #[test]
    fn bools_and_enums_take_their_own_words() {
        assert_eq!(
            encode(&Kind::Bool, 1, "true").unwrap(),
            (vec![1], serde_json::Value::Bool(true))
        );
        assert!(encode(&Kind::Bool, 1, "yes").is_err());
        let mode = Kind::Enum {
            name: "mode".into(),
            signed: false,
            members: vec![("MODE_OFF".into(), 0), ("MODE_ON".into(), 7)],
        };
        assert_eq!(encode(&mode, 4, "MODE_ON").unwrap().0, native_bytes(7, 4));
        assert_eq!(encode(&mode, 4, "3").unwrap().0, native_bytes(3, 4));
        assert_eq!(
            encode(&mode, 4, "MODE_MAYBE").unwrap_err(),
            "'MODE_MAYBE' is neither an enumerator of enum mode (MODE_OFF, MODE_ON) nor an integer"
        );
        assert_eq!(
            encode(&Kind::Other("struct".into()), 8, "1").unwrap_err(),
            "the variable is a struct; --set takes integers, bools and enums"
        );
    }
}
