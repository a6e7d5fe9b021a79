import Glibc

/// Where the numbers come from.
struct MachineInfo: Sendable {
    var cpuModel: String
    var processors: Int
    var loadAverage: String
    var debugBuild: Bool

    static func current() -> MachineInfo {
        let cpuinfo = readText("/proc/cpuinfo") ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .flatMap { $0.split(separator: ":", maxSplits: 1).last }
            .map { $0.trimmedOfBlanks() } ?? "unknown"
        let load = readText("/proc/loadavg")?.split(separator: " ").prefix(3).joined(separator: " ") ?? "unknown"
        #if DEBUG
        let debug = true
        #else
        let debug = false
        #endif
        return MachineInfo(
            cpuModel: model, processors: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), loadAverage: load, debugBuild: debug)
    }

    /// A small text file (procfs), or nil.
    static func readText(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        // procfs files here are a few KiB; 64 reads bound the loop.
        for _ in 0..<64 {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
