import Foundation

/// Writes to standard output and standard error without buffering: for the occasional
/// line (an RPC reply, an error). `rmq consume`'s stream of lines goes through
/// ``DeliveryOutput`` instead, one write per batch.
enum StandardStreams {
    static func writeLine(_ line: String) throws {
        try write(line + "\n", to: .standardOutput)
    }

    static func write(_ bytes: [UInt8]) throws {
        try FileHandle.standardOutput.write(contentsOf: bytes)
    }

    static func writeError(_ line: String) {
        try? write(line + "\n", to: .standardError)
    }

    private static func write(_ text: String, to handle: FileHandle) throws {
        do {
            try handle.write(contentsOf: Data(text.utf8))
        } catch {
            throw CLIError("cannot write: \(error.localizedDescription)")
        }
    }
}
