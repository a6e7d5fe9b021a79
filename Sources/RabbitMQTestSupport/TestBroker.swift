import Foundation
import RabbitMQ
import Synchronization

/// The throwaway broker that `scripts/test.sh` starts, as the tests see it: its URL, a way
/// to run `rabbitmqctl` against it, and its process id (for SIGSTOP/SIGCONT).
///
/// Environment (exported by `scripts/broker.sh env`): `RABBITMQ_URL`, `RABBITMQ_TEST_CTL`.
public enum TestBroker {
    /// The broker URL; a clear failure when the tests run without `scripts/test.sh`.
    public static var url: String {
        get throws {
            guard let url = ProcessInfo.processInfo.environment["RABBITMQ_URL"], !url.isEmpty else {
                throw TestSupportError("RABBITMQ_URL is not set: run the tests through scripts/test.sh")
            }
            return url
        }
    }

    /// The broker's AMQP port (from ``url``).
    public static var port: Int {
        get throws {
            guard let port = URLComponents(string: try url)?.port else {
                throw TestSupportError("RABBITMQ_URL has no port: \(try url)")
            }
            return port
        }
    }

    /// Whether the test broker has a TLS listener (`scripts/broker.sh` gives it one unless
    /// `RMQ_TLS_PORT=0`): `RABBITMQ_TLS_URL` and `RABBITMQ_TEST_TLS_DIR` are set.
    public static var hasTLS: Bool {
        let environment = ProcessInfo.processInfo.environment
        return !(environment["RABBITMQ_TLS_URL"] ?? "").isEmpty && !(environment["RABBITMQ_TEST_TLS_DIR"] ?? "").isEmpty
    }

    /// The broker's TLS listener as an `amqps://guest:guest@127.0.0.1:PORT/?cacertfile=CA`
    /// URL: verified by the test CA (append more query parameters with `&`).
    public static var tlsURL: String {
        get throws {
            guard let url = ProcessInfo.processInfo.environment["RABBITMQ_TLS_URL"], !url.isEmpty else {
                throw TestSupportError("RABBITMQ_TLS_URL is not set: run the tests through scripts/test.sh")
            }
            return url
        }
    }

    /// A file of the test certificates `scripts/broker.sh` made: `ca.pem`, `other-ca.pem`,
    /// `client.pem`, `client.key` (the client's common name is ``tlsClientName``).
    public static func tlsFile(_ name: String) throws -> String {
        guard let directory = ProcessInfo.processInfo.environment["RABBITMQ_TEST_TLS_DIR"], !directory.isEmpty else {
            throw TestSupportError("RABBITMQ_TEST_TLS_DIR is not set: run the tests through scripts/test.sh")
        }
        return "\(directory)/\(name)"
    }

    /// The common name of the test client certificate (the user EXTERNAL logs in as).
    public static let tlsClientName = "rmqswift-client"

    /// Makes the user the test client certificate logs in as with EXTERNAL (no password),
    /// allowed everything on `/`; idempotent, and safe when tests race to do it.
    public static func ensureTLSClientUser() async throws {
        if !(try await ctl("list_users", "--silent")).contains(tlsClientName) {
            _ = try? await ctl("add_user", tlsClientName, UUID().uuidString)
            try await ctl("clear_password", tlsClientName)
        }
        try await ctl("set_permissions", "-p", "/", tlsClientName, ".*", ".*", ".*")
    }

    /// A configuration for the broker's TLS listener, verifying it by the test CA; `query`
    /// is appended to ``tlsURL`` (for example `&certfile=...`).
    public static func tlsConfiguration(
        name: String = uniqueName("tls"), query: String = "", recovery: RabbitMQConfiguration.Recovery = fastRecovery
    ) throws -> RabbitMQConfiguration {
        var configuration = try RabbitMQConfiguration(uri: tlsURL + query)
        configuration.connectionName = name
        configuration.heartbeat = .seconds(10)
        configuration.recovery = recovery
        configuration.requestTimeout = requestTimeout
        // The default (10 s) bounds the TCP connect and the TLS handshake together: a timing
        // a loaded machine's broker may miss, which these tests do not test (the connection
        // tests do, against a port that never answers).
        configuration.connectTimeout = .seconds(60)
        return configuration
    }

