//! Generates Tauri's context and the permissions of the app's own commands, so capabilities can
//! grant each window exactly the commands it uses.

fn main() {
    tauri_build::try_build(tauri_build::Attributes::new().app_manifest(
        tauri_build::AppManifest::new().commands(&[
            "overview",
            "login",
            "cancel_login",
            "logout",
            "refresh_now",
            "list_clients",
            "create_client",
            "revoke_client",
            "query_activity",
            "activity_chart",
            "list_connections",
            "close_connection",
            "detect_hosts",
            "preview_host_entry",
            "apply_host_entry",
            "undo_host_entry",
            "add_server",
            "server_login",
            "cancel_server_login",
            "remove_server",
            "get_settings",
            "set_settings",
            "setup_connect",
            "setup_import",
            "setup_import_text",
            "setup_save",
            "service_add",
            "service_edit",
            "service_remove",
            "set_gateway_api_key",
        ]),
    ))
    .expect("tauri build step");
}
