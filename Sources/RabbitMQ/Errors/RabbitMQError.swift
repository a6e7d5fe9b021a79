/// The one error type of the RabbitMQ module.
///
/// Every failure carries a ``Code``: library conditions (a timeout, a lost socket, a bad URI)
/// and the AMQP reply codes the broker closes channels and connections with (404, 406, ...).
/// A broker close also carries its reply text, the class and method ids of the method that
/// failed, and its ``Scope``: whether only the channel or the whole connection was closed.
///
/// ```swift
/// do {
///     try await channel.queueDeclare("orders", passive: true)
/// } catch let error as RabbitMQError where error.code == .notFound {
///     // the queue does not exist; the connection is still open
/// }
/// ```
///
/// The description never contains a password.
public struct RabbitMQError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong. An extensible set of values: switch with a `default` case.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case invalidURI, invalidConfiguration, connectFailed, authenticationFailed, tls
            case timeout, socketError, connectionClosed, heartbeatTimeout, protocolError
            case channelClosed, consumerCancelled, closed, unexpectedReply, library
            case deprecatedFeature
            case reply(UInt16)
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A URI that cannot be parsed or has an unsupported part.
        public static let invalidURI = Code(.invalidURI)
        /// A configuration value out of its allowed range.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// The TCP connection (or its TLS handshake) to an endpoint could not be opened.
        public static let connectFailed = Code(.connectFailed)
        /// The broker refused the credentials (AMQP 403 during the handshake).
        public static let authenticationFailed = Code(.authenticationFailed)
        /// A TLS setup or verification error.
        public static let tls = Code(.tls)
        /// An operation did not complete within its configured timeout.
        public static let timeout = Code(.timeout)
        /// The socket failed (reset, refused, broken pipe).
        public static let socketError = Code(.socketError)
        /// The connection is closed: by the peer, by the network, or by ``RabbitMQConnection/close()``.
        public static let connectionClosed = Code(.connectionClosed)
        /// The peer sent nothing for two heartbeat intervals.
        public static let heartbeatTimeout = Code(.heartbeatTimeout)
        /// The peer sent something that violates AMQP 0-9-1; the connection was torn down.
        public static let protocolError = Code(.protocolError)
        /// The channel was closed earlier (by the broker or by the application).
        public static let channelClosed = Code(.channelClosed)
        /// The broker cancelled a consumer (for example because its queue was deleted).
        public static let consumerCancelled = Code(.consumerCancelled)
        /// The object was closed by the application.
        public static let closed = Code(.closed)
        /// The broker answered a request with a method we did not expect.
        public static let unexpectedReply = Code(.unexpectedReply)
        /// rabbitmq-c reported a status without a more specific code here.
        public static let library = Code(.library)
        /// The broker refused a request because it uses a feature its configuration no longer
        /// permits (RabbitMQ 4: transient non-exclusive queues, global QoS, queue master
        /// locators; denied by default from 4.3). ``RabbitMQError/deprecatedFeature`` names
        /// it. The broker closes the whole connection for it (541), which then recovers;
        /// the request is not retried.
        public static let deprecatedFeature = Code(.deprecatedFeature)

        /// An AMQP reply code. The well-known ones have names below.
        public static func reply(_ code: UInt16) -> Code { Code(.reply(code)) }
        /// 311: a message was too large.
        public static let contentTooLarge = reply(311)
        /// 312: a mandatory message could not be routed.
        public static let noRoute = reply(312)
        /// 313: an immediate message had no consumer.
        public static let noConsumers = reply(313)
        /// 320: an operator or a shutting-down broker closed the connection.
        public static let connectionForced = reply(320)
        /// 402: an invalid path (virtual host).
        public static let invalidPath = reply(402)
        /// 403: access refused.
        public static let accessRefused = reply(403)
        /// 404: no such exchange or queue.
        public static let notFound = reply(404)
        /// 405: the resource is locked (an exclusive queue of another connection).
        public static let resourceLocked = reply(405)
        /// 406: a precondition failed (for example re-declaring a queue with other arguments).
        public static let preconditionFailed = reply(406)
        /// 501: a malformed frame.
        public static let frameError = reply(501)
        /// 502: a field value the broker could not parse.
        public static let syntaxError = reply(502)
        /// 503: a method not valid in the current state.
        public static let commandInvalid = reply(503)
        /// 504: a channel used before it was opened or after it was closed.
        public static let channelError = reply(504)
        /// 505: a frame the broker did not expect.
        public static let unexpectedFrame = reply(505)
        /// 506: the broker ran out of a resource.
        public static let resourceError = reply(506)
        /// 530: not allowed (for example an unknown virtual host).
        public static let notAllowed = reply(530)
        /// 540: not implemented by the broker.
        public static let notImplemented = reply(540)
        /// 541: the broker's internal error.
        public static let internalError = reply(541)

        /// The AMQP reply code when this code is one.
        public var replyCode: UInt16? {
            if case .reply(let code) = base { return code }
            return nil
        }

        public var description: String {
            switch base {
            case .invalidURI: "invalid URI"
            case .invalidConfiguration: "invalid configuration"
            case .connectFailed: "connect failed"
            case .authenticationFailed: "authentication failed"
            case .tls: "TLS error"
            case .timeout: "timeout"
            case .socketError: "socket error"
            case .connectionClosed: "connection closed"
            case .heartbeatTimeout: "heartbeat timeout"
            case .protocolError: "protocol error"
            case .channelClosed: "channel closed"
            case .consumerCancelled: "consumer cancelled"
            case .closed: "closed"
            case .unexpectedReply: "unexpected reply"
            case .library: "library error"
            case .deprecatedFeature: "deprecated feature"
            case .reply(let code): "\(code) \(Self.replyName(code))"
            }
        }

        static func replyName(_ code: UInt16) -> String {
            switch code {
            case 200: "REPLY_SUCCESS"
            case 311: "CONTENT_TOO_LARGE"
            case 312: "NO_ROUTE"
            case 313: "NO_CONSUMERS"
            case 320: "CONNECTION_FORCED"
            case 402: "INVALID_PATH"
            case 403: "ACCESS_REFUSED"
            case 404: "NOT_FOUND"
            case 405: "RESOURCE_LOCKED"
            case 406: "PRECONDITION_FAILED"
            case 501: "FRAME_ERROR"
            case 502: "SYNTAX_ERROR"
            case 503: "COMMAND_INVALID"
            case 504: "CHANNEL_ERROR"
            case 505: "UNEXPECTED_FRAME"
            case 506: "RESOURCE_ERROR"
            case 530: "NOT_ALLOWED"
            case 540: "NOT_IMPLEMENTED"
            case 541: "INTERNAL_ERROR"
            default: "UNKNOWN"
            }
        }
    }

    /// What a broker close (or a failure) took down with it.
    public struct Scope: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable { case none, channel, connection }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        /// Neither the channel nor the connection was closed by this error.
        public static let none = Scope(.none)
        /// The channel the operation ran on is closed; the connection and its other channels work.
        public static let channel = Scope(.channel)
        /// The whole connection is closed.
        public static let connection = Scope(.connection)
        public var description: String {
            switch base {
            case .none: "none"
            case .channel: "channel"
            case .connection: "connection"
            }
        }
    }

    /// What went wrong.
    public var code: Code
    /// Which part of the connection this error closed.
    public var scope: Scope
    /// A human-readable explanation (never a password).
    public var message: String
    /// The reply text of a broker close, when the broker closed something.
    public var replyText: String?
    /// The AMQP class id of the method that caused a broker close (0 when none).
    public var classID: UInt16
    /// The AMQP method id of the method that caused a broker close (0 when none).
    public var methodID: UInt16
    /// The rabbitmq-c status (`amqp_status_enum`, negative) when the library reported one.
    public var libraryStatus: Int32?
    /// The source file that raised the error.
    public var file: String
    /// The source line that raised the error.
    public var line: Int

    /// The AMQP reply code, when the broker closed something.
    public var replyCode: UInt16? { code.replyCode }

    /// The feature the broker refused, for ``Code/deprecatedFeature`` (for example
    /// `transient_nonexcl_queues`); nil otherwise.
    public var deprecatedFeature: String? {
        guard code == .deprecatedFeature, let replyText else { return nil }
        return Self.deprecatedFeature(in: replyText)
    }

    /// The feature a broker's close names as deprecated: RabbitMQ 4 says
    /// "Feature `NAME` is deprecated." in its reply text.
    static func deprecatedFeature(in replyText: String) -> String? {
        guard let start = replyText.firstRange(of: "Feature `"),
            let end = replyText[start.upperBound...].firstRange(of: "` is deprecated")
        else { return nil }
        let name = replyText[start.upperBound..<end.lowerBound]
        return name.isEmpty ? nil : String(name)
    }

    /// Whether trying the same operation again later can succeed: a lost connection,
    /// a timeout, 320 or 405; not a bad argument, a refused login or a 404.
    public var isRetriable: Bool {
        switch code {
        case .timeout, .socketError, .connectionClosed, .heartbeatTimeout, .connectFailed,
            .connectionForced, .resourceLocked, .resourceError, .internalError:
            true
        default:
            false
        }
    }

    /// Creates an error. Library code uses the internal factories instead.
    public init(
        code: Code,
        scope: Scope = .none,
        message: String,
        replyText: String? = nil,
        classID: UInt16 = 0,
        methodID: UInt16 = 0,
        libraryStatus: Int32? = nil,
        file: String = #fileID,
        line: Int = #line
    ) {
        self.code = code
        self.scope = scope
        self.message = message
        self.replyText = replyText
        self.classID = classID
        self.methodID = methodID
        self.libraryStatus = libraryStatus
        self.file = file
        self.line = line
    }

    public var description: String {
        var text = "RabbitMQError(\(code)"
        if scope != .none { text += ", \(scope) closed" }
        text += "): \(message)"
        if let replyText, !message.contains(replyText) { text += " [\(replyText)]" }
        if classID != 0 || methodID != 0 { text += " (class \(classID), method \(methodID))" }
        if let libraryStatus { text += " (rabbitmq-c status \(libraryStatus))" }
        return text
    }

    public static func == (lhs: RabbitMQError, rhs: RabbitMQError) -> Bool {
        lhs.code == rhs.code && lhs.scope == rhs.scope && lhs.message == rhs.message
            && lhs.replyText == rhs.replyText && lhs.classID == rhs.classID
            && lhs.methodID == rhs.methodID && lhs.libraryStatus == rhs.libraryStatus
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(scope)
        hasher.combine(message)
    }
}

