//! Browse a snapshot: a table's rows page by page, with column filters and a key
//! lookup, and downloads of the table or the whole snapshot as files. The page's state
//! is its address (`/backups/ID?table=…&offset=…&c1=…&o1=…&v1=…&key=…`), so a view can be
//! bookmarked or shared with a colleague who may see the same backups.

use super::ui::{failed, id_param, time};
use crate::api::browse::{Filter, OPS, browse_snapshot, export_query, urlencoding as enc};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

/// Filters the form offers.
const FILTERS: usize = 3;

#[component]
pub fn BrowsePage() -> impl IntoView {
    let query = use_query_map();
    let id = id_param();
    let q = move |k: &str| query.read().get(k).unwrap_or_default();
    let filters = move || {
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
    let key = move || {
        let k = q("key");
        if k.trim().is_empty() {
            Vec::new()
        } else {
            k.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        }
    };
    let offset = move || q("offset").parse::<u64>().unwrap_or(0);
    let page = Resource::new(
        move || (id(), q("table"), filters(), key(), offset()),
        |(id, table, filters, key, offset)| browse_snapshot(id, table, filters, key, offset),
    );
    view! {
        <Title text="Browse a backup"/>
        <h1>"Browse a backup"</h1>
        <p><a href="/backups">"← Backups"</a></p>
        <Transition fallback=|| view! { <p class="muted">"Reading the backup…"</p> }>
            {move || Suspend::new(async move {
                let page = match page.await {
                    Err(e) => return failed(e),
                    Ok(p) => p,
                };
                let id = id();
                let filters = filters();
                let key = q("key");
                view! {
                    <p class="muted" data-testid="browse-snapshot">
                        {format!("Snapshot {} taken {}: table {} holds {} rows.", &page.snapshot[..12], time(page.snapshot_time_ms), page.table, page.table_rows)}
                    </p>
                    <form class="browse" method="get" action=format!("/backups/{id}") aria-label="Choose rows">
                        <label for="table">"Table"</label>
                        <select id="table" name="table">
                            {page.tables.iter().map(|t| view! { <option value=t.clone() selected=*t == page.table>{t.clone()}</option> }).collect_view()}
                        </select>
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
                        {(!page.key.is_empty()).then(|| { let key_hint = if page.key.len() > 1 { "values, comma-separated" } else { "value" }; view! {
                            <label for="key">{format!("Key ({})", page.key.join(", "))}</label>
                            <input id="key" name="key" value=key.clone() placeholder=key_hint/>
                        }})}
                        <button type="submit">"Show rows"</button>
                    </form>
                    {rows_table(&page)}
                    {pager(id, &page, &filters, &key)}
                    {downloads(id, &page.table, &filters)}
                }.into_any()
            })}
        </Transition>
    }
}

fn rows_table(page: &crate::api::browse::RowsPage) -> AnyView {
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

fn pager(
    id: i64,
    page: &crate::api::browse::RowsPage,
    filters: &[Filter],
    key: &str,
) -> impl IntoView {
    let first = page.offset + 1;
    let last = page.offset + page.rows.len() as u64;
    let prev = (page.offset > 0).then(|| {
        let to = page.offset.saturating_sub(50);
        view! { <a href=view_link(id, &page.table, filters, key, to) data-testid="prev">"← Previous"</a> }
    });
    let next = page.more.then(|| {
        view! { <a href=view_link(id, &page.table, filters, key, last) data-testid="next">"Next →"</a> }
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
        let href = format!(
            "/snapshots/{id}/export?{}",
            export_query(table, format, filters)
        );
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
