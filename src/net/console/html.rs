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
use crate::view::{DeviceQuery, UpdateStatus, WARNING_HEADER};

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
    server_pane(svc, &mut p);
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
        p.push_str("</tbody></table></details></div>");
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
    p.push_str(
        "<p class=\"actions\"><button type=\"button\" id=\"remint-ca-open\" \
         data-dialog=\"remint-dialog\">Remint CA</button></p>",
    );
    remint_dialog(p, csrf, zone_name, ca_expired, any_dns);
    backup_form(p, csrf);
    p.push_str("</section>");
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

fn backup_form(p: &mut String, csrf: &str) {
    let _ = write!(
        p,
        "<details id=\"backup\"><summary>Backup CA</summary>\
         <form method=\"post\" action=\"/console/backup-ca\">{}\
         <label for=\"backup-pass\">Passphrase</label>\
         <input id=\"backup-pass\" name=\"passphrase\" type=\"password\" autocomplete=\"new-password\" required>\
         <label for=\"backup-pass2\">Passphrase again</label>\
         <input id=\"backup-pass2\" name=\"passphrase_again\" type=\"password\" autocomplete=\"new-password\" required>\
         <button type=\"submit\">Download the backup</button></form></details>",
        csrf_field(csrf)
    );
}

fn opt(t: Option<impl std::fmt::Display>) -> String {
    t.map(|t| t.to_string()).unwrap_or_default()
}

fn server_pane<S: Storage, T: Transport, C: Clock>(svc: &ZoneService<S, T, C>, p: &mut String) {
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
            for s in servers {
                let options = s
                    .options
                    .iter()
                    .map(|o| o.text())
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = write!(
                    p,
                    "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td class=\"fp\">{}</td><td class=\"fp\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&s.issued_to.clone().unwrap_or_else(|| s.fqdn.clone())),
                    esc(&s.fqdn),
                    esc(&opt(s.issuer.as_ref())),
                    esc(&opt(s.not_before)),
                    esc(&opt(s.not_after)),
                    esc(&opt(s.md5.as_ref())),
                    esc(&opt(s.sha1.as_ref())),
                    esc(s.status.text()),
                    esc(&options),
                    esc(s.update_status.name()),
                    esc(&s.agent_version)
                );
            }
            p.push_str("</tbody></table></div>");
        }
    }
    p.push_str("</section>");
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
