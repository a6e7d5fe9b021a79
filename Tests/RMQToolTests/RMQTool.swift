import Foundation
import RabbitMQTestSupport

/// The built `rmq` binary, run as a user would, with its exit status and both outputs.
enum RMQTool {
    struct Result: Sendable, CustomStringConvertible {
        var status: Int32
        var output: String
        var errorOutput: String

        /// The JSON objects `rmq consume` wrote, one per line.
        func jsonLines() throws -> [[String: Any]] {
            try output.split(separator: "\n").map { line in
                guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                    throw TestSupportError("not a JSON object: \(line)")
                }
                return object
            }
        }

        var description: String { "exit \(status)\nstdout: \(output)\nstderr: \(errorOutput)" }
    }

    /// `rmq` next to the test bundle: `swift build --build-tests` puts every product in one
    /// directory, and the test runner is the process running this code. RMQ_TOOL names
    /// another build instead (an older one, to see a new test fail on it).
    static var executable: URL {
        get throws {
            if let path = ProcessInfo.processInfo.environment["RMQ_TOOL"] { return URL(fileURLWithPath: path) }
            let directory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            let url = directory.appendingPathComponent("rmq")
            guard FileManager.default.isExecutableFile(atPath: url.path) else {
                throw TestSupportError("no rmq binary at \(url.path): build with `swift build --build-tests` first")
            }
            return url
        }
    }

    /// The exit status `exit` yields, or nil when `limit` passes first (or the task is
    /// cancelled): the caller then kills the process.
    static func firstExit(_ exit: AsyncStream<Int32>, within limit: Duration) async -> Int32? {
        await withTaskGroup(of: Int32?.self) { group in
            group.addTask {
                for await status in exit { return status }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: limit)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// How long any one run may take before the test gives up on it (and kills it): a hang
    /// is a failure to report, not a test that never ends. Generous: CI is a loaded 2-core box.
    static let runLimit: Duration = .seconds(150)

    /// Runs `rmq arguments...` with the test broker in RABBITMQ_URL (unless `environment` says
    /// otherwise), without blocking a cooperative thread, and returns how it ended.
    static func run(
        _ arguments: [String], input: String? = nil, environment: [String: String] = [:]
    ) async throws -> Result {
        try await run(arguments, inputBytes: Array((input ?? "").utf8), environment: environment)
    }

    /// Runs `script` with bash, with RMQ set to the `rmq` binary (and RABBITMQ_URL): for
    /// pipelines such as `"$RMQ" consume --queue q | head -1`.
    static func runShell(_ script: String, environment: [String: String] = [:]) async throws -> Result {
        var environment = environment
        environment["RMQ"] = try executable.path
        return try await run(["-c", script], inputBytes: [], environment: environment, executable: URL(fileURLWithPath: "/bin/bash"))
    }

    /// Runs `rmq arguments...` with `inputBytes` (need not be UTF-8) on its standard input.
    /// Throws when it has not exited within ``runLimit`` (it is then killed).
    static func run(
        _ arguments: [String], inputBytes: [UInt8], environment: [String: String] = [:], executable: URL? = nil
    ) async throws -> Result {
        let process = Process()
        process.executableURL = try executable ?? Self.executable
        process.arguments = arguments
        var variables = ProcessInfo.processInfo.environment
        variables["RABBITMQ_URL"] = try TestBroker.url
        for (key, value) in environment { variables[key] = value }
        process.environment = variables

        let directory = FileManager.default.temporaryDirectory
        let token = UUID().uuidString
        let inputURL = directory.appendingPathComponent("rmq-tool-\(token).in")
        let outputURL = directory.appendingPathComponent("rmq-tool-\(token).out")
        let errorURL = directory.appendingPathComponent("rmq-tool-\(token).err")
        defer { for url in [inputURL, outputURL, errorURL] { try? FileManager.default.removeItem(at: url) } }
        try Data(inputBytes).write(to: inputURL)
        for url in [outputURL, errorURL] { _ = FileManager.default.createFile(atPath: url.path, contents: nil) }
        let inputHandle = try FileHandle(forReadingFrom: inputURL)
        let outputHandle = try FileHandle(forWritingTo: outputURL)
        let errorHandle = try FileHandle(forWritingTo: errorURL)
        defer { for handle in [inputHandle, outputHandle, errorHandle] { try? handle.close() } }
        process.standardInput = inputHandle
        process.standardOutput = outputHandle
        process.standardError = errorHandle

        let (exit, exited) = AsyncStream.makeStream(of: Int32.self)
        process.terminationHandler = {
            exited.yield($0.terminationStatus)
            exited.finish()
        }
        try process.run()
        guard let status = await firstExit(exit, within: runLimit) else {
            // Out of time, or the test gave up (cancelled): a hung rmq must not outlive it.
            kill(process.processIdentifier, SIGKILL)
            throw TestSupportError("rmq \(arguments.joined(separator: " ")) did not exit within \(runLimit)")
        }
        return Result(
            status: status, output: try String(contentsOf: outputURL, encoding: .utf8),
            errorOutput: try String(contentsOf: errorURL, encoding: .utf8))
    }
}
