//! The console's pages: hand-written templates. Every value from the zone goes through [`esc`]
//! (`&`, `<`, `>`, `"`, `'`), so a server name or audit detail cannot inject markup; the
//! templates hold no inline script or style (the Content-Security-Policy forbids both).
//!
//! Why hand-written and not maud or askama: the pages are few and small, one escaping
//! function is easy to review, and the crate gains no template engine or proc-macro.

use std::fmt::Write as _;

use hyper::StatusCode;

use super::auth::Flash;
use super::{AUDIT_ENTRIES, DEVICES_PER_PAGE, Query};
use crate::clock::Clock;
use crate::key::KeySpec;
use crate::service::ZoneService;
use crate::store::Storage;
use crate::transport::Transport;
use crate::view::{DeviceQuery, ServerOption, UpdateStatus, WARNING_HEADER};
use crate::zone::ServerRole;

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/console/app.css\">\
         <link rel=\"icon\" href=\"/console/icon.svg\">\
         <script src=\"/console/app.js\" defer></script></head>",
        esc(title)
    )
}

/// The sign-in page.
pub(crate) fn signin(message: Option<&str>) -> String {
    let mut p = head("Sign in: zonepki console");
    p.push_str("<body><main class=\"signin\"><h1>zonepki console</h1>");
    if let Some(m) = message {
        let _ = write!(p, "<p class=\"flash error\" role=\"alert\">{}</p>", esc(m));
    }
    p.push_str(
        "<form method=\"post\" action=\"/console/signin\">\
         <label for=\"password\">Administrator password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" required \
         autocomplete=\"current-password\" autofocus>\
         <button type=\"submit\">Sign in</button></form></main></body></html>",
    );
    p
}

/// A refusal of a request (no session, a forged request, a failed download).
pub(crate) fn refusal(status: StatusCode, why: &str) -> String {
    let mut p = head("Refused: zonepki console");
    let _ = write!(
        p,
        "<body><main><h1>{} {}</h1><p role=\"alert\">{}</p>\
         <p><a href=\"/console\">Back to the console</a></p></main></body></html>",
        status.as_u16(),
        esc(status.canonical_reason().unwrap_or("")),
        esc(why)
    );
    p
}

fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

fn action_button(csrf: &str, action: &str, label: &str, disabled: Option<&str>) -> String {
    let mut s = format!(
        "<form method=\"post\" action=\"/console/{action}\" class=\"inline\">{}",
        csrf_field(csrf)
    );
    match disabled {
        Some(why) => {
            let _ = write!(
                s,
                "<button type=\"submit\" id=\"{action}\" disabled aria-describedby=\"{action}-why\">\
                 {}</button> <span id=\"{action}-why\" class=\"note\">{}</span>",
                esc(label),
                esc(why)
            );
        }
        None => {
            let _ = write!(
                s,
                "<button type=\"submit\" id=\"{action}\">{}</button>",
                esc(label)
            );
        }
    }
    s.push_str("</form>");
    s
}

fn error_section(title: &str, e: &dyn std::fmt::Display) -> String {
    format!(
        "<p class=\"flash error\" role=\"alert\">{}: {}</p>",
        esc(title),
        esc(&e.to_string())
    )
}

/// The Certificates page: the Zone Certificate Authority pane, the Server SSL Certificates
/// pane, the devices, the warnings and the audit log (W1, W2, V1-V3).
pub(crate) fn main<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    csrf: &str,
    flash: Option<&Flash>,
    q: &Query,
) -> String {
    let zone = svc.zone();
    let zone_name = zone.as_ref().map(|z| z.name.clone()).unwrap_or_default();
    let mut p = head(&format!("Certificates: {zone_name}"));
    let _ = write!(
        p,
        "<body><header><h1>Configuration &gt; Certificates</h1><p>Zone <strong id=\"zone-name\">{}</strong></p>\
         <nav aria-label=\"Panes\"><a href=\"#ca-pane\">Zone Certificate Authority</a> \
         <a href=\"#server-pane\">Server SSL Certificates</a> <a href=\"#device-pane\">Devices</a> \
         <a href=\"#audit-pane\">Audit log</a></nav>\
         <form method=\"post\" action=\"/console/signout\" class=\"inline\">{}<button type=\"submit\">Sign out</button></form></header><main>",
        esc(&zone_name),
        csrf_field(csrf)
    );
    if let Some(f) = flash {
        let (class, role) = if f.error {
            ("flash error", "alert")
        } else {
            ("flash ok", "status")
        };
        let _ = write!(
            p,
            "<p id=\"flash\" class=\"{class}\" role=\"{role}\">{}</p>",
            esc(&f.text)
        );
    }
    warnings(svc, &mut p);
    ca_pane(svc, csrf, &zone_name, &mut p);
    server_pane(svc, csrf, &mut p);
    device_pane(svc, q, &mut p);
    audit_pane(svc, &mut p);
    p.push_str("</main></body></html>");
    p
}