extension RabbitMQError {
    static func invalidURI(_ message: String, file: String = #fileID, line: Int = #line) -> Self {
        Self(code: .invalidURI, message: message, file: file, line: line)
    }

    static func invalidConfiguration(_ message: String, file: String = #fileID, line: Int = #line) -> Self {
        Self(code: .invalidConfiguration, message: message, file: file, line: line)
    }

    static func channelClosed(_ message: String = "the channel is closed", file: String = #fileID, line: Int = #line) -> Self {
        Self(code: .channelClosed, scope: .channel, message: message, file: file, line: line)
    }

    static func connectionClosed(_ message: String = "the connection is closed", file: String = #fileID, line: Int = #line) -> Self {
        Self(code: .connectionClosed, scope: .connection, message: message, file: file, line: line)
    }

    /// A close sent by the broker (`channel.close` or `connection.close`).
    static func serverClose(
        scope: Scope, replyCode: UInt16, replyText: String, classID: UInt16, methodID: UInt16,
        file: String = #fileID, line: Int = #line
    ) -> Self {
        let what = scope == .connection ? "connection" : "channel"
        return Self(
            code: .reply(replyCode), scope: scope,
            message: "broker closed the \(what): \(replyCode) \(replyText)",
            replyText: replyText, classID: classID, methodID: methodID, file: file, line: line)
    }
}
