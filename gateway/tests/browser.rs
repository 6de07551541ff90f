//! The page at `/` in a real browser: headless Chromium (Debian's package, installed by
//! scripts/install-programs.sh) drives two pages against a running gateway. Alice's page
//! subscribes to bob, bob's page sets a custom status, alice's page shows it; bob's page
//! closes and alice's shows him offline. A screenshot of alice's page is saved under the
//! target directory (its path is printed).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{start, token};
use presence_testkit::{Chromium, Page};

const WAIT: Duration = Duration::from_secs(30);

/// Logs `page` in as `user` through the page's own form.
fn log_in(browser: &mut Chromium, page: &Page, user: &str) {
    browser.wait_for(
        page,
        "document.readyState === 'complete' && document.getElementById('login')",
        "the page loads",
        WAIT,
    );
    let fill = format!(
        "document.getElementById('token').value = {token:?}; document.getElementById('device').value = 'browser'; \
         document.getElementById('login').click(); true",
        token = token(user)
    );
    browser.eval(page, &fill).unwrap();
    browser.wait_for(
        page,
        "document.getElementById('me-status').textContent === 'ONLINE'",
        &format!("{user} is online"),
        WAIT,
    );
}

fn row(user: &str, cell: &str) -> String {
    format!("(document.querySelector('#watch-list tr[data-user=\"{user}\"] {cell}') || {{}}).textContent")
}

#[test]
fn a_page_watches_another_change_its_status_live() {
    let gateway = start("");
    let url = format!("http://{}/", gateway.addr());
    let mut browser = Chromium::start();
    let alice = browser.open(&url);
    let bob = browser.open(&url);
    log_in(&mut browser, &alice, "alice");
    log_in(&mut browser, &bob, "bob");
    // The page runs under its Content-Security-Policy (nothing inline): its script logged in
    // over the socket above, and its styles, from /app.css, applied.
    assert_eq!(
        browser.eval(&alice, "getComputedStyle(document.querySelector('header')).backgroundColor").unwrap(),
        "rgb(29, 35, 48)"
    );

    browser
        .eval(&alice, "document.getElementById('targets').value = 'bob, carol'; document.getElementById('subscribe').click(); true")
        .unwrap();
    browser.wait_for(
        &alice,
        &format!("{} === 'ONLINE'", row("bob", ".badge")),
        "alice sees bob online",
        WAIT,
    );

    browser
        .eval(&bob, "document.getElementById('custom').value = 'in a meeting'; document.getElementById('set-custom').click(); true")
        .unwrap();
    browser.wait_for(
        &bob,
        "document.getElementById('me-custom').textContent === 'in a meeting'",
        "bob sees his own status",
        WAIT,
    );
    browser.wait_for(
        &alice,
        &format!("{} === 'in a meeting'", row("bob", ".custom")),
        "alice sees bob's status",
        WAIT,
    );
    assert_eq!(
        browser.eval(&alice, &row("bob", ".version")).unwrap(),
        "v2",
        "login (1), then the custom status (2): R5.6"
    );

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser").join("page.png");
    browser.screenshot(&alice, &shot);
    println!("screenshot of alice's page: {}", shot.display());
    assert!(std::fs::metadata(&shot).unwrap().len() > 1_000);

    // Bob's tab closes: his socket with it, so his session is disconnected (R2.2).
    browser.close(&bob);
    browser.wait_for(
        &alice,
        &format!("{} === 'OFFLINE'", row("bob", ".badge")),
        "alice sees bob offline",
        WAIT,
    );
    assert_eq!(browser.eval(&alice, &row("bob", ".custom")).unwrap(), "", "R3.3");
}