fn warnings<S: Storage, T: Transport, C: Clock>(svc: &ZoneService<S, T, C>, p: &mut String) {
    match svc.warnings(crate::view::DEFAULT_WARNING_WINDOW) {
        Ok(w) if w.is_empty() => {}
        Ok(w) => {
            let _ = write!(
                p,
                "<section id=\"warnings\" class=\"warnings\" aria-labelledby=\"warnings-h\">\
                 <h2 id=\"warnings-h\">Warnings</h2><p>{}</p><ul>",
                esc(WARNING_HEADER)
            );
            for x in w {
                let _ = write!(
                    p,
                    "<li>{} (expires {})</li>",
                    esc(&x.message),
                    esc(&x.not_after.to_string())
                );
            }
            p.push_str("</ul></section>");
        }
        Err(e) => p.push_str(&error_section("Warnings", &e)),
    }
}

fn row(p: &mut String, label: &str, value: &str) {
    let _ = write!(p, "<dt>{}</dt><dd>{}</dd>", esc(label), esc(value));
}

fn ca_pane<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    csrf: &str,
    zone_name: &str,
    p: &mut String,
) {
    p.push_str(
        "<section id=\"ca-pane\" class=\"pane\" aria-labelledby=\"ca-h\">\
         <h2 id=\"ca-h\">Zone Certificate Authority</h2>",
    );
    let ca = match svc.ca_view() {
        Ok(ca) => ca,
        Err(e) => {
            p.push_str(&error_section("Zone Certificate Authority", &e));
            p.push_str("</section>");
            return;
        }
    };
    let op = svc.op_summary().ok().filter(|o| o.state.is_running());
    if let Some(op) = &op {
        let _ = write!(
            p,
            "<div id=\"op-banner\" class=\"banner\" role=\"region\" aria-label=\"Running operation\">\
             <p>The <strong>{}</strong> operation has been initiated: state <strong id=\"op-state\">{}</strong>; \
             activation <strong id=\"op-activation\">{}</strong>; system update \"{}\".</p>",
            esc(op.kind.title()),
            esc(op.state.name()),
            if op.immediate {
                "Immediate".to_string()
            } else {
                esc(&op.activation.to_string())
            },
            esc(&op.update_name)
        );
        let cancel_why = if op.cancellable {
            None
        } else {
            Some(match op.cancel_deadline {
                Some(d) if d <= svc.now() => {
                    format!("Cancel is disabled ten minutes before activation (since {d}).")
                }
                _ => "This operation can no longer be canceled.".to_string(),
            })
        };
        p.push_str(&action_button(
            csrf,
            "cancel",
            "Cancel",
            cancel_why.as_deref(),
        ));
        p.push_str(&action_button(csrf, "assign-now", "Assign Now", None));
        if op.state == crate::view::OperationState::Activated {
            p.push_str(&action_button(csrf, "baseline", "Baseline", None));
        }
        p.push_str(
            "<details id=\"replication\" open><summary>Current replication status</summary>\
             <table><caption>Content replication of the system update</caption>\
             <thead><tr><th scope=\"col\">Server</th><th scope=\"col\">Replication status</th></tr></thead><tbody>",
        );
        for r in &op.replication {
            let _ = write!(
                p,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(&r.server),
                esc(r.status.name())
            );
        }
        p.push_str("</tbody></table></details>");
        plan_form(p);
        p.push_str("</div>");
    }
    p.push_str("<dl class=\"details\" id=\"ca-details\">");
    row(p, "Type", ca.kind.name());
    if let Some(s) = &ca.certificate_server {
        row(p, "Certificate server", s);
    }
    let d = &ca.details;
    row(p, "Subject", &d.subject);
    row(p, "Issued by", &d.issuer);
    row(p, "Valid from", &d.not_before.to_string());
    row(p, "Expires", &d.not_after.to_string());
    row(
        p,
        "Key",
        &format!("{} ({} bits)", d.key_algorithm, d.key_bits),
    );
    row(p, "MD5 Fingerprint", &d.md5);
    row(p, "SHA1 Fingerprint", &d.sha1);
    row(p, "SHA256 Fingerprint", &d.sha256);
    row(p, "Certificate Status", d.status.name());
    p.push_str("</dl><p><a href=\"/console/ca.pem\" download>Download the CA certificate</a></p>");

    // Actions: Remint CA opens its dialog; refused by the library while another operation
    // runs (the refusal is shown in its words), so the button stays.
    let ca_expired = d.status == crate::cert::CertStatus::Expired;
    let any_dns = svc
        .servers()
        .map(|s| s.iter().any(|v| !v.dns_names.is_empty()))
        .unwrap_or(false);
    let primaries: Vec<String> = svc
        .servers()
        .map(|s| {
            s.into_iter()
                .filter(|v| v.role == ServerRole::Primary)
                .map(|v| v.fqdn)
                .collect()
        })
        .unwrap_or_default();
    p.push_str(
        "<p class=\"actions\">\
         <button type=\"button\" id=\"change-ca-open\" data-dialog=\"change-dialog\">Change CA</button> \
         <button type=\"button\" id=\"move-ca-open\" data-dialog=\"move-dialog\">Move CA Role</button> \
         <button type=\"button\" id=\"remint-ca-open\" data-dialog=\"remint-dialog\">Remint CA</button> \
         <button type=\"button\" id=\"backup-ca-open\" data-dialog=\"backup-dialog\">Backup CA</button> \
         <button type=\"button\" id=\"restore-ca-open\" data-dialog=\"restore-dialog\">Restore CA</button></p>",
    );
    let current_server = ca.certificate_server.as_deref();
    change_dialog(p, csrf, zone_name, &primaries, ca_expired, any_dns);
    move_dialog(p, csrf, &primaries, current_server);
    remint_dialog(p, csrf, zone_name, ca_expired, any_dns);
    backup_dialog(p, csrf);
    restore_dialog(p, csrf, &primaries, current_server);
    p.push_str("</section>");
}

