use crate::api::history::server_info;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Dashboard() -> impl IntoView {
    use super::ui::failed;
    use crate::api::history::dashboard_data;
    let info = Resource::new(|| (), |_| server_info());
    let data = Resource::new(|| (), |_| dashboard_data());
    view! {
        <Title text="Dashboard"/>
        <h1>"Dashboard"</h1>
        <super::requests::WaitingForYou/>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Err(e) => failed(e),
                    Ok(d) => view! {
                        <section class="cards" aria-label="Sources" data-testid="source-health">
                            {d.sources.is_empty().then(|| view! {
                                <article class="card"><h2>"Welcome"</h2><p>"Add a " <a href=crate::base::url("/sources")>"source"</a> ", a " <a href=crate::base::url("/targets")>"target"</a> " and a " <a href=crate::base::url("/policies")>"policy"</a> " to take your first backup."</p></article>
                            })}
                            {d.sources.into_iter().map(|s| source_card(s, d.now_ms)).collect_view()}
                        </section>
                        {(!d.proven.is_empty()).then(|| proven_view(d.proven.clone(), d.now_ms))}
                        <section class="charts">
                            <figure data-testid="chart-stored">
                                <figcaption>"Bytes stored per snapshot"</figcaption>
                                {chart(d.stored.iter().map(|(t, b)| (*t, *b as f64)).collect(), Quantity::Bytes, "")}
                            </figure>
                            <figure data-testid="chart-backups">
                                <figcaption>"Backup duration"</figcaption>
                                {chart(d.backup_durations.clone(), Quantity::Seconds, "")}
                            </figure>
                            <figure data-testid="chart-restores">
                                <figcaption>"Restore duration"</figcaption>
                                {chart(d.restore_durations.clone(), Quantity::Seconds, "restore")}
                            </figure>
                        </section>
                    }.into_any(),
                }
            })}
        </Suspense>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                info.await.ok().map(|i| view! {
                    <p class="muted" data-testid="server-info">
                        {format!(
                            "tablesafe {} · history database: {} (schema {})",
                            i.version, i.history_backend, i.schema_version
                        )}
                    </p>
                })
            })}
        </Suspense>
    }
}

/// How a source is doing now: its latest backup decides (an old failure since
/// recovered from is a note, not an alarm); a source never backed up is flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Ok,
    Failed,
    Never,
}

fn health(s: &crate::api::history::SourceHealth) -> Health {
    if s.last_backup_failed {
        Health::Failed
    } else if s.last_success_ms.is_none() {
        Health::Never
    } else {
        Health::Ok
    }
}

fn source_card(s: crate::api::history::SourceHealth, now: i64) -> impl IntoView {
    use super::ui::{When, duration};
    let state = health(&s);
    let (class, state_name, badge) = match state {
        Health::Ok => ("card", "ok", None),
        Health::Failed => (
            "card bad",
            "failed",
            Some(("badge failed", "last backup failed")),
        ),
        Health::Never => (
            "card never",
            "never",
            Some(("badge never", "never backed up")),
        ),
    };
    let age = s
        .last_success_ms
        .map(|t| format!("{} ago", duration(now - t)));
    let failures = s.failures_7d;
    let recovered = (state == Health::Ok && failures > 0).then(|| {
        format!(
            "{failures} failed job{} in the last 7 days, since succeeded",
            if failures == 1 { "" } else { "s" }
        )
    });
    view! {
        <article class=class data-testid=format!("health-{}", s.name) data-state=state_name>
            <h2>{s.name.clone()}</h2>
            {badge.map(|(c, text)| view! { <p><span class=c data-testid="health-badge">{text}</span></p> })}
            <p>"Last successful backup: " <strong>{match s.last_success_ms {
                Some(t) => view! { <When ms=t/> }.into_any(),
                None => "never".into_any(),
            }}</strong></p>
            {age.map(|a| view! { <p class="muted">{a}</p> })}
            <p data-testid="next-run">"Next run: " {match s.next_run {
                Some(t) => view! { <When ms=t/> }.into_any(),
                None => "not scheduled".into_any(),
            }}</p>
            {match recovered {
                Some(note) => view! { <p class="muted" data-testid="recovered">{note}</p> }.into_any(),
                None => view! { <p>"Failures in the last 7 days: " <strong>{failures}</strong></p> }.into_any(),
            }}
        </article>
    }
}

