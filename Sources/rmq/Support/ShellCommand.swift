import Foundation
import Synchronization

/// Runs a command through `/bin/sh -c` with given standard input, without blocking a thread of
/// Swift's cooperative pool: each run has a thread of its own, and its input and output go
/// through temporary files rather than pipes, so that no one
/// has to drain a pipe while the process runs. The files hold request and reply bodies, so
/// they are created readable by their owner only (0600), whatever the umask.
enum ShellCommand {
    struct Result: Sendable {
        var status: Int32
        var output: [UInt8]
        var errorOutput: [UInt8]
    }

    private struct Running {
        /// The process ids of the commands running now (removed once reaped), each the
        /// leader of its process group.
        var processes: Set<pid_t> = []
        /// Set by ``terminateAll()``: no command starts after it.
        var stopping = false
    }

    /// The commands running now, so that a signal that stops `rmq` stops them too.
    private static let running = Mutex(Running())

    /// Sends SIGTERM to every command running now, and keeps new ones from starting (the
    /// caller is stopping).
    static func terminateAll() {
        running.withLock { running in
            running.stopping = true
            // Under the lock: an id is removed (under it) only once its process is reaped.
            // Negative: the command's whole process group (a pipeline).
            for process in running.processes { kill(-process, SIGTERM) }
        }
    }

    /// Runs `command` with `input` on its standard input. Everything that blocks (the
    /// temporary files, which hold up to a message's worth of bytes, and the wait for the
    /// process) happens on a thread of its own, never on the cooperative pool.
    static func run(_ command: String, input: [UInt8]) async throws -> Result {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Result, any Error>) in
            let thread = Thread {
                continuation.resume(with: Swift.Result { try runBlocking(command, input: input) })
            }
            thread.name = "rmq-exec"
            thread.start()
        }
    }

    private static func runBlocking(_ command: String, input: [UInt8]) throws -> Result {
        let directory = FileManager.default.temporaryDirectory
        let token = UUID().uuidString
        let inputURL = directory.appendingPathComponent("rmq-exec-\(token).in")
        let outputURL = directory.appendingPathComponent("rmq-exec-\(token).out")
        let errorURL = directory.appendingPathComponent("rmq-exec-\(token).err")
        defer {
            for url in [inputURL, outputURL, errorURL] { try? FileManager.default.removeItem(at: url) }
        }
        let inputHandle = try createPrivateFile(inputURL)
        let outputHandle = try createPrivateFile(outputURL)
        let errorHandle = try createPrivateFile(errorURL)
        defer {
            try? inputHandle.close()
            try? outputHandle.close()
            try? errorHandle.close()
        }
        try inputHandle.write(contentsOf: input)
        try inputHandle.seek(toOffset: 0)

        let status = try spawnAndWait(
            ["/bin/sh", "-c", command],
            descriptors: [inputHandle.fileDescriptor, outputHandle.fileDescriptor, errorHandle.fileDescriptor])
        return Result(
            status: status, output: Array(try Data(contentsOf: outputURL)),
            errorOutput: Array(try Data(contentsOf: errorURL)))
    }

    /// Starts `arguments` with `descriptors` as its standard input, output and error and
    /// returns its exit status (128 + the signal when a signal ended it). Blocks (waitpid):
    /// called on ``run(_:input:)``'s thread.
    ///
    /// posix_spawn rather than Foundation's Process, for the child's signals: Process hands
    /// on the signal mask of the thread it runs on (a Dispatch thread, where SIGTERM and most
    /// others are blocked), and rmq ignores SIGPIPE; a command started so could not be
    /// stopped by SIGTERM. Here the mask is empty, SIGINT, SIGTERM and SIGPIPE are back to
    /// their defaults, and the command leads a process group of its own, so that
    /// ``terminateAll()`` reaches a pipeline's every process.
    private static func spawnAndWait(_ arguments: [String], descriptors: [Int32]) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, descriptor) in descriptors.enumerated() {
            posix_spawn_file_actions_adddup2(&actions, descriptor, Int32(target))
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for number in [SIGINT, SIGTERM, SIGPIPE] { sigaddset(&defaults, number) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }

        // Spawned under the lock, so terminateAll() either sees it or has stopped it starting.
        let spawned: Swift.Result<pid_t, CLIError> = running.withLock { running in
            if running.stopping { return .failure(CLIError("not running the command: rmq is stopping")) }
            var pid: pid_t = 0
            let code = posix_spawn(&pid, "/bin/sh", &actions, &attributes, argv, environ)
            guard code == 0 else { return .failure(CLIError("cannot run /bin/sh: \(String(cString: strerror(code)))")) }
            running.processes.insert(pid)
            return .success(pid)
        }
        let pid = try spawned.get()
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // Removed once reaped: until then the id cannot be reused by another process.
        _ = running.withLock { $0.processes.remove(pid) }
        let signal = status & 0x7F
        return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    }

    /// A new file at `url`, mode 0600, open for reading and writing.
    private static func createPrivateFile(_ url: URL) throws -> FileHandle {
        let descriptor = open(url.path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw CLIError("cannot create \(url.path): \(String(cString: strerror(errno)))")
        }
        return FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
    }
}
