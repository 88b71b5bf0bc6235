//! Results: one record per run, ratios to kernel forwarding measured in the same run, and the
//! Markdown table, JSON and SVG plot under `target/perf/`.

use crate::bench::{baseline, scenario_note, Scenario};
use crate::traffic::{GenReport, SinkReport, Size};
use plotters::prelude::*;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub scenario: String,
    /// Frame bytes, "imix", or "tcp-1"/"tcp-4" (iperf3 streams).
    pub packet_size: serde_json::Value,
    pub workers: usize,
    pub pps: f64,
    pub gbps: f64,
    /// The same size (or stream count) through kernel forwarding in this run = 1.0.
    pub ratio_to_kernel: Option<f64>,
    /// IPIP runs: the same size and workers through the router's direct path (`afpacket`)
    /// in this run = 1.0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_direct: Option<f64>,
    /// Packets sent but not received (UDP), plus what the routers counted as dropped.
    pub drops: u64,
    pub sent: u64,
    pub received: u64,
    pub reordered: u64,
    pub router_drops: u64,
    /// Busy CPU seconds of the whole machine per million packets delivered.
    pub cpu_secs_per_mpkt: Option<f64>,
    /// How the routers ran (router scenarios only), so that runs with other settings are
    /// told apart: their workers' nice value, and (afpacket) whether the transit filter was on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_nice: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transit_filter: Option<bool>,
}

impl Run {
    pub fn udp(
        sc: &Scenario,
        size: Size,
        workers: usize,
        g: &GenReport,
        s: &SinkReport,
        cpu: f64,
        router_drops: u64,
    ) -> Run {
        // Rate over the generator's sending time: what the path sustained.
        let secs = g.secs.max(1e-9);
        let pps = s.received as f64 / secs;
        Run {
            scenario: sc.name.to_string(),
            packet_size: match size {
                Size::Fixed(n) => serde_json::json!(n),
                Size::Imix => serde_json::json!("imix"),
            },
            workers,
            pps,
            gbps: s.bytes as f64 * 8.0 / secs / 1e9,
            ratio_to_kernel: None,
            ratio_to_direct: None,
            drops: g.sent.saturating_sub(s.received),
            sent: g.sent,
            received: s.received,
            reordered: s.reordered,
            router_drops,
            cpu_secs_per_mpkt: (s.received > 0).then(|| cpu / (s.received as f64 / 1e6)),
            worker_nice: None,
            transit_filter: None,
        }
    }

    pub fn tcp(sc: &Scenario, streams: usize, workers: usize, bps: f64) -> Run {
        Run {
            scenario: sc.name.to_string(),
            packet_size: serde_json::json!(format!("tcp-{streams}")),
            workers,
            pps: 0.0,
            gbps: bps / 1e9,
            ratio_to_kernel: None,
            ratio_to_direct: None,
            drops: 0,
            sent: 0,
            received: 0,
            reordered: 0,
            router_drops: 0,
            cpu_secs_per_mpkt: None,
            worker_nice: None,
            transit_filter: None,
        }
    }

    /// This run's rate over `base`'s: packets per second for UDP, Gbit/s for TCP.
    fn ratio_to(&self, base: &Run) -> Option<f64> {
        let (mine, theirs) = if self.pps > 0.0 { (self.pps, base.pps) } else { (self.gbps, base.gbps) };
        (theirs > 0.0).then(|| mine / theirs)
    }

