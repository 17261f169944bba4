//! The image catalog: entries (display name, generated image name, type, URLs, visibility,
//! status) kept in kiln.db's `catalog` records (the `/v1/catalog` routes are `http/catalog.rs`),
//! and the status a build
//! with a `"catalog"` field drives: `building` when accepted, `ready` with the pushed URL(s) when
//! it succeeds, `failed` otherwise.
//!
//! Must not: run builds (jobs.rs does) or decide who may do what (policy.rs does; this module
//! asks it).

use std::sync::Mutex;

use crate::api::{self, kind, BuildSpec, CatalogEntry, CatalogSpec, CatalogStatus, ImageType};

use super::hooks::{Ended, Outcome};
use super::records::RecordError;
use super::{now, ApiError, Shared};

/// The records namespace in kiln.db.
pub(super) const NS: &str = "catalog";

/// Serialises read-modify-write of entries (two builds of one `universal` entry end together).
static LOCK: Mutex<()> = Mutex::new(());

pub(super) fn lock() -> std::sync::MutexGuard<'static, ()> {
    crate::sync::lock(&LOCK)
}

pub(super) fn load(state: &Shared, name: &str) -> Result<Option<CatalogEntry>, ApiError> {
    match state.store.db().record_get(NS, name)? {
        Some(v) => serde_json::from_str(&v)
            .map(Some)
            .map_err(ApiError::internal),
        None => Ok(None),
    }
}

pub(super) fn save(state: &Shared, e: &CatalogEntry) -> Result<(), ApiError> {
    let v = serde_json::to_string(e).map_err(ApiError::internal)?;
    state.store.db().record_put(NS, &e.name, &v)?;
    Ok(())
}

pub(super) fn all(state: &Shared) -> Result<Vec<CatalogEntry>, ApiError> {
    let mut out = Vec::new();
    for (_, v) in state.store.db().record_list(NS)? {
        if let Ok(e) = serde_json::from_str::<CatalogEntry>(&v) {
            out.push(e);
        }
    }
    Ok(out)
}

pub(super) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad(kind::INVALID_REQUEST, message)
}

/// A URL an entry may point at: an image reference.
pub(super) fn check_url(field: &str, url: &Option<String>) -> Result<(), ApiError> {
    if let Some(u) = url {
        u.parse::<crate::reference::Reference>()
            .map_err(|e| bad(format!("{field} {u:?} is not an image reference: {e}")))?;
    }
    Ok(())
}

pub(super) fn check_groups(groups: &[String]) -> Result<(), ApiError> {
    for g in groups {
        if g.is_empty()
            || !g
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(bad(format!("group {g:?}: letters, digits, - _ . only")));
        }
    }
    Ok(())
}

/// A build spec's `"catalog"` checked before the build is accepted (a 400 otherwise).
pub(super) fn check_spec(spec: &BuildSpec) -> Result<(), ApiError> {
    let Some(c) = &spec.catalog else {
        return Ok(());
    };
    api::check_display_name(&c.display_name).map_err(|m| bad(format!("catalog.{m}")))?;
    check_url("catalog.gpu_url", &c.gpu_url)?;
    check_groups(&c.groups)?;
    if c.global == Some(true) && !c.groups.is_empty() {
        return Err(bad("catalog: give global or groups, not both"));
    }
    if spec.all_tags().is_empty() {
        return Err(bad(
            "catalog: the build needs a tag (tags, or name and tag): it becomes the image URL",
        ));
    }
    Ok(())
}

/// The builds a `universal` package spec needs: its GPU twin when the GPU base differs — same
/// packages on `gpu_base`, each tag suffixed `-gpu`.
pub(super) fn gpu_twin(spec: &BuildSpec) -> Option<BuildSpec> {
    let c = spec.catalog.as_ref()?;
    let p = spec.packages.as_ref()?;
    let gpu = p.gpu_base.as_deref().filter(|g| *g != p.base)?;
    if c.image_type != ImageType::Universal {
        return None;
    }
    let mut twin = spec.clone();
    let tp = twin.packages.as_mut().expect("checked above");
    tp.base = gpu.to_string();
    tp.gpu_base = None;
    twin.catalog = None;
    twin.tags = spec
        .all_tags()
        .iter()
        .map(|t| match t.parse::<crate::reference::Reference>() {
            Ok(r) => format!("{}:{}-gpu", r.repository(), r.tag_or_latest()),
            Err(_) => format!("{t}-gpu"),
        })
        .collect();
    twin.name = None;
    twin.tag = None;
    Some(twin)
}

