//! Browse a snapshot: a table's rows page by page, with column filters and a key
//! lookup, and downloads of the table or the whole snapshot as files. The page's state
//! is its address (`/backups/ID?table=…&offset=…&c1=…&o1=…&v1=…&key=…`), so a view can be
//! bookmarked or shared with a colleague who may see the same backups.
//!
//! Rows come first: the filters fold away (open only while one is active), and above the
//! rows stand the total and a jump to a page number or a key. The total is the row count
//! the snapshot's manifest stores for the table, so it costs nothing; how many rows a
//! *filter* matches is only known by reading the whole table, so a filtered view says
//! "more than N" until its last page is reached.

use super::names::short_id;
use super::ui::{When, failed, id_param};
use crate::api::browse::{
    Filter, OPS, PAGE_ROWS, RowsPage, browse_snapshot, export_query, urlencoding as enc,
};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_query_map};

/// Filters the form offers.
const FILTERS: usize = 3;

#[component]
pub fn BrowsePage() -> impl IntoView {
    let query = use_query_map();
    let id = id_param();
    let q = move |k: &str| query.read().get(k).unwrap_or_default();
    // Filters, key and paging belong to the table they were chosen for (`ft`, set by the
    // form): when the table select changed, they are dropped rather than applied to
    // another table's columns (which would only fail).
    let stale = move || {
        let ft = q("ft");
        !ft.is_empty() && ft != q("table")
    };
    let filters = move || {
        if stale() {
            return Vec::new();
        }
        (1..=FILTERS)
            .map(|i| Filter {
                column: q(&format!("c{i}")),
                op: {
                    let op = q(&format!("o{i}"));
                    if op.is_empty() { "eq".into() } else { op }
                },
                value: q(&format!("v{i}")),
            })
            .filter(|f| !f.column.is_empty())
            .collect::<Vec<_>>()
    };
    let key_text = move || if stale() { String::new() } else { q("key") };
    let key = move || {
        let k = key_text();
        if k.trim().is_empty() {
            Vec::new()
        } else {
            k.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        }
    };
    let offset = move || {
        if stale() {
            0
        } else {
            offset_of(&q("page"), &q("offset"))
        }
    };
    let page = Resource::new(
        move || (id(), q("table"), filters(), key(), offset()),
        |(id, table, filters, key, offset)| browse_snapshot(id, table, filters, key, offset),
    );
    let navigate = use_navigate();
    view! {
        <Title text="Browse a backup"/>
        <h1>"Browse a backup"</h1>
        <p><a href=crate::base::url("/backups")>"← Backups"</a></p>
        <Transition fallback=|| view! { <p class="muted">"Reading the backup…"</p> }>
            {move || {
                let navigate = navigate.clone();
                Suspend::new(async move {
                let page = match page.await {
                    Err(e) => return failed(e),
                    Ok(p) => p,
                };
                let id = id();
                let filters = filters();
                let key = key_text();
                let active = filters.len() + usize::from(!key.trim().is_empty());
                // Switching the table shows the new table's first rows, unfiltered.
                let switch = move |ev: leptos::ev::Event| {
                    let table = event_target_value(&ev);
                    navigate(&format!("/backups/{id}?table={}", enc(&table)), Default::default());
                };
                view! {
                    <p class="muted" data-testid="browse-snapshot">
                        {format!("Snapshot {} taken ", short_id(&page.snapshot))}<When ms=page.snapshot_time_ms/>{format!(": table {} holds {} rows.", page.table, page.table_rows)}
                    </p>
                    <form class="browse" method="get" action=crate::base::url(&format!("/backups/{id}")) aria-label="Choose rows">
                        <input type="hidden" name="ft" value=page.table.clone()/>
                        <div class="browse-pick">
                            <label for="table">"Table"</label>
                            <select id="table" name="table" on:change=switch>
                                {page.tables.iter().map(|t| view! { <option value=t.clone() selected=*t == page.table>{t.clone()}</option> }).collect_view()}
                            </select>
                            {(!page.key.is_empty()).then(|| { let key_hint = if page.key.len() > 1 { "values, comma-separated" } else { "value" }; view! {
                                <label for="key">{format!("Key ({})", page.key.join(", "))}</label>
                                <input id="key" name="key" value=key.clone() placeholder=key_hint/>
                            }})}
                        </div>
                        <details class="browse-filters" open=!filters.is_empty() data-testid="filters">
                            <summary>{if filters.is_empty() { "Filters".to_string() } else { format!("Filters ({} active)", filters.len()) }}</summary>
                            {(1..=FILTERS).map(|i| {
                                let f = filters.get(i - 1).cloned();
                                let column = f.as_ref().map(|f| f.column.clone()).unwrap_or_default();
                                let op = f.as_ref().map(|f| f.op.clone()).unwrap_or_else(|| "eq".into());
                                let value = f.map(|f| f.value).unwrap_or_default();
                                view! {
                                    <fieldset class="filter" data-testid=format!("filter-{i}")>
                                        <legend class="muted">{format!("Filter {i}")}</legend>
                                        <select name=format!("c{i}") aria-label=format!("Filter {i} column")>
                                            <option value="">"(none)"</option>
                                            {page.columns.iter().map(|c| view! { <option value=c.clone() selected=*c == column>{c.clone()}</option> }).collect_view()}
                                        </select>
                                        <select name=format!("o{i}") aria-label=format!("Filter {i} operator")>
                                            {OPS.iter().map(|(v, label)| view! { <option value=*v selected=*v == op>{*label}</option> }).collect_view()}
                                        </select>
                                        <input name=format!("v{i}") aria-label=format!("Filter {i} value") value=value/>
                                    </fieldset>
                                }
                            }).collect_view()}
                        </details>
                        <button type="submit">"Show rows"</button>
                    </form>
                    <p class="browse-total" data-testid="total">{total_text(&page, active > 0)}</p>
                    {jump(id, &page, &filters, &key)}
                    {rows_table(&page)}
                    {pager(id, &page, &filters, &key)}
                    {downloads(id, &page.table, &filters)}
                }.into_any()
            })}}
        </Transition>
    }
}