    fn size_label(&self) -> String {
        match &self.packet_size {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }
}

/// Computes the ratios and writes the reports into `out`, and into `docs` the same table
/// under a header that says when, where and how it was measured.
pub fn finish(runs: &mut [Run], out: &Path, docs: Option<&Path>) -> anyhow::Result<()> {
    // Ratios against the kernel run of the same size (pps for UDP, Gbit/s for TCP) of the
    // scenario's baseline: IPv6 against the kernel's IPv6, masquerade against the kernel's.
    let kernel: Vec<Run> = runs.iter().filter(|r| baseline(&r.scenario) == r.scenario).cloned().collect();
    for r in runs.iter_mut() {
        r.ratio_to_kernel = kernel
            .iter()
            .find(|k| k.scenario == baseline(&r.scenario) && k.packet_size == r.packet_size)
            .and_then(|k| r.ratio_to(k));
    }
    // IPIP against the router's direct path, same size and worker count.
    let direct: Vec<Run> = runs.iter().filter(|r| r.scenario == "afpacket").cloned().collect();
    // And the router's IPv6 against its IPv4 on the same path. (Masquerade's path has one
    // router where the direct path has two: no such ratio for it.)
    let tunnelled = |s: &str| s.starts_with("afpacket-ipip") || s.starts_with("afpacket-vxlan") || s == "afpacket6";
    for r in runs.iter_mut().filter(|r| tunnelled(&r.scenario)) {
        r.ratio_to_direct = direct
            .iter()
            .find(|d| d.packet_size == r.packet_size && d.workers == r.workers)
            .and_then(|d| r.ratio_to(d));
    }
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("forward.json"), serde_json::to_string_pretty(&runs)?)?;
    let md = markdown(runs);
    std::fs::write(out.join("forward.md"), &md)?;
    plot(runs, &out.join("forward.svg"))?;
    nodeapi::out!("{md}");
    nodeapi::outln!("\nwritten: {0}/forward.md, {0}/forward.json, {0}/forward.svg", out.display());
    if let Some(docs) = docs {
        std::fs::create_dir_all(docs)?;
        let command = crate::command_line();
        let title = "Forwarding: the router against Linux kernel forwarding";
        let text = crate::provenance::header(title, &command)
            + &md
            + "\n![ratios to kernel forwarding](forward.svg)\n\nHow the scenarios are built and how to read the figures: [../performance.md](../performance.md).\n";
        std::fs::write(docs.join("forward.md"), text)?;
        std::fs::copy(out.join("forward.svg"), docs.join("forward.svg"))?;
        nodeapi::outln!("written: {0}/forward.md, {0}/forward.svg", docs.display());
    }
    Ok(())
}

fn markdown(runs: &[Run]) -> String {
    let mut s = String::from(
        "| scenario | size | workers | pps | Gbit/s | × kernel | × direct | lost | router drops | CPU s / Mpkt |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.3} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.size_label(),
            r.workers,
            if r.pps > 0.0 { format!("{:.0}", r.pps) } else { "–".into() },
            r.gbps,
            r.ratio_to_kernel.map_or("–".into(), |x| format!("{x:.2}")),
            r.ratio_to_direct.map_or("–".into(), |x| format!("{x:.2}")),
            r.drops,
            r.router_drops,
            r.cpu_secs_per_mpkt.map_or("–".into(), |x| format!("{x:.2}")),
        ));
    }
    s.push_str(
        "\n× direct: IPIP and VXLAN runs against `afpacket` with the same size and workers; `afpacket6` (IPv6) \
         against `afpacket` (IPv4) alike. IPv6 runs carry the payload of the IPv4 frame of their size, in a frame \
         20 bytes longer (84 bytes for 64), and `× kernel` compares them with `kernel6`. `afpacket-masq` is \
         compared with the kernel's masquerade on its path, `kernel-masq`: one forwarding node, where the direct \
         path has two.\n\n",
    );
    let mut seen = Vec::new();
    for r in runs {
        if !seen.contains(&r.scenario) {
            s.push_str(&format!("- **{}**: {}\n", r.scenario, scenario_note(&r.scenario)));
            seen.push(r.scenario.clone());
        }
    }
    if let Some(nice) = runs.iter().find_map(|r| r.worker_nice) {
        let filter = match runs.iter().find_map(|r| r.transit_filter) {
            Some(true) => "; transit filter on",
            Some(false) => "; transit filter off",
            None => "",
        };
        s.push_str(&format!("\nRouters' workers at nice {nice}{filter}.\n"));
    }
    s
}

