//! Small pieces every page uses: formatting, form fields with errors next to them,
//! and the error line of a failed call.

use crate::error::AppError;
use leptos::prelude::*;

pub fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    for (unit, size) in [("GB", 1e9), ("MB", 1e6), ("kB", 1e3)] {
        if n >= size {
            return format!("{:.1} {unit}", n / size);
        }
    }
    format!("{n} B")
}

/// Unix milliseconds as UTC (year, month, day, hour, minute, second), by Howard
/// Hinnant's civil-from-days algorithm (no time zone tables in the browser bundle).
pub fn civil(ms: i64) -> (i64, i64, i64, i64, i64, i64) {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `YYYY-MM-DDTHH:MM[:SS[.fff]]` (a `datetime-local` input's value, read as UTC) as
/// unix milliseconds; None when empty or malformed.
pub fn parse_utc(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let sec: f64 = t.next().map(|v| v.parse().ok()).unwrap_or(Some(0.0))?;
    if !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || h > 23
        || mi > 59
        || !(0.0..60.0).contains(&sec)
    {
        return None;
    }
    Some(
        ((days_from_civil(y, m, day) * 86_400 + h * 3600 + mi * 60) as f64 * 1000.0
            + (sec * 1000.0).round()) as i64,
    )
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant), the inverse of `civil`.
fn days_from_civil(y: i64, m: i64, day: i64) -> i64 {
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC` (the same on server and browser, so
/// hydration matches).
pub fn time(ms: i64) -> String {
    let (y, m, d, h, mi, s) = civil(ms);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// Unix milliseconds as the machine-readable `YYYY-MM-DDTHH:MM:SSZ` of `<time datetime>`.
pub fn iso(ms: i64) -> String {
    let (y, m, d, h, mi, s) = civil(ms);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// A wall-clock reading (year, month, day, hour, minute, second) somewhere, written
/// like `time` without the zone.
fn wall_text((y, m, d, h, mi, s): (i64, i64, i64, i64, i64, i64)) -> String {
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// How far a zone's wall clock is ahead of UTC, as `UTC+05:30` / `UTC-03:00`.
pub fn offset_label(offset_ms: i64) -> String {
    let minutes = offset_ms.div_euclid(60_000);
    let sign = if minutes < 0 { '-' } else { '+' };
    let m = minutes.abs();
    format!("UTC{sign}{:02}:{:02}", m / 60, m % 60)
}

/// The text of instant `ms` read off a zone's wall clock `wall`: named after `zone`
/// when given (a policy's own zone), else after its offset from UTC (the browser's zone).
pub fn zoned_text(ms: i64, wall: (i64, i64, i64, i64, i64, i64), zone: Option<&str>) -> String {
    match zone {
        Some(zone) => format!("{} {zone}", wall_text(wall)),
        None => {
            let (y, m, d, h, mi, s) = wall;
            let wall_ms = (days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + s) * 1000;
            let offset = wall_ms - ms.div_euclid(1000) * 1000;
            format!("{} {}", wall_text(wall), offset_label(offset))
        }
    }
}

/// The wall clock at `ms` in IANA `zone` (None: the browser's own zone), from the
/// browser's `Intl.DateTimeFormat`; None outside a browser or for a zone it does not know.
fn wall_clock(ms: i64, zone: Option<&str>) -> Option<(i64, i64, i64, i64, i64, i64)> {
    use leptos::wasm_bindgen::{JsCast, JsValue};
    use leptos::web_sys::js_sys::{Array, Date, Function, Intl, Object, Reflect, global};
    let intl = Reflect::get(&global(), &"Intl".into()).ok()?;
    let ctor: Function = Reflect::get(&intl, &"DateTimeFormat".into())
        .ok()?
        .dyn_into()
        .ok()?;
    let opts = Object::new();
    for (k, v) in [
        ("year", "numeric"),
        ("month", "2-digit"),
        ("day", "2-digit"),
        ("hour", "2-digit"),
        ("minute", "2-digit"),
        ("second", "2-digit"),
        ("hourCycle", "h23"),
    ] {
        Reflect::set(&opts, &k.into(), &v.into()).ok()?;
    }
    if let Some(zone) = zone {
        Reflect::set(&opts, &"timeZone".into(), &zone.into()).ok()?;
    }
    // Constructed through Reflect so an unknown zone is an error here, not a panic.
    let format: Intl::DateTimeFormat =
        Reflect::construct(&ctor, &Array::of2(&"en-US".into(), &opts))
            .ok()?
            .unchecked_into();
    let parts = format.format_to_parts(&Date::new(&JsValue::from_f64(ms as f64)));
    let mut v = [None::<i64>; 6];
    for part in parts.iter() {
        let kind = Reflect::get(&part, &"type".into()).ok()?.as_string()?;
        let slot = match kind.as_str() {
            "year" => 0,
            "month" => 1,
            "day" => 2,
            "hour" => 3,
            "minute" => 4,
            "second" => 5,
            _ => continue,
        };
        let value = Reflect::get(&part, &"value".into()).ok()?.as_string()?;
        v[slot] = value.trim().parse().ok();
    }
    Some((v[0]?, v[1]?, v[2]?, v[3]?, v[4]?, v[5]?))
}

/// The text of instant `ms` for the reader: `time(ms)` (UTC) on the server and in the
/// browser's first render (so hydration matches), then, once hydrated, the wall clock of
/// `zone` (None: the browser's zone). For places that take only text (an `<option>`);
/// elsewhere use `<When>`.
pub fn local_time(ms: i64, zone: Option<String>) -> Signal<String> {
    let (text, set_text) = signal(time(ms));
    Effect::new(move |_| {
        if let Some(wall) = wall_clock(ms, zone.as_deref()) {
            set_text.set(zoned_text(ms, wall, zone.as_deref()));
        }
    });
    text.into()
}

/// A time the console shows: in the browser's zone (or `zone`, named), with the UTC
/// time on hover and machine-readable in `datetime`. The server, which cannot know the
/// reader's zone, renders UTC (marked "UTC").
#[component]
pub fn When(ms: i64, #[prop(optional, into)] zone: Option<String>) -> impl IntoView {
    let text = local_time(ms, zone);
    view! { <time datetime=iso(ms) title=time(ms)>{text}</time> }
}

pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{}.{} s", s, (ms.max(0) % 1000) / 100),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// The fields whose errors some form shows next to them, per server function (its type
/// name): `field_error` adds to it, `general_error` reads it. Facts about the code, not
/// about a user or a request (every form of one server function shows the same fields),
/// so one set for the whole program is right.
static SHOWN_FIELDS: std::sync::Mutex<std::collections::BTreeSet<(&str, &str)>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn field_shown(function: &'static str, field: &str) -> bool {
    SHOWN_FIELDS
        .lock()
        .map(|s| s.contains(&(function, field)))
        .unwrap_or(false)
}

/// The error of the last run of `action`, for field `name` (which this form shows: an
/// error about a field no form shows goes to [`general_error`] instead).
pub fn field_error<A, O>(action: ServerAction<A>, name: &'static str) -> Signal<Option<String>>
where
    A: leptos::server_fn::ServerFn<Output = O, Error = AppError> + Clone + Send + Sync + 'static,
    O: Clone + Send + Sync + 'static,
{
    if let Ok(mut shown) = SHOWN_FIELDS.lock() {
        shown.insert((std::any::type_name::<A>(), name));
    }
    last_error(action, move |e| e.for_field(name))
}

/// The error of the last run of `action` that no field of its form shows: one not about
/// a field, or about a field the form has no [`field_error`] for (so no server error is
/// lost; it is shown with the field's name).
pub fn general_error<A, O>(action: ServerAction<A>) -> Signal<Option<String>>
where
    A: leptos::server_fn::ServerFn<Output = O, Error = AppError> + Clone + Send + Sync + 'static,
    O: Clone + Send + Sync + 'static,
{
    let function = std::any::type_name::<A>();
    last_error(action, move |e| match e.field() {
        Some((f, _)) if field_shown(function, f) => None,
        Some((f, m)) => Some(format!("{}: {m}", f.replace('_', " "))),
        None => Some(e.to_string()),
    })
}

/// What a save made on change (a checkbox, a select) says: "Saved" once the server
/// accepted it, its error if refused, nothing while no save was made.
#[component]
pub fn SaveStatus<A, O>(
    action: ServerAction<A>,
    #[prop(optional)] testid: &'static str,
) -> impl IntoView
where
    A: leptos::server_fn::ServerFn<Output = O, Error = AppError> + Clone + Send + Sync + 'static,
    O: Clone + Send + Sync + 'static,
{
    let testid = if testid.is_empty() {
        "save-status"
    } else {
        testid
    };
    view! {
        <span class="save-status" aria-live="polite" data-testid=testid>
            {move || match action.value().get() {
                _ if action.pending().get() => view! { <span class="muted">"Saving…"</span> }.into_any(),
                Some(Ok(_)) => view! { <span class="ok">"Saved"</span> }.into_any(),
                Some(Err(e)) => view! { <span class="error" role="alert">{e.to_string()}</span> }.into_any(),
                None => ().into_any(),
            }}
        </span>
    }
}

/// What `pick` takes from the error of the last run of `action`, if it failed.
fn last_error<A, O>(
    action: ServerAction<A>,
    pick: impl Fn(&AppError) -> Option<String> + Send + Sync + 'static,
) -> Signal<Option<String>>
where
    A: leptos::server_fn::ServerFn<Output = O, Error = AppError> + Clone + Send + Sync + 'static,
    O: Clone + Send + Sync + 'static,
{
    Signal::derive(move || {
        action
            .value()
            .get()
            .and_then(|r| r.err())
            .and_then(|e| pick(&e))
    })
}

/// The page's `:id` route parameter (0 when missing or not a number, which no row has).
pub fn id_param() -> impl Fn() -> i64 + Copy + Send + Sync + 'static {
    let params = leptos_router::hooks::use_params_map();
    move || {
        params
            .read()
            .get("id")
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    }
}

/// The shared validation of one field (see `crate::forms`).
pub type Check = fn(&str) -> Result<(), AppError>;

/// A labelled input whose error shows under it: from the shared check as soon as the
/// user leaves the field, or from the server after submitting.
#[component]
pub fn Field(
    label: &'static str,
    name: &'static str,
    #[prop(optional)] kind: Option<&'static str>,
    #[prop(optional)] placeholder: Option<&'static str>,
    #[prop(optional, into)] value: Option<String>,
    #[prop(into)] error: Signal<Option<String>>,
    #[prop(optional)] check: Option<Check>,
    #[prop(optional)] multiline: bool,
) -> impl IntoView {
    let (local, set_local) = signal(None::<String>);
    let on_blur = move |ev: leptos::ev::FocusEvent| {
        if let Some(check) = check {
            set_local.set(check(&event_target_value(&ev)).err().map(|e| e.to_string()));
        }
    };
    let message = move || local.get().or_else(|| error.get());
    let id = format!("f-{name}");
    let err_id = format!("f-{name}-error");
    let input = if multiline {
        view! {
            <textarea id=id.clone() name=name rows="3" placeholder=placeholder.unwrap_or("")
                aria-describedby=err_id.clone() on:blur=on_blur>{value.clone()}</textarea>
        }
        .into_any()
    } else {
        view! {
            <input id=id.clone() name=name type=kind.unwrap_or("text") placeholder=placeholder.unwrap_or("")
                value=value.clone() aria-describedby=err_id.clone() on:blur=on_blur/>
        }
        .into_any()
    };
    view! {
        <div class="field">
            <label for=id>{label}</label>
            {input}
            <p class="field-error" id=err_id data-testid=format!("error-{name}")>{message}</p>
        </div>
    }
}

/// An error line (or nothing).
#[component]
pub fn ErrorLine(#[prop(into)] error: Signal<Option<String>>) -> impl IntoView {
    view! {
        <Show when=move || error.get().is_some()>
            <p class="error" role="alert">{move || error.get()}</p>
        </Show>
    }
}

/// Shows a resource's failure as an error line.
pub fn failed(e: AppError) -> AnyView {
    view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any()
}

/// A list loaded from the server: "Loading…" until it arrives, then the error, `empty`
/// when it has no item, or `show` of its items.
#[component]
pub fn Listing<T, F>(
    items: Resource<Result<Vec<T>, AppError>>,
    empty: &'static str,
    show: F,
) -> impl IntoView
where
    T: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static,
    F: Fn(Vec<T>) -> AnyView + Clone + Send + Sync + 'static,
{
    view! {
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || {
                let show = show.clone();
                Suspend::new(async move { listed(items.await, empty, show) })
            }}
        </Suspense>
    }
}

/// One page of a longer list (newest first), kept on screen while another page or
/// filter loads; under a full page, a link `older` (its text) to the page after the
/// last item (`href` of that item).
#[component]
pub fn PagedListing<T, F, H>(
    items: Resource<Result<Vec<T>, AppError>>,
    empty: &'static str,
    show: F,
    older: &'static str,
    href: H,
) -> impl IntoView
where
    T: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static,
    F: Fn(Vec<T>) -> AnyView + Clone + Send + Sync + 'static,
    H: Fn(&T) -> String + Clone + Send + Sync + 'static,
{
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || {
                let (show, href) = (show.clone(), href.clone());
                Suspend::new(async move {
                    listed(items.await, empty, move |list: Vec<T>| {
                        let more = (list.len() as i64 == crate::api::PAGE)
                            .then(|| list.last().map(&href))
                            .flatten();
                        view! {
                            {show(list)}
                            {more.map(|more| view! { <p><a href=crate::base::url(&more)>{older}</a></p> })}
                        }
                        .into_any()
                    })
                })
            }}
        </Transition>
    }
}

fn listed<T>(
    result: Result<Vec<T>, AppError>,
    empty: &'static str,
    show: impl Fn(Vec<T>) -> AnyView,
) -> AnyView {
    match result {
        Err(e) => failed(e),
        Ok(list) if list.is_empty() => view! { <p class="muted">{empty}</p> }.into_any(),
        Ok(list) => show(list),
    }
}

/// The logged-in user, loaded once by the layout and shared with every page.
#[derive(Clone, Copy)]
pub struct CurrentUser(pub Resource<Result<Option<crate::auth::SessionUser>, AppError>>);

/// Renders `children` only for roles that have `perm` (the server enforces it anyway;
/// this only spares users buttons that would be refused).
#[component]
pub fn IfCan(perm: crate::auth::Perm, children: ChildrenFn) -> impl IntoView {
    let user = use_context::<CurrentUser>();
    let children = StoredValue::new(children);
    view! {
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                let allowed = match user {
                    Some(CurrentUser(r)) => matches!(r.await, Ok(Some(u)) if u.role.can(perm)),
                    None => false,
                };
                allowed.then(|| children.with_value(|c| c()))
            })}
        </Suspense>
    }
}

/// `on:change` of a filter form's control: submits its form, a plain GET (the page
/// loads again with the filter in the URL; without JavaScript the form's `<noscript>`
/// button does it). Not an inline `onchange="this.form.submit()"`: the
/// Content-Security-Policy runs no inline event handlers.
pub fn submit_own_form(ev: leptos::ev::Event) {
    use leptos::wasm_bindgen::JsCast;
    let form = ev
        .target()
        .and_then(|t| t.dyn_into::<leptos::web_sys::Element>().ok())
        .and_then(|el| el.closest("form").ok().flatten())
        .and_then(|f| f.dyn_into::<leptos::web_sys::HtmlFormElement>().ok());
    if let Some(form) = form {
        let _ = form.submit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_input_values_parse_back_to_the_instant() {
        for ms in [
            0i64,
            951_782_400_000,
            1_796_218_749_271 / 1000 * 1000,
            4_102_444_799_000,
        ] {
            let (y, m, d, h, mi, s) = civil(ms);
            let text = format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
            assert_eq!(parse_utc(&text), Some(ms), "{text}");
        }
        assert_eq!(
            parse_utc("2026-12-01T14:06"),
            parse_utc("2026-12-01T14:06:00")
        );
        assert_eq!(parse_utc("2026-12-01T14:06:59.5").unwrap() % 1000, 500);
        assert_eq!(parse_utc(""), None);
        assert_eq!(parse_utc("2026-13-01T00:00"), None);
    }

    #[test]
    fn times_read_in_a_zone_say_which_zone() {
        // 2026-12-07 10:37:16.5 UTC, as read in Kolkata (+05:30) and in New York (-05:00).
        let ms = parse_utc("2026-12-07T10:37:16.5").unwrap();
        assert_eq!(iso(ms), "2026-12-07T10:37:16Z");
        assert_eq!(
            zoned_text(ms, (2026, 12, 7, 16, 7, 16), None),
            "2026-12-07 16:07:16 UTC+05:30"
        );
        assert_eq!(
            zoned_text(ms, (2026, 12, 7, 5, 37, 16), None),
            "2026-12-07 05:37:16 UTC-05:00"
        );
        assert_eq!(
            zoned_text(ms, (2026, 12, 7, 10, 37, 16), None),
            "2026-12-07 10:37:16 UTC+00:00"
        );
        // Across midnight and the year's end.
        let ny = parse_utc("2027-01-01T02:00:00").unwrap();
        assert_eq!(
            zoned_text(ny, (2026, 12, 31, 21, 0, 0), None),
            "2026-12-31 21:00:00 UTC-05:00"
        );
        assert_eq!(
            zoned_text(ms, (2026, 12, 7, 11, 37, 16), Some("Europe/Berlin")),
            "2026-12-07 11:37:16 Europe/Berlin"
        );
        assert_eq!(offset_label(-(3 * 60 + 30) * 60_000), "UTC-03:30");
    }
}
