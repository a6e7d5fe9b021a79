import Foundation
import Synchronization

/// SIGINT and SIGTERM as events, for the commands that stop cleanly on them (`consume`,
/// `publish`, `rpc serve`): the first one asks the command to finish what it holds (flush,
/// acknowledge, settle confirms) and exit with 128 + the signal's number; a second one
/// exits at once, for when finishing is what hangs (a reader that stopped reading). Exiting
/// at once is safe: whatever was not acknowledged goes back to the queue when the socket
/// closes.
///
/// The signals are ignored first (`SIG_IGN`), so only the dispatch sources see them.
final class StopSignals: Sendable {
    private struct State {
        var received: Int32?
        var handlers: [@Sendable (Int32) -> Void] = []
    }

    private let state = Mutex(State())
    /// Kept alive for the life of the command (one per process). Not Sendable as a type, but
    /// set once in init and only cancelled in deinit; a dispatch source is thread-safe.
    nonisolated(unsafe) private let sources: [any DispatchSourceSignal]

    init() {
        let numbers = [SIGINT, SIGTERM]
        for number in numbers { signal(number, SIG_IGN) }
        sources = numbers.map { DispatchSource.makeSignalSource(signal: $0, queue: .global()) }
        for (source, number) in zip(sources, numbers) {
            source.setEventHandler { [weak self] in self?.received(number) }
            source.resume()
        }
    }

    deinit {
        for source in sources { source.cancel() }
    }

    /// The signal that asked us to stop, if one did.
    var received: Int32? { state.withLock { $0.received } }

    /// The exit status for a stop by `signal`: 130 for SIGINT, 143 for SIGTERM, as a shell
    /// shows for a process its signal killed.
    static func exitStatus(for signal: Int32) -> Int32 { 128 + signal }

    /// "SIGINT" or "SIGTERM", for the summary line.
    static func name(of signal: Int32) -> String { signal == SIGINT ? "SIGINT" : "SIGTERM" }

    /// Calls `handler` once, when the first signal arrives (at once if it has arrived).
    func onStop(_ handler: @escaping @Sendable (Int32) -> Void) {
        let already: Int32? = state.withLock { state in
            if let received = state.received { return received }
            state.handlers.append(handler)
            return nil
        }
        if let already { handler(already) }
    }

    /// Returns the first signal once it arrives; nil when the calling task is cancelled first.
    func wait() async -> Int32? {
        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
        onStop { signal in
            continuation.yield(signal)
            continuation.finish()
        }
        for await signal in stream { return signal }
        return nil
    }

    private func received(_ signal: Int32) {
        let handlers: [@Sendable (Int32) -> Void]? = state.withLock { state in
            if state.received != nil { return nil }
            state.received = signal
            defer { state.handlers = [] }
            return state.handlers
        }
        guard let handlers else {
            // The second signal: the user insists, or finishing is what hangs.
            _exit(Self.exitStatus(for: signal))
        }
        for handler in handlers { handler(signal) }
    }
}
