import CRabbitMQ
import Glibc
import Synchronization

/// Unsticks I/O threads that rabbitmq-c 0.11 leaves blocked inside a send.
///
/// rabbitmq-c before 0.14 can block forever in `amqp_basic_publish` (or any send) when the
/// peer goes silent and the socket buffer is full (upstream #780): no heartbeat check runs
/// while it waits. One process-wide thread looks at every registered connection four times
/// a second; when a connection has been inside the same send for longer than two heartbeat
/// intervals *and* the kernel says nothing arrived from the peer for as long, it shuts the
/// socket down through a `dup()` of the descriptor, which makes the stuck call return an
/// error. A broker that merely blocks publishers (`connection.blocked`) still sends
/// heartbeats, so it is never mistaken for a dead one.
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

    /// Registers a connected socket; nil when heartbeats are off (nothing tells a dead peer
    /// from a slow one then). The registration owns a `dup` of the descriptor.
    func register(socket: Int32, heartbeatSeconds: Int) -> Registration? {
        guard heartbeatSeconds > 0, socket >= 0 else { return nil }
        let descriptor = dup(socket)
        guard descriptor >= 0 else { return nil }
        let registration = Registration(descriptor: descriptor, limitMilliseconds: 2 * heartbeatSeconds * 1000 + 1000)
        watches.withLock { $0[ObjectIdentifier(registration)] = Watch(registration: registration) }
        if started.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged {
            var thread = pthread_t()
            if pthread_create(&thread, nil, watchdogThreadMain, nil) == 0 { pthread_detach(thread) }
        }
        return registration
    }

    func unregister(_ registration: Registration) {
        _ = watches.withLock { $0.removeValue(forKey: ObjectIdentifier(registration)) }
        close(registration.descriptor)
    }

    fileprivate func runForever() {
        crmq_set_thread_name("rmq-watchdog")
        while true {
            usleep(250_000)
            check()
        }
    }

    private func check() {
        let now = ContinuousClock.now
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
            let silent = crmq_tcp_last_data_recv_ms(registration.descriptor)
            if silent < 0 || silent > registration.limitMilliseconds {
                _ = shutdown(registration.descriptor, Int32(SHUT_RDWR))
            } else {
                // The peer is alive and only slow to read: let the send go on.
                watches.withLock { $0[ObjectIdentifier(registration)]?.fired = false }
            }
        }
    }
}

private func watchdogThreadMain(_: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    Watchdog.shared.runForever()
    return nil
}