/// The entry of a just-accepted build becomes `building` (created if new; its settings replaced
/// by the spec's when it exists: a rebuild with changes goes through the same entry).
pub(super) fn building(
    state: &Shared,
    c: &CatalogSpec,
    build_id: &str,
    gpu_build_id: Option<&str>,
) -> Result<(), ApiError> {
    let _g = lock();
    let name = api::image_name(&c.display_name);
    let t = now();
    let mut e = load(state, &name)?.unwrap_or_else(|| CatalogEntry {
        name: name.clone(),
        display_name: c.display_name.clone(),
        description: String::new(),
        image_type: c.image_type,
        url: None,
        gpu_url: None,
        pull_secret: None,
        global: true,
        groups: Vec::new(),
        status: CatalogStatus::Building,
        build_id: None,
        gpu_build_id: None,
        error: None,
        created: t,
        updated: t,
    });
    e.display_name.clone_from(&c.display_name);
    if let Some(d) = &c.description {
        e.description.clone_from(d);
    }
    e.image_type = c.image_type;
    if c.gpu_url.is_some() {
        e.gpu_url.clone_from(&c.gpu_url);
    }
    if c.pull_secret.is_some() {
        e.pull_secret.clone_from(&c.pull_secret);
    }
    e.global = c.global.unwrap_or(c.groups.is_empty());
    e.groups.clone_from(&c.groups);
    e.status = CatalogStatus::Building;
    e.build_id = Some(build_id.to_string());
    e.gpu_build_id = gpu_build_id.map(str::to_string);
    e.error = None;
    e.updated = t;
    save(state, &e)?;
    drop(_g);
    // A build that ended before its entry was written (a fast failure) settles it now.
    for b in [Some(build_id), gpu_build_id].into_iter().flatten() {
        settle_if_ended(state, b)?;
    }
    Ok(())
}

fn settle_if_ended(state: &Shared, id: &str) -> Result<(), ApiError> {
    let db = state.store.db();
    let Some(rec) = db.get_build(id)? else {
        return Ok(());
    };
    let settled = match api::Status::parse(&rec.status) {
        Some(api::Status::Succeeded) => {
            let tags: Option<Vec<String>> = db
                .get_build_details(id)
                .ok()
                .flatten()
                .and_then(|d| d.result_json)
                .and_then(|j| serde_json::from_str::<api::BuildOutcome>(&j).ok())
                .map(|o| o.tags);
            let _g = lock();
            update_entry(state, id, Some(&tags.unwrap_or_default()), None)
        }
        Some(st) if st.is_final() => {
            let _g = lock();
            update_entry(state, id, None, rec.error.as_deref())
        }
        _ => Ok(()),
    };
    settled.map_err(|e| ApiError::internal(super::error_chain(&e)))
}

/// The catalog's subscriber to the "build ended" hook: the entry the build drives takes its
/// URL(s) and becomes `ready` once every build of it succeeded, `failed` as soon as one did not.
/// It runs after the build's status is recorded and under the catalog lock, so of the two builds
/// of a universal entry ending at once the later to take the lock reads the other as ended.
pub(super) fn on_build_ended(state: &Shared, ended: &Ended<'_>) -> Result<(), RecordError> {
    let _g = lock();
    match ended.outcome {
        Outcome::Succeeded { tags } => update_entry(state, ended.id, Some(tags), None),
        Outcome::Failed { error } | Outcome::Interrupted { reason: error } => {
            update_entry(state, ended.id, None, Some(error))
        }
    }
}

fn update_entry(
    state: &Shared,
    id: &str,
    tags: Option<&[String]>,
    error: Option<&str>,
) -> Result<(), RecordError> {
    let db = state.store.db();
    let listed = db.record_list(NS).map_err(|e| RecordError::CatalogRead {
        id: id.into(),
        source: Box::new(e),
    })?;
    let Some(mut e) = listed
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_str::<CatalogEntry>(&v).ok())
        .find(|e| e.build_id.as_deref() == Some(id) || e.gpu_build_id.as_deref() == Some(id))
    else {
        return Ok(());
    };
    let is_gpu = e.gpu_build_id.as_deref() == Some(id);
    match (tags, error) {
        (Some(t), _) => {
            let url = t.first().cloned();
            if is_gpu {
                e.gpu_url = url;
            } else {
                e.url = url;
            }
        }
        (None, err) => {
            e.status = CatalogStatus::Failed;
            e.error = Some(err.unwrap_or("the build did not succeed").to_string());
        }
    }
    if e.status != CatalogStatus::Failed {
        let ended_ok = |b: &Option<String>| match b {
            None => true,
            Some(b) if b == id => tags.is_some(),
            Some(b) => matches!(
                db.get_build(b),
                Ok(Some(r)) if r.status == api::Status::Succeeded.as_str()
            ),
        };
        if ended_ok(&e.build_id) && ended_ok(&e.gpu_build_id) {
            e.status = CatalogStatus::Ready;
            if e.image_type == ImageType::Universal && e.gpu_url.is_none() {
                e.gpu_url.clone_from(&e.url);
            }
        }
    }
    e.updated = now();
    let v = serde_json::to_string(&e).map_err(|source| RecordError::CatalogEncode {
        name: e.name.clone(),
        source,
    })?;
    db.record_put(NS, &e.name, &v)
        .map_err(|err| RecordError::Catalog {
            id: id.into(),
            name: e.name.clone(),
            source: Box::new(err),
        })
}

pub(super) fn matches(e: &CatalogEntry, q: &str) -> bool {
    let q = q.to_lowercase();
    [
        Some(&e.name),
        Some(&e.display_name),
        Some(&e.description),
        e.url.as_ref(),
        e.gpu_url.as_ref(),
    ]
    .into_iter()
    .flatten()
    .any(|f| f.to_lowercase().contains(&q))
}

/// `%XX` and `+` decoded (a `?q=` value).
pub(super) fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(decode("py%20tools+x"), "py tools x");
        assert_eq!(decode("100%"), "100%");
    }
}