/// Per policy, the newest snapshot a restore drill proved restorable, and how the last
/// drill went.
fn proven_view(list: Vec<crate::api::drills::ProvenView>, now: i64) -> AnyView {
    use super::ui::{When, duration};
    view! {
        <section aria-label="Last proven restorable" data-testid="proven">
            <h2>"Last proven restorable"</h2>
            <table class="list">
                <thead><tr><th>"Policy"</th><th>"Snapshot proven"</th><th>"Last drill"</th></tr></thead>
                <tbody>
                    {list.into_iter().map(|p| view! {
                        <tr data-testid=format!("proven-{}", p.policy)>
                            <td><a href=crate::base::url("/drills")>{p.policy.clone()}</a></td>
                            <td>{match (p.proven_snapshot_time, p.proven_at) {
                                (Some(t), Some(at)) => view! {
                                    "taken " <When ms=t/> {format!(" — proven {} ago", duration(now - at))}
                                }.into_any(),
                                _ => "never".into_any(),
                            }}</td>
                            <td class={if p.last_passed { "" } else { "error" }}>
                                <When ms=p.last_drill_at/>{if p.last_passed { ": passed" } else { ": FAILED" }}
                            </td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
    .into_any()
}

/// What a chart's values measure, which decides the unit its axis is labelled in.
#[derive(Debug, Clone, Copy)]
enum Quantity {
    Bytes,
    Seconds,
}

impl Quantity {
    /// The axis title's unit and the divisor that turns a value into it, chosen so the
    /// largest value reads as a number of a handy size.
    fn unit(self, max: f64) -> (&'static str, f64) {
        let units: &[(&'static str, f64)] = match self {
            Quantity::Bytes => &[("GB", 1e9), ("MB", 1e6), ("kB", 1e3), ("bytes", 1.0)],
            Quantity::Seconds => &[("hours", 3600.0), ("minutes", 60.0), ("seconds", 1.0)],
        };
        units
            .iter()
            .copied()
            .find(|(_, size)| max >= 2.0 * size)
            .unwrap_or(units[units.len() - 1])
    }

    fn name(self) -> &'static str {
        match self {
            Quantity::Bytes => "stored",
            Quantity::Seconds => "duration",
        }
    }
}

/// Round tick values for an axis from 0 to (at least) `max`: 0, step, 2·step, … up to
/// the first multiple of step ≥ max, with step 1, 2 or 5 × 10ⁿ so there are 2 to 5
/// intervals.
fn ticks(max: f64) -> Vec<f64> {
    if max.is_nan() || max <= 0.0 {
        return vec![0.0, 1.0];
    }
    let rough = max / 4.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|f| f * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude);
    let n = (max / step - 1e-9).ceil().max(1.0) as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// A tick value written short: no trailing ".0", at most two decimals.
fn tick_label(v: f64) -> String {
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Which of `n` points (oldest first) get a date under the x axis: the first, the
/// middle and the last.
fn x_ticks(n: usize) -> Vec<usize> {
    let mut picks = vec![0, n / 2, n.saturating_sub(1)];
    picks.dedup();
    picks.retain(|i| *i < n);
    picks
}

/// An SVG bar chart of (time, value) points, oldest first: the y axis titled with its
/// unit and labelled at round values, the x axis with the times of the first, middle
/// and last bars (in the reader's zone once the page is live).
fn chart(points: Vec<(i64, f64)>, quantity: Quantity, class: &'static str) -> impl IntoView {
    use super::ui::local_time;
    if points.is_empty() {
        return view! { <p class="muted">"No data yet."</p> }.into_any();
    }
    let max = points.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let (unit, size) = quantity.unit(max);
    let ticks = ticks(max / size);
    let top = ticks.last().copied().unwrap_or(1.0).max(1e-9);
    // The plot area inside the margins that hold the axes' labels.
    let (left, right, top_m, plot_h) = (56.0, 8.0, 8.0, 150.0);
    let (w, h) = (600.0, top_m + plot_h + 44.0);
    let plot_w = w - left - right;
    let bw = plot_w / points.len() as f64;
    let y_of = move |v: f64| top_m + plot_h - v / top * plot_h;
    let axis_title = format!("{} ({unit})", quantity.name());
    let x_labels = x_ticks(points.len())
        .into_iter()
        .map(|i| (left + (i as f64 + 0.5) * bw, points[i].0))
        .collect::<Vec<_>>();
    let count = points.len();
    let first = local_time(points[0].0, None);
    view! {
        <svg viewBox=format!("0 0 {w} {h}") role="img" class=format!("chart {class}")
            aria-label=format!("{count} bars, {axis_title} from 0 to {}", tick_label(top))>
            <text class="axis-title" transform=format!("translate(12 {}) rotate(-90)", top_m + plot_h / 2.0)
                text-anchor="middle" data-testid="y-axis-title">{axis_title.clone()}</text>
            {ticks.iter().map(|t| {
                let y = y_of(*t);
                view! {
                    <line class="grid" x1=left.to_string() x2=(w - right).to_string()
                        y1=format!("{y:.1}") y2=format!("{y:.1}")/>
                    <text class="tick" x=(left - 4.0).to_string() y=format!("{:.1}", y + 4.0)
                        text-anchor="end">{tick_label(*t)}</text>
                }
            }).collect_view()}
            {points.into_iter().enumerate().map(|(i, (t, v))| {
                let bh = (v / size / top * plot_h).max(1.0);
                let value = format!("{} {unit}", tick_label(v / size));
                let when = local_time(t, None);
                view! {
                    <rect x=format!("{:.1}", left + i as f64 * bw + 1.0) y=format!("{:.1}", top_m + plot_h - bh)
                        width=format!("{:.1}", (bw - 2.0).max(1.0)) height=format!("{bh:.1}")>
                        <title>{move || format!("{}: {value}", when.get())}</title>
                    </rect>
                }
            }).collect_view()}
            <line class="axis" x1=left.to_string() x2=(w - right).to_string()
                y1=(top_m + plot_h).to_string() y2=(top_m + plot_h).to_string()/>
            {x_labels.into_iter().map(|(x, t)| {
                let when = local_time(t, None);
                view! {
                    <text class="tick" x=format!("{x:.1}") y=(top_m + plot_h + 16.0).to_string()
                        text-anchor="middle">{move || short_time(&when.get())}</text>
                }
            }).collect_view()}
            <text class="axis-title" x=(left + plot_w / 2.0).to_string() y=(h - 6.0).to_string()
                text-anchor="middle" data-testid="x-axis-title">
                {move || format!("date and time ({})", zone_of(&first.get()))}</text>
        </svg>
    }
    .into_any()
}

/// `MM-DD HH:MM` of a time as `super::ui::time` or `local_time` write it.
fn short_time(text: &str) -> String {
    text.get(5..16).unwrap_or(text).to_string()
}

/// The zone part (`UTC`, `UTC+05:30`) of a time as `super::ui::time` or `local_time`
/// write it.
fn zone_of(text: &str) -> &str {
    text.splitn(3, ' ').nth(2).unwrap_or("UTC")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::history::SourceHealth;

    #[test]
    fn axis_ticks_are_round_and_cover_the_largest_value() {
        assert_eq!(ticks(7.3), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(ticks(100.0), vec![0.0, 50.0, 100.0]);
        let labels = |max| ticks(max).into_iter().map(tick_label).collect::<Vec<_>>();
        assert_eq!(labels(0.42), ["0", "0.2", "0.4", "0.6"]);
        assert_eq!(ticks(0.0), vec![0.0, 1.0]);
        for max in [0.013, 1.0, 3.7, 19.0, 999.0, 12_345.0] {
            let t = ticks(max);
            assert!(*t.last().unwrap() >= max, "{max}: {t:?}");
            assert!((3..=7).contains(&t.len()), "{max}: {t:?}");
        }
        assert_eq!(tick_label(2.0), "2");
        assert_eq!(tick_label(0.30000000000000004), "0.3");
        assert_eq!(tick_label(12.5), "12.5");
    }

    #[test]
    fn axes_are_labelled_in_a_unit_that_fits() {
        assert_eq!(Quantity::Bytes.unit(3.5e6), ("MB", 1e6));
        assert_eq!(Quantity::Bytes.unit(1.5e6), ("kB", 1e3));
        assert_eq!(Quantity::Bytes.unit(10.0), ("bytes", 1.0));
        assert_eq!(Quantity::Seconds.unit(0.4), ("seconds", 1.0));
        assert_eq!(Quantity::Seconds.unit(600.0), ("minutes", 60.0));
        assert_eq!(x_ticks(1), vec![0]);
        assert_eq!(x_ticks(2), vec![0, 1]);
        assert_eq!(x_ticks(9), vec![0, 4, 8]);
        assert_eq!(short_time("2026-12-07 16:07:16 UTC+05:30"), "12-07 16:07");
        assert_eq!(zone_of("2026-12-07 16:07:16 UTC+05:30"), "UTC+05:30");
        assert_eq!(zone_of("2026-12-07 10:37:16 UTC"), "UTC");
    }

    #[test]
    fn a_source_is_coloured_by_its_latest_backup() {
        let s = |last_success_ms, last_backup_failed, failures_7d| SourceHealth {
            source_id: 1,
            name: "shop".into(),
            last_success_ms,
            last_backup_failed,
            next_run: None,
            failures_7d,
        };
        assert_eq!(health(&s(None, false, 0)), Health::Never);
        assert_eq!(health(&s(None, true, 1)), Health::Failed);
        assert_eq!(health(&s(Some(5), true, 1)), Health::Failed);
        // One old failure, then a success: healthy.
        assert_eq!(health(&s(Some(5), false, 3)), Health::Ok);
    }
}