/// Grouped bars: throughput relative to kernel forwarding, per size, per scenario.
fn plot(runs: &[Run], path: &Path) -> anyhow::Result<()> {
    let bars: Vec<(String, f64)> = runs
        .iter()
        .filter_map(|r| r.ratio_to_kernel.map(|x| (format!("{} {} w{}", r.scenario, r.size_label(), r.workers), x)))
        .collect();
    let root = SVGBackend::new(path, (1000, 40 + 22 * bars.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = bars.iter().map(|b| b.1).fold(1.2, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("router-perf forward: throughput ÷ kernel forwarding (same run)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(260)
        .build_cartesian_2d(0.0..max, 0..bars.len().max(1))?;
    chart
        .configure_mesh()
        .y_labels(bars.len().max(1))
        .y_label_formatter(&|i| bars.get(*i).map(|b| b.0.clone()).unwrap_or_default())
        .x_desc("× kernel")
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (name, x))| {
        let color = if name.starts_with("kernel") { RGBColor(150, 150, 150) } else { RGBColor(40, 110, 190) };
        Rectangle::new([(0.0, i), (*x, i + 1)], color.filled())
    }))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::SCENARIOS;

    fn udp(sc: &Scenario, size: Size, received: u64) -> Run {
        let g = GenReport { sent: 1000, bytes: 64_000, secs: 1.0 };
        let s =
            SinkReport { received, bytes: received * 64, flows: 16, lost: 1000 - received, reordered: 0, secs: 1.0 };
        Run::udp(sc, size, 1, &g, &s, 0.5, 0)
    }

    #[test]
    fn ratios_are_against_kernel_of_the_same_size() {
        let (k, r) = (&SCENARIOS[0], &SCENARIOS[1]);
        let mut runs = vec![udp(k, Size::Fixed(64), 800), udp(r, Size::Fixed(64), 400), udp(r, Size::Fixed(512), 400)];
        let dir = std::env::temp_dir().join(format!("perf-report-{}", std::process::id()));
        finish(&mut runs, &dir, None).expect("report");
        assert_eq!(runs[0].ratio_to_kernel, Some(1.0));
        assert_eq!(runs[1].ratio_to_kernel, Some(0.5));
        assert_eq!(runs[2].ratio_to_kernel, None, "no kernel run of that size");
        assert_eq!(runs[1].drops, 600);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("forward.json")).expect("json")).expect("valid");
        for key in ["scenario", "packet_size", "workers", "pps", "gbps", "ratio_to_kernel", "drops"] {
            assert!(json[0].get(key).is_some(), "{key}");
        }
        assert!(std::fs::read_to_string(dir.join("forward.svg")).expect("svg").contains("<svg"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn ipv6_runs_are_against_the_kernels_ipv6_and_the_routers_ipv4() {
        let by = |n: &str| SCENARIOS.iter().find(|s| s.name == n).expect(n);
        let (k, d, k6, d6) = (by("kernel"), by("afpacket"), by("kernel6"), by("afpacket6"));
        let mut runs = vec![
            udp(k, Size::Fixed(64), 800),
            udp(d, Size::Fixed(64), 500),
            udp(k6, Size::Fixed(64), 400),
            udp(d6, Size::Fixed(64), 450),
        ];
        let dir = std::env::temp_dir().join(format!("perf-report6-{}", std::process::id()));
        finish(&mut runs, &dir, None).expect("report");
        assert_eq!(runs[2].ratio_to_kernel, Some(1.0), "kernel6 is its own baseline");
        assert_eq!(runs[3].ratio_to_kernel, Some(450.0 / 400.0), "against the kernel's IPv6");
        assert_eq!(runs[3].ratio_to_direct, Some(0.9), "against the router's IPv4");
        assert_eq!(runs[1].ratio_to_kernel, Some(500.0 / 800.0), "IPv4 still against the kernel's IPv4");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn masquerade_runs_are_against_the_kernels_masquerade_on_their_path() {
        let by = |n: &str| SCENARIOS.iter().find(|s| s.name == n).expect(n);
        let (k, d, km, dm) = (by("kernel"), by("afpacket"), by("kernel-masq"), by("afpacket-masq"));
        let mut runs = vec![
            udp(k, Size::Fixed(64), 800),
            udp(d, Size::Fixed(64), 500),
            udp(km, Size::Fixed(64), 600),
            udp(dm, Size::Fixed(64), 450),
        ];
        let dir = std::env::temp_dir().join(format!("perf-report-masq-{}", std::process::id()));
        finish(&mut runs, &dir, None).expect("report");
        let _ = std::fs::remove_dir_all(dir);
        assert_eq!(runs[2].ratio_to_kernel, Some(1.0), "kernel-masq is its own baseline");
        assert_eq!(runs[3].ratio_to_kernel, Some(450.0 / 600.0), "against the kernel's masquerade");
        assert_eq!(runs[3].ratio_to_direct, None, "its path has one forwarding node, the direct path two");
        assert_eq!(runs[1].ratio_to_kernel, Some(500.0 / 800.0));
    }

    #[test]
    fn ipip_runs_are_also_against_the_direct_path_of_the_same_size_and_workers() {
        let by = |n: &str| SCENARIOS.iter().find(|s| s.name == n).expect(n);
        let (k, d, x, ab) = (by("kernel"), by("afpacket"), by("afpacket-ipip"), by("afpacket-ipip-ab"));
        let mut runs = vec![
            udp(k, Size::Fixed(64), 800),
            udp(d, Size::Fixed(64), 500),
            udp(x, Size::Fixed(64), 400),
            udp(ab, Size::Fixed(64), 450),
            udp(x, Size::Fixed(512), 400),
        ];
        runs[2].workers = 2;
        runs.push(udp(d, Size::Fixed(64), 800));
        runs[5].workers = 2;
        let dir = std::env::temp_dir().join(format!("perf-report-direct-{}", std::process::id()));
        finish(&mut runs, &dir, None).expect("report");
        let _ = std::fs::remove_dir_all(dir);
        assert_eq!(runs[2].ratio_to_direct, Some(0.5), "against the 2-worker direct run");
        assert_eq!(runs[3].ratio_to_direct, Some(0.9));
        assert_eq!(runs[4].ratio_to_direct, None, "no direct run of that size");
        assert_eq!((runs[0].ratio_to_direct, runs[1].ratio_to_direct), (None, None));
        let md = markdown(&runs);
        assert!(md.contains("| afpacket-ipip-ab | 64 | 1 | 450 | 0.000 | 0.56 | 0.90 |"), "{md}");
        assert!(md.contains("IPIP on the direct path"), "{md}");
    }

    #[test]
    fn vxlan_runs_are_against_the_direct_path_too() {
        let by = |n: &str| SCENARIOS.iter().find(|s| s.name == n).expect(n);
        let mut runs = vec![
            udp(by("afpacket"), Size::Fixed(64), 500),
            udp(by("afpacket-vxlan"), Size::Fixed(64), 450),
            udp(by("afpacket-vxlan-ab"), Size::Fixed(64), 400),
        ];
        let dir = std::env::temp_dir().join(format!("perf-report-vxlan-{}", std::process::id()));
        finish(&mut runs, &dir, None).expect("report");
        let _ = std::fs::remove_dir_all(dir);
        assert_eq!((runs[1].ratio_to_direct, runs[2].ratio_to_direct), (Some(0.9), Some(0.8)));
        assert!(markdown(&runs).contains("VXLAN on the direct path"));
    }

    #[test]
    fn router_settings_are_recorded_with_the_runs() {
        let (k, r) = (&SCENARIOS[0], &SCENARIOS[1]);
        let mut runs = vec![udp(k, Size::Fixed(64), 800), udp(r, Size::Fixed(64), 400)];
        runs[1].worker_nice = Some(0);
        runs[1].transit_filter = Some(false);
        let md = markdown(&runs);
        assert!(md.contains("Routers' workers at nice 0; transit filter off."), "{md}");
        let json = serde_json::to_value(&runs).expect("json");
        assert!(json[0].get("worker_nice").is_none(), "the kernel run has no router");
        assert_eq!((json[1]["worker_nice"].as_i64(), json[1]["transit_filter"].as_bool()), (Some(0), Some(false)));
    }

    #[test]
    fn sizes_parse_and_refuse_nonsense() {
        assert_eq!("64".parse::<Size>(), Ok(Size::Fixed(64)));
        assert_eq!("IMIX".parse::<Size>(), Ok(Size::Imix));
        assert!("9000".parse::<Size>().is_err());
        assert!("20".parse::<Size>().is_err());
    }
}
