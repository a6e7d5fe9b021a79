import Glibc

/// This executable started again as a child process (`rpc-server`, `fill`), so that work which
/// is not being measured (the RPC echo server, filling the consume queue) costs the measured
/// process no CPU time, and valgrind, which does not follow children, profiles only the client.
struct ChildProcess: Sendable {
    let pid: pid_t

    /// Starts this executable with `arguments`; the child inherits the environment, so it
    /// finds the same RABBITMQ_URL.
    static func spawn(_ arguments: [String]) throws -> ChildProcess {
        var argv: [UnsafeMutablePointer<CChar>?] = (["rabbitmq-bench"] + arguments).map { strdup($0) }
        argv.append(nil)
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, executablePath, nil, nil, argv, environ)
        guard status == 0 else { throw BenchError("could not start \(arguments.first ?? "a child"): posix_spawn \(status)") }
        return ChildProcess(pid: pid)
    }

    /// This executable: argv[0] when it names a file (under valgrind, /proc/self/exe is
    /// valgrind itself), else /proc/self/exe.
    private static let executablePath: String = {
        let argument = CommandLine.arguments.first ?? ""
        if argument.contains("/"), let resolved = realpath(argument, nil) {
            defer { free(resolved) }
            return String(cString: resolved)
        }
        return "/proc/self/exe"
    }()

    /// The exit status once the child has exited, without blocking; nil while it runs.
    func exitStatus() -> Int32? {
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
        // WIFEXITED / WEXITSTATUS are macros Swift does not import.
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// Waits (polling, so no thread blocks) up to `seconds` for the child to exit.
    func wait(seconds: Double) async throws -> Int32 {
        let polls = max(1, Int(seconds * 100))
        for _ in 0..<polls {
            if let status = exitStatus() { return status }
            try await Task.sleep(for: .milliseconds(10))
        }
        await stop()
        throw BenchError("child process \(pid) did not finish within \(seconds) s")
    }

    /// SIGTERM, then reaps it (polls for up to 5 s, then SIGKILL).
    func stop() async {
        kill(pid, SIGTERM)
        for _ in 0..<50 {
            if exitStatus() != nil { return }
            try? await Task.sleep(for: .milliseconds(100))
        }
        kill(pid, SIGKILL)
        for _ in 0..<20 {
            if exitStatus() != nil { return }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }
}
