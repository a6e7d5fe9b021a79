/// The one error type of the RabbitMQPatterns module.
///
/// Failures of the broker itself (a closed channel, a 404) stay `RabbitMQError`s; this type
/// reports what the patterns add: an envelope that does not decode, an RPC call that timed out
/// or failed on the server, a publish the broker refused.
///
/// ```swift
/// do {
///     let reply = try await rpc.call(Array("ping".utf8), routingKey: "pricing")
/// } catch let error as RabbitMQPatternsError where error.code == .timeout {
///     // no reply in time; a late reply will be discarded
/// }
/// ```
public struct RabbitMQPatternsError: Error, Sendable, CustomStringConvertible {
    /// What went wrong. An extensible set of values: switch with a `default` case.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case invalidEnvelope, timeout, remoteError, unroutable, nacked, invalidReply, closed
            case invalidConfiguration, permanentFailure
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A message is not a valid envelope; ``RabbitMQPatternsError/field`` names the
        /// missing or mistyped field.
        public static let invalidEnvelope = Code(.invalidEnvelope)
        /// An RPC call got no reply within its timeout.
        public static let timeout = Code(.timeout)
        /// The RPC server's handler failed; the message is the server's error text.
        public static let remoteError = Code(.remoteError)
        /// The broker returned a mandatory message: nothing is bound for its routing key.
        public static let unroutable = Code(.unroutable)
        /// The broker refused a confirmed publish (`basic.nack`), for example a full queue
        /// with `x-overflow: reject-publish`.
        public static let nacked = Code(.nacked)
        /// An RPC reply could not be decoded as the expected response type.
        public static let invalidReply = Code(.invalidReply)
        /// The RPC client is not running (never started, stopped, or its connection closed).
        public static let closed = Code(.closed)
        /// A pattern was configured with a value out of range.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// A retry handler reported a failure that no retry can fix; the message is parked.
        public static let permanentFailure = Code(.permanentFailure)

        /// The code in words, for example `timeout`.
        public var description: String {
            switch base {
            case .invalidEnvelope: "invalid envelope"
            case .timeout: "timeout"
            case .remoteError: "remote error"
            case .unroutable: "unroutable"
            case .nacked: "nacked"
            case .invalidReply: "invalid reply"
            case .closed: "closed"
            case .invalidConfiguration: "invalid configuration"
            case .permanentFailure: "permanent failure"
            }
        }
    }

    /// What went wrong.
    public var code: Code
    /// A human-readable explanation.
    public var message: String
    /// For ``Code-swift.struct/invalidEnvelope``: the dotted path of the field that is missing
    /// or mistyped, for example `timestamp` or `data.amount`.
    public var field: String?
    /// The source file that raised the error.
    public var file: String
    /// The source line that raised the error.
    public var line: Int

    /// Creates an error.
    public init(code: Code, message: String, field: String? = nil, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.field = field
        self.file = file
        self.line = line
    }

    /// An error for a retry handler to throw when retrying cannot help (a validation failure,
    /// a reference to something that does not exist): the message goes straight to the
    /// dead-letter queue with `reason` in its `x-last-error` header.
    public static func permanentFailure(_ reason: String, file: String = #fileID, line: Int = #line) -> Self {
        Self(code: .permanentFailure, message: reason, file: file, line: line)
    }

    /// The code, the field when there is one, and the message.
    public var description: String {
        var text = "RabbitMQPatternsError(\(code)"
        if let field { text += ", field '\(field)'" }
        return text + "): \(message)"
    }
}

extension RabbitMQPatternsError {
    static func invalidEnvelope(_ message: String, field: String?, file: String = #fileID, line: Int = #line) -> Self {
        Self(code: .invalidEnvelope, message: message, field: field, file: file, line: line)
    }

    static func invalidConfiguration(_ message: String, file: String = #fileID, line: Int = #line) -> Self {
        Self(code: .invalidConfiguration, message: message, file: file, line: line)
    }
}
