import Foundation

/// The one-line text of an error as other services see it (RPC error replies, the retry
/// pattern's `x-last-error` header).
enum ErrorText {
    static func describe(_ error: any Error) -> String {
        switch error {
        case let error as RabbitMQPatternsError: error.message
        case let error as RPCInvalidRequest: "invalid request: \(error.reason)"
        case let error as any LocalizedError: error.errorDescription ?? "\(error)"
        default: "\(error)"
        }
    }
}
