//! Tells the end-to-end tests whether they run inside a keychain session (`scripts/with-keychain`
//! sets `LATCHKEY_TEST_KEYCHAIN`): tests that need the real Secret Service are ignored, so reported
//! as skipped, outside one, and run (failing when the keychain is broken) inside one.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(keychain_session)");
    println!("cargo::rerun-if-env-changed=LATCHKEY_TEST_KEYCHAIN");
    if std::env::var_os("LATCHKEY_TEST_KEYCHAIN").is_some() {
        println!("cargo::rustc-cfg=keychain_session");
    }
}
