//! `COPY/ADD --chmod` as dockerfile 1.2x reads it, parsed once by the plan and applied by the
//! engine to every entry a copy makes. BuildKit's `dispatchCopy` (`convert_copy.go`) takes a value
//! that `strconv.ParseUint(v, 8, 32)` accepts as an octal mode (at most 07777); anything else must
//! parse as a symbolic mode with tonistiigi/dchapes-mode (`mode.Parse`: BSD setmode(3), umask 0),
//! which fsutil's `copyFileInfo` applies to each entry's own mode (`Set.Apply`). This is a port of
//! that parser and its `Apply`, so the plan accepts exactly what BuildKit accepts (`+x`,
//! `u=rwX,go=rX`, `u+x-w`, `g=u`, `go=u-w`) and the build applies it the same way — including
//! setmode's quirks: `X` counts only with `+`, and is judged on the entry's mode before the change.

use serde::{Serialize, Serializer};

const IS_UID: u32 = 0o4000;
const IS_GID: u32 = 0o2000;
const IS_TXT: u32 = 0o1000;
const RWXU: u32 = 0o700;
const RWXG: u32 = 0o070;
const RWXO: u32 = 0o007;
const R_ALL: u32 = 0o444;
const W_ALL: u32 = 0o222;
const X_ALL: u32 = 0o111;
const STANDARD: u32 = IS_UID | IS_GID | RWXU | RWXG | RWXO;
/// dchapes-mode's `modet` is 16 bits; `^modet(0)` and the umask-0 mask are all ones.
const ALL: u32 = 0xffff;

/// A parsed `--chmod`; serialises as the value written (the plan's JSON and cache keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chmod {
    text: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// BuildKit's `ChmodOpt.Mode`.
    Octal(u32),
    /// BuildKit's `ChmodOpt.ModeStr`, as dchapes-mode's compressed command list.
    Symbolic(Vec<BitCmd>),
}

/// One of setmode's bit commands (`bitcmd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BitCmd {
    Set(u32),
    Clear(u32),
    /// Set these bits when the entry is a directory or was executable by anyone.
    SetX(u32),
    /// Copy the permission triplet of `from` (`u`, `g` or `o`) into the classes `to`
    /// (user, group, other), clearing and/or setting as the operator says.
    Copy {
        from: char,
        to: [bool; 3],
        clear: bool,
        set: bool,
        bits: u32,
    },
}

/// Why a `--chmod` value was refused; the texts are BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChmodError {
    /// `nonOctalErr` in `dispatchCopy`: a value that looks numeric but is no octal mode ≤ 07777.
    #[error("invalid chmod parameter: '{0}'. it should be octal string and between 0 and 07777")]
    NotOctal(String),
    /// dchapes-mode's `ErrSyntax` for a symbolic value it cannot read.
    #[error("invalid chmod parameter: '{0}': invalid syntax")]
    Syntax(String),
}

impl Serialize for Chmod {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl std::fmt::Display for Chmod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Chmod {
    /// Parse a `--chmod` value as `dispatchCopy` does (the empty value is no `--chmod` at all and
    /// is the caller's to skip).
    pub fn parse(value: &str) -> Result<Chmod, ChmodError> {
        let text = value.to_string();
        if let Ok(m) = u64::from_str_radix(value, 8) {
            // ParseUint takes no sign; from_str_radix would take a leading `+`.
            if !value.starts_with('+') {
                if m > 0o7777 {
                    return Err(ChmodError::NotOctal(text));
                }
                let kind = Kind::Octal(m as u32);
                return Ok(Chmod { text, kind });
            }
        }
        // mode.Parse reads a value that starts with a digit as a number; its strconv error is
        // what makes dispatchCopy answer with nonOctalErr.
        if value.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(ChmodError::NotOctal(text));
        }
        match parse_symbolic(value.as_bytes()) {
            Some(cmds) => Ok(Chmod {
                text,
                kind: Kind::Symbolic(compress(cmds)),
            }),
            None => Err(ChmodError::Syntax(text)),
        }
    }

    /// The value as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The mode of an octal `--chmod` (BuildKit's `ChmodOpt.Mode`, which also becomes the mode
    /// of the directories the copy creates); None for a symbolic one.
    pub fn octal(&self) -> Option<u32> {
        match self.kind {
            Kind::Octal(m) => Some(m),
            Kind::Symbolic(_) => None,
        }
    }

