import Glibc

/// What the kernel says about a process at one instant (procfs and getrusage): the figures
/// the `idle` benchmark compares before and after opening connections, and over its window.
struct ProcessSample: Sendable {
    /// When it was taken.
    var instant: ContinuousClock.Instant
    var threads: Int
    /// Resident set (VmRSS) and address space (VmSize), in KiB.
    var residentKiB: Int
    var virtualKiB: Int
    /// Context switches per thread id (`/proc/PID/task/*/status`), voluntary plus involuntary:
    /// a sleeping thread that wakes and sleeps again counts one voluntary switch, so their
    /// growth is the thread's wake-ups. Kept per thread: one that ends takes its count along
    /// (the runtime's pool threads come and go), which a process-wide sum would see as a drop.
    var contextSwitches: [Int: Int]
    /// The ids of the threads whose name starts with `ioThreadPrefix` (the I/O threads).
    var ioThreads: Set<Int>
    /// User plus system CPU time, in nanoseconds.
    var cpuNanoseconds: Int

    static let ioThreadPrefix = "rmq-io-"

    /// Samples this process (getrusage) or another one (`/proc/PID/stat`; nil when it is gone).
    static func take(pid: Int32? = nil) -> ProcessSample? {
        let instant = ContinuousClock.now
        let directory = pid.map { "/proc/\($0)" } ?? "/proc/self"
        guard let status = MachineInfo.readText("\(directory)/status") else { return nil }
        let fields = statusFields(status)
        var switches: [Int: Int] = [:]
        var ioThreads: Set<Int> = []
        for task in taskIdentifiers(directory) {
            guard let text = MachineInfo.readText("\(directory)/task/\(task)/status") else { continue }  // ended meanwhile
            let taskFields = statusFields(text)
            let count = (taskFields["voluntary_ctxt_switches"] ?? 0) + (taskFields["nonvoluntary_ctxt_switches"] ?? 0)
            guard let id = Int(task) else { continue }
            switches[id] = count
            let name = MachineInfo.readText("\(directory)/task/\(task)/comm") ?? ""
            if name.hasPrefix(ioThreadPrefix) { ioThreads.insert(id) }
        }
        let cpu: Int
        if pid == nil {
            cpu = ownCPUNanoseconds()
        } else {
            guard let stat = MachineInfo.readText("\(directory)/stat") else { return nil }
            cpu = statCPUNanoseconds(stat) ?? 0
        }
        return ProcessSample(
            instant: instant, threads: fields["Threads"] ?? 0, residentKiB: fields["VmRSS"] ?? 0,
            virtualKiB: fields["VmSize"] ?? 0, contextSwitches: switches, ioThreads: ioThreads,
            cpuNanoseconds: cpu)
    }

    /// Context switches from `start` to this sample, of all threads and of the I/O threads:
    /// a thread's growth, or its whole count when it started in between.
    func contextSwitches(since start: ProcessSample) -> (all: Int, io: Int) {
        var all = 0
        var io = 0
        for (id, count) in contextSwitches {
            let grown = count - (start.contextSwitches[id] ?? 0)
            all += grown
            if ioThreads.contains(id) { io += grown }
        }
        return (all, io)
    }

    /// The numeric fields of a procfs status file ("VmRSS:\t  1234 kB" gives 1234).
    static func statusFields(_ text: String) -> [String: Int] {
        var fields: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            // "\t  1234 kB": the first word after the blanks.
            if let word = parts[1].split(whereSeparator: { $0 == " " || $0 == "\t" }).first, let number = Int(word) {
                fields[String(parts[0])] = number
            }
        }
        return fields
    }

    /// utime + stime of `/proc/PID/stat` (fields 14 and 15, in clock ticks), in nanoseconds.
    static func statCPUNanoseconds(_ text: String) -> Int? {
        // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
        guard let close = text.lastIndex(of: ")") else { return nil }
        let rest = text[text.index(after: close)...].split(separator: " ")
        // rest[0] is field 3 (the state): utime is field 14, stime field 15.
        guard rest.count > 12, let user = Int(rest[11]), let system = Int(rest[12]) else { return nil }
        let ticks = Int(sysconf(Int32(_SC_CLK_TCK)))
        return (user + system) * (1_000_000_000 / max(ticks, 1))
    }

    /// This process's user plus system time so far: read apart from a sample, so that the
    /// cost of reading a thousand procfs files stays out of a measured window.
    static func ownCPUNanoseconds() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return nanoseconds(usage.ru_utime) + nanoseconds(usage.ru_stime)
    }

    private static func nanoseconds(_ time: timeval) -> Int {
        Int(time.tv_sec) * 1_000_000_000 + Int(time.tv_usec) * 1000
    }

    /// The thread ids under `/proc/PID/task`.
    private static func taskIdentifiers(_ directory: String) -> [String] {
        guard let handle = opendir("\(directory)/task") else { return [] }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { bytes in
                String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            }
            if let first = name.first, first.isNumber { names.append(name) }
        }
        return names
    }
}
