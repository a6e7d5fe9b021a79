import RabbitMQ
import RabbitMQPatterns

/// A failure the tool reports as one line on standard error, with a non-zero exit status.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    /// 1, or 128 + a signal's number for a run a signal (or a broken pipe) stopped.
    var exitStatus: Int32

    init(_ description: String, exitStatus: Int32 = 1) {
        self.description = description
        self.exitStatus = exitStatus
    }

    /// The one line for any error: broker errors by their reply text or message (which never
    /// contain the password), pattern errors by their message.
    static func message(for error: any Error) -> String {
        switch error {
        case let error as CLIError:
            return error.description
        case let error as RabbitMQError:
            if let replyText = error.replyText, let code = error.replyCode {
                return "broker refused: \(code) \(replyText)"
            }
            return "\(error.code): \(error.message)"
        case let error as RabbitMQPatternsError:
            switch error.code {
            case .remoteError: return "remote error: \(error.message)"
            default: return error.message
            }
        default:
            return "\(error)"
        }
    }
}
