//! The wasm entry point: hydrates the server-rendered console.

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    // Logging in or out changes what every page shows, so a server-function redirect
    // (after login/logout) is a full page load rather than a client-side navigation.
    // The first hook set wins, so this must run before the router sets its own.
    let _ = leptos::server_fn::redirect::set_redirect_hook(|location: &str| {
        let _ = leptos::prelude::window().location().set_href(location);
    });
    // Under a path prefix the server functions are at {base}/api/… (the server wrote the
    // base into the page; `app::base`). server_fn keeps the URL for the page's lifetime.
    let base = app::base::from_document();
    if !base.is_empty() {
        let _ = leptos::server_fn::client::try_set_server_url(base.leak());
    }
    leptos::mount::hydrate_body(app::App);
    // Lets browser tests (and curious users) see that the page is interactive.
    if let Some(body) = leptos::prelude::document().body() {
        let _ = body.set_attribute("data-hydrated", "true");
    }
}
