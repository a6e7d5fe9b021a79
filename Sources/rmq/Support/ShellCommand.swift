import Foundation

/// Runs a command through `/bin/sh -c` with given standard input, without blocking a thread of
/// Swift's cooperative pool: the process's end is awaited through its termination handler,
/// and its input and output go through temporary files rather than pipes, so that no one
/// has to drain a pipe while the process runs.
enum ShellCommand {
    struct Result: Sendable {
        var status: Int32
        var output: [UInt8]
        var errorOutput: [UInt8]
    }

    static func run(_ command: String, input: [UInt8]) async throws -> Result {
        let directory = FileManager.default.temporaryDirectory
        let token = UUID().uuidString
        let inputURL = directory.appendingPathComponent("rmq-exec-\(token).in")
        let outputURL = directory.appendingPathComponent("rmq-exec-\(token).out")
        let errorURL = directory.appendingPathComponent("rmq-exec-\(token).err")
        defer {
            for url in [inputURL, outputURL, errorURL] { try? FileManager.default.removeItem(at: url) }
        }
        try Data(input).write(to: inputURL)
        _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errorURL.path, contents: nil)
        let inputHandle = try FileHandle(forReadingFrom: inputURL)
        let outputHandle = try FileHandle(forWritingTo: outputURL)
        let errorHandle = try FileHandle(forWritingTo: errorURL)
        defer {
            try? inputHandle.close()
            try? outputHandle.close()
            try? errorHandle.close()
        }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        process.standardInput = inputHandle
        process.standardOutput = outputHandle
        process.standardError = errorHandle
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { process in continuation.resume(returning: process.terminationStatus) }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: CLIError("cannot run /bin/sh: \(error.localizedDescription)"))
            }
        }
        return Result(
            status: status, output: Array(try Data(contentsOf: outputURL)),
            errorOutput: Array(try Data(contentsOf: errorURL)))
    }
}