    /// Connects over TLS like `RabbitMQConnection.connect(configuration:)`; when that fails
    /// to connect (no socket, no handshake, or no AMQP handshake in time), the error thrown
    /// also says whether `openssl s_client` completes a handshake with the same listener
    /// just then (and how long it took), and what the broker logged about TLS meanwhile:
    /// which tells a broker that does not answer from a client that does not ask.
    public static func connectOverTLS(configuration: RabbitMQConfiguration) async throws -> RabbitMQConnection {
        let started = Date()
        do {
            return try await RabbitMQConnection.connect(configuration: configuration)
        } catch let error as RabbitMQError where [.connectFailed, .tls, .timeout].contains(error.code) {
            throw TestSupportError("\(error); \(await tlsHandshakeProbe(since: started))")
        }
    }

    /// One handshake with the broker's TLS listener by `openssl s_client`, verified by the
    /// test CA, bounded by 20 s: what happened and how long it took, and the broker log's
    /// lines about TLS from `since` on.
    public static func tlsHandshakeProbe(since: Date) async -> String {
        let clock = ContinuousClock()
        let start = clock.now
        func took() -> String {
            let elapsed = (clock.now - start).components
            return String(format: "%.1f s", Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18)
        }
        do {
            guard let port = URLComponents(string: try tlsURL)?.port else { return "no port in RABBITMQ_TLS_URL" }
            try await run(
                "/usr/bin/timeout",
                ["-k", "5", "20", "openssl", "s_client", "-connect", "127.0.0.1:\(port)", "-servername", "localhost",
                 "-CAfile", try tlsFile("ca.pem"), "-verify_return_error", "-brief"])
            return "openssl s_client then completed a handshake with the listener in \(took())" + brokerLogTLSLines(since: since)
        } catch {
            return "openssl s_client then completed no handshake with the listener (\(took())): \(error)"
                + brokerLogTLSLines(since: since)
        }
    }

    /// The broker log's last three lines about TLS logged from `since` on (the log is beside
    /// the pid file `scripts/broker.sh env` names), for a failure message.
    private static func brokerLogTLSLines(since: Date) -> String {
        let environment = ProcessInfo.processInfo.environment
        guard let pidFile = environment["RABBITMQ_TEST_PIDFILE"], let node = environment["RABBITMQ_TEST_NODE"] else { return "" }
        let log = URL(fileURLWithPath: pidFile).deletingLastPathComponent().appendingPathComponent("log/\(node).log")
        guard let data = FileManager.default.contents(atPath: log.path) else { return "; the broker's log \(log.path) could not be read" }
        let text = String(decoding: data, as: UTF8.self)
        // Its lines begin "2026-12-07 16:44:06.842535+00:00" (broker.sh starts the node with
        // TZ=UTC), compared as text; a line that does not begin with a date (a report's
        // continuation) is left out.
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        let from = formatter.string(from: since)
        // Case matters: the tests' connection names ("tls-...") are not news.
        let lines = text.split(separator: "\n").filter { line in
            line.first?.isNumber == true && line.prefix(from.count) >= from
                && ["TLS", "SSL", "ssl_", "handshake"].contains { line.contains($0) }
        }
        guard !lines.isEmpty else { return "; the broker logged nothing about TLS meanwhile" }
        return "; the broker's log about TLS meanwhile, last lines: " + lines.suffix(3).joined(separator: " | ")
    }

    /// A fault-injecting proxy in front of the test broker (see ``FaultProxy``).
    public static func proxy() throws -> FaultProxy {
        try FaultProxy(upstreamPort: port)
    }

    /// A configuration for the test broker that goes through `proxy`.
    public static func configuration(
        through proxy: FaultProxy, name: String = uniqueName("proxied"), heartbeat: Duration = .seconds(10),
        recovery: RabbitMQConfiguration.Recovery = fastRecovery
    ) throws -> RabbitMQConfiguration {
        var configuration = try RabbitMQConfiguration(uri: proxy.uri(for: url))
        configuration.connectionName = name
        configuration.heartbeat = heartbeat
        configuration.recovery = recovery
        configuration.requestTimeout = requestTimeout
        return configuration
    }

    /// What the broker holds for `queue` now, asked on a connection of its own (a passive
    /// declare): an account kept outside the connection under test. Nil when it does not exist.
    public static func queueState(_ queue: String) async throws -> RabbitMQQueueDeclareResult? {
        let observer = try await connect(name: uniqueName("observer"), recovery: .disabled)
        let result: RabbitMQQueueDeclareResult?
        do {
            result = try await observer.openChannel().queueDeclare(queue, passive: true)
        } catch let error as RabbitMQError where error.code == .notFound {
            result = nil
        } catch {
            try? await observer.close()
            throw error
        }
        try await observer.close()
        return result
    }

