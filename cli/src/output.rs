//! Printing server objects as human tables, JSON or YAML.

use std::io::Write;

use api::wire::{ConfigView, Event, EventBody, StatusView};
use clap::ValueEnum;
use serde::Serialize;

use crate::error::{Error, Result};

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Human tables.
    #[default]
    Table,
    /// The server's object as JSON (one object per line for `watch`).
    Json,
    /// The server's object as YAML (one document per event for `watch`).
    Yaml,
}

/// Writes `value` as pretty JSON or a YAML document.
pub fn object<T: Serialize>(w: &mut dyn Write, format: Format, value: &T) -> Result<()> {
    match format {
        Format::Yaml => {
            let text = serde_yaml::to_string(value)
                .map_err(|e| Error::Output(std::io::Error::other(e)))?;
            write!(w, "{text}").map_err(Error::Output)
        }
        _ => {
            serde_json::to_writer_pretty(&mut *w, value).map_err(|e| Error::Output(e.into()))?;
            writeln!(w).map_err(Error::Output)
        }
    }
}

/// A subscription: one line in table form, the whole view otherwise.
pub fn care(w: &mut dyn Write, format: Format, view: &api::wire::CareView) -> Result<()> {
    if format != Format::Table {
        return object(w, format, view);
    }
    let delivery = match &view.spec.delivery.url {
        Some(url) => format!("webhook {url}"),
        None => "stream".to_string(),
    };
    // The standalone agent has no namespaces.
    let name = match view.namespace.as_str() {
        "" => view.name.clone(),
        ns => format!("{ns}/{}", view.name),
    };
    writeln!(w, "networkcare {name} created ({delivery})").map_err(Error::Output)
}

pub fn config(w: &mut dyn Write, format: Format, view: &ConfigView) -> Result<()> {
    if format != Format::Table {
        return object(w, format, view);
    }
    let mut out = format!("POD {}  GENERATION {}\n", view.pod, view.generation);
    let mut t = Table::new(&[
        "INTERFACE",
        "TYPE",
        "PARENT",
        "MTU",
        "STATE",
        "ADDRESSES",
        "MANAGERS",
    ]);
    for i in &view.spec.interfaces {
        let details = [
            i.vlan_id.map(|v| format!("vlan {v}")),
            i.mode.map(|m| format!("mode {}", wire_name(&m))),
            i.vni.map(|v| format!("vni {v}")),
            i.peer.as_ref().map(|p| format!("peer {p}")),
        ];
        let mut kind = i.kind.as_str().to_string();
        for d in details.into_iter().flatten() {
            kind = format!("{kind} ({d})");
        }
        t.row([
            i.name.clone(),
            kind,
            opt(&i.parent),
            opt(&i.mtu),
            i.state.map(|s| wire_name(&s)).unwrap_or_else(dash),
            list(&i.addresses),
            list(
                view.owners
                    .interfaces
                    .get(&i.name)
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
            ),
        ]);
    }
    out.push_str(&t.render_or("no interfaces"));
    let mut t = Table::new(&["ROUTE", "VIA", "DEV", "METRIC", "TABLE", "MANAGERS"]);
    for r in &view.spec.routes {
        let key = r.key();
        let managers = view
            .owners
            .routes
            .iter()
            .find(|o| o.key == key)
            .map(|o| list(&o.managers))
            .unwrap_or_else(dash);
        t.row([
            r.dst.clone(),
            opt(&r.via),
            opt(&r.dev),
            r.metric.to_string(),
            r.table.to_string(),
            managers,
        ]);
    }
    out.push_str(&t.render_or("no routes"));
    w.write_all(out.as_bytes()).map_err(Error::Output)
}

