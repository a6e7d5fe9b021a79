import CRabbitMQ
import Glibc
import Synchronization

/// Unsticks I/O threads that rabbitmq-c 0.11 leaves blocked inside a send: on TLS, a read
/// through OpenSSL that has to write (a key update) when the socket is full. No connection
/// sends through rabbitmq-c after login (the frame writer does), so only TLS reads are watched.
///
/// rabbitmq-c before 0.14 can block forever in `amqp_basic_publish` (or any send) when the
/// peer goes silent and the socket buffer is full (upstream #780): no heartbeat check runs
/// while it waits. One process-wide thread looks at every registered connection four times
/// a second; when a connection has been inside the same send for longer than two heartbeat
/// intervals *and* the kernel says nothing arrived from the peer for as long, it shuts the
/// socket down through a `dup()` of the descriptor, which makes the stuck call return an
/// error. A broker that merely blocks publishers (`connection.blocked`) still sends
/// heartbeats, so it is never mistaken for a dead one.
///
/// The `dup` belongs to the registration and is closed by ``unregister(_:)`` under the same
/// lock the shut-down runs under, after checking the registration is still there: the
/// watchdog never shuts down a descriptor it no longer owns (its number may be reused).
final class Watchdog: Sendable {
    /// The per-connection part: an odd `calls` value means the I/O thread is inside a send.
    final class Registration: Sendable {
        let calls = Atomic<UInt64>(0)
        let descriptor: Int32
        let limitMilliseconds: Int

        init(descriptor: Int32, limitMilliseconds: Int) {
            self.descriptor = descriptor
            self.limitMilliseconds = limitMilliseconds
        }

        /// Marks a potentially blocking rabbitmq-c call (two relaxed increments per call).
        @inline(__always)
        func guarded<T>(_ body: () -> T) -> T {
            calls.wrappingAdd(1, ordering: .relaxed)
            defer { calls.wrappingAdd(1, ordering: .relaxed) }
            return body()
        }
    }

    private struct Watch {
        var registration: Registration
        var lastCalls: UInt64 = 0
        var stuckSince: ContinuousClock.Instant?
        var fired = false
    }

    static let shared = Watchdog()

    private let watches = LockedValue<[ObjectIdentifier: Watch]>([:])
    private let started = Atomic<Bool>(false)
    /// Milliseconds since the descriptor last received data (-1: unknown); a seam for tests.
    private let silence: @Sendable (Int32) -> Int
    /// Shuts a descriptor down; a seam for tests.
    private let shutDown: @Sendable (Int32) -> Void
    private let startsThread: Bool

    init(
        silence: @escaping @Sendable (Int32) -> Int = { crmq_tcp_last_data_recv_ms($0) },
        shutDown: @escaping @Sendable (Int32) -> Void = { _ = shutdown($0, Int32(SHUT_RDWR)) },
        startsThread: Bool = true
    ) {
        self.silence = silence
        self.shutDown = shutDown
        self.startsThread = startsThread
    }

    /// Registers a connected socket; nil when heartbeats are off (nothing tells a dead peer
    /// from a slow one then). The registration owns a `dup` of the descriptor.
    func register(socket: Int32, heartbeatSeconds: Int) -> Registration? {
        guard heartbeatSeconds > 0, socket >= 0 else { return nil }
        let descriptor = dup(socket)
        guard descriptor >= 0 else { return nil }
        let registration = Registration(descriptor: descriptor, limitMilliseconds: 2 * heartbeatSeconds * 1000 + 1000)
        watches.withLock { $0[ObjectIdentifier(registration)] = Watch(registration: registration) }
        if startsThread, started.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged {
            var thread = pthread_t()
            if pthread_create(&thread, nil, watchdogThreadMain, nil) == 0 { pthread_detach(thread) }
        }
        return registration
    }

    /// Forgets a registration and closes its descriptor (under the lock a shut-down takes).
    func unregister(_ registration: Registration) {
        watches.withLock { watches in
            guard watches.removeValue(forKey: ObjectIdentifier(registration)) != nil else { return }
            close(registration.descriptor)
        }
    }

    fileprivate func runForever() {
        crmq_set_thread_name("rmq-watchdog")
        while true {
            usleep(250_000)
            check(now: .now)
        }
    }

    /// One look at every registration (the thread's, or a test's with its own clock).
    func check(now: ContinuousClock.Instant) {
        let stuck: [Registration] = watches.withLock { watches in
            var stuck: [Registration] = []
            for (key, var watch) in watches {
                let calls = watch.registration.calls.load(ordering: .relaxed)
                if calls & 1 == 1, calls == watch.lastCalls {
                    let since = watch.stuckSince ?? now
                    watch.stuckSince = since
                    if !watch.fired, now - since > .milliseconds(watch.registration.limitMilliseconds) {
                        stuck.append(watch.registration)
                        watch.fired = true
                    }
                } else {
                    watch.stuckSince = nil
                    watch.fired = false
                }
                watch.lastCalls = calls
                watches[key] = watch
            }
            return stuck
        }
        for registration in stuck {
            // A syscall: outside the lock. The descriptor may be closed meanwhile, so the
            // answer is only acted on after checking, under the lock, that it is still ours.
            let silent = silence(registration.descriptor)
            watches.withLock { watches in
                let key = ObjectIdentifier(registration)
                guard watches[key] != nil else { return }
                if silent < 0 || silent > registration.limitMilliseconds {
                    shutDown(registration.descriptor)
                } else {
                    // The peer is alive and only slow to read: let the send go on.
                    watches[key]?.fired = false
                }
            }
        }
    }
}

private func watchdogThreadMain(_: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    Watchdog.shared.runForever()
    return nil
}
