import Foundation
import RabbitMQTestSupport
import Synchronization

/// A running `rmq` whose standard output is a pipe the test reads (as `head` or `jq` would)
/// and whose standard input is, optionally, a pipe the test writes: for what only a live
/// process shows (a reader that goes away, a signal mid-run). Standard error goes to a file.
///
/// Blocking reads and writes run on Dispatch's threads, never on Swift's cooperative pool.
/// Both pipes are close-on-exec, so that no other process a concurrent test starts holds
/// an end of them (which would keep the reader from ever seeing the end of the output).
final class RunningRMQ: Sendable {
    private let process: Process
    private let output: Int32
    private let input: Int32?
    private let errorURL: URL
    private let exit: AsyncStream<Int32>
    /// Descriptors closed so far (each closed once).
    private let closed = Mutex<Set<Int32>>([])

    init(_ arguments: [String], withInput: Bool = false, environment: [String: String] = [:]) throws {
        func makePipe() throws -> (read: Int32, write: Int32) {
            var ends: [Int32] = [0, 0]
            guard pipe(&ends) == 0 else { throw TestSupportError("pipe: \(errno)") }
            // (pipe2 is not visible from Swift; the window before this is a few instructions.)
            for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
            return (ends[0], ends[1])
        }
        let process = Process()
        process.executableURL = try RMQTool.executable
        process.arguments = arguments
        var variables = ProcessInfo.processInfo.environment
        variables["RABBITMQ_URL"] = try TestBroker.url
        for (key, value) in environment { variables[key] = value }
        process.environment = variables

        let stdout = try makePipe()
        let stdin = withInput ? try makePipe() : nil
        errorURL = FileManager.default.temporaryDirectory.appendingPathComponent("rmq-running-\(UUID().uuidString).err")
        _ = FileManager.default.createFile(atPath: errorURL.path, contents: nil)
        let errorHandle = try FileHandle(forWritingTo: errorURL)
        defer { try? errorHandle.close() }
        process.standardOutput = FileHandle(fileDescriptor: stdout.write, closeOnDealloc: false)
        process.standardError = errorHandle
        if let stdin {
            process.standardInput = FileHandle(fileDescriptor: stdin.read, closeOnDealloc: false)
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        let (exit, exited) = AsyncStream.makeStream(of: Int32.self, bufferingPolicy: .bufferingNewest(1))
        process.terminationHandler = {
            exited.yield($0.terminationStatus)
            exited.finish()
        }
        try process.run()
        // The child has its copies; ours would keep the pipes open for ever.
        Glibc.close(stdout.write)
        if let stdin { Glibc.close(stdin.read) }
        self.process = process
        self.output = stdout.read
        self.input = stdin?.write
        self.exit = exit
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        closeOutput()
        closeInput()
        try? FileManager.default.removeItem(at: errorURL)
    }

    /// Runs a blocking call on a Dispatch thread.
    private func blocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: body()) }
        }
    }

    /// Reads one line byte by byte, so that the pipe keeps everything after it (a reader
    /// that takes exactly one line); nil at the end of the output.
    func readOneLine() async throws -> String? {
        let descriptor = output
        // Bounded: the blocked read is left behind (deinit kills rmq, which ends it).
        return try await withTimeout(RMQTool.runLimit, "a line from rmq") { await self.blocking {
            var line: [UInt8] = []
            var byte: UInt8 = 0
            while Glibc.read(descriptor, &byte, 1) == 1 {
                if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
                line.append(byte)
            }
            return nil
        } }
    }

    /// Reads everything up to the end of the output, in blocks; the lines.
    func readToEnd() async -> [String] {
        let descriptor = output
        let bytes = await blocking {
            var all: [UInt8] = []
            var block = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = block.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
                if count <= 0 { return all }
                all += block[..<count]
            }
        }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    /// Bytes written into the output pipe and not read yet.
    var unreadBytes: Int {
        var count: Int32 = 0
        return ioctl(output, UInt(FIONREAD), &count) == 0 ? Int(count) : 0
    }

    /// Closes our end of the output: the reader goes away.
    func closeOutput() { close(output) }

    /// Writes `text` to rmq's standard input.
    func write(_ text: String) async throws {
        guard let input else { throw TestSupportError("rmq was started without an input pipe") }
        let bytes = Array(text.utf8)
        let written = await blocking { bytes.withUnsafeBytes { Glibc.write(input, $0.baseAddress, $0.count) } }
        guard written == bytes.count else { throw TestSupportError("short write to rmq: \(written)") }
    }

    /// Closes rmq's standard input: the end of its input.
    func closeInput() {
        if let input { close(input) }
    }

    private func close(_ descriptor: Int32) {
        let first = closed.withLock { $0.insert(descriptor).inserted }
        if first { Glibc.close(descriptor) }
    }

    /// Sends `signal`.
    func send(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// The exit status (for a process a signal killed: the signal's number), or nil when it
    /// has not exited within `limit` (it is then killed): a hang is a failure to report, not
    /// a test that never ends.
    func status(within limit: Duration = RMQTool.runLimit) async -> Int32? {
        let status = await RMQTool.firstExit(exit, within: limit)
        if status == nil { kill(process.processIdentifier, SIGKILL) }
        return status
    }

    /// Whether it exited because of a signal (``status(within:)`` is then the signal's number).
    var killedBySignal: Bool { process.terminationReason == .uncaughtSignal }

    var errorOutput: String { (try? String(contentsOf: errorURL, encoding: .utf8)) ?? "" }
}
