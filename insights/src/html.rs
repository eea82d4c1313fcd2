//! The report page: one HTML string with inline CSS, inline SVG charts and a few lines of inline
//! script that make the tables sortable (click a column header). No external resource.

use crate::report::{ReportData, w};

mod charts;

use charts::{heatmap, volume_chart};

/// HTML-escape text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const PALETTE: &[&str] = &[
    "#2563eb", "#16a34a", "#f59e0b", "#9333ea", "#0891b2", "#db2777", "#65a30d", "#ea580c",
];
const OTHER: &str = "#9ca3af";
/// Services drawn with their own colour in the volume chart; the rest are "other".
const CHART_SERVICES: usize = 8;

const CSS: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#111827;background:#f9fafb}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}.sub{color:#6b7280;font-size:13px}\
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;min-width:120px}\
.card .v{font-size:22px;font-weight:600}.card .k{font-size:12px;color:#6b7280}\
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px 16px;margin-bottom:16px}\
table{border-collapse:collapse;font-size:13px;width:100%}th,td{padding:4px 8px;border-bottom:1px solid #f3f4f6;text-align:left;vertical-align:top}\
th{cursor:pointer;user-select:none;background:#f9fafb}th.num,td.num{text-align:right;font-variant-numeric:tabular-nums}\
code{font-size:12px;white-space:pre-wrap;word-break:break-all}.new{background:#dcfce7;color:#166534;border-radius:4px;padding:0 4px;font-size:11px}\
.bad{color:#b91c1c;font-weight:600}.ok{color:#15803d;font-weight:600}\
table.heat td{padding:0;width:22px;height:16px;border:1px solid #fff}table.heat td.svc{width:auto;padding:0 8px;white-space:nowrap}\
table.heat th{font-size:10px;padding:0 2px;text-align:center;cursor:default}.legend span{display:inline-block;margin-right:12px;font-size:12px}\
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}";

const SCRIPT: &str = "(function(){document.querySelectorAll('table.sortable').forEach(function(t){\
var hs=t.querySelectorAll('thead th');hs.forEach(function(h,i){h.addEventListener('click',function(){\
var b=t.tBodies[0];var rows=Array.prototype.slice.call(b.rows);var dir=h.getAttribute('data-dir')==='asc'?'desc':'asc';\
hs.forEach(function(x){x.removeAttribute('data-dir');});h.setAttribute('data-dir',dir);\
rows.sort(function(r1,r2){var a=r1.cells[i].getAttribute('data-v')||r1.cells[i].textContent;var c=r2.cells[i].getAttribute('data-v')||r2.cells[i].textContent;\
var x=parseFloat(a),y=parseFloat(c);var r=(!isNaN(x)&&!isNaN(y))?x-y:a.localeCompare(c);return dir==='asc'?r:-r;});\
rows.forEach(function(r){b.appendChild(r);});});});});document.body.setAttribute('data-ready','1');})();";

fn pct(n: u64, d: u64) -> String {
    if d == 0 {
        "0.0%".into()
    } else {
        format!("{:.1}%", n as f64 * 100.0 / d as f64)
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut o = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            o.push(',');
        }
        o.push(c);
    }
    o
}

/// Render the page.
pub fn render(d: &ReportData) -> String {
    let mut s = String::with_capacity(64 * 1024);
    w(
        &mut s,
        format_args!(
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>loglake report {date}</title>\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><style>{CSS}</style></head><body>\
             <h1>loglake report · {date}</h1><div class=\"sub\">lake <code>{lake}</code> · logs table <code>{table}</code> · generated {gen} UTC</div>",
            date = d.date,
            lake = esc(&d.lake),
            table = esc(&d.logs_table),
            gen = esc(&d.generated_at),
        ),
    );
    cards(&mut s, d);
    volume_chart(&mut s, d);
    heatmap(&mut s, d);
    services_table(&mut s, d);
    templates_section(&mut s, d);
    anomalies(&mut s, d);
    health(&mut s, d);
    dead_letters(&mut s, d);
    lake_state(&mut s, d);
    w(
        &mut s,
        format_args!(
            "<div class=\"sub\">Same data: report-{}.json. Tables sort by clicking a column header.</div><script>{SCRIPT}</script></body></html>",
            d.date
        ),
    );
    s
}

fn card(s: &mut String, key: &str, label: &str, value: &str, raw: &str) {
    w(
        s,
        format_args!(
            "<div class=\"card\" data-k=\"{key}\" data-v=\"{}\"><div class=\"v\">{}</div><div class=\"k\">{}</div></div>",
            esc(raw),
            esc(value),
            esc(label)
        ),
    );
}

fn cards(s: &mut String, d: &ReportData) {
    s.push_str("<div class=\"cards\">");
    card(
        s,
        "rows",
        "log lines",
        &thousands(d.rows),
        &d.rows.to_string(),
    );
    card(
        s,
        "errors",
        "errors (ERROR/FATAL)",
        &thousands(d.errors),
        &d.errors.to_string(),
    );
    card(
        s,
        "error_rate",
        "error rate",
        &pct(d.errors, d.rows),
        &pct(d.errors, d.rows),
    );
    card(
        s,
        "services",
        "services",
        &d.services.len().to_string(),
        &d.services.len().to_string(),
    );
    card(
        s,
        "templates",
        "templates",
        &d.templates_total.to_string(),
        &d.templates_total.to_string(),
    );
    if d.template_history {
        let n = d.new_templates.len().to_string();
        card(s, "new_templates", "new templates", &n, &n);
    }
    if let Some(dl) = &d.dead_letters {
        card(
            s,
            "dead_letters",
            "dead letters",
            &thousands(dl.total),
            &dl.total.to_string(),
        );
    }
    let complete = d.completeness.iter().filter(|c| c.complete).count();
    let c = format!("{complete}/{}", d.completeness.len());
    card(s, "complete_tables", "tables marked complete", &c, &c);
    s.push_str("</div>");
}

fn services_table(s: &mut String, d: &ReportData) {
    s.push_str("<section><h2>Services</h2><table class=\"sortable\" id=\"services\"><thead><tr><th>service</th><th class=\"num\">lines</th><th class=\"num\">errors</th><th class=\"num\">error rate</th></tr></thead><tbody>");
    for x in &d.services {
        let rate = if x.rows == 0 {
            0.0
        } else {
            x.errors as f64 / x.rows as f64
        };
        w(
            s,
            format_args!(
                "<tr data-k=\"service\" data-service=\"{}\" data-rows=\"{}\" data-errors=\"{}\"><td>{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\" data-v=\"{rate}\">{}</td></tr>",
                esc(&x.service),
                x.rows,
                x.errors,
                esc(&x.service),
                x.rows,
                thousands(x.rows),
                x.errors,
                thousands(x.errors),
                pct(x.errors, x.rows)
            ),
        );
    }
    s.push_str("</tbody></table></section>");
}

fn template_rows(
    s: &mut String,
    list: &[crate::templates::DayTemplate],
    total: u64,
    key: &str,
    show_new: bool,
) {
    s.push_str("<table class=\"sortable\"><thead><tr><th class=\"num\">#</th><th>service</th><th class=\"num\">lines</th><th class=\"num\">share</th><th>template</th><th>id</th></tr></thead><tbody>");
    for (i, t) in list.iter().enumerate() {
        let share = if total == 0 {
            0.0
        } else {
            t.count as f64 / total as f64
        };
        w(
            s,
            format_args!(
                "<tr data-k=\"{key}\" data-service=\"{}\" data-template-id=\"{}\" data-count=\"{}\"><td class=\"num\" data-v=\"{}\">{}</td><td>{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\" data-v=\"{share}\">{:.1}%</td><td><code title=\"{}\">{}</code>{}</td><td><code>{}</code></td></tr>",
                esc(&t.service),
                esc(&t.template_id),
                t.count,
                i + 1,
                i + 1,
                esc(&t.service),
                t.count,
                thousands(t.count),
                share * 100.0,
                esc(&t.example),
                esc(&t.template),
                if t.new_today && show_new && key == "template" {
                    " <span class=\"new\">new</span>"
                } else {
                    ""
                },
                esc(&t.template_id),
            ),
        );
    }
    s.push_str("</tbody></table>");
}

fn templates_section(s: &mut String, d: &ReportData) {
    w(
        s,
        format_args!(
            "<section><h2>Top templates</h2><div class=\"sub\">{} templates mined per service (Drain); hover a template for an example line.</div>",
            d.templates_total
        ),
    );
    template_rows(s, &d.top_templates, d.rows, "template", d.template_history);
    s.push_str("</section><section><h2>New templates</h2>");
    if !d.template_history {
        s.push_str("<div class=\"sub\">No template history in this lake yet (the nightly <code>log_templates</code> table holds none before this day), so nothing can be called new.</div>");
    } else if d.new_templates.is_empty() {
        s.push_str("<div class=\"sub\">None: every template of the day was seen before.</div>");
    } else {
        template_rows(s, &d.new_templates, d.rows, "new_template", false);
    }
    s.push_str("</section>");
}

fn anomalies(s: &mut String, d: &ReportData) {
    s.push_str("<section><h2>Anomalies</h2>");
    match &d.anomalies {
        None => s.push_str("<div class=\"sub\">No <code>log_anomalies</code> table in this lake (<code>loglake insights anomalies</code> computes it).</div>"),
        Some(v) if v.is_empty() => s.push_str("<div class=\"sub ok\">None flagged: every service-hour is within its usual range (a lake&#39;s first days, without a baseline, flag nothing).</div>"),
        Some(v) => {
            s.push_str("<table class=\"sortable\"><thead><tr><th class=\"num\">hour</th><th>service</th><th class=\"num\">lines</th><th class=\"num\">usual</th><th class=\"num\">z</th><th>pod</th><th>template</th><th>drill down</th></tr></thead><tbody>");
            for a in v {
                w(
                    s,
                    format_args!(
                        "<tr data-k=\"anomaly\" data-hour=\"{h}\" data-service=\"{svc}\" data-rows=\"{rows}\" data-pod=\"{pod}\" data-template=\"{tpl}\"><td class=\"num\">{h:02}:00</td><td>{ns}/{svc}</td><td class=\"num\" data-v=\"{rows}\">{rows_t}</td><td class=\"num\">{base:.0}</td><td class=\"num bad\" data-v=\"{z}\">{z:.1}</td><td>{pod}</td><td><code>{tpl}</code></td><td><code>{sql}</code></td></tr>",
                        h = a.hour,
                        ns = esc(&a.namespace),
                        svc = esc(&a.service),
                        rows = a.rows,
                        rows_t = thousands(a.rows.max(0) as u64),
                        base = a.baseline_rows,
                        z = a.rows_z,
                        pod = esc(a.top_pod.as_deref().unwrap_or("")),
                        tpl = esc(a.top_template.as_deref().unwrap_or("")),
                        sql = esc(a.drill_sql.as_deref().unwrap_or("")),
                    ),
                );
            }
            s.push_str("</tbody></table>");
        }
    }
    s.push_str("</section>");
}

fn health(s: &mut String, d: &ReportData) {
    s.push_str("<section><h2>Kubernetes health</h2>");
    match &d.health {
        None => s.push_str("<div class=\"sub\">No <code>k8s_health</code> table in this lake (<code>loglake insights k8s-health</code> computes it from Kubernetes Events).</div>"),
        Some(v) if v.is_empty() => s.push_str("<div class=\"sub ok\">No health signal this day.</div>"),
        Some(v) => {
            s.push_str("<table class=\"sortable\"><thead><tr><th>namespace</th><th>workload</th>");
            for (_, name) in crate::k8s::SIGNALS {
                w(s, format_args!("<th class=\"num\">{}</th>", name.replace('_', " ")));
            }
            s.push_str("</tr></thead><tbody>");
            for h in v {
                w(
                    s,
                    format_args!(
                        "<tr data-k=\"health\" data-namespace=\"{}\" data-workload=\"{}\" data-counts=\"{}\"><td>{}</td><td>{}</td>",
                        esc(&h.namespace),
                        esc(&h.workload),
                        h.counts.iter().map(i64::to_string).collect::<Vec<_>>().join(" "),
                        esc(&h.namespace),
                        esc(&h.workload)
                    ),
                );
                for c in &h.counts {
                    w(
                        s,
                        format_args!(
                            "<td class=\"num{}\" data-v=\"{c}\">{c}</td>",
                            if *c > 0 { " bad" } else { "" }
                        ),
                    );
                }
                s.push_str("</tr>");
            }
            s.push_str("</tbody></table>");
        }
    }
    s.push_str("</section>");
}

fn dead_letters(s: &mut String, d: &ReportData) {
    s.push_str("<section><h2>Dead letters</h2>");
    match &d.dead_letters {
        None => s.push_str("<div class=\"sub\">No dead-letter table in this lake.</div>"),
        Some(dl) => {
            w(
                s,
                format_args!(
                    "<div data-k=\"dead_letters\" data-v=\"{}\"><span class=\"{}\">{}</span> records of the day in <code>{}</code> could not be decoded.</div>",
                    dl.total,
                    if dl.total > 0 { "bad" } else { "ok" },
                    thousands(dl.total),
                    esc(&dl.table)
                ),
            );
            if !dl.by_error.is_empty() {
                s.push_str("<table class=\"sortable\"><thead><tr><th>error (template)</th><th class=\"num\">records</th></tr></thead><tbody>");
                for (e, n) in &dl.by_error {
                    w(
                        s,
                        format_args!(
                            "<tr data-k=\"dead_letter_error\" data-count=\"{n}\"><td><code>{}</code></td><td class=\"num\" data-v=\"{n}\">{}</td></tr>",
                            esc(e),
                            thousands(*n)
                        ),
                    );
                }
                s.push_str("</tbody></table>");
            }
        }
    }
    s.push_str("</section>");
}

fn lake_state(s: &mut String, d: &ReportData) {
    s.push_str("<section><h2>Completeness and compaction</h2><table class=\"sortable\"><thead><tr><th>table</th><th>day complete</th><th class=\"num\">rows (marker)</th><th>watermark</th><th class=\"num\">partitions</th><th class=\"num\">files</th><th class=\"num\">max files / partition</th><th class=\"num\">MB</th></tr></thead><tbody>");
    for c in &d.completeness {
        let comp = d.compaction.iter().find(|x| x.table == c.table);
        let (parts, files, maxf, bytes) = comp.map_or((0, 0, 0, 0), |x| {
            (x.partitions, x.files, x.max_files_per_partition, x.bytes)
        });
        w(
            s,
            format_args!(
                "<tr data-k=\"table\" data-table=\"{t}\" data-complete=\"{comp}\" data-files=\"{files}\" data-partitions=\"{parts}\"><td>{t}</td><td class=\"{cls}\">{word}</td><td class=\"num\">{rows}</td><td>{wm}</td><td class=\"num\">{parts}</td><td class=\"num\">{files}</td><td class=\"num\">{maxf}</td><td class=\"num\" data-v=\"{bytes}\">{mb:.1}</td></tr>",
                t = esc(&c.table),
                comp = c.complete,
                cls = if c.complete { "ok" } else { "bad" },
                word = if c.complete { "yes" } else { "no marker" },
                rows = c.rows.map(|r| r.to_string()).unwrap_or_default(),
                wm = esc(c.watermark.as_deref().unwrap_or("")),
                mb = bytes as f64 / 1e6,
            ),
        );
    }
    s.push_str("</tbody></table></section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(pct(1, 3), "33.3%");
        assert_eq!(pct(1, 0), "0.0%");
    }
}