    /// A configuration for the test broker with a recognisable connection name.
    /// Recovery retries quickly in tests (the broker is local).
    public static func configuration(
        name: String = uniqueName("conn"), heartbeat: Duration = .seconds(10),
        recovery: RabbitMQConfiguration.Recovery = fastRecovery
    ) throws -> RabbitMQConfiguration {
        var configuration = try RabbitMQConfiguration(uri: url)
        configuration.connectionName = name
        configuration.heartbeat = heartbeat
        configuration.recovery = recovery
        configuration.requestTimeout = requestTimeout
        return configuration
    }

    /// Connects to the test broker.
    public static func connect(
        name: String = uniqueName("conn"), heartbeat: Duration = .seconds(10),
        recovery: RabbitMQConfiguration.Recovery = fastRecovery
    ) async throws -> RabbitMQConnection {
        try await RabbitMQConnection.connect(configuration: configuration(name: name, heartbeat: heartbeat, recovery: recovery))
    }

    /// Recovery with short delays, for a broker on this machine.
    /// How long tests let the broker take to answer a request: more than the library's 30 s,
    /// because CI's loaded 2-core machine runs the broker, the tests and their load at once.
    /// Tests of the timeout itself set their own.
    public static let requestTimeout: Duration = .seconds(120)

    public static var fastRecovery: RabbitMQConfiguration.Recovery {
        var recovery = RabbitMQConfiguration.Recovery()
        recovery.initialDelay = .milliseconds(100)
        recovery.maxDelay = .seconds(2)
        recovery.publishWaitTimeout = .seconds(120)
        return recovery
    }

    private static let counter = Atomic<Int>(0)

    /// A name no other test uses: prefix, process id and a counter.
    public static func uniqueName(_ prefix: String) -> String {
        "\(prefix)-\(getpid())-\(counter.add(1, ordering: .relaxed).newValue)"
    }

    /// Runs `rabbitmqctl` against the test node and returns its standard output.
    @discardableResult
    public static func ctl(_ arguments: String...) async throws -> String {
        guard let script = ProcessInfo.processInfo.environment["RABBITMQ_TEST_CTL"] else {
            throw TestSupportError("RABBITMQ_TEST_CTL is not set: run the tests through scripts/test.sh")
        }
        return try await run(script, ["ctl"] + arguments)
    }

    /// The OS process id of the broker (the Erlang VM).
    public static func brokerPID() async throws -> Int32 {
        guard let script = ProcessInfo.processInfo.environment["RABBITMQ_TEST_CTL"] else {
            throw TestSupportError("RABBITMQ_TEST_CTL is not set: run the tests through scripts/test.sh")
        }
        let output = try await run(script, ["pid"]).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let pid = Int32(output) else { throw TestSupportError("broker.sh pid printed '\(output)'") }
        return pid
    }