    /// The permission bits (07777) an entry gets, from the bits it has now (fsutil
    /// `copyFileInfo`: the octal mode as is, or `Set.Apply` of the entry's own mode).
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let cmds = match &self.kind {
            Kind::Octal(m) => return *m,
            Kind::Symbolic(cmds) => cmds,
        };
        let old = mode & 0o7777;
        let mut new = old;
        for c in cmds {
            match *c {
                BitCmd::Set(bits) => new |= bits,
                BitCmd::Clear(bits) => new &= !bits,
                BitCmd::SetX(bits) => {
                    if old & X_ALL != 0 || is_dir {
                        new |= bits;
                    }
                }
                BitCmd::Copy {
                    from,
                    to,
                    clear,
                    set,
                    bits,
                } => {
                    let value = match from {
                        'u' => (new & RWXU) >> 6,
                        'g' => (new & RWXG) >> 3,
                        _ => new & RWXO,
                    };
                    let shifts = [6, 3, 0];
                    if clear {
                        let clr = if set { RWXO } else { value };
                        for (on, shift) in to.iter().zip(shifts) {
                            if *on {
                                new &= !((clr << shift) & bits);
                            }
                        }
                    }
                    if set {
                        for (on, shift) in to.iter().zip(shifts) {
                            if *on {
                                new |= (value << shift) & bits;
                            }
                        }
                    }
                }
            }
        }
        new & 0o7777
    }
}

/// `addcmd`: the command(s) for operator `op` on classes `who` with argument `arg`.
fn addcmd(out: &mut Vec<BitCmd>, op: u8, who: u32, arg: u32) {
    let masked = |arg: u32| if who != 0 { who & arg } else { ALL & arg };
    match op {
        b'=' => {
            out.push(BitCmd::Clear(if who != 0 { who } else { STANDARD }));
            out.push(BitCmd::Set(masked(arg)));
        }
        b'+' => out.push(BitCmd::Set(masked(arg))),
        b'-' => out.push(BitCmd::Clear(masked(arg))),
        b'X' => out.push(BitCmd::SetX(masked(arg))),
        from => {
            // `arg` is the operator of a copy (`u+g`, `g=u`, `o-u`).
            let (to, bits) = if who != 0 {
                ([who & 0o400 != 0, who & 0o040 != 0, who & 0o004 != 0], ALL)
            } else {
                ([true; 3], ALL)
            };
            out.push(BitCmd::Copy {
                from: from as char,
                to,
                clear: arg == u32::from(b'-') || arg == u32::from(b'='),
                set: arg == u32::from(b'+') || arg == u32::from(b'='),
                bits,
            });
        }
    }
}

/// `ParseWithUmask(s, 0)` for a symbolic value: None where it returns `ErrSyntax`.
fn parse_symbolic(mut s: &[u8]) -> Option<Vec<BitCmd>> {
    let mut out = Vec::new();
    let mut equal_done = false;
    loop {
        let mut who = 0;
        loop {
            match s.first()? {
                b'a' => who |= STANDARD,
                b'u' => who |= IS_UID | RWXU,
                b'g' => who |= IS_GID | RWXG,
                b'o' => who |= RWXO,
                _ => break,
            }
            s = &s[1..];
        }
        // `getop`: one or more actions follow the classes (`u+x-w`).
        loop {
            let op = *s.first()?;
            s = &s[1..];
            match op {
                b'+' | b'-' => {}
                b'=' => equal_done = false,
                _ => return None,
            }
            who &= !IS_TXT;
            let (mut perm, mut perm_x) = (0, 0);
            loop {
                let b = s.first().copied().unwrap_or(0);
                match b {
                    b'r' => perm |= R_ALL,
                    // Set-id and sticky bits do not apply to "other" alone.
                    b's' if who == 0 || who & !RWXO != 0 => perm |= IS_UID | IS_GID,
                    b't' if who == 0 || who & !RWXO != 0 => {
                        who |= IS_TXT;
                        perm |= IS_TXT;
                    }
                    b's' | b't' => {}
                    b'w' => perm |= W_ALL,
                    b'X' => {
                        if op == b'+' {
                            perm_x = X_ALL;
                        }
                    }
                    b'x' => perm |= X_ALL,
                    b'u' | b'g' | b'o' => {
                        if perm != 0 {
                            addcmd(&mut out, op, who, perm);
                            perm = 0;
                        }
                        if op == b'=' {
                            equal_done = true;
                        }
                        if perm_x != 0 {
                            addcmd(&mut out, b'X', who, perm_x);
                            perm_x = 0;
                        }
                        addcmd(&mut out, b, who, u32::from(op));
                    }
                    _ => {
                        if perm != 0 || (op == b'=' && !equal_done) {
                            if op == b'=' {
                                equal_done = true;
                            }
                            addcmd(&mut out, op, who, perm);
                        }
                        if perm_x != 0 {
                            addcmd(&mut out, b'X', who, perm_x);
                        }
                        break;
                    }
                }
                s = &s[1..];
            }
            if s.is_empty() {
                return Some(out);
            }
            if s[0] == b',' {
                s = &s[1..];
                break;
            }
        }
    }
}

