/// The echo server of the `rpc` and `rpc-patterns` scenarios, in a child process, so its CPU
/// time is not counted in the client's: the C and the Swift clients all talk to this same C
/// server.
struct RPCServerProcess: Sendable {
    let child: ChildProcess

    /// Starts `rabbitmq-bench rpc-server` and waits until it consumes from `queue`.
    static func start(queue: String, maxSeconds: Double, c: CBaseline) async throws -> RPCServerProcess {
        try await c.resetQueue(queue, maxLength: 0)
        let child = try ChildProcess.spawn(["rpc-server", "--queue", queue, "--max-seconds", "\(Int(maxSeconds))"])
        for _ in 0..<100 {
            if try await c.counts(queue).consumers > 0 { return RPCServerProcess(child: child) }
            if child.exitStatus() != nil { throw BenchError("the RPC echo server exited at start (see its error above)") }
            try await Task.sleep(for: .milliseconds(100))
        }
        await child.stop()
        throw BenchError("the RPC echo server did not start consuming within 10 s")
    }

    func stop() async { await child.stop() }
}