fn server_options(p: &mut String, id: &str, servers: &[String], selected: Option<&str>) {
    let _ = write!(p, "<select id=\"{id}\" name=\"server\" required>");
    for s in servers {
        let sel = if Some(s.as_str()) == selected {
            " selected"
        } else {
            ""
        };
        let _ = write!(p, "<option value=\"{0}\"{sel}>{0}</option>", esc(s));
    }
    p.push_str("</select>");
}

fn key_options(p: &mut String, id: &str, name: &str) {
    let _ = write!(p, "<select id=\"{id}\" name=\"{name}\">");
    for k in KeySpec::ALL.into_iter().filter(|k| k.is_available()) {
        let sel = if k == KeySpec::default() {
            " selected"
        } else {
            ""
        };
        let _ = write!(p, "<option value=\"{0}\"{sel}>{0}</option>", esc(k.name()));
    }
    p.push_str("</select>");
}

fn include_dns(p: &mut String, id: &str, any_dns: bool) {
    let _ = write!(
        p,
        "<p><input type=\"checkbox\" id=\"{id}\" name=\"include_dns\"{}>\
         <label for=\"{id}\">Include any additional DNS names for each server</label>{}</p>",
        if any_dns { "" } else { " disabled" },
        if any_dns {
            ""
        } else {
            " <span class=\"note\">(no server has additional DNS names)</span>"
        }
    );
}

fn activation_field(p: &mut String, id: &str, ca_expired: bool) {
    if ca_expired {
        p.push_str(
            "<p>Certificate activation date: <strong>Immediate</strong> (the CA has expired)</p>\
             <input type=\"hidden\" name=\"activation\" value=\"immediate\">",
        );
    } else {
        let _ = write!(
            p,
            "<label for=\"{id}\">Certificate activation date (UTC)</label>\
             <input id=\"{id}\" name=\"activation\" type=\"datetime-local\" required>\
             <span class=\"note\">Any date before the current CA expires; leave time for the \
             system update to reach every device.</span>"
        );
    }
}