/// `Set.compress`: each run of set/clear/X commands becomes at most one clear, one set and one X
/// (copies stay apart), which is what `Apply` then runs.
fn compress(cmds: Vec<BitCmd>) -> Vec<BitCmd> {
    let mut out = Vec::with_capacity(cmds.len());
    let mut i = 0;
    while i < cmds.len() {
        if let BitCmd::Copy { .. } = cmds[i] {
            out.push(cmds[i]);
            i += 1;
            continue;
        }
        let (mut set, mut clr, mut x) = (0u32, 0u32, 0u32);
        while i < cmds.len() {
            match cmds[i] {
                BitCmd::Clear(b) => {
                    clr |= b;
                    set &= !b;
                    x &= !b;
                }
                BitCmd::Set(b) => {
                    set |= b;
                    clr &= !b;
                    x &= !b;
                }
                BitCmd::SetX(b) => x |= b & !set,
                BitCmd::Copy { .. } => break,
            }
            i += 1;
        }
        if clr != 0 {
            out.push(BitCmd::Clear(clr));
        }
        if set != 0 {
            out.push(BitCmd::Set(set));
        }
        if x != 0 {
            out.push(BitCmd::SetX(x));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(v: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(v).unwrap().apply(mode, dir)
    }

    #[test]
    fn octal_values_replace_the_mode() {
        assert_eq!(apply("755", 0o600, false), 0o755);
        assert_eq!(apply("0644", 0o777, true), 0o644);
        assert_eq!(apply("4755", 0o644, false), 0o4755);
        assert_eq!(Chmod::parse("750").unwrap().octal(), Some(0o750));
        assert_eq!(Chmod::parse("u+x").unwrap().octal(), None);
    }

    #[test]
    fn symbolic_values_as_chmod1_reads_them() {
        assert_eq!(apply("u+x", 0o644, false), 0o744);
        assert_eq!(apply("go-w", 0o666, false), 0o644);
        assert_eq!(apply("+x", 0o600, false), 0o711);
        assert_eq!(apply("u=rw,go=r", 0o777, false), 0o644);
        assert_eq!(apply("a+X", 0o644, false), 0o644);
        assert_eq!(apply("a+X", 0o644, true), 0o755);
        assert_eq!(apply("a+X", 0o744, false), 0o755);
        assert_eq!(apply("go=", 0o755, true), 0o700);
    }

    #[test]
    fn several_actions_and_copies_as_setmode_reads_them() {
        // The forms the old plan check let through and the engine then refused.
        assert_eq!(apply("u+x-w", 0o644, false), 0o544);
        assert_eq!(apply("g=u", 0o740, false), 0o770);
        assert_eq!(apply("go=u-w", 0o755, false), 0o755 & !0o022);
        assert_eq!(apply("u=rwx,go=u-w", 0o000, false), 0o755);
        assert_eq!(apply("o+u", 0o600, false), 0o606);
    }

    #[test]
    fn capital_x_counts_only_with_plus_and_on_the_mode_before() {
        // setmode: `X` with `=` is ignored, so `u=rwX,go=rX` gives directories no x bits.
        assert_eq!(apply("u=rwX,go=rX", 0o755, true), 0o644);
        // `X` looks at the mode the entry had, not at the `u+x` just applied.
        assert_eq!(apply("u+x,a+X", 0o644, false), 0o744);
    }

    #[test]
    fn setid_and_sticky_bits() {
        assert_eq!(apply("u+s", 0o755, false), 0o4755);
        assert_eq!(apply("g+s", 0o755, true), 0o2755);
        assert_eq!(apply("+t", 0o755, true), 0o1755);
        // "other" alone takes no set-id or sticky bit.
        assert_eq!(apply("o+st", 0o755, true), 0o755);
    }

    #[test]
    fn refusals_carry_buildkits_texts() {
        for bad in ["99999", "10000", "8", "0x1", "1e3"] {
            assert_eq!(
                Chmod::parse(bad).unwrap_err().to_string(),
                format!("invalid chmod parameter: '{bad}'. it should be octal string and between 0 and 07777")
            );
        }
        for bad in ["u", "q+x", "u+z", "u!x", "+755", "u+x,", ",u+x", "a+x,,g-w"] {
            assert_eq!(
                Chmod::parse(bad).unwrap_err(),
                ChmodError::Syntax(bad.to_string()),
                "{bad}"
            );
        }
    }

    #[test]
    fn serialises_as_written() {
        let c = Chmod::parse("a=rX,u+w").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"a=rX,u+w\"");
        assert_eq!(c.as_str(), "a=rX,u+w");
    }
}
