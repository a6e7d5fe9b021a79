import CRabbitMQ

extension RabbitMQError {
    /// Maps a rabbitmq-c status to an error; `what` says what was being done.
    static func library(_ status: Int32, _ what: String, file: String = #fileID, line: Int = #line) -> Self {
        let text = amqp_error_string2(status).map { String(cString: $0) } ?? "status \(status)"
        let code: Code
        var scope = Scope.connection
        switch status {
        case AMQP_STATUS_TIMEOUT.rawValue:
            code = .timeout
        case AMQP_STATUS_HEARTBEAT_TIMEOUT.rawValue:
            code = .heartbeatTimeout
        case AMQP_STATUS_CONNECTION_CLOSED.rawValue, AMQP_STATUS_SOCKET_CLOSED.rawValue:
            code = .connectionClosed
        case AMQP_STATUS_SOCKET_ERROR.rawValue, AMQP_STATUS_TCP_ERROR.rawValue,
            AMQP_STATUS_HOSTNAME_RESOLUTION_FAILED.rawValue:
            code = .socketError
        case AMQP_STATUS_SSL_ERROR.rawValue, AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED.rawValue,
            AMQP_STATUS_SSL_PEER_VERIFY_FAILED.rawValue, AMQP_STATUS_SSL_CONNECTION_FAILED.rawValue:
            code = .tls
        case AMQP_STATUS_BAD_AMQP_DATA.rawValue, AMQP_STATUS_UNKNOWN_CLASS.rawValue,
            AMQP_STATUS_UNKNOWN_METHOD.rawValue, AMQP_STATUS_UNEXPECTED_STATE.rawValue,
            AMQP_STATUS_INCOMPATIBLE_AMQP_VERSION.rawValue, AMQP_STATUS_WRONG_METHOD.rawValue:
            code = .protocolError
        case AMQP_STATUS_BROKER_UNSUPPORTED_SASL_METHOD.rawValue:
            code = .authenticationFailed
        default:
            code = .library
            scope = .none
        }
        return Self(code: code, scope: scope, message: "\(what): \(text)", libraryStatus: status, file: file, line: line)
    }
}
