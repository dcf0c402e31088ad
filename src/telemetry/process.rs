//! The standard Prometheus process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, …, as every Prometheus client library exports them),
//! read from `/proc/self` at each scrape. Rendered as text and appended to the exposition,
//! so CPU seconds keep their fractions. Elsewhere than Linux nothing is rendered.

use std::fmt::Write as _;

/// Appends the process metrics of this process to `out` in the Prometheus text format.
pub fn render(out: &mut String) {
    if let Some(p) = read() {
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes,
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_bytes,
        );
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch in seconds.",
            p.start_time_seconds,
        );
        metric(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            p.threads,
        );
        if let Some(open) = p.open_fds {
            metric(
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                open,
            );
        }
        if let Some(max) = p.max_fds {
            metric(
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                max,
            );
        }
    }
}

struct Process {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    start_time_seconds: f64,
    threads: f64,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

#[cfg(target_os = "linux")]
fn read() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields count from the last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // After the name, field k of proc(5) is fields[k - 3].
    let field = |k: usize| fields.get(k - 3).and_then(|v| v.parse::<f64>().ok());
    // Times in /proc are in USER_HZ, fixed at 100 by the kernel's user-space ABI.
    let ticks = 100.0;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<f64>().ok())
        });
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |key: &str| -> Option<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some(Process {
        cpu_seconds: (field(14)? + field(15)?) / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: kib("VmRSS:")? * 1024.0,
        start_time_seconds: boot + field(22)? / ticks,
        threads: field(20)?,
        open_fds,
        max_fds,
    })
}

#[cfg(not(target_os = "linux"))]
fn read() -> Option<Process> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn the_process_metrics_describe_this_process() {
        let mut out = String::new();
        super::render(&mut out);
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in:\n{out}"))
                .parse()
                .unwrap()
        };
        assert!(out.contains("# TYPE process_cpu_seconds_total counter"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        // A running test binary holds a few MiB at least, and far less than a TiB.
        let rss = value("process_resident_memory_bytes");
        assert!(rss > 1e6 && rss < 1e12, "{rss}");
        assert!(value("process_virtual_memory_bytes") >= rss);
        assert!(value("process_threads") >= 1.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }
}