    /// Closes the broker side of the connection with this client-provided name, as
    /// `rabbitmqctl close_connection` does.
    ///
    /// Two steps, each retried on its own (rabbitmqctl can fail on a busy node, exit 69 or our
    /// bound on its time, after the node did the work): find the connection's processes, then
    /// close exactly those. A call that failed after closing is then harmless (the next one
    /// finds the pinned processes gone), and a connection the client recovered meanwhile under
    /// the same name, a new process, is never closed by mistake.
    public static func closeConnection(named name: String, reason: String = "closed by test") async throws {
        precondition(name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }, "plain connection names only")
        let safeReason = reason.filter { $0 != "\"" && $0 != "\\" }
        // Connections of other tests come and go meanwhile: one that dies while we look at it
        // (noproc) counts as not ours.
        let find = """
            Name = <<"\(name)">>, \
            Props = fun(P) -> try proplists:get_value(client_properties, \
            rabbit_networking:connection_info(P, [client_properties]), []) catch _:_ -> [] end end, \
            lists:flatten(lists:join(" ", [pid_to_list(P) || P <- rabbit_networking:connections(), \
            lists:member({<<"connection_name">>, longstr, Name}, Props(P))])).
            """
        // Each step has its own bound: on a loaded 2-core machine (the whole suite in parallel,
        // the RabbitMQ 4 node's CLI started in its root) a rabbitmqctl call can take many
        // seconds, and the two steps together were seen to need more than one minute.
        var deadline = ContinuousClock.now + .seconds(90)
        var pids: [String] = []
        while pids.isEmpty {
            guard ContinuousClock.now < deadline else { throw TestSupportError("no connection named \(name) on the broker") }
            if let listing = try? await ctl("eval", find) {
                // Printed as an Erlang string ("<0.1.0> <0.2.0>"), or [] for none.
                pids = listing.split(whereSeparator: { " \"\n[]".contains($0) }).map(String.init).filter { $0.hasPrefix("<") }
            }
            // A connection this new may not be registered with the broker yet.
            if pids.isEmpty { try await Task.sleep(for: .milliseconds(200)) }
        }
        deadline = ContinuousClock.now + .seconds(90)
        let list = pids.map { "\"\($0)\"" }.joined(separator: ",")
        // Closed by a call that returned; one that failed is repeated (a process it ended
        // already is skipped). Not waiting for the processes to end: a client that cannot
        // answer the close (a test's proxy holding it) keeps its process for the broker's
        // close timeout, and the caller waits for what it expects to happen anyway.
        let close = """
            [catch rabbit_networking:close_connection(P, "\(safeReason)") || \
            P <- [list_to_pid(S) || S <- [\(list)]], is_process_alive(P)], ok.
            """
        while ContinuousClock.now < deadline {
            if (try? await ctl("eval", close)) != nil { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw TestSupportError("could not close the connection named \(name) (\(pids.joined(separator: " ")))")
    }

    /// The Erlang pid of the connection whose client properties carry `name`.
    public static func connectionPID(named name: String) async throws -> String {
        // As closeConnection's steps: one rabbitmqctl took 4 to 17 s while the suite ran, so
        // 20 s allowed one or two looks (a fresh-clone run on the RabbitMQ 4 node ran out).
        let deadline = ContinuousClock.now + .seconds(90)
        while ContinuousClock.now < deadline {
            let listing = try await ctl("list_connections", "--no-table-headers", "--silent", "pid", "client_properties")
            for line in listing.split(separator: "\n") where line.contains("\"\(name)\"") {
                if let pid = line.split(separator: "\t").first { return String(pid) }
            }
            // The management listing is eventually consistent with new connections.
            try await Task.sleep(for: .milliseconds(200))
        }
        throw TestSupportError("no connection named \(name) on the broker")
    }

    /// Runs a program without blocking a cooperative thread; fails on a non-zero exit.
    ///
    /// posix_spawn plus a plain thread blocked in waitpid: Foundation's Process sometimes
    /// never reported the exit of a script that had started a detached daemon (the child
    /// stayed a zombie), which hung the broker-restart tests.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String], input: String? = nil) async throws -> String {
        let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("rmq-test-\(UUID().uuidString)").path
        let inputPath = FileManager.default.temporaryDirectory.appendingPathComponent("rmq-test-in-\(UUID().uuidString)").path
        _ = FileManager.default.createFile(atPath: inputPath, contents: Data((input ?? "").utf8))
        defer {
            try? FileManager.default.removeItem(atPath: outputPath)
            try? FileManager.default.removeItem(atPath: inputPath)
        }
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 0, inputPath, O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
            let argv = ([executable] + arguments).map { strdup($0) } + [nil]
            defer { for pointer in argv { free(pointer) } }
            var pid: pid_t = 0
            let spawned = posix_spawn(&pid, executable, &actions, nil, argv, environ)
            guard spawned == 0 else {
                continuation.resume(throwing: TestSupportError("cannot start \(executable): errno \(spawned)"))
                return
            }
            let child = pid
            let waiter = Thread {
                var status: Int32 = 0
                while waitpid(child, &status, 0) < 0 && errno == EINTR {}
                // WIFEXITED / WEXITSTATUS, spelled out (the C macros do not import).
                let exited = status & 0x7f == 0
                continuation.resume(returning: exited ? (status >> 8) & 0xff : 128 + (status & 0x7f))
            }
            waiter.start()
        }
        let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        guard status == 0 else {
            throw TestSupportError("\(executable) \(arguments.joined(separator: " ")) exited \(status): \(text)")
        }
        return text
    }

    /// The repository root (for scripts used by the tests).
    public static func repositoryRoot(file: String = #filePath) -> URL {
        var url = URL(fileURLWithPath: file)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        return url
    }
}

/// A failure of the test harness itself (not of the code under test).
public struct TestSupportError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension TestBroker {
    /// Runs `body` on a connection to this test process's scratch virtual host: for
    /// documentation samples, whose names are the everyday ones of their articles ("orders",
    /// "events", "emails"). A broker a user points the tests at keeps its own entities of
    /// those names: nothing outside the scratch virtual host is declared or deleted.
    public static func inScratchVirtualHost(_ body: (RabbitMQConnection) async throws -> Void) async throws {
        try await withScratchVirtualHost { configuration in
            let connection = try await RabbitMQConnection.connect(configuration: configuration)
            do {
                try await body(connection)
            } catch {
                try? await connection.close()
                throw error
            }
            try await connection.close()
        }
    }

