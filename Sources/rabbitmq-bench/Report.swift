import Glibc

/// The results of a whole benchmark run: a Markdown table for people, JSON for tools.
struct Report: Sendable {
    var machine: MachineInfo
    var rounds: Int
    var scenarios: [ScenarioReport]

    // MARK: Table

    func table() -> String {
        var lines: [String] = []
        lines.append(
            "Machine: \(machine.processors) cores, \(machine.cpuModel); load average \(machine.loadAverage) at the start. "
                + "Medians of \(rounds) rounds (C and Swift alternating), Swift/C ratios as median [min-max] "
                + "of the per-round ratios. CPU = user + system time of the client process per message. Caller: where the "
                + "Swift loop runs (task: a nonisolated task; main: the main actor; actor: an actor of the "
                + "application's; connection: a task that prefers its connection's executor, on the connection's I/O thread; any: a broker-free loop that never awaits). C runs once per round, on a thread "
                + "of its own, and each caller's ratios pair with it.")
        if machine.debugBuild { lines.append("WARNING: DEBUG BUILD - these numbers mean nothing.") }
        lines.append("")
        lines.append(
            "| scenario | caller | msgs | C msg/s | Swift msg/s | Swift/C msg/s | C CPU µs/msg | Swift CPU µs/msg | Swift/C CPU "
                + "| C p50 / p99 µs | Swift p50 / p99 µs | Swift/C p50 | targets |")
        lines.append("|---|---|---:|---:|---:|---|---:|---:|---|---:|---:|---|---|")
        for report in scenarios {
            // A Swift-only scenario leaves the C and ratio cells empty: nothing to compare with.
            let hasC = report.scenario.kind.hasCBaseline
            var cells: [String] = [report.scenario.label, report.caller?.rawValue ?? "any", "\(report.scenario.messages)"]
            cells.append(hasC ? cell(report.summary(.c, .throughput)?.median, digits: 0) : "")
            cells.append(cell(report.summary(.swift, .throughput)?.median, digits: 0))
            cells.append(hasC ? ratioCell(report.ratio(.throughput)) : "")
            cells.append(hasC ? cell((report.summary(.c, .cpu)?.median).map { $0 / 1000 }, digits: 2) : "")
            cells.append(cell((report.summary(.swift, .cpu)?.median).map { $0 / 1000 }, digits: 2))
            cells.append(hasC ? ratioCell(report.ratio(.cpu)) : "")
            if report.scenario.kind.hasLatency {
                cells.append(hasC ? latencyCell(report, .c) : "")
                cells.append(latencyCell(report, .swift))
                cells.append(hasC ? ratioCell(report.ratio(.p50)) : "")
            } else {
                cells.append(contentsOf: ["", "", ""])
            }
            cells.append(report.problems.isEmpty ? report.targetVerdict : "CHECK FAILED: " + report.problems.joined(separator: "; "))
            lines.append("| " + cells.joined(separator: " | ") + " |")
        }
        return lines.joined(separator: "\n")
    }

    private func cell(_ value: Double?, digits: Int) -> String {
        value.map { format($0, digits: digits) } ?? "-"
    }

    private func ratioCell(_ summary: ScenarioReport.Summary?) -> String {
        guard let summary else { return "-" }
        return "\(format(summary.median, digits: 2)) [\(format(summary.min, digits: 2))-\(format(summary.max, digits: 2))]"
    }

    private func latencyCell(_ report: ScenarioReport, _ implementation: Implementation) -> String {
        let p50 = (report.summary(implementation, .p50)?.median).map { $0 / 1000 }
        let p99 = (report.summary(implementation, .p99)?.median).map { $0 / 1000 }
        return "\(cell(p50, digits: 1)) / \(cell(p99, digits: 1))"
    }

    // MARK: JSON

    func json() -> String {
        var out = "{\n"
        out += "  \"machine\": {\"processors\": \(machine.processors), \"cpu_model\": \(quoted(machine.cpuModel)), "
        out += "\"load_average_at_start\": \(quoted(machine.loadAverage)), \"debug_build\": \(machine.debugBuild)},\n"
        out += "  \"rounds\": \(rounds),\n"
        out += "  \"scenarios\": [\n"
        out += scenarios.map(scenarioJSON).joined(separator: ",\n")
        out += "\n  ]\n}\n"
        return out
    }

    private func scenarioJSON(_ report: ScenarioReport) -> String {
        var fields: [String] = [
            "\"name\": \(quoted(report.scenario.kind.rawValue))",
            "\"size\": \(report.scenario.size)",
            "\"caller\": \(report.caller.map { quoted($0.rawValue) } ?? "null")",
            "\"messages\": \(report.scenario.messages)",
            // false: "c" has no runs and "swift_over_c" no ratios, by design.
            "\"has_c_baseline\": \(report.scenario.kind.hasCBaseline)",
        ]
        for implementation in Implementation.allCases {
            let runs = implementation == .c ? report.c : report.swift
            let runObjects = runs.map { run in
                var parts = [
                    "\"messages\": \(run.messages)", "\"wall_ns\": \(run.wallNanoseconds)",
                    "\"cpu_ns\": \(run.cpuNanoseconds)",
                    "\"user_ns\": \(run.userNanoseconds)",
                    "\"system_ns\": \(run.systemNanoseconds)",
                    "\"messages_per_second\": \(number(run.messagesPerSecond))",
                    "\"cpu_ns_per_message\": \(number(run.cpuNanosecondsPerMessage))",
                    "\"check\": \(run.check)",
                ]
                if let p50 = run.p50 { parts.append("\"p50_ns\": \(p50)") }
                if let p99 = run.p99 { parts.append("\"p99_ns\": \(p99)") }
                return "{" + parts.joined(separator: ", ") + "}"
            }
            var medians: [String] = []
            for metric in ScenarioReport.Metric.allCases {
                if let summary = report.summary(implementation, metric) { medians.append("\"\(metric.rawValue)\": \(summaryJSON(summary))") }
            }
            fields.append(
                "\"\(implementation.rawValue.lowercased())\": {\"runs\": [\(runObjects.joined(separator: ", "))], "
                    + "\"summary\": {\(medians.joined(separator: ", "))}}")
        }
        var ratios: [String] = []
        for metric in ScenarioReport.Metric.allCases {
            if let summary = report.ratio(metric) { ratios.append("\"\(metric.rawValue)\": \(summaryJSON(summary))") }
        }
        fields.append("\"swift_over_c\": {\(ratios.joined(separator: ", "))}")
        fields.append("\"targets\": \(quoted(report.targetVerdict))")
        fields.append("\"problems\": [\(report.problems.map(quoted).joined(separator: ", "))]")
        return "    {" + fields.joined(separator: ", ") + "}"
    }

    private func summaryJSON(_ summary: ScenarioReport.Summary) -> String {
        "{\"median\": \(number(summary.median)), \"min\": \(number(summary.min)), \"max\": \(number(summary.max))}"
    }

    private func number(_ value: Double) -> String {
        value.isFinite ? format(value, digits: 4) : "null"
    }

    private func quoted(_ string: String) -> String { string.jsonQuoted }
}

/// Formats `value` with `digits` decimals.
func format(_ value: Double, digits: Int) -> String {
    var buffer = [CChar](repeating: 0, count: 64)
    _ = buffer.withUnsafeMutableBufferPointer { pointer in
        withVaList([Int32(digits), value]) { vsnprintf(pointer.baseAddress, pointer.count, "%.*f", $0) }
    }
    return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}
