extension RabbitMQRPCClient {
    /// Where replies come back to.
    public struct ReplyQueue: Sendable, Hashable, CustomStringConvertible {
        private enum Base: Hashable, Sendable { case directReplyTo, exclusiveQueue }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`): no queue at all, replies go
        /// straight to the calling channel. Fastest; a reply to a caller that is gone is dropped.
        public static let directReplyTo = ReplyQueue(.directReplyTo)
        /// A server-named exclusive queue, for brokers or proxies without direct reply-to.
        public static let exclusiveQueue = ReplyQueue(.exclusiveQueue)

        var isDirectReplyTo: Bool { base == .directReplyTo }

        /// The mode in words.
        public var description: String {
            switch base {
            case .directReplyTo: "direct reply-to"
            case .exclusiveQueue: "exclusive queue"
            }
        }
    }
}
