//! Notifications: the channels, a form to add or change one, *Send test*, and the
//! deliveries with their attempts and errors (retry for the given-up ones).

use super::ui::{ErrorLine, IfCan, Listing, When, general_error};
use crate::api::notify::{
    ChannelInput, ChannelKind, ChannelView, DeleteChannel, DeliveryStatus, EVENTS, RetryDelivery,
    SaveChannel, Security, SetChannelEnabled, TestChannel, list_channels, list_deliveries,
};
use crate::auth::Perm;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn NotificationsPage() -> impl IntoView {
    let save = ServerAction::<SaveChannel>::new();
    let delete = ServerAction::<DeleteChannel>::new();
    let test = ServerAction::<TestChannel>::new();
    let retry = ServerAction::<RetryDelivery>::new();
    let pause = ServerAction::<SetChannelEnabled>::new();
    let (status, set_status) = signal(String::new());
    let form = ChannelForm::new();
    let changed = move || {
        (
            save.version().get(),
            delete.version().get(),
            test.version().get(),
            retry.version().get(),
            pause.version().get(),
        )
    };
    let channels = Resource::new(changed, |_| list_channels());
    let deliveries = Resource::new(
        move || (changed(), status.get()),
        |(_, status)| list_deliveries(status, 0),
    );
    // A saved channel empties the form.
    Effect::new(move |_| {
        if let Some(Ok(_)) = save.value().get() {
            form.reset();
        }
    });
    // What the last change did, in words.
    let (said, set_said) = signal(None::<String>);
    Effect::new(move |_| {
        if let Some(Ok(_)) = save.value().get() {
            set_said.set(Some("Channel saved.".into()));
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(())) = delete.value().get() {
            set_said.set(Some("Channel deleted.".into()));
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(())) = pause.value().get() {
            set_said.set(Some("Channel updated.".into()));
        }
    });
    let test_result = move || {
        test.value().get().map(|r| match r {
            Ok(t) if t.delivered => view! {
                <p class="ok" role="status" data-testid="test-result">{format!("Test message delivered (delivery #{}).", t.delivery_id)}</p>
            }.into_any(),
            Ok(t) => view! {
                <p class="error" role="alert" data-testid="test-result">
                    {format!("Not delivered: {}", t.error.unwrap_or_default())}
                </p>
            }.into_any(),
            Err(e) => view! { <p class="error" role="alert" data-testid="test-result">{e.to_string()}</p> }.into_any(),
        })
    };
    view! {
        <Title text="Notifications"/>
        <h1>"Notifications"</h1>
        <p class="muted">
            "Events go to each channel that wants them through a durable outbox: a channel that is down is retried with backoff (8 attempts, doubling from the server's retry interval) and delays nothing else. "
            "Webhooks carry the event as JSON, signed: " <code>"x-tablesafe-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\">"</code> "."
        </p>
        {test_result}
        {move || said.get().map(|m| view! { <p class="ok" role="status" data-testid="channel-saved">{m}</p> })}
        <ErrorLine error=general_error(delete)/>
        <ErrorLine error=general_error(pause)/>
        <ErrorLine error=general_error(retry)/>
        <h2>"Channels"</h2>
        <Listing items=channels empty="No channels yet." show=move |list| {
            view! {
                <table class="list" data-testid="channels">
                    <thead><tr><th>"Name"</th><th>"Kind"</th><th>"Sends"</th><th>"Events"</th><th>"Last delivery"</th><th>"Waiting"</th><th>"Given up"</th><th></th></tr></thead>
                    <tbody>
                        {list.into_iter().map(|ch| channel_row(ch, form, test, delete, pause)).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        }/>
        <IfCan perm=Perm::Configure>
            <ChannelEditor form=form save=save/>
        </IfCan>
        <h2>"Deliveries"</h2>
        <div class="form inline">
            <label for="delivery-status">"Status"</label>
            <select id="delivery-status" data-testid="delivery-status" on:change=move |ev| set_status.set(event_target_value(&ev))>
                <option value="">"all"</option>
                {DeliveryStatus::ALL.iter().map(|s| view! { <option value=s.as_str()>{s.as_str()}</option> }).collect_view()}
            </select>
        </div>
        <Listing items=deliveries empty="No deliveries." show=move |list| {
            view! {
                <table class="list" data-testid="deliveries">
                    <thead><tr><th>"#"</th><th>"When"</th><th>"Channel"</th><th>"Event"</th><th>"What"</th><th>"Status"</th><th>"Attempts"</th><th>"Last error / next attempt"</th><th></th></tr></thead>
                    <tbody>
                        {list.into_iter().map(|d| {
                            let id = d.id;
                            let failed_row = d.status == DeliveryStatus::Failed;
                            let note = match d.status {
                                DeliveryStatus::Pending if d.attempts > 0 => view! { {format!("{} — next attempt ", d.last_error.clone().unwrap_or_default())}<When ms=d.next_attempt_at/> }.into_any(),
                                DeliveryStatus::Delivered => d.delivered_at.map(|t| view! { "delivered " <When ms=t/> }.into_any()).unwrap_or_else(|| ().into_any()),
                                _ => d.last_error.clone().unwrap_or_default().into_any(),
                            };
                            view! {
                                <tr data-testid=format!("delivery-{id}") data-status=d.status.as_str() data-event=d.event.clone()>
                                    <td class="num" data-label="Delivery">{id}</td>
                                    <td data-label="When"><When ms=d.created_at/></td>
                                    <td data-label="Channel">{d.channel.clone()}</td>
                                    <td class="mono" data-label="Event">{d.event.clone()}</td>
                                    <td>{d.summary.clone()}</td>
                                    <td><span class=format!("badge {}", d.status)>{d.status.as_str()}</span></td>
                                    <td class="num" data-label="Attempts">{d.attempts}</td>
                                    <td class="wrap">{note}</td>
                                    <td>
                                        <Show when=move || failed_row>
                                            <IfCan perm=Perm::Configure>
                                                <button class="secondary" on:click=move |_| { retry.dispatch(RetryDelivery { id }); }>"Retry"</button>
                                            </IfCan>
                                        </Show>
                                    </td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        }/>
    }
}

fn channel_row(
    ch: ChannelView,
    form: ChannelForm,
    test: ServerAction<TestChannel>,
    delete: ServerAction<DeleteChannel>,
    pause: ServerAction<SetChannelEnabled>,
) -> impl IntoView {
    let id = ch.id;
    let enabled = ch.enabled;
    let last = ch
        .last
        .as_ref()
        .map(|d| {
            view! { {format!("{} ", d.status)}<When ms=d.created_at/>{format!(" ({})", d.event)} }
                .into_any()
        })
        .unwrap_or_else(|| "none yet".into_any());
    let events = ch.events.join(", ");
    let name = ch.name.clone();
    let edit = ch.clone();
    view! {
        <tr data-testid=format!("channel-{}", ch.name)>
            <td>{ch.name.clone()}{(!ch.enabled).then_some(" (paused)")}</td>
            <td data-label="Kind">{ch.kind.label()}</td>
            <td class="mono" data-label="Sends">{ch.summary.clone()}</td>
            <td class="mono wrap" data-label="Events">{events}</td>
            <td data-label="Last delivery">{last}</td>
            <td class="num" data-label="Waiting">{ch.waiting}</td>
            <td class="num" data-label="Given up" data-testid=format!("failed-{}", ch.name)>{ch.failed}</td>
            <td>
                <IfCan perm=Perm::Configure>
                    <button class="secondary" data-testid=format!("test-{name}") disabled=move || test.pending().get()
                        on:click=move |_| { test.dispatch(TestChannel { id }); }>"Send test"</button>
                    <button class="secondary" on:click={
                        let edit = edit.clone();
                        move |_| form.load(&edit)
                    }>"Edit"</button>
                    <button class="secondary" data-testid=format!("pause-{name}") disabled=move || pause.pending().get()
                        on:click=move |_| { pause.dispatch(SetChannelEnabled { id, enabled: !enabled }); }>
                        {if enabled { "Pause" } else { "Resume" }}
                    </button>
                    <button class="secondary danger" data-testid=format!("delete-{name}") on:click=move |_| {
                        #[cfg(feature = "hydrate")]
                        if !window().confirm_with_message("Delete this channel and its deliveries?").unwrap_or(false) {
                            return;
                        }
                        delete.dispatch(DeleteChannel { id });
                    }>"Delete"</button>
                </IfCan>
            </td>
        </tr>
    }
}

/// The add/change form's state.
#[derive(Clone, Copy)]
struct ChannelForm {
    id: RwSignal<Option<i64>>,
    name: RwSignal<String>,
    kind: RwSignal<String>,
    url: RwSignal<String>,
    secret: RwSignal<String>,
    host: RwSignal<String>,
    port: RwSignal<String>,
    security: RwSignal<String>,
    username: RwSignal<String>,
    password: RwSignal<String>,
    from: RwSignal<String>,
    to: RwSignal<String>,
    events: RwSignal<Vec<String>>,
    enabled: RwSignal<bool>,
}

impl ChannelForm {
    fn new() -> Self {
        ChannelForm {
            id: RwSignal::new(None),
            name: RwSignal::new(String::new()),
            kind: RwSignal::new("webhook".into()),
            url: RwSignal::new(String::new()),
            secret: RwSignal::new(String::new()),
            host: RwSignal::new(String::new()),
            port: RwSignal::new("587".into()),
            security: RwSignal::new(Security::Starttls.as_str().into()),
            username: RwSignal::new(String::new()),
            password: RwSignal::new(String::new()),
            from: RwSignal::new(String::new()),
            to: RwSignal::new(String::new()),
            events: RwSignal::new(EVENTS.iter().map(|(e, _)| e.to_string()).collect()),
            enabled: RwSignal::new(true),
        }
    }

    fn reset(self) {
        let fresh = ChannelForm::new();
        self.id.set(None);
        self.name.set(String::new());
        self.kind.set("webhook".into());
        for s in [
            self.url,
            self.secret,
            self.host,
            self.username,
            self.password,
            self.from,
            self.to,
        ] {
            s.set(String::new());
        }
        self.port.set("587".into());
        self.security.set(Security::Starttls.as_str().into());
        self.events.set(fresh.events.get_untracked());
        self.enabled.set(true);
    }

    /// Fills the form from a channel to change it; secret fields stay empty (kept).
    fn load(self, ch: &ChannelView) {
        self.reset();
        self.id.set(Some(ch.id));
        self.name.set(ch.name.clone());
        self.kind.set(ch.kind.as_str().into());
        self.events.set(ch.events.clone());
        self.enabled.set(ch.enabled);
        if let Some(e) = &ch.email {
            self.host.set(e.host.clone());
            self.port.set(e.port.to_string());
            self.security.set(e.security.as_str().into());
            self.username.set(e.username.clone());
            self.from.set(e.from.clone());
            self.to.set(e.to.join(", "));
        }
    }

    fn input(self) -> ChannelInput {
        ChannelInput {
            id: self.id.get_untracked(),
            name: self.name.get_untracked(),
            kind: self.kind.get_untracked(),
            url: self.url.get_untracked(),
            secret: self.secret.get_untracked(),
            host: self.host.get_untracked(),
            port: self.port.get_untracked(),
            security: self.security.get_untracked(),
            username: self.username.get_untracked(),
            password: self.password.get_untracked(),
            from: self.from.get_untracked(),
            to: self.to.get_untracked(),
            events: self.events.get_untracked(),
            enabled: self.enabled.get_untracked(),
        }
    }
}

/// A text input bound to a signal, with the server's error for its field under it.
#[component]
fn Input(
    label: &'static str,
    name: &'static str,
    value: RwSignal<String>,
    save: ServerAction<SaveChannel>,
    #[prop(optional)] kind: Option<&'static str>,
    #[prop(optional, into)] placeholder: Signal<String>,
) -> impl IntoView {
    let id = format!("ch-{name}");
    let error = move || {
        save.value()
            .get()
            .and_then(|r| r.err())
            .and_then(|e| e.for_field(name))
    };
    view! {
        <div class="field">
            <label for=id.clone()>{label}</label>
            <input id=id.clone() name=name type=kind.unwrap_or("text") placeholder=move || placeholder.get()
                prop:value=move || value.get() on:input=move |ev| value.set(event_target_value(&ev))/>
            <p class="field-error" data-testid=format!("error-{name}")>{error}</p>
        </div>
    }
}

#[component]
fn ChannelEditor(form: ChannelForm, save: ServerAction<SaveChannel>) -> impl IntoView {
    let editing = move || form.id.get().is_some();
    let kind = move || ChannelKind::parse(&form.kind.get()).unwrap_or(ChannelKind::Webhook);
    let keep = move |what: &str| {
        if editing() {
            format!("unchanged (type to replace the {what})")
        } else {
            String::new()
        }
    };
    let events_error = move || {
        save.value()
            .get()
            .and_then(|r| r.err())
            .and_then(|e| e.for_field("events"))
    };
    view! {
        <h2>{move || if editing() { format!("Change channel {}", form.name.get()) } else { "Add a channel".to_string() }}</h2>
        <form class="form" aria-label="Channel" on:submit=move |ev| {
            ev.prevent_default();
            save.dispatch(SaveChannel { input: form.input() });
        }>
            <Input label="Name" name="name" value=form.name save=save/>
            <div class="field">
                <label for="ch-kind">"Kind"</label>
                <select id="ch-kind" data-testid="channel-kind" disabled=editing
                    on:change=move |ev| form.kind.set(event_target_value(&ev))>
                    {ChannelKind::ALL.iter().copied().map(|k| view! {
                        <option value=k.as_str() selected=move || form.kind.get() == k.as_str()>{k.label()}</option>
                    }).collect_view()}
                </select>
            </div>
            <Show when=move || kind() != ChannelKind::Email>
                <Input label="URL" name="url" value=form.url save=save placeholder=Signal::derive(move || keep("URL"))/>
            </Show>
            <Show when=move || kind() == ChannelKind::Webhook>
                <Input label="Signing secret (at least 16 characters; the receiver checks x-tablesafe-signature with it)" name="secret"
                    kind="password" value=form.secret save=save placeholder=Signal::derive(move || keep("secret"))/>
            </Show>
            <Show when=move || kind() == ChannelKind::Email>
                <Input label="SMTP server" name="host" value=form.host save=save placeholder=Signal::derive(|| "smtp.example.com".to_string())/>
                <Input label="Port" name="port" value=form.port save=save/>
                <div class="field">
                    <label for="ch-security">"Connection security"</label>
                    <select id="ch-security" on:change=move |ev| form.security.set(event_target_value(&ev))>
                        {[(Security::Starttls, "STARTTLS (port 587)"), (Security::Tls, "TLS (port 465)"), (Security::None, "none (a local relay)")]
                            .into_iter().map(|(s, label)| view! {
                                <option value=s.as_str() selected=move || form.security.get() == s.as_str()>{label}</option>
                            }).collect_view()}
                    </select>
                </div>
                <Input label="User name (empty: no login)" name="username" value=form.username save=save/>
                <Input label="Password" name="password" kind="password" value=form.password save=save placeholder=Signal::derive(move || keep("password"))/>
                <Input label="From" name="from" value=form.from save=save placeholder=Signal::derive(|| "tablesafe@example.com".to_string())/>
                <Input label="To (comma-separated)" name="to" value=form.to save=save/>
            </Show>
            <fieldset data-testid="channel-events">
                <legend>"Events"</legend>
                {EVENTS.iter().map(|(event, label)| {
                    let event = event.to_string();
                    let id = format!("ev-{}", event.replace('.', "-"));
                    let e2 = event.clone();
                    view! {
                        <div class="check">
                            <input type="checkbox" id=id.clone() value=event.clone()
                                prop:checked=move || form.events.with(|v| v.contains(&e2))
                                on:change=move |ev| {
                                    let on = event_target_checked(&ev);
                                    form.events.update(|v| {
                                        v.retain(|x| x != &event);
                                        if on { v.push(event.clone()); }
                                    });
                                }/>
                            <label for=id>{*label}</label>
                        </div>
                    }
                }).collect_view()}
                <p class="field-error" data-testid="error-events">{events_error}</p>
            </fieldset>
            <div class="check">
                <input type="checkbox" id="ch-enabled" prop:checked=move || form.enabled.get()
                    on:change=move |ev| form.enabled.set(event_target_checked(&ev))/>
                <label for="ch-enabled">"Enabled"</label>
            </div>
            <ErrorLine error=general_error(save)/>
            <button type="submit" disabled=move || save.pending().get()>
                {move || if editing() { "Save channel" } else { "Add channel" }}
            </button>
            <Show when=editing>
                <button type="button" class="secondary" on:click=move |_| form.reset()>"Cancel"</button>
            </Show>
        </form>
    }
}