/// The offset an address asks for: `page` (1-based) when given, else `offset`.
fn offset_of(page: &str, offset: &str) -> u64 {
    match page.trim().parse::<u64>() {
        Ok(n) if n >= 1 => (n - 1).saturating_mul(PAGE_ROWS),
        _ => offset.trim().parse::<u64>().unwrap_or(0),
    }
}

/// Pages a table of `rows` rows fills (at least one).
fn page_count(rows: u64) -> u64 {
    rows.div_ceil(PAGE_ROWS).max(1)
}

/// How many rows there are: the table's stored count, or for a filter or key lookup the
/// matches, exact once the last page is reached and "more than N" before (counting them
/// would read the whole table).
fn total_text(page: &RowsPage, filtered: bool) -> String {
    let shown = page.offset + page.rows.len() as u64;
    if !filtered {
        let n = page.table_rows;
        return format!(
            "{n} {} in {} · page {} of {}",
            if n == 1 { "row" } else { "rows" },
            page.table,
            page.offset / PAGE_ROWS + 1,
            page_count(n)
        );
    }
    if page.more {
        format!(
            "More than {shown} of the table's {} rows match (the exact number is known once you reach the last page).",
            page.table_rows
        )
    } else {
        format!("{shown} of the table's {} rows match.", page.table_rows)
    }
}

/// Jump to a page number, keeping the table, filters and key.
fn jump(id: i64, page: &RowsPage, filters: &[Filter], key: &str) -> impl IntoView {
    let filtered = !filters.is_empty() || !key.trim().is_empty();
    let pages = page_count(page.table_rows);
    let current = page.offset / PAGE_ROWS + 1;
    view! {
        <form class="browse-jump" method="get" action=crate::base::url(&format!("/backups/{id}")) aria-label="Go to a page">
            <input type="hidden" name="table" value=page.table.clone()/>
            <input type="hidden" name="ft" value=page.table.clone()/>
            {filters.iter().enumerate().map(|(i, f)| view! {
                <input type="hidden" name=format!("c{}", i + 1) value=f.column.clone()/>
                <input type="hidden" name=format!("o{}", i + 1) value=f.op.clone()/>
                <input type="hidden" name=format!("v{}", i + 1) value=f.value.clone()/>
            }).collect_view()}
            {(!key.is_empty()).then(|| view! { <input type="hidden" name="key" value=key.to_string()/> })}
            <label for="page">{if filtered { "Page".to_string() } else { format!("Page (of {pages})") }}</label>
            <input id="page" name="page" type="number" min="1" max=(!filtered).then(|| pages.to_string()) value=current.to_string() inputmode="numeric"/>
            <button type="submit" class="secondary">"Go"</button>
        </form>
    }
}

