//! The report's charts: log lines per hour as stacked SVG bars, and the error-rate heatmap per
//! service and hour.

use std::collections::BTreeMap;

use super::{CHART_SERVICES, OTHER, PALETTE, esc, pct, thousands};
use crate::report::{ReportData, w};

/// The stacked bars of log lines per hour (one colour per top service, the rest as "other").
pub(super) fn volume_chart(s: &mut String, d: &ReportData) {
    let top: Vec<&str> = d
        .services
        .iter()
        .take(CHART_SERVICES)
        .map(|x| x.service.as_str())
        .collect();
    let hours = hourly_stacks(d, &top);
    let f = ChartFrame::new(tallest_stack(&hours));
    s.push_str("<section><h2>Log volume per hour</h2>");
    w(
        s,
        format_args!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {} {}\" width=\"100%\" role=\"img\" aria-label=\"log lines per hour by service\">",
            f.wd, f.ht
        ),
    );
    chart_grid(s, &f);
    for h in 0..24 {
        chart_hour(s, &f, h, hours.get(&h), &top);
    }
    s.push_str("</svg><div class=\"legend\">");
    chart_legend(s, d, &top);
    s.push_str("</div></section>");
}

/// Per hour, the rows of each of the `top` services followed by the rows of all others.
fn hourly_stacks(d: &ReportData, top: &[&str]) -> BTreeMap<i32, Vec<u64>> {
    let mut hours: BTreeMap<i32, Vec<u64>> = BTreeMap::new();
    for r in &d.hourly {
        let v = hours
            .entry(r.hour)
            .or_insert_with(|| vec![0; top.len() + 1]);
        let i = top
            .iter()
            .position(|t| *t == r.service)
            .unwrap_or(top.len());
        v[i] += r.rows;
    }
    hours
}

/// The height of the tallest hour (at least 1, the chart's scale).
fn tallest_stack(hours: &BTreeMap<i32, Vec<u64>>) -> u64 {
    hours
        .values()
        .map(|v| v.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1)
}

/// The volume chart's geometry (SVG user units) and scale.
struct ChartFrame {
    wd: f64,
    ht: f64,
    left: f64,
    top_pad: f64,
    plot_h: f64,
    /// Width of one hour's bar slot.
    bw: f64,
    /// Lines of the tallest hour.
    max: u64,
}

impl ChartFrame {
    fn new(max: u64) -> Self {
        let (wd, ht, left, bottom, top_pad) = (960.0, 260.0, 56.0, 24.0, 8.0);
        Self {
            wd,
            ht,
            left,
            top_pad,
            plot_h: ht - bottom - top_pad,
            bw: (wd - left) / 24.0,
            max,
        }
    }
}

/// Horizontal grid lines at 0, half and full scale, with their values.
fn chart_grid(s: &mut String, f: &ChartFrame) {
    for frac in [0.0, 0.5, 1.0] {
        let y = f.top_pad + f.plot_h * (1.0 - frac);
        let v = (f.max as f64 * frac).round() as u64;
        w(
            s,
            format_args!(
                "<line x1=\"{}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e5e7eb\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#6b7280\">{}</text>",
                f.left,
                f.wd,
                f.left - 4.0,
                y + 4.0,
                thousands(v)
            ),
        );
    }
}

/// Hour `h`: its axis label (every third hour), its stacked bars and its total.
fn chart_hour(s: &mut String, f: &ChartFrame, h: i32, stack: Option<&Vec<u64>>, top: &[&str]) {
    let x = f.left + f.bw * f64::from(h);
    if h % 3 == 0 {
        w(
            s,
            format_args!(
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#6b7280\">{h:02}:00</text>",
                x + f.bw / 2.0,
                f.ht - 6.0
            ),
        );
    }
    let Some(v) = stack else { return };
    let total: u64 = v.iter().sum();
    let mut y = f.top_pad + f.plot_h;
    for (i, n) in v.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        let hgt = f.plot_h * (*n as f64) / (f.max as f64);
        y -= hgt;
        let (name, color) = match top.get(i) {
            Some(t) => (*t, PALETTE[i % PALETTE.len()]),
            None => ("other", OTHER),
        };
        w(
            s,
            format_args!(
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{hgt:.1}\" fill=\"{color}\"><title>{h:02}:00 {} {} lines</title></rect>",
                x + 1.0,
                (f.bw - 2.0).max(1.0),
                esc(name),
                thousands(*n)
            ),
        );
    }
    w(
        s,
        format_args!("<g data-k=\"hour_total\" data-hour=\"{h}\" data-v=\"{total}\"></g>"),
    );
}

/// The colour of each top service, and "other" when there are more services.
fn chart_legend(s: &mut String, d: &ReportData, top: &[&str]) {
    for (i, t) in top.iter().enumerate() {
        w(
            s,
            format_args!(
                "<span><i style=\"background:{}\"></i>{}</span>",
                PALETTE[i % PALETTE.len()],
                esc(t)
            ),
        );
    }
    if d.services.len() > top.len() {
        w(
            s,
            format_args!("<span><i style=\"background:{OTHER}\"></i>other</span>"),
        );
    }
}

/// The error rate of each service and hour as a red-scaled table cell.
pub(super) fn heatmap(s: &mut String, d: &ReportData) {
    let mut cells: BTreeMap<(&str, i32), (u64, u64)> = BTreeMap::new();
    for r in &d.hourly {
        cells.insert((r.service.as_str(), r.hour), (r.rows, r.errors));
    }
    s.push_str("<section><h2>Error rate per service and hour</h2><table class=\"heat\"><thead><tr><th></th>");
    for h in 0..24 {
        w(s, format_args!("<th>{h:02}</th>"));
    }
    s.push_str("</tr></thead><tbody>");
    for svc in &d.services {
        w(
            s,
            format_args!("<tr><td class=\"svc\">{}</td>", esc(&svc.service)),
        );
        for h in 0..24 {
            match cells.get(&(svc.service.as_str(), h)) {
                Some((n, e)) => {
                    let rate = if *n == 0 { 0.0 } else { *e as f64 / *n as f64 };
                    // 0 % white, 10 % and above full red
                    let a = (rate * 10.0).min(1.0) * 0.9 + if *e > 0 { 0.1 } else { 0.0 };
                    w(
                        s,
                        format_args!(
                            "<td data-k=\"cell\" data-service=\"{}\" data-hour=\"{h}\" data-rows=\"{n}\" data-errors=\"{e}\" style=\"background:rgba(220,38,38,{a:.2})\" title=\"{} {h:02}:00 · {n} lines · {e} errors ({})\"></td>",
                            esc(&svc.service),
                            esc(&svc.service),
                            pct(*e, *n)
                        ),
                    );
                }
                None => s.push_str("<td style=\"background:#f3f4f6\"></td>"),
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table></section>");
}