/// W1 Change CA (manual 1.2.4): confirmed first; to an internal CA (certificate server,
/// subject defaulting to the zone name, key, 1 to 10 years) or to an external CA (its root
/// or complete chain, then the CSR mode: manual, or automatic with O, OU, L, ST, a
/// two-letter C and the key); the DNS names option; the activation.
fn change_dialog(
    p: &mut String,
    csrf: &str,
    zone_name: &str,
    primaries: &[String],
    ca_expired: bool,
    any_dns: bool,
) {
    let _ = write!(
        p,
        "<dialog id=\"change-dialog\" aria-labelledby=\"change-h\">\
         <form method=\"post\" action=\"/console/change-ca\" enctype=\"multipart/form-data\">{}\
         <h3 id=\"change-h\">Change Certificate Authority</h3>\
         <p><input type=\"checkbox\" id=\"change-confirm\" name=\"confirm\" value=\"yes\" data-enables=\"change-fields\">\
         <label for=\"change-confirm\">Yes, I want to change the certificate authority</label></p>\
         <fieldset id=\"change-fields\" disabled><legend>New certificate authority</legend>\
         <label for=\"change-target\">Change to</label>\
         <select id=\"change-target\" name=\"target\" data-shows=\"change-\">\
         <option value=\"internal\">Change to internal certificate authority</option>\
         <option value=\"external\">Change to external certificate authority</option></select>\
         <fieldset id=\"change-internal\"><legend>Internal certificate authority</legend>\
         <label for=\"change-server\">Certificate server</label>",
        csrf_field(csrf)
    );
    server_options(p, "change-server", primaries, None);
    let _ = write!(
        p,
        "<label for=\"change-subject\">Subject</label>\
         <input id=\"change-subject\" name=\"subject\" value=\"{}\">\
         <label for=\"change-key\">Key length</label>",
        esc(zone_name)
    );
    key_options(p, "change-key", "key");
    p.push_str(
        "<label for=\"change-years\">Valid for (years)</label>\
         <input id=\"change-years\" name=\"validity\" type=\"number\" min=\"1\" max=\"10\" value=\"10\">\
         </fieldset>\
         <fieldset id=\"change-external\"><legend>External certificate authority</legend>\
         <label for=\"change-chain\">Trusted root certificate, or the complete chain (server, \
         intermediates, root)</label>\
         <input id=\"change-chain\" name=\"chain\" type=\"file\" \
         accept=\".der,.cer,.crt,.p7b,.pem,.cert\">\
         <span class=\"note\">.der, .cer, .crt, .p7b, .pem or .cert, PEM or DER: the content decides.</span>\
         <fieldset><legend>Generate CSR</legend>\
         <p><input type=\"radio\" id=\"csr-manual\" name=\"csr_mode\" value=\"manual\">\
         <label for=\"csr-manual\">I will generate a CSR for each server manually</label></p>\
         <p><input type=\"radio\" id=\"csr-auto\" name=\"csr_mode\" value=\"auto\" checked>\
         <label for=\"csr-auto\">Let zonepki generate a CSR automatically for each server</label></p>\
         <label for=\"csr-org\">Organization</label><input id=\"csr-org\" name=\"org\" maxlength=\"64\">\
         <label for=\"csr-ou\">Organization Unit</label><input id=\"csr-ou\" name=\"ou\" maxlength=\"64\">\
         <label for=\"csr-locality\">City/Locality</label><input id=\"csr-locality\" name=\"locality\" maxlength=\"128\">\
         <label for=\"csr-state\">State/Province</label><input id=\"csr-state\" name=\"state\" maxlength=\"128\">\
         <label for=\"csr-country\">Country/region (two letters)</label>\
         <input id=\"csr-country\" name=\"country\" maxlength=\"2\" minlength=\"2\" \
         pattern=\"[A-Za-z]{2}\" title=\"Two letters, e.g. US\">\
         <label for=\"csr-key\">Key length</label>",
    );
    key_options(p, "csr-key", "csr_key");
    p.push_str("</fieldset></fieldset>");
    include_dns(p, "change-dns", any_dns);
    activation_field(p, "change-activation", ca_expired);
    p.push_str(
        "</fieldset><p class=\"actions\"><button type=\"submit\" id=\"change-ok\">Finish</button> \
         <button type=\"button\" data-close=\"change-dialog\">Cancel</button></p></form></dialog>",
    );
}

/// W1 Move CA Role (manual 1.2.6, MV1): the Primary Server that is to hold the CA.
fn move_dialog(p: &mut String, csrf: &str, primaries: &[String], current: Option<&str>) {
    let _ = write!(
        p,
        "<dialog id=\"move-dialog\" aria-labelledby=\"move-h\">\
         <form method=\"post\" action=\"/console/move-ca\">{}\
         <h3 id=\"move-h\">Move Certificate Authority</h3>\
         <label for=\"move-server\">New certificate server (a Primary Server)</label>",
        csrf_field(csrf)
    );
    server_options(p, "move-server", primaries, current);
    p.push_str(
        "<p class=\"actions\"><button type=\"submit\" id=\"move-ok\">OK</button> \
         <button type=\"button\" data-close=\"move-dialog\">Cancel</button></p></form></dialog>",
    );
}

/// W1 Restore CA (manual 1.2.8, BK2): the backup file, the Primary Server that is to hold
/// the CA, the passphrase the backup was made with (a POST body only).
fn restore_dialog(p: &mut String, csrf: &str, primaries: &[String], current: Option<&str>) {
    let _ = write!(
        p,
        "<dialog id=\"restore-dialog\" aria-labelledby=\"restore-h\">\
         <form method=\"post\" action=\"/console/restore-ca\" enctype=\"multipart/form-data\">{}\
         <h3 id=\"restore-h\">Restore CA</h3>\
         <label for=\"restore-file\">Backup file</label>\
         <input id=\"restore-file\" name=\"archive\" type=\"file\" accept=\".zip\" required>\
         <label for=\"restore-server\">Primary Server to restore the CA onto</label>",
        csrf_field(csrf)
    );
    server_options(p, "restore-server", primaries, current);
    p.push_str(
        "<span class=\"note\">The CA role moves to this server if another holds it.</span>\
         <label for=\"restore-pass\">Passphrase</label>\
         <input id=\"restore-pass\" name=\"passphrase\" type=\"password\" autocomplete=\"off\" required>\
         <p class=\"actions\"><button type=\"submit\" id=\"restore-ok\">OK</button> \
         <button type=\"button\" data-close=\"restore-dialog\">Cancel</button></p></form></dialog>",
    );
}

