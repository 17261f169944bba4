//! `USER` resolution against the rootfs's /etc/passwd and /etc/group (Docker's rules: a numeric
//! uid need not exist; its gid is then 0; supplementary groups are those listing the user).

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

fn entries(path: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

/// Resolves `spec` ("name", "uid", "name:group", "uid:gid") with `root` as the filesystem root.
pub(crate) fn resolve(spec: Option<&str>, root: &str) -> Result<ExecUser, String> {
    let passwd = entries(&format!("{root}/etc/passwd"));
    let group = entries(&format!("{root}/etc/group"));
    let spec = spec.filter(|s| !s.is_empty()).unwrap_or("0");
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let by_name = passwd
        .iter()
        .find(|e| e.first().map(String::as_str) == Some(u));
    let (uid, mut gid, name, home) = match (by_name, u.parse::<u32>()) {
        (Some(e), _) => (
            field(e, 2, "uid", u)?,
            field(e, 3, "gid", u)?,
            Some(u.to_string()),
            e.get(5).cloned().unwrap_or_else(|| "/".into()),
        ),
        (None, Ok(uid)) => {
            let e = passwd
                .iter()
                .find(|e| e.get(2).and_then(|s| s.parse().ok()) == Some(uid));
            match e {
                Some(e) => (
                    uid,
                    field(e, 3, "gid", u)?,
                    e.first().cloned(),
                    e.get(5).cloned().unwrap_or_else(|| "/".into()),
                ),
                None => (uid, 0, None, "/".into()),
            }
        }
        (None, Err(_)) => {
            return Err(format!(
                "unable to find user {u}: no matching entries in passwd file"
            ))
        }
    };
    if let Some(g) = g {
        gid = match group
            .iter()
            .find(|e| e.first().map(String::as_str) == Some(g))
        {
            Some(e) => field(e, 2, "gid", g)?,
            None => g.parse().map_err(|_| {
                format!("unable to find group {g}: no matching entries in group file")
            })?,
        };
    }
    let mut groups = vec![gid];
    if let Some(name) = &name {
        for e in &group {
            let members = e.get(3).map(String::as_str).unwrap_or("");
            if members.split(',').any(|m| m == name) {
                if let Some(id) = e.get(2).and_then(|s| s.parse().ok()) {
                    if !groups.contains(&id) {
                        groups.push(id);
                    }
                }
            }
        }
    }
    Ok(ExecUser {
        uid,
        gid,
        groups,
        home,
    })
}

fn field(e: &[String], i: usize, what: &str, who: &str) -> Result<u32, String> {
    e.get(i)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("malformed {what} for {who} in the rootfs's /etc files"))
}
