use crate::auth::Login;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn LoginPage() -> impl IntoView {
    let login = ServerAction::<Login>::new();
    let error = move || {
        login
            .value()
            .get()
            .and_then(|r| r.err())
            .map(|e| e.to_string())
    };
    view! {
        <Title text="Log in"/>
        <main class="login">
            <h1>"tablesafe"</h1>
            <p class="muted">"Backup and recovery for your table stores."</p>
            <ActionForm action=login attr:aria-label="Log in">
                <label for="username">"User name"</label>
                <input id="username" name="username" autocomplete="username" required autofocus/>
                <label for="password">"Password"</label>
                <input id="password" name="password" type="password" autocomplete="current-password" required/>
                <Show when=move || error().is_some()>
                    <p class="error" role="alert">{error}</p>
                </Show>
                <button type="submit" disabled=move || login.pending().get()>"Log in"</button>
            </ActionForm>
        </main>
    }
}