fn remint_dialog(p: &mut String, csrf: &str, zone_name: &str, ca_expired: bool, any_dns: bool) {
    let _ = write!(
        p,
        "<dialog id=\"remint-dialog\" aria-labelledby=\"remint-h\"><form method=\"post\" action=\"/console/remint-ca\">{}\
         <h3 id=\"remint-h\">Remint CA</h3>\
         <p><input type=\"checkbox\" id=\"remint-confirm\" name=\"confirm\" value=\"yes\" data-enables=\"remint-fields\">\
         <label for=\"remint-confirm\">Yes, I want to remint the certificate authority</label></p>\
         <fieldset id=\"remint-fields\" disabled><legend>New certificate authority</legend>\
         <label for=\"remint-cn\">Common name</label><input id=\"remint-cn\" name=\"common_name\" value=\"{}\" required>\
         <label for=\"remint-key\">Key length</label><select id=\"remint-key\" name=\"key\">",
        csrf_field(csrf),
        esc(zone_name)
    );
    for k in KeySpec::ALL.into_iter().filter(|k| k.is_available()) {
        let sel = if k == KeySpec::default() {
            " selected"
        } else {
            ""
        };
        let _ = write!(p, "<option value=\"{0}\"{sel}>{0}</option>", esc(k.name()));
    }
    p.push_str(
        "</select><label for=\"remint-years\">Valid for (years)</label>\
         <input id=\"remint-years\" name=\"validity\" type=\"number\" min=\"1\" max=\"10\" value=\"10\" required>",
    );
    let _ = write!(
        p,
        "<p><input type=\"checkbox\" id=\"remint-dns\" name=\"include_dns\"{}>\
         <label for=\"remint-dns\">Include any additional DNS names for each server</label>{}</p>",
        if any_dns { "" } else { " disabled" },
        if any_dns {
            ""
        } else {
            " <span class=\"note\">(no server has additional DNS names)</span>"
        }
    );
    if ca_expired {
        p.push_str(
            "<p>Certificate activation date: <strong>Immediate</strong> (the CA has expired)</p>\
             <input type=\"hidden\" name=\"activation\" value=\"immediate\">",
        );
    } else {
        p.push_str(
            "<label for=\"remint-activation\">Certificate activation date (UTC)</label>\
             <input id=\"remint-activation\" name=\"activation\" type=\"datetime-local\" required>",
        );
    }
    p.push_str(
        "</fieldset><p class=\"actions\"><button type=\"submit\" id=\"remint-ok\">OK</button> \
         <button type=\"button\" data-close=\"remint-dialog\">Cancel</button></p></form></dialog>",
    );
}

/// W1 Backup CA (manual 1.2.7, BK1): a passphrase of at least 10 characters, typed twice;
/// the zip archive downloads.
fn backup_dialog(p: &mut String, csrf: &str) {
    let _ = write!(
        p,
        "<dialog id=\"backup-dialog\" aria-labelledby=\"backup-h\">\
         <form method=\"post\" action=\"/console/backup-ca\">{}\
         <h3 id=\"backup-h\">Backup CA</h3>\
         <label for=\"backup-pass\">Passphrase (at least 10 characters)</label>\
         <input id=\"backup-pass\" name=\"passphrase\" type=\"password\" minlength=\"10\" autocomplete=\"new-password\" required>\
         <label for=\"backup-pass2\">Confirm</label>\
         <input id=\"backup-pass2\" name=\"passphrase_again\" type=\"password\" minlength=\"10\" autocomplete=\"new-password\" required>\
         <p class=\"actions\"><button type=\"submit\" id=\"backup-ok\">OK</button> \
         <button type=\"button\" data-close=\"backup-dialog\">Cancel</button></p></form></dialog>",
        csrf_field(csrf)
    );
}

fn opt(t: Option<impl std::fmt::Display>) -> String {
    t.map(|t| t.to_string()).unwrap_or_default()
}

