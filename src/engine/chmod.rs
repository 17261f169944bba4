//! `COPY --chmod` values: octal (`755`, `0644`) or symbolic (`u+x,g-w,o=r`, `a+X`) as chmod(1) reads
//! them, applied to every file and directory a COPY creates.

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    who: u32,
    op: char,
    perms: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid --chmod value {value:?}: {why}")]
pub struct ChmodError {
    pub value: String,
    pub why: &'static str,
}

impl Chmod {
    pub fn parse(value: &str) -> Result<Chmod, ChmodError> {
        let err = |why| ChmodError {
            value: value.to_string(),
            why,
        };
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            let mode = u32::from_str_radix(value, 8).map_err(|_| err("not an octal number"))?;
            if mode > 0o7777 {
                return Err(err("octal mode above 7777"));
            }
            return Ok(Chmod::Octal(mode));
        }
        let mut clauses = Vec::new();
        for part in value.split(',') {
            let op_at = part
                .find(['+', '-', '='])
                .ok_or_else(|| err("expected an octal mode or [ugoa][+-=][rwxXst]"))?;
            let (who_s, rest) = part.split_at(op_at);
            let mut who = 0;
            for c in who_s.chars() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => return Err(err("unknown who letter (use u, g, o, a)")),
                };
            }
            if who == 0 {
                who = 0o7777;
            }
            let op = rest.chars().next().unwrap_or('+');
            let perms = &rest[1..];
            if !perms.chars().all(|c| "rwxXst".contains(c)) {
                return Err(err("unknown permission letter (use r, w, x, X, s, t)"));
            }
            clauses.push(Clause {
                who,
                op,
                perms: perms.to_string(),
            });
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The new permission bits for an entry that has `mode` now.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let mut mode = mode & 0o7777;
                for c in clauses {
                    let any_x = mode & 0o111 != 0;
                    let mut bits = 0;
                    for p in c.perms.chars() {
                        bits |= match p {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || any_x => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        };
                    }
                    let bits = bits & c.who;
                    mode = match c.op {
                        '+' => mode | bits,
                        '-' => mode & !bits,
                        _ => (mode & !(c.who & 0o777)) | bits,
                    };
                }
                mode
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_symbolic_like_chmod1() {
        assert_eq!(Chmod::parse("755").unwrap().apply(0o600, false), 0o755);
        assert_eq!(Chmod::parse("0644").unwrap().apply(0o777, true), 0o644);
        assert_eq!(Chmod::parse("u+x").unwrap().apply(0o644, false), 0o744);
        assert_eq!(Chmod::parse("go-w").unwrap().apply(0o666, false), 0o644);
        assert_eq!(Chmod::parse("a+X").unwrap().apply(0o644, false), 0o644);
        assert_eq!(Chmod::parse("a+X").unwrap().apply(0o644, true), 0o755);
        assert_eq!(
            Chmod::parse("u=rw,go=r").unwrap().apply(0o777, false),
            0o644
        );
        assert_eq!(Chmod::parse("+x").unwrap().apply(0o600, false), 0o711);
    }

    #[test]
    fn bad_values_are_named() {
        let e = Chmod::parse("999").unwrap_err();
        assert!(e.to_string().contains("\"999\""));
        assert!(Chmod::parse("q+x").is_err());
        assert!(Chmod::parse("u+z").is_err());
        assert!(Chmod::parse("u").is_err());
    }
}
