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
    /// directory, and the test runner is the process running this code.
    static var executable: URL {
        get throws {
            let directory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            let url = directory.appendingPathComponent("rmq")
            guard FileManager.default.isExecutableFile(atPath: url.path) else {
                throw TestSupportError("no rmq binary at \(url.path): build with `swift build --build-tests` first")
            }
            return url
        }
    }

    /// Runs `rmq arguments...` with the test broker in RABBITMQ_URL (unless `environment` says
    /// otherwise), without blocking a cooperative thread, and returns how it ended.
    static func run(
        _ arguments: [String], input: String? = nil, environment: [String: String] = [:]
    ) async throws -> Result {
        try await run(arguments, inputBytes: Array((input ?? "").utf8), environment: environment)
    }

    /// Runs `rmq arguments...` with `inputBytes` (need not be UTF-8) on its standard input.
    static func run(
        _ arguments: [String], inputBytes: [UInt8], environment: [String: String] = [:]
    ) async throws -> Result {
        let process = Process()
        process.executableURL = try executable
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

        let status: Int32 = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
                do {
                    try process.run()
                } catch {
                    process.terminationHandler = nil
                    continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            // A test that gives up on a long-running rmq (a server, a consumer) stops it.
            if process.isRunning { process.terminate() }
        }
        return Result(
            status: status, output: try String(contentsOf: outputURL, encoding: .utf8),
            errorOutput: try String(contentsOf: errorURL, encoding: .utf8))
    }
}