/// W2: V2's columns; in Options the future certificate and the CSR downloads, and the
/// server's current chain; the actions Download CSRs to Zip File and Import Certificate.
fn server_pane<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    csrf: &str,
    p: &mut String,
) {
    p.push_str(
        "<section id=\"server-pane\" class=\"pane\" aria-labelledby=\"server-h\">\
         <h2 id=\"server-h\">Server SSL Certificates</h2>",
    );
    match svc.servers() {
        Err(e) => p.push_str(&error_section("Server SSL Certificates", &e)),
        Ok(servers) => {
            p.push_str(
                "<div class=\"scroll\"><table id=\"servers\"><thead><tr>\
                 <th scope=\"col\">Issued To</th><th scope=\"col\">Subject</th>\
                 <th scope=\"col\">Issued By</th><th scope=\"col\">Valid From (UTC)</th>\
                 <th scope=\"col\">Expires On (UTC)</th><th scope=\"col\">MD5 Fingerprint</th>\
                 <th scope=\"col\">SHA1 Fingerprint</th><th scope=\"col\">Certificate Status</th>\
                 <th scope=\"col\">Options</th><th scope=\"col\">Update Status</th>\
                 <th scope=\"col\">Version</th></tr></thead><tbody>",
            );
            let mut any_csr = false;
            let mut with_csr = Vec::new();
            for s in &servers {
                let q = enc(&s.fqdn);
                let mut options = Vec::new();
                if s.not_after.is_some() {
                    options.push(format!(
                        "<a href=\"/console/chain.pem?server={q}\" download>certificate chain</a>"
                    ));
                }
                for o in &s.options {
                    options.push(match o {
                        ServerOption::FutureCertificate => format!(
                            "<a href=\"/console/future.pem?server={q}\" download>future certificate</a>"
                        ),
                        ServerOption::CsrAvailable => {
                            any_csr = true;
                            with_csr.push(s.fqdn.clone());
                            format!("<a href=\"/console/csr.pem?server={q}\" download>CSR</a>")
                        }
                    });
                }
                let _ = write!(
                    p,
                    "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td class=\"fp\">{}</td><td class=\"fp\">{}</td><td class=\"cert-status\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&s.issued_to.clone().unwrap_or_else(|| s.fqdn.clone())),
                    esc(&s.fqdn),
                    esc(&opt(s.issuer.as_ref())),
                    esc(&opt(s.not_before)),
                    esc(&opt(s.not_after)),
                    esc(&opt(s.md5.as_ref())),
                    esc(&opt(s.sha1.as_ref())),
                    esc(s.status.text()),
                    options.join(", "),
                    esc(s.update_status.name()),
                    esc(&s.agent_version)
                );
            }
            p.push_str("</tbody></table></div><p class=\"actions\">");
            if any_csr {
                p.push_str(
                    "<a id=\"csrs-zip\" href=\"/console/csrs.zip\" download>Download CSRs to Zip File</a>",
                );
            } else {
                p.push_str(
                    "<span class=\"note\">Download CSRs to Zip File: no server has a CSR.</span>",
                );
            }
            p.push_str("</p>");
            remint_certificate_form(p, csrf, &servers);
            generate_csr_form(p, csrf, &servers);
            if !with_csr.is_empty() {
                let _ = write!(
                    p,
                    "<details id=\"import\"><summary>Import Certificate</summary>\
                     <form method=\"post\" action=\"/console/import-certificate\" enctype=\"multipart/form-data\">{}\
                     <label for=\"import-server\">Server</label>",
                    csrf_field(csrf)
                );
                server_select(p, "import-server", &with_csr);
                p.push_str(
                    "<label for=\"import-file\">Certificate the external CA issued (.der, .cer, \
                     .crt, .p7b, .pem or .cert; with any subordinate CAs)</label>\
                     <input id=\"import-file\" name=\"certificate\" type=\"file\" \
                     accept=\".der,.cer,.crt,.p7b,.pem,.cert\" required>\
                     <button type=\"submit\" id=\"import-ok\">Import Certificate</button></form></details>",
                );
            }
        }
    }
    p.push_str("</section>");
}

/// W2 Generate CSR (manual 1.3.2, SR5): one or more servers that hold certificates; the
/// common name only when one server is selected (the script hides it otherwise, the
/// library refuses it); O, OU, L, ST, a two-letter country; the key.
fn generate_csr_form(p: &mut String, csrf: &str, servers: &[crate::view::ServerView]) {
    let _ = write!(
        p,
        "<details id=\"generate-csr\"><summary>Generate CSR</summary>\
         <form method=\"post\" action=\"/console/generate-csr\">{}\
         <fieldset id=\"gen-servers\"><legend>Servers</legend>",
        csrf_field(csrf)
    );
    for (i, s) in servers
        .iter()
        .filter(|s| s.role.has_certificate())
        .enumerate()
    {
        let _ = write!(
            p,
            "<p><input type=\"checkbox\" id=\"gen-server-{i}\" name=\"servers\" value=\"{0}\" data-count=\"gen-cn-row\">\
             <label for=\"gen-server-{i}\">{0}</label></p>",
            esc(&s.fqdn)
        );
    }
    p.push_str(
        "</fieldset><div id=\"gen-cn-row\"><label for=\"gen-cn\">Common Name (CN), for one server only</label>\
         <input id=\"gen-cn\" name=\"common_name\"></div>\
         <label for=\"gen-org\">Organization</label><input id=\"gen-org\" name=\"org\" maxlength=\"64\">\
         <label for=\"gen-ou\">Organization Unit</label><input id=\"gen-ou\" name=\"ou\" maxlength=\"64\">\
         <label for=\"gen-locality\">City/Locality</label><input id=\"gen-locality\" name=\"locality\" maxlength=\"128\">\
         <label for=\"gen-state\">State/Province</label><input id=\"gen-state\" name=\"state\" maxlength=\"128\">\
         <label for=\"gen-country\">Country or Region (two letters)</label>\
         <input id=\"gen-country\" name=\"country\" maxlength=\"2\" minlength=\"2\" pattern=\"[A-Za-z]{2}\" title=\"Two letters, e.g. US\">\
         <label for=\"gen-key\">Key length</label>",
    );
    key_options(p, "gen-key", "key");
    p.push_str(" <button type=\"submit\" id=\"gen-ok\">Generate CSR</button></form></details>");
}

