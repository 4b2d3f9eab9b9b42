//! How the console names things, the same way on every page.
//!
//! The rule:
//! - **Objects a user created** (sources, targets, policies, channels, users) are named
//!   by their name, never by their row number. One that was deleted while something
//!   still refers to it (a snapshot of a removed policy) is "removed policy #4": its
//!   row number is all that is left of it.
//! - **Snapshots** are named by the first [`SHORT`] characters of their id (what the CLI
//!   prints and accepts as a prefix), followed by when they were taken where there is
//!   room: `2dfca4be6d64 · 2026-12-07 10:00:00 UTC`. Never by their history row number.
//! - **Jobs and requests**, which have no name, are "job #12" and "request #3", linking
//!   to their page.

/// Characters of a snapshot id shown in the console.
pub const SHORT: usize = 12;

/// A snapshot id's short form. Ids come from the server: one shorter than [`SHORT`]
/// (or not ASCII) is shown as it is rather than panicking on a slice.
pub fn short_id(snapshot_id: &str) -> String {
    snapshot_id.chars().take(SHORT).collect()
}

/// A snapshot as the console names it where there is room: short id and time.
pub fn snapshot_label(snapshot_id: &str, time_ms: i64) -> String {
    format!("{} · {}", short_id(snapshot_id), super::ui::time(time_ms))
}

/// An object by its name; "removed KIND #ID" when it is gone (its name is empty but
/// something still holds its id, which is all that tells two removed ones apart), or
/// "no KIND" when there never was one.
pub fn object_name(kind: &str, name: &str, id: Option<i64>) -> String {
    match (name.is_empty(), id) {
        (false, _) => name.to_string(),
        (true, Some(id)) => format!("removed {kind} #{id}"),
        (true, None) => format!("no {kind}"),
    }
}

/// "job #12".
pub fn job_ref(id: i64) -> String {
    format!("job #{id}")
}

/// "request #3".
pub fn request_ref(id: i64) -> String {
    format!("request #{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_named_by_the_same_twelve_characters_everywhere() {
        let id = "2dfca4be6d64f00d0123456789abcdef";
        assert_eq!(short_id(id), "2dfca4be6d64");
        assert_eq!(
            snapshot_label(id, 0),
            format!("2dfca4be6d64 · {}", super::super::ui::time(0))
        );
    }

    #[test]
    fn odd_ids_from_the_server_do_not_panic() {
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id(""), "");
        // Multi-byte characters are never cut in half.
        assert_eq!(short_id("ééééééééééééééé"), "éééééééééééé");
    }

    #[test]
    fn a_removed_object_says_so_instead_of_a_row_number() {
        assert_eq!(object_name("policy", "nightly", Some(4)), "nightly");
        assert_eq!(object_name("policy", "", Some(4)), "removed policy #4");
        assert_eq!(object_name("policy", "", None), "no policy");
        assert_eq!(job_ref(12), "job #12");
        assert_eq!(request_ref(3), "request #3");
    }
}