fn rows_table(page: &RowsPage) -> AnyView {
    if page.rows.is_empty() {
        return view! { <p class="muted" data-testid="no-rows">"No matching rows."</p> }.into_any();
    }
    view! {
        <div class="scroll">
            <table class="list rows" data-testid="rows">
                <thead><tr>{page.columns.iter().map(|c| view! { <th>{c.clone()}</th> }).collect_view()}</tr></thead>
                <tbody>
                    {page.rows.iter().map(|row| view! {
                        <tr>{row.iter().map(|v| match v {
                            None => view! { <td class="null muted">"NULL"</td> }.into_any(),
                            Some(s) => view! { <td class="mono">{s.clone()}</td> }.into_any(),
                        }).collect_view()}</tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
    .into_any()
}

/// The address of this view at another offset.
fn view_link(id: i64, table: &str, filters: &[Filter], key: &str, offset: u64) -> String {
    let mut qs = format!("/backups/{id}?table={}&offset={offset}", enc(table));
    for (i, f) in filters.iter().enumerate() {
        qs.push_str(&format!(
            "&c{n}={}&o{n}={}&v{n}={}",
            enc(&f.column),
            enc(&f.op),
            enc(&f.value),
            n = i + 1
        ));
    }
    if !key.is_empty() {
        qs.push_str(&format!("&key={}", enc(key)));
    }
    qs
}

fn pager(id: i64, page: &RowsPage, filters: &[Filter], key: &str) -> impl IntoView {
    let first = page.offset + 1;
    let last = page.offset + page.rows.len() as u64;
    let prev = (page.offset > 0).then(|| {
        let to = page.offset.saturating_sub(PAGE_ROWS);
        view! { <a href=crate::base::url(&view_link(id, &page.table, filters, key, to)) data-testid="prev">"← Previous"</a> }
    });
    let next = page.more.then(|| {
        view! { <a href=crate::base::url(&view_link(id, &page.table, filters, key, last)) data-testid="next">"Next →"</a> }
    });
    view! {
        <p class="pager">
            {prev}
            <span class="muted" data-testid="showing">{if page.rows.is_empty() { String::new() } else { format!(" Rows {first}–{last} of the matches ") }}</span>
            {next}
        </p>
    }
}

fn downloads(id: i64, table: &str, filters: &[Filter]) -> impl IntoView {
    let link = move |table: Option<&str>, format: &str, label: &'static str, filters: &[Filter]| {
        let href = crate::base::url(&format!(
            "/snapshots/{id}/export?{}",
            export_query(table, format, filters)
        ));
        view! { <a class="button secondary" href=href download="" data-testid=format!("download-{}-{format}", if table.is_some() { "table" } else { "all" })>{label}</a> }
    };
    let filtered = if filters.is_empty() {
        ""
    } else {
        " (the rows the filters match)"
    };
    view! {
        <section class="downloads" aria-label="Downloads">
            <h2>"Download"</h2>
            <p>{format!("Table {table}{filtered}: ")}
                {link(Some(table), "csv", "CSV", filters)}" "
                {link(Some(table), "jsonl", "JSON lines", filters)}" "
                {link(Some(table), "sql", "SQL", filters)}" "
                {link(Some(table), "sqlite", "SQLite", filters)}
            </p>
            <p>"The whole snapshot: "
                {link(None, "sql", "SQL", &[])}" "
                {link(None, "sqlite", "SQLite", &[])}
            </p>
            <p class="muted">"Downloads are read from the backup and checked against its checksums; a damaged table stops the download. Every download is recorded in the audit log."</p>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(offset: u64, rows: usize, more: bool, table_rows: u64) -> RowsPage {
        RowsPage {
            snapshot: "2dfca4be6d64aaaa".into(),
            snapshot_time_ms: 0,
            table: "people".into(),
            tables: vec!["people".into()],
            columns: vec!["id".into()],
            key: vec!["id".into()],
            rows: vec![vec![Some("1".into())]; rows],
            offset,
            more,
            table_rows,
            scanned: 0,
        }
    }

    #[test]
    fn a_page_number_in_the_address_becomes_an_offset() {
        assert_eq!(offset_of("3", ""), 2 * PAGE_ROWS);
        assert_eq!(offset_of("1", "70"), 0);
        // No page, or nonsense: the offset, else the start.
        assert_eq!(offset_of("", "70"), 70);
        assert_eq!(offset_of("0", "70"), 70);
        assert_eq!(offset_of("x", "y"), 0);
        assert_eq!(offset_of("99999999999999999999999", ""), 0);
    }

    #[test]
    fn the_total_is_the_stored_count_or_more_than_what_was_read() {
        assert_eq!(page_count(0), 1);
        assert_eq!(page_count(130), 3);
        assert_eq!(page_count(150), 3);
        assert_eq!(
            total_text(&page(50, 50, true, 130), false),
            "130 rows in people · page 2 of 3"
        );
        assert!(
            total_text(&page(0, 50, true, 130), true)
                .starts_with("More than 50 of the table's 130 rows match")
        );
        assert_eq!(
            total_text(&page(50, 10, false, 130), true),
            "60 of the table's 130 rows match."
        );
    }
}