/// W2 Remint Certificate (manual 1.3.1, SR1-SR3): the servers that hold certificates, the
/// system update's name, the activation, a common name only for one server (hidden by the
/// script otherwise; the library refuses one for several, or for a server with satellites),
/// "Include any additional DNS names" disabled when no server has any, the key.
fn remint_certificate_form(p: &mut String, csrf: &str, servers: &[crate::view::ServerView]) {
    let _ = write!(
        p,
        "<details id=\"remint-certificate\"><summary>Remint Certificate</summary>\
         <form method=\"post\" action=\"/console/remint-certificate\">{}\
         <fieldset id=\"rcert-servers\"><legend>Servers</legend>",
        csrf_field(csrf)
    );
    let with_cert: Vec<&crate::view::ServerView> = servers
        .iter()
        .filter(|s| s.role.has_certificate())
        .collect();
    for (i, s) in with_cert.iter().enumerate() {
        let _ = write!(
            p,
            "<p><input type=\"checkbox\" id=\"rcert-server-{i}\" name=\"servers\" value=\"{0}\" data-count=\"rcert-cn-row\">\
             <label for=\"rcert-server-{i}\">{0}</label></p>",
            esc(&s.fqdn)
        );
    }
    let any_dns = with_cert.iter().any(|s| !s.dns_names.is_empty());
    let _ = write!(
        p,
        "</fieldset><label for=\"rcert-name\">System update name</label>\
         <input id=\"rcert-name\" name=\"update_name\" required maxlength=\"128\">\
         <label for=\"rcert-at\">Certificate activation (UTC)</label>\
         <input id=\"rcert-at\" name=\"activation\" type=\"datetime-local\" required>\
         <div id=\"rcert-cn-row\"><label for=\"rcert-cn\">Common Name (CN), for one server without satellites only</label>\
         <input id=\"rcert-cn\" name=\"common_name\"></div>\
         <p><input type=\"checkbox\" id=\"rcert-dns\" name=\"include_dns\"{}>\
         <label for=\"rcert-dns\">Include any additional DNS names</label>{}</p>\
         <label for=\"rcert-key\">Key length</label>",
        if any_dns { "" } else { " disabled" },
        if any_dns {
            ""
        } else {
            " <span class=\"note\">(no server has additional DNS names)</span>"
        }
    );
    key_options(p, "rcert-key", "key");
    p.push_str(
        " <button type=\"submit\" id=\"rcert-ok\">Remint Certificate</button></form></details>",
    );
}

fn server_select(p: &mut String, id: &str, servers: &[String]) {
    server_options(p, id, servers, None);
}

/// B3 during an operation: the form that asks what happens at a chosen time.
fn plan_form(p: &mut String) {
    p.push_str(
        "<form method=\"get\" action=\"/console/plan\" class=\"inline\" id=\"plan-form\">\
         <label for=\"plan-at\">What happens at (UTC)</label>\
         <input id=\"plan-at\" name=\"at\" type=\"datetime-local\" required> \
         <button type=\"submit\">Show the plan</button></form>",
    );
}

/// Rows of the plan page: the members that would not communicate first.
pub(crate) const PLAN_ROWS: usize = 200;

/// B3: per member of the running operation, will it still communicate at the chosen time.
pub(crate) fn plan<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    at: &str,
) -> String {
    let mut p = head("Plan: zonepki console");
    p.push_str(
        "<body><header><h1>Plan: what happens at a chosen time</h1>\
         <p><a href=\"/console\">Back to the Certificates page</a></p></header><main>\
         <section id=\"plan-pane\" class=\"pane\" aria-labelledby=\"plan-h\"><h2 id=\"plan-h\">Plan</h2>",
    );
    plan_form(&mut p);
    let answer = super::parse_time(at).and_then(|t| svc.plan(t).map_err(|e| e.to_string()));
    match answer {
        Err(e) => {
            let _ = write!(p, "<p class=\"flash error\" role=\"alert\">{}</p>", esc(&e));
        }
        Ok(plan) => {
            let total = plan.members.len();
            let _ = write!(
                p,
                "<dl class=\"details\" id=\"plan-summary\"><dt>At</dt><dd>{}</dd>\
                 <dt>Activated by then</dt><dd id=\"plan-activated\">{}</dd>\
                 <dt>Members</dt><dd>{}</dd>\
                 <dt>Would still communicate</dt><dd id=\"plan-communicate\">{}</dd>\
                 <dt>Would be stranded</dt><dd id=\"plan-stranded\">{}</dd>",
                esc(&plan.at.to_string()),
                if plan.activated_by_then { "yes" } else { "no" },
                total,
                total - plan.stranded.len(),
                plan.stranded.len()
            );
            if let Some(g) = &plan.gate {
                let _ = write!(
                    p,
                    "<dt>Coverage gate</dt><dd>{}</dd>",
                    esc(g.outcome.text())
                );
            }
            p.push_str("</dl>");
            let mut rows: Vec<_> = plan.members.iter().collect();
            rows.sort_by_key(|m| m.communicates);
            let _ = write!(
                p,
                "<table id=\"plan\"><caption>Members ({} of {total} shown, those that would be \
                 stranded first)</caption><thead><tr><th scope=\"col\">Member</th>\
                 <th scope=\"col\">Update status now</th><th scope=\"col\">Will communicate</th>\
                 <th scope=\"col\">Why</th></tr></thead><tbody>",
                rows.len().min(PLAN_ROWS)
            );
            for m in rows.into_iter().take(PLAN_ROWS) {
                let _ = write!(
                    p,
                    "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&m.name),
                    esc(m.status.name()),
                    if m.communicates { "yes" } else { "no" },
                    esc(&m.reason)
                );
            }
            p.push_str("</tbody></table>");
        }
    }
    p.push_str("</section></main></body></html>");
    p
}

