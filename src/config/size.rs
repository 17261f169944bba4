//! Sizes as people write them (`512m`, `2g`, `20GB`, `1.5MiB`, `1048576`), one parser for every
//! place kiln reads one: `--memory`, the API's `resources.memory`, kiln.toml's disk-space keys.
//!
//! Docker's binary units everywhere: this is docker/go-units' `RAMInBytes`, which `docker run
//! --memory` and buildkitd.toml's `gckeepstorage`/`reservedSpace`/… (BuildKit's `DiskSpace`) both use,
//! so `2g`, `2gb`, `2GiB` all mean 2·2³⁰ bytes, as they do for the tools an operator knows.
//!
//! Must not: accept negative, non-finite or overflowing sizes.

/// Why a size could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a size (bytes, or a number with k, m, g, t or p: 512m, 2g, 20GB)")]
pub struct SizeError {
    pub value: String,
}

/// `RAMInBytes` (github.com/docker/go-units size.go): `^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$`,
/// every unit a power of 1024.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let err = || SizeError {
        value: s.to_string(),
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(err());
    }
    let num: f64 = num.parse().map_err(|_| err())?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(err()),
    };
    let bytes = num * (1u64 << shift) as f64;
    if bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64 {
        Ok(bytes as u64)
    } else {
        Err(err())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn binary_units_like_docker_memory() {
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("20GB"), Ok(20 << 30));
        assert_eq!(parse_size("1.5MiB"), Ok(1_572_864));
        assert_eq!(parse_size("12"), Ok(12));
        assert_eq!(parse_size("12b"), Ok(12));
        assert_eq!(parse_size("4 k"), Ok(4096));
    }

    #[test]
    fn garbage_is_refused_with_the_value() {
        for bad in ["", "x", "12 parsecs", "-1g", ".5g", "1.g", "1e3", "1gg"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }
}
