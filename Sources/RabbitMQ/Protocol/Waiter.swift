/// A caller waiting for the protocol core's answer. The I/O loop resumes its continuation
/// when the core says so; a probe is only a number, for whatever drives the core directly
/// (its tests), which reads the answer off the actions.
///
/// A class: the continuation types are resilient (their size is only known at run time),
/// and every enum carrying one directly (commands, actions, a channel's requests) would be
/// too, costing a metadata lookup and a dynamic stack allocation on every path that touches
/// them, the hot ones included. A reference has a fixed size. One is made per request, not
/// per message.
final class Waiter: Sendable {
    private enum Kind: Sendable {
        case void(CheckedContinuation<Void, any Error>)
        case reply(CheckedContinuation<ChannelReply, any Error>)
        case probe(Int)
    }

    private let kind: Kind

    private init(_ kind: Kind) { self.kind = kind }

    /// Resumed without a value (`openChannel`, `close`...).
    static func void(_ continuation: CheckedContinuation<Void, any Error>) -> Waiter { Waiter(.void(continuation)) }

    /// Resumed with the reply (requests, consume, cancel).
    static func reply(_ continuation: CheckedContinuation<ChannelReply, any Error>) -> Waiter { Waiter(.reply(continuation)) }

    /// A number that stands for a caller.
    static func probe(_ number: Int) -> Waiter { Waiter(.probe(number)) }

    func succeed(_ reply: ChannelReply) {
        SanitizerSync.release(self)
        switch kind {
        case .void(let continuation): continuation.resume()
        case .reply(let continuation): continuation.resume(returning: reply)
        case .probe: break
        }
    }

    func fail(_ error: RabbitMQError) {
        SanitizerSync.release(self)
        switch kind {
        case .void(let continuation): continuation.resume(throwing: error)
        case .reply(let continuation): continuation.resume(throwing: error)
        case .probe: break
        }
    }

    /// The number of a probe.
    var probe: Int? {
        if case .probe(let number) = kind { number } else { nil }
    }
}