fn device_pane<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    q: &Query,
    p: &mut String,
) {
    p.push_str(
        "<section id=\"device-pane\" class=\"pane\" aria-labelledby=\"device-h\">\
         <h2 id=\"device-h\">Devices: system update status</h2>\
         <form method=\"get\" action=\"/console\" class=\"inline\" role=\"search\">\
         <label for=\"device-status\">Status</label><select id=\"device-status\" name=\"status\">\
         <option value=\"\">all</option>",
    );
    let status: Option<UpdateStatus> = q.status.as_deref().and_then(|s| s.parse().ok());
    for s in UpdateStatus::ALL {
        let sel = if Some(s) == status { " selected" } else { "" };
        let _ = write!(p, "<option value=\"{0}\"{sel}>{0}</option>", esc(s.name()));
    }
    p.push_str("</select> <button type=\"submit\">Filter</button></form>");
    let mut query = DeviceQuery::all().with_limit(DEVICES_PER_PAGE);
    if let Some(s) = status {
        query = query.with_status(s);
    }
    if let Some(a) = &q.after {
        query = query.with_after(a.clone());
    }
    match svc.device_list(&query) {
        Err(e) => p.push_str(&error_section("Devices", &e)),
        Ok(page) => {
            p.push_str(
                "<table id=\"devices\"><thead><tr><th scope=\"col\">Device</th>\
                 <th scope=\"col\">Update Status</th><th scope=\"col\">Agent version</th></tr></thead><tbody>",
            );
            for d in &page.devices {
                let _ = write!(
                    p,
                    "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td></tr>",
                    esc(&d.name),
                    esc(d.update_status.name()),
                    esc(&d.agent_version)
                );
            }
            p.push_str("</tbody></table><p class=\"paging\">");
            if q.after.is_some() {
                let _ = write!(
                    p,
                    "<a href=\"/console?status={}#device-pane\">First page</a> ",
                    enc(q.status.as_deref().unwrap_or(""))
                );
            }
            if let (true, Some(last)) = (page.more, page.devices.last()) {
                let _ = write!(
                    p,
                    "<a id=\"devices-next\" href=\"/console?status={}&amp;after={}#device-pane\">Next page</a>",
                    enc(q.status.as_deref().unwrap_or("")),
                    enc(&last.name)
                );
            }
            p.push_str("</p>");
        }
    }
    p.push_str("</section>");
}

fn audit_pane<S: Storage, T: Transport, C: Clock>(svc: &ZoneService<S, T, C>, p: &mut String) {
    let _ = write!(
        p,
        "<section id=\"audit-pane\" class=\"pane\" aria-labelledby=\"audit-h\">\
         <h2 id=\"audit-h\">Audit log (last {AUDIT_ENTRIES} entries)</h2>"
    );
    match svc.audit_recent(AUDIT_ENTRIES) {
        Err(e) => p.push_str(&error_section("Audit log", &e)),
        Ok(entries) => {
            p.push_str(
                "<table id=\"audit\"><thead><tr><th scope=\"col\">#</th><th scope=\"col\">When (UTC)</th>\
                 <th scope=\"col\">Event</th><th scope=\"col\">Detail</th></tr></thead><tbody>",
            );
            for e in entries {
                let detail = e.detail.to_string();
                let detail: String = detail.chars().take(300).collect();
                let _ = write!(
                    p,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"detail\">{}</td></tr>",
                    e.seq,
                    esc(&e.at.to_string()),
                    esc(&e.event),
                    esc(&detail)
                );
            }
            p.push_str("</tbody></table>");
        }
    }
    p.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(enc("a b/ä"), "a%20b%2F%C3%A4");
    }
}