    /// Runs `body` with the test broker's configuration pointed at this process's scratch
    /// virtual host: made (and granted to the test user) the first time a test asks, shared
    /// by the tests of the process (the samples' names differ from one another), and deleted
    /// with all it holds when the process exits. One per process, not one per test: each
    /// `rabbitmqctl` boots an Erlang VM, seconds of CPU while the suite runs.
    public static func withScratchVirtualHost<Result>(
        _ body: (RabbitMQConfiguration) async throws -> Result
    ) async throws -> Result {
        var configuration = try configuration()
        configuration.virtualHost = try await ScratchVirtualHost.shared.name(for: configuration.username)
        return try await body(configuration)
    }
}

/// The scratch virtual host of this test process (see ``TestBroker/withScratchVirtualHost(_:)``).
final class ScratchVirtualHost: Sendable {
    static let shared = ScratchVirtualHost()

    private let creation = LockedValue<Task<String, any Error>?>(nil)

    func name(for user: String) async throws -> String {
        let task = creation.withLock { creation in
            if let creation { return creation }
            let task = Task { try await Self.create(for: user) }
            creation = task
            return task
        }
        do {
            return try await task.value
        } catch {
            // The next test tries again.
            creation.withLock { creation in
                if creation == task { creation = nil }
            }
            throw error
        }
    }

    private static func create(for user: String) async throws -> String {
        guard let script = ProcessInfo.processInfo.environment["RABBITMQ_TEST_CTL"] else {
            throw TestSupportError("RABBITMQ_TEST_CTL is not set: run the tests through scripts/test.sh")
        }
        // Random, not only the process id: ids repeat in containers, and a run killed before
        // its exit handler leaves its virtual host behind.
        let name = "swift-rmq-scratch-\(getpid())-\(UUID().uuidString.prefix(8).lowercased())"
        try await TestBroker.ctl("add_vhost", name)
        deleteAtExit.withLock { $0 = (script, name) }
        atexit {
            // The process is ending: a plain spawn and wait, no tasks.
            guard let (script, name) = deleteAtExit.withLock({ $0 }) else { return }
            var pid: pid_t = 0
            let words: [String] = [script, "ctl", "delete_vhost", name]
            let argv = words.map { strdup($0) } + [nil]
            defer { for pointer in argv { free(pointer) } }
            guard posix_spawn(&pid, script, nil, nil, argv, environ) == 0 else { return }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
        try await TestBroker.ctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        return name
    }
}

/// The tool script and the scratch virtual host to delete when the process exits.
private let deleteAtExit = LockedValue<(String, String)?>(nil)

/// Waits for `condition` to hold, polling; for state that has no event to await.
public func eventually(
    timeout: Duration = .seconds(30), _ what: String, _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw TestSupportError("timed out waiting for \(what)")
}

/// Runs `body` and fails with a clear error if it does not finish within `timeout`.
///
/// It returns at the deadline even when `body` cannot be cancelled (a continuation that is
/// never resumed, the very bug a test may be looking for): `body` runs in a task of its own,
/// which is cancelled and left behind, so the test reports instead of hanging.
@discardableResult
public func withTimeout<T: Sendable>(
    _ timeout: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let outcome = FirstOutcome<T>()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            outcome.start(continuation)
            let work = Task {
                do { outcome.finish(.success(try await body())) } catch { outcome.finish(.failure(error)) }
            }
            outcome.setWork(work)
            Task {
                try? await Task.sleep(for: timeout)
                if outcome.finish(.failure(TestSupportError("timed out after \(timeout) waiting for \(what)"))) {
                    work.cancel()
                }
            }
        }
    } onCancel: {
        outcome.cancel()
    }
}

/// The first of several racing results, handed to one continuation.
private final class FirstOutcome<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, any Error>?
        var result: Result<T, any Error>?
        var work: Task<Void, Never>?
        var cancelled = false
    }

    private let state = LockedValue(State())

    func start(_ continuation: CheckedContinuation<T, any Error>) {
        state.withLock { $0.continuation = continuation }
    }

    func setWork(_ work: Task<Void, Never>) {
        let cancel = state.withLock { state in
            state.work = work
            return state.cancelled
        }
        if cancel { work.cancel() }
    }

    func cancel() {
        let work = state.withLock { state in
            state.cancelled = true
            return state.work
        }
        work?.cancel()
    }

    /// Resumes the continuation with `result` unless it was resumed already; true if this won.
    @discardableResult
    func finish(_ result: Result<T, any Error>) -> Bool {
        let continuation: CheckedContinuation<T, any Error>? = state.withLock { state in
            guard state.result == nil else { return nil }
            state.result = result
            return state.continuation.take()
        }
        continuation?.resume(with: result)
        return continuation != nil
    }
}
