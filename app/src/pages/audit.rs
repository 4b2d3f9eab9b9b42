use super::ui::{PagedListing, When};
use crate::api::history::{AuditView, Outcome, VerifyAudit, list_audit};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

#[component]
pub fn AuditPage() -> impl IntoView {
    let query = use_query_map();
    let q = move |k: &str| query.read().get(k).unwrap_or_default();
    let before = move || {
        query
            .read()
            .get("before")
            .and_then(|v| v.parse::<i64>().ok())
    };
    let entries = Resource::new(
        move || (q("user"), q("action"), q("outcome"), before()),
        |(u, a, o, b)| list_audit(u, a, o, b),
    );
    let verify = ServerAction::<VerifyAudit>::new();
    let base = crate::base::base();
    let csv = move || {
        format!(
            "{base}/audit.csv?user={}&action={}&outcome={}",
            url_escape(&q("user")),
            url_escape(&q("action")),
            url_escape(&q("outcome"))
        )
    };
    view! {
        <Title text="Audit"/>
        <h1>"Audit log"</h1>
        <p class="muted">"Every login, change, run, restore and export, with who, when and from where. Entries are hash-chained: editing or removing one breaks the chain."</p>
        <form class="filters" method="get" action=crate::base::url("/audit") aria-label="Filter the audit log">
            <label for="user">"User"</label>
            <input id="user" name="user" value=move || q("user")/>
            <label for="action">"Action"</label>
            <input id="action" name="action" value=move || q("action") placeholder="login, restore., job."/>
            <label for="outcome">"Outcome"</label>
            <select id="outcome" name="outcome">
                {std::iter::once("").chain(Outcome::ALL.iter().map(|o| o.as_str())).map(|o| view! {
                    <option value=o selected=move || q("outcome") == o>{if o.is_empty() { "any" } else { o }}</option>
                }).collect_view()}
            </select>
            <button type="submit" class="secondary">"Filter"</button>
            <a class="button" href=csv download="tablesafe-audit.csv">"Export CSV"</a>
        </form>
        <p>
            <button class="secondary" on:click=move |_| { verify.dispatch(VerifyAudit {}); }>"Verify the chain"</button>
            " "
            <span data-testid="chain" class=move || match verify.value().get() {
                Some(Ok(r)) if !r.holds => "error",
                _ => "",
            }>{move || verify.value().get().map(|r| match r {
                Ok(r) => r.summary,
                Err(e) => e.to_string(),
            })}</span>
        </p>
        <PagedListing items=entries empty="No entries." older="Older entries →"
            href=move |e: &AuditView| format!("/audit?user={}&action={}&outcome={}&before={}", url_escape(&q("user")), url_escape(&q("action")), url_escape(&q("outcome")), e.id)
            show=move |list| view! {
                <table class="list" data-testid="audit">
                    <thead><tr><th>"When"</th><th>"Who"</th><th>"From"</th><th>"Action"</th><th>"On"</th><th>"Outcome"</th><th>"Detail"</th></tr></thead>
                    <tbody>
                        {list.into_iter().map(|e| { let class = e.outcome.clone(); view! {
                            <tr class=class>
                                <td data-label="When"><When ms=e.at/></td>
                                <td data-label="Who">{e.username}</td>
                                <td data-label="From">{e.address}</td>
                                <td data-label="Action">{e.action}</td>
                                <td class="long" data-label="On" title=e.target.clone()>{e.target.clone()}</td>
                                <td data-label="Outcome">{e.outcome}</td>
                                <td class="long" data-label="Detail" title=e.detail.clone()>{e.detail.clone()}</td>
                            </tr>
                        }}).collect_view()}
                    </tbody>
                </table>
            }.into_any()/>
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