pub fn status(w: &mut dyn Write, format: Format, view: &StatusView) -> Result<()> {
    if format != Format::Table {
        return object(w, format, view);
    }
    let s = &view.status;
    let mut out = format!(
        "POD {}  GENERATION {}  APPLIED {}",
        view.pod,
        view.generation,
        if view.is_applied() { "yes" } else { "no" }
    );
    if let Some(node) = &s.node {
        out.push_str(&format!("  NODE {node}"));
    }
    if let Some(netns) = &s.netns {
        out.push_str(&format!("  NETNS {}:{}", netns.dev, netns.inode));
    }
    out.push('\n');
    let mut t = Table::new(&[
        "INTERFACE",
        "STATE",
        "INDEX",
        "MAC",
        "MTU",
        "OPER",
        "ADDRESSES",
        "ERROR",
    ]);
    for i in &s.interfaces {
        t.row([
            i.name.clone(),
            format!("{:?}", i.state),
            opt(&i.index),
            opt(&i.mac),
            opt(&i.mtu),
            opt(&i.oper_state),
            list(&i.addresses),
            opt(&i.error),
        ]);
    }
    out.push_str(&t.render_or("no interfaces"));
    let mut t = Table::new(&["ROUTE", "TABLE", "METRIC", "STATE", "ERROR"]);
    for r in &s.routes {
        t.row([
            r.dst.clone(),
            r.table.to_string(),
            r.metric.to_string(),
            format!("{:?}", r.state),
            opt(&r.error),
        ]);
    }
    out.push_str(&t.render_or("no routes"));
    let mut t = Table::new(&["CONDITION", "STATUS", "REASON", "GENERATION", "MESSAGE"]);
    for c in &s.conditions {
        t.row([
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            opt(&c.observed_generation),
            c.message.clone(),
        ]);
    }
    out.push_str(&t.render_or("no conditions"));
    w.write_all(out.as_bytes()).map_err(Error::Output)
}

/// One event: a line in table form (`SEQ TIME TYPE details`), one JSON line, or a YAML
/// document. `raw` is the line as received; it is printed when the event's type is unknown
/// to this nescli (a newer agent), so nothing is lost.
pub fn event(w: &mut dyn Write, format: Format, raw: &serde_json::Value) -> Result<()> {
    let text = match format {
        Format::Json => format!("{raw}\n"),
        Format::Yaml => {
            let doc =
                serde_yaml::to_string(raw).map_err(|e| Error::Output(std::io::Error::other(e)))?;
            format!("---\n{doc}")
        }
        Format::Table => format!("{}\n", event_line(raw)),
    };
    w.write_all(text.as_bytes()).map_err(Error::Output)?;
    w.flush().map_err(Error::Output)
}

/// `12  2025-01-01T00:00:00Z  LinkUp  ifname=eth0`.
pub fn event_line(raw: &serde_json::Value) -> String {
    let field = |k: &str| {
        raw.get(k)
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(dash)
    };
    let details = match serde_json::from_value::<Event>(raw.clone()) {
        Ok(ev) => describe(&ev.body),
        Err(_) => raw
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| !["seq", "time", "pod", "type"].contains(&k.as_str()))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
    };
    format!(
        "{}  {}  {}  {}",
        field("seq"),
        field("time"),
        field("type"),
        details
    )
    .trim_end()
    .to_string()
}

fn describe(body: &EventBody) -> String {
    match body {
        EventBody::LinkUp { ifname }
        | EventBody::LinkDown { ifname }
        | EventBody::LinkAdded { ifname }
        | EventBody::LinkRemoved { ifname } => format!("ifname={ifname}"),
        EventBody::MtuChanged { ifname, old, new } => format!(
            "ifname={ifname} mtu={}->{new}",
            old.map(|o| o.to_string()).unwrap_or_else(dash)
        ),
        EventBody::AddressAdded { ifname, address }
        | EventBody::AddressRemoved { ifname, address } => {
            format!("ifname={ifname} address={address}")
        }
        EventBody::RouteAdded { dst, table, metric }
        | EventBody::RouteRemoved { dst, table, metric } => {
            format!("dst={dst} table={table} metric={metric}")
        }
        EventBody::ConfigApplied { generation, writes } => {
            format!("generation={generation} writes={writes}")
        }
        EventBody::ConfigFailed { generation, error } => {
            format!("generation={generation} error={error:?}")
        }
        EventBody::Degraded { reason, message } => format!("reason={reason} message={message:?}"),
    }
}

// === table ===

/// Left-aligned columns separated by two spaces; empty cells print `-`.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| if c.is_empty() { dash() } else { c })
                .collect(),
        );
    }

    /// The table, preceded by a blank line; or `(none)`-style text when there are no rows.
    fn render_or(&self, empty: &str) -> String {
        if self.rows.is_empty() {
            return format!("\n({empty})\n");
        }
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::from("\n");
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                line.push_str(&format!("{cell:<width$}  "));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn dash() -> String {
    "-".to_string()
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_else(dash)
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        dash()
    } else {
        v.join(",")
    }
}

fn wire_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => dash(),
    }
}

#[cfg(test)]
mod tests;
